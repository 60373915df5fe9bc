//! `POST /sync/v1/checkins`: a gate pushes a batch of its scan log (`service::push`).

use axum::extract::State;
use serde::Deserialize;
use sync_protocol::wire::PushResponse;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::gate::GateAuth;
use crate::http::extract::JsonAnyText;
use crate::service::AppState;
pub use crate::service::push::MAX_BATCH;
use crate::service::push::merge_push;

/// The body: check-ins are parsed one by one, so one malformed entry is reported as `invalid`
/// instead of failing the batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PushBody {
    pub gate_id: Uuid,
    #[schema(value_type = Vec<Object>)]
    pub checkins: Vec<serde_json::Value>,
}

/// Stores a batch of check-ins (idempotent on id and on (gate, seq)), merges the tickets they
/// touch in the same transaction, and answers per check-in. `acked_through_seq` is the highest
/// seq such that the server holds every check-in of this gate up to it.
#[utoipa::path(post, path = "/sync/v1/checkins", tag = "sync", request_body = PushBody,
    security(("gate" = [])),
    responses((status = 200, description = "{acked_through_seq, results, server_time}"),
              (status = 401, description = "Unknown or revoked gate credential"),
              (status = 403, description = "gate_id is not the authenticated gate")))]
pub async fn push(
    State(state): State<AppState>,
    gate: GateAuth,
    JsonAnyText(body): JsonAnyText<PushBody>,
) -> Result<axum::Json<PushResponse>, Error> {
    if body.gate_id != gate.gate_id {
        return Err(Error::Forbidden);
    }
    if body.checkins.len() > MAX_BATCH {
        return Err(Error::validation(
            "checkins",
            format!("at most {MAX_BATCH} check-ins per push"),
        ));
    }
    // An archived event is read-only (its gates refuse every scan); the view is cached.
    if state
        .redeem
        .event(&state.db, &state.master, gate.event_id)
        .await?
        .phase
        == sync_protocol::wire::EventPhase::Archived
    {
        return Err(Error::Conflict(
            "the event is archived: it takes no more check-ins".into(),
        ));
    }
    let resp = merge_push(&state, gate, body.checkins).await?;
    Ok(axum::Json(resp))
}
