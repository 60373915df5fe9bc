//! `POST /api/v1/events/{event}/redeem`: the gate decision made on the server, for thin clients
//! with no replica (a phone browser at a side door). Same checks, same reasons as a gate
//! (`sync_protocol::decide`), and the result is stored as a check-in of the named gate and
//! merged like any pushed one. The ticket's merge lock is held from the presence check to the
//! commit, so concurrent redeems of one ticket admit it exactly once.
//!
//! # Group commit
//! Every admission appends a presence change, and the change log's per-event counter row is
//! locked from that append until the commit has been flushed (`store::changes`), as is the
//! gate row that hands out the check-in's seq. Redeems of one event are therefore serialised
//! through a durable commit whatever we do; one transaction per scan tops out at a few hundred
//! scans/s. So the handler does the storage-free work (signature, window, zone) concurrently,
//! then queues the scan; one task per event takes everything queued and decides and stores it
//! in **one** transaction with set-based statements (the same merge as a push), then answers
//! each request. Under load a transaction carries many scans; alone, a scan is a batch of one.
//! A batch never holds two scans of one ticket: the later one waits for the next batch, so it
//! sees the first one's admission exactly as if the two had run one after the other.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use sync_protocol::decide::{
    Credential, GatePolicy, check_ticket, check_window, check_zone, parse_text,
};
use sync_protocol::merge::FoldPolicy;
use sync_protocol::wire::{Checkin, Decision, Direction, Method, Reason};
use sync_protocol::{KeyRing, ShortCode};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::gate_auth::{self, GateAuth};
use super::merge::{self, Row, i64_of};
use super::notify::Live;
use crate::auth::{Auth, Role};
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::state::AppState;
use crate::store::{self, Tx, db_run, now_ms, tx_run};

/// How long a cached key ring / event policy / gate row is trusted. Rotations and event edits
/// reach the online redeem within this time; a gate's own settings and its deactivation are
/// re-read under its lock in every batch, so they apply at once.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// Most scans decided in one transaction: bounds the time a batch holds its locks, hence the
/// wait of the scans queued behind it.
const MAX_BATCH: usize = 64;

/// Batches of one event in flight at once in this process. One: with two, a second batch does
/// its reads while the first commits, but each batch is half the size and every scan pays for
/// twice the statements — measured slower on two cores (2,314 vs 1,702 redeems/s). Batches of
/// different server processes still overlap that way.
const MAX_IN_FLIGHT: usize = 1;

/// Most scheduler passes a drain task waits for more scans before it starts a batch.
const YIELDS: usize = 4;

/// Who may redeem: staff (organizer token) or the enrolled gate itself.
pub enum RedeemAuth {
    Staff(Auth),
    Gate(GateAuth),
}

impl FromRequestParts<AppState> for RedeemAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(token) = gate_auth::bearer(parts)
            .filter(|t| t.starts_with("ugc_"))
            .map(str::to_owned)
        {
            let token = token.as_str();
            // A thin client redeems scan after scan with the same credential: remember a valid
            // one for this event for [`CACHE_TTL`] instead of a lookup per scan. Revocation
            // reaches the redeem within that time; a deactivated gate is refused at once anyway
            // (its batch re-reads the gate row under its lock).
            let event_id = axum::extract::Path::<Uuid>::from_request_parts(parts, state)
                .await
                .ok()
                .map(|p| p.0);
            let hash = crate::crypto::sha256(token.as_bytes());
            let shared = event_id.and_then(|e| {
                state
                    .redeem_events
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&e).map(|c| c.shared.clone()))
            });
            if let Some(sh) = &shared
                && let Some(g) = fresh(&sh.credentials, &hash)
            {
                return Ok(RedeemAuth::Gate(g));
            }
            let gate = gate_auth::lookup(state, token)
                .await?
                .ok_or(ApiError::Unauthorized(
                    "this gate credential is unknown or revoked; enroll the gate again",
                ))?;
            if let Some(sh) = shared
                && event_id == Some(gate.event_id)
                && let Ok(mut m) = sh.credentials.lock()
            {
                m.insert(hash, (gate, Instant::now()));
            }
            return Ok(RedeemAuth::Gate(gate));
        }
        let auth = Auth::from_request_parts(parts, state).await?;
        auth.require(Role::Staff)?;
        Ok(RedeemAuth::Staff(auth))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    /// The scanned `U1:` ticket or a typed short code.
    pub credential: String,
    /// The gate the thin client stands at.
    pub gate_id: Uuid,
    /// `in` (default for entry and two-way gates) or `out`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub direction: Option<Direction>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RedeemOut {
    #[schema(value_type = String)]
    pub decision: Decision,
    #[schema(value_type = Option<String>)]
    pub reason: Option<Reason>,
    pub ticket_serial: Option<u64>,
    pub name: Option<String>,
    pub attention: Option<String>,
    pub checkin_id: Uuid,
    #[schema(value_type = String)]
    pub direction: Direction,
}

/// What the redeem path keeps per event, refreshed every [`CACHE_TTL`], plus the event's
/// redeem queue (which outlives refreshes).
#[derive(Clone, Debug)]
pub struct EventCache {
    ring: Arc<KeyRing>,
    event_tag: u32,
    policy: FoldPolicy,
    loaded: Instant,
    shared: Arc<EventShared>,
}

/// Per event, kept across cache refreshes: valid gate credentials (by SHA-256), active gate
/// rows, and the queue of scans waiting for the next batch.
#[derive(Default)]
struct EventShared {
    credentials: Mutex<HashMap<[u8; 32], (GateAuth, Instant)>>,
    gates: Mutex<HashMap<Uuid, (GateLite, Instant)>>,
    /// Whether a device is enrolled on a gate ([`has_device`]).
    devices: Mutex<HashMap<Uuid, (bool, Instant)>>,
    queue: Mutex<Queue>,
}

/// A cached value younger than [`CACHE_TTL`].
fn fresh<K: std::hash::Hash + Eq, V: Clone>(
    cache: &Mutex<HashMap<K, (V, Instant)>>,
    key: &K,
) -> Option<V> {
    let m = cache.lock().ok()?;
    m.get(key)
        .filter(|(_, at)| at.elapsed() < CACHE_TTL)
        .map(|(v, _)| v.clone())
}

impl std::fmt::Debug for EventShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventShared").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Drain tasks working on this queue (at most [`MAX_IN_FLIGHT`]).
    running: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
struct GateLite {
    event_id: Uuid,
    direction: String,
    zone_mask: i64,
    allow_reentry: bool,
    is_active: bool,
}

#[derive(FromRow)]
struct KeyLite {
    key_id: i64,
    public_key: Vec<u8>,
}

async fn event_cache(state: &AppState, event_id: Uuid) -> Result<EventCache, ApiError> {
    let mut shared = None;
    if let Ok(m) = state.redeem_events.lock()
        && let Some(c) = m.get(&event_id)
    {
        if c.loaded.elapsed() < CACHE_TTL {
            return Ok(c.clone());
        }
        shared = Some(c.shared.clone());
    }
    let ev = crate::routes::load_event(state, event_id).await?;
    let keys: Vec<KeyLite> = db_run!(&state.db, p => {
        sqlx::query_as("SELECT key_id, public_key FROM signing_keys WHERE event_id = $1")
            .bind(event_id)
            .fetch_all(p)
            .await?
    });
    let mut ring = KeyRing::new();
    for k in keys {
        let bytes: [u8; 32] = k
            .public_key
            .try_into()
            .map_err(|_| anyhow::anyhow!("stored public key is not 32 bytes"))?;
        ring.insert_bytes(
            u32::try_from(k.key_id).map_err(anyhow::Error::from)?,
            &bytes,
        )
        .map_err(|e| anyhow::anyhow!("stored public key invalid: {e}"))?;
    }
    let settings: serde_json::Value = serde_json::from_str(&ev.settings).unwrap_or_default();
    let c = EventCache {
        ring: Arc::new(ring),
        event_tag: u32::try_from(ev.event_tag).map_err(anyhow::Error::from)?,
        policy: FoldPolicy {
            allow_multiple_checkins: settings
                .get("allow_multiple_checkins")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        },
        loaded: Instant::now(),
        shared: shared.unwrap_or_default(),
    };
    if let Ok(mut m) = state.redeem_events.lock() {
        // Two refreshes may race: keep one queue per event.
        let c = match m.get(&event_id) {
            Some(old) if !Arc::ptr_eq(&old.shared, &c.shared) => EventCache {
                shared: old.shared.clone(),
                ..c
            },
            _ => c,
        };
        m.insert(event_id, c.clone());
        return Ok(c);
    }
    Ok(c)
}

const GATE_SQL: &str =
    "SELECT event_id, direction, zone_mask, allow_reentry, is_active FROM gates WHERE id = $1";

/// The gate row, from the cache when fresh. Only active gates are cached: the batch re-reads
/// the row under its lock anyway, so a stale entry costs nothing but that re-check.
async fn gate_row(
    state: &AppState,
    cache: &EventCache,
    event_id: Uuid,
    gate_id: Uuid,
) -> Result<Option<GateLite>, ApiError> {
    if let Some(g) = fresh(&cache.shared.gates, &gate_id) {
        return Ok(Some(g));
    }
    let gate: Option<GateLite> = db_run!(&state.db, p => {
        sqlx::query_as(GATE_SQL).bind(gate_id).fetch_optional(p).await?
    });
    if let Some(g) = &gate
        && g.is_active
        && g.event_id == event_id
        && let Ok(mut m) = cache.shared.gates.lock()
    {
        m.insert(gate_id, (g.clone(), Instant::now()));
    }
    Ok(gate)
}

/// Whether a device is enrolled on the gate (it has an active credential), from the cache when
/// fresh: an enrollment reaches the check within [`CACHE_TTL`].
async fn has_device(state: &AppState, cache: &EventCache, gate_id: Uuid) -> Result<bool, ApiError> {
    if let Some(enrolled) = fresh(&cache.shared.devices, &gate_id) {
        return Ok(enrolled);
    }
    let n: i64 = db_run!(&state.db, p => {
        sqlx::query_scalar(
            "SELECT CAST(count(*) AS BIGINT) FROM gate_credentials
             WHERE gate_id = $1 AND revoked_at IS NULL",
        )
        .bind(gate_id)
        .fetch_one(p)
        .await?
    });
    if let Ok(mut m) = cache.shared.devices.lock() {
        m.insert(gate_id, (n > 0, Instant::now()));
    }
    Ok(n > 0)
}

/// The storage-free part of a decision, made against one version of the gate row.
#[derive(Debug, Clone)]
struct Check {
    direction: Direction,
    entering: bool,
    zone_mask: u16,
    serial: Option<u64>,
    method: Method,
    verdict: Result<(), Reason>,
    code: Option<ShortCode>,
}

fn check(
    cache: &EventCache,
    gate: &GateLite,
    requested: Option<Direction>,
    credential: &str,
    now_unix: u64,
) -> Check {
    let direction = requested.unwrap_or(if gate.direction == "out" {
        Direction::Out
    } else {
        Direction::In
    });
    let zone_mask = u16::try_from(gate.zone_mask).unwrap_or(0);
    let entering = direction == Direction::In;
    let (serial, method, verdict, code) = match parse_text(credential) {
        Ok(Credential::Ticket(t)) => {
            let policy = GatePolicy {
                event_tag: cache.event_tag,
                zone_mask: if entering { zone_mask } else { 0 },
                now_unix,
                grace_seconds: if entering { 60 } else { u32::MAX / 2 },
            };
            (
                Some(t.fields.serial),
                Method::Qr,
                check_ticket(&t, &cache.ring, &policy),
                None,
            )
        }
        Ok(Credential::Code(c)) => (None, Method::Code, Ok(()), Some(c)),
        Ok(Credential::Ble(_)) => (None, Method::Code, Err(Reason::Malformed), None),
        Err(reason) => (None, Method::Code, Err(reason), None),
    };
    Check {
        direction,
        entering,
        zone_mask,
        serial,
        method,
        verdict,
        code,
    }
}

/// One queued scan.
struct Scan {
    gate_id: Uuid,
    /// The gate row [`Scan::check`] was made against.
    gate: GateLite,
    requested: Option<Direction>,
    credential: String,
    now: i64,
    check: Check,
}

struct Job {
    scan: Scan,
    reply: oneshot::Sender<Result<RedeemOut, ApiError>>,
}

/// Decides a credential on the server and stores it as a check-in of `gate_id`.
#[utoipa::path(post, path = "/api/v1/events/{event}/redeem", tag = "checkins",
    security(("bearer" = []), ("gate" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = RedeemBody,
    responses((status = 200, body = RedeemOut),
              (status = 403, description = "A gate credential of another event, or a viewer"),
              (status = 404, description = "Unknown event or gate"),
              (status = 422, description = "Invalid body")))]
pub async fn redeem(
    State(state): State<AppState>,
    auth: RedeemAuth,
    Path(event_id): Path<Uuid>,
    Json(body): Json<RedeemBody>,
) -> Result<axum::Json<RedeemOut>, ApiError> {
    if let RedeemAuth::Gate(g) = &auth {
        g.require_event(event_id)?;
    }
    let cache = event_cache(&state, event_id).await?;
    let gate = gate_row(&state, &cache, event_id, body.gate_id)
        .await?
        .filter(|g| g.event_id == event_id)
        .ok_or(ApiError::NotFound("gate"))?;
    if !gate.is_active {
        return Err(ApiError::Conflict("the gate is deactivated".into()));
    }
    if let RedeemAuth::Gate(g) = &auth
        && g.gate_id != body.gate_id
    {
        return Err(ApiError::Forbidden);
    }
    // A redeem is a check-in of the gate and takes the gate's next seq. A device enrolled on
    // the gate numbers its own scans, offline too, and would find its seqs taken: its scans
    // would be refused as invalid when it pushes them. Staff redeem on gates of their own.
    if matches!(auth, RedeemAuth::Staff(_)) && has_device(&state, &cache, body.gate_id).await? {
        return Err(ApiError::validation(
            "gate_id",
            "a device is enrolled on this gate and numbers its own check-ins; \
             redeem on a gate without one (or with that device's own credential)",
        ));
    }
    let now = now_ms();
    // Storage-free checks first, here, concurrently (no lock held while verifying signatures).
    let check = check(
        &cache,
        &gate,
        body.direction,
        &body.credential,
        u64::try_from(now / 1000).unwrap_or(0),
    );
    let scan = Scan {
        gate_id: body.gate_id,
        gate,
        requested: body.direction,
        credential: body.credential,
        now,
        check,
    };
    let (reply, answer) = oneshot::channel();
    let start = {
        let mut q = cache
            .shared
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.jobs.push_back(Job { scan, reply });
        let start = q.running < MAX_IN_FLIGHT;
        if start {
            q.running += 1;
        }
        start
    };
    if start {
        tokio::spawn(drain(state.clone(), event_id, cache.shared.clone()));
    }
    let out = answer
        .await
        .map_err(|_| anyhow::anyhow!("the redeem batch was abandoned"))??;
    Ok(axum::Json(out))
}

/// Accounts for a drain task that ends abnormally (a panic, or the runtime shutting down): after
/// a panic of the last one, its waiters get an error instead of hanging; otherwise the next
/// scan starts a new task for the jobs left.
struct DrainGuard {
    shared: Arc<EventShared>,
    armed: bool,
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut q = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.running = q.running.saturating_sub(1);
        if std::thread::panicking() && q.running == 0 {
            q.jobs.clear();
        }
    }
}

/// Runs batches of the event's queued scans until the queue is empty.
async fn drain(state: AppState, event_id: Uuid, shared: Arc<EventShared>) {
    let mut guard = DrainGuard {
        shared: shared.clone(),
        armed: true,
    };
    loop {
        // Let the scans whose requests are being read and verified right now join: each batch
        // answers a group of clients, and those come back while the next batch runs, so
        // without this the clients split into two groups of half the size, and every scan
        // pays for twice the statements. A yield costs a pass of the scheduler, not a timer.
        let mut queued = 0;
        for _ in 0..YIELDS {
            tokio::task::yield_now().await;
            let now_queued = shared
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .jobs
                .len();
            if now_queued == queued || now_queued >= MAX_BATCH {
                break;
            }
            queued = now_queued;
        }
        let batch = {
            let mut q = shared
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let batch = take_batch(&mut q.jobs);
            if batch.is_empty() {
                // Under the lock: a scan queued after this starts a new task.
                q.running = q.running.saturating_sub(1);
                guard.armed = false;
                return;
            }
            batch
        };
        let deferred = run_and_answer(&state, event_id, batch).await;
        if !deferred.is_empty() {
            let mut q = shared
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for job in deferred.into_iter().rev() {
                q.jobs.push_front(job);
            }
        }
    }
}

/// Takes up to [`MAX_BATCH`] jobs in arrival order, leaving a second scan of a ticket already
/// in the batch (and everything after the cap) queued, in order.
fn take_batch(jobs: &mut VecDeque<Job>) -> Vec<Job> {
    let mut batch = Vec::new();
    let mut rest = VecDeque::new();
    let mut serials = HashSet::new();
    while let Some(job) = jobs.pop_front() {
        let fits =
            batch.len() < MAX_BATCH && job.scan.check.serial.is_none_or(|s| serials.insert(s));
        if fits {
            batch.push(job);
        } else {
            rest.push_back(job);
        }
    }
    *jobs = rest;
    batch
}

/// Runs one batch and answers its jobs; returns the jobs deferred to the next batch. A batch
/// that fails as a whole is retried one scan at a time, so that one bad scan fails alone.
async fn run_and_answer(state: &AppState, event_id: Uuid, jobs: Vec<Job>) -> Vec<Job> {
    let scans: Vec<&Scan> = jobs.iter().map(|j| &j.scan).collect();
    match run_batch(state, event_id, &scans).await {
        Ok(results) => {
            let mut deferred = Vec::new();
            for (job, result) in jobs.into_iter().zip(results) {
                match result {
                    Some(r) => {
                        let _ = job.reply.send(r);
                    }
                    None => deferred.push(job),
                }
            }
            deferred
        }
        Err(e) if jobs.len() > 1 => {
            tracing::warn!(error = ?e, scans = jobs.len(), "redeem batch failed; retrying its scans one by one");
            for job in jobs {
                let result = match run_batch(state, event_id, &[&job.scan]).await {
                    Ok(mut r) => r
                        .pop()
                        .flatten()
                        .unwrap_or_else(|| Err(anyhow::anyhow!("a lone scan was deferred").into())),
                    Err(e) => Err(e),
                };
                let _ = job.reply.send(result);
            }
            Vec::new()
        }
        Err(e) => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
            Vec::new()
        }
    }
}

#[derive(FromRow)]
struct TicketLite {
    serial: i64,
    scopes: i64,
    valid_from: i64,
    valid_until: i64,
    status: String,
    name: Option<String>,
    attention: Option<String>,
}

#[derive(FromRow)]
struct CodeRow {
    short_code: i64,
    #[sqlx(flatten)]
    ticket: TicketLite,
}

/// A ticket and its holder, read under the ticket's lock.
#[derive(FromRow)]
struct StateRow {
    serial: i64,
    status: String,
    name: Option<String>,
    attention: Option<String>,
    /// The change log head (the same in every row).
    head: Option<i64>,
}

#[derive(FromRow)]
struct SeqRow {
    acked_seq: i64,
    #[sqlx(flatten)]
    gate: GateLite,
}

const TICKET_COLUMNS: &str =
    "t.serial, t.scopes, t.valid_from, t.valid_until, t.status, p.name, p.attention";

/// Tickets by short code (`$2`: the values).
async fn tickets_by_code(
    tx: &mut Tx,
    event_id: Uuid,
    codes: &[i64],
) -> anyhow::Result<HashMap<i64, TicketLite>> {
    if codes.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<CodeRow> = match tx {
        Tx::Postgres(t) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT t.short_code, {TICKET_COLUMNS}
                 FROM tickets t
                 JOIN participants p ON p.event_id = t.event_id AND p.id = t.participant_id
                 WHERE t.event_id = $1 AND t.short_code = ANY($2)"
            )))
            .bind(event_id)
            .bind(codes)
            .fetch_all(&mut **t)
            .await?
        }
        Tx::Sqlite(t) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT t.short_code, {TICKET_COLUMNS}
                 FROM tickets t
                 JOIN participants p ON p.event_id = t.event_id AND p.id = t.participant_id
                 WHERE t.event_id = $1 AND t.short_code IN (SELECT value FROM json_each($2))"
            )))
            .bind(event_id)
            .bind(serde_json::to_string(codes)?)
            .fetch_all(&mut **t)
            .await?
        }
    };
    Ok(rows.into_iter().map(|r| (r.short_code, r.ticket)).collect())
}

/// Tickets (with their holder) of `serials` that exist, and the change log head (saves a
/// round trip in the batch).
async fn ticket_states(
    tx: &mut Tx,
    event_id: Uuid,
    serials: &[i64],
) -> anyhow::Result<HashMap<i64, StateRow>> {
    if serials.is_empty() {
        return Ok(HashMap::new());
    }
    // Primary-key probes: `participants` is keyed by (event_id, id), and a ticket's holder is
    // a participant of the same event.
    const SELECT: &str = "SELECT t.serial, t.status, p.name, p.attention,
                (SELECT last_seq FROM change_counters WHERE event_id = $1) AS head
         FROM tickets t
         JOIN participants p ON p.event_id = t.event_id AND p.id = t.participant_id";
    let rows: Vec<StateRow> =
        match tx {
            Tx::Postgres(t) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT} WHERE t.event_id = $1 AND t.serial = ANY($2)"
                )))
                .bind(event_id)
                .bind(serials)
                .fetch_all(&mut **t)
                .await?
            }
            Tx::Sqlite(t) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SELECT} WHERE t.event_id = $1 AND t.serial IN (SELECT value FROM json_each($2))"
            )))
            .bind(event_id)
            .bind(serde_json::to_string(serials)?)
            .fetch_all(&mut **t)
            .await?,
        };
    Ok(rows.into_iter().map(|r| (r.serial, r)).collect())
}

/// A copy of a batch-wide error for each scan it hits.
fn each(e: &ApiError) -> ApiError {
    match e {
        ApiError::NotFound(what) => ApiError::NotFound(what),
        ApiError::Conflict(why) => ApiError::Conflict(why.clone()),
        ApiError::Forbidden => ApiError::Forbidden,
        other => ApiError::Internal(anyhow::anyhow!("{other}")),
    }
}

/// Decides and stores a batch of scans in one transaction. Per scan: `Some(answer)`, or `None`
/// when it must wait for the next batch (its code named a ticket another scan of the batch has).
/// Decisions use the gate rows the scans were checked against; if a gate turns out to have been
/// edited since (its row is re-read under its lock), the batch is rolled back and decided again
/// against the current row.
async fn run_batch(
    state: &AppState,
    event_id: Uuid,
    scans: &[&Scan],
) -> Result<Vec<Option<Result<RedeemOut, ApiError>>>, ApiError> {
    let mut current: HashMap<Uuid, GateLite> = HashMap::new();
    for _ in 0..3 {
        match try_batch(state, event_id, scans, &current).await? {
            Attempt::Done(results) => return Ok(results),
            Attempt::GateChanged(fresh) => current.extend(fresh),
        }
    }
    Err(anyhow::anyhow!("the gate kept changing while redeeming").into())
}

enum Attempt {
    Done(Vec<Option<Result<RedeemOut, ApiError>>>),
    /// Rolled back: decide again against these gate rows.
    GateChanged(HashMap<Uuid, GateLite>),
}

/// One attempt of [`run_batch`]. Locks are taken in the order every writer uses — tickets, then
/// gate rows, then the change counter — and the reads come before the gate lock, so a second
/// batch of the same gate does its reads while the first one commits.
async fn try_batch(
    state: &AppState,
    event_id: Uuid,
    scans: &[&Scan],
    current: &HashMap<Uuid, GateLite>,
) -> Result<Attempt, ApiError> {
    let mut results: Vec<Option<Result<RedeemOut, ApiError>>> =
        scans.iter().map(|_| None).collect();
    // The newest key ring and fold policy (a drain task can outlive many cache refreshes).
    let cache = match event_cache(state, event_id).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(Attempt::Done(
                scans.iter().map(|_| Some(Err(each(&e)))).collect(),
            ));
        }
    };
    // The gate row each scan is decided against.
    let gate_of = |s: &Scan| current.get(&s.gate_id).unwrap_or(&s.gate).clone();
    let checks: Vec<Check> = scans
        .iter()
        .map(|s| {
            let g = gate_of(s);
            if g == s.gate {
                s.check.clone()
            } else {
                check(
                    &cache,
                    &g,
                    s.requested,
                    &s.credential,
                    u64::try_from(s.now / 1000).unwrap_or(0),
                )
            }
        })
        .collect();
    let mut tx = state.db.begin().await?;

    // Typed codes name their ticket only now (a read; the ticket is locked below).
    let codes: Vec<i64> = checks
        .iter()
        .filter_map(|c| c.code)
        .map(|c| i64_of(c.value()))
        .collect::<Result<_, _>>()?;
    let by_code = tickets_by_code(&mut tx, event_id, &codes).await?;
    let mut coded: HashMap<usize, &TicketLite> = HashMap::new();
    let mut serials_seen = BTreeSet::new();
    let mut included = Vec::with_capacity(scans.len());
    for (i, c) in checks.iter().enumerate() {
        let serial = match c.code {
            Some(code) => match by_code.get(&i64_of(code.value())?) {
                Some(t) => {
                    coded.insert(i, t);
                    Some(u64::try_from(t.serial).map_err(anyhow::Error::from)?)
                }
                None => None,
            },
            None => c.serial,
        };
        // One scan per ticket per batch; a later one waits (answer `None`).
        if serial.is_none_or(|s| serials_seen.insert(s)) {
            included.push((i, serial));
        }
    }

    // Ticket locks, then everything the decisions and the fold read.
    let serials: Vec<u64> = included.iter().filter_map(|(_, s)| *s).collect();
    merge::lock_tickets(&mut tx, event_id, &serials).await?;
    let serial_keys: Vec<i64> = serials
        .iter()
        .map(|s| i64_of(*s))
        .collect::<Result<_, _>>()?;
    let states = ticket_states(&mut tx, event_id, &serial_keys).await?;
    // The head comes with any ticket row; without one, ask.
    let head = match states.values().next() {
        Some(r) => r.head.and_then(|h| u64::try_from(h).ok()).unwrap_or(0),
        None => store::changes::head_tx(&mut tx, event_id).await?,
    };
    let touched: BTreeSet<u64> = serials.iter().copied().collect();
    let stored = if touched.is_empty() {
        None
    } else {
        Some(merge::read_stored(&mut tx, event_id, &touched).await?)
    };

    // Decide.
    struct Decided {
        i: usize,
        serial: Option<u64>,
        decision: Decision,
        reason: Option<Reason>,
        name: Option<String>,
        attention: Option<String>,
    }
    let mut decided = Vec::with_capacity(included.len());
    for &(i, serial) in &included {
        let scan = scans[i];
        let c = &checks[i];
        let gate = gate_of(scan);
        let now_unix = u64::try_from(scan.now / 1000).unwrap_or(0);
        let mut verdict = c.verdict;
        let locked = serial
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|k| states.get(&k));
        // What the answer shows: a typed code's ticket as found by code, else the locked read.
        let (name, attention, status) = match (coded.get(&i), locked) {
            (Some(t), _) => (t.name.clone(), t.attention.clone(), Some(t.status.as_str())),
            (None, Some(r)) => (r.name.clone(), r.attention.clone(), Some(r.status.as_str())),
            (None, None) => (None, None, None),
        };
        if c.code.is_some() {
            match coded.get(&i) {
                Some(t) if c.entering => {
                    verdict = check_window(
                        u32::try_from(t.valid_from).unwrap_or(0),
                        u32::try_from(t.valid_until).unwrap_or(u32::MAX),
                        now_unix,
                        60,
                    )
                    .and_then(|()| check_zone(u16::try_from(t.scopes).unwrap_or(0), c.zone_mask));
                }
                Some(_) => {}
                None => verdict = Err(Reason::UnknownCode),
            }
        }
        if serial.is_some() && verdict.is_ok() && c.entering {
            if status == Some("revoked") {
                verdict = Err(Reason::Revoked);
            } else if !cache.policy.allow_multiple_checkins {
                let (inside, entries) = serial
                    .and_then(|s| stored.as_ref().and_then(|st| st.presence(s)))
                    .unwrap_or((false, 0));
                if inside || (!gate.allow_reentry && entries > 0) {
                    verdict = Err(Reason::AlreadyInside);
                }
            }
        }
        let (decision, reason) = match verdict {
            Ok(()) => (Decision::Admit, None),
            Err(r) => (Decision::Reject, Some(r)),
        };
        decided.push(Decided {
            i,
            serial,
            decision,
            reason,
            name,
            attention,
        });
    }

    // Per gate, in id order: the gate row's lock, the seqs, and the row as it is now.
    let mut by_gate: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    for (k, d) in decided.iter().enumerate() {
        by_gate.entry(scans[d.i].gate_id).or_default().push(k);
    }
    let mut seqs: HashMap<usize, i64> = HashMap::new();
    let mut changed: HashMap<Uuid, GateLite> = HashMap::new();
    let mut refused: HashSet<usize> = HashSet::new();
    for (gate_id, members) in &by_gate {
        let n = i64::try_from(members.len()).map_err(anyhow::Error::from)?;
        let row: Option<SeqRow> = tx_run!(&mut tx, c => {
            sqlx::query_as(
                "UPDATE gates SET acked_seq = acked_seq + $3
                 WHERE id = $1 AND event_id = $2 AND is_active
                 RETURNING acked_seq, event_id, direction, zone_mask, allow_reentry, is_active",
            )
            .bind(gate_id)
            .bind(event_id)
            .bind(n)
            .fetch_optional(&mut *c)
            .await?
        });
        let Some(row) = row else {
            // Deactivated or deleted since the cached read.
            let exists: Option<bool> = tx_run!(&mut tx, c => {
                sqlx::query_scalar("SELECT is_active FROM gates WHERE id = $1 AND event_id = $2")
                    .bind(gate_id)
                    .bind(event_id)
                    .fetch_optional(&mut *c)
                    .await?
            });
            if let Ok(mut m) = cache.shared.gates.lock() {
                m.remove(gate_id);
            }
            for &k in members {
                let i = decided[k].i;
                results[i] = Some(Err(match exists {
                    Some(_) => ApiError::Conflict("the gate is deactivated".into()),
                    None => ApiError::NotFound("gate"),
                }));
                refused.insert(k);
            }
            continue;
        };
        if let Ok(mut m) = cache.shared.gates.lock() {
            m.insert(*gate_id, (row.gate.clone(), Instant::now()));
        }
        if members
            .iter()
            .any(|&k| gate_of(scans[decided[k].i]) != row.gate)
        {
            changed.insert(*gate_id, row.gate);
            continue;
        }
        for (j, &k) in members.iter().enumerate() {
            seqs.insert(
                k,
                row.acked_seq - n + 1 + i64::try_from(j).map_err(anyhow::Error::from)?,
            );
        }
    }
    if !changed.is_empty() {
        tx.rollback().await?;
        return Ok(Attempt::GateChanged(changed));
    }

    // The check-ins, folded with what is stored, then written.
    let mut rows_by_gate: BTreeMap<Uuid, Vec<Row>> = BTreeMap::new();
    let mut pending = Vec::new();
    let mut outs: Vec<(usize, RedeemOut)> = Vec::with_capacity(decided.len());
    for (k, d) in decided.iter().enumerate() {
        if refused.contains(&k) {
            continue;
        }
        let scan = scans[d.i];
        let c = &checks[d.i];
        let seq = seqs
            .get(&k)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no seq for a scan of the batch"))?;
        let checkin = Checkin {
            id: Uuid::now_v7(),
            seq: u64::try_from(seq).map_err(anyhow::Error::from)?,
            ticket_serial: d.serial,
            code: if d.serial.is_none() {
                Some(scan.credential.trim().chars().take(64).collect())
            } else {
                None
            },
            method: c.method,
            direction: c.direction,
            decision: d.decision,
            reason: d.reason,
            hlc: state.hlc_now(),
            scanned_at: store::ms_to_time(scan.now),
            replica_cursor: head,
            operator_override: None,
            undoes: None,
        };
        if let Some(s) = d.serial {
            pending.push((s, merge::scan_event(scan.gate_id, &checkin)));
        }
        outs.push((
            d.i,
            RedeemOut {
                decision: d.decision,
                reason: d.reason,
                ticket_serial: d.serial,
                name: d.name.clone(),
                attention: d.attention.clone(),
                checkin_id: checkin.id,
                direction: c.direction,
            },
        ));
        rows_by_gate.entry(scan.gate_id).or_default().push(Row {
            checkin,
            invalid: None,
        });
    }

    let now = now_ms();
    let mut live = Vec::new();
    let mut changes = Vec::new();
    if let Some(stored) = stored {
        // Tickets of scans refused above are folded too: with nothing new, they do not change.
        let refolded = merge::refold_stored(
            &mut tx,
            event_id,
            &touched,
            stored,
            &pending,
            cache.policy,
            now,
        )
        .await?;
        live.extend(refolded.live);
        for (gate_id, rows) in &rows_by_gate {
            for r in rows {
                let c = &r.checkin;
                if c.decision == Decision::Admit
                    && let Some(s) = c.ticket_serial
                {
                    live.push(Live::Admission {
                        event_id,
                        ticket_serial: s,
                        gate_id: *gate_id,
                        checkin_id: c.id,
                        direction: c.direction,
                        inside: refolded.states.get(&s).is_some_and(|st| st.inside),
                    });
                }
            }
        }
        changes = refolded.changes;
    }
    for (gate_id, rows) in &rows_by_gate {
        merge::insert_checkins(&mut tx, event_id, *gate_id, rows, now).await?;
    }
    let staged = state.notifier.stage(&mut tx, live).await?;
    // Last before the commit: concurrent writers of the event wait on the change counter from
    // here on. `append` notifies long-polling gates itself.
    store::changes::append(&mut tx, event_id, &changes).await?;
    tx.commit().await?;
    state.notifier.committed(staged);
    for (i, out) in outs {
        results[i] = Some(Ok(out));
    }
    Ok(Attempt::Done(results))
}
