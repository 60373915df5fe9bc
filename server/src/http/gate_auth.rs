//! Gate authentication for `/sync/v1`: the bearer credential from enrollment, bound to one gate
//! of one event, plus the protocol version check every sync request passes.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sync_protocol::wire::{
    AGENT_VERSION_HEADER, LAST_SYNC_HEADER, OUTBOX_DEPTH_HEADER, PROTOCOL_HEADER,
    SUPPORTED_VERSIONS,
};

use crate::domain::crypto::sha256;
use crate::domain::error::Error;
use crate::domain::gate::{GateAuth, GateReport};
use crate::service::AppState;
use crate::store;

/// Rejects a peer speaking a protocol version this server does not accept.
pub fn check_protocol(parts: &Parts) -> Result<(), Error> {
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
        Err(Error::bad_request(
            Some(PROTOCOL_HEADER),
            format!(
                "protocol version {:?} is not supported; this server accepts {accepted} \
                 (see GET /sync/v1/capabilities)",
                v.to_str().unwrap_or("?")
            ),
        ))
    }
}

/// Looks up a bearer credential. `None` when unknown, revoked, or the gate is deactivated.
pub async fn lookup(state: &AppState, token: &str) -> Result<Option<GateAuth>, Error> {
    store::gates::credential(&state.db, &sha256(token.as_bytes())).await
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

/// The gate's report in the `usher-agent-version`, `usher-outbox-depth` and `usher-last-sync-at`
/// headers (each optional; a malformed one is a 400 naming it).
pub fn report(parts: &Parts) -> Result<GateReport, Error> {
    let text = |name: &str| -> Result<Option<String>, Error> {
        parts
            .headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.len() <= 64)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Error::bad_request(Some(name), format!("{name} must be 1 to 64 characters"))
                    })
            })
            .transpose()
    };
    let number = |name: &str| -> Result<Option<i64>, Error> {
        text(name)?
            .map(|v| {
                v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    Error::bad_request(
                        Some(name),
                        format!("{name} must be a non-negative integer, not {v:?}"),
                    )
                })
            })
            .transpose()
    };
    Ok(GateReport {
        agent_version: text(AGENT_VERSION_HEADER)?,
        outbox_depth: number(OUTBOX_DEPTH_HEADER)?,
        last_sync_at: number(LAST_SYNC_HEADER)?,
    })
}

impl FromRequestParts<AppState> for GateAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        check_protocol(parts)?;
        let token = bearer(parts).ok_or(Error::Unauthorized(
            "send `Authorization: Bearer <gate credential>`; enroll the gate to get one",
        ))?;
        let report = report(parts)?;
        let gate = lookup(state, token).await?.ok_or(Error::Unauthorized(
            "this gate credential is unknown or revoked (the gate was deactivated or enrolled \
             again); enroll the gate with a new code",
        ))?;
        crate::service::gate_status::heard_from(&state.db, gate.gate_id, &report).await?;
        Ok(gate)
    }
}
