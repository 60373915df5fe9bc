//! Reads of the organizer's views of check-ins: conflicts (and their resolution), attendance
//! counts, the merged check-in log, the per-participant report.

use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

#[derive(Debug, FromRow)]
pub struct ConflictRow {
    pub id: Uuid,
    pub kind: String,
    pub ticket_serial: i64,
    pub checkin_ids: String,
    pub gate_ids: String,
    pub detected_at: i64,
    pub resolution: Option<String>,
    pub resolved_by: Option<Uuid>,
    pub resolved_at: Option<i64>,
}

pub const CONFLICT_COLUMNS: &str = "id, kind, ticket_serial, checkin_ids, gate_ids, detected_at,
    resolution, resolved_by, resolved_at";

#[derive(FromRow)]
pub struct GateCount {
    pub id: Uuid,
    pub name: String,
    pub zone: Option<String>,
    pub is_active: bool,
    pub entries: i64,
    pub exits: i64,
    pub rejected: i64,
    pub inside_via: i64,
    pub last_seen_at: Option<i64>,
}

#[derive(FromRow)]
pub struct CheckinRow {
    pub id: Uuid,
    pub gate_id: Uuid,
    pub seq: i64,
    pub ticket_serial: Option<i64>,
    pub method: String,
    pub direction: String,
    pub decision: String,
    pub reason: Option<String>,
    pub hlc: i64,
    pub scanned_at: i64,
    pub received_at: i64,
    pub operator_override: Option<String>,
    pub undoes: Option<Uuid>,
    pub invalid: Option<String>,
    pub is_test: bool,
}

pub async fn conflicts(
    db: &Db,
    event_id: Uuid,
    before: Uuid,
    kind: Option<&str>,
    status: &str,
    limit: i64,
) -> sqlx::Result<Vec<ConflictRow>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONFLICT_COLUMNS} FROM conflicts
             WHERE event_id = $1 AND id < $2 AND ($3 IS NULL OR kind = $3)
               AND ($4 = 'all' OR ($4 = 'open') = (resolution IS NULL))
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(event_id)
        .bind(before)
        .bind(kind)
        .bind(status)
        .bind(limit + 1)
        .fetch_all(p)
        .await?
    }))
}

pub async fn conflict_tx(
    tx: &mut Tx,
    event_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<ConflictRow>> {
    Ok(tx_run!(tx, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE event_id = $1 AND id = $2"
        )))
        .bind(event_id)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
    }))
}

pub async fn resolve_tx(
    tx: &mut Tx,
    event_id: Uuid,
    id: Uuid,
    resolution: &str,
    by: Uuid,
    now: i64,
) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE conflicts SET resolution = $3, resolved_by = $4, resolved_at = $5
             WHERE event_id = $1 AND id = $2",
        )
        .bind(event_id)
        .bind(id)
        .bind(resolution)
        .bind(by)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

pub async fn conflict_by_id_tx(tx: &mut Tx, id: Uuid) -> sqlx::Result<ConflictRow> {
    Ok(tx_run!(tx, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *c)
        .await?
    }))
}

/// Counts per gate; `inside_since_ms` is the instant (unix ms, a whole minute) of the event's
/// last daily check-out, 0 without one: whoever moved in before it is not inside any more.
///
/// Entries, exits and rejections come from `gate_counters` (kept by triggers on `checkins`,
/// migration `20261204050001_counters`), who is inside through which gate from `gate_presence`
/// (kept by triggers on `presence`, migration `20261206000001_presence_counters`): a few rows
/// per gate and minute, never the event's presence rows, participants or check-ins.
pub async fn gate_counts(
    db: &Db,
    event_id: Uuid,
    inside_since_ms: i64,
) -> sqlx::Result<Vec<GateCount>> {
    let mut gates: Vec<GateCount> = db_run!(db, p => {
        sqlx::query_as(
            "SELECT g.id, g.name, g.zone, g.is_active,
                CAST(COALESCE(gc.entries, 0) AS BIGINT) AS entries,
                CAST(COALESCE(gc.exits, 0) AS BIGINT) AS exits,
                CAST(COALESCE(gc.rejected, 0) AS BIGINT) AS rejected,
                CAST(0 AS BIGINT) AS inside_via,
                (SELECT max(c.last_seen_at) FROM gate_credentials c WHERE c.gate_id = g.id) AS last_seen_at
             FROM gates g LEFT JOIN gate_counters gc ON gc.gate_id = g.id
             WHERE g.event_id = $1 ORDER BY g.name, g.id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await?
    });
    let presence = presence_counts(db, event_id, inside_since_ms).await?;
    for g in &mut gates {
        g.inside_via = presence
            .iter()
            .filter(|c| c.last_gate == Some(g.id))
            .map(|c| c.inside)
            .sum();
    }
    Ok(gates)
}

/// The event's presence rows counted by the gate of their last movement.
#[derive(Debug, FromRow)]
pub struct PresenceCount {
    pub last_gate: Option<Uuid>,
    /// Inside now (moved in at or after `inside_since_ms`).
    pub inside: i64,
    /// Admitted at least once.
    pub admitted: i64,
}

/// The first minute (as `gate_presence` and `type_presence` count them: unix ms / 60,000) of
/// presence that is inside after a check-out at `inside_since_ms`.
fn first_inside_minute(inside_since_ms: i64) -> i64 {
    let minute = u64::try_from(inside_since_ms).unwrap_or(0).div_ceil(60_000);
    i64::try_from(minute).unwrap_or(i64::MAX)
}

/// [`PresenceCount`]s of an event from `gate_presence`; `inside_since_ms` as in
/// [`gate_counts`].
pub async fn presence_counts(
    db: &Db,
    event_id: Uuid,
    inside_since_ms: i64,
) -> sqlx::Result<Vec<PresenceCount>> {
    let rows: Vec<(Uuid, i64, i64)> = db_run!(db, p => {
        sqlx::query_as(
            "SELECT gate_id,
                CAST(COALESCE(sum(CASE WHEN minute >= $2 THEN inside ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(sum(admitted), 0) AS BIGINT)
             FROM gate_presence WHERE event_id = $1 GROUP BY gate_id",
        )
        .bind(event_id)
        .bind(first_inside_minute(inside_since_ms))
        .fetch_all(p)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|(gate, inside, admitted)| PresenceCount {
            last_gate: Some(gate).filter(|g| !g.is_nil()),
            inside,
            admitted,
        })
        .collect())
}

/// `(inside, admitted, issued, open conflicts)`; `inside_since_ms` as in [`gate_counts`].
/// Valid tickets come from `ticket_counters` (kept by triggers on `tickets`).
pub async fn totals(
    db: &Db,
    event_id: Uuid,
    inside_since_ms: i64,
) -> sqlx::Result<(i64, i64, i64, i64)> {
    let (issued, open): (i64, i64) = db_run!(db, p => {
        sqlx::query_as(
            "SELECT
                CAST(COALESCE((SELECT tickets_valid FROM ticket_counters WHERE event_id = $1), 0) AS BIGINT),
                CAST((SELECT count(*) FROM conflicts WHERE event_id = $1 AND resolution IS NULL) AS BIGINT)",
        )
        .bind(event_id)
        .fetch_one(p)
        .await?
    });
    let presence = presence_counts(db, event_id, inside_since_ms).await?;
    let inside = presence.iter().map(|c| c.inside).sum();
    let admitted = presence.iter().map(|c| c.admitted).sum();
    Ok((inside, admitted, issued, open))
}

pub async fn checkins(
    db: &Db,
    event_id: Uuid,
    before: Uuid,
    gate_id: Option<Uuid>,
    serial: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<CheckinRow>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, gate_id, seq, ticket_serial, method, direction, decision, reason, hlc,
                    scanned_at, received_at, operator_override, undoes, invalid, is_test
             FROM checkins
             WHERE event_id = $1 AND id < $2 AND ($3 IS NULL OR gate_id = $3)
               AND ($4 IS NULL OR ticket_serial = $4)
             ORDER BY id DESC LIMIT $5",
        )
        .bind(event_id)
        .bind(before)
        .bind(gate_id)
        .bind(serial)
        .bind(limit + 1)
        .fetch_all(p)
        .await?
    }))
}

/// Tickets inside right now, per event that has any (the metrics' occupancy gauge), from
/// `gate_presence`.
pub async fn inside_by_event(db: &Db) -> sqlx::Result<Vec<(Uuid, i64)>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(
            "SELECT event_id, CAST(sum(inside) AS BIGINT) FROM gate_presence
             GROUP BY event_id HAVING sum(inside) > 0",
        )
        .fetch_all(p)
        .await?
    }))
}

pub async fn gates_last_seen(db: &Db) -> sqlx::Result<Vec<(Uuid, i64)>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(
            "SELECT gate_id, CAST(max(last_seen_at) AS BIGINT) FROM gate_credentials
             WHERE revoked_at IS NULL AND last_seen_at IS NOT NULL GROUP BY gate_id",
        )
        .fetch_all(p)
        .await?
    }))
}

/// A participant as the event report sees them (erased participants keep their row, without
/// personal data).
#[derive(Debug, Clone, FromRow)]
pub struct ReportParticipant {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub organization: Option<String>,
    pub ticket_type: Option<String>,
    pub ticket_serial: Option<i64>,
    pub ticket_status: Option<String>,
    pub pd_version: Option<i64>,
}

/// A scan as the event report counts it: a valid check-in (not stored as invalid), not an undo
/// record; `effective` is false for a rejection and for an admission that was undone later.
#[derive(Debug, Clone, FromRow)]
pub struct ReportScan {
    pub gate_id: Uuid,
    pub ticket_serial: Option<i64>,
    pub direction: String,
    pub admitted: bool,
    pub undone: bool,
    /// Unix ms on the gate's clock.
    pub scanned_at: i64,
}

/// The gates of an event, by name.
#[derive(Debug, Clone, FromRow)]
pub struct ReportGate {
    pub id: Uuid,
    pub name: String,
    pub zone: Option<String>,
}

/// Everything the event report is computed from, read in one snapshot-free pass (the report is
/// a read; a check-in landing between the reads shows up in the next one).
pub struct ReportInput {
    pub participants: Vec<ReportParticipant>,
    pub scans: Vec<ReportScan>,
    pub gates: Vec<ReportGate>,
    /// (kind, ticket serial) of every conflict, open or resolved.
    pub conflicts: Vec<(String, i64)>,
    /// Registered participants per ticket type ([`type_counts`], the one definition the
    /// dashboard uses too).
    pub registered: Vec<TypeCount>,
}

pub async fn report_input(
    db: &Db,
    keys: &crate::domain::crypto::PersonalKeys,
    event_id: Uuid,
) -> anyhow::Result<ReportInput> {
    // Only `registered` is read here: who is inside does not matter.
    let registered = type_counts(db, event_id, 0).await?;
    let mut input = db_run!(db, p => {
        let participants = sqlx::query_as(
            "SELECT p.id, p.external_id, p.name, p.email, p.organization, p.ticket_type,
                    p.ticket_serial, t.status AS ticket_status, p.pd_version
             FROM participants p
             LEFT JOIN tickets t ON t.event_id = p.event_id AND t.serial = p.ticket_serial
             WHERE p.event_id = $1 ORDER BY p.id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await?;
        let scans = sqlx::query_as(
            "SELECT c.gate_id, c.ticket_serial, c.direction, c.decision = 'admit' AS admitted,
                    EXISTS (SELECT 1 FROM checkins u
                            WHERE u.event_id = c.event_id AND u.ticket_serial = c.ticket_serial
                              AND u.undoes = c.id) AS undone,
                    c.scanned_at
             FROM checkins c
             WHERE c.event_id = $1 AND c.invalid IS NULL AND c.undoes IS NULL AND NOT c.is_test
             ORDER BY c.scanned_at, c.id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await?;
        let gates = sqlx::query_as(
            "SELECT id, name, zone FROM gates WHERE event_id = $1 ORDER BY name, id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await?;
        let conflicts = sqlx::query_as(
            "SELECT kind, ticket_serial FROM conflicts WHERE event_id = $1 ORDER BY id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await?;
        ReportInput { participants, scans, gates, conflicts, registered }
    });
    for r in &mut input.participants {
        let (id, v) = (r.id, r.pd_version);
        r.name = super::personal::open(keys, id, v, "name", r.name.take())?;
        r.email = super::personal::open(keys, id, v, "email", r.email.take())?;
        r.organization = super::personal::open(keys, id, v, "organization", r.organization.take())?;
    }
    Ok(input)
}

/// Per ticket type (`None`: no type): participants, those admitted at least once, those inside.
///
/// This is the one definition of **registered** (the dashboard's headline, the attendance API
/// and the event report all read it here): every participant of the event, an erased one too
/// (erasure keeps the row without personal data), with or without a valid ticket. **Admitted**
/// is a participant whose current ticket has at least one effective entry in the merged
/// presence, which is the report's "attended".
#[derive(Debug, Clone, FromRow)]
pub struct TypeCount {
    pub ticket_type: Option<String>,
    pub registered: i64,
    pub admitted: i64,
    pub inside: i64,
}

/// Counts per ticket type; `inside_since_ms` as in [`gate_counts`]. Registered participants
/// come from `type_counters` (kept by triggers on `participants`), admitted and inside from
/// `type_presence` (kept by triggers on `presence` and `participants`: each presence row counts
/// under the type of the participant whose current ticket it is).
pub async fn type_counts(
    db: &Db,
    event_id: Uuid,
    inside_since_ms: i64,
) -> sqlx::Result<Vec<TypeCount>> {
    // (type, registered) and (type, admitted, inside); '' is no type.
    type Registered = Vec<(String, i64)>;
    type Moved = Vec<(String, i64, i64)>;
    let (registered, moved): (Registered, Moved) = db_run!(db, p => {
        let registered = sqlx::query_as(
            "SELECT ticket_type, CAST(registered AS BIGINT) FROM type_counters
             WHERE event_id = $1 AND registered > 0",
        )
        .bind(event_id)
        .fetch_all(p)
        .await?;
        let moved = sqlx::query_as(
            "SELECT ticket_type, CAST(COALESCE(sum(admitted), 0) AS BIGINT),
                CAST(COALESCE(sum(CASE WHEN minute >= $2 THEN inside ELSE 0 END), 0) AS BIGINT)
             FROM type_presence WHERE event_id = $1 GROUP BY ticket_type",
        )
        .bind(event_id)
        .bind(first_inside_minute(inside_since_ms))
        .fetch_all(p)
        .await?;
        (registered, moved)
    });
    let mut rows: Vec<TypeCount> = registered
        .into_iter()
        .map(|(t, registered)| TypeCount {
            ticket_type: Some(t).filter(|t| !t.is_empty()),
            registered,
            admitted: 0,
            inside: 0,
        })
        .collect();
    for (t, admitted, inside) in moved {
        let t = Some(t).filter(|t| !t.is_empty());
        if let Some(row) = rows.iter_mut().find(|r| r.ticket_type == t) {
            row.admitted = admitted;
            row.inside = inside;
        }
    }
    // The same order on both backends (PostgreSQL sorts NULL last, SQLite first).
    rows.sort_by(|a, b| a.ticket_type.cmp(&b.ticket_type));
    Ok(rows)
}

/// Admitted entries per minute from the minute of `since_ms` on (by scan time):
/// `(minute as unix ms, count)`, oldest first, minutes without entries left out. Undone and
/// invalid scans do not count. Read from `arrival_counters` (kept by triggers on `checkins`,
/// migration `20261206000002_arrival_counters`).
pub async fn arrivals_per_minute(
    db: &Db,
    event_id: Uuid,
    since_ms: i64,
) -> sqlx::Result<Vec<(i64, i64)>> {
    Ok(db_run!(db, p => {
        sqlx::query_as(
            "SELECT CAST(minute * 60000 AS BIGINT), CAST(entries AS BIGINT)
             FROM arrival_counters
             WHERE event_id = $1 AND minute >= $2 AND entries > 0
             ORDER BY minute",
        )
        .bind(event_id)
        .bind(since_ms.div_euclid(60_000))
        .fetch_all(p)
        .await?
    }))
}
