//! The reads and writes of the online redeem (`service::redeem`): gate rows, key rings, the
//! tickets a batch decides on, and the gate seqs its check-ins take.

use std::collections::HashMap;

use sqlx::FromRow;
use sync_protocol::KeyRing;
use uuid::Uuid;

use crate::domain::crypto::PersonalKeys;

use super::{Db, Tx, db_run, tx_run};

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct GateLite {
    pub event_id: Uuid,
    pub direction: String,
    pub zone_mask: i64,
    pub allow_reentry: bool,
    pub is_active: bool,
}

#[derive(FromRow)]
pub struct KeyLite {
    pub key_id: i64,
    pub public_key: Vec<u8>,
}

const GATE_SQL: &str =
    "SELECT event_id, direction, zone_mask, allow_reentry, is_active FROM gates WHERE id = $1";

/// A gate row.
pub async fn gate(db: &Db, gate_id: Uuid) -> sqlx::Result<Option<GateLite>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(GATE_SQL).bind(gate_id).fetch_optional(p).await?
    }))
}

/// The event's key ring (every key, retired ones too: they still verify what they signed).
pub async fn key_ring(db: &Db, event_id: Uuid) -> anyhow::Result<KeyRing> {
    let keys: Vec<KeyLite> = db_run!(db, p => {
        sqlx::query_as("SELECT key_id, public_key FROM signing_keys WHERE event_id = $1")
            .bind(event_id)
            .fetch_all(p)
            .await?
    });
    let mut ring = KeyRing::new();
    for k in keys {
        let bytes: [u8; 32] = k
            .public_key
            .try_into()
            .map_err(|_| anyhow::anyhow!("stored public key is not 32 bytes"))?;
        ring.insert_bytes(u32::try_from(k.key_id)?, &bytes)
            .map_err(|e| anyhow::anyhow!("stored public key invalid: {e}"))?;
    }
    Ok(ring)
}

/// Whether a device is enrolled on the gate (it has an active credential).
pub async fn device_enrolled(db: &Db, gate_id: Uuid) -> sqlx::Result<bool> {
    let n: i64 = db_run!(db, p => {
        sqlx::query_scalar(
            "SELECT CAST(count(*) AS BIGINT) FROM gate_credentials
             WHERE gate_id = $1 AND revoked_at IS NULL",
        )
        .bind(gate_id)
        .fetch_one(p)
        .await?
    });
    Ok(n > 0)
}

/// Takes `n` seqs of an active gate (locking its row to the commit) and returns the new highest
/// seq with the row as it is now; `None` when the gate is deactivated or gone.
pub async fn take_seqs(
    tx: &mut Tx,
    event_id: Uuid,
    gate_id: Uuid,
    n: i64,
) -> sqlx::Result<Option<SeqRow>> {
    Ok(tx_run!(tx, c => {
        sqlx::query_as(
            "UPDATE gates SET acked_seq = acked_seq + $3
             WHERE id = $1 AND event_id = $2 AND is_active
             RETURNING acked_seq, event_id, direction, zone_mask, allow_reentry, is_active",
        )
        .bind(gate_id)
        .bind(event_id)
        .bind(n)
        .fetch_optional(&mut *c)
        .await?
    }))
}

/// Whether the gate is active (`None`: no such gate of the event).
pub async fn gate_active(tx: &mut Tx, event_id: Uuid, gate_id: Uuid) -> sqlx::Result<Option<bool>> {
    Ok(tx_run!(tx, c => {
        sqlx::query_scalar("SELECT is_active FROM gates WHERE id = $1 AND event_id = $2")
            .bind(gate_id)
            .bind(event_id)
            .fetch_optional(&mut *c)
            .await?
    }))
}

#[derive(FromRow)]
pub struct TicketLite {
    pub serial: i64,
    pub scopes: i64,
    pub valid_from: i64,
    pub valid_until: i64,
    pub status: String,
    pub name: Option<String>,
    pub attention: Option<String>,
    pub holder_id: Uuid,
    pub pd_version: Option<i64>,
}

impl TicketLite {
    /// Decrypts the holder's name and attention note.
    fn open(mut self, keys: &PersonalKeys) -> anyhow::Result<Self> {
        let (id, v) = (self.holder_id, self.pd_version);
        self.name = super::personal::open(keys, id, v, "name", self.name.take())?;
        self.attention = super::personal::open(keys, id, v, "attention", self.attention.take())?;
        Ok(self)
    }
}

#[derive(FromRow)]
pub struct CodeRow {
    pub short_code: i64,
    #[sqlx(flatten)]
    pub ticket: TicketLite,
}

/// A ticket and its holder, read under the ticket's lock.
#[derive(FromRow)]
pub struct StateRow {
    pub serial: i64,
    pub status: String,
    pub name: Option<String>,
    pub attention: Option<String>,
    /// The change log head (the same in every row).
    pub head: Option<i64>,
    pub holder_id: Uuid,
    pub pd_version: Option<i64>,
}

#[derive(FromRow)]
pub struct SeqRow {
    pub acked_seq: i64,
    #[sqlx(flatten)]
    pub gate: GateLite,
}

pub const TICKET_COLUMNS: &str =
    "t.serial, t.scopes, t.valid_from, t.valid_until, t.status, p.name, p.attention,
     p.id AS holder_id, p.pd_version";

/// Tickets by short code (`$2`: the values).
pub async fn tickets_by_code(
    tx: &mut Tx,
    personal: &PersonalKeys,
    event_id: Uuid,
    codes: &[i64],
) -> anyhow::Result<HashMap<i64, TicketLite>> {
    if codes.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<CodeRow> = match tx {
        Tx::Postgres(t) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT t.short_code, {TICKET_COLUMNS}
                 FROM tickets t
                 JOIN participants p ON p.event_id = t.event_id AND p.id = t.participant_id
                 WHERE t.event_id = $1 AND t.short_code = ANY($2)"
            )))
            .bind(event_id)
            .bind(codes)
            .fetch_all(&mut **t)
            .await?
        }
        Tx::Sqlite(t) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT t.short_code, {TICKET_COLUMNS}
                 FROM tickets t
                 JOIN participants p ON p.event_id = t.event_id AND p.id = t.participant_id
                 WHERE t.event_id = $1 AND t.short_code IN (SELECT value FROM json_each($2))"
            )))
            .bind(event_id)
            .bind(serde_json::to_string(codes)?)
            .fetch_all(&mut **t)
            .await?
        }
    };
    rows.into_iter()
        .map(|r| Ok((r.short_code, r.ticket.open(personal)?)))
        .collect()
}

#[derive(FromRow)]
pub struct BarcodeRow {
    pub barcode_key: String,
    #[sqlx(flatten)]
    pub ticket: TicketLite,
}

/// Tickets (with their holder) by the lookup keys of shop barcodes ([`super::barcodes`]).
pub async fn tickets_by_barcode(
    tx: &mut Tx,
    personal: &PersonalKeys,
    event_id: Uuid,
    keys: &[String],
) -> anyhow::Result<HashMap<String, TicketLite>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<BarcodeRow> = match tx {
        Tx::Postgres(t) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT b.barcode_key, {TICKET_COLUMNS}
                 FROM ticket_barcodes b
                 JOIN tickets t ON t.event_id = b.event_id AND t.serial = b.serial
                 JOIN participants p ON p.event_id = t.event_id AND p.id = t.participant_id
                 WHERE b.event_id = $1 AND b.barcode_key = ANY($2)"
            )))
            .bind(event_id)
            .bind(keys)
            .fetch_all(&mut **t)
            .await?
        }
        Tx::Sqlite(t) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT b.barcode_key, {TICKET_COLUMNS}
                 FROM ticket_barcodes b
                 JOIN tickets t ON t.event_id = b.event_id AND t.serial = b.serial
                 JOIN participants p ON p.event_id = t.event_id AND p.id = t.participant_id
                 WHERE b.event_id = $1 AND b.barcode_key IN (SELECT value FROM json_each($2))"
            )))
            .bind(event_id)
            .bind(serde_json::to_string(keys)?)
            .fetch_all(&mut **t)
            .await?
        }
    };
    rows.into_iter()
        .map(|r| Ok((r.barcode_key, r.ticket.open(personal)?)))
        .collect()
}

/// Tickets (with their holder) of `serials` that exist, and the change log head (saves a
/// round trip in the batch).
pub async fn ticket_states(
    tx: &mut Tx,
    personal: &PersonalKeys,
    event_id: Uuid,
    serials: &[i64],
) -> anyhow::Result<HashMap<i64, StateRow>> {
    if serials.is_empty() {
        return Ok(HashMap::new());
    }
    // Primary-key probes: `participants` is keyed by (event_id, id), and a ticket's holder is
    // a participant of the same event.
    const SELECT: &str = "SELECT t.serial, t.status, p.name, p.attention, p.id AS holder_id,
                p.pd_version,
                (SELECT last_seq FROM change_counters WHERE event_id = $1) AS head
         FROM tickets t
         JOIN participants p ON p.event_id = t.event_id AND p.id = t.participant_id";
    let rows: Vec<StateRow> =
        match tx {
            Tx::Postgres(t) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT} WHERE t.event_id = $1 AND t.serial = ANY($2)"
                )))
                .bind(event_id)
                .bind(serials)
                .fetch_all(&mut **t)
                .await?
            }
            Tx::Sqlite(t) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SELECT} WHERE t.event_id = $1 AND t.serial IN (SELECT value FROM json_each($2))"
            )))
            .bind(event_id)
            .bind(serde_json::to_string(serials)?)
            .fetch_all(&mut **t)
            .await?,
        };
    rows.into_iter()
        .map(|mut r| {
            let (id, v) = (r.holder_id, r.pd_version);
            r.name = super::personal::open(personal, id, v, "name", r.name.take())?;
            r.attention = super::personal::open(personal, id, v, "attention", r.attention.take())?;
            Ok((r.serial, r))
        })
        .collect()
}
