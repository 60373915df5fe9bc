//! The sync side of the server (DESIGN §4): what gates talk to.
//!
//! # Layout
//! - [`enroll`]: one-time code → gate credential.
//! - [`pull`]: the replica delta (`GET /sync/v1/changes`), long-polling.
//! - [`push`]: batched check-ins in, merged in one transaction (`service::push`).
//! - [`stream`]: server-sent events for gates and dashboards.
//!
//! The gate credential extractor is `http::gate_auth`; the merge is `service::merge`; the live
//! fan-out is `live`.

use axum::Router;
use axum::routing::{get, post};
use sync_protocol::wire::{Capabilities, SUPPORTED_VERSIONS};
use tower_http::compression::CompressionLayer;

use crate::service::AppState;

pub mod enroll;
pub mod pull;
pub mod push;
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
