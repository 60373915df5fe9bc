//! A gate pushes a batch of its scan log: each entry parsed on its own (a malformed one is
//! `invalid`, the rest are stored), stored idempotently, the touched tickets re-folded, all in
//! one unit of work.

use std::collections::BTreeSet;

use sync_protocol::wire::{
    Checkin, CheckinResult, Decision, Direction, Outcome, PushResponse, PushStatus,
};
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::gate::GateAuth;
use crate::domain::live::Live;
use crate::service::AppState;
use crate::service::uow::UnitOfWork;
use crate::store::checkins::{self, Row};
use crate::store::{self, now_ms};

/// Most check-ins accepted in one push.
pub const MAX_BATCH: usize = 5_000;

enum Parsed {
    Valid(Checkin),
    /// Stored as invalid (keeps its seq), or only reported when even id/seq are unreadable.
    Invalid {
        id: Option<Uuid>,
        seq: Option<u64>,
        error: String,
        row: Option<Checkin>,
    },
}

/// Largest seq, serial or cursor a check-in may carry (what every client can count exactly).
const MAX_NUMBER: u64 = 1 << 53;

/// Parses one pushed check-in; `wall_ms` is the server's wall clock, which bounds its `hlc`.
fn parse(v: serde_json::Value, wall_ms: u64) -> Parsed {
    let id = v
        .get("id")
        .and_then(|x| x.as_str())
        .and_then(|s| Uuid::parse_str(s).ok());
    let seq = v.get("seq").and_then(serde_json::Value::as_u64);
    // PostgreSQL cannot store a NUL character: such a check-in keeps its seq as a placeholder,
    // the rest of the batch is stored.
    if let Some(field) = crate::domain::text::nul_path(&v) {
        return Parsed::Invalid {
            id,
            seq,
            error: format!("{field}: must not contain a NUL character"),
            row: None,
        };
    }
    match serde_json::from_value::<Checkin>(v) {
        Ok(c) => match c.validate() {
            Ok(()) if sync_protocol::too_far_ahead(c.hlc, wall_ms) => Parsed::Invalid {
                id,
                seq,
                error: format!(
                    "hlc: the gate's clock is more than {} s ahead of the server's",
                    sync_protocol::MAX_CLOCK_AHEAD_MS / 1_000
                ),
                row: None,
            },
            Ok(())
                if c.seq < MAX_NUMBER
                    && c.ticket_serial.is_none_or(|s| s < MAX_NUMBER)
                    && c.replica_cursor < MAX_NUMBER =>
            {
                Parsed::Valid(c)
            }
            Ok(()) => Parsed::Invalid {
                id,
                seq,
                error: "seq, ticket_serial and replica_cursor must be below 2^53".into(),
                row: None,
            },
            // Stored with what it says, within what the columns hold.
            Err(e) if too_big(&c, wall_ms) => Parsed::Invalid {
                id,
                seq,
                error: format!("{}: {e}", e.field()),
                row: None,
            },
            Err(e) => Parsed::Invalid {
                id,
                seq,
                error: format!("{}: {e}", e.field()),
                row: Some(c),
            },
        },
        Err(e) => Parsed::Invalid {
            id,
            seq,
            error: e.to_string(),
            row: None,
        },
    }
}

/// One pushed check-in checked on its own, as [`merge_push`] checks each entry of a batch before
/// storing it: the check-in to store, or the error it is stored (or reported) as `invalid` with.
/// Pure; public for the fuzz targets.
#[doc(hidden)]
pub fn check_pushed(v: serde_json::Value, wall_ms: u64) -> Result<Checkin, String> {
    match parse(v, wall_ms) {
        Parsed::Valid(c) => Ok(c),
        Parsed::Invalid { error, .. } => Err(error),
    }
}

/// Whether an invalid check-in carries numbers its stored row cannot hold (or a clock too far
/// ahead): it is then kept as a placeholder only.
fn too_big(c: &Checkin, wall_ms: u64) -> bool {
    sync_protocol::too_far_ahead(c.hlc, wall_ms) || c.replica_cursor >= MAX_NUMBER
}

/// A placeholder row for an invalid check-in whose content could not be read: it occupies its
/// seq so the gate's log stays gap-free, and takes no part in the merge.
fn placeholder(id: Uuid, seq: u64) -> Checkin {
    Checkin {
        id,
        seq,
        ticket_serial: None,
        code: None,
        method: sync_protocol::wire::Method::Qr,
        direction: Direction::In,
        decision: Decision::Reject,
        reason: None,
        hlc: sync_protocol::Hlc::ZERO,
        scanned_at: time::OffsetDateTime::UNIX_EPOCH,
        replica_cursor: 0,
        operator_override: None,
        undoes: None,
    }
}

pub async fn merge_push(
    state: &AppState,
    gate: GateAuth,
    items: Vec<serde_json::Value>,
) -> Result<PushResponse, Error> {
    let now = now_ms();
    let wall = u64::try_from(now).unwrap_or(0);
    let parsed: Vec<Parsed> = items.into_iter().map(|v| parse(v, wall)).collect();
    let mut rows = Vec::with_capacity(parsed.len());
    let mut max_hlc = sync_protocol::Hlc::ZERO;
    for p in &parsed {
        match p {
            Parsed::Valid(c) => {
                max_hlc = max_hlc.max(c.hlc);
                rows.push(Row {
                    checkin: c.clone(),
                    invalid: None,
                    test: false,
                });
            }
            Parsed::Invalid {
                id: Some(id),
                seq: Some(seq),
                error,
                row,
            } if *seq >= 1 && *seq < (1 << 53) => rows.push(Row {
                checkin: row
                    .clone()
                    .map(|mut c| {
                        c.ticket_serial = None;
                        c
                    })
                    .unwrap_or_else(|| placeholder(*id, *seq)),
                invalid: Some(error.clone()),
                test: false,
            }),
            Parsed::Invalid { .. } => {}
        }
    }

    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let tx = uow.tx();
    // Scans stored while the event is a draft are tests: kept, never folded.
    let test = sync_protocol::decide::is_test_scan(checkins::phase(tx, gate.event_id).await?);
    for r in &mut rows {
        r.test = test;
    }
    let counts = |r: &Row| r.invalid.is_none() && !r.test;
    // Every ticket of the batch is re-folded, retries included: a retried check-in gets the
    // same outcome as the first time (and a fold is idempotent).
    let serials: BTreeSet<u64> = rows
        .iter()
        .filter(|r| counts(r))
        .filter_map(|r| r.checkin.ticket_serial)
        .collect();
    let serial_list: Vec<u64> = serials.iter().copied().collect();
    checkins::lock_tickets(tx, gate.event_id, &serial_list).await?;
    // What is stored of these tickets, read before this batch is inserted: the batch's new
    // check-ins join the fold from memory instead of being read back.
    let stored = checkins::read_stored(tx, gate.event_id, &serials).await?;
    let inserted = checkins::insert_checkins(tx, gate.event_id, gate.gate_id, &rows, now).await?;

    // Which of the rest were already stored (duplicates) and which collided on seq.
    let missing: Vec<Uuid> = rows
        .iter()
        .map(|r| r.checkin.id)
        .filter(|id| !inserted.contains(id))
        .collect();
    let existing = checkins::existing_ids(tx, &missing).await?;

    // The gate row lock orders concurrent pushes of one gate (acked_seq bookkeeping). Taken
    // after the ticket locks: every writer takes tickets, then gate rows, then the change
    // counter (the online redeem too), so no two can wait on each other in a cycle.
    let acked = checkins::lock_gate_acked(tx, gate.gate_id).await?;
    let policy = checkins::policy(tx, gate.event_id).await?;
    let pending: Vec<_> = rows
        .iter()
        .filter(|r| counts(r) && inserted.contains(&r.checkin.id))
        .filter_map(|r| {
            let c = &r.checkin;
            c.ticket_serial
                .map(|serial| (serial, checkins::scan_event(gate.gate_id, c)))
        })
        .collect();
    let refolded =
        checkins::refold_stored(tx, gate.event_id, &serials, stored, &pending, policy, now).await?;

    // Zones with a capacity this push entered: replayed for `over_capacity`.
    let entered = rows.iter().any(|r| {
        r.invalid.is_none()
            && inserted.contains(&r.checkin.id)
            && r.checkin.decision == Decision::Admit
            && r.checkin.direction == Direction::In
    });
    let entry_gates: BTreeSet<Uuid> = if entered {
        BTreeSet::from([gate.gate_id])
    } else {
        BTreeSet::new()
    };
    let checkout = checkins::daily_checkout(tx, gate.event_id).await?;
    let capacity = store::capacity::replay(tx, gate.event_id, &entry_gates, checkout, now).await?;

    let acked_through = checkins::advance_acked(tx, gate.gate_id, acked).await?;
    store::gates::touch_credentials(tx, gate.gate_id, now).await?;

    crate::service::webhooks::record_checkins(
        &mut uow,
        gate.event_id,
        gate.gate_id,
        rows.iter()
            .filter(|r| r.invalid.is_none() && inserted.contains(&r.checkin.id))
            .map(|r| &r.checkin),
        "push",
    )
    .await?;
    let mut live = refolded.live.clone();
    live.extend(capacity.live);
    for r in &rows {
        let c = &r.checkin;
        if counts(r)
            && inserted.contains(&c.id)
            && c.decision == Decision::Admit
            && let Some(serial) = c.ticket_serial
        {
            live.push(Live::Admission {
                event_id: gate.event_id,
                ticket_serial: serial,
                gate_id: gate.gate_id,
                checkin_id: c.id,
                direction: c.direction,
                inside: refolded.states.get(&serial).is_some_and(|s| s.inside),
            });
        }
    }
    // The change log last (the unit of work's order): from the change counter's update to the
    // commit, concurrent writers of the event wait on that row.
    uow.live(live);
    uow.changes(gate.event_id, refolded.changes.clone())?;
    uow.commit(&state.notifier).await?;
    metrics::counter!("usher_checkins_merged_total").increment(inserted.len() as u64);
    count_movements(
        gate.gate_id,
        rows.iter()
            .filter(|r| counts(r) && inserted.contains(&r.checkin.id))
            .map(|r| &r.checkin),
    );
    // A conflict is new when this push stored its trigger (invalid rows name no ticket, so
    // no trigger is one of them).
    for c in &capacity.conflicts {
        if inserted.contains(&c.trigger) {
            metrics::counter!("usher_conflicts_total", "kind" => c.kind.as_str()).increment(1);
        }
    }
    for state in refolded.states.values() {
        for c in &state.conflicts {
            if inserted.contains(&c.trigger) {
                metrics::counter!("usher_conflicts_total", "kind" => c.kind.as_str()).increment(1);
            }
        }
    }

    let server_time = state.observe_hlc(max_hlc);
    let results = parsed
        .into_iter()
        .map(|p| match p {
            Parsed::Valid(c) => {
                let status = if inserted.contains(&c.id) {
                    PushStatus::Stored
                } else if existing.contains_key(&c.id) {
                    PushStatus::Duplicate
                } else {
                    return CheckinResult {
                        id: c.id,
                        status: PushStatus::Invalid,
                        outcome: None,
                        conflicts: Vec::new(),
                        error: Some(format!(
                            "seq {} is already taken by another check-in of this gate",
                            c.seq
                        )),
                    };
                };
                let (outcome, mut conflicts) = match c.ticket_serial {
                    Some(s) => (
                        refolded.states.get(&s).map(|st| {
                            if st.inside {
                                Outcome::Inside
                            } else {
                                Outcome::Outside
                            }
                        }),
                        checkins::conflicts_of(&refolded.states, s, c.id),
                    ),
                    None => (None, Vec::new()),
                };
                conflicts.extend(
                    capacity
                        .conflicts
                        .iter()
                        .filter(|k| k.trigger == c.id)
                        .map(|k| k.kind),
                );
                CheckinResult {
                    id: c.id,
                    status,
                    outcome,
                    conflicts,
                    error: None,
                }
            }
            Parsed::Invalid { id, error, .. } => CheckinResult {
                id: id.unwrap_or_else(Uuid::nil),
                status: PushStatus::Invalid,
                outcome: None,
                conflicts: Vec::new(),
                error: Some(error),
            },
        })
        .collect();
    Ok(PushResponse {
        acked_through_seq: acked_through,
        results,
        server_time,
    })
}

/// Counts admitted movements by gate and direction (the dashboard's admissions per minute).
pub fn count_movements<'a>(gate_id: Uuid, checkins: impl Iterator<Item = &'a Checkin>) {
    let (mut ins, mut outs) = (0u64, 0u64);
    for c in checkins {
        if c.decision == Decision::Admit && c.undoes.is_none() {
            match c.direction {
                Direction::In => ins += 1,
                Direction::Out => outs += 1,
            }
        }
    }
    let gate = gate_id.to_string();
    if ins > 0 {
        metrics::counter!("usher_movements_total", "gate" => gate.clone(), "direction" => "in")
            .increment(ins);
    }
    if outs > 0 {
        metrics::counter!("usher_movements_total", "gate" => gate, "direction" => "out")
            .increment(outs);
    }
}
