//! The gate decision (DESIGN §3): credential → parse → event → signature → validity window →
//! zone → direction → revocation → presence → ADMIT / REJECT(reason) → outbox row committed
//! with `synchronous=FULL` → only then is the result returned to be shown.
//!
//! Everything is local: the replica is the only input, so the gate decides the same way with or
//! without a network. The rule itself is `sync_protocol::decide`, shared with the server's
//! online redeem, so a ticket gets the same decision and reason everywhere; this module only
//! gathers its inputs from the replica, in two phases: the storage-free checks before the write
//! lock ([`Gate::prepare`]), revocation and presence under it (`record`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{TransactionBehavior, params};
use serde::Serialize;
use sync_protocol::barcode;
use sync_protocol::ble::{BleCredential, BleError, slot_at};
use sync_protocol::days::{check_day, local_day};
use sync_protocol::decide::{
    Credential, EntryPolicy, GatePolicy, Presence, Verdict, check_event_open, check_holder,
    check_row, check_signed, direction_for, parse_text, settle,
};
use sync_protocol::wire::{Checkin, Decision, Direction, GateConfig, Method, Reason, TicketStatus};
use sync_protocol::zones::{check_capacity, defined_zone_mask, gate_zones, is_transfer};
use sync_protocol::{Hlc, HlcClock, KeyRing};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::replica::{self, Enrollment, Replica, ReplicaError, TicketRow, i64_from};
use crate::telemetry;

/// Errors that prevent a decision from being made at all (as opposed to a REJECT).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("this gate has no configuration yet: run `gate-agent sync --once` while online")]
    NoConfig,
    #[error("this gate was deactivated by the organizer; it no longer admits anyone")]
    Deactivated,
    #[error("check-in {0} was not made at this gate")]
    UnknownCheckin(Uuid),
    #[error("check-in {0} cannot be undone: {1}")]
    CannotUndo(Uuid, &'static str),
    #[error("an override needs a ticket: look the person up by name or code first")]
    OverrideWithoutTicket,
    #[error("the decision could not be recorded (nothing was admitted): {0}")]
    Commit(String),
    /// The replica's disk is full: SQLite refused the write, the transaction rolled back and
    /// the replica is intact. Scanning works again as soon as there is space.
    #[error(
        "this gate's disk is full: the scan was not recorded and nobody was admitted. Free space \
         on the gate's disk (or call support); scanning resumes by itself"
    )]
    DiskFull,
}

impl GateError {
    /// Whether the replica's disk (or its size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        let sqlite = match self {
            GateError::DiskFull => return true,
            GateError::Sqlite(e) | GateError::Replica(ReplicaError::Sqlite(e)) => e,
            _ => return false,
        };
        sqlite.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
    }
}

/// What was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Scanned or typed text: a `U1:` ticket or a short code.
    Text(String),
    /// A ticket picked by the operator from a manual lookup.
    Serial(u64),
    /// BLE service data (RSSI filtering happened in the hardware layer).
    Ble(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRequest {
    pub subject: Subject,
    /// The source's method; `None` derives it from the subject.
    pub method: Option<Method>,
    /// `None` uses the gate's direction (entry for two-way gates).
    pub direction: Option<Direction>,
    /// A supervisor's reason to admit despite a rejection.
    pub operator_override: Option<String>,
}

impl ScanRequest {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            subject: Subject::Text(text.into()),
            method: None,
            direction: None,
            operator_override: None,
        }
    }
}

/// The decision as shown to the operator and printed by the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanOutcome {
    pub id: Uuid,
    pub seq: u64,
    pub decision: Decision,
    pub reason: Option<Reason>,
    pub ticket_serial: Option<u64>,
    pub name: Option<String>,
    pub attention: Option<String>,
    pub direction: Direction,
    pub method: Method,
    pub hlc: Hlc,
    #[serde(with = "time::serde::rfc3339")]
    pub scanned_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_override: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undoes: Option<Uuid>,
    /// For a holder refused as already inside (or already used): when and where the entry that
    /// refuses them was made, as this gate knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<LastSeen>,
    /// Shown beside an admission: the zone reached its soft threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Set on a zone transfer: the exit recorded before this entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_exit: Option<Uuid>,
    /// The verified `U1:` text that was scanned, for the badge's QR; never serialized (the
    /// decision log and the screen's stream do not carry credentials).
    #[serde(skip)]
    pub presented: Option<String>,
}

pub use crate::replica::LastSeen;

/// Test and diagnostic knob: runs this gate's wall clock that many milliseconds ahead of the
/// machine's (negative: behind), as on a kiosk whose clock is off. Read once per process; unset
/// or unreadable means 0. Not for production use: a real gate keeps its clock by NTP.
pub const CLOCK_OFFSET_ENV: &str = "USHER_CLOCK_OFFSET_MS";

/// The [`CLOCK_OFFSET_ENV`] offset of this process, in ms.
pub fn clock_offset_ms() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var(CLOCK_OFFSET_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0)
    })
}

/// Current wall time in unix milliseconds (shifted by [`clock_offset_ms`]).
pub fn wall_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    u64::try_from(now.saturating_add(clock_offset_ms())).unwrap_or(0)
}

struct Cache {
    cursor: u64,
    keys: KeyRing,
    config: Option<GateConfig>,
    /// Every gate of the event with the defined zones it admits into.
    zone_gates: Vec<(Uuid, u16)>,
}

/// The decision engine of one gate. Owns one replica connection.
pub struct Gate {
    replica: Replica,
    enrollment: Enrollment,
    cache: Option<Cache>,
    /// How long after a scan the operator may undo it.
    pub undo_window: Duration,
    clock: fn() -> u64,
}

/// The subject resolved against the replica.
struct Resolved {
    method: Method,
    serial: Option<u64>,
    code: Option<String>,
    row: Option<TicketRow>,
    verdict: Result<(), Reason>,
    /// Whether the ticket row may be shown (name, attention): the credential verified, or the
    /// ticket was found by a lookup the operator made (short code, manual pick). A forged or
    /// foreign QR names a serial but must not show who holds it.
    trusted: bool,
    /// The `U1:` text, when that is what was presented.
    presented: Option<String>,
}

impl Gate {
    pub fn new(replica: Replica) -> Result<Self, GateError> {
        let enrollment = replica.require_enrollment()?;
        Ok(Self {
            replica: replica.for_decisions()?,
            enrollment,
            cache: None,
            undo_window: Duration::from_secs(5 * 60),
            clock: wall_ms,
        })
    }

    /// Replaces the wall clock (tests).
    pub fn with_clock(mut self, clock: fn() -> u64) -> Self {
        self.clock = clock;
        self
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    pub fn enrollment(&self) -> &Enrollment {
        &self.enrollment
    }

    /// Reloads keys and configuration when the replica moved since the last decision (another
    /// connection, e.g. the sync worker, applied changes).
    fn refresh(&mut self) -> Result<(), GateError> {
        let cursor = self.replica.replica_cursor()?;
        if self.cache.as_ref().is_some_and(|c| c.cursor == cursor) {
            return Ok(());
        }
        let config = self.replica.gate_config(self.enrollment.gate_id)?;
        let zones = config.as_ref().map(|c| c.zones.as_slice()).unwrap_or(&[]);
        let zone_gates = if zones.is_empty() {
            Vec::new()
        } else {
            self.replica
                .all_configs()?
                .iter()
                .map(|g| (g.gate_id, defined_zone_mask(g.zone_mask, zones)))
                .filter(|(_, m)| *m != 0)
                .collect()
        };
        self.cache = Some(Cache {
            cursor,
            keys: self.replica.key_ring()?,
            config,
            zone_gates,
        });
        Ok(())
    }

    pub fn config(&mut self) -> Result<GateConfig, GateError> {
        self.refresh()?;
        self.cache
            .as_ref()
            .and_then(|c| c.config.clone())
            .ok_or(GateError::NoConfig)
    }

    /// The credential, storage-free (`sync_protocol::decide::check_signed` / `check_row`),
    /// for a person moving `direction`.
    fn resolve(
        &self,
        req: &ScanRequest,
        direction: Direction,
        cfg: &GateConfig,
        keys: &KeyRing,
        now_ms: u64,
    ) -> Result<Resolved, GateError> {
        let now_unix = now_ms / 1000;
        let policy = GatePolicy::new(cfg.event_tag, cfg.zone_mask, now_unix);
        // For a ticket found by its row (code, manual pick, BLE), the window and zone are the
        // replica's.
        let row_checks = |row: &TicketRow| check_row(&row.facts(), &policy, direction);
        let mut out = Resolved {
            method: req.method.unwrap_or(Method::Qr),
            serial: None,
            code: None,
            row: None,
            verdict: Ok(()),
            trusted: false,
            presented: None,
        };
        match &req.subject {
            Subject::Text(text) => match parse_text(text) {
                Ok(Credential::Ticket(t)) => {
                    out.presented = Some(text.trim().to_owned());
                    out.serial = Some(t.fields.serial);
                    out.row = self.replica.ticket(t.fields.serial)?;
                    out.verdict = check_signed(&t, keys, &policy, direction);
                    // Authenticity is checked first: any other outcome means it held.
                    out.trusted = !matches!(
                        out.verdict,
                        Err(Reason::InvalidSignature | Reason::UnknownKey | Reason::WrongEvent)
                    );
                }
                Ok(Credential::Code(code)) => {
                    out.method = req.method.unwrap_or(Method::Code);
                    let compact = code.compact();
                    out.row = self.replica.ticket_by_code(&compact)?;
                    match &out.row {
                        Some(row) => {
                            out.serial = Some(row.serial);
                            out.verdict = row_checks(row);
                            out.trusted = true;
                        }
                        None => {
                            out.code = Some(compact);
                            out.verdict = Err(Reason::UnknownCode);
                        }
                    }
                }
                Ok(Credential::Ble(_)) => out.verdict = Err(Reason::Malformed),
                Err(reason) => {
                    out.method = req.method.unwrap_or(Method::Code);
                    // Not ours: perhaps the ticket shop's own barcode, looked up by its key.
                    let barcode = match (barcode::normalize(text), cfg.barcode_key.as_deref()) {
                        (Some(code), Some(key)) => barcode_event_key(key)
                            .map(|key| barcode::lookup_key(&key, code))
                            .map(|lookup| self.replica.ticket_by_barcode(&lookup))
                            .transpose()?
                            .flatten(),
                        _ => None,
                    };
                    match barcode {
                        Some(row) => {
                            out.serial = Some(row.serial);
                            out.verdict = row_checks(&row);
                            out.trusted = true;
                            out.row = Some(row);
                        }
                        None => {
                            out.code = Some(text.trim().chars().take(64).collect());
                            out.verdict = Err(reason);
                        }
                    }
                }
            },
            Subject::Serial(serial) => {
                out.method = req.method.unwrap_or(Method::Manual);
                out.row = self.replica.ticket(*serial)?;
                match &out.row {
                    Some(row) => {
                        out.serial = Some(row.serial);
                        out.verdict = row_checks(row);
                        out.trusted = true;
                    }
                    None => out.verdict = Err(Reason::UnknownCode),
                }
            }
            Subject::Ble(data) => {
                out.method = req.method.unwrap_or(Method::Ble);
                match BleCredential::decode(data) {
                    Err(_) => out.verdict = Err(Reason::Malformed),
                    Ok(cred) => {
                        out.row = self.replica.ticket(cred.serial)?;
                        let key = out
                            .row
                            .as_ref()
                            .and_then(|r| r.ble_key.as_deref())
                            .and_then(|k| <[u8; 32]>::try_from(k).ok());
                        out.verdict = match key {
                            None => Err(Reason::UnknownCode),
                            Some(key) => {
                                out.serial = Some(cred.serial);
                                match cred
                                    .verify(&sync_protocol::ble::BleKey(key), slot_at(now_unix))
                                {
                                    Ok(()) => {
                                        out.trusted = true;
                                        out.row.as_ref().map_or(Ok(()), row_checks)
                                    }
                                    Err(BleError::StaleSlot { .. }) => Err(Reason::Expired),
                                    Err(_) => Err(Reason::InvalidSignature),
                                }
                            }
                        };
                    }
                }
            }
        }
        Ok(out)
    }

    /// Decides one credential and records it durably. Returns only after the outbox row is
    /// committed.
    pub fn scan(&mut self, req: &ScanRequest) -> Result<ScanOutcome, GateError> {
        self.scan_batch(std::slice::from_ref(req))
            .pop()
            .unwrap_or(Err(GateError::NoConfig))
    }

    /// Decides several credentials in order and records them in **one** durable commit (group
    /// commit): what several inputs presented at the same moment costs one fsync, not one each.
    /// Each decision sees the ones before it (a ticket presented twice in a batch is admitted
    /// once). Nothing is returned before the commit; if it fails, every decision fails.
    pub fn scan_batch(&mut self, reqs: &[ScanRequest]) -> Vec<Result<ScanOutcome, GateError>> {
        let out = self.decide_batch(reqs);
        for r in &out {
            match r {
                Ok(o) => telemetry::decision(o.decision, o.reason),
                Err(_) => telemetry::decision_error(),
            }
        }
        out
    }

    fn decide_batch(&mut self, reqs: &[ScanRequest]) -> Vec<Result<ScanOutcome, GateError>> {
        let prepared: Vec<Result<Prepared, GateError>> =
            reqs.iter().map(|r| self.prepare(r)).collect();
        let gate_id = self.enrollment.gate_id;
        let cfg = match self.cache.as_ref().and_then(|c| c.config.clone()) {
            Some(c) => c,
            None => return reqs.iter().map(|_| Err(GateError::NoConfig)).collect(),
        };
        let zone_gates = self
            .cache
            .as_ref()
            .map(|c| c.zone_gates.clone())
            .unwrap_or_default();
        let committed = (|| -> Result<Vec<Result<ScanOutcome, GateError>>, GateError> {
            let tx = self
                .replica
                .conn()
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(prepared.len());
            for p in prepared {
                out.push(match p {
                    Ok(p) => Ok(record(&tx, p, gate_id, &cfg, &zone_gates)?),
                    Err(e) => Err(e),
                });
            }
            tx.commit()?;
            Ok(out)
        })();
        match committed {
            Ok(out) => out,
            Err(e) if e.is_disk_full() => {
                tracing::error!(error = %e, "disk full: decision not recorded");
                reqs.iter().map(|_| Err(GateError::DiskFull)).collect()
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "decision commit failed; nothing was recorded");
                reqs.iter()
                    .map(|_| Err(GateError::Commit(msg.clone())))
                    .collect()
            }
        }
    }

    /// Everything before the write lock: configuration, direction, parse, signature, window,
    /// zone.
    fn prepare(&mut self, req: &ScanRequest) -> Result<Prepared, GateError> {
        self.refresh()?;
        let cache = self.cache.as_ref().ok_or(GateError::NoConfig)?;
        let cfg = cache.config.as_ref().ok_or(GateError::NoConfig)?;
        if !cfg.is_active || self.replica.meta("wiped")?.is_some() {
            return Err(GateError::Deactivated);
        }
        let (direction, allowed) = direction_for(cfg.direction, req.direction);
        let now_ms = (self.clock)();
        let mut resolved = self.resolve(req, direction, cfg, &cache.keys, now_ms)?;
        // The credential's own reason first, then the gate's (as `sync_protocol::decide`).
        // The event's lifecycle sits between them, as in `sync_protocol::decide`.
        resolved.verdict = resolved
            .verdict
            .and(check_event_open(cfg.event_status, direction))
            .and(allowed);
        if req.operator_override.is_some() && resolved.serial.is_none() {
            return Err(GateError::OverrideWithoutTicket);
        }
        Ok(Prepared {
            resolved,
            direction,
            now_ms,
            operator_override: req.operator_override.clone(),
        })
    }

    /// Undoes a mistaken admission made at this gate within the undo window: a new correcting
    /// event, never an edit of the original.
    pub fn undo(&mut self, id: Uuid) -> Result<ScanOutcome, GateError> {
        let original = self
            .replica
            .checkin(id)?
            .ok_or(GateError::UnknownCheckin(id))?
            .checkin;
        if original.undoes.is_some() {
            return Err(GateError::CannotUndo(id, "it is itself an undo"));
        }
        if original.decision != Decision::Admit {
            return Err(GateError::CannotUndo(id, "only admissions can be undone"));
        }
        let Some(serial) = original.ticket_serial else {
            return Err(GateError::CannotUndo(id, "it names no ticket"));
        };
        let now_ms = (self.clock)();
        let scanned_ms = (original.scanned_at.unix_timestamp_nanos() / 1_000_000) as u64;
        if now_ms.saturating_sub(scanned_ms) > self.undo_window.as_millis() as u64 {
            return Err(GateError::CannotUndo(id, "the undo window has passed"));
        }
        let gate_id = self.enrollment.gate_id;
        let tx = self
            .replica
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let already: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE undoes = ?1)")?
            .query_row([id.to_string()], |r| r.get(0))?;
        if already {
            return Err(GateError::CannotUndo(id, "it was already undone"));
        }
        let LogPosition {
            seq,
            hlc,
            replica_cursor,
            scanned_at,
        } = next_position(&tx, now_ms)?;
        let checkin = Checkin {
            id: Uuid::now_v7(),
            seq,
            ticket_serial: Some(serial),
            code: None,
            method: original.method,
            direction: original.direction,
            decision: original.decision,
            reason: None,
            hlc,
            scanned_at,
            replica_cursor,
            operator_override: None,
            undoes: Some(id),
        };
        replica::outbox::insert(&tx, &checkin)?;
        // Reverse the movement locally (an undone entry no longer counts for its day).
        let offset = self
            .cache
            .as_ref()
            .and_then(|c| c.config.as_ref())
            .map_or(0, |c| c.utc_offset_minutes);
        let original_ms = original.hlc.wall_ms();
        move_presence(
            &tx,
            serial,
            original.direction.reverse(),
            gate_id,
            checkin.id,
            hlc,
            -1,
            local_day(original_ms, offset),
        )?;
        tx.commit()?;
        telemetry::undo();
        let row = self.replica.ticket(serial)?;
        Ok(ScanOutcome {
            id: checkin.id,
            seq,
            decision: checkin.decision,
            reason: None,
            ticket_serial: Some(serial),
            name: row.as_ref().and_then(|r| r.display_name.clone()),
            attention: row.as_ref().and_then(|r| r.attention.clone()),
            direction: checkin.direction,
            method: checkin.method,
            hlc,
            scanned_at,
            operator_override: None,
            undoes: Some(id),
            last_seen: None,
            warning: None,
            transfer_exit: None,
            presented: None,
        })
    }
}

/// A request resolved against the replica, waiting for the write lock.
struct Prepared {
    resolved: Resolved,
    direction: Direction,
    now_ms: u64,
    operator_override: Option<String>,
}

/// Where the next outbox row stands: its seq, its clock reading (after the last row's), the
/// replica cursor it is decided against, and the scan time.
struct LogPosition {
    seq: u64,
    hlc: Hlc,
    replica_cursor: u64,
    scanned_at: OffsetDateTime,
}

/// [`LogPosition`] of the next row; the caller holds the write lock.
fn next_position(tx: &rusqlite::Connection, now_ms: u64) -> Result<LogPosition, GateError> {
    let (seq, last) = replica::outbox::next_seq_and_clock(tx)?;
    let replica_cursor = replica::read_meta(tx, "replica_cursor")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(LogPosition {
        seq,
        hlc: HlcClock::resume(last).now(now_ms),
        replica_cursor,
        scanned_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    })
}

/// Under the write lock: revocation and presence (`sync_protocol::decide::check_holder`), the
/// override (`settle`), then the outbox row and the presence update.
fn record(
    tx: &rusqlite::Connection,
    p: Prepared,
    gate_id: Uuid,
    cfg: &GateConfig,
    zone_gates: &[(Uuid, u16)],
) -> Result<ScanOutcome, GateError> {
    let Prepared {
        resolved,
        direction,
        now_ms,
        operator_override: asked_override,
    } = p;
    let mut verdict = resolved.verdict;
    let mut warning = None;
    let mut transfer = false;
    if let (Ok(()), Some(serial)) = (verdict, resolved.serial) {
        let listed: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM revocations WHERE serial = ?1)")?
            .query_row([i64_from(serial)], |r| r.get(0))?;
        let row_revoked = resolved
            .row
            .as_ref()
            .is_some_and(|r| r.status == TicketStatus::Revoked);
        let p = replica::presence(tx, serial)?;
        // The daily automatic check-out: an admission before the last check-out instant no
        // longer has the holder inside.
        let inside = p.inside
            && !cfg
                .auto_checkout
                .is_some_and(|c| c.checked_out_between(p.hlc.wall_ms(), now_ms));
        let gate_mask = defined_zone_mask(cfg.zone_mask, &cfg.zones);
        let current_mask = p
            .gate_id
            .and_then(|g| zone_gates.iter().find(|(id, _)| *id == g))
            .map_or(0, |(_, m)| *m);
        transfer = direction == Direction::In
            && inside
            && is_transfer(current_mask, gate_mask, &cfg.zones);
        verdict = check_holder(
            direction,
            listed || row_revoked,
            Presence {
                inside,
                entries: p.entries,
            },
            EntryPolicy {
                allow_multiple_checkins: cfg.allow_multiple_checkins,
                allow_reentry: cfg.allow_reentry,
                zone_transfer: transfer,
            },
        );
        // Day validity and the daily limit of the ticket's type.
        let today = local_day(now_ms, cfg.utc_offset_minutes);
        if verdict.is_ok()
            && direction == Direction::In
            && let Some(rule) = resolved
                .row
                .as_ref()
                .and_then(|r| r.ticket_type.as_deref())
                .and_then(|t| cfg.ticket_types.iter().find(|r| r.name == t))
        {
            let entries_today = if p.day == today { p.day_entries } else { 0 };
            verdict = check_day(rule, today, entries_today);
        }
        if verdict.is_ok() && direction == Direction::In {
            let since = cfg.auto_checkout.map_or(0, |c| {
                let ms = u64::try_from(c.last_at_or_before(now_ms)).unwrap_or(0);
                Hlc::new(ms, 0).as_u64()
            });
            for zone in gate_zones(cfg.zone_mask, &cfg.zones) {
                if zone.capacity.is_none() && zone.soft_capacity.is_none() {
                    continue;
                }
                let gates: Vec<Uuid> = zone_gates
                    .iter()
                    .filter(|(_, m)| m & zone.mask() != 0)
                    .map(|(g, _)| *g)
                    .collect();
                let occupancy = replica::zone_occupancy(tx, &gates, since, serial)?;
                match check_capacity(zone, occupancy) {
                    Ok(w) => warning = warning.or(w.map(|w| w.message())),
                    Err(r) => {
                        verdict = Err(r);
                        warning = None;
                        break;
                    }
                }
            }
        }
    }
    let Verdict {
        decision,
        reason,
        operator_override,
    } = settle(verdict, asked_override);

    // A zone transfer: the exit from the zone the holder is in is recorded first, at this
    // gate, so every reader of the log (the merge, the peers) sees them leave, then enter.
    let mut transfer_exit = None;
    if let (true, Decision::Admit, Some(serial)) = (transfer, decision, resolved.serial) {
        let pos = next_position(tx, now_ms)?;
        let exit = Checkin {
            id: Uuid::now_v7(),
            seq: pos.seq,
            ticket_serial: Some(serial),
            code: None,
            method: resolved.method,
            direction: Direction::Out,
            decision: Decision::Admit,
            reason: None,
            hlc: pos.hlc,
            scanned_at: pos.scanned_at,
            replica_cursor: pos.replica_cursor,
            operator_override: None,
            undoes: None,
        };
        replica::outbox::insert(tx, &exit)?;
        let day = local_day(pos.hlc.wall_ms(), cfg.utc_offset_minutes);
        move_presence(
            tx,
            serial,
            Direction::Out,
            gate_id,
            exit.id,
            pos.hlc,
            1,
            day,
        )?;
        transfer_exit = Some(exit.id);
    }

    let LogPosition {
        seq,
        hlc,
        replica_cursor,
        scanned_at,
    } = next_position(tx, now_ms)?;
    let checkin = Checkin {
        id: Uuid::now_v7(),
        seq,
        ticket_serial: resolved.serial,
        code: if resolved.serial.is_some() {
            None
        } else {
            resolved.code.clone()
        },
        method: resolved.method,
        direction,
        decision,
        reason,
        hlc,
        scanned_at,
        replica_cursor,
        operator_override: operator_override.clone(),
        undoes: None,
    };
    replica::outbox::insert(tx, &checkin)?;
    if let (Decision::Admit, Some(serial)) = (decision, resolved.serial) {
        let day = local_day(hlc.wall_ms(), cfg.utc_offset_minutes);
        move_presence(tx, serial, direction, gate_id, checkin.id, hlc, 1, day)?;
    }
    let shown = resolved.row.as_ref().filter(|_| resolved.trusted);
    let last_seen = match (reason, resolved.serial) {
        (Some(Reason::AlreadyInside | Reason::ReentryNotAllowed), Some(serial)) => {
            replica::last_seen(tx, serial)?
        }
        _ => None,
    };
    Ok(ScanOutcome {
        id: checkin.id,
        seq,
        decision,
        reason,
        ticket_serial: resolved.serial,
        name: shown.and_then(|r| r.display_name.clone()),
        attention: shown.and_then(|r| r.attention.clone()),
        direction,
        method: checkin.method,
        hlc,
        scanned_at,
        operator_override,
        undoes: None,
        last_seen,
        warning: warning.filter(|_| decision == Decision::Admit),
        transfer_exit,
        presented: resolved.presented.filter(|_| resolved.trusted),
    })
}

/// Records a movement in the local presence view. `entry_delta` is +1 for a scan, -1 when an
/// undo takes an entry back; `day` is the event-local day the entry counts on.
#[allow(clippy::too_many_arguments)]
fn move_presence(
    tx: &rusqlite::Connection,
    serial: u64,
    direction: Direction,
    gate_id: Uuid,
    checkin_id: Uuid,
    hlc: Hlc,
    entry_delta: i64,
    day: i32,
) -> Result<(), GateError> {
    let inside = direction == Direction::In;
    let entries = if inside {
        entry_delta.max(0)
    } else {
        entry_delta.min(0)
    };
    tx.prepare_cached(
        "INSERT INTO presence (serial, inside, entries, gate_id, checkin_id, hlc, day,
                day_entries)
         VALUES (?1, ?2, MAX(?3, 0), ?4, ?5, ?6, ?7, MAX(?3, 0))
         ON CONFLICT (serial) DO UPDATE SET inside = excluded.inside,
            entries = MAX(presence.entries + ?3, 0), gate_id = excluded.gate_id,
            checkin_id = excluded.checkin_id, hlc = excluded.hlc,
            day_entries = CASE WHEN ?3 = 0 THEN presence.day_entries
                WHEN presence.day = ?7 THEN MAX(presence.day_entries + ?3, 0)
                ELSE MAX(?3, 0) END,
            day = CASE WHEN ?3 > 0 THEN ?7 ELSE presence.day END",
    )?
    .execute(params![
        i64_from(serial),
        inside,
        entries,
        gate_id.to_string(),
        checkin_id.to_string(),
        i64_from(hlc.as_u64()),
        day,
    ])?;
    Ok(())
}

/// The event barcode key of a gate configuration (hex), when it is well formed.
fn barcode_event_key(hex_key: &str) -> Option<[u8; 32]> {
    hex::decode(hex_key).ok()?.try_into().ok()
}
