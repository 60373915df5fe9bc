//! The venue mesh (DESIGN §8): gates at one venue keep each other honest when the uplink fails.
//!
//! Every gate serves its own scan log on the venue LAN (`GET /mesh/v2/log?after=SEQ`) and reads
//! its peers' logs by per-peer cursor (a version vector gate → highest seq read, kept in the
//! replica). A peer's admission enters the local presence view exactly like a server presence
//! change, so a ticket admitted at the north door is `already_inside` at the south door about a
//! second later — no server needed. The server stays the authority: each gate still pushes only
//! its own log, the merge is the same fold, and an event seen twice is harmless (ids are unique).
//! The log holds ticket serials and decisions, no names.
//!
//! # Who may talk (mesh v2)
//! Each gate has its own ed25519 key, derived from the secret in its data directory
//! (`replica::secrets`); the private half never leaves the device, the public half goes to the
//! server at enrollment, and the server replicates it in that gate's configuration to every gate
//! of the event — only while the gate is active (deactivating a gate removes its key from every
//! configuration, so once peers pull, its requests are refused and its answers ignored).
//!
//! - A request carries the caller's gate id, a fresh random nonce and its wall-clock time, and
//!   the caller's signature over them and the path (headers [`GATE_HEADER`], [`NONCE_HEADER`],
//!   [`TIME_HEADER`], [`SIGNATURE_HEADER`]; message [`request_message`]). The answering gate
//!   serves only an active peer of its event whose key is in its replica, a time within
//!   [`MAX_REQUEST_AGE_MS`] of its own clock, and a nonce it has not seen in that window.
//! - The answer is signed by the answering gate over (caller ‖ request nonce ‖ body)
//!   ([`answer_message`]), so a man in the middle can neither forge an answer nor replay an old
//!   one; the caller applies it only when the signature checks out with the key its replica holds
//!   for the gate named in [`GATE_HEADER`] and the body is that gate's log.
//!
//! Mesh v1 (one bearer token derived from a per-event key every gate shared) is gone: any gate,
//! or anyone who captured the token, could pass as any peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sync_protocol::wire::Checkin;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::decide::wall_ms;
use crate::replica::Replica;
use crate::telemetry;

/// Most check-ins served per request.
pub const PAGE: usize = 2_000;
/// The log's path.
pub const LOG_PATH: &str = "/mesh/v2/log";
/// The caller's (request) or the answering gate's (answer) gate id.
pub const GATE_HEADER: &str = "usher-mesh-gate";
/// 16 random bytes, hex, fresh for every request.
pub const NONCE_HEADER: &str = "usher-mesh-nonce";
/// The caller's wall clock, Unix ms.
pub const TIME_HEADER: &str = "usher-mesh-time";
/// Hex of the ed25519 signature of the request or the answer.
pub const SIGNATURE_HEADER: &str = "usher-mesh-signature";
/// How far a request's time may be from the answering gate's clock (either way).
pub const MAX_REQUEST_AGE_MS: u64 = 5 * 60 * 1_000;

/// What a caller signs: its gate id, the nonce, its time and the path with the query.
pub fn request_message(caller: Uuid, nonce: &str, time_ms: u64, path_and_query: &str) -> Vec<u8> {
    format!("usher-mesh-v2 request\n{caller}\n{nonce}\n{time_ms}\n{path_and_query}").into_bytes()
}

/// What an answering gate signs: the caller, the request's nonce and the exact body bytes.
pub fn answer_message(caller: Uuid, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("usher-mesh-v2 answer\n{caller}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m
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

/// The mesh public key of an active peer of this gate's event, as its replica holds it.
fn peer_key(r: &Replica, own: Uuid, peer: Uuid) -> Option<VerifyingKey> {
    if peer == own {
        return None;
    }
    let own_event = r.gate_config(own).ok().flatten()?.event_id;
    let cfg = r.gate_config(peer).ok().flatten()?;
    if !cfg.is_active || cfg.event_id != own_event {
        return None;
    }
    let bytes: [u8; 32] = hex::decode(cfg.mesh_public_key?).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

fn parse_signature(hex_sig: &str) -> Option<Signature> {
    let bytes: [u8; 64] = hex::decode(hex_sig).ok()?.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[derive(Clone)]
struct MeshState {
    replica: Arc<Mutex<Replica>>,
    gate_id: Uuid,
    key: Arc<SigningKey>,
    /// Nonces served within the last [`MAX_REQUEST_AGE_MS`]: (caller, nonce) → when seen.
    seen: Arc<Mutex<HashMap<(Uuid, String), u64>>>,
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    after: u64,
}

/// A verified request: who asked, with which nonce.
struct Caller {
    gate_id: Uuid,
    nonce: String,
}

/// Checks a request's signature, freshness and caller; the reason it is refused otherwise.
fn authenticate(
    s: &MeshState,
    r: &Replica,
    headers: &HeaderMap,
    path_and_query: &str,
    now_ms: u64,
) -> Result<Caller, &'static str> {
    let caller = header_str(headers, GATE_HEADER)
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or("missing or malformed usher-mesh-gate")?;
    let nonce = header_str(headers, NONCE_HEADER)
        .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("missing or malformed usher-mesh-nonce")?;
    let time: u64 = header_str(headers, TIME_HEADER)
        .and_then(|v| v.parse().ok())
        .ok_or("missing or malformed usher-mesh-time")?;
    let signature = header_str(headers, SIGNATURE_HEADER)
        .and_then(parse_signature)
        .ok_or("missing or malformed usher-mesh-signature")?;
    if time.abs_diff(now_ms) > MAX_REQUEST_AGE_MS {
        return Err("request time too far from this gate's clock");
    }
    match r.gate_config(s.gate_id) {
        Ok(Some(own)) if own.is_active => {}
        _ => return Err("this gate is not an active gate of the event"),
    }
    let key = peer_key(r, s.gate_id, caller).ok_or("not an active peer of this event")?;
    key.verify_strict(
        &request_message(caller, nonce, time, path_and_query),
        &signature,
    )
    .map_err(|_| "bad signature")?;
    let mut seen = s.seen.lock().map_err(|_| "nonce cache poisoned")?;
    seen.retain(|_, at| now_ms.saturating_sub(*at) <= 2 * MAX_REQUEST_AGE_MS);
    if seen.insert((caller, nonce.to_string()), now_ms).is_some() {
        return Err("nonce already used");
    }
    Ok(Caller {
        gate_id: caller,
        nonce: nonce.to_string(),
    })
}

fn refused(reason: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": "mesh request refused", "detail": reason})),
    )
        .into_response()
}

async fn serve_log(
    State(s): State<MeshState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    let state = s.clone();
    let page = tokio::task::spawn_blocking(
        move || -> Result<Result<(Caller, LogPage), &'static str>, String> {
            let r = state
                .replica
                .lock()
                .map_err(|_| "replica lock poisoned".to_string())?;
            let caller = match authenticate(&state, &r, &headers, &path_and_query, wall_ms()) {
                Ok(c) => c,
                Err(reason) => return Ok(Err(reason)),
            };
            let mut rows = r.log_after(q.after, PAGE + 1).map_err(|e| e.to_string())?;
            let more = rows.len() > PAGE;
            rows.truncate(PAGE);
            let next = rows.last().map_or(q.after, |c| c.seq);
            Ok(Ok((
                caller,
                LogPage {
                    gate_id: state.gate_id,
                    checkins: rows,
                    next,
                    more,
                },
            )))
        },
    )
    .await;
    match page {
        Ok(Ok(Ok((caller, page)))) => {
            let body = match serde_json::to_vec(&page) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "mesh log page not serialisable");
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
            };
            let signature = s
                .key
                .sign(&answer_message(caller.gate_id, &caller.nonce, &body));
            let mut resp = Response::new(axum::body::Body::from(body));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let (Ok(g), Ok(sig)) = (
                HeaderValue::from_str(&s.gate_id.to_string()),
                HeaderValue::from_str(&hex::encode(signature.to_bytes())),
            ) {
                h.insert(GATE_HEADER, g);
                h.insert(SIGNATURE_HEADER, sig);
            }
            resp
        }
        Ok(Ok(Err(reason))) => {
            tracing::debug!(reason, "mesh request refused");
            refused(reason)
        }
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
    let key = match replica.lock() {
        Ok(r) => Arc::new(r.mesh_signing_key()),
        Err(_) => return Err(std::io::Error::other("replica lock poisoned")),
    };
    let app = Router::new()
        .route(LOG_PATH, get(serve_log))
        .with_state(MeshState {
            replica,
            gate_id,
            key,
            seen: Arc::new(Mutex::new(HashMap::new())),
        });
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
        .filter(|c| c.is_active && c.mesh_public_key.is_some())
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

/// Sends one signed request for `after` and returns the verified page.
async fn read_page(
    http: &reqwest::Client,
    replica: &Arc<Mutex<Replica>>,
    own: Uuid,
    key: &SigningKey,
    addr: &str,
    after: u64,
) -> anyhow::Result<LogPage> {
    let path_and_query = format!("{LOG_PATH}?after={after}");
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let time = wall_ms();
    let signature = key.sign(&request_message(own, &nonce, time, &path_and_query));
    let resp = http
        .get(format!("{}{path_and_query}", base_url(addr)))
        .header(GATE_HEADER, own.to_string())
        .header(NONCE_HEADER, &nonce)
        .header(TIME_HEADER, time.to_string())
        .header(SIGNATURE_HEADER, hex::encode(signature.to_bytes()))
        .timeout(Duration::from_secs(3))
        .send()
        .await?
        .error_for_status()?;
    let peer = header_str(resp.headers(), GATE_HEADER)
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| anyhow::anyhow!("answer without a gate id"))?;
    let signature = header_str(resp.headers(), SIGNATURE_HEADER)
        .and_then(parse_signature)
        .ok_or_else(|| anyhow::anyhow!("unsigned answer"))?;
    let body = resp.bytes().await?;
    let peer_key = {
        let r = replica
            .lock()
            .map_err(|_| anyhow::anyhow!("replica lock poisoned"))?;
        peer_key(&r, own, peer)
    }
    .ok_or_else(|| anyhow::anyhow!("gate {peer} is not an active peer with a mesh key"))?;
    peer_key
        .verify_strict(&answer_message(own, &nonce, &body), &signature)
        .map_err(|_| anyhow::anyhow!("the answer's signature does not match gate {peer}"))?;
    let page: LogPage = serde_json::from_slice(&body)?;
    if page.gate_id != peer {
        anyhow::bail!("gate {peer} signed the log of gate {}", page.gate_id);
    }
    Ok(page)
}

/// Reads one peer's log until caught up; returns how many presence rows changed. Only answers
/// signed by an active peer of the event for this very request are applied.
pub async fn pull_peer(
    http: &reqwest::Client,
    replica: &Arc<Mutex<Replica>>,
    own: Uuid,
    addr: &str,
) -> anyhow::Result<usize> {
    let key = {
        let r = replica
            .lock()
            .map_err(|_| anyhow::anyhow!("replica lock poisoned"))?;
        r.mesh_signing_key()
    };
    let mut changed = 0;
    // The peer's gate id is learnt from its first answer; its cursor is kept per gate id.
    let mut after = known_cursor(replica, addr)?.unwrap_or(0);
    loop {
        let page = read_page(http, replica, own, &key, addr, after).await?;
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
        after = next;
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
