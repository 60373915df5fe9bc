//! Alerts: an event's rules (`GET|PUT /api/v1/events/{event}/alert-rules`) and the alerts that
//! fired (`GET …/alerts`).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Page, PageParams, load_event, page};
use crate::domain::Error;
use crate::domain::alerts::Rules;
use crate::domain::auth::{Auth, Role};
use crate::http::error::Problem;
use crate::http::extract::{Json, Path, Query};
use crate::service::AppState;
use crate::service::alerts as service;
use crate::store::alerts::AlertRow;
use crate::store::{self, ms_to_time};

/// An alert: a rule that fired for a subject, and when it stopped.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertOut {
    pub id: Uuid,
    pub event_id: Uuid,
    /// `gate_offline`, `outbox_depth`, `conflict_created`, `attendance` or `error_rate`.
    pub kind: String,
    /// The gate id (`gate_offline`, `outbox_depth`), or `event`.
    pub subject: String,
    /// `firing` or `cleared`.
    pub state: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub fired_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cleared_at: Option<OffsetDateTime>,
    /// What the evaluator saw when the alert fired (thresholds, counts, the gate's name).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// What it saw when the alert cleared.
    #[schema(value_type = Option<Object>)]
    pub cleared_detail: Option<serde_json::Value>,
}

impl From<AlertRow> for AlertOut {
    fn from(r: AlertRow) -> Self {
        let json = |t: &str| serde_json::from_str(t).unwrap_or(serde_json::Value::Null);
        Self {
            id: r.id,
            event_id: r.event_id,
            kind: r.kind,
            subject: r.subject,
            state: if r.cleared_at.is_some() {
                "cleared"
            } else {
                "firing"
            }
            .into(),
            fired_at: ms_to_time(r.fired_at),
            cleared_at: r.cleared_at.map(ms_to_time),
            detail: json(&r.detail),
            cleared_detail: r.cleared_detail.as_deref().map(json),
        }
    }
}

/// The event's alert rules: its own, or the defaults (viewer).
#[utoipa::path(get, operation_id = "alert_rules_get", path = "/api/v1/events/{event}/alert-rules", tag = "alerts", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "OK", body = Rules), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get_rules(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<Json<Rules>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    Ok(Json(service::rules(&state.db, event_id).await?))
}

/// Replaces the event's alert rules (staff). A kind or field left out takes its default; a
/// threshold out of range is a 422 naming it (`gate_offline.after_seconds`).
#[utoipa::path(put, operation_id = "alert_rules_put", path = "/api/v1/events/{event}/alert-rules", tag = "alerts", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = Rules,
    responses((status = 200, description = "Saved", body = Rules), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn put_rules(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Json(rules): Json<Rules>,
) -> Result<Json<Rules>, Error> {
    auth.require_on(event_id, Role::Staff)?;
    Ok(Json(
        service::save_rules(&state.db, &auth.actor(), event_id, rules).await?,
    ))
}

/// `?state=&cursor=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertParams {
    /// `firing` or `cleared` (default: both).
    pub state: Option<String>,
    pub cursor: Option<String>,
    /// 1..=1000, default 100.
    pub limit: Option<u32>,
}

/// The event's alerts, firing and cleared, newest first (viewer).
#[utoipa::path(get, operation_id = "alert_list", path = "/api/v1/events/{event}/alerts", tag = "alerts", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), AlertParams),
    responses((status = 200, description = "OK", body = Page<AlertOut>), (status = 400, description = "Bad parameter (problem+json names it)", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(params): Query<AlertParams>,
) -> Result<Json<Page<AlertOut>>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let firing = match params.state.as_deref() {
        None | Some("") => None,
        Some("firing") => Some(true),
        Some("cleared") => Some(false),
        Some(other) => {
            return Err(Error::bad_request(
                Some("state"),
                format!("state {other:?} is not one of firing, cleared"),
            ));
        }
    };
    let paging = PageParams {
        cursor: params.cursor.clone(),
        limit: params.limit,
    };
    let limit = paging.limit()?;
    let before = paging.after()?.unwrap_or(Uuid::max());
    let rows = store::alerts::list(&state.db, event_id, firing, before, limit).await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| Ok(r.into()))?))
}
