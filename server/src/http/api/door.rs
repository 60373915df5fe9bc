//! `PUT /api/v1/events/{event}/supervisor-pin`: the organizer sets the PIN a supervisor enters
//! at a gate to approve an override or a badge reprint. Only its argon2id hash is stored and
//! replicated (in every gate's configuration), so gates check it offline.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::domain::event::EventSettings;
use crate::http::error::Problem;
use crate::http::extract::{Json, Path};
use crate::service::AppState;
use crate::service::tickets::EventKeys;
use crate::service::uow::UnitOfWork;
use crate::store::{self, now_ms};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupervisorPin {
    /// 6 to 12 digits.
    pub pin: String,
}

/// Sets or replaces the event's supervisor PIN (admin); every gate of the event receives the
/// new hash with its configuration.
#[utoipa::path(put, operation_id = "event_supervisor_pin_set", path = "/api/v1/events/{event}/supervisor-pin", tag = "events", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = SupervisorPin,
    responses((status = 204, description = "Set"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn set_supervisor_pin(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Json(req): Json<SupervisorPin>,
) -> Result<StatusCode, Error> {
    auth.require_on(event_id, Role::Admin)?;
    sync_protocol::pin::validate(&req.pin).map_err(|e| Error::validation("pin", e.to_string()))?;
    let pin = req.pin;
    let hash = tokio::task::spawn_blocking(move || sync_protocol::pin::hash(&pin))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?;
    let mut keys = EventKeys::load(&state.db, &state.master, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    keys.supervisor_pin = Some(hash.clone());
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let row = store::events::get_tx(uow.tx(), event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let settings = EventSettings::parse(&row.settings)?;
    let status = crate::domain::event::EventStatus::parse(&row.status)?;
    let actor = auth.actor();
    store::events::set_supervisor_pin(uow.tx(), event_id, &hash, now_ms(), &actor.name).await?;
    store::audit::record(
        uow.tx(),
        &actor,
        "event.supervisor_pin",
        Some(event_id),
        Some(format!("event:{event_id}")),
        serde_json::json!({}),
    )
    .await?;
    super::gates::replicate_all_gates(&mut uow, event_id, &keys, &settings, status).await?;
    uow.commit(&state.notifier).await?;
    Ok(StatusCode::NO_CONTENT)
}
