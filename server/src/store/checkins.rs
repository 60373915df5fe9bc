//! Merging pushed check-ins into the server's state (DESIGN §5).
//!
//! The check-in log is a grow-only set: a batch is inserted with `ON CONFLICT DO NOTHING`, so
//! retries and duplicated batches store nothing twice. Every ticket the batch touched is then
//! re-folded with `sync_protocol::merge::fold` over *all* its stored check-ins and revocations —
//! the single source of truth for presence and conflicts — while its lock is held, so two
//! gates pushing the same ticket at once are merged one after the other. On PostgreSQL the work
//! is set-based (`UNNEST` arrays, one statement per step, not per row).
//!
//! Ticket locks are transaction-scoped advisory locks taken in serial order in one statement,
//! which keeps concurrent pushes deadlock-free.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use sqlx::FromRow;
use sync_protocol::Hlc;
use sync_protocol::merge::{Conflict, FoldPolicy, RevocationEvent, ScanEvent, TicketState, fold};
use sync_protocol::wire::{
    ChangeData, Checkin, ConflictKind, Decision, Direction, PresenceChange, RevocationChange,
};
use uuid::Uuid;

use super::{Tx, tx_run};
use crate::domain::event::EventSettings;
use crate::domain::live::Live;

pub(crate) fn i64_of(v: u64) -> anyhow::Result<i64> {
    Ok(i64::try_from(v)?)
}

/// A check-in row to insert: a valid one, or an invalid one kept for its seq.
#[derive(Debug, Clone)]
pub struct Row {
    pub checkin: Checkin,
    pub invalid: Option<String>,
    /// Stored while the event was a draft ([`sync_protocol::decide::is_test_scan`]): kept and
    /// listed, never folded.
    pub test: bool,
}

/// Inserts check-ins of one gate; returns the ids actually inserted (the others existed).
pub async fn insert_checkins(
    tx: &mut Tx,
    event_id: Uuid,
    gate_id: Uuid,
    rows: &[Row],
    received_at: i64,
) -> anyhow::Result<BTreeSet<Uuid>> {
    let mut inserted = BTreeSet::new();
    if rows.is_empty() {
        return Ok(inserted);
    }
    if let Tx::Postgres(t) = tx
        && rows.len() >= COPY_CHECKINS_MIN
        && copy_checkins(t, event_id, gate_id, rows, received_at).await?
    {
        inserted.extend(rows.iter().map(|r| r.checkin.id));
        return Ok(inserted);
    }
    match tx {
        Tx::Postgres(t) => {
            let mut ids = Vec::with_capacity(rows.len());
            let mut seqs = Vec::with_capacity(rows.len());
            let mut serials: Vec<Option<i64>> = Vec::with_capacity(rows.len());
            let mut codes: Vec<Option<String>> = Vec::with_capacity(rows.len());
            let mut methods = Vec::with_capacity(rows.len());
            let mut dirs = Vec::with_capacity(rows.len());
            let mut decisions = Vec::with_capacity(rows.len());
            let mut reasons: Vec<Option<&str>> = Vec::with_capacity(rows.len());
            let mut hlcs = Vec::with_capacity(rows.len());
            let mut scanned = Vec::with_capacity(rows.len());
            let mut cursors = Vec::with_capacity(rows.len());
            let mut overrides: Vec<Option<String>> = Vec::with_capacity(rows.len());
            let mut undoes: Vec<Option<Uuid>> = Vec::with_capacity(rows.len());
            let mut invalid: Vec<Option<String>> = Vec::with_capacity(rows.len());
            let mut tests: Vec<bool> = Vec::with_capacity(rows.len());
            for r in rows {
                let c = &r.checkin;
                ids.push(c.id);
                seqs.push(i64_of(c.seq)?);
                serials.push(c.ticket_serial.map(i64_of).transpose()?);
                codes.push(c.code.clone());
                methods.push(c.method.as_str());
                dirs.push(c.direction.as_str());
                decisions.push(c.decision.as_str());
                reasons.push(c.reason.map(|r| r.as_str()));
                hlcs.push(i64_of(c.hlc.as_u64())?);
                scanned.push(crate::store::time_to_ms(c.scanned_at));
                cursors.push(i64_of(c.replica_cursor)?);
                overrides.push(c.operator_override.clone());
                undoes.push(c.undoes);
                invalid.push(r.invalid.clone());
                tests.push(r.test);
            }
            let got: Vec<Uuid> = sqlx::query_scalar(
                "INSERT INTO checkins (id, event_id, gate_id, seq, ticket_serial, code, method,
                        direction, decision, reason, hlc, scanned_at, replica_cursor,
                        operator_override, undoes, received_at, invalid, is_test)
                 SELECT u.id, $1, $2, u.seq, u.serial, u.code, u.method, u.dir, u.decision,
                        u.reason, u.hlc, u.scanned, u.cursor, u.override, u.undoes, $3, u.invalid,
                        u.test
                 FROM UNNEST($4::uuid[], $5::int8[], $6::int8[], $7::text[], $8::text[],
                             $9::text[], $10::text[], $11::text[], $12::int8[], $13::int8[],
                             $14::int8[], $15::text[], $16::uuid[], $17::text[], $18::bool[])
                   AS u(id, seq, serial, code, method, dir, decision, reason, hlc, scanned,
                        cursor, override, undoes, invalid, test)
                 ON CONFLICT DO NOTHING
                 RETURNING id",
            )
            .bind(event_id)
            .bind(gate_id)
            .bind(received_at)
            .bind(ids)
            .bind(seqs)
            .bind(serials)
            .bind(codes)
            .bind(methods)
            .bind(dirs)
            .bind(decisions)
            .bind(reasons)
            .bind(hlcs)
            .bind(scanned)
            .bind(cursors)
            .bind(overrides)
            .bind(undoes)
            .bind(invalid)
            .bind(tests)
            .fetch_all(&mut **t)
            .await?;
            inserted.extend(got);
        }
        Tx::Sqlite(t) => {
            for r in rows {
                let c = &r.checkin;
                let got: Option<Uuid> = sqlx::query_scalar(
                    "INSERT INTO checkins (id, event_id, gate_id, seq, ticket_serial, code, method,
                            direction, decision, reason, hlc, scanned_at, replica_cursor,
                            operator_override, undoes, received_at, invalid, is_test)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                             $16, $17, $18)
                     ON CONFLICT DO NOTHING
                     RETURNING id",
                )
                .bind(c.id)
                .bind(event_id)
                .bind(gate_id)
                .bind(i64_of(c.seq)?)
                .bind(c.ticket_serial.map(i64_of).transpose()?)
                .bind(c.code.as_deref())
                .bind(c.method.as_str())
                .bind(c.direction.as_str())
                .bind(c.decision.as_str())
                .bind(c.reason.map(|r| r.as_str()))
                .bind(i64_of(c.hlc.as_u64())?)
                .bind(crate::store::time_to_ms(c.scanned_at))
                .bind(i64_of(c.replica_cursor)?)
                .bind(c.operator_override.as_deref())
                .bind(c.undoes)
                .bind(received_at)
                .bind(r.invalid.as_deref())
                .bind(r.test)
                .fetch_optional(&mut **t)
                .await?;
                inserted.extend(got);
            }
        }
    }
    Ok(inserted)
}

/// From this many check-ins a push tries `COPY` first (see [`copy_checkins`]).
const COPY_CHECKINS_MIN: usize = 200;

/// Inserts new check-ins with `COPY` under a savepoint: in a push of new scans (the usual case)
/// none is stored yet, and `COPY` skips what `INSERT … ON CONFLICT DO NOTHING` pays per row —
/// the probe of both unique indexes before each insert, and the projection of fourteen arrays.
/// `false` (rolled back) when some check-in was already stored: a retried push takes the
/// upsert instead.
async fn copy_checkins(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    event_id: Uuid,
    gate_id: Uuid,
    rows: &[Row],
    received_at: i64,
) -> anyhow::Result<bool> {
    let mut copy = crate::store::pgcopy::CopyRows::with_capacity(rows.len() * 200);
    for r in rows {
        let c = &r.checkin;
        copy.uuid(c.id)
            .uuid(event_id)
            .uuid(gate_id)
            .int(Some(i64_of(c.seq)?))
            .int(c.ticket_serial.map(i64_of).transpose()?)
            .text(c.code.as_deref())
            .text(Some(c.method.as_str()))
            .text(Some(c.direction.as_str()))
            .text(Some(c.decision.as_str()))
            .text(c.reason.map(|r| r.as_str()))
            .int(Some(i64_of(c.hlc.as_u64())?))
            .int(Some(crate::store::time_to_ms(c.scanned_at)))
            .int(Some(i64_of(c.replica_cursor)?))
            .text(c.operator_override.as_deref());
        match c.undoes {
            Some(u) => copy.uuid(u),
            None => copy.text(None),
        };
        copy.int(Some(received_at))
            .text(r.invalid.as_deref())
            .boolean(r.test);
        copy.end_row();
    }
    sqlx::query("SAVEPOINT checkins_copy")
        .execute(&mut **t)
        .await?;
    let result = crate::store::pgcopy::copy_in(
        t,
        "COPY checkins (id, event_id, gate_id, seq, ticket_serial, code, method, direction,
                decision, reason, hlc, scanned_at, replica_cursor, operator_override, undoes,
                received_at, invalid, is_test) FROM STDIN",
        &copy,
    )
    .await;
    match result {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT checkins_copy")
                .execute(&mut **t)
                .await?;
            Ok(true)
        }
        Err(e) if crate::store::is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT checkins_copy")
                .execute(&mut **t)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// A check-in of `gate_id` as the fold sees it.
pub fn scan_event(gate_id: Uuid, c: &Checkin) -> ScanEvent {
    ScanEvent {
        id: c.id,
        gate_id,
        seq: c.seq,
        hlc: c.hlc,
        direction: c.direction,
        decision: c.decision,
        replica_cursor: c.replica_cursor,
        undoes: c.undoes,
    }
}

/// Takes the merge lock of each ticket, in serial order (deadlock-free). SQLite needs none: its
/// writers are serialised by `BEGIN IMMEDIATE`.
pub async fn lock_tickets(tx: &mut Tx, event_id: Uuid, serials: &[u64]) -> anyhow::Result<()> {
    if let Tx::Postgres(t) = tx {
        let keys: Vec<i64> = serials
            .iter()
            .map(|s| i64_of(*s))
            .collect::<Result<_, _>>()?;
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext($1::text), (k % 2147483647)::int4)
             FROM (SELECT DISTINCT k FROM UNNEST($2::int8[]) AS k ORDER BY k) AS sorted",
        )
        .bind(event_id)
        .bind(keys)
        .execute(&mut **t)
        .await?;
    }
    Ok(())
}

#[derive(FromRow, Deserialize)]
struct ScanRow {
    id: Uuid,
    gate_id: Uuid,
    seq: i64,
    ticket_serial: i64,
    hlc: i64,
    direction: String,
    decision: String,
    replica_cursor: i64,
    undoes: Option<Uuid>,
}

#[derive(FromRow, Deserialize)]
struct RevocationRow {
    entity_key: String,
    change_seq: i64,
    data: String,
}

#[derive(FromRow, Deserialize, Clone)]
struct PresenceRow {
    serial: i64,
    inside: bool,
    last_checkin: Option<Uuid>,
    entries: i64,
}

#[derive(FromRow, Deserialize)]
struct ConflictRow {
    id: Uuid,
    kind: String,
    ticket_serial: i64,
    trigger_checkin: Uuid,
    checkin_ids: String,
    gate_ids: String,
    resolution: Option<String>,
}

/// What a refold produced for the caller: the new states, gate-visible presence changes and
/// live events.
#[derive(Debug, Default)]
pub struct Refolded {
    pub states: BTreeMap<u64, TicketState>,
    pub changes: Vec<(ChangeData, bool)>,
    pub live: Vec<Live>,
}

/// The event's lifecycle status as this transaction sees it (scans stored while it is a draft
/// are tests: [`sync_protocol::decide::is_test_scan`]).
pub async fn phase(tx: &mut Tx, event_id: Uuid) -> anyhow::Result<sync_protocol::wire::EventPhase> {
    let status: Option<String> = tx_run!(tx, c => {
        sqlx::query_scalar("SELECT status FROM events WHERE id = $1")
            .bind(event_id)
            .fetch_optional(&mut *c)
            .await?
    });
    let status = status.ok_or_else(|| anyhow::anyhow!("event {event_id} is gone"))?;
    Ok(crate::domain::event::EventStatus::parse(&status)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .phase())
}

/// The event's fold policy.
pub async fn policy(tx: &mut Tx, event_id: Uuid) -> anyhow::Result<FoldPolicy> {
    let settings: Option<String> = tx_run!(tx, c => {
        sqlx::query_scalar("SELECT settings FROM events WHERE id = $1")
            .bind(event_id)
            .fetch_optional(&mut *c)
            .await?
    });
    let settings = EventSettings::parse(settings.as_deref().unwrap_or(""))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(settings.fold_policy())
}

/// The event's daily automatic check-out, if its settings set one.
pub async fn daily_checkout(
    tx: &mut Tx,
    event_id: Uuid,
) -> anyhow::Result<Option<sync_protocol::days::DailyCheckout>> {
    let settings: Option<String> = tx_run!(tx, c => {
        sqlx::query_scalar("SELECT settings FROM events WHERE id = $1")
            .bind(event_id)
            .fetch_optional(&mut *c)
            .await?
    });
    let settings = EventSettings::parse(settings.as_deref().unwrap_or(""))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(settings.daily_checkout())
}

/// What a refold reads of its tickets: their stored check-ins, revocations, presence and
/// conflicts ([`read_stored`]).
pub struct Stored {
    scans: Vec<ScanRow>,
    revs: Vec<RevocationRow>,
    old: Vec<PresenceRow>,
    existing: Vec<ConflictRow>,
}

/// Re-folds the given tickets from everything stored, and writes presence and conflicts.
/// The caller holds the tickets' locks ([`lock_tickets`]) and appends `changes` to the change
/// log before committing.
pub async fn refold(
    tx: &mut Tx,
    event_id: Uuid,
    serials: &BTreeSet<u64>,
    policy: FoldPolicy,
    now: i64,
) -> anyhow::Result<Refolded> {
    if serials.is_empty() {
        return Ok(Refolded::default());
    }
    let stored = read_stored(tx, event_id, serials).await?;
    refold_stored(tx, event_id, serials, stored, &[], policy, now).await
}

/// Reads what a refold of `serials` needs. The caller holds the tickets' locks.
pub async fn read_stored(
    tx: &mut Tx,
    event_id: Uuid,
    serials: &BTreeSet<u64>,
) -> anyhow::Result<Stored> {
    let list: Vec<i64> = serials
        .iter()
        .map(|s| i64_of(*s))
        .collect::<Result<_, _>>()?;
    let keys: Vec<String> = serials.iter().map(u64::to_string).collect();
    let json_list = serde_json::to_string(&list)?;
    let json_keys = serde_json::to_string(&keys)?;

    let (scans, revs, old, existing): (
        Vec<ScanRow>,
        Vec<RevocationRow>,
        Vec<PresenceRow>,
        Vec<ConflictRow>,
    ) = match tx {
        Tx::Postgres(t) if serials.len() <= FEW_TICKETS => {
            // The four reads below in one statement, each as a JSON array.
            let (scans, revs, old, existing): (String, String, String, String) = sqlx::query_as(
                "SELECT
                       (SELECT coalesce(json_agg(c), '[]') FROM UNNEST($2::int8[]) AS s(serial)
                        CROSS JOIN LATERAL (
                            SELECT id, gate_id, seq, ticket_serial, hlc, direction, decision,
                                   replica_cursor, undoes
                            FROM checkins
                            WHERE event_id = $1 AND ticket_serial = s.serial AND invalid IS NULL
                              AND NOT is_test
                            OFFSET 0) AS c)::text,
                       (SELECT coalesce(json_agg(r), '[]') FROM (
                            SELECT entity_key, change_seq, data FROM changes
                            WHERE event_id = $1 AND kind = 'revocation'
                              AND entity_key = ANY($3) AND NOT deleted) AS r)::text,
                       (SELECT coalesce(json_agg(p), '[]') FROM UNNEST($2::int8[]) AS s(serial)
                        CROSS JOIN LATERAL (
                            SELECT serial, inside, last_checkin, entries FROM presence
                            WHERE event_id = $1 AND serial = s.serial
                            OFFSET 0) AS p)::text,
                       (SELECT coalesce(json_agg(k), '[]') FROM (
                            SELECT id, kind, ticket_serial, trigger_checkin, checkin_ids,
                                   gate_ids, resolution
                            FROM conflicts
                            WHERE event_id = $1 AND ticket_serial = ANY($2)) AS k)::text",
            )
            .bind(event_id)
            .bind(&list)
            .bind(&keys)
            .fetch_one(&mut **t)
            .await?;
            (
                serde_json::from_str(&scans)?,
                serde_json::from_str(&revs)?,
                serde_json::from_str(&old)?,
                serde_json::from_str(&existing)?,
            )
        }
        Tx::Postgres(t) => {
            // One index probe per ticket, whatever the statistics say: `OFFSET 0` keeps the
            // lateral subquery from being flattened into a join that PostgreSQL may plan as a
            // scan of the event's whole check-in log (it does so while the table has never
            // been analysed, e.g. during the first minute of doors opening on a new database).
            let scans = sqlx::query_as(
                "SELECT c.id, c.gate_id, c.seq, c.ticket_serial, c.hlc, c.direction, c.decision,
                        c.replica_cursor, c.undoes
                 FROM UNNEST($2::int8[]) AS s(serial)
                 CROSS JOIN LATERAL (
                     SELECT * FROM checkins
                     WHERE event_id = $1 AND ticket_serial = s.serial AND invalid IS NULL
                              AND NOT is_test
                     OFFSET 0) AS c",
            )
            .bind(event_id)
            .bind(&list)
            .fetch_all(&mut **t)
            .await?;
            let revs = sqlx::query_as(
                "SELECT entity_key, change_seq, data FROM changes
                 WHERE event_id = $1 AND kind = 'revocation' AND entity_key = ANY($2)
                   AND NOT deleted",
            )
            .bind(event_id)
            .bind(&keys)
            .fetch_all(&mut **t)
            .await?;
            // Lateral for the same reason as the scans above.
            let old = sqlx::query_as(
                "SELECT pr.serial, pr.inside, pr.last_checkin, pr.entries
                 FROM UNNEST($2::int8[]) AS s(serial)
                 CROSS JOIN LATERAL (
                     SELECT * FROM presence WHERE event_id = $1 AND serial = s.serial
                     OFFSET 0) AS pr",
            )
            .bind(event_id)
            .bind(&list)
            .fetch_all(&mut **t)
            .await?;
            let existing = sqlx::query_as(
                "SELECT id, kind, ticket_serial, trigger_checkin, checkin_ids, gate_ids, resolution
                 FROM conflicts WHERE event_id = $1 AND ticket_serial = ANY($2)",
            )
            .bind(event_id)
            .bind(&list)
            .fetch_all(&mut **t)
            .await?;
            (scans, revs, old, existing)
        }
        Tx::Sqlite(t) => {
            let scans = sqlx::query_as(
                "SELECT id, gate_id, seq, ticket_serial, hlc, direction, decision, replica_cursor,
                        undoes
                 FROM checkins
                 WHERE event_id = $1 AND ticket_serial IN (SELECT value FROM json_each($2))
                   AND invalid IS NULL AND NOT is_test",
            )
            .bind(event_id)
            .bind(&json_list)
            .fetch_all(&mut **t)
            .await?;
            let revs = sqlx::query_as(
                "SELECT entity_key, change_seq, data FROM changes
                 WHERE event_id = $1 AND kind = 'revocation'
                   AND entity_key IN (SELECT value FROM json_each($2)) AND NOT deleted",
            )
            .bind(event_id)
            .bind(&json_keys)
            .fetch_all(&mut **t)
            .await?;
            let old = sqlx::query_as(
                "SELECT serial, inside, last_checkin, entries FROM presence
                 WHERE event_id = $1 AND serial IN (SELECT value FROM json_each($2))",
            )
            .bind(event_id)
            .bind(&json_list)
            .fetch_all(&mut **t)
            .await?;
            let existing = sqlx::query_as(
                "SELECT id, kind, ticket_serial, trigger_checkin, checkin_ids, gate_ids, resolution
                 FROM conflicts
                 WHERE event_id = $1 AND ticket_serial IN (SELECT value FROM json_each($2))",
            )
            .bind(event_id)
            .bind(&json_list)
            .fetch_all(&mut **t)
            .await?;
            (scans, revs, old, existing)
        }
    };
    Ok(Stored {
        scans,
        revs,
        old,
        existing,
    })
}

/// Up to this many tickets, [`read_stored`] reads in one round trip (rows as JSON) rather than
/// four: what a small writer waits for (an online redeem batch, a gate pushing a few scans)
/// is mostly round trips. Bulk pushes keep the binary rows.
const FEW_TICKETS: usize = 100;

impl Stored {
    /// The stored presence of a ticket read: `(inside, entries)`.
    pub fn presence(&self, serial: u64) -> Option<(bool, i64)> {
        let serial = i64::try_from(serial).ok()?;
        self.old
            .iter()
            .find(|p| p.serial == serial)
            .map(|p| (p.inside, p.entries))
    }
}

/// [`refold`] from inputs [`read_stored`] returned earlier in this transaction (the tickets
/// locked since), plus `pending`: check-ins `(serial, scan)` this transaction inserts before it
/// commits. The online redeem reads before it takes the gate lock and folds after, which keeps
/// reads out of the section that gate's redeems wait on.
pub async fn refold_stored(
    tx: &mut Tx,
    event_id: Uuid,
    serials: &BTreeSet<u64>,
    stored: Stored,
    pending: &[(u64, ScanEvent)],
    policy: FoldPolicy,
    now: i64,
) -> anyhow::Result<Refolded> {
    let mut out = Refolded::default();
    let Stored {
        scans,
        revs,
        old,
        existing,
    } = stored;

    // Group the inputs by ticket.
    let mut by_ticket: HashMap<u64, Vec<ScanEvent>> = HashMap::new();
    for r in scans {
        let serial = u64::try_from(r.ticket_serial)?;
        by_ticket.entry(serial).or_default().push(ScanEvent {
            id: r.id,
            gate_id: r.gate_id,
            seq: u64::try_from(r.seq)?,
            hlc: Hlc::from_u64(u64::try_from(r.hlc)?),
            direction: r.direction.parse::<Direction>()?,
            decision: r.decision.parse::<Decision>()?,
            replica_cursor: u64::try_from(r.replica_cursor)?,
            undoes: r.undoes,
        });
    }
    for (serial, scan) in pending {
        by_ticket.entry(*serial).or_default().push(*scan);
    }
    let mut revocations: HashMap<u64, Vec<RevocationEvent>> = HashMap::new();
    for r in revs {
        let serial: u64 = r.entity_key.parse()?;
        let data: RevocationChange = serde_json::from_str(&r.data)?;
        revocations
            .entry(serial)
            .or_default()
            .push(RevocationEvent {
                change_seq: u64::try_from(r.change_seq)?,
                hlc: data.hlc,
            });
    }
    let old: HashMap<u64, PresenceRow> = old
        .into_iter()
        .map(|p| Ok((u64::try_from(p.serial)?, p)))
        .collect::<anyhow::Result<_>>()?;
    let mut existing_by_ticket: HashMap<u64, Vec<ConflictRow>> = HashMap::new();
    for c in existing {
        existing_by_ticket
            .entry(u64::try_from(c.ticket_serial)?)
            .or_default()
            .push(c);
    }

    // Fold, and work out what to write.
    let mut presence_rows = Vec::new();
    let mut conflict_inserts: Vec<(u64, Conflict)> = Vec::new();
    let mut conflict_updates: Vec<(Uuid, Conflict)> = Vec::new();
    let mut conflict_deletes: Vec<Uuid> = Vec::new();
    for &serial in serials {
        let scans = by_ticket.remove(&serial).unwrap_or_default();
        let revs = revocations.remove(&serial).unwrap_or_default();
        let st = fold(&scans, &revs, policy);
        let before = old.get(&serial);
        // No row yet is the same as "never moved": a ticket nobody scanned gets no presence
        // row and no change for gates to download.
        let (was_inside, was_entries, was_last) =
            before.map_or((false, 0, None), |b| (b.inside, b.entries, b.last_checkin));
        let changed = was_inside != st.inside
            || was_entries != i64::from(st.entries)
            || was_last != st.last_movement.map(|m| m.id);
        if changed {
            presence_rows.push((serial, st.clone(), before.is_some()));
            out.changes.push((
                ChangeData::Presence(PresenceChange {
                    serial,
                    inside: st.inside,
                    gate_id: st.last_movement.map(|m| m.gate_id),
                    checkin_id: st.last_movement.map(|m| m.id),
                    hlc: st.last_movement.map(|m| m.hlc).unwrap_or_default(),
                    entries: st.entries,
                    day: st.day,
                    day_entries: st.day_entries,
                }),
                false,
            ));
        }
        // Zone conflicts are the capacity replay's (`store::capacity`), not this fold's.
        let mut have: HashMap<(String, Uuid), ConflictRow> = existing_by_ticket
            .remove(&serial)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.kind != ConflictKind::OverCapacity.as_str())
            .map(|c| ((c.kind.clone(), c.trigger_checkin), c))
            .collect();
        for c in &st.conflicts {
            match have.remove(&(c.kind.as_str().to_string(), c.trigger)) {
                None => conflict_inserts.push((serial, c.clone())),
                Some(row) => {
                    let ids = serde_json::to_string(&c.checkin_ids)?;
                    let gates = serde_json::to_string(&c.gate_ids)?;
                    if row.checkin_ids != ids || row.gate_ids != gates {
                        conflict_updates.push((row.id, c.clone()));
                    }
                }
            }
        }
        // Conflicts the new fold no longer produces (events arrived that reorder history) go,
        // unless an organizer already resolved them: that decision stays on record.
        conflict_deletes.extend(
            have.into_values()
                .filter(|c| c.resolution.is_none())
                .map(|c| c.id),
        );
        out.states.insert(serial, st);
    }

    write_presence(tx, event_id, &presence_rows).await?;
    for (serial, c) in conflict_inserts {
        out.live
            .push(insert_conflict(tx, event_id, serial, &c, now).await?);
    }
    for (id, c) in conflict_updates {
        tx_run!(tx, conn => {
            sqlx::query("UPDATE conflicts SET checkin_ids = $2, gate_ids = $3 WHERE id = $1")
                .bind(id)
                .bind(serde_json::to_string(&c.checkin_ids)?)
                .bind(serde_json::to_string(&c.gate_ids)?)
                .execute(&mut *conn)
                .await?;
        });
    }
    for id in conflict_deletes {
        tx_run!(tx, conn => {
            sqlx::query("DELETE FROM conflicts WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        });
    }
    Ok(out)
}

/// Writes the presence rows `(serial, state, has_row)`. On PostgreSQL, many tickets without a
/// row yet (first admissions: nearly all of a pushed batch) are `COPY`ed: the caller holds
/// their locks and read their (absent) rows under them, so none can appear meanwhile. The rest
/// are upserted.
async fn write_presence(
    tx: &mut Tx,
    event_id: Uuid,
    rows: &[(u64, TicketState, bool)],
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if let Tx::Postgres(t) = tx {
        let new = rows.iter().filter(|r| !r.2).count();
        if new >= COPY_CHECKINS_MIN {
            let mut copy = crate::store::pgcopy::CopyRows::with_capacity(new * 160);
            for (s, st, _) in rows.iter().filter(|r| !r.2) {
                copy.uuid(event_id)
                    .int(Some(i64_of(*s)?))
                    .boolean(st.inside);
                for id in [
                    st.canonical_admission,
                    st.last_movement.map(|m| m.id),
                    st.last_movement.map(|m| m.gate_id),
                ] {
                    match id {
                        Some(u) => copy.uuid(u),
                        None => copy.text(None),
                    };
                }
                copy.int(Some(i64_of(
                    st.last_movement.map_or(0, |m| m.hlc.as_u64()),
                )?))
                .int(Some(i64::from(st.entries)))
                .int(Some(i64::from(st.exits)));
                copy.end_row();
            }
            crate::store::pgcopy::copy_in(
                t,
                "COPY presence (event_id, serial, inside, canonical_checkin, last_checkin,
                        last_gate, hlc, entries, exits) FROM STDIN",
                &copy,
            )
            .await?;
            let rest: Vec<_> = rows.iter().filter(|r| r.2).collect();
            return upsert_presence(tx, event_id, &rest).await;
        }
    }
    upsert_presence(tx, event_id, &rows.iter().collect::<Vec<_>>()).await
}

async fn upsert_presence(
    tx: &mut Tx,
    event_id: Uuid,
    rows: &[&(u64, TicketState, bool)],
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(t) => {
            let mut serials = Vec::with_capacity(rows.len());
            let mut inside = Vec::with_capacity(rows.len());
            let mut canonical: Vec<Option<Uuid>> = Vec::with_capacity(rows.len());
            let mut last: Vec<Option<Uuid>> = Vec::with_capacity(rows.len());
            let mut gate: Vec<Option<Uuid>> = Vec::with_capacity(rows.len());
            let mut hlc = Vec::with_capacity(rows.len());
            let mut entries = Vec::with_capacity(rows.len());
            let mut exits = Vec::with_capacity(rows.len());
            for (s, st, _) in rows {
                serials.push(i64_of(*s)?);
                inside.push(st.inside);
                canonical.push(st.canonical_admission);
                last.push(st.last_movement.map(|m| m.id));
                gate.push(st.last_movement.map(|m| m.gate_id));
                hlc.push(i64_of(st.last_movement.map_or(0, |m| m.hlc.as_u64()))?);
                entries.push(i64::from(st.entries));
                exits.push(i64::from(st.exits));
            }
            sqlx::query(
                "INSERT INTO presence (event_id, serial, inside, canonical_checkin, last_checkin,
                        last_gate, hlc, entries, exits)
                 SELECT $1, u.* FROM UNNEST($2::int8[], $3::bool[], $4::uuid[], $5::uuid[],
                        $6::uuid[], $7::int8[], $8::int8[], $9::int8[])
                   AS u(serial, inside, canonical, last, gate, hlc, entries, exits)
                 ON CONFLICT (event_id, serial) DO UPDATE SET inside = EXCLUDED.inside,
                    canonical_checkin = EXCLUDED.canonical_checkin,
                    last_checkin = EXCLUDED.last_checkin, last_gate = EXCLUDED.last_gate,
                    hlc = EXCLUDED.hlc, entries = EXCLUDED.entries, exits = EXCLUDED.exits",
            )
            .bind(event_id)
            .bind(serials)
            .bind(inside)
            .bind(canonical)
            .bind(last)
            .bind(gate)
            .bind(hlc)
            .bind(entries)
            .bind(exits)
            .execute(&mut **t)
            .await?;
        }
        Tx::Sqlite(t) => {
            for (s, st, _) in rows {
                sqlx::query(
                    "INSERT INTO presence (event_id, serial, inside, canonical_checkin,
                            last_checkin, last_gate, hlc, entries, exits)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (event_id, serial) DO UPDATE SET inside = excluded.inside,
                        canonical_checkin = excluded.canonical_checkin,
                        last_checkin = excluded.last_checkin, last_gate = excluded.last_gate,
                        hlc = excluded.hlc, entries = excluded.entries, exits = excluded.exits",
                )
                .bind(event_id)
                .bind(i64_of(*s)?)
                .bind(st.inside)
                .bind(st.canonical_admission)
                .bind(st.last_movement.map(|m| m.id))
                .bind(st.last_movement.map(|m| m.gate_id))
                .bind(i64_of(st.last_movement.map_or(0, |m| m.hlc.as_u64()))?)
                .bind(i64::from(st.entries))
                .bind(i64::from(st.exits))
                .execute(&mut **t)
                .await?;
            }
        }
    }
    Ok(())
}

/// The conflict kinds a given check-in triggered in the new states.
pub fn conflicts_of(
    states: &BTreeMap<u64, TicketState>,
    serial: u64,
    id: Uuid,
) -> Vec<ConflictKind> {
    states
        .get(&serial)
        .map(|st| {
            st.conflicts
                .iter()
                .filter(|c| c.trigger == id)
                .map(|c| c.kind)
                .collect()
        })
        .unwrap_or_default()
}

#[derive(FromRow)]
struct Existing {
    id: Uuid,
}

/// Locks the gate row (PostgreSQL: `FOR UPDATE`; SQLite's writer lock is already held) and
/// returns its acknowledged seq. The gate row lock orders concurrent pushes of one gate. Taken
/// after the ticket locks: every writer takes tickets, then gate rows, then the change counter
/// (the online redeem too), so no two can wait on each other in a cycle.
/// Stores a detected conflict (once per kind and trigger check-in) and returns its live item.
pub(crate) async fn insert_conflict(
    tx: &mut Tx,
    event_id: Uuid,
    serial: u64,
    c: &Conflict,
    now: i64,
) -> anyhow::Result<Live> {
    let id = Uuid::now_v7();
    tx_run!(tx, conn => {
        sqlx::query(
            "INSERT INTO conflicts (id, event_id, kind, ticket_serial, trigger_checkin,
                    checkin_ids, gate_ids, detected_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (event_id, kind, trigger_checkin) DO NOTHING",
        )
        .bind(id)
        .bind(event_id)
        .bind(c.kind.as_str())
        .bind(i64_of(serial)?)
        .bind(c.trigger)
        .bind(serde_json::to_string(&c.checkin_ids)?)
        .bind(serde_json::to_string(&c.gate_ids)?)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    });
    Ok(Live::Conflict {
        event_id,
        conflict_id: id,
        kind: c.kind,
        ticket_serial: serial,
    })
}

pub async fn lock_gate_acked(tx: &mut Tx, gate_id: Uuid) -> sqlx::Result<i64> {
    Ok(match tx {
        Tx::Postgres(t) => {
            sqlx::query_scalar("SELECT acked_seq FROM gates WHERE id = $1 FOR UPDATE")
                .bind(gate_id)
                .fetch_one(&mut **t)
                .await?
        }
        Tx::Sqlite(t) => {
            sqlx::query_scalar("SELECT acked_seq FROM gates WHERE id = $1")
                .bind(gate_id)
                .fetch_one(&mut **t)
                .await?
        }
    })
}

pub async fn existing_ids(tx: &mut Tx, ids: &[Uuid]) -> anyhow::Result<HashMap<Uuid, ()>> {
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
pub async fn advance_acked(tx: &mut Tx, gate_id: Uuid, from: i64) -> anyhow::Result<u64> {
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
