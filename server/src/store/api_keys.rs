//! Service API keys (hashed).

use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub role: String,
    pub event_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str =
    "id, name, prefix, role, event_id, created_by, created_at, last_used_at, revoked_at";

pub async fn insert(tx: &mut Tx, k: &ApiKeyRow, hash: &[u8; 32]) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, prefix, role, event_id, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(k.id)
        .bind(&k.name)
        .bind(&hash[..])
        .bind(&k.prefix)
        .bind(&k.role)
        .bind(k.event_id)
        .bind(k.created_by)
        .bind(k.created_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// The live (unrevoked) key with this hash.
pub async fn by_hash(db: &Db, hash: &[u8; 32]) -> sqlx::Result<Option<ApiKeyRow>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
        )))
        .bind(&hash[..])
        .fetch_optional(p)
        .await?
    }))
}

pub async fn list(db: &Db) -> sqlx::Result<Vec<ApiKeyRow>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY id"
        )))
        .fetch_all(p)
        .await?
    }))
}

pub async fn get(db: &Db, id: Uuid) -> sqlx::Result<Option<ApiKeyRow>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(p)
        .await?
    }))
}

/// Revokes a key; false when there is no live key with that id.
pub async fn revoke(tx: &mut Tx, id: Uuid, now: i64) -> sqlx::Result<bool> {
    let n = tx_run!(tx, c => {
        sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    Ok(n == 1)
}

/// Records a use, at most once a minute per key (a write per request would cost every call).
pub async fn touch(db: &Db, id: Uuid, now: i64) -> sqlx::Result<()> {
    db_run!(db, p => {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2 - 60000)",
        )
        .bind(id)
        .bind(now)
        .execute(p)
        .await?;
    });
    Ok(())
}
