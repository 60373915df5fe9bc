//! `POST /sync/v1/checkins`: a gate pushes a batch of its scan log.

use std::collections::{BTreeSet, HashMap};

use axum::extract::State;
use serde::Deserialize;
use sqlx::FromRow;
use sync_protocol::wire::{
    Checkin, CheckinResult, Decision, Direction, Outcome, PushResponse, PushStatus,
};
use uuid::Uuid;

use super::gate_auth::GateAuth;
use super::merge::{self, Row};
use super::notify::Live;
use crate::error::ApiError;
use crate::extract::Json;
use crate::state::AppState;
use crate::store::{self, Tx, now_ms, tx_run};

/// Most check-ins accepted in one push.
pub const MAX_BATCH: usize = 5_000;

/// The body: check-ins are parsed one by one, so one malformed entry is reported as `invalid`
/// instead of failing the batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PushBody {
    pub gate_id: Uuid,
    #[schema(value_type = Vec<Object>)]
    pub checkins: Vec<serde_json::Value>,
}

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

fn parse(v: serde_json::Value) -> Parsed {
    let id = v
        .get("id")
        .and_then(|x| x.as_str())
        .and_then(|s| Uuid::parse_str(s).ok());
    let seq = v.get("seq").and_then(serde_json::Value::as_u64);
    match serde_json::from_value::<Checkin>(v) {
        Ok(c) => match c.validate() {
            Ok(()) if c.seq < (1 << 53) && c.ticket_serial.is_none_or(|s| s < (1 << 53)) => {
                Parsed::Valid(c)
            }
            Ok(()) => Parsed::Invalid {
                id,
                seq,
                error: "seq and ticket_serial must be below 2^53".into(),
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

#[derive(FromRow)]
struct Existing {
    id: Uuid,
}

/// Stores a batch of check-ins (idempotent on id and on (gate, seq)), merges the tickets they
/// touch in the same transaction, and answers per check-in. `acked_through_seq` is the highest
/// seq such that the server holds every check-in of this gate up to it.
#[utoipa::path(post, path = "/sync/v1/checkins", tag = "sync", request_body = PushBody,
    security(("gate" = [])),
    responses((status = 200, description = "{acked_through_seq, results, server_time}"),
              (status = 401, description = "Unknown or revoked gate credential"),
              (status = 403, description = "gate_id is not the authenticated gate")))]
pub async fn push(
    State(state): State<AppState>,
    gate: GateAuth,
    Json(body): Json<PushBody>,
) -> Result<axum::Json<PushResponse>, ApiError> {
    if body.gate_id != gate.gate_id {
        return Err(ApiError::Forbidden);
    }
    if body.checkins.len() > MAX_BATCH {
        return Err(ApiError::validation(
            "checkins",
            format!("at most {MAX_BATCH} check-ins per push"),
        ));
    }
    let resp = merge_push(&state, gate, body.checkins).await?;
    Ok(axum::Json(resp))
}

pub async fn merge_push(
    state: &AppState,
    gate: GateAuth,
    items: Vec<serde_json::Value>,
) -> Result<PushResponse, ApiError> {
    let now = now_ms();
    let parsed: Vec<Parsed> = items.into_iter().map(parse).collect();
    let mut rows = Vec::with_capacity(parsed.len());
    let mut max_hlc = sync_protocol::Hlc::ZERO;
    for p in &parsed {
        match p {
            Parsed::Valid(c) => {
                max_hlc = max_hlc.max(c.hlc);
                rows.push(Row {
                    checkin: c.clone(),
                    invalid: None,
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
            }),
            Parsed::Invalid { .. } => {}
        }
    }

    // Every ticket of the batch is re-folded, retries included: a retried check-in gets the
    // same outcome as the first time (and a fold is idempotent).
    let serials: BTreeSet<u64> = rows
        .iter()
        .filter(|r| r.invalid.is_none())
        .filter_map(|r| r.checkin.ticket_serial)
        .collect();
    let serial_list: Vec<u64> = serials.iter().copied().collect();

    let mut tx = state.db.begin().await?;
    merge::lock_tickets(&mut tx, gate.event_id, &serial_list).await?;
    // What is stored of these tickets, read before this batch is inserted: the batch's new
    // check-ins join the fold from memory instead of being read back.
    let stored = merge::read_stored(&mut tx, gate.event_id, &serials).await?;
    let inserted = merge::insert_checkins(&mut tx, gate.event_id, gate.gate_id, &rows, now).await?;

    // Which of the rest were already stored (duplicates) and which collided on seq.
    let missing: Vec<Uuid> = rows
        .iter()
        .map(|r| r.checkin.id)
        .filter(|id| !inserted.contains(id))
        .collect();
    let existing = existing_ids(&mut tx, &missing).await?;

    // The gate row lock orders concurrent pushes of one gate (acked_seq bookkeeping). Taken
    // after the ticket locks: every writer takes tickets, then gate rows, then the change
    // counter (the online redeem too), so no two can wait on each other in a cycle.
    let acked: i64 = tx_run!(&mut tx, c => {
        let sql = if matches!(state.db, store::Db::Postgres(_)) {
            "SELECT acked_seq FROM gates WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT acked_seq FROM gates WHERE id = $1"
        };
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(gate.gate_id)
            .fetch_one(&mut *c)
            .await?
    });
    let policy = merge::policy(&mut tx, gate.event_id).await?;
    let pending: Vec<_> = rows
        .iter()
        .filter(|r| r.invalid.is_none() && inserted.contains(&r.checkin.id))
        .filter_map(|r| {
            let c = &r.checkin;
            c.ticket_serial
                .map(|serial| (serial, merge::scan_event(gate.gate_id, c)))
        })
        .collect();
    let refolded = merge::refold_stored(
        &mut tx,
        gate.event_id,
        &serials,
        stored,
        &pending,
        policy,
        now,
    )
    .await?;

    let acked_through = advance_acked(&mut tx, gate.gate_id, acked).await?;
    tx_run!(&mut tx, c => {
        sqlx::query("UPDATE gate_credentials SET last_seen_at = $2 WHERE gate_id = $1 AND revoked_at IS NULL")
            .bind(gate.gate_id)
            .bind(now)
            .execute(&mut *c)
            .await?;
    });

    let mut live = refolded.live.clone();
    for r in &rows {
        let c = &r.checkin;
        if r.invalid.is_none()
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
    let staged = state.notifier.stage(&mut tx, live).await?;
    // Last: from the change counter's update to the commit, concurrent writers of the event
    // wait on that row (it orders the change log), so nothing else runs in between.
    store::changes::append(&mut tx, gate.event_id, &refolded.changes).await?;
    tx.commit().await?;
    state.notifier.committed(staged);
    state
        .metrics
        .checkins_merged
        .fetch_add(inserted.len() as u64, std::sync::atomic::Ordering::Relaxed);

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
                let (outcome, conflicts) = match c.ticket_serial {
                    Some(s) => (
                        refolded.states.get(&s).map(|st| {
                            if st.inside {
                                Outcome::Inside
                            } else {
                                Outcome::Outside
                            }
                        }),
                        merge::conflicts_of(&refolded.states, s, c.id),
                    ),
                    None => (None, Vec::new()),
                };
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

async fn existing_ids(tx: &mut Tx, ids: &[Uuid]) -> anyhow::Result<HashMap<Uuid, ()>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<Existing> = match tx {
        Tx::Postgres(t) => {
            sqlx::query_as("SELECT id FROM checkins WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&mut **t)
                .await?
        }
        Tx::Sqlite(t) => {
            let mut out = Vec::new();
            for id in ids {
                let r: Option<Existing> = sqlx::query_as("SELECT id FROM checkins WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **t)
                    .await?;
                out.extend(r);
            }
            out
        }
    };
    Ok(rows.into_iter().map(|r| (r.id, ())).collect())
}

/// Advances the gate's contiguous acknowledgement past every stored seq.
async fn advance_acked(tx: &mut Tx, gate_id: Uuid, from: i64) -> anyhow::Result<u64> {
    let mut acked = from;
    loop {
        let seqs: Vec<i64> = tx_run!(tx, c => {
            sqlx::query_scalar(
                "SELECT seq FROM checkins WHERE gate_id = $1 AND seq > $2 ORDER BY seq LIMIT 10000",
            )
            .bind(gate_id)
            .bind(acked)
            .fetch_all(&mut *c)
            .await?
        });
        let before = acked;
        for s in &seqs {
            if *s == acked + 1 {
                acked = *s;
            } else {
                break;
            }
        }
        if acked == before || seqs.len() < 10_000 {
            break;
        }
    }
    if acked != from {
        tx_run!(tx, c => {
            sqlx::query("UPDATE gates SET acked_seq = $2 WHERE id = $1")
                .bind(gate_id)
                .bind(acked)
                .execute(&mut *c)
                .await?;
        });
    }
    Ok(u64::try_from(acked)?)
}
