//! What the server holds about one participant beyond their row, for a data subject's access
//! request (GDPR art. 15): every ticket issued to them, the check-ins of those tickets and the
//! mail sent to them.

use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, db_run};

/// A ticket issued to the participant (the current one or an earlier, revoked one).
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct SubjectTicket {
    pub serial: i64,
    /// `valid` or `revoked`.
    pub status: String,
    /// Unix ms.
    pub issued_at: i64,
    /// Unix ms.
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    /// Unix seconds, as signed in the credential.
    pub valid_from: i64,
    /// Unix seconds.
    pub valid_until: i64,
}

/// A scan of one of the participant's tickets at a gate.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct SubjectCheckin {
    pub id: Uuid,
    pub ticket_serial: Option<i64>,
    /// Unix ms, the gate's clock.
    pub scanned_at: i64,
    pub gate_id: Uuid,
    pub gate_name: Option<String>,
    /// `in` or `out`.
    pub direction: String,
    /// `admit` or `reject`.
    pub decision: String,
    pub reason: Option<String>,
    /// How the ticket was read (`qr`, `short_code`, …).
    pub method: String,
    /// A check-in made while the event was a draft (a rehearsal).
    pub is_test: bool,
    /// Why the server stored the check-in as invalid, if it did.
    pub invalid: Option<String>,
}

/// A message queued or sent to the participant.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct SubjectMail {
    pub id: Uuid,
    pub kind: String,
    pub ticket_serial: i64,
    /// `queued`, `sent` or `failed`.
    pub status: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub sent_at: Option<i64>,
}

pub async fn tickets(db: &Db, event_id: Uuid, id: Uuid) -> sqlx::Result<Vec<SubjectTicket>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT serial, status, issued_at, revoked_at, revoke_reason, valid_from, valid_until
             FROM tickets WHERE event_id = $1 AND participant_id = $2 ORDER BY serial",
        )
        .bind(event_id)
        .bind(id)
        .fetch_all(p)
        .await
    })
}

pub async fn checkins(
    db: &Db,
    event_id: Uuid,
    serials: &[i64],
) -> sqlx::Result<Vec<SubjectCheckin>> {
    let mut out = Vec::new();
    for serial in serials {
        let rows: Vec<SubjectCheckin> = db_run!(db, p => {
            sqlx::query_as(
                "SELECT c.id, c.ticket_serial, c.scanned_at, c.gate_id, g.name AS gate_name,
                        c.direction, c.decision, c.reason, c.method, c.is_test, c.invalid
                 FROM checkins c LEFT JOIN gates g ON g.id = c.gate_id
                 WHERE c.event_id = $1 AND c.ticket_serial = $2
                 ORDER BY c.scanned_at, c.id",
            )
            .bind(event_id)
            .bind(*serial)
            .fetch_all(p)
            .await?
        });
        out.extend(rows);
    }
    out.sort_by_key(|c| (c.scanned_at, c.id));
    Ok(out)
}

pub async fn mails(db: &Db, event_id: Uuid, id: Uuid) -> sqlx::Result<Vec<SubjectMail>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, kind, ticket_serial, status, created_at, sent_at
             FROM ticket_mails WHERE event_id = $1 AND participant_id = $2 ORDER BY id",
        )
        .bind(event_id)
        .bind(id)
        .fetch_all(p)
        .await
    })
}
