//! The background sync loop: push the outbox, pull the change log, keep the clock in step.
//!
//! Two independent loops so that neither waits for the other: the pusher wakes on every new
//! decision (and every two seconds), the puller long-polls the server so another gate's
//! admission or a revocation arrives within a second. Both back off exponentially with full
//! jitter (capped at 30 s) while the server is unreachable, and resume by themselves. Scanning
//! never waits for either: decisions only touch the local replica.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sync_protocol::wire::{ChangeData, PushRequest};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::client::{SyncClient, SyncError};
use crate::decide::wall_ms;
use crate::replica::Replica;
use crate::telemetry;

/// Largest batch pushed in one request.
pub const PUSH_BATCH: usize = 1_000;
/// Page size when pulling.
pub const PULL_LIMIT: u32 = 5_000;

/// Live sync state, shared with the status API and the operator screen.
#[derive(Debug, Default)]
pub struct SyncStatus {
    pub online: AtomicBool,
    pub last_sync_ms: AtomicU64,
    pub deactivated: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// The sync loops run in this process: `online` is live (the heartbeat keeps it within
    /// [`HEARTBEAT`] plus its timeout of the truth), not inferred from the last sync time.
    pub running: AtomicBool,
}

/// How often the server's `/healthz` is probed while the loops run: the puller's long poll can
/// hang for its whole wait on a silently dropped network, and the screen must say OFFLINE
/// within seconds.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

impl SyncStatus {
    fn ok(&self) {
        self.online.store(true, Ordering::Relaxed);
        self.last_sync_ms.store(wall_ms(), Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    fn failed(&self, err: &SyncError) {
        self.online.store(false, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(err.to_string());
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// A replica write refused for lack of disk space: the loops back off and retry, so syncing
/// resumes by itself once space is freed.
fn disk_full(e: &SyncError) -> bool {
    matches!(e, SyncError::Replica(crate::replica::ReplicaError::Sqlite(s))
        if s.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempt: 0,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: uniform in `[0, min(cap, base · 2^attempt)]`.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = exp.min(self.cap).as_millis() as u64;
        Duration::from_millis(rand::random_range(0..=ceiling.max(1)))
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SyncStats {
    pub pushed: u64,
    pub push_batches: u64,
    pub pulled: u64,
    pub pull_pages: u64,
    pub replica_cursor: u64,
    pub outbox_depth: u64,
}

/// Pushes and pulls for one enrolled gate.
pub struct SyncEngine {
    replica: Arc<Mutex<Replica>>,
    client: SyncClient,
    gate_id: Uuid,
    pub status: Arc<SyncStatus>,
    /// Woken when the server answers again after a failure, so the loop still backing off
    /// (pusher or puller) retries at once instead of sleeping out its delay: a backlog starts
    /// draining as soon as either loop sees the server back.
    reconnected: Notify,
}

impl SyncEngine {
    pub fn new(replica: Replica) -> Result<Self, SyncError> {
        Self::with_ca_cert(replica, None)
    }

    /// An engine whose client also trusts the venue CA in `ca_cert` (`--ca-cert`).
    pub fn with_ca_cert(
        replica: Replica,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, SyncError> {
        let e = replica.require_enrollment()?;
        let client = SyncClient::with_ca_cert(&e.server_url, Some(e.credential), ca_cert)?;
        Ok(Self {
            replica: Arc::new(Mutex::new(replica)),
            client,
            gate_id: e.gate_id,
            status: Arc::new(SyncStatus::default()),
            reconnected: Notify::new(),
        })
    }

    pub fn with_status(mut self, status: Arc<SyncStatus>) -> Self {
        self.status = status;
        self
    }

    /// Records a successful exchange; wakes the other loop if this ends an outage.
    fn mark_ok(&self) {
        let was_online = self.status.online.load(Ordering::Relaxed);
        self.status.ok();
        let now = wall_ms();
        telemetry::sync_state(true, Some(now), now);
        if !was_online {
            self.reconnected.notify_waiters();
        }
    }

    /// Runs `f` on the replica on the blocking pool.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Replica) -> Result<T, crate::replica::ReplicaError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let replica = self.replica.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = replica
                .lock()
                .map_err(|_| SyncError::Task("replica lock poisoned".into()))?;
            f(&mut guard).map_err(SyncError::from)
        })
        .await
        .map_err(|e| SyncError::Task(e.to_string()))?
    }

    /// Pushes the outbox until it is empty. Rows are marked synced only for what the server
    /// acknowledged, by the highest contiguous seq.
    pub async fn push_all(&self) -> Result<(u64, u64), SyncError> {
        let (mut pushed, mut batches) = (0u64, 0u64);
        loop {
            let pending = self.db(|r| r.pending(PUSH_BATCH)).await?;
            if pending.is_empty() {
                return Ok((pushed, batches));
            }
            let max_seq = pending.last().map(|c| c.seq).unwrap_or(0);
            let n = pending.len() as u64;
            let seq_of: std::collections::HashMap<Uuid, u64> =
                pending.iter().map(|c| (c.id, c.seq)).collect();
            let resp = self
                .client
                .push(&PushRequest {
                    gate_id: self.gate_id,
                    checkins: pending,
                })
                .await?;
            let statuses: Vec<_> = resp
                .results
                .iter()
                .filter_map(|r| seq_of.get(&r.id).map(|&seq| (seq, r.status)))
                .collect();
            let acked = resp.acked_through_seq;
            let server_time = resp.server_time;
            let depth = self
                .db(move |r| {
                    r.acknowledge(acked, &statuses)?;
                    r.observe_clock(server_time, wall_ms())?;
                    r.set_meta("last_sync_at", &wall_ms().to_string())?;
                    r.outbox_depth()
                })
                .await?;
            self.mark_ok();
            self.client.report(depth, wall_ms());
            telemetry::pushed(n);
            telemetry::outbox_depth(depth);
            pushed += n;
            batches += 1;
            if acked < max_seq {
                // The server holds a hole below this batch (it should not happen: we send in seq
                // order). Stop here and resend from the hole on the next round.
                return Err(SyncError::Protocol(format!(
                    "server acknowledged through {acked}, sent through {max_seq}"
                )));
            }
        }
    }

    /// Pulls until caught up. With `wait`, the first request long-polls.
    pub async fn pull_all(&self, wait: Option<u32>) -> Result<(u64, u64), SyncError> {
        let (mut pulled, mut pages) = (0u64, 0u64);
        let mut wait = wait;
        loop {
            let after = self.db(|r| r.replica_cursor()).await?;
            let resp = self.client.pull(after, PULL_LIMIT, wait).await?;
            wait = None;
            let n = resp.changes.len() as u64;
            let more = resp.more;
            let gate_id = self.gate_id;
            let deactivated = resp.changes.iter().any(|c| {
                matches!(&c.data, ChangeData::GateConfig(g) if g.gate_id == gate_id && (!g.is_active || c.deleted))
            });
            let (changes, next, server_time) = (resp.changes, resp.next, resp.server_time);
            let depth = self
                .db(move |r| {
                    if !changes.is_empty() || next != after {
                        r.apply_changes(&changes, next)?;
                    }
                    r.observe_clock(server_time, wall_ms())?;
                    r.set_meta("last_sync_at", &wall_ms().to_string())?;
                    r.outbox_depth()
                })
                .await?;
            self.mark_ok();
            self.client.report(depth, wall_ms());
            telemetry::pulled(n);
            telemetry::replica_cursor(next);
            pulled += n;
            pages += 1;
            if deactivated {
                self.deactivate().await?;
                return Err(SyncError::Unauthorized);
            }
            if !more {
                return Ok((pulled, pages));
            }
        }
    }

    /// The organizer deactivated this gate: erase personal data from the replica.
    async fn deactivate(&self) -> Result<(), SyncError> {
        tracing::warn!("gate deactivated by the organizer: wiping personal data from the replica");
        self.status.deactivated.store(true, Ordering::Relaxed);
        self.db(|r| r.wipe_personal_data()).await
    }

    /// One full round: push everything, then pull everything.
    pub async fn sync_once(&self) -> Result<SyncStats, SyncError> {
        let result = async {
            let (pushed, push_batches) = self.push_all().await?;
            let (pulled, pull_pages) = self.pull_all(None).await?;
            let (replica_cursor, outbox_depth) = self
                .db(|r| Ok((r.replica_cursor()?, r.outbox_depth()?)))
                .await?;
            Ok(SyncStats {
                pushed,
                push_batches,
                pulled,
                pull_pages,
                replica_cursor,
                outbox_depth,
            })
        }
        .await;
        if let Err(e) = &result {
            self.handle_error(e, "round").await;
        }
        result
    }

    /// Records a failed exchange (`op`: push, pull or round); an unaccepted credential wipes
    /// the replica.
    async fn handle_error(&self, e: &SyncError, op: &'static str) {
        self.status.failed(e);
        telemetry::sync_error(op);
        let last = self.status.last_sync_ms.load(Ordering::Relaxed);
        telemetry::sync_state(false, (last > 0).then_some(last), wall_ms());
        if matches!(e, SyncError::Unauthorized)
            && !self.status.deactivated.load(Ordering::Relaxed)
            && let Err(wipe) = self.deactivate().await
        {
            tracing::error!(error = %wipe, "wiping the replica failed");
        }
    }

    /// Runs both loops until `shutdown`. `kick` is notified after every local decision.
    pub async fn run(self: Arc<Self>, kick: Arc<Notify>, shutdown: CancellationToken) {
        self.status.running.store(true, Ordering::Relaxed);
        let heartbeat = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.heartbeat_loop(shutdown).await })
        };
        let pusher = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.push_loop(kick, shutdown).await })
        };
        let puller = {
            let me = self.clone();
            tokio::spawn(async move { me.pull_loop(shutdown).await })
        };
        let _ = tokio::join!(pusher, puller, heartbeat);
        self.status.running.store(false, Ordering::Relaxed);
    }

    /// Probes the server every [`HEARTBEAT`]: a failure marks the gate offline at once; an
    /// answer after an outage wakes the backing-off loops so they reconnect (and mark it online)
    /// without waiting out their delay.
    async fn heartbeat_loop(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(HEARTBEAT) => {}
            }
            let probe = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.client.health(HEARTBEAT) => r,
            };
            match probe {
                Ok(()) => {
                    if !self.status.online.load(Ordering::Relaxed) {
                        self.reconnected.notify_waiters();
                    }
                }
                Err(e) => {
                    if self.status.online.load(Ordering::Relaxed) {
                        tracing::info!(error = %e, "server unreachable (heartbeat)");
                    }
                    self.status.failed(&e);
                    let last = self.status.last_sync_ms.load(Ordering::Relaxed);
                    telemetry::sync_state(false, (last > 0).then_some(last), wall_ms());
                }
            }
        }
    }

    async fn push_loop(&self, kick: Arc<Notify>, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        loop {
            // A push cut short is safe: rows are marked synced only for what the server
            // acknowledged, and a resent check-in is a duplicate there.
            let round = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.push_all() => r,
            };
            match round {
                Ok((n, _)) => {
                    if n > 0 {
                        tracing::debug!(pushed = n, "outbox pushed");
                    }
                    backoff.reset();
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = kick.notified() => {}
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
                Err(e) => {
                    self.handle_error(&e, "push").await;
                    if !e.is_transient() && !matches!(e, SyncError::Protocol(_)) && !disk_full(&e) {
                        tracing::error!(error = %e, "push stopped");
                        return;
                    }
                    let delay = backoff.next_delay();
                    tracing::info!(error = %e, retry_in_ms = delay.as_millis() as u64, "push failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                        () = self.reconnected.notified() => backoff.reset(),
                    }
                }
            }
        }
    }

    async fn pull_loop(&self, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        loop {
            let round = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.pull_all(Some(20)) => r,
            };
            match round {
                Ok(_) => backoff.reset(),
                Err(e) => {
                    self.handle_error(&e, "pull").await;
                    if !e.is_transient() && !matches!(e, SyncError::Protocol(_)) && !disk_full(&e) {
                        tracing::error!(error = %e, "pull stopped");
                        return;
                    }
                    let delay = backoff.next_delay();
                    tracing::info!(error = %e, retry_in_ms = delay.as_millis() as u64, "pull failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                        () = self.reconnected.notified() => backoff.reset(),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::default();
        let mut max_seen = Duration::ZERO;
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(30));
            max_seen = max_seen.max(d);
        }
        assert!(max_seen > Duration::from_secs(5), "{max_seen:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(250));
    }
}
