//! The sync side of the server (DESIGN §4): what gates talk to.
//!
//! # Layout
//! - [`gate_auth`]: the gate bearer credential and the protocol version check.
//! - [`enroll`]: one-time code → gate credential.
//! - [`pull`]: the replica delta (`GET /sync/v1/changes`), long-polling.
//! - [`push`]: batched check-ins in, merged in one transaction.
//! - [`merge`]: storing check-ins and re-folding tickets (shared with the online redeem and
//!   with revocations).
//! - [`notify`]: live fan-out across server processes (PostgreSQL LISTEN/NOTIFY).
//! - [`stream`]: server-sent events for gates and dashboards.

use axum::Router;
use axum::routing::{get, post};
use sync_protocol::wire::{Capabilities, SUPPORTED_VERSIONS};
use tower_http::compression::CompressionLayer;

use crate::state::AppState;

pub mod enroll;
pub mod gate_auth;
pub mod merge;
pub mod notify;
pub mod organizer;
pub mod pull;
pub mod push;
pub mod redeem;
pub mod stream;

/// What this server accepts.
#[utoipa::path(get, path = "/sync/v1/capabilities", tag = "sync",
    responses((status = 200, description = "{protocol_versions, max_push_batch, max_pull_limit, features}")))]
pub async fn capabilities() -> axum::Json<Capabilities> {
    axum::Json(Capabilities {
        protocol_versions: SUPPORTED_VERSIONS.to_vec(),
        max_push_batch: push::MAX_BATCH as u32,
        max_pull_limit: pull::MAX_LIMIT,
        features: vec![
            "long_poll".into(),
            "sse".into(),
            "gzip".into(),
            "zstd".into(),
            "enroll_next_seq".into(),
        ],
    })
}

/// `/sync/v1/*`. Pulls are compressed (a bootstrap of 100,000 tickets is mostly repetitive
/// JSON); the event stream is not (a compressor would hold events back).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sync/v1/capabilities", get(capabilities))
        .route("/sync/v1/enroll", post(enroll::enroll))
        .route(
            "/sync/v1/changes",
            get(pull::changes).layer(CompressionLayer::new().gzip(true).zstd(true)),
        )
        .route("/sync/v1/checkins", post(push::push))
        .route("/sync/v1/stream", get(stream::gate_stream))
}
