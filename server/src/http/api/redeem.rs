//! `POST /api/v1/events/{event}/redeem`: the online redeem (`service::redeem`) over HTTP, for
//! staff tokens and for the gate's own credential.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::Deserialize;
use sync_protocol::wire::Direction;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::domain::crypto::sha256;
use crate::domain::gate::GateAuth;
use crate::http::extract::{Json, Path};
use crate::http::gate_auth;
use crate::service::AppState;
use crate::service::redeem::{self, RedeemOut, RedeemRequest, Redeemer};

/// Who may redeem: staff (organizer token) or the enrolled gate itself.
pub enum RedeemAuth {
    Staff(Auth),
    Gate(GateAuth),
}

impl FromRequestParts<AppState> for RedeemAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if let Some(token) = gate_auth::bearer(parts)
            .filter(|t| t.starts_with("ugc_"))
            .map(str::to_owned)
        {
            let token = token.as_str();
            // A thin client redeems scan after scan with the same credential: remember a valid
            // one for this event for a short while (`service::redeem::cache::TTL`) instead of a lookup per scan. Revocation
            // reaches the redeem within that time; a deactivated gate is refused at once anyway
            // (its batch re-reads the gate row under its lock).
            let event_id = axum::extract::Path::<Uuid>::from_request_parts(parts, state)
                .await
                .ok()
                .map(|p| p.0);
            let hash = sha256(token.as_bytes());
            if let Some(g) = event_id.and_then(|e| state.redeem.credential(e, &hash)) {
                return Ok(RedeemAuth::Gate(g));
            }
            let gate = gate_auth::lookup(state, token)
                .await?
                .ok_or(Error::Unauthorized(
                    "this gate credential is unknown or revoked; enroll the gate again",
                ))?;
            // A gate redeems for its own event only, decided before the body is read.
            if event_id != Some(gate.event_id) {
                return Err(Error::Forbidden);
            }
            state.redeem.remember_credential(hash, gate);
            return Ok(RedeemAuth::Gate(gate));
        }
        let auth = Auth::from_request_parts(parts, state).await?;
        let event_id = axum::extract::Path::<Uuid>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound("event"))?
            .0;
        auth.require_on(event_id, Role::Staff)?;
        Ok(RedeemAuth::Staff(auth))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    /// The scanned `U1:` ticket or a typed short code.
    pub credential: String,
    /// The gate the thin client stands at.
    pub gate_id: Uuid,
    /// `in` or `out`; absent: the gate's own direction (entry on two-way gates). A direction the
    /// gate does not serve is refused as `wrong_direction`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub direction: Option<Direction>,
}

/// Decides a credential on the server and stores it as a check-in of `gate_id`.
#[utoipa::path(post, path = "/api/v1/events/{event}/redeem", tag = "checkins",
    security(("bearer" = []), ("gate" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = RedeemBody,
    responses((status = 200, description = "OK", body = RedeemOut),
              (status = 403, description = "A gate credential of another event, or a viewer"),
              (status = 404, description = "Unknown event or gate"),
              (status = 422, description = "Invalid body")))]
pub async fn redeem(
    State(state): State<AppState>,
    auth: RedeemAuth,
    Path(event_id): Path<Uuid>,
    Json(body): Json<RedeemBody>,
) -> Result<axum::Json<RedeemOut>, Error> {
    let by = match auth {
        RedeemAuth::Staff(_) => Redeemer::Staff,
        RedeemAuth::Gate(g) => Redeemer::Gate(g),
    };
    let req = RedeemRequest {
        credential: body.credential,
        gate_id: body.gate_id,
        direction: body.direction,
    };
    Ok(axum::Json(redeem::redeem(&state, event_id, by, req).await?))
}
