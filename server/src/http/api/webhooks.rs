//! `GET|POST /api/v1/events/{event}/webhooks`, `GET|PATCH|DELETE …/webhooks/{id}`,
//! `POST …/{id}/rotate`, `POST …/{id}/test`, `GET …/{id}/deliveries` (admin: an endpoint's URL
//! may carry a token of the receiving system).
//!
//! Deliveries follow the Standard Webhooks specification; see `service::webhooks`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Page, PageParams, load_event, page};
use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::domain::live::Live;
use crate::domain::text::clean;
use crate::domain::webhook;
use crate::http::error::Problem;
use crate::http::extract::{Json, Path, Query, double_option};
use crate::service::AppState;
use crate::service::webhooks as hooks;
use crate::store::webhooks::{DeliveryRow, EndpointRow};
use crate::store::{self, ms_to_time, now_ms};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookOut {
    pub id: Uuid,
    pub event_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// Subscribed event types.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why the endpoint was disabled (by an organizer, or after failing continuously).
    pub disabled_reason: Option<String>,
    /// The signing secret (`whsec_…`): only in the answers of create and rotate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the previous secret also signs, after a rotation.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    /// Since when every attempt failed (null while healthy).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub failing_since: Option<OffsetDateTime>,
    pub consecutive_failures: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl WebhookOut {
    fn build(e: &EndpointRow, secret: Option<String>) -> Self {
        let now = now_ms();
        Self {
            id: e.id,
            event_id: e.event_id,
            url: e.url.clone(),
            description: e.description.clone(),
            events: e.types(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            secret,
            previous_secret_expires_at: e
                .previous_until
                .filter(|u| *u > now && e.previous_secret.is_some())
                .map(ms_to_time),
            failing_since: e.failing_since.map(ms_to_time),
            consecutive_failures: u64::try_from(e.consecutive_failures).unwrap_or(0),
            created_at: ms_to_time(e.created_at),
            updated_at: ms_to_time(e.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreate {
    /// `http` or `https` URL the deliveries are POSTed to.
    pub url: String,
    /// Event types to receive: `checkin.created`, `checkin.reverted`, `conflict.created`,
    /// `conflict.resolved`, `participant.created`, `participant.updated`, `ticket.revoked`,
    /// `gate.offline`, `gate.online`, `alert.fired`, `alert.cleared`.
    pub events: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// `false` disables the endpoint (its pending deliveries fail); `true` re-enables it and
    /// clears its failure streak.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

fn description(d: Option<String>) -> Result<Option<String>, Error> {
    let d = clean(d);
    if d.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(Error::validation(
            "description",
            "description must be at most 500 characters",
        ));
    }
    Ok(d)
}

fn types_json(types: &[String]) -> Result<String, Error> {
    Ok(serde_json::to_string(types).map_err(anyhow::Error::from)?)
}

async fn endpoint(state: &AppState, event_id: Uuid, id: Uuid) -> Result<EndpointRow, Error> {
    store::webhooks::get_endpoint(&state.db, event_id, id)
        .await?
        .ok_or(Error::NotFound("webhook"))
}

async fn audit(
    tx: &mut store::Tx,
    auth: &Auth,
    action: &str,
    e: &EndpointRow,
) -> Result<(), Error> {
    store::audit::record(
        tx,
        &auth.actor(),
        action,
        Some(e.event_id),
        Some(format!("webhook:{}", e.id)),
        serde_json::json!({"url": e.url, "events": e.types(), "enabled": e.enabled}),
    )
    .await?;
    Ok(())
}

/// Lists the webhook endpoints of an event (admin).
#[utoipa::path(get, operation_id = "webhook_list", path = "/api/v1/events/{event}/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "The event's endpoints", body = Page<WebhookOut>),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<Json<Page<WebhookOut>>, Error> {
    auth.require_on(event_id, Role::Admin)?;
    load_event(&state, event_id).await?;
    let rows = store::webhooks::list_endpoints(&state.db, event_id).await?;
    Ok(Json(Page {
        items: rows.iter().map(|e| WebhookOut::build(e, None)).collect(),
        next_cursor: None,
    }))
}

/// Creates a webhook endpoint (admin). The answer carries the signing secret, shown only here.
#[utoipa::path(post, operation_id = "webhook_create", path = "/api/v1/events/{event}/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = WebhookCreate,
    responses((status = 201, description = "Created; `secret` is shown once", body = WebhookOut),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Json(req): Json<WebhookCreate>,
) -> Result<(StatusCode, Json<WebhookOut>), Error> {
    auth.require_on(event_id, Role::Admin)?;
    load_event(&state, event_id).await?;
    let url = webhook::check_url(&req.url)?;
    let types = webhook::check_event_types(&req.events)?;
    let description = description(req.description)?;
    let id = Uuid::now_v7();
    let (sealed, shown) = hooks::new_secret(&state.master, id)?;
    let now = now_ms();
    let row = EndpointRow {
        id,
        event_id,
        url,
        description,
        event_types: types_json(&types)?,
        enabled: true,
        secret: sealed,
        previous_secret: None,
        previous_until: None,
        failing_since: None,
        consecutive_failures: 0,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.begin().await?;
    store::webhooks::insert_endpoint(&mut tx, &row).await?;
    audit(&mut tx, &auth, "webhook.create", &row).await?;
    commit_endpoint_change(&state, tx, event_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookOut::build(&row, Some(shown))),
    ))
}

/// One webhook endpoint (admin).
#[utoipa::path(get, operation_id = "webhook_get", path = "/api/v1/events/{event}/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 200, description = "The endpoint", body = WebhookOut),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<Json<WebhookOut>, Error> {
    auth.require_on(event_id, Role::Admin)?;
    let e = endpoint(&state, event_id, id).await?;
    Ok(Json(WebhookOut::build(&e, None)))
}

/// Changes an endpoint's URL, event types, description, or enables / disables it (admin).
#[utoipa::path(patch, operation_id = "webhook_update", path = "/api/v1/events/{event}/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Endpoint id")),
    request_body = WebhookPatch,
    responses((status = 200, description = "The changed endpoint", body = WebhookOut),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
    Json(req): Json<WebhookPatch>,
) -> Result<Json<WebhookOut>, Error> {
    auth.require_on(event_id, Role::Admin)?;
    let url = req.url.as_deref().map(webhook::check_url).transpose()?;
    let types = req
        .events
        .as_deref()
        .map(webhook::check_event_types)
        .transpose()?;
    let desc = req.description.map(description).transpose()?;
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let mut e = store::webhooks::get_endpoint_tx(&mut tx, event_id, id)
        .await?
        .ok_or(Error::NotFound("webhook"))?;
    let was_enabled = e.enabled;
    if let Some(url) = url {
        e.url = url;
    }
    if let Some(types) = types {
        e.event_types = types_json(&types)?;
    }
    if let Some(d) = desc {
        e.description = d;
    }
    match req.enabled {
        Some(true) if !was_enabled => {
            e.enabled = true;
            e.disabled_reason = None;
            e.failing_since = None;
            e.consecutive_failures = 0;
        }
        Some(false) if was_enabled => {
            e.enabled = false;
            e.disabled_reason = Some(format!("disabled by {}", auth.actor().name));
        }
        _ => {}
    }
    e.updated_at = now;
    store::webhooks::update_endpoint(&mut tx, &e).await?;
    if was_enabled && !e.enabled {
        store::webhooks::fail_pending(&mut tx, e.id, e.disabled_reason.as_deref().unwrap_or(""))
            .await?;
    }
    audit(&mut tx, &auth, "webhook.update", &e).await?;
    commit_endpoint_change(&state, tx, event_id).await?;
    Ok(Json(WebhookOut::build(&e, None)))
}

/// Deletes an endpoint and its deliveries (admin).
#[utoipa::path(delete, operation_id = "webhook_delete", path = "/api/v1/events/{event}/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 204, description = "Deleted"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    auth.require_on(event_id, Role::Admin)?;
    let e = endpoint(&state, event_id, id).await?;
    let mut tx = state.db.begin().await?;
    if !store::webhooks::delete_endpoint(&mut tx, event_id, id).await? {
        return Err(Error::NotFound("webhook"));
    }
    audit(&mut tx, &auth, "webhook.delete", &e).await?;
    commit_endpoint_change(&state, tx, event_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the signing secret (admin). The new secret is shown once; for 24 hours deliveries
/// carry signatures with both, so receivers can switch without losing a message.
#[utoipa::path(post, operation_id = "webhook_rotate", path = "/api/v1/events/{event}/webhooks/{id}/rotate", tag = "webhooks", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 200, description = "Rotated; `secret` is the new secret, shown once", body = WebhookOut),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn rotate(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<Json<WebhookOut>, Error> {
    auth.require_on(event_id, Role::Admin)?;
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let mut e = store::webhooks::get_endpoint_tx(&mut tx, event_id, id)
        .await?
        .ok_or(Error::NotFound("webhook"))?;
    let (sealed, shown) = hooks::new_secret(&state.master, id)?;
    let grace = i64::try_from(hooks::ROTATION_GRACE.as_millis()).map_err(anyhow::Error::from)?;
    e.previous_secret = Some(std::mem::replace(&mut e.secret, sealed));
    e.previous_until = Some(now + grace);
    e.updated_at = now;
    store::webhooks::update_endpoint(&mut tx, &e).await?;
    audit(&mut tx, &auth, "webhook.rotate", &e).await?;
    commit_endpoint_change(&state, tx, event_id).await?;
    Ok(Json(WebhookOut::build(&e, Some(shown))))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestOut {
    /// The queued delivery (see `GET …/deliveries`).
    pub delivery_id: Uuid,
    /// The `webhook-id` the receiver will see.
    pub webhook_id: String,
}

/// Queues a `webhook.test` message to the endpoint (admin).
#[utoipa::path(post, operation_id = "webhook_test", path = "/api/v1/events/{event}/webhooks/{id}/test", tag = "webhooks", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 202, description = "Queued", body = TestOut),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The endpoint is disabled", body = Problem, content_type = "application/problem+json")))]
pub async fn test(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<(StatusCode, Json<TestOut>), Error> {
    auth.require_on(event_id, Role::Admin)?;
    let e = endpoint(&state, event_id, id).await?;
    if !e.enabled {
        return Err(Error::Conflict(
            "the endpoint is disabled; enable it first".into(),
        ));
    }
    let (delivery_id, message_id) =
        hooks::send_test(&state.db, state.master.personal(), &e).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestOut {
            delivery_id,
            webhook_id: webhook::message_id(message_id),
        }),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryOut {
    pub id: Uuid,
    /// The `webhook-id` header of every attempt.
    pub webhook_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u64,
    /// HTTP status of the last attempt (null when it got no answer).
    pub last_response_code: Option<u16>,
    pub last_error: Option<String>,
    /// When the next attempt is due (pending only).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<OffsetDateTime>,
}

impl From<DeliveryRow> for DeliveryOut {
    fn from(d: DeliveryRow) -> Self {
        Self {
            id: d.id,
            webhook_id: webhook::message_id(d.message_id),
            event_type: d.event_type,
            next_attempt_at: (d.status == "pending").then(|| ms_to_time(d.next_attempt_at)),
            status: d.status,
            attempts: u64::try_from(d.attempts).unwrap_or(0),
            last_response_code: d.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: d.last_error,
            created_at: ms_to_time(d.created_at),
            delivered_at: d.delivered_at.map(ms_to_time),
        }
    }
}

/// The endpoint's deliveries, newest first (admin).
#[utoipa::path(get, operation_id = "webhook_deliveries", path = "/api/v1/events/{event}/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Endpoint id"), PageParams),
    responses((status = 200, description = "Recent deliveries", body = Page<DeliveryOut>),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<DeliveryOut>>, Error> {
    auth.require_on(event_id, Role::Admin)?;
    endpoint(&state, event_id, id).await?;
    let limit = params.limit()?;
    let before = params.after()?.unwrap_or(Uuid::max());
    let rows = store::webhooks::list_deliveries(&state.db, id, before, limit).await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| Ok(r.into()))?))
}

/// Commits a change of the event's endpoints and announces it to every server process, so each
/// forgets the subscribers it cached (this one at once).
async fn commit_endpoint_change(
    state: &AppState,
    mut tx: crate::store::Tx,
    event_id: Uuid,
) -> Result<(), Error> {
    let staged = state
        .notifier
        .stage(&mut tx, vec![Live::WebhooksChanged { event_id }])
        .await?;
    tx.commit().await?;
    state.notifier.committed(staged);
    hooks::forget(event_id);
    Ok(())
}
