//! A writing transaction's scratch table: keys a long use case must remember across its batches
//! without holding them in memory (an import of a million rows checks every row's external ID
//! and e-mail against the rows before it).
//!
//! The table is `TEMP`, so it belongs to the transaction's connection and no other session sees
//! it: PostgreSQL drops it at the end of the transaction (`ON COMMIT DROP`, and a rollback undoes
//! its creation); on SQLite its creation is part of the transaction too, and [`close`] drops it
//! before a commit. Its pages live in the temporary store (PostgreSQL's temp buffers, SQLite's
//! temporary file), not in the server's heap.
//!
//! A key is `(kind, key)` with the line (or any number) that first used it; the first writer of
//! a key wins.

use std::collections::HashMap;

use super::{Tx, tx_run};

/// Creates the (empty) scratch table for this transaction.
pub async fn open(tx: &mut Tx) -> anyhow::Result<()> {
    match tx {
        Tx::Postgres(t) => {
            sqlx::query(
                "CREATE TEMP TABLE IF NOT EXISTS usher_scratch (
                     kind TEXT NOT NULL, key TEXT NOT NULL, line BIGINT NOT NULL,
                     PRIMARY KEY (kind, key)) ON COMMIT DROP",
            )
            .execute(&mut **t)
            .await?;
        }
        Tx::Sqlite(t) => {
            sqlx::query(
                "CREATE TEMP TABLE IF NOT EXISTS usher_scratch (
                     kind TEXT NOT NULL, key TEXT NOT NULL, line INTEGER NOT NULL,
                     PRIMARY KEY (kind, key)) WITHOUT ROWID",
            )
            .execute(&mut **t)
            .await?;
        }
    }
    tx_run!(tx, c => {
        sqlx::query("DELETE FROM usher_scratch").execute(&mut *c).await?;
    });
    Ok(())
}

/// Drops the scratch table (call before committing; a rollback drops it anyway).
pub async fn close(tx: &mut Tx) -> anyhow::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("DROP TABLE IF EXISTS usher_scratch").execute(&mut *c).await?;
    });
    Ok(())
}

/// The remembered line of each of `keys` that the table holds.
pub async fn lookup(
    tx: &mut Tx,
    keys: &[(&str, &str)],
) -> anyhow::Result<HashMap<(String, String), i64>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String, i64)> = match tx {
        Tx::Postgres(t) => {
            let (kinds, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
            sqlx::query_as(
                "SELECT s.kind, s.key, s.line
                 FROM UNNEST($1::text[], $2::text[]) AS k(kind, key)
                 JOIN usher_scratch s ON s.kind = k.kind AND s.key = k.key",
            )
            .bind(&kinds)
            .bind(&names)
            .fetch_all(&mut **t)
            .await?
        }
        Tx::Sqlite(t) => {
            sqlx::query_as(
                "SELECT s.kind, s.key, s.line
                 FROM json_each($1) AS k
                 JOIN usher_scratch s
                   ON s.kind = json_extract(k.value, '$[0]')
                  AND s.key = json_extract(k.value, '$[1]')",
            )
            .bind(serde_json::to_string(keys)?)
            .fetch_all(&mut **t)
            .await?
        }
    };
    Ok(rows.into_iter().map(|(k, n, l)| ((k, n), l)).collect())
}

/// Remembers `keys`; a key already held keeps its line.
pub async fn remember(tx: &mut Tx, keys: &[(&str, &str, i64)]) -> anyhow::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(t) => {
            let mut kinds = Vec::with_capacity(keys.len());
            let mut names = Vec::with_capacity(keys.len());
            let mut lines = Vec::with_capacity(keys.len());
            for (kind, key, line) in keys {
                kinds.push(*kind);
                names.push(*key);
                lines.push(*line);
            }
            sqlx::query(
                "INSERT INTO usher_scratch (kind, key, line)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(&kinds)
            .bind(&names)
            .bind(&lines)
            .execute(&mut **t)
            .await?;
        }
        Tx::Sqlite(t) => {
            sqlx::query(
                "INSERT INTO usher_scratch (kind, key, line)
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                        json_extract(value, '$[2]')
                 FROM json_each($1) WHERE true
                 ON CONFLICT DO NOTHING",
            )
            .bind(serde_json::to_string(keys)?)
            .execute(&mut **t)
            .await?;
        }
    }
    Ok(())
}
