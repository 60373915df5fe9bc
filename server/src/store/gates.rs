//! Gates and their one-time enrollment codes.

use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

#[derive(Debug, Clone, FromRow)]
pub struct GateRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    pub zone: Option<String>,
    pub direction: String,
    pub zone_mask: i64,
    pub allow_reentry: bool,
    pub beacon_config: Option<String>,
    pub mesh_addr: Option<String>,
    pub is_active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The columns of [`GateRow`]; the caller appends the `WHERE`.
macro_rules! select_gate {
    () => {
        "SELECT id, event_id, name, zone, direction, zone_mask, allow_reentry, beacon_config,
                mesh_addr, is_active, created_at, updated_at
         FROM gates "
    };
}

pub async fn get(db: &Db, event_id: Uuid, id: Uuid) -> sqlx::Result<Option<GateRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            concat!(select_gate!(), "WHERE event_id = $1 AND id = $2"),
        )
        .bind(event_id)
        .bind(id)
        .fetch_optional(p)
        .await
    })
}

pub async fn get_tx(tx: &mut Tx, event_id: Uuid, id: Uuid) -> sqlx::Result<Option<GateRow>> {
    tx_run!(tx, c => {
        sqlx::query_as(
            concat!(select_gate!(), "WHERE event_id = $1 AND id = $2"),
        )
        .bind(event_id)
        .bind(id)
        .fetch_optional(&mut *c)
        .await
    })
}

pub async fn list(db: &Db, event_id: Uuid) -> sqlx::Result<Vec<GateRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            concat!(select_gate!(), "WHERE event_id = $1 ORDER BY id"),
        )
        .bind(event_id)
        .fetch_all(p)
        .await
    })
}

pub async fn list_tx(tx: &mut Tx, event_id: Uuid) -> sqlx::Result<Vec<GateRow>> {
    tx_run!(tx, c => {
        sqlx::query_as(
            concat!(select_gate!(), "WHERE event_id = $1 ORDER BY id"),
        )
        .bind(event_id)
        .fetch_all(&mut *c)
        .await
    })
}

/// Inserts or overwrites a gate.
pub async fn upsert(tx: &mut Tx, g: &GateRow) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO gates (id, event_id, name, zone, direction, zone_mask, allow_reentry,
                                beacon_config, mesh_addr, is_active, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, zone = excluded.zone,
                 direction = excluded.direction, zone_mask = excluded.zone_mask,
                 allow_reentry = excluded.allow_reentry, beacon_config = excluded.beacon_config,
                 mesh_addr = excluded.mesh_addr, is_active = excluded.is_active,
                 updated_at = excluded.updated_at",
        )
        .bind(g.id)
        .bind(g.event_id)
        .bind(g.name.as_str())
        .bind(g.zone.as_deref())
        .bind(g.direction.as_str())
        .bind(g.zone_mask)
        .bind(g.allow_reentry)
        .bind(g.beacon_config.as_deref())
        .bind(g.mesh_addr.as_deref())
        .bind(g.is_active)
        .bind(g.created_at)
        .bind(g.updated_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Revokes every credential of a deactivated gate and voids its unused enrollment codes.
pub async fn revoke_credentials(tx: &mut Tx, gate_id: Uuid, now: i64) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE gate_credentials SET revoked_at = $2 WHERE gate_id = $1 AND revoked_at IS NULL",
        )
        .bind(gate_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
        sqlx::query("DELETE FROM enrollment_codes WHERE gate_id = $1 AND used_at IS NULL")
            .bind(gate_id)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Stores a one-time enrollment code (its SHA-256 only).
pub async fn insert_enrollment(
    tx: &mut Tx,
    code_hash: &[u8],
    event_id: Uuid,
    gate_id: Uuid,
    created_by: Option<Uuid>,
    created_at: i64,
    expires_at: i64,
) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO enrollment_codes (code_hash, event_id, gate_id, created_by, created_at,
                                           expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(code_hash)
        .bind(event_id)
        .bind(gate_id)
        .bind(created_by)
        .bind(created_at)
        .bind(expires_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}
