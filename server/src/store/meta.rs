//! What the server keeps about itself (`server_meta`): small named values.

use super::{Db, db_run};

/// The value of `key`, if set.
pub async fn get(db: &Db, key: &str) -> sqlx::Result<Option<String>> {
    db_run!(db, p => {
        sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(p)
            .await
    })
}

/// Sets `key` unless it is set already; returns the value now stored.
pub async fn insert_if_absent(db: &Db, key: &str, value: &str) -> sqlx::Result<String> {
    db_run!(db, p => {
        sqlx::query("INSERT INTO server_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(p)
            .await
            .map(|_| ())
    })?;
    Ok(get(db, key).await?.unwrap_or_default())
}
