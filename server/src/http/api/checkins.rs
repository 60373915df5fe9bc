//! What organizers see of the merge: conflicts (list, resolve), attendance, the check-in log and
//! the report.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::http::api::{Page, load_event, page};
use crate::http::extract::{Json, Path, Query};
use crate::service::AppState;
use crate::service::uow::UnitOfWork;
use crate::store::reports::{CheckinRow, ConflictRow};
use crate::store::{self, ms_to_time, now_ms};

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

impl ConflictRow {
    fn out(self) -> Result<ConflictOut, Error> {
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

/// Conflicts of an event, newest first, filtered by kind and status (viewer).
#[utoipa::path(get, path = "/api/v1/events/{event}/conflicts", tag = "conflicts", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ConflictQuery),
    responses((status = 200, description = "OK", body = Page<ConflictOut>)))]
pub async fn list_conflicts(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(q): Query<ConflictQuery>,
) -> Result<axum::Json<Page<ConflictOut>>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    if let Some(k) = &q.kind
        && sync_protocol::ConflictKind::parse(k).is_none()
    {
        return Err(Error::bad_request(
            Some("kind"),
            format!("unknown conflict kind {k:?}"),
        ));
    }
    let status = q.status.as_deref().unwrap_or("open");
    if !matches!(status, "open" | "resolved" | "all") {
        return Err(Error::bad_request(
            Some("status"),
            "status is open, resolved or all",
        ));
    }
    let params = crate::http::api::PageParams {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    let limit = params.limit()?;
    // UUIDv7 ids are time-ordered: the cursor is the last id of the previous page.
    let before = params.after()?.unwrap_or(Uuid::max());
    let rows = store::reports::conflicts(
        &state.db,
        event_id,
        before,
        q.kind.as_deref(),
        status,
        limit,
    )
    .await?;
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
    responses((status = 200, description = "OK", body = ConflictOut), (status = 404, description = "Not found"), (status = 409, description = "Already resolved"),
              (status = 422, description = "Unknown action")))]
pub async fn resolve_conflict(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
    Json(body): Json<ResolveBody>,
) -> Result<axum::Json<ConflictOut>, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let resolution = match body.action.as_str() {
        "acknowledge" => "acknowledged",
        "revoke_ticket" => "ticket_revoked",
        _ => {
            return Err(Error::validation(
                "action",
                "action must be `acknowledge` or `revoke_ticket`",
            ));
        }
    };
    let now = now_ms();
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let row = store::reports::conflict_tx(uow.tx(), event_id, id)
        .await?
        .ok_or(Error::NotFound("conflict"))?;
    if row.resolution.is_some() {
        return Err(Error::Conflict("the conflict is already resolved".into()));
    }
    if resolution == "ticket_revoked" {
        let reason = body
            .note
            .clone()
            .unwrap_or_else(|| format!("conflict {id} ({})", row.kind));
        crate::http::api::participants::revoke_serial(
            &state,
            &mut uow,
            event_id,
            row.ticket_serial,
            &reason,
        )
        .await?;
    }
    store::reports::resolve_tx(uow.tx(), event_id, id, resolution, auth.user_id, now).await?;
    store::audit::record(
        uow.tx(),
        &auth.actor(),
        "conflict.resolve",
        Some(event_id),
        Some(format!("conflict:{id}")),
        serde_json::json!({"action": body.action, "note": body.note, "kind": row.kind,
            "ticket_serial": row.ticket_serial}),
    )
    .await?;
    let out = store::reports::conflict_by_id_tx(uow.tx(), id).await?;
    uow.webhook(
        event_id,
        crate::domain::webhook::CONFLICT_RESOLVED,
        serde_json::json!({"event_id": event_id, "conflict_id": id, "kind": out.kind,
            "ticket_serial": out.ticket_serial, "resolution": out.resolution,
            "resolved_by": out.resolved_by}),
    );
    uow.commit(&state.notifier).await?;
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
pub struct TypeAttendance {
    /// `null`: participants without a ticket type.
    pub ticket_type: Option<String>,
    pub registered: u64,
    /// Admitted at least once.
    pub admitted: u64,
    pub inside: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attendance {
    pub event_id: Uuid,
    /// Distinct tickets inside now (from the merged presence).
    pub inside: u64,
    /// Distinct tickets admitted at least once.
    pub admitted_tickets: u64,
    /// Valid tickets.
    pub tickets_issued: u64,
    /// Participants of the event, the report's "registered" (one definition:
    /// `store::reports::type_counts`).
    pub registered: u64,
    /// Participants whose current ticket has at least one effective entry, the report's
    /// "attended".
    pub attended: u64,
    pub open_conflicts: u64,
    pub gates: Vec<GateAttendance>,
    pub zones: Vec<ZoneAttendance>,
    /// Counts per ticket type, by type name.
    pub ticket_types: Vec<TypeAttendance>,
}

/// Live counts per gate and zone (viewer).
#[utoipa::path(get, path = "/api/v1/events/{event}/attendance", tag = "live", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "OK", body = Attendance)))]
pub async fn attendance(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<axum::Json<Attendance>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    let event = load_event(&state, event_id).await?;
    // The daily automatic check-out is a rule on the clock, not a job: presence from before
    // the last check-out instant is not inside.
    let since = crate::domain::event::EventSettings::parse(&event.settings)?
        .daily_checkout()
        .map_or(0, |c| {
            c.last_at_or_before(u64::try_from(now_ms()).unwrap_or(0))
        });
    // Counts are cast to BIGINT: a PostgreSQL count()/sum() would otherwise be NUMERIC.
    let gates = store::reports::gate_counts(&state.db, event_id, since).await?;
    let (inside, admitted, issued, open) =
        store::reports::totals(&state.db, event_id, since).await?;
    let types = store::reports::type_counts(&state.db, event_id, since).await?;
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
        registered: types.iter().map(|t| u(t.registered)).sum(),
        attended: types.iter().map(|t| u(t.admitted)).sum(),
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
        ticket_types: types
            .into_iter()
            .map(|t| TypeAttendance {
                ticket_type: t.ticket_type,
                registered: u(t.registered),
                admitted: u(t.admitted),
                inside: u(t.inside),
            })
            .collect(),
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    /// Made before the event first went live: a test of the gates, left out of attendance,
    /// the dashboard, the report and conflicts.
    pub test: bool,
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
            test: r.is_test,
        }
    }
}

/// The merged check-in log, newest first (viewer). `scanned_at`/`received_at` are unix ms.
#[utoipa::path(get, path = "/api/v1/events/{event}/checkins", tag = "checkins", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), CheckinQuery),
    responses((status = 200, description = "OK", body = Page<CheckinOut>)))]
pub async fn list_checkins(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(q): Query<CheckinQuery>,
) -> Result<axum::Json<Page<CheckinOut>>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let params = crate::http::api::PageParams {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    let limit = params.limit()?;
    let before = params.after()?.unwrap_or(Uuid::max());
    let serial = q
        .ticket_serial
        .map(i64::try_from)
        .transpose()
        .map_err(|_| Error::bad_request(Some("ticket_serial"), "ticket_serial is too large"))?;
    let rows =
        store::reports::checkins(&state.db, event_id, before, q.gate_id, serial, limit).await?;
    Ok(axum::Json(page(rows, limit, |r| r.id, |r| Ok(r.into()))?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default), `csv` or `html` (a printable page).
    pub format: Option<String>,
}

/// The event report (viewer): registered, attended, no-shows, attendance rate, arrivals per 5
/// minutes, the peak minute, per-gate throughput and median time between scans, conflicts by
/// kind, all of it for the whole event and per ticket type; per participant the time of the
/// first admission and of the last exit. `?format=csv` writes one fact per row (scope,
/// ticket_type, section, subject, metric, value), `?format=html` a printable page; the three
/// hold the same numbers.
#[utoipa::path(get, path = "/api/v1/events/{event}/report", tag = "live", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ReportQuery),
    responses((status = 200, description = "OK", body = crate::service::reports::Report),
        (status = 200, description = "OK", content_type = "text/csv", body = String),
        (status = 200, description = "OK", content_type = "text/html", body = String)))]
pub async fn report(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv" | "html") {
        return Err(Error::bad_request(
            Some("format"),
            "format is json, csv or html",
        ));
    }
    let report =
        crate::service::reports::event_report(&state.db, state.master.personal(), event_id).await?;
    match format {
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"report.csv\"",
                ),
            ],
            crate::http::api::report::csv(&report)?,
        )
            .into_response()),
        "html" => Ok((
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            crate::http::api::report::html(&report)?,
        )
            .into_response()),
        _ => Ok(axum::Json(report).into_response()),
    }
}
