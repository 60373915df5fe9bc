//! Consistent copies of the embedded SQLite database.

use std::path::Path;

use super::Db;

/// Writes a consistent snapshot of the database to `dest` (a new file) while writers keep
/// going: SQLite's `VACUUM INTO` reads one transaction's view, so every commit before it started
/// is in the copy and none after. SQLite only; PostgreSQL is backed up with `pg_dump`.
pub async fn snapshot_into(db: &Db, dest: &Path) -> anyhow::Result<()> {
    let Db::Sqlite(pool) = db else {
        anyhow::bail!(
            "this server runs on PostgreSQL: back it up with `pg_dump --format=custom` and restore \
             with `pg_restore` (see deploy/README.md)"
        );
    };
    let dest = dest
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the backup path is not UTF-8: {}", dest.display()))?;
    sqlx::query("VACUUM INTO $1")
        .bind(dest)
        .execute(pool)
        .await?;
    Ok(())
}

/// `PRAGMA integrity_check` of the database: `ok`, or what is broken.
pub async fn integrity(db: &Db) -> anyhow::Result<String> {
    let Db::Sqlite(pool) = db else {
        anyhow::bail!("integrity checks are for the SQLite file");
    };
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(pool)
        .await?;
    Ok(rows.join("; "))
}

/// Check-ins stored, for the backup's summary.
pub async fn count_checkins(db: &Db) -> sqlx::Result<i64> {
    Ok(super::db_run!(db, p => {
        sqlx::query_scalar("SELECT CAST(count(*) AS BIGINT) FROM checkins").fetch_one(p).await?
    }))
}
