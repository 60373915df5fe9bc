//! `POST /sync/v1/enroll`: a one-time code in, a gate credential out.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use sqlx::FromRow;
use sync_protocol::wire::EnrollResponse;
use uuid::Uuid;

use crate::auth::Actor;
use crate::crypto::sha256;
use crate::error::ApiError;
use crate::extract::Json;
use crate::routes::gates::normalize_enrollment_code;
use crate::state::AppState;
use crate::store::{self, now_ms, tx_run};

use super::gate_auth::new_credential;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    /// The code the organizer created for the gate (`XXXXX-XXXXX`, any case, dashes optional).
    pub code: String,
    /// How the device appears to organizers.
    pub device_name: String,
}

#[derive(FromRow)]
struct Claimed {
    event_id: Uuid,
    gate_id: Uuid,
}

/// Exchanges a one-time enrollment code for the gate's bearer credential. The code works once
/// and expires; the credential is stored hashed. A new enrollment of a gate revokes the
/// credentials of any device enrolled before for that gate (one device per gate), and tells the
/// new device where the gate's check-in sequence continues.
#[utoipa::path(post, path = "/sync/v1/enroll", tag = "sync", request_body = EnrollBody,
    responses((status = 201, description = "Enrolled: {gate_id, event_id, credential, server_time, next_seq}"),
              (status = 401, description = "Code unknown, used or expired"),
              (status = 422, description = "Invalid body")))]
pub async fn enroll(
    State(state): State<AppState>,
    Json(body): Json<EnrollBody>,
) -> Result<(StatusCode, axum::Json<EnrollResponse>), ApiError> {
    let code = normalize_enrollment_code(&body.code);
    if code.is_empty() {
        return Err(ApiError::validation("code", "code is empty"));
    }
    let device_name = body.device_name.trim();
    if device_name.is_empty() || device_name.chars().count() > 120 {
        return Err(ApiError::validation(
            "device_name",
            "device_name must be 1 to 120 characters",
        ));
    }
    let now = now_ms();
    let hash = sha256(code.as_bytes());
    let (credential, token_hash) = new_credential()?;
    let mut tx = state.db.begin().await?;
    let claimed: Option<Claimed> = tx_run!(&mut tx, c => {
        sqlx::query_as(
            "UPDATE enrollment_codes SET used_at = $2
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2
             RETURNING event_id, gate_id",
        )
        .bind(&hash[..])
        .bind(now)
        .fetch_optional(&mut *c)
        .await?
    });
    let Some(claimed) = claimed else {
        return Err(ApiError::Unauthorized(
            "enrollment code refused: unknown, already used or expired; ask the organizer for a new one",
        ));
    };
    let gate = store::gates::get_tx(&mut tx, claimed.event_id, claimed.gate_id)
        .await?
        .ok_or(ApiError::NotFound("gate"))?;
    if !gate.is_active {
        return Err(ApiError::Conflict(
            "the gate is deactivated; the organizer must reactivate it first".into(),
        ));
    }
    let next_seq: i64 = tx_run!(&mut tx, c => {
        sqlx::query(
            "UPDATE gate_credentials SET revoked_at = $2 WHERE gate_id = $1 AND revoked_at IS NULL",
        )
        .bind(gate.id)
        .bind(now)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "INSERT INTO gate_credentials (token_hash, gate_id, event_id, device_name, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token_hash[..])
        .bind(gate.id)
        .bind(gate.event_id)
        .bind(device_name)
        .bind(now)
        .execute(&mut *c)
        .await?;
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM checkins WHERE gate_id = $1")
            .bind(gate.id)
            .fetch_one(&mut *c)
            .await?
    });
    store::audit::record(
        &mut tx,
        &Actor {
            id: None,
            name: format!("device:{device_name}"),
        },
        "gate.enroll",
        Some(gate.event_id),
        Some(format!("gate:{}", gate.id)),
        serde_json::json!({"device_name": device_name}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(gate.id = %gate.id, event.id = %gate.event_id, device = device_name, "gate enrolled");
    Ok((
        StatusCode::CREATED,
        axum::Json(EnrollResponse {
            gate_id: gate.id,
            event_id: gate.event_id,
            credential,
            server_time: state.hlc_now(),
            next_seq: u64::try_from(next_seq).unwrap_or(1),
        }),
    ))
}
