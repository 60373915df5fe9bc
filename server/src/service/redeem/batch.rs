//! The redeem's group commit: one task per event takes every scan queued for it
//! (`mpsc::Receiver::recv_many`) and decides and stores them in **one** transaction with
//! set-based statements — the same merge as a push — then answers each request.
//!
//! Every admission appends a presence change, and the change log's per-event counter row is
//! locked from that append until the commit has been flushed (`store::changes`), as is the
//! gate row that hands out the check-in's seq. Redeems of one event are therefore serialised
//! through a durable commit whatever we do; one transaction per scan tops out at a few hundred
//! scans/s. Under load a transaction carries many scans; alone, a scan is a batch of one.
//! A batch never holds two scans of one ticket: the later one waits for the next batch, so it
//! sees the first one's admission exactly as if the two had run one after the other.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use std::time::Duration;
use sync_protocol::ShortCode;
use sync_protocol::decide::{
    Credential, GatePolicy, Presence, TicketFacts, Verdict, check_event_open, check_holder,
    check_row, check_signed, direction_for, parse_text, settle,
};
use sync_protocol::wire::{
    Checkin, Decision, Direction, GateDirection, Method, Reason, TicketStatus,
};

use moka::sync::Cache;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::RedeemOut;
use super::cache::EventView;
use crate::domain::Error;
use crate::domain::live::Live;
use crate::service::AppState;
use crate::service::uow::UnitOfWork;
use crate::store::checkins::{self, Row, i64_of};
use crate::store::redeem::{GateLite, TicketLite};
use crate::store::{self, now_ms};

/// Most scans decided in one transaction: bounds the time a batch holds its locks, hence the
/// wait of the scans queued behind it.
pub const MAX_BATCH: usize = 64;

/// Most scheduler passes a drain task waits for more scans before it starts a batch.
const YIELDS: usize = 4;

/// Scans waiting for their event's drain task.
const QUEUE_DEPTH: usize = 4_096;

/// The storage-free part of a decision, made against one version of the gate row.
#[derive(Debug, Clone)]
pub struct Check {
    pub direction: Direction,
    /// Whether the gate lets people through that way.
    pub allowed: Result<(), Reason>,
    pub policy: GatePolicy,
    pub serial: Option<u64>,
    pub method: Method,
    pub verdict: Result<(), Reason>,
    pub code: Option<ShortCode>,
    /// The lookup key of a shop barcode ([`sync_protocol::barcode`]): neither `U1:` nor a short
    /// code, but perhaps the ticket shop's own credential.
    pub barcode: Option<String>,
}

/// The storage-free checks of the one admission rule (`sync_protocol::decide`): direction,
/// then the credential (a signed ticket here; a short code's row once the batch has read it).
pub fn check(
    view: &EventView,
    gate: &GateLite,
    requested: Option<Direction>,
    credential: &str,
    now_unix: u64,
) -> Check {
    // The column has a CHECK constraint; an unreadable value would be a two-way gate.
    let gate_direction = gate.direction.parse::<GateDirection>().unwrap_or_default();
    let (direction, allowed) = direction_for(gate_direction, requested);
    // A closed event admits nobody new, an archived one takes no scans (the gate's rule too).
    let allowed = check_event_open(view.phase, direction).and(allowed);
    let policy = GatePolicy::new(
        view.event_tag,
        u16::try_from(gate.zone_mask).unwrap_or(0),
        now_unix,
    );
    let mut barcode = None;
    let (serial, method, verdict, code) = match parse_text(credential) {
        Ok(Credential::Ticket(t)) => (
            Some(t.fields.serial),
            Method::Qr,
            check_signed(&t, &view.ring, &policy, direction),
            None,
        ),
        Ok(Credential::Code(c)) => (None, Method::Code, Ok(()), Some(c)),
        Ok(Credential::Ble(_)) => (None, Method::Code, Err(Reason::Malformed), None),
        Err(reason) => {
            barcode = sync_protocol::barcode::normalize(credential)
                .zip(view.barcode_key)
                .map(|(text, key)| sync_protocol::barcode::lookup_key(&key, text));
            (None, Method::Code, Err(reason), None)
        }
    };
    Check {
        direction,
        allowed,
        policy,
        serial,
        method,
        verdict,
        code,
        barcode,
    }
}

/// A ticket row as the rule reads it.
fn facts(t: &TicketLite) -> TicketFacts {
    TicketFacts {
        status: t.status.parse().unwrap_or(TicketStatus::Revoked),
        valid_from: u32::try_from(t.valid_from).unwrap_or(0),
        valid_until: u32::try_from(t.valid_until).unwrap_or(u32::MAX),
        scopes: u16::try_from(t.scopes).unwrap_or(0),
    }
}

/// One queued scan.
pub struct Scan {
    pub gate_id: Uuid,
    /// The gate row [`Scan::check`] was made against.
    pub gate: GateLite,
    pub requested: Option<Direction>,
    pub credential: String,
    pub now: i64,
    pub check: Check,
}

pub struct Job {
    pub scan: Scan,
    pub reply: oneshot::Sender<Result<RedeemOut, Error>>,
}

/// Each event's batch queue; its drain task ends when the entry is evicted (idle for a minute)
/// or the server stops.
#[derive(Debug)]
pub struct Queues(Cache<Uuid, mpsc::Sender<Job>>);

impl Default for Queues {
    fn default() -> Self {
        Self(
            Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        )
    }
}

/// Queues a scan on its event's drain task (started on first use) and waits for the answer.
pub async fn submit(state: &AppState, event_id: Uuid, scan: Scan) -> Result<RedeemOut, Error> {
    let (reply, answer) = oneshot::channel();
    let mut job = Job { scan, reply };
    // A queue whose task has ended (the server is stopping, or the task died) refuses the job:
    // forget it and start another once.
    for _ in 0..2 {
        let queue = state.redeem_queues.0.get_with(event_id, || {
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            tokio::spawn(drain(state.clone(), event_id, rx));
            tx
        });
        match queue.send(job).await {
            Ok(()) => {
                return answer
                    .await
                    .map_err(|_| anyhow::anyhow!("the redeem batch was abandoned"))?;
            }
            Err(mpsc::error::SendError(back)) => {
                state.redeem_queues.0.invalidate(&event_id);
                job = back;
            }
        }
    }
    Err(Error::Internal(anyhow::anyhow!(
        "the redeem queue of the event is not running"
    )))
}

/// Runs batches of the event's queued scans until its queue is dropped (evicted when idle) or
/// the server stops.
async fn drain(state: AppState, event_id: Uuid, mut rx: mpsc::Receiver<Job>) {
    let mut pending: VecDeque<Job> = VecDeque::new();
    let mut incoming = Vec::with_capacity(MAX_BATCH);
    loop {
        if pending.is_empty() {
            tokio::select! {
                n = rx.recv_many(&mut incoming, MAX_BATCH) => {
                    if n == 0 {
                        return;
                    }
                }
                () = state.stopping.cancelled() => return,
            }
            pending.extend(incoming.drain(..));
        }
        // Let the scans whose requests are being read and verified right now join: each batch
        // answers a group of clients, and those come back while the next batch runs, so
        // without this the clients split into two groups of half the size, and every scan
        // pays for twice the statements. A yield costs a pass of the scheduler, not a timer.
        // As many passes as new scans keep arriving (at least two: the first is compared with
        // an empty queue), up to [`YIELDS`].
        let mut queued = 0;
        for _ in 0..YIELDS {
            tokio::task::yield_now().await;
            while pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => pending.push_back(job),
                    Err(_) => break,
                }
            }
            if pending.len() == queued || pending.len() >= MAX_BATCH {
                break;
            }
            queued = pending.len();
        }
        let batch = take_batch(&mut pending);
        let deferred = run_and_answer(&state, event_id, batch).await;
        for job in deferred.into_iter().rev() {
            pending.push_front(job);
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

/// Decides and stores a batch of scans in one transaction. Per scan: `Some(answer)`, or `None`
/// when it must wait for the next batch (its code named a ticket another scan of the batch has).
/// Decisions use the gate rows the scans were checked against; if a gate turns out to have been
/// edited since (its row is re-read under its lock), the batch is rolled back and decided again
/// against the current row.
async fn run_batch(
    state: &AppState,
    event_id: Uuid,
    scans: &[&Scan],
) -> Result<Vec<Option<Result<RedeemOut, Error>>>, Error> {
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
    Done(Vec<Option<Result<RedeemOut, Error>>>),
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
) -> Result<Attempt, Error> {
    let mut results: Vec<Option<Result<RedeemOut, Error>>> = scans.iter().map(|_| None).collect();
    // The newest key ring and fold policy (a drain task can outlive many cache refreshes).
    let view = match state.redeem.event(&state.db, &state.master, event_id).await {
        Ok(v) => v,
        Err(e) => {
            return Ok(Attempt::Done(
                scans.iter().map(|_| Some(Err(e.each()))).collect(),
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
                    &view,
                    &g,
                    s.requested,
                    &s.credential,
                    u64::try_from(s.now / 1000).unwrap_or(0),
                )
            }
        })
        .collect();
    let personal = state.master.personal();
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let tx = uow.tx();

    // Typed codes name their ticket only now (a read; the ticket is locked below).
    let codes: Vec<i64> = checks
        .iter()
        .filter_map(|c| c.code)
        .map(|c| i64_of(c.value()))
        .collect::<Result<_, _>>()?;
    let by_code = store::redeem::tickets_by_code(tx, personal, event_id, &codes).await?;
    let barcodes: Vec<String> = checks.iter().filter_map(|c| c.barcode.clone()).collect();
    let by_barcode = store::redeem::tickets_by_barcode(tx, personal, event_id, &barcodes).await?;
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
            None => match c.barcode.as_ref().and_then(|k| by_barcode.get(k)) {
                Some(t) => {
                    coded.insert(i, t);
                    Some(u64::try_from(t.serial).map_err(anyhow::Error::from)?)
                }
                None => c.serial,
            },
        };
        // One scan per ticket per batch; a later one waits (answer `None`).
        if serial.is_none_or(|s| serials_seen.insert(s)) {
            included.push((i, serial));
        }
    }

    // Ticket locks, then everything the decisions and the fold read.
    let serials: Vec<u64> = included.iter().filter_map(|(_, s)| *s).collect();
    checkins::lock_tickets(tx, event_id, &serials).await?;
    let serial_keys: Vec<i64> = serials
        .iter()
        .map(|s| i64_of(*s))
        .collect::<Result<_, _>>()?;
    let states = store::redeem::ticket_states(tx, personal, event_id, &serial_keys).await?;
    // The head comes with any ticket row; without one, ask.
    let head = match states.values().next() {
        Some(r) => r.head.and_then(|h| u64::try_from(h).ok()).unwrap_or(0),
        None => store::changes::head_tx(tx, event_id).await?,
    };
    // Scans stored while the event is a draft are tests: kept, never folded. A cached draft is
    // read again here, so the first scans after going live count at once.
    let test = sync_protocol::decide::is_test_scan(view.phase)
        && sync_protocol::decide::is_test_scan(checkins::phase(tx, event_id).await?);
    let touched: BTreeSet<u64> = if test {
        BTreeSet::new()
    } else {
        serials.iter().copied().collect()
    };
    let stored = if touched.is_empty() {
        None
    } else {
        Some(checkins::read_stored(tx, event_id, &touched).await?)
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
            verdict = match coded.get(&i) {
                Some(t) => check_row(&facts(t), &c.policy, c.direction),
                None => Err(Reason::UnknownCode),
            };
        } else if c.barcode.is_some()
            && let Some(t) = coded.get(&i)
        {
            verdict = check_row(&facts(t), &c.policy, c.direction);
        }
        verdict = verdict.and(c.allowed);
        if serial.is_some() && verdict.is_ok() {
            let revoked = status == Some(TicketStatus::Revoked.as_str());
            let presence = serial
                .and_then(|s| stored.as_ref().and_then(|st| st.presence(s)))
                .map(|(inside, entries)| Presence {
                    inside,
                    entries: u32::try_from(entries).unwrap_or(u32::MAX),
                })
                .unwrap_or_default();
            verdict = check_holder(c.direction, revoked, presence, view.entry(&gate));
        }
        let Verdict {
            decision, reason, ..
        } = settle(verdict, None);
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
        let row = store::redeem::take_seqs(tx, event_id, *gate_id, n).await?;
        let Some(row) = row else {
            // Deactivated or deleted since the cached read.
            let exists = store::redeem::gate_active(tx, event_id, *gate_id).await?;
            state.redeem.refresh_gate(*gate_id, None);
            for &k in members {
                let i = decided[k].i;
                results[i] = Some(Err(match exists {
                    Some(_) => Error::Conflict("the gate is deactivated".into()),
                    None => Error::NotFound("gate"),
                }));
                refused.insert(k);
            }
            continue;
        };
        state.redeem.refresh_gate(*gate_id, Some(row.gate.clone()));
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
        uow.rollback().await?;
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
            pending.push((s, checkins::scan_event(scan.gate_id, &checkin)));
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
            test,
        });
    }

    let now = now_ms();
    let mut live = Vec::new();
    let mut changes = Vec::new();
    if let Some(stored) = stored {
        // Tickets of scans refused above are folded too: with nothing new, they do not change.
        let refolded = checkins::refold_stored(
            tx,
            event_id,
            &touched,
            stored,
            &pending,
            sync_protocol::merge::FoldPolicy {
                allow_multiple_checkins: view.allow_multiple_checkins,
                daily_checkout: view.daily_checkout,
                utc_offset_minutes: view.utc_offset_minutes,
            },
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
    let mut merged = 0;
    for (gate_id, rows) in &rows_by_gate {
        checkins::insert_checkins(uow.tx(), event_id, *gate_id, rows, now).await?;
        merged += rows.len();
    }
    for (gate_id, rows) in &rows_by_gate {
        crate::service::webhooks::record_checkins(
            &mut uow,
            event_id,
            *gate_id,
            rows.iter().map(|r| &r.checkin),
            "redeem",
        )
        .await?;
    }
    uow.live(live);
    uow.changes(event_id, changes)?;
    uow.commit(&state.notifier).await?;
    metrics::counter!("usher_checkins_merged_total").increment(merged as u64);
    for (gate_id, rows) in &rows_by_gate {
        if !test {
            crate::service::push::count_movements(*gate_id, rows.iter().map(|r| &r.checkin));
        }
    }
    for (_, out) in &outs {
        metrics::counter!("usher_redeems_total", "result" => out.decision.as_str(),
            "reason" => out.reason.map_or("", Reason::as_str))
        .increment(1);
    }
    for (i, out) in outs {
        results[i] = Some(Ok(out));
    }
    Ok(Attempt::Done(results))
}
