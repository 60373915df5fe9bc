//! Gate authentication for `/sync/v1`: the bearer credential from enrollment, bound to one gate
//! of one event, plus the protocol version check every sync request passes.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use sqlx::FromRow;
use sync_protocol::wire::{PROTOCOL_HEADER, SUPPORTED_VERSIONS};
use uuid::Uuid;

use crate::crypto::{random_bytes, sha256};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::db_run;

/// An authenticated gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateAuth {
    pub gate_id: Uuid,
    pub event_id: Uuid,
}

impl GateAuth {
    /// 403 unless the request is about this gate's own event.
    pub fn require_event(&self, event_id: Uuid) -> Result<(), ApiError> {
        if self.event_id == event_id {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// A new gate credential: 256 random bits, URL-safe. Returns (credential, its SHA-256).
pub fn new_credential() -> anyhow::Result<(String, [u8; 32])> {
    let raw = random_bytes::<32>()?;
    let token = format!(
        "ugc_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let hash = sha256(token.as_bytes());
    Ok((token, hash))
}

/// Rejects a peer speaking a protocol version this server does not accept.
pub fn check_protocol(parts: &Parts) -> Result<(), ApiError> {
    let Some(v) = parts.headers.get(PROTOCOL_HEADER) else {
        return Ok(()); // version 1 clients predating the header
    };
    let accepted = SUPPORTED_VERSIONS
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let ok = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .is_some_and(|v| SUPPORTED_VERSIONS.contains(&v));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            Some(PROTOCOL_HEADER),
            format!(
                "protocol version {:?} is not supported; this server accepts {accepted} \
                 (see GET /sync/v1/capabilities)",
                v.to_str().unwrap_or("?")
            ),
        ))
    }
}

#[derive(FromRow)]
struct CredentialRow {
    gate_id: Uuid,
    event_id: Uuid,
    is_active: bool,
    revoked_at: Option<i64>,
}

/// Looks up a bearer credential. `None` when unknown, revoked, or the gate is deactivated.
pub async fn lookup(state: &AppState, token: &str) -> Result<Option<GateAuth>, ApiError> {
    let hash = sha256(token.as_bytes());
    let row: Option<CredentialRow> = db_run!(&state.db, p => {
        sqlx::query_as(
            "SELECT c.gate_id, c.event_id, g.is_active, c.revoked_at
             FROM gate_credentials c JOIN gates g ON g.id = c.gate_id
             WHERE c.token_hash = $1",
        )
        .bind(&hash[..])
        .fetch_optional(p)
        .await?
    });
    Ok(row
        .filter(|r| r.is_active && r.revoked_at.is_none())
        .map(|r| GateAuth {
            gate_id: r.gate_id,
            event_id: r.event_id,
        }))
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<AppState> for GateAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        check_protocol(parts)?;
        let token = bearer(parts).ok_or(ApiError::Unauthorized(
            "send `Authorization: Bearer <gate credential>`; enroll the gate to get one",
        ))?;
        lookup(state, token).await?.ok_or(ApiError::Unauthorized(
            "this gate credential is unknown or revoked (the gate was deactivated or enrolled \
             again); enroll the gate with a new code",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_256_bit_and_distinct() {
        let (a, ha) = new_credential().unwrap();
        let (b, hb) = new_credential().unwrap();
        assert!(a.starts_with("ugc_"));
        assert_eq!(a.len(), 4 + 43);
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(ha, sha256(a.as_bytes()));
    }
}
