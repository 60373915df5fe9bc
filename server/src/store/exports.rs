//! Reads for the organizer's exports: participants with their check-in facts, and the whole
//! check-in log (failed scans included) with gate names.

use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, db_run};
use crate::domain::crypto::PersonalKeys;

/// A participant with the facts of their check-ins (erased participants have no personal data).
#[derive(Debug, Clone, FromRow)]
pub struct ParticipantFacts {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub organization: Option<String>,
    pub ticket_type: Option<String>,
    pub ticket_serial: Option<i64>,
    pub ticket_status: Option<String>,
    pub inside: Option<bool>,
    pub entries: Option<i64>,
    pub exits: Option<i64>,
    /// Unix ms of the first effective entry (an undone one does not count).
    pub first_entry: Option<i64>,
    /// Unix ms of the last effective exit.
    pub last_exit: Option<i64>,
    pub pd_version: Option<i64>,
}

/// An effective admission: admitted, valid, not a test, not an undo, not undone.
const EFFECTIVE: &str = "c.decision = 'admit' AND c.invalid IS NULL AND c.undoes IS NULL
    AND NOT c.is_test
    AND NOT EXISTS (SELECT 1 FROM checkins u
                    WHERE u.event_id = c.event_id AND u.ticket_serial = c.ticket_serial
                      AND u.undoes = c.id)";

/// Every participant of the event with their facts, personal data decrypted.
pub async fn participants(
    db: &Db,
    keys: &PersonalKeys,
    event_id: Uuid,
) -> anyhow::Result<Vec<ParticipantFacts>> {
    let rows: Vec<ParticipantFacts> = db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT p.id, p.external_id, p.name, p.email, p.phone, p.organization, p.ticket_type,
                    p.ticket_serial, t.status AS ticket_status, pr.inside, p.pd_version,
                    CAST(pr.entries AS BIGINT) AS entries, CAST(pr.exits AS BIGINT) AS exits,
                    (SELECT min(c.scanned_at) FROM checkins c
                     WHERE c.event_id = p.event_id AND c.ticket_serial = p.ticket_serial
                       AND c.direction = 'in' AND {EFFECTIVE}) AS first_entry,
                    (SELECT max(c.scanned_at) FROM checkins c
                     WHERE c.event_id = p.event_id AND c.ticket_serial = p.ticket_serial
                       AND c.direction = 'out' AND {EFFECTIVE}) AS last_exit
             FROM participants p
             LEFT JOIN tickets t ON t.event_id = p.event_id AND t.serial = p.ticket_serial
             LEFT JOIN presence pr ON pr.event_id = p.event_id AND pr.serial = p.ticket_serial
             WHERE p.event_id = $1 ORDER BY p.id"
        )))
        .bind(event_id)
        .fetch_all(p)
        .await?
    });
    rows.into_iter()
        .map(|mut r| {
            let (id, v) = (r.id, r.pd_version);
            let o = |column: &str, value: Option<String>| {
                super::personal::open(keys, id, v, column, value)
            };
            r.name = o("name", r.name.take())?;
            r.email = o("email", r.email.take())?;
            r.phone = o("phone", r.phone.take())?;
            r.organization = o("organization", r.organization.take())?;
            Ok(r)
        })
        .collect()
}

/// (ticket serial, gate name) of every gate that admitted a ticket of the event.
pub async fn admitting_gates(db: &Db, event_id: Uuid) -> sqlx::Result<Vec<(i64, String)>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT c.ticket_serial, g.name FROM checkins c
             JOIN gates g ON g.id = c.gate_id
             WHERE c.event_id = $1 AND c.ticket_serial IS NOT NULL AND {EFFECTIVE}
             ORDER BY c.ticket_serial, g.name"
        )))
        .bind(event_id)
        .fetch_all(p)
        .await?
    }))
}

/// One row of the check-in log, with its gate's name.
#[derive(Debug, Clone, FromRow)]
pub struct LogRow {
    pub id: Uuid,
    pub gate_name: Option<String>,
    pub seq: i64,
    pub ticket_serial: Option<i64>,
    pub code: Option<String>,
    pub method: String,
    pub direction: String,
    pub decision: String,
    pub reason: Option<String>,
    pub scanned_at: i64,
    pub received_at: i64,
    pub operator_override: Option<String>,
    pub undoes: Option<Uuid>,
    pub invalid: Option<String>,
    /// Made before the event first went live.
    pub is_test: bool,
}

/// Every check-in of the event, oldest scan first: admissions, rejections and the entries that
/// were stored as invalid.
pub async fn checkin_log(db: &Db, event_id: Uuid) -> sqlx::Result<Vec<LogRow>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(
            "SELECT c.id, g.name AS gate_name, c.seq, c.ticket_serial, c.code, c.method,
                    c.direction, c.decision, c.reason, c.scanned_at, c.received_at,
                    c.operator_override, c.undoes, c.invalid, c.is_test
             FROM checkins c LEFT JOIN gates g ON g.id = c.gate_id
             WHERE c.event_id = $1 ORDER BY c.scanned_at, c.id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await?
    }))
}
