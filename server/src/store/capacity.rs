//! The merge of zone capacities (`sync_protocol::zones::capacity_conflicts`): after a push
//! stored entries through gates of a zone with a hard capacity, the zone's stored movements are
//! replayed and an `over_capacity` conflict is written for each overshoot (gates that could not
//! see each other both let someone in). Like the per-ticket fold, the result depends only on
//! the set of stored check-ins: conflicts the replay no longer produces are removed unless an
//! organizer resolved them.
//!
//! Each replayed zone is locked (a transaction-scoped advisory lock per zone, in bit order, on
//! PostgreSQL; SQLite's writer lock already serialises), so two gates pushing into one zone at
//! once are replayed one after the other and the second sees the first's entries.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::FromRow;
use sync_protocol::Hlc;
use sync_protocol::days::DailyCheckout;
use sync_protocol::merge::Conflict;
use sync_protocol::wire::{ConflictKind, Direction};
use sync_protocol::zones::{ZoneMove, ZoneRule, capacity_conflicts, defined_zone_mask};
use uuid::Uuid;

use super::{Tx, tx_run};
use crate::domain::live::Live;

#[derive(FromRow)]
struct GateMask {
    id: Uuid,
    zone_mask: i64,
}

#[derive(FromRow)]
struct MoveRow {
    id: Uuid,
    gate_id: Uuid,
    seq: i64,
    ticket_serial: i64,
    hlc: i64,
    direction: String,
    undoes: Option<Uuid>,
}

#[derive(FromRow)]
struct ExistingRow {
    id: Uuid,
    trigger_checkin: Uuid,
    resolution: Option<String>,
}

/// What a capacity replay wrote: conflicts by their trigger check-in, and live items.
#[derive(Debug, Default)]
pub struct Replayed {
    pub conflicts: Vec<Conflict>,
    pub live: Vec<Live>,
}

/// Replays the capacity zones that `entry_gates` (gates through which this transaction stored
/// admitted entries) admit into, and writes their `over_capacity` conflicts.
pub async fn replay(
    tx: &mut Tx,
    event_id: Uuid,
    entry_gates: &BTreeSet<Uuid>,
    checkout: Option<DailyCheckout>,
    now: i64,
) -> anyhow::Result<Replayed> {
    let mut out = Replayed::default();
    if entry_gates.is_empty() {
        return Ok(out);
    }
    let zones: Vec<ZoneRule> = super::zones::rules_tx(tx, event_id)
        .await?
        .into_iter()
        .filter(|z| z.capacity.is_some())
        .collect();
    if zones.is_empty() {
        return Ok(out);
    }
    let gates: Vec<GateMask> = tx_run!(tx, c => {
        sqlx::query_as("SELECT id, zone_mask FROM gates WHERE event_id = $1")
            .bind(event_id)
            .fetch_all(&mut *c)
            .await?
    });
    let masks: HashMap<Uuid, u16> = gates
        .iter()
        .map(|g| {
            let m = u16::try_from(g.zone_mask).unwrap_or(0);
            (g.id, defined_zone_mask(m, &zones))
        })
        .collect();
    let touched: u16 = entry_gates
        .iter()
        .filter_map(|g| masks.get(g))
        .fold(0, |m, z| m | z);
    let affected: Vec<&ZoneRule> = zones.iter().filter(|z| touched & z.mask() != 0).collect();
    if affected.is_empty() {
        return Ok(out);
    }
    if let Tx::Postgres(t) = tx {
        let bits: Vec<i32> = affected.iter().map(|z| i32::from(z.bit)).collect();
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext($1::text || ':zone'), b)
             FROM (SELECT DISTINCT b FROM UNNEST($2::int4[]) AS b ORDER BY b) AS sorted",
        )
        .bind(event_id)
        .bind(bits)
        .execute(&mut **t)
        .await?;
    }
    let existing: Vec<ExistingRow> = tx_run!(tx, c => {
        sqlx::query_as(
            "SELECT id, trigger_checkin, resolution FROM conflicts
             WHERE event_id = $1 AND kind = $2",
        )
        .bind(event_id)
        .bind(ConflictKind::OverCapacity.as_str())
        .fetch_all(&mut *c)
        .await?
    });
    let mut existing: HashMap<Uuid, ExistingRow> = existing
        .into_iter()
        .map(|e| (e.trigger_checkin, e))
        .collect();

    for zone in affected {
        let zone_gates: Vec<Uuid> = masks
            .iter()
            .filter(|(_, m)| **m & zone.mask() != 0)
            .map(|(g, _)| *g)
            .collect();
        let rows = zone_moves(tx, event_id, &zone_gates).await?;
        let undone: BTreeSet<Uuid> = rows.iter().filter_map(|r| r.undoes).collect();
        let mut moves = Vec::with_capacity(rows.len());
        let mut entry_ids = BTreeSet::new();
        let mut serial_of = BTreeMap::new();
        for r in rows {
            if r.undoes.is_some() || undone.contains(&r.id) {
                continue;
            }
            let direction: Direction = r.direction.parse()?;
            let zones = masks.get(&r.gate_id).copied().unwrap_or(0);
            if direction == Direction::In && zones & zone.mask() != 0 {
                entry_ids.insert(r.id);
            }
            let serial = u64::try_from(r.ticket_serial)?;
            serial_of.insert(r.id, serial);
            moves.push(ZoneMove {
                hlc: Hlc::from_u64(u64::try_from(r.hlc)?),
                gate_id: r.gate_id,
                seq: u64::try_from(r.seq)?,
                id: r.id,
                serial,
                direction,
                zones,
            });
        }
        let found = capacity_conflicts(zone, &moves, checkout);
        let produced: BTreeSet<Uuid> = found.iter().map(|c| c.trigger).collect();
        for c in &found {
            if existing.remove(&c.trigger).is_some() {
                continue;
            }
            let serial = serial_of.get(&c.trigger).copied().unwrap_or(0);
            out.live
                .push(super::checkins::insert_conflict(tx, event_id, serial, c, now).await?);
        }
        out.conflicts.extend(found);
        // Overshoots of this zone the replay no longer finds (history reordered by a late
        // push) go, unless an organizer already resolved them.
        let stale: Vec<Uuid> = existing
            .iter()
            .filter(|(trigger, e)| {
                entry_ids.contains(*trigger)
                    && !produced.contains(*trigger)
                    && e.resolution.is_none()
            })
            .map(|(_, e)| e.id)
            .collect();
        for id in stale {
            tx_run!(tx, conn => {
                sqlx::query("DELETE FROM conflicts WHERE id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            });
        }
    }
    Ok(out)
}

/// Every admitted, valid movement (undo rows included, to cancel what they undo) of the tickets
/// that entered through one of `zone_gates`.
async fn zone_moves(
    tx: &mut Tx,
    event_id: Uuid,
    zone_gates: &[Uuid],
) -> anyhow::Result<Vec<MoveRow>> {
    if zone_gates.is_empty() {
        return Ok(Vec::new());
    }
    Ok(match tx {
        Tx::Postgres(t) => {
            sqlx::query_as(
                "SELECT id, gate_id, seq, ticket_serial, hlc, direction, undoes FROM checkins
                 WHERE event_id = $1 AND invalid IS NULL AND decision = 'admit'
                   AND ticket_serial IN (
                       SELECT ticket_serial FROM checkins
                       WHERE event_id = $1 AND gate_id = ANY($2) AND direction = 'in'
                         AND decision = 'admit' AND invalid IS NULL
                         AND ticket_serial IS NOT NULL)",
            )
            .bind(event_id)
            .bind(zone_gates)
            .fetch_all(&mut **t)
            .await?
        }
        Tx::Sqlite(t) => {
            let mut serials: BTreeSet<i64> = BTreeSet::new();
            for g in zone_gates {
                let got: Vec<i64> = sqlx::query_scalar(
                    "SELECT DISTINCT ticket_serial FROM checkins
                     WHERE event_id = $1 AND gate_id = $2 AND direction = 'in'
                       AND decision = 'admit' AND invalid IS NULL AND ticket_serial IS NOT NULL",
                )
                .bind(event_id)
                .bind(g)
                .fetch_all(&mut **t)
                .await?;
                serials.extend(got);
            }
            let list = serde_json::to_string(&serials)?;
            sqlx::query_as(
                "SELECT id, gate_id, seq, ticket_serial, hlc, direction, undoes FROM checkins
                 WHERE event_id = $1 AND invalid IS NULL AND decision = 'admit'
                   AND ticket_serial IN (SELECT value FROM json_each($2))",
            )
            .bind(event_id)
            .bind(list)
            .fetch_all(&mut **t)
            .await?
        }
    })
}
