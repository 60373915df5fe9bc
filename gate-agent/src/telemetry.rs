//! The gate's metrics, for Prometheus: `GET /metrics` on the operator-screen listener (see
//! [`crate::ui`]), in the text exposition format.
//!
//! Recorded through the `metrics` facade into one process-wide Prometheus recorder, installed
//! once ([`install`]; a second call, e.g. a second gate started by a test in the same process,
//! reuses it). Without a recorder (the one-shot CLI commands) every recording is a no-op.
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `usher_gate_decisions_total{result,reason}` | counter | committed decisions; `reason="none"` for a plain admit, an admit with a reason is a supervisor override |
//! | `usher_gate_decision_seconds` | histogram | from the request reaching the decision thread to its durable commit |
//! | `usher_gate_decision_errors_total` | counter | requests that got no decision (not configured, deactivated, commit failed) |
//! | `usher_gate_undos_total` | counter | undone admissions |
//! | `usher_gate_outbox_depth` | gauge | check-ins not yet acknowledged by the server |
//! | `usher_gate_last_sync_age_seconds` | gauge | seconds since the last successful exchange with the server |
//! | `usher_gate_online` | gauge | 1 while the last exchange with the server succeeded |
//! | `usher_gate_replica_cursor` | gauge | the last server change applied to the replica |
//! | `usher_gate_pushed_checkins_total`, `usher_gate_push_batches_total` | counters | what the pusher delivered |
//! | `usher_gate_pulled_changes_total`, `usher_gate_pull_pages_total` | counters | what the puller applied |
//! | `usher_gate_sync_errors_total{op}` | counter | failed pushes and pulls |
//! | `usher_gate_mesh_peers` | gauge | mesh peers this gate reads |
//! | `usher_gate_mesh_presence_updates_total`, `usher_gate_mesh_pull_errors_total` | counters | what reading peers' logs did |

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sync_protocol::wire::{Decision, Reason};

pub const DECISIONS: &str = "usher_gate_decisions_total";
pub const DECISION_SECONDS: &str = "usher_gate_decision_seconds";
pub const DECISION_ERRORS: &str = "usher_gate_decision_errors_total";
pub const UNDOS: &str = "usher_gate_undos_total";
pub const OUTBOX_DEPTH: &str = "usher_gate_outbox_depth";
pub const LAST_SYNC_AGE: &str = "usher_gate_last_sync_age_seconds";
pub const ONLINE: &str = "usher_gate_online";
pub const REPLICA_CURSOR: &str = "usher_gate_replica_cursor";
pub const PUSHED: &str = "usher_gate_pushed_checkins_total";
pub const PUSH_BATCHES: &str = "usher_gate_push_batches_total";
pub const PULLED: &str = "usher_gate_pulled_changes_total";
pub const PULL_PAGES: &str = "usher_gate_pull_pages_total";
pub const SYNC_ERRORS: &str = "usher_gate_sync_errors_total";
pub const MESH_PEERS: &str = "usher_gate_mesh_peers";
pub const MESH_UPDATES: &str = "usher_gate_mesh_presence_updates_total";
pub const MESH_ERRORS: &str = "usher_gate_mesh_pull_errors_total";

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Upper bounds of the decision-latency buckets, in seconds: a decision is a sub-millisecond
/// check plus one fsync (a few ms on an SSD, tens on an SD card); a second means trouble.
const DECISION_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// `reason` label of a decision without a reason.
const NO_REASON: &str = "none";

struct Installed {
    handle: Option<PrometheusHandle>,
    at: Instant,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

fn installed() -> &'static Installed {
    INSTALLED.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DECISION_SECONDS.into()), &DECISION_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder);
        let handle = match handle {
            Ok(h) => {
                describe();
                seed();
                Some(h)
            }
            Err(e) => {
                // Another recorder owns this process (an embedding program): our metrics go to
                // it, and `/metrics` here says it has nothing to render.
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        };
        Installed {
            handle,
            at: Instant::now(),
        }
    })
}

/// Installs the process-wide recorder on first call and returns its handle; later calls
/// return the same one. `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    installed().handle.as_ref()
}

fn describe() {
    describe_counter!(
        DECISIONS,
        "Committed gate decisions by result (admit/reject) and reason (\"none\" for a plain \
         admit; an admit with a reason is a supervisor override)."
    );
    describe_histogram!(
        DECISION_SECONDS,
        "Seconds from a scan request reaching the decision thread to its durable commit."
    );
    describe_counter!(
        DECISION_ERRORS,
        "Scan requests that got no decision (gate not configured or deactivated, commit failed)."
    );
    describe_counter!(UNDOS, "Admissions undone by the operator.");
    describe_gauge!(
        OUTBOX_DEPTH,
        "Check-ins recorded by this gate and not yet acknowledged by the server."
    );
    describe_gauge!(
        LAST_SYNC_AGE,
        "Seconds since the last successful exchange with the server (since the agent started \
         if there was none)."
    );
    describe_gauge!(
        ONLINE,
        "1 while the last exchange with the server succeeded, else 0."
    );
    describe_gauge!(
        REPLICA_CURSOR,
        "The last server change applied to the replica."
    );
    describe_counter!(
        PUSHED,
        "Check-ins pushed to and acknowledged by the server."
    );
    describe_counter!(PUSH_BATCHES, "Successful push requests.");
    describe_counter!(PULLED, "Server changes pulled into the replica.");
    describe_counter!(PULL_PAGES, "Successful pull requests.");
    describe_counter!(
        SYNC_ERRORS,
        "Failed exchanges with the server, by operation (push, pull, round)."
    );
    describe_gauge!(MESH_PEERS, "Venue-mesh peers this gate reads.");
    describe_counter!(
        MESH_UPDATES,
        "Presence rows changed by reading mesh peers' logs."
    );
    describe_counter!(MESH_ERRORS, "Failed reads of a mesh peer's log.");
}

/// Zero series for every decision label pair, so a rate over a reason that has not happened
/// yet is 0 rather than missing.
fn seed() {
    counter!(DECISIONS, "result" => Decision::Admit.as_str(), "reason" => NO_REASON).absolute(0);
    for r in Reason::ALL {
        counter!(DECISIONS, "result" => Decision::Reject.as_str(), "reason" => r.as_str())
            .absolute(0);
    }
    counter!(DECISION_ERRORS).absolute(0);
    counter!(UNDOS).absolute(0);
    for op in ["push", "pull", "round"] {
        counter!(SYNC_ERRORS, "op" => op).absolute(0);
    }
}

/// A committed decision.
pub fn decision(decision: Decision, reason: Option<Reason>) {
    let reason = reason.map_or(NO_REASON, Reason::as_str);
    counter!(DECISIONS, "result" => decision.as_str(), "reason" => reason).increment(1);
}

/// From request to durable commit.
pub fn decision_latency(d: Duration) {
    histogram!(DECISION_SECONDS).record(d.as_secs_f64());
}

pub fn decision_error() {
    counter!(DECISION_ERRORS).increment(1);
}

pub fn undo() {
    counter!(UNDOS).increment(1);
}

pub fn outbox_depth(depth: u64) {
    gauge!(OUTBOX_DEPTH).set(depth as f64);
}

pub fn replica_cursor(cursor: u64) {
    gauge!(REPLICA_CURSOR).set(cursor as f64);
}

/// The sync state as of now: `last_sync_ms` is the newest successful exchange known (unix ms),
/// if any.
pub fn sync_state(online: bool, last_sync_ms: Option<u64>, now_ms: u64) {
    // Without a recorder there is nothing to set (and no start time to count from).
    let Some(started) = INSTALLED.get().map(|i| i.at) else {
        return;
    };
    gauge!(ONLINE).set(if online { 1.0 } else { 0.0 });
    let age = match last_sync_ms {
        Some(t) => Duration::from_millis(now_ms.saturating_sub(t)),
        None => started.elapsed(),
    };
    gauge!(LAST_SYNC_AGE).set(age.as_secs_f64());
}

pub fn pushed(checkins: u64) {
    counter!(PUSHED).increment(checkins);
    counter!(PUSH_BATCHES).increment(1);
}

pub fn pulled(changes: u64) {
    counter!(PULLED).increment(changes);
    counter!(PULL_PAGES).increment(1);
}

/// A failed exchange; `op` is `push`, `pull` or `round`.
pub fn sync_error(op: &'static str) {
    counter!(SYNC_ERRORS, "op" => op).increment(1);
}

pub fn mesh_peers(n: usize) {
    gauge!(MESH_PEERS).set(n as f64);
}

pub fn mesh_updates(n: usize) {
    counter!(MESH_UPDATES).increment(n as u64);
}

pub fn mesh_error() {
    counter!(MESH_ERRORS).increment(1);
}

/// Drains histogram samples into their buckets between scrapes, so memory stays bounded on a
/// gate nobody scrapes.
pub fn upkeep() {
    if let Some(h) = install() {
        h.run_upkeep();
    }
}

/// The text exposition of every metric, or `None` without a recorder of ours.
pub fn render() -> Option<String> {
    install().map(PrometheusHandle::render)
}
