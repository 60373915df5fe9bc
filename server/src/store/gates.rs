//! Gates and their one-time enrollment codes.

use sqlx::FromRow;
use sync_protocol::wire::GateDirection;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};
use crate::domain::Error;
use crate::domain::gate::GateAuth;

impl GateRow {
    /// The stored direction, typed.
    pub fn direction(&self) -> Result<GateDirection, Error> {
        self.direction
            .parse()
            .map_err(|e| Error::Internal(anyhow::Error::from(e)))
    }
}

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
    /// Hex of the ed25519 key the enrolled device signs its mesh requests and answers with;
    /// set by enrollment only ([`set_mesh_public_key`]), never by [`upsert`].
    pub mesh_public_key: Option<String>,
    pub is_active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The columns of [`GateRow`]; the caller appends the `WHERE`.
macro_rules! select_gate {
    () => {
        "SELECT id, event_id, name, zone, direction, zone_mask, allow_reentry, beacon_config,
                mesh_addr, mesh_public_key, is_active, created_at, updated_at
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

/// Records the mesh public key (hex) of the device that just enrolled on the gate; `None`
/// (a device that sent none) clears the previous device's.
pub async fn set_mesh_public_key(
    tx: &mut Tx,
    gate_id: Uuid,
    key_hex: Option<&str>,
) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("UPDATE gates SET mesh_public_key = $2 WHERE id = $1")
            .bind(gate_id)
            .bind(key_hex)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Revokes every credential of a deactivated gate and voids its unused enrollment codes; its
/// mesh key goes with them (a reactivated gate enrolls a device again).
pub async fn revoke_credentials(tx: &mut Tx, gate_id: Uuid, now: i64) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("UPDATE gates SET mesh_public_key = NULL WHERE id = $1")
            .bind(gate_id)
            .execute(&mut *c)
            .await?;
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

#[derive(FromRow)]
struct CredentialRow {
    gate_id: Uuid,
    event_id: Uuid,
    is_active: bool,
    revoked_at: Option<i64>,
}

/// The gate a credential (by its SHA-256) authenticates. `None` when unknown, revoked, or the
/// gate is deactivated.
pub async fn credential(db: &Db, hash: &[u8; 32]) -> Result<Option<GateAuth>, Error> {
    let row: Option<CredentialRow> = db_run!(db, p => {
        sqlx::query_as(
            "SELECT c.gate_id, c.event_id, g.is_active, c.revoked_at
             FROM gate_credentials c JOIN gates g ON g.id = c.gate_id
             WHERE c.token_hash = $1",
        )
        .bind(&hash[..])
        .fetch_optional(p)
        .await?
    });
    Ok(row
        .filter(|r| r.is_active && r.revoked_at.is_none())
        .map(|r| GateAuth {
            gate_id: r.gate_id,
            event_id: r.event_id,
        }))
}

/// Marks the gate's live credentials as seen now.
pub async fn touch_credentials(tx: &mut Tx, gate_id: Uuid, now: i64) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE gate_credentials SET last_seen_at = $2 WHERE gate_id = $1 AND revoked_at IS NULL",
        )
        .bind(gate_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Spends a one-time enrollment code (by its SHA-256): `(event_id, gate_id)` when it was
/// unused and unexpired.
pub async fn claim_code(
    tx: &mut Tx,
    hash: &[u8; 32],
    device_name: &str,
    token_hash: &[u8; 32],
    now: i64,
) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    Ok(tx_run!(tx, c => {
        sqlx::query_as(
            "UPDATE enrollment_codes SET used_at = $2, device_name = $3, token_hash = $4
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2
             RETURNING event_id, gate_id",
        )
        .bind(&hash[..])
        .bind(now)
        .bind(device_name)
        .bind(&token_hash[..])
        .fetch_optional(&mut *c)
        .await?
    }))
}

/// Claims a used code once more for the device that used it, within `window_ms` of that use,
/// while the credential it issued is still the gate's (nothing enrolled since): the retry of a
/// device whose enrollment answer was lost. The caller then replaces that credential.
pub async fn reclaim_code(
    tx: &mut Tx,
    hash: &[u8; 32],
    device_name: &str,
    token_hash: &[u8; 32],
    now: i64,
    window_ms: i64,
) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    Ok(tx_run!(tx, c => {
        sqlx::query_as(
            "UPDATE enrollment_codes SET retried_at = $2, token_hash = $4
             WHERE code_hash = $1 AND used_at IS NOT NULL AND retried_at IS NULL
               AND device_name = $3 AND used_at > $2 - $5
               AND EXISTS (SELECT 1 FROM gate_credentials g
                           WHERE g.token_hash = enrollment_codes.token_hash
                             AND g.revoked_at IS NULL)
             RETURNING event_id, gate_id",
        )
        .bind(&hash[..])
        .bind(now)
        .bind(device_name)
        .bind(&token_hash[..])
        .bind(window_ms)
        .fetch_optional(&mut *c)
        .await?
    }))
}

/// Revokes the gate's credentials and stores a new one; returns the seq the new device's log
/// continues at.
pub async fn replace_credential(
    tx: &mut Tx,
    gate: &GateRow,
    token_hash: &[u8; 32],
    device_name: &str,
    now: i64,
) -> sqlx::Result<i64> {
    Ok(tx_run!(tx, c => {
        sqlx::query(
            "UPDATE gate_credentials SET revoked_at = $2 WHERE gate_id = $1 AND revoked_at IS NULL",
        )
        .bind(gate.id)
        .bind(now)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "INSERT INTO gate_credentials (token_hash, gate_id, event_id, device_name, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token_hash[..])
        .bind(gate.id)
        .bind(gate.event_id)
        .bind(device_name)
        .bind(now)
        .execute(&mut *c)
        .await?;
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM checkins WHERE gate_id = $1")
            .bind(gate.id)
            .fetch_one(&mut *c)
            .await?
    }))
}

/// What the gate last reported and when it was last heard from.
#[derive(Debug, Clone, FromRow)]
pub struct GateStatusRow {
    pub id: Uuid,
    pub last_seen_at: Option<i64>,
    pub agent_version: Option<String>,
    pub outbox_depth: Option<i64>,
    pub last_sync_at: Option<i64>,
}

/// The status of every gate of the event.
pub async fn statuses(db: &Db, event_id: Uuid) -> sqlx::Result<Vec<GateStatusRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, last_seen_at, agent_version, outbox_depth, last_sync_at
             FROM gates WHERE event_id = $1",
        )
        .bind(event_id)
        .fetch_all(p)
        .await
    })
}

/// The status of one gate.
pub async fn status(db: &Db, gate_id: Uuid) -> sqlx::Result<Option<GateStatusRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, last_seen_at, agent_version, outbox_depth, last_sync_at
             FROM gates WHERE id = $1",
        )
        .bind(gate_id)
        .fetch_optional(p)
        .await
    })
}

/// Records a gate's report, unless one was recorded less than `interval_ms` ago and the agent
/// version and outbox depth are unchanged (so a busy gate costs one write every few seconds).
/// Absent values keep the stored ones.
pub async fn record_report(
    db: &Db,
    gate_id: Uuid,
    now: i64,
    interval_ms: i64,
    report: &crate::domain::gate::GateReport,
) -> sqlx::Result<()> {
    db_run!(db, p => {
        sqlx::query(
            "UPDATE gates SET last_seen_at = $2,
                    agent_version = COALESCE($3, agent_version),
                    outbox_depth = COALESCE($4, outbox_depth),
                    last_sync_at = COALESCE($5, last_sync_at)
             WHERE id = $1
               AND (last_seen_at IS NULL OR last_seen_at < $6
                    OR COALESCE(agent_version, '') <> COALESCE($3, agent_version, '')
                    OR COALESCE(outbox_depth, -1) <> COALESCE($4, outbox_depth, -1))",
        )
        .bind(gate_id)
        .bind(now)
        .bind(report.agent_version.as_deref())
        .bind(report.outbox_depth)
        .bind(report.last_sync_at)
        .bind(now - interval_ms)
        .execute(p)
        .await?;
    });
    Ok(())
}
