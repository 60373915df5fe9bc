//! `POST /sync/v1/enroll`: a one-time code in, a gate credential out.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use sync_protocol::wire::EnrollResponse;

use crate::domain::Error;
use crate::http::extract::Json;
use crate::service::{AppState, enroll};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    /// The code the organizer created for the gate (`XXXXX-XXXXX`, any case, dashes optional).
    pub code: String,
    /// How the device appears to organizers.
    pub device_name: String,
    /// Hex of the ed25519 public key the device signs its venue-mesh traffic with (64 hex
    /// digits). Replicated to the event's gates while this gate is active.
    #[serde(default)]
    pub mesh_public_key: Option<String>,
}

/// Exchanges a one-time enrollment code for the gate's bearer credential. The code works once
/// and expires; the credential is stored hashed. A new enrollment of a gate revokes the
/// credentials of any device enrolled before for that gate (one device per gate), and tells the
/// new device where the gate's check-in sequence continues.
#[utoipa::path(post, operation_id = "sync_enroll", path = "/sync/v1/enroll", tag = "sync", request_body = EnrollBody,
    responses((status = 201, description = "Enrolled: {gate_id, event_id, credential, server_time, next_seq}"),
              (status = 401, description = "Code unknown, used or expired"),
              (status = 422, description = "Invalid body")))]
pub async fn enroll(
    State(state): State<AppState>,
    Json(body): Json<EnrollBody>,
) -> Result<(StatusCode, axum::Json<EnrollResponse>), Error> {
    let mesh_public_key = body
        .mesh_public_key
        .as_deref()
        .map(enroll::parse_mesh_public_key)
        .transpose()?;
    let enrolled = enroll::enroll(
        &state,
        &body.code,
        &body.device_name,
        mesh_public_key.as_deref(),
        crate::http::api::gates::gate_change,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(EnrollResponse {
            gate_id: enrolled.gate_id,
            event_id: enrolled.event_id,
            credential: enrolled.credential,
            server_time: state.hlc_now(),
            next_seq: enrolled.next_seq,
        }),
    ))
}
