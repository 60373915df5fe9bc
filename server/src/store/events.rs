//! Events, their sealed secrets and their ticket signing keys.

use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

#[derive(Debug, Clone, FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub name: String,
    pub venue: Option<String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub status: String,
    pub settings: String,
    pub event_tag: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Days after archiving that participants' personal data is kept (`None`: until erased
    /// by hand).
    pub retention_days: Option<i64>,
    /// When the event was (last) archived, unix ms.
    pub archived_at: Option<i64>,
    /// When the retention purge erased its participants' personal data, unix ms.
    pub purged_at: Option<i64>,
}

/// Sealed per-event secrets (see [`crate::domain::crypto::MasterKey::seal`]).
#[derive(Debug, Clone, FromRow)]
pub struct EventSecrets {
    pub event_tag: i64,
    pub ble_secret: Vec<u8>,
    pub mesh_key: Vec<u8>,
}

#[derive(Debug, Clone, FromRow)]
pub struct SigningKeyRow {
    pub key_id: i64,
    pub public_key: Vec<u8>,
    pub secret_key: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// The event, or `NotFound("event")`.
pub async fn require(db: &Db, id: Uuid) -> Result<EventRow, crate::domain::Error> {
    get(db, id)
        .await?
        .ok_or(crate::domain::Error::NotFound("event"))
}

pub async fn get(db: &Db, id: Uuid) -> sqlx::Result<Option<EventRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, name, venue, starts_at, ends_at, status, settings, event_tag, created_at,
                    updated_at, retention_days, archived_at, purged_at
             FROM events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await
    })
}

/// Like [`get`], inside a writing transaction.
pub async fn get_tx(tx: &mut Tx, id: Uuid) -> sqlx::Result<Option<EventRow>> {
    tx_run!(tx, c => {
        sqlx::query_as(
            "SELECT id, name, venue, starts_at, ends_at, status, settings, event_tag, created_at,
                    updated_at, retention_days, archived_at, purged_at
             FROM events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *c)
        .await
    })
}

pub async fn list(db: &Db, after: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<EventRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, name, venue, starts_at, ends_at, status, settings, event_tag, created_at,
                    updated_at, retention_days, archived_at, purged_at
             FROM events WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(p)
        .await
    })
}

pub async fn insert(tx: &mut Tx, e: &EventRow, secrets: &EventSecrets) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO events (id, name, venue, starts_at, ends_at, status, settings, event_tag,
                                 ble_secret, mesh_key, created_at, updated_at, retention_days,
                                 archived_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(e.id)
        .bind(e.name.as_str())
        .bind(e.venue.as_deref())
        .bind(e.starts_at)
        .bind(e.ends_at)
        .bind(e.status.as_str())
        .bind(e.settings.as_str())
        .bind(e.event_tag)
        .bind(secrets.ble_secret.as_slice())
        .bind(secrets.mesh_key.as_slice())
        .bind(e.created_at)
        .bind(e.updated_at)
        .bind(e.retention_days)
        .bind(e.archived_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

pub async fn update(tx: &mut Tx, e: &EventRow) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE events SET name = $2, venue = $3, starts_at = $4, ends_at = $5, status = $6,
                               settings = $7, updated_at = $8, retention_days = $9,
                               archived_at = $10
             WHERE id = $1",
        )
        .bind(e.id)
        .bind(e.name.as_str())
        .bind(e.venue.as_deref())
        .bind(e.starts_at)
        .bind(e.ends_at)
        .bind(e.status.as_str())
        .bind(e.settings.as_str())
        .bind(e.updated_at)
        .bind(e.retention_days)
        .bind(e.archived_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Deletes an event and everything scoped to it: the bulk tables without foreign keys
/// explicitly, the rest by cascade.
pub async fn delete(tx: &mut Tx, id: Uuid) -> sqlx::Result<u64> {
    tx_run!(tx, c => {
        sqlx::query("DELETE FROM changes WHERE event_id = $1").bind(id).execute(&mut *c).await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE event_id = $1").bind(id).execute(&mut *c).await?;
        sqlx::query("DELETE FROM presence WHERE event_id = $1").bind(id).execute(&mut *c).await?;
        sqlx::query("DELETE FROM checkins WHERE event_id = $1").bind(id).execute(&mut *c).await?;
        sqlx::query("DELETE FROM tickets WHERE event_id = $1").bind(id).execute(&mut *c).await?;
        sqlx::query("DELETE FROM participant_terms WHERE event_id = $1").bind(id).execute(&mut *c).await?;
        sqlx::query("DELETE FROM participants WHERE event_id = $1").bind(id).execute(&mut *c).await?;
        // The presence counters are at zero now (their triggers followed the deletes); their
        // rows go too.
        sqlx::query("DELETE FROM gate_presence WHERE event_id = $1").bind(id).execute(&mut *c).await?;
        sqlx::query("DELETE FROM type_presence WHERE event_id = $1").bind(id).execute(&mut *c).await?;
        Ok(sqlx::query("DELETE FROM events WHERE id = $1")
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected())
    })
}

pub async fn secrets(db: &Db, id: Uuid) -> sqlx::Result<Option<EventSecrets>> {
    db_run!(db, p => {
        sqlx::query_as("SELECT event_tag, ble_secret, mesh_key FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(p)
            .await
    })
}

pub async fn insert_signing_key(
    tx: &mut Tx,
    event_id: Uuid,
    key: &SigningKeyRow,
) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO signing_keys (event_id, key_id, public_key, secret_key, created_at,
                                       retired_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event_id)
        .bind(key.key_id)
        .bind(key.public_key.as_slice())
        .bind(key.secret_key.as_slice())
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

pub async fn signing_keys(db: &Db, event_id: Uuid) -> sqlx::Result<Vec<SigningKeyRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT key_id, public_key, secret_key, created_at, retired_at FROM signing_keys
             WHERE event_id = $1 ORDER BY key_id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await
    })
}

/// The argon2id PHC string of the event's supervisor PIN, if the organizer set one.
pub async fn supervisor_pin(db: &Db, event_id: Uuid) -> sqlx::Result<Option<String>> {
    db_run!(db, p => {
        sqlx::query_scalar("SELECT pin_hash FROM event_supervisor_pins WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(p)
            .await
    })
}

/// Sets (or replaces) the event's supervisor PIN hash.
pub async fn set_supervisor_pin(
    tx: &mut Tx,
    event_id: Uuid,
    pin_hash: &str,
    at: i64,
    by: &str,
) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO event_supervisor_pins (event_id, pin_hash, set_at, set_by)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (event_id) DO UPDATE SET pin_hash = excluded.pin_hash,
                set_at = excluded.set_at, set_by = excluded.set_by",
        )
        .bind(event_id)
        .bind(pin_hash)
        .bind(at)
        .bind(by)
        .execute(&mut *c)
        .await
        .map(|_| ())
    })
}
