//! The operator screen: a kiosk page served on the loopback interface.
//!
//! A local web page rather than a terminal UI: kiosks and tablets at venue gates run a
//! full-screen browser anyway, a page can show a screen-filling green/red verdict with the
//! attendee's name and attention note in large type, works with touch for undo/override/lookup,
//! and needs no extra dependency (axum already serves the sync side). It also makes the screen
//! testable over plain HTTP. The page listens to `/api/events` (server-sent events), so a badge
//! read by the USB scanner, the camera or BLE appears on screen the moment it is decided. The
//! same listener serves `/metrics` for Prometheus ([`crate::telemetry`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use sync_protocol::wire::{Direction, Reason};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::decide::{GateError, ScanRequest, Subject, wall_ms};
use crate::handle::{GateHandle, HandleError};
use crate::replica::Replica;
use crate::status::status;
use crate::sync::SyncStatus;
use crate::telemetry;

#[derive(Clone)]
pub struct UiState {
    pub gate: GateHandle,
    pub replica: Arc<Mutex<Replica>>,
    pub sync: Arc<SyncStatus>,
}

struct ApiError(StatusCode, &'static str, String, Option<&'static str>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.1, "detail": self.2});
        if let Some(field) = self.3 {
            body["field"] = json!(field);
        }
        (self.0, Json(body)).into_response()
    }
}

impl From<HandleError> for ApiError {
    fn from(e: HandleError) -> Self {
        let (status, code, field) = match &e {
            HandleError::Gate(GateError::Deactivated) => {
                (StatusCode::CONFLICT, "gate_deactivated", None)
            }
            HandleError::Gate(GateError::NoConfig) => (StatusCode::CONFLICT, "not_synced", None),
            HandleError::Gate(GateError::UnknownCheckin(_)) => {
                (StatusCode::NOT_FOUND, "unknown_checkin", Some("id"))
            }
            HandleError::Gate(GateError::CannotUndo(..)) => {
                (StatusCode::CONFLICT, "cannot_undo", Some("id"))
            }
            HandleError::Gate(GateError::OverrideWithoutTicket) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "override_needs_ticket",
                Some("serial"),
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "kiosk request failed");
        }
        ApiError(status, code, e.to_string(), field)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    credential: Option<String>,
    serial: Option<u64>,
    direction: Option<Direction>,
    #[serde(rename = "override")]
    operator_override: Option<String>,
}

async fn scan(
    State(s): State<UiState>,
    body: Result<Json<ScanBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) =
        body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, "bad_request", e.body_text(), None))?;
    let subject = match (b.credential, b.serial) {
        (Some(c), None) if !c.trim().is_empty() => Subject::Text(c),
        (None, Some(serial)) => Subject::Serial(serial),
        _ => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_request",
                "give exactly one of `credential` or `serial`".into(),
                Some("credential"),
            ));
        }
    };
    let operator_override = b.operator_override.filter(|o| !o.trim().is_empty());
    let outcome = s
        .gate
        .scan(ScanRequest {
            subject,
            method: None,
            direction: b.direction,
            operator_override,
        })
        .await?;
    Ok(Json(outcome).into_response())
}

#[derive(Deserialize)]
struct UndoBody {
    id: Uuid,
}

async fn undo(
    State(s): State<UiState>,
    body: Result<Json<UndoBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e.body_text(),
            Some("id"),
        )
    })?;
    Ok(Json(s.gate.undo(b.id).await?).into_response())
}

#[derive(Deserialize)]
struct LookupQuery {
    q: String,
}

async fn lookup(
    State(s): State<UiState>,
    Query(q): Query<LookupQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(json!({"items": s.gate.lookup(q.q).await?})).into_response())
}

async fn get_status(State(s): State<UiState>) -> Result<Response, ApiError> {
    let replica = s.replica.clone();
    let st = tokio::task::spawn_blocking(move || {
        let r = replica
            .lock()
            .map_err(|_| "replica lock poisoned".to_string())?;
        status(&r).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
            None,
        )
    })?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e, None))?;
    let mut v = serde_json::to_value(&st).unwrap_or_default();
    v["sync_error"] = json!(s.sync.last_error());
    Ok(Json(v).into_response())
}

/// The shutdown token, for the handlers whose responses stay open (the event stream).
#[derive(Clone)]
struct Stopping(CancellationToken);

/// The live decision stream. It ends at shutdown, so the graceful stop of the listener is not
/// held open by a kiosk browser.
async fn events(
    State(s): State<UiState>,
    Extension(Stopping(shutdown)): Extension<Stopping>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.gate.subscribe();
    let stream = futures_util::stream::unfold((rx, shutdown), |(mut rx, shutdown)| async move {
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return None,
                r = rx.recv() => r,
            };
            match next {
                Ok(o) => {
                    let ev = Event::default()
                        .event("decision")
                        .json_data(&o)
                        .unwrap_or_default();
                    return Some((Ok(ev), (rx, shutdown)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// The page, with the operator's words for every reason (`Reason::describe`) filled in.
fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let reasons: serde_json::Map<String, serde_json::Value> = Reason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), json!(r.describe())))
            .collect();
        include_str!("ui/index.html").replace(
            "__REASONS__",
            &serde_json::Value::Object(reasons).to_string(),
        )
    })
}

async fn index() -> Html<&'static str> {
    Html(page())
}

/// `GET /metrics`: the gate's metrics in the Prometheus text format. The gauges that live in
/// the replica (outbox depth, replica cursor, age of the last sync) are read at scrape time.
async fn metrics(State(s): State<UiState>) -> Response {
    let replica = s.replica.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let r = replica
            .lock()
            .map_err(|_| "replica lock poisoned".to_string())?;
        let last_sync: Option<u64> = r
            .meta("last_sync_at")
            .map_err(|e| e.to_string())?
            .and_then(|v| v.parse().ok());
        let depth = r.outbox_depth().map_err(|e| e.to_string())?;
        let cursor = r.replica_cursor().map_err(|e| e.to_string())?;
        Ok((depth, cursor, last_sync))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match read {
        Ok((depth, cursor, stored)) => {
            telemetry::outbox_depth(depth);
            telemetry::replica_cursor(cursor);
            let live = s.sync.last_sync_ms.load(Ordering::Relaxed);
            let last = stored.max((live > 0).then_some(live));
            telemetry::sync_state(s.sync.online.load(Ordering::Relaxed), last, wall_ms());
        }
        // Still render what is known: a scrape that fails is worse than one stale gauge.
        Err(e) => tracing::warn!(error = %e, "metrics: replica gauges not refreshed"),
    }
    match telemetry::render() {
        Some(body) => ([(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)], body).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are recorded by another recorder in this process\n",
        )
            .into_response(),
    }
}

/// The operator screen and its API, plus `/metrics`. `/metrics` is routed beside the operator
/// routes, not among them: whatever guards the screen's routes must leave it readable by
/// Prometheus scraping this (loopback) listener.
pub fn router(state: UiState, shutdown: CancellationToken) -> Router {
    let operator = Router::new()
        .route("/", get(index))
        .route("/api/status", get(get_status))
        .route("/api/scan", post(scan))
        .route("/api/undo", post(undo))
        .route("/api/lookup", get(lookup))
        .route("/api/events", get(events));
    operator
        .route("/metrics", get(metrics))
        .layer(Extension(Stopping(shutdown)))
        .with_state(state)
}

/// Serves the kiosk page until `shutdown` (open event streams end then too).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: UiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Record from the first decision on, whoever started this listener.
    telemetry::install();
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "operator screen listening");
    axum::serve(listener, router(state, shutdown.clone()))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
