//! The venue mesh (DESIGN §8): gates at one venue keep each other honest when the uplink fails.
//!
//! Every gate serves its own scan log on the venue LAN (`GET /mesh/v1/log?after=SEQ`) and reads
//! its peers' logs by per-peer cursor (a version vector gate → highest seq read, kept in the
//! replica). A peer's admission enters the local presence view exactly like a server presence
//! change, so a ticket admitted at the north door is `already_inside` at the south door about a
//! second later — no server needed. The server stays the authority: each gate still pushes only
//! its own log, the merge is the same fold, and an event seen twice is harmless (ids are unique).
//!
//! Peers authenticate with a token derived from the per-event mesh key that every gate of the
//! event receives in its replica: `hex(HMAC-SHA256(mesh_key, "usher-mesh-v1"))`. The log holds
//! ticket serials and decisions, no names.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sync_protocol::wire::Checkin;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::decide::wall_ms;
use crate::replica::Replica;
use crate::telemetry;

/// Most check-ins served per request.
pub const PAGE: usize = 2_000;

/// The bearer token of an event's mesh.
pub fn mesh_token(mesh_key_hex: &str) -> Option<String> {
    let key = hex::decode(mesh_key_hex).ok()?;
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).ok()?;
    mac.update(b"usher-mesh-v1");
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// One page of a gate's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogPage {
    pub gate_id: Uuid,
    pub checkins: Vec<Checkin>,
    /// Pass as `after` next time.
    pub next: u64,
    pub more: bool,
}

#[derive(Clone)]
struct MeshState {
    replica: Arc<Mutex<Replica>>,
    gate_id: Uuid,
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    after: u64,
}

fn authorized(r: &Replica, gate_id: Uuid, headers: &HeaderMap) -> bool {
    let Some(expected) = r
        .gate_config(gate_id)
        .ok()
        .flatten()
        .and_then(|c| c.mesh_key)
        .and_then(|k| mesh_token(&k))
    else {
        return false;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Mesh "))
        .unwrap_or("");
    use subtle::ConstantTimeEq;
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

async fn serve_log(
    State(s): State<MeshState>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> Response {
    let replica = s.replica.clone();
    let gate_id = s.gate_id;
    let page = tokio::task::spawn_blocking(move || -> Result<Option<LogPage>, String> {
        let r = replica
            .lock()
            .map_err(|_| "replica lock poisoned".to_string())?;
        if !authorized(&r, gate_id, &headers) {
            return Ok(None);
        }
        let mut rows = r.log_after(q.after, PAGE + 1).map_err(|e| e.to_string())?;
        let more = rows.len() > PAGE;
        rows.truncate(PAGE);
        let next = rows.last().map_or(q.after, |c| c.seq);
        Ok(Some(LogPage {
            gate_id,
            checkins: rows,
            next,
            more,
        }))
    })
    .await;
    match page {
        Ok(Ok(Some(p))) => Json(p).into_response(),
        Ok(Ok(None)) => (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "mesh token refused"})),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "mesh log read failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "mesh log task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves this gate's log to its peers until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    replica: Arc<Mutex<Replica>>,
    gate_id: Uuid,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "mesh log served");
    let app = Router::new()
        .route("/mesh/v1/log", get(serve_log))
        .with_state(MeshState { replica, gate_id });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Who to read: the peers' mesh addresses from the replicated gate configs, plus any given on
/// the command line.
pub fn peers(r: &Replica, own: Uuid, extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = r
        .peer_configs(own)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.is_active)
        .filter_map(|c| c.mesh_addr)
        .collect();
    for e in extra {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

fn base_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Reads one peer's log until caught up; returns how many presence rows changed.
pub async fn pull_peer(
    http: &reqwest::Client,
    replica: &Arc<Mutex<Replica>>,
    own: Uuid,
    addr: &str,
) -> anyhow::Result<usize> {
    let token = {
        let r = replica
            .lock()
            .map_err(|_| anyhow::anyhow!("replica lock poisoned"))?;
        r.gate_config(own)?
            .and_then(|c| c.mesh_key)
            .and_then(|k| mesh_token(&k))
            .ok_or_else(|| anyhow::anyhow!("no mesh key in the replica yet"))?
    };
    let mut changed = 0;
    // The peer's gate id is learnt from its first answer; its cursor is kept per gate id.
    let mut after: Option<u64> = None;
    loop {
        let peer_cursor = match after {
            Some(a) => a,
            None => {
                // First request of this round: ask from 0 to learn the gate id, unless known.
                known_cursor(replica, addr)?.unwrap_or(0)
            }
        };
        let page: LogPage = http
            .get(format!("{}/mesh/v1/log", base_url(addr)))
            .query(&[("after", peer_cursor)])
            .header(header::AUTHORIZATION, format!("Mesh {token}"))
            .timeout(Duration::from_secs(3))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if page.gate_id == own {
            return Ok(0); // listed ourselves
        }
        let rep = replica.clone();
        let peer = page.gate_id;
        let addr_owned = addr.to_string();
        let checkins = page.checkins;
        let next = page.next;
        changed += tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let mut r = rep
                .lock()
                .map_err(|_| anyhow::anyhow!("replica lock poisoned"))?;
            let n = r.apply_peer_log(peer, &checkins, wall_ms())?;
            r.set_meta(&format!("mesh_peer:{addr_owned}"), &peer.to_string())?;
            Ok(n)
        })
        .await??;
        after = Some(next);
        if !page.more {
            return Ok(changed);
        }
    }
}

fn known_cursor(replica: &Arc<Mutex<Replica>>, addr: &str) -> anyhow::Result<Option<u64>> {
    let r = replica
        .lock()
        .map_err(|_| anyhow::anyhow!("replica lock poisoned"))?;
    let Some(peer) = r
        .meta(&format!("mesh_peer:{addr}"))?
        .and_then(|v| Uuid::parse_str(&v).ok())
    else {
        return Ok(None);
    };
    Ok(Some(r.mesh_cursor(peer)?))
}

/// Reads every peer every `interval` until `shutdown`. Unreachable peers are skipped quietly
/// (a gate at the far end of the venue may be off).
pub async fn run_puller(
    replica: Arc<Mutex<Replica>>,
    own: Uuid,
    extra_peers: Vec<String>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    crate::sync::client::install_tls_provider();
    let Ok(http) = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .build()
    else {
        tracing::error!("mesh client could not start");
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let list = match replica.lock() {
            Ok(r) => peers(&r, own, &extra_peers),
            Err(_) => return,
        };
        telemetry::mesh_peers(list.len());
        for addr in list {
            let read = tokio::select! {
                () = shutdown.cancelled() => return,
                r = pull_peer(&http, &replica, own, &addr) => r,
            };
            match read {
                Ok(n) if n > 0 => {
                    telemetry::mesh_updates(n);
                    tracing::debug!(peer = %addr, changed = n, "mesh presence updated")
                }
                Ok(_) => {}
                Err(e) => {
                    telemetry::mesh_error();
                    tracing::debug!(peer = %addr, error = %e, "mesh peer unreachable")
                }
            }
        }
    }
}

/// Binds the mesh listener (a LAN address).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
