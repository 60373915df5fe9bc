//! What organizers see of the merge: conflicts (list, resolve), attendance, the check-in log and
//! the report.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::{Auth, Role};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::routes::{Page, load_event, page};
use crate::state::AppState;
use crate::store::{self, db_run, ms_to_time, now_ms, tx_run};

// ---------------------------------------------------------------- conflicts

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConflictQuery {
    /// Only this kind (`duplicate_admission`, `passback`, `exit_without_entry`,
    /// `late_revocation`, `admitted_despite_known_revocation`, `revoked_while_inside`).
    pub kind: Option<String>,
    /// `open` (default), `resolved` or `all`.
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConflictOut {
    pub id: Uuid,
    pub kind: String,
    pub ticket_serial: u64,
    pub checkin_ids: Vec<Uuid>,
    pub gate_ids: Vec<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub detected_at: OffsetDateTime,
    /// `null` while open; `acknowledged` or `ticket_revoked` once resolved.
    pub resolution: Option<String>,
    pub resolved_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resolved_at: Option<OffsetDateTime>,
}

#[derive(Debug, FromRow)]
struct ConflictRow {
    id: Uuid,
    kind: String,
    ticket_serial: i64,
    checkin_ids: String,
    gate_ids: String,
    detected_at: i64,
    resolution: Option<String>,
    resolved_by: Option<Uuid>,
    resolved_at: Option<i64>,
}

impl ConflictRow {
    fn out(self) -> Result<ConflictOut, ApiError> {
        Ok(ConflictOut {
            id: self.id,
            kind: self.kind,
            ticket_serial: u64::try_from(self.ticket_serial).map_err(anyhow::Error::from)?,
            checkin_ids: serde_json::from_str(&self.checkin_ids).map_err(anyhow::Error::from)?,
            gate_ids: serde_json::from_str(&self.gate_ids).map_err(anyhow::Error::from)?,
            detected_at: ms_to_time(self.detected_at),
            resolution: self.resolution,
            resolved_by: self.resolved_by,
            resolved_at: self.resolved_at.map(ms_to_time),
        })
    }
}

const CONFLICT_COLUMNS: &str = "id, kind, ticket_serial, checkin_ids, gate_ids, detected_at,
    resolution, resolved_by, resolved_at";

/// Conflicts of an event, newest first, filtered by kind and status (viewer).
#[utoipa::path(get, path = "/api/v1/events/{event}/conflicts", tag = "conflicts", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ConflictQuery),
    responses((status = 200, body = Page<ConflictOut>)))]
pub async fn list_conflicts(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(q): Query<ConflictQuery>,
) -> Result<axum::Json<Page<ConflictOut>>, ApiError> {
    auth.require(Role::Viewer)?;
    load_event(&state, event_id).await?;
    if let Some(k) = &q.kind
        && sync_protocol::ConflictKind::parse(k).is_none()
    {
        return Err(ApiError::bad_request(
            Some("kind"),
            format!("unknown conflict kind {k:?}"),
        ));
    }
    let status = q.status.as_deref().unwrap_or("open");
    if !matches!(status, "open" | "resolved" | "all") {
        return Err(ApiError::bad_request(
            Some("status"),
            "status is open, resolved or all",
        ));
    }
    let params = crate::routes::PageParams {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    let limit = params.limit()?;
    // UUIDv7 ids are time-ordered: the cursor is the last id of the previous page.
    let before = params.after()?.unwrap_or(Uuid::max());
    let rows: Vec<ConflictRow> = db_run!(&state.db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONFLICT_COLUMNS} FROM conflicts
             WHERE event_id = $1 AND id < $2 AND ($3 IS NULL OR kind = $3)
               AND ($4 = 'all' OR ($4 = 'open') = (resolution IS NULL))
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(event_id)
        .bind(before)
        .bind(q.kind.as_deref())
        .bind(status)
        .bind(limit + 1)
        .fetch_all(p)
        .await?
    });
    Ok(axum::Json(page(rows, limit, |r| r.id, ConflictRow::out)?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// `acknowledge` (keep the ticket) or `revoke_ticket` (revoke the ticket it is about).
    pub action: String,
    /// Why, for the audit log.
    #[serde(default)]
    pub note: Option<String>,
}

/// Resolves a conflict (staff): acknowledge it, or revoke the ticket. Audited.
#[utoipa::path(post, path = "/api/v1/events/{event}/conflicts/{id}/resolve", tag = "conflicts", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Conflict id")),
    request_body = ResolveBody,
    responses((status = 200, body = ConflictOut), (status = 404), (status = 409, description = "Already resolved"),
              (status = 422, description = "Unknown action")))]
pub async fn resolve_conflict(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
    Json(body): Json<ResolveBody>,
) -> Result<axum::Json<ConflictOut>, ApiError> {
    auth.require(Role::Staff)?;
    let resolution = match body.action.as_str() {
        "acknowledge" => "acknowledged",
        "revoke_ticket" => "ticket_revoked",
        _ => {
            return Err(ApiError::validation(
                "action",
                "action must be `acknowledge` or `revoke_ticket`",
            ));
        }
    };
    let now = now_ms();
    let mut staged = crate::sync::notify::Staged::default();
    let mut tx = state.db.begin().await?;
    let row: ConflictRow = tx_run!(&mut tx, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE event_id = $1 AND id = $2"
        )))
        .bind(event_id)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
    })
    .ok_or(ApiError::NotFound("conflict"))?;
    if row.resolution.is_some() {
        return Err(ApiError::Conflict(
            "the conflict is already resolved".into(),
        ));
    }
    if resolution == "ticket_revoked" {
        let reason = body
            .note
            .clone()
            .unwrap_or_else(|| format!("conflict {id} ({})", row.kind));
        staged = crate::routes::participants::revoke_serial(
            &state,
            &mut tx,
            event_id,
            row.ticket_serial,
            &reason,
        )
        .await?;
    }
    tx_run!(&mut tx, c => {
        sqlx::query(
            "UPDATE conflicts SET resolution = $3, resolved_by = $4, resolved_at = $5
             WHERE event_id = $1 AND id = $2",
        )
        .bind(event_id)
        .bind(id)
        .bind(resolution)
        .bind(auth.user_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    store::audit::record(
        &mut tx,
        &auth.actor(),
        "conflict.resolve",
        Some(event_id),
        Some(format!("conflict:{id}")),
        serde_json::json!({"action": body.action, "note": body.note, "kind": row.kind,
            "ticket_serial": row.ticket_serial}),
    )
    .await?;
    let out: ConflictRow = tx_run!(&mut tx, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *c)
        .await?
    });
    tx.commit().await?;
    state.notifier.committed(staged);
    Ok(axum::Json(out.out()?))
}

// ---------------------------------------------------------------- attendance

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GateAttendance {
    pub gate_id: Uuid,
    pub name: String,
    pub zone: Option<String>,
    pub is_active: bool,
    /// Admitted entries (undone scans excluded).
    pub entries: u64,
    pub exits: u64,
    pub rejected: u64,
    /// Tickets whose last movement was through this gate and who are inside.
    pub inside_via: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen_at: Option<OffsetDateTime>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ZoneAttendance {
    pub zone: Option<String>,
    /// People inside whose last movement was through a gate of this zone.
    pub inside: u64,
    pub entries: u64,
    pub exits: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attendance {
    pub event_id: Uuid,
    /// Distinct tickets inside now (from the merged presence).
    pub inside: u64,
    /// Distinct tickets admitted at least once.
    pub admitted_tickets: u64,
    pub tickets_issued: u64,
    pub open_conflicts: u64,
    pub gates: Vec<GateAttendance>,
    pub zones: Vec<ZoneAttendance>,
}

#[derive(FromRow)]
struct GateCount {
    id: Uuid,
    name: String,
    zone: Option<String>,
    is_active: bool,
    entries: i64,
    exits: i64,
    rejected: i64,
    inside_via: i64,
    last_seen_at: Option<i64>,
}

/// Live counts per gate and zone (viewer).
#[utoipa::path(get, path = "/api/v1/events/{event}/attendance", tag = "live", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, body = Attendance)))]
pub async fn attendance(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<axum::Json<Attendance>, ApiError> {
    auth.require(Role::Viewer)?;
    load_event(&state, event_id).await?;
    // Counts are cast to BIGINT: a PostgreSQL count()/sum() would otherwise be NUMERIC.
    let gates: Vec<GateCount> = db_run!(&state.db, p => {
        sqlx::query_as(
            "SELECT g.id, g.name, g.zone, g.is_active,
                CAST(COALESCE((SELECT count(*) FROM checkins c WHERE c.gate_id = g.id
                    AND c.decision = 'admit' AND c.direction = 'in' AND c.invalid IS NULL
                    AND c.undoes IS NULL
                    AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = c.id)), 0) AS BIGINT) AS entries,
                CAST(COALESCE((SELECT count(*) FROM checkins c WHERE c.gate_id = g.id
                    AND c.decision = 'admit' AND c.direction = 'out' AND c.invalid IS NULL
                    AND c.undoes IS NULL
                    AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = c.id)), 0) AS BIGINT) AS exits,
                CAST(COALESCE((SELECT count(*) FROM checkins c WHERE c.gate_id = g.id
                    AND c.decision = 'reject' AND c.invalid IS NULL), 0) AS BIGINT) AS rejected,
                CAST(COALESCE((SELECT count(*) FROM presence pr WHERE pr.event_id = g.event_id
                    AND pr.last_gate = g.id AND pr.inside), 0) AS BIGINT) AS inside_via,
                (SELECT max(gc.last_seen_at) FROM gate_credentials gc WHERE gc.gate_id = g.id) AS last_seen_at
             FROM gates g WHERE g.event_id = $1 ORDER BY g.name, g.id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await?
    });
    let (inside, admitted, issued, open): (i64, i64, i64, i64) = db_run!(&state.db, p => {
        sqlx::query_as(
            "SELECT
                CAST((SELECT count(*) FROM presence WHERE event_id = $1 AND inside) AS BIGINT),
                CAST((SELECT count(*) FROM presence WHERE event_id = $1 AND entries > 0) AS BIGINT),
                CAST((SELECT count(*) FROM tickets WHERE event_id = $1 AND status = 'valid') AS BIGINT),
                CAST((SELECT count(*) FROM conflicts WHERE event_id = $1 AND resolution IS NULL) AS BIGINT)",
        )
        .bind(event_id)
        .fetch_one(p)
        .await?
    });
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    let mut zones: BTreeMap<Option<String>, ZoneAttendance> = BTreeMap::new();
    for g in &gates {
        let z = zones.entry(g.zone.clone()).or_insert(ZoneAttendance {
            zone: g.zone.clone(),
            inside: 0,
            entries: 0,
            exits: 0,
        });
        z.inside += u(g.inside_via);
        z.entries += u(g.entries);
        z.exits += u(g.exits);
    }
    Ok(axum::Json(Attendance {
        event_id,
        inside: u(inside),
        admitted_tickets: u(admitted),
        tickets_issued: u(issued),
        open_conflicts: u(open),
        gates: gates
            .into_iter()
            .map(|g| GateAttendance {
                gate_id: g.id,
                name: g.name,
                zone: g.zone,
                is_active: g.is_active,
                entries: u(g.entries),
                exits: u(g.exits),
                rejected: u(g.rejected),
                inside_via: u(g.inside_via),
                last_seen_at: g.last_seen_at.map(ms_to_time),
            })
            .collect(),
        zones: zones.into_values().collect(),
    }))
}

// ---------------------------------------------------------------- check-in log and report

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckinQuery {
    pub gate_id: Option<Uuid>,
    pub ticket_serial: Option<u64>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema, FromRow)]
pub struct CheckinOut {
    pub id: Uuid,
    pub gate_id: Uuid,
    pub seq: i64,
    pub ticket_serial: Option<i64>,
    pub method: String,
    pub direction: String,
    pub decision: String,
    pub reason: Option<String>,
    /// Decimal string (64-bit clock).
    pub hlc: String,
    pub scanned_at: i64,
    pub received_at: i64,
    pub operator_override: Option<String>,
    pub undoes: Option<Uuid>,
    pub invalid: Option<String>,
}

#[derive(FromRow)]
struct CheckinRow {
    id: Uuid,
    gate_id: Uuid,
    seq: i64,
    ticket_serial: Option<i64>,
    method: String,
    direction: String,
    decision: String,
    reason: Option<String>,
    hlc: i64,
    scanned_at: i64,
    received_at: i64,
    operator_override: Option<String>,
    undoes: Option<Uuid>,
    invalid: Option<String>,
}

impl From<CheckinRow> for CheckinOut {
    fn from(r: CheckinRow) -> Self {
        Self {
            id: r.id,
            gate_id: r.gate_id,
            seq: r.seq,
            ticket_serial: r.ticket_serial,
            method: r.method,
            direction: r.direction,
            decision: r.decision,
            reason: r.reason,
            hlc: r.hlc.to_string(),
            scanned_at: r.scanned_at,
            received_at: r.received_at,
            operator_override: r.operator_override,
            undoes: r.undoes,
            invalid: r.invalid,
        }
    }
}

/// The merged check-in log, newest first (viewer). `scanned_at`/`received_at` are unix ms.
#[utoipa::path(get, path = "/api/v1/events/{event}/checkins", tag = "checkins", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), CheckinQuery),
    responses((status = 200, body = Page<CheckinOut>)))]
pub async fn list_checkins(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(q): Query<CheckinQuery>,
) -> Result<axum::Json<Page<CheckinOut>>, ApiError> {
    auth.require(Role::Viewer)?;
    load_event(&state, event_id).await?;
    let params = crate::routes::PageParams {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    let limit = params.limit()?;
    let before = params.after()?.unwrap_or(Uuid::max());
    let serial = q
        .ticket_serial
        .map(i64::try_from)
        .transpose()
        .map_err(|_| ApiError::bad_request(Some("ticket_serial"), "ticket_serial is too large"))?;
    let rows: Vec<CheckinRow> = db_run!(&state.db, p => {
        sqlx::query_as(
            "SELECT id, gate_id, seq, ticket_serial, method, direction, decision, reason, hlc,
                    scanned_at, received_at, operator_override, undoes, invalid
             FROM checkins
             WHERE event_id = $1 AND id < $2 AND ($3 IS NULL OR gate_id = $3)
               AND ($4 IS NULL OR ticket_serial = $4)
             ORDER BY id DESC LIMIT $5",
        )
        .bind(event_id)
        .bind(before)
        .bind(q.gate_id)
        .bind(serial)
        .bind(limit + 1)
        .fetch_all(p)
        .await?
    });
    Ok(axum::Json(page(rows, limit, |r| r.id, |r| Ok(r.into()))?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

#[derive(Debug, Serialize, FromRow, utoipa::ToSchema)]
pub struct ReportRow {
    pub participant_id: Uuid,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub organization: Option<String>,
    pub ticket_serial: Option<i64>,
    pub ticket_status: Option<String>,
    pub inside: Option<bool>,
    pub entries: Option<i64>,
    pub exits: Option<i64>,
    pub first_admission: Option<Uuid>,
}

/// Per participant: ticket, whether inside, entries and exits (viewer). `?format=csv` for
/// spreadsheets.
#[utoipa::path(get, path = "/api/v1/events/{event}/report", tag = "live", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ReportQuery),
    responses((status = 200, body = Vec<ReportRow>), (status = 200, content_type = "text/csv", body = String)))]
pub async fn report(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    auth.require(Role::Viewer)?;
    load_event(&state, event_id).await?;
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv") {
        return Err(ApiError::bad_request(
            Some("format"),
            "format is json or csv",
        ));
    }
    let rows: Vec<ReportRow> = db_run!(&state.db, p => {
        sqlx::query_as(
            "SELECT p.id AS participant_id, p.external_id, p.name, p.email, p.organization,
                    t.serial AS ticket_serial, t.status AS ticket_status, pr.inside, pr.entries,
                    pr.exits, pr.canonical_checkin AS first_admission
             FROM participants p
             LEFT JOIN tickets t ON t.event_id = p.event_id AND t.serial = p.ticket_serial
             LEFT JOIN presence pr ON pr.event_id = p.event_id AND pr.serial = p.ticket_serial
             WHERE p.event_id = $1 ORDER BY p.id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await?
    });
    if format == "json" {
        return Ok(axum::Json(rows).into_response());
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "participant_id",
        "external_id",
        "name",
        "email",
        "organization",
        "ticket_serial",
        "ticket_status",
        "inside",
        "entries",
        "exits",
        "first_admission",
    ])
    .map_err(anyhow::Error::from)?;
    for r in rows {
        let opt = |v: Option<String>| v.unwrap_or_default();
        w.write_record([
            r.participant_id.to_string(),
            opt(r.external_id),
            opt(r.name),
            opt(r.email),
            opt(r.organization),
            r.ticket_serial.map(|s| s.to_string()).unwrap_or_default(),
            opt(r.ticket_status),
            r.inside
                .map(|b| b.to_string())
                .unwrap_or_else(|| "false".into()),
            r.entries.unwrap_or(0).to_string(),
            r.exits.unwrap_or(0).to_string(),
            r.first_admission.map(|u| u.to_string()).unwrap_or_default(),
        ])
        .map_err(anyhow::Error::from)?;
    }
    let body = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"report.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}
