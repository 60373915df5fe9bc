//! Operations: health, readiness, Prometheus metrics, and the middleware that measures every
//! request under its route template.
//!
//! Metrics go through the `metrics` facade (`metrics::counter!` where a thing happens, in any
//! layer) into one Prometheus recorder per process, rendered by `GET /metrics`. Gauges that
//! describe state (database pool, live subscribers) are read when scraped.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::error::Problem;
use crate::service::AppState;
use crate::store::{self, Db};

/// Upper bounds (seconds) of the request-duration histogram.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Every metric the server records, with its help text: described once at start so `/metrics`
/// lists each from the first scrape on (a counter nobody has touched yet renders as 0).
pub const COUNTERS: &[(&str, &str)] = &[
    (
        "http_requests_total",
        "HTTP requests by method, route template and status.",
    ),
    (
        "usher_tickets_issued_total",
        "Tickets issued (including reissues).",
    ),
    ("usher_import_rows_total", "CSV rows written by imports."),
    ("usher_logins_failed_total", "Failed login attempts."),
    (
        "usher_checkins_merged_total",
        "Check-ins stored by pushes and online redeems.",
    ),
    (
        "usher_conflicts_total",
        "Conflicts found by the merge, by kind.",
    ),
    (
        "usher_redeems_total",
        "Online redeem decisions, by result and reason.",
    ),
    (
        "usher_webhook_messages_total",
        "Webhook deliveries written to the outbox (one per message and endpoint).",
    ),
    (
        "usher_webhook_deliveries_total",
        "Webhook delivery attempts by result (delivered, retrying, failed).",
    ),
];
pub const GAUGES: &[(&str, &str)] = &[
    (
        "usher_live_subscribers",
        "Live subscribers in this process (SSE clients, long polls).",
    ),
    (
        "usher_db_pool_connections",
        "Database pool connections, by state (idle, busy).",
    ),
    (
        "usher_webhook_queue_depth",
        "Pending webhook deliveries (all processes), sampled by the delivery worker.",
    ),
];
pub const HISTOGRAMS: &[(&str, &str)] = &[(
    "http_request_duration_seconds",
    "Request latency by route template.",
)];

/// The process's Prometheus recorder, installed on first use. When another recorder is
/// already installed (a test process that also runs a gate agent), this one is not: the
/// handle then renders only what it was given, and the process's metrics go to the other.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".to_owned()),
                &BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!("a metrics recorder is already installed in this process");
        }
        for (name, help) in COUNTERS {
            metrics::describe_counter!(*name, *help);
        }
        for (name, help) in GAUGES {
            metrics::describe_gauge!(*name, *help);
        }
        for (name, help) in HISTOGRAMS {
            metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
        }
        for name in [
            "usher_tickets_issued_total",
            "usher_import_rows_total",
            "usher_logins_failed_total",
            "usher_checkins_merged_total",
            "usher_webhook_messages_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        // Every label set a dashboard sums over exists from the start, so a rate is 0, not absent.
        for kind in sync_protocol::ConflictKind::ALL {
            metrics::counter!("usher_conflicts_total", "kind" => kind.as_str()).increment(0);
        }
        for result in sync_protocol::Decision::ALL {
            metrics::counter!("usher_redeems_total", "result" => result.as_str(), "reason" => "")
                .increment(0);
        }
        handle
    })
}

/// Middleware recording every request under its route template (not the raw path, which would
/// explode the label set with ids).
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("http_request_duration_seconds", "route" => route.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// `GET /metrics`: the Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition (version 0.0.4)", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (size, idle) = pool_stats(&state.db);
    metrics::gauge!("usher_db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("usher_db_pool_connections", "state" => "busy")
        .set(f64::from(size.saturating_sub(idle)));
    metrics::gauge!("usher_live_subscribers").set(state.notifier.subscribers() as f64);
    // State read from the database when scraped; a failed read leaves the last values.
    match store::reports::inside_by_event(&state.db).await {
        Ok(rows) => {
            for (event, inside) in rows {
                metrics::gauge!("usher_event_inside", "event" => event.to_string())
                    .set(inside as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "occupancy for the metrics"),
    }
    match store::reports::gates_last_seen(&state.db).await {
        Ok(rows) => {
            for (gate, ms) in rows {
                metrics::gauge!("usher_gate_last_seen_timestamp_seconds", "gate" => gate.to_string())
                    .set(ms as f64 / 1000.0);
            }
        }
        Err(e) => tracing::warn!(error = %e, "gate last-seen times for the metrics"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        recorder().render(),
    )
}

fn pool_stats(db: &Db) -> (u32, u32) {
    let (size, idle) = db.pool_stats();
    (size, u32::try_from(idle).unwrap_or(u32::MAX))
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Up")))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "Database unreachable", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    match state.db.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let body = serde_json::json!({
                "type": "urn:usher:problem:unavailable",
                "title": "Service Unavailable",
                "status": 503,
                "detail": "the database is unreachable",
            });
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}
