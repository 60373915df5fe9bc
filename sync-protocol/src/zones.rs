//! Zones with a capacity (rooms, sessions, areas): the rules every deciding side and the merge
//! share.
//!
//! A zone is one bit of the ticket's `scopes` bitmask (bit 0..=15), so ticket types already map
//! onto zones through the scopes they carry. A gate admits *into* every defined zone whose bit is
//! in its `zone_mask` (a gate with mask 0 — the main entrance of a one-room event — admits into
//! no zone). Occupancy of a zone is the number of holders whose current admission was made
//! through a gate of that zone and who have not left since (an exit, a transfer into another
//! zone, or the daily automatic check-out of [`crate::days`]).
//!
//! - [`check_capacity`]: a hard capacity refuses the entry with `zone_full`; a soft threshold
//!   admits with a warning for the screen.
//! - [`is_transfer`]: entering a *transfer* zone while inside another zone first checks the
//!   holder out of the zone they are in (the gate records an exit, then the entry), so session
//!   attendance and room occupancy both stay right.
//! - [`capacity_conflicts`]: the merge's view: replaying the stored movements of a zone in
//!   `(hlc, gate_id, seq)` order, the entry that first takes the occupancy above the capacity
//!   raises one `over_capacity` conflict (gates that could not see each other overshot); the
//!   next one is raised only after the occupancy came back within the capacity.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::days::DailyCheckout;
use crate::hlc::Hlc;
use crate::merge::Conflict;
pub use crate::wire::ZoneRule;
use crate::wire::{ConflictKind, Direction, Reason};

/// Highest zone bit (the scopes bitmask has 16 bits).
pub const MAX_ZONE_BIT: u8 = 15;

impl ZoneRule {
    /// The zone's bit in a scopes mask.
    pub fn mask(&self) -> u16 {
        1u16.checked_shl(u32::from(self.bit)).unwrap_or(0)
    }
}

/// The zones a gate with `zone_mask` admits into.
pub fn gate_zones(zone_mask: u16, zones: &[ZoneRule]) -> impl Iterator<Item = &ZoneRule> {
    zones
        .iter()
        .filter(move |z| z.mask() != 0 && zone_mask & z.mask() != 0)
}

/// The mask of defined zones a gate with `zone_mask` admits into.
pub fn defined_zone_mask(zone_mask: u16, zones: &[ZoneRule]) -> u16 {
    gate_zones(zone_mask, zones).fold(0, |m, z| m | z.mask())
}

/// What the screen shows besides an admission: the zone is nearly full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityWarning {
    pub zone: String,
    /// Inside after this entry.
    pub occupancy: u32,
    pub soft_capacity: u32,
    pub capacity: Option<u32>,
}

impl CapacityWarning {
    pub fn message(&self) -> String {
        match self.capacity {
            Some(c) => format!(
                "{} is nearly full: {} of {} inside",
                self.zone, self.occupancy, c
            ),
            None => format!(
                "{} is over its soft limit: {} inside (limit {})",
                self.zone, self.occupancy, self.soft_capacity
            ),
        }
    }
}

/// An entry into `zone` while `occupancy` holders are inside (not counting the one at the
/// gate): `zone_full` at the hard capacity, a warning when the entry reaches the soft threshold.
pub fn check_capacity(zone: &ZoneRule, occupancy: u32) -> Result<Option<CapacityWarning>, Reason> {
    if zone.capacity.is_some_and(|c| occupancy >= c) {
        return Err(Reason::ZoneFull);
    }
    let after = occupancy.saturating_add(1);
    Ok(zone
        .soft_capacity
        .filter(|&soft| after >= soft)
        .map(|soft| CapacityWarning {
            zone: zone.name.clone(),
            occupancy: after,
            soft_capacity: soft,
            capacity: zone.capacity,
        }))
}

/// Whether an entry through a gate admitting into `gate_mask` is a zone transfer for a holder
/// who is inside through a gate admitting into `current_mask` (both as [`defined_zone_mask`]):
/// the gate opens a transfer zone the holder is not in yet.
pub fn is_transfer(current_mask: u16, gate_mask: u16, zones: &[ZoneRule]) -> bool {
    zones
        .iter()
        .any(|z| z.transfer && gate_mask & z.mask() != 0 && current_mask & z.mask() == 0)
}

/// One effective movement as the zone fold reads it: an admitted, not undone scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ZoneMove {
    pub hlc: Hlc,
    pub gate_id: Uuid,
    pub seq: u64,
    pub id: Uuid,
    pub serial: u64,
    pub direction: Direction,
    /// The defined zones the scan's gate admits into ([`defined_zone_mask`]).
    pub zones: u16,
}

/// The `over_capacity` conflicts of one zone over the effective movements of every ticket
/// (any order; duplicates ignored), with the event's daily check-out if any. Pure and
/// deterministic: the same set of movements gives the same conflicts.
pub fn capacity_conflicts(
    zone: &ZoneRule,
    moves: &[ZoneMove],
    checkout: Option<DailyCheckout>,
) -> Vec<Conflict> {
    let Some(capacity) = zone.capacity else {
        return Vec::new();
    };
    let bit = zone.mask();
    let sorted: BTreeSet<ZoneMove> = moves.iter().copied().collect();
    // serial -> the hlc of the entry that has them inside the zone.
    let mut inside: BTreeMap<u64, Hlc> = BTreeMap::new();
    let mut over = false;
    let mut out = Vec::new();
    for m in sorted {
        if let Some(c) = checkout {
            inside.retain(|_, since| !c.checked_out_between(since.wall_ms(), m.hlc.wall_ms()));
        }
        if inside.len() as u64 <= u64::from(capacity) {
            over = false;
        }
        match m.direction {
            Direction::In if m.zones & bit != 0 => {
                inside.insert(m.serial, m.hlc);
                if inside.len() as u64 > u64::from(capacity) && !over {
                    over = true;
                    out.push(Conflict {
                        kind: ConflictKind::OverCapacity,
                        trigger: m.id,
                        checkin_ids: vec![m.id],
                        gate_ids: vec![m.gate_id],
                    });
                }
            }
            // An entry into another zone is a transfer out of this one only when the gate
            // recorded it as such (an exit first); any exit leaves the zone.
            Direction::In => {}
            Direction::Out => {
                inside.remove(&m.serial);
            }
        }
    }
    out
}

/// The number inside a zone at `now_ms` after the given movements (for reports and tests).
pub fn occupancy(
    zone: &ZoneRule,
    moves: &[ZoneMove],
    checkout: Option<DailyCheckout>,
    now_ms: u64,
) -> u32 {
    let bit = zone.mask();
    let sorted: BTreeSet<ZoneMove> = moves.iter().copied().collect();
    let mut inside: BTreeMap<u64, Hlc> = BTreeMap::new();
    for m in sorted {
        match m.direction {
            Direction::In if m.zones & bit != 0 => {
                inside.insert(m.serial, m.hlc);
            }
            Direction::In => {}
            Direction::Out => {
                inside.remove(&m.serial);
            }
        }
    }
    if let Some(c) = checkout {
        inside.retain(|_, since| !c.checked_out_between(since.wall_ms(), now_ms));
    }
    u32::try_from(inside.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn room(capacity: Option<u32>, soft: Option<u32>) -> ZoneRule {
        ZoneRule {
            bit: 1,
            name: "Room 1".into(),
            capacity,
            soft_capacity: soft,
            transfer: false,
        }
    }

    const A: Uuid = Uuid::from_u128(0xA);
    const B: Uuid = Uuid::from_u128(0xB);

    fn mv(n: u128, gate: Uuid, t: u64, serial: u64, dir: Direction, zones: u16) -> ZoneMove {
        ZoneMove {
            hlc: Hlc::new(t, 0),
            gate_id: gate,
            seq: n as u64,
            id: Uuid::from_u128(0x100 + n),
            serial,
            direction: dir,
            zones,
        }
    }

    #[test]
    fn the_entry_at_capacity_is_zone_full_and_the_soft_threshold_warns() {
        let z = room(Some(2), Some(2));
        assert_eq!(check_capacity(&z, 0), Ok(None));
        let w = check_capacity(&z, 1).unwrap().unwrap();
        assert_eq!((w.occupancy, w.soft_capacity), (2, 2));
        assert!(w.message().contains("2 of 2"));
        assert_eq!(check_capacity(&z, 2), Err(Reason::ZoneFull));
        assert_eq!(check_capacity(&z, 7), Err(Reason::ZoneFull));
        assert_eq!(check_capacity(&room(None, None), 10_000), Ok(None));
    }

    #[test]
    fn gates_admit_into_the_defined_zones_of_their_mask() {
        let zones = vec![
            room(Some(2), None),
            ZoneRule {
                bit: 3,
                ..room(None, None)
            },
        ];
        assert_eq!(defined_zone_mask(0, &zones), 0);
        assert_eq!(defined_zone_mask(0b10, &zones), 0b10);
        assert_eq!(defined_zone_mask(0b1111, &zones), 0b1010);
        assert_eq!(defined_zone_mask(0b0100, &zones), 0);
    }

    #[test]
    fn a_transfer_zone_takes_the_holder_out_of_the_zone_they_are_in() {
        let hall = ZoneRule {
            bit: 0,
            ..room(None, None)
        };
        let session = ZoneRule {
            bit: 1,
            transfer: true,
            ..room(Some(50), None)
        };
        let zones = vec![hall, session];
        assert!(is_transfer(0b01, 0b10, &zones));
        // Already in the session: not a transfer (already inside).
        assert!(!is_transfer(0b10, 0b10, &zones));
        // Back into the hall: the hall is not a transfer zone.
        assert!(!is_transfer(0b10, 0b01, &zones));
    }

    #[test]
    fn two_gates_overshooting_give_one_conflict_in_any_order() {
        let z = room(Some(2), None);
        let moves = vec![
            mv(1, A, 100, 1, Direction::In, 0b10),
            mv(2, A, 200, 2, Direction::In, 0b10),
            mv(3, B, 250, 3, Direction::In, 0b10),
            mv(4, B, 260, 4, Direction::In, 0b10),
        ];
        let c = capacity_conflicts(&z, &moves, None);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, ConflictKind::OverCapacity);
        assert_eq!(c[0].trigger, moves[2].id);
        assert_eq!(c[0].gate_ids, vec![B]);
        let mut rev = moves.clone();
        rev.reverse();
        rev.extend(moves.iter().copied());
        assert_eq!(capacity_conflicts(&z, &rev, None), c);
        assert_eq!(occupancy(&z, &moves, None, 300), 4);
    }

    #[test]
    fn exits_make_room_and_a_second_overshoot_is_a_second_conflict() {
        let z = room(Some(1), None);
        let moves = vec![
            mv(1, A, 100, 1, Direction::In, 0b10),
            mv(2, B, 110, 2, Direction::In, 0b10),
            mv(3, A, 120, 1, Direction::Out, 0),
            mv(4, A, 130, 2, Direction::Out, 0),
            mv(5, A, 140, 3, Direction::In, 0b10),
            mv(6, B, 150, 4, Direction::In, 0b10),
            // Entries through gates of other zones do not count here.
            mv(7, B, 160, 5, Direction::In, 0b01),
        ];
        let c = capacity_conflicts(&z, &moves, None);
        assert_eq!(
            c.iter().map(|c| c.trigger).collect::<Vec<_>>(),
            vec![moves[1].id, moves[5].id]
        );
        assert_eq!(occupancy(&z, &moves, None, 200), 2);
        // A repeated entry of someone inside is not a second head.
        let again = vec![
            mv(1, A, 100, 1, Direction::In, 0b10),
            mv(2, B, 110, 1, Direction::In, 0b10),
        ];
        assert!(capacity_conflicts(&z, &again, None).is_empty());
    }

    #[test]
    fn the_daily_check_out_empties_the_zone() {
        let z = room(Some(1), None);
        let day = 86_400_000;
        // Check-out at 23:00 UTC.
        let c = DailyCheckout {
            minute_of_day: 23 * 60,
            utc_offset_minutes: 0,
        };
        let moves = vec![
            mv(1, A, 10 * 3_600_000, 1, Direction::In, 0b10),
            mv(2, A, day + 9 * 3_600_000, 2, Direction::In, 0b10),
        ];
        assert!(capacity_conflicts(&z, &moves, Some(c)).is_empty());
        assert_eq!(capacity_conflicts(&z, &moves, None).len(), 1);
        assert_eq!(occupancy(&z, &moves[..1], Some(c), 22 * 3_600_000), 1);
        assert_eq!(occupancy(&z, &moves[..1], Some(c), 23 * 3_600_000), 0);
    }
}
