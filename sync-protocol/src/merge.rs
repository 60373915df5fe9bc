//! The merge fold of DESIGN §5: the events of one ticket in, its admission state and conflicts out.
//!
//! The check-in log is a grow-only set keyed by id, so the fold first removes duplicates, drops
//! scans cancelled by an undo, and sorts what is left by `(hlc, gate_id, seq)`; the result is
//! therefore a function of the *set* of events, whatever order and however many times they
//! arrived (property-tested below). Admissions are never taken back: a person who walked in stays
//! counted and the conflict says what happened.
//!
//! | scan  | state before | result |
//! |-------|--------------|--------|
//! | entry | outside      | admitted; the earliest is the canonical admission |
//! | entry | inside       | `duplicate_admission` (other gate) or `passback` (same gate) |
//! | exit  | inside       | outside |
//! | exit  | outside      | `exit_without_entry` |
//! | entry after a revocation newer than the scan's `replica_cursor` | | `late_revocation` |
//! | entry after a revocation the gate already had | | `admitted_despite_known_revocation` |
//! | revocation while inside | | `revoked_while_inside` |
//!
//! Only scans the gate *admitted* move a person; rejected scans are kept in the log for the
//! record but change nothing.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::hlc::Hlc;
use crate::wire::{ConflictKind, Decision, Direction};

/// The part of a check-in the fold needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScanEvent {
    pub id: Uuid,
    pub gate_id: Uuid,
    pub seq: u64,
    pub hlc: Hlc,
    pub direction: Direction,
    pub decision: Decision,
    pub replica_cursor: u64,
    /// Set on an undo event: the scan it cancels.
    pub undoes: Option<Uuid>,
}

/// A revocation of the ticket, placed in the order by the server clock when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevocationEvent {
    /// The server change that carried the revocation to gates.
    pub change_seq: u64,
    pub hlc: Hlc,
}

/// Fold options that come from the event's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FoldPolicy {
    /// The event allows any number of entries per ticket: a second entry is not a conflict.
    pub allow_multiple_checkins: bool,
    /// The event's daily automatic check-out ([`crate::days`]): a holder admitted before a
    /// check-out instant is outside after it, so the next morning's entry is a clean
    /// admission, not a duplicate.
    pub daily_checkout: Option<crate::days::DailyCheckout>,
    /// The event's local time minus UTC in minutes: the days entries are counted on.
    pub utc_offset_minutes: i16,
}

/// One conflict. `trigger` (a check-in id) with `kind` identifies it: the same set of events
/// always gives the same `(kind, trigger)` pairs, so stores can upsert by that key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conflict {
    pub kind: ConflictKind,
    /// The check-in that caused the conflict (for `revoked_while_inside`, the admission that was
    /// inside when the revocation came).
    pub trigger: Uuid,
    /// The check-ins involved, earliest first.
    pub checkin_ids: Vec<Uuid>,
    /// Their gates, in the same order.
    pub gate_ids: Vec<Uuid>,
}

/// The derived state of one ticket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TicketState {
    pub inside: bool,
    /// The earliest effective admission.
    pub canonical_admission: Option<Uuid>,
    /// The scan that set the current state (entry that let them in, or exit that let them out).
    pub last_movement: Option<ScanEvent>,
    /// Effective entries (a duplicate admission of someone already inside is not an entry).
    pub entries: u32,
    pub exits: u32,
    /// Times the daily automatic check-out let the holder out (between two scans).
    pub auto_checkouts: u32,
    /// The event-local day of the last effective entry, and the effective entries that day
    /// (what daily limits count).
    pub day: i32,
    pub day_entries: u32,
    pub revoked: bool,
    /// Sorted by `(kind, trigger)`.
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    // At equal clocks a revocation sorts before scans: the server had decided before any gate
    // could see it, so a scan stamped with the same HLC is treated as after it.
    Revocation(RevocationEvent),
    Scan(ScanEvent),
}

impl Item {
    fn key(&self) -> (Hlc, u8, Uuid, u64, Uuid) {
        match self {
            Item::Revocation(r) => (r.hlc, 0, Uuid::nil(), r.change_seq, Uuid::nil()),
            Item::Scan(s) => (s.hlc, 1, s.gate_id, s.seq, s.id),
        }
    }
}

/// Folds the events of one ticket. Pure and deterministic.
pub fn fold(
    scans: &[ScanEvent],
    revocations: &[RevocationEvent],
    policy: FoldPolicy,
) -> TicketState {
    // Grow-only set by id. Two different payloads under one id would be a client bug; keep the
    // smallest so the choice does not depend on arrival order.
    let mut by_id: BTreeMap<Uuid, ScanEvent> = BTreeMap::new();
    for s in scans {
        by_id
            .entry(s.id)
            .and_modify(|e| *e = (*e).min(*s))
            .or_insert(*s);
    }
    let undone: BTreeSet<Uuid> = by_id.values().filter_map(|s| s.undoes).collect();

    let mut items: Vec<Item> = by_id
        .values()
        .filter(|s| s.undoes.is_none() && s.decision == Decision::Admit && !undone.contains(&s.id))
        .map(|s| Item::Scan(*s))
        .collect();
    let revs: BTreeSet<RevocationEvent> = revocations.iter().copied().collect();
    items.extend(revs.iter().map(|r| Item::Revocation(*r)));
    items.sort_by_key(Item::key);

    let mut st = TicketState::default();
    let mut current: Option<ScanEvent> = None; // the admission that has them inside
    let mut revocation: Option<RevocationEvent> = None;
    let mut conflicts = BTreeSet::new();
    // The daily check-out let the holder out since their last movement: a late exit scan of
    // theirs is expected, not an anomaly.
    let mut auto_out = false;

    for item in items {
        if let (Some(c), Some(adm), Item::Scan(s)) = (policy.daily_checkout, current, &item)
            && c.checked_out_between(adm.hlc.wall_ms(), s.hlc.wall_ms())
        {
            current = None;
            auto_out = true;
            st.auto_checkouts += 1;
        }
        match item {
            Item::Revocation(r) => {
                if let (Some(adm), None) = (current, revocation) {
                    conflicts.insert(Conflict {
                        kind: ConflictKind::RevokedWhileInside,
                        trigger: adm.id,
                        checkin_ids: vec![adm.id],
                        gate_ids: vec![adm.gate_id],
                    });
                }
                revocation.get_or_insert(r);
                st.revoked = true;
            }
            Item::Scan(s) if s.direction == Direction::In => {
                if let Some(r) = revocation {
                    let kind = if r.change_seq > s.replica_cursor {
                        ConflictKind::LateRevocation
                    } else {
                        ConflictKind::AdmittedDespiteKnownRevocation
                    };
                    conflicts.insert(Conflict {
                        kind,
                        trigger: s.id,
                        checkin_ids: vec![s.id],
                        gate_ids: vec![s.gate_id],
                    });
                }
                match current {
                    Some(adm) if !policy.allow_multiple_checkins => {
                        let kind = if adm.gate_id == s.gate_id {
                            ConflictKind::Passback
                        } else {
                            ConflictKind::DuplicateAdmission
                        };
                        conflicts.insert(Conflict {
                            kind,
                            trigger: s.id,
                            checkin_ids: vec![adm.id, s.id],
                            gate_ids: vec![adm.gate_id, s.gate_id],
                        });
                    }
                    _ => {
                        auto_out = false;
                        current = Some(s);
                        st.last_movement = Some(s);
                        st.entries += 1;
                        let day =
                            crate::days::local_day(s.hlc.wall_ms(), policy.utc_offset_minutes);
                        if st.day_entries > 0 && st.day == day {
                            st.day_entries += 1;
                        } else {
                            st.day = day;
                            st.day_entries = 1;
                        }
                        st.canonical_admission.get_or_insert(s.id);
                    }
                }
            }
            Item::Scan(s) => {
                if current.take().is_some() {
                    st.exits += 1;
                    st.last_movement = Some(s);
                } else if std::mem::take(&mut auto_out) {
                    st.last_movement = Some(s);
                } else {
                    conflicts.insert(Conflict {
                        kind: ConflictKind::ExitWithoutEntry,
                        trigger: s.id,
                        checkin_ids: vec![s.id],
                        gate_ids: vec![s.gate_id],
                    });
                }
            }
        }
    }
    st.inside = current.is_some();
    st.conflicts = conflicts.into_iter().collect();
    st
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Uuid = Uuid::from_u128(0xA);
    const B: Uuid = Uuid::from_u128(0xB);

    fn scan(n: u128, gate: Uuid, seq: u64, t: u64, dir: Direction) -> ScanEvent {
        ScanEvent {
            id: Uuid::from_u128(0x1000 + n),
            gate_id: gate,
            seq,
            hlc: Hlc::new(t, 0),
            direction: dir,
            decision: Decision::Admit,
            replica_cursor: 10,
            undoes: None,
        }
    }

    fn kinds(st: &TicketState) -> Vec<ConflictKind> {
        st.conflicts.iter().map(|c| c.kind).collect()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(0x1000 + n)
    }

    #[test]
    fn entry_while_outside_admits_and_the_earliest_is_canonical() {
        let st = fold(
            &[scan(1, A, 1, 100, Direction::In)],
            &[],
            FoldPolicy::default(),
        );
        assert!(st.inside);
        assert_eq!(st.canonical_admission, Some(id(1)));
        assert_eq!(st.entries, 1);
        assert!(st.conflicts.is_empty());
    }

    #[test]
    fn entry_while_inside_at_another_gate_is_a_duplicate_admission() {
        // Arrival order reversed on purpose: the later scan arrives first.
        let st = fold(
            &[
                scan(2, B, 1, 200, Direction::In),
                scan(1, A, 1, 100, Direction::In),
            ],
            &[],
            FoldPolicy::default(),
        );
        assert!(st.inside);
        assert_eq!(st.canonical_admission, Some(id(1)));
        assert_eq!(st.entries, 1);
        assert_eq!(
            st.conflicts,
            vec![Conflict {
                kind: ConflictKind::DuplicateAdmission,
                trigger: id(2),
                checkin_ids: vec![id(1), id(2)],
                gate_ids: vec![A, B],
            }]
        );
    }

    #[test]
    fn entry_while_inside_at_the_same_gate_is_passback() {
        let st = fold(
            &[
                scan(1, A, 1, 100, Direction::In),
                scan(2, A, 2, 200, Direction::In),
            ],
            &[],
            FoldPolicy::default(),
        );
        assert_eq!(kinds(&st), vec![ConflictKind::Passback]);
    }

    #[test]
    fn multiple_checkins_allowed_means_no_conflict() {
        let st = fold(
            &[
                scan(1, A, 1, 100, Direction::In),
                scan(2, B, 1, 200, Direction::In),
            ],
            &[],
            FoldPolicy {
                allow_multiple_checkins: true,
                ..FoldPolicy::default()
            },
        );
        assert!(st.conflicts.is_empty());
        assert_eq!(st.entries, 2);
        assert_eq!(st.canonical_admission, Some(id(1)));
    }

    #[test]
    fn exit_while_inside_goes_outside_and_reentry_is_clean() {
        let st = fold(
            &[
                scan(1, A, 1, 100, Direction::In),
                scan(2, B, 1, 200, Direction::Out),
                scan(3, A, 2, 300, Direction::In),
            ],
            &[],
            FoldPolicy::default(),
        );
        assert!(st.inside);
        assert_eq!((st.entries, st.exits), (2, 1));
        assert_eq!(st.canonical_admission, Some(id(1)));
        assert_eq!(st.last_movement.map(|s| s.id), Some(id(3)));
        assert!(st.conflicts.is_empty());
    }

    #[test]
    fn exit_while_outside_is_an_anomaly() {
        let st = fold(
            &[scan(1, B, 1, 100, Direction::Out)],
            &[],
            FoldPolicy::default(),
        );
        assert!(!st.inside);
        assert_eq!(kinds(&st), vec![ConflictKind::ExitWithoutEntry]);
    }

    #[test]
    fn entry_after_a_revocation_the_gate_could_not_know_is_late() {
        let mut s = scan(1, A, 1, 200, Direction::In);
        s.replica_cursor = 10;
        let rev = RevocationEvent {
            change_seq: 11,
            hlc: Hlc::new(150, 0),
        };
        let st = fold(&[s], &[rev], FoldPolicy::default());
        assert_eq!(kinds(&st), vec![ConflictKind::LateRevocation]);
        assert!(st.inside, "admissions are never un-admitted");
        assert!(st.revoked);
    }

    #[test]
    fn entry_after_a_revocation_the_gate_had_is_flagged_as_known() {
        let mut s = scan(1, A, 1, 200, Direction::In);
        s.replica_cursor = 11;
        let rev = RevocationEvent {
            change_seq: 11,
            hlc: Hlc::new(150, 0),
        };
        let st = fold(&[s], &[rev], FoldPolicy::default());
        assert_eq!(
            kinds(&st),
            vec![ConflictKind::AdmittedDespiteKnownRevocation]
        );
    }

    #[test]
    fn revocation_while_inside_is_reported_against_the_admission() {
        let rev = RevocationEvent {
            change_seq: 11,
            hlc: Hlc::new(150, 0),
        };
        let st = fold(
            &[scan(1, A, 1, 100, Direction::In)],
            &[rev],
            FoldPolicy::default(),
        );
        assert_eq!(
            st.conflicts,
            vec![Conflict {
                kind: ConflictKind::RevokedWhileInside,
                trigger: id(1),
                checkin_ids: vec![id(1)],
                gate_ids: vec![A],
            }]
        );
        assert!(st.inside);
    }

    #[test]
    fn revocation_after_exit_is_not_a_conflict() {
        let rev = RevocationEvent {
            change_seq: 11,
            hlc: Hlc::new(250, 0),
        };
        let st = fold(
            &[
                scan(1, A, 1, 100, Direction::In),
                scan(2, A, 2, 200, Direction::Out),
            ],
            &[rev],
            FoldPolicy::default(),
        );
        assert!(st.conflicts.is_empty());
        assert!(!st.inside);
    }

    #[test]
    fn undo_cancels_the_mistaken_scan() {
        let mistaken = scan(1, A, 1, 100, Direction::In);
        let mut undo = scan(2, A, 2, 110, Direction::In);
        undo.undoes = Some(mistaken.id);
        let st = fold(&[undo, mistaken], &[], FoldPolicy::default());
        assert!(!st.inside);
        assert_eq!(st.entries, 0);
        assert_eq!(st.canonical_admission, None);
        // After an undo the person can be admitted without a passback.
        let again = scan(3, A, 3, 120, Direction::In);
        let st = fold(&[mistaken, undo, again], &[], FoldPolicy::default());
        assert!(st.conflicts.is_empty());
        assert_eq!(st.canonical_admission, Some(again.id));
    }

    #[test]
    fn the_daily_check_out_lets_yesterdays_holder_in_again_without_a_conflict() {
        const H: u64 = 3_600_000;
        // Check-out at 23:00 UTC. In at 10:00 on day 0, never scanned out; in again at 09:00
        // on day 1 at another gate.
        let policy = FoldPolicy {
            daily_checkout: Some(crate::days::DailyCheckout {
                minute_of_day: 23 * 60,
                utc_offset_minutes: 0,
            }),
            ..FoldPolicy::default()
        };
        let day0 = scan(1, A, 1, 10 * H, Direction::In);
        let day1 = scan(2, B, 1, 33 * H, Direction::In);
        let st = fold(&[day1, day0], &[], policy);
        assert!(st.conflicts.is_empty(), "{:?}", st.conflicts);
        assert!(st.inside);
        assert_eq!((st.entries, st.exits, st.auto_checkouts), (2, 0, 1));
        assert_eq!(st.canonical_admission, Some(id(1)));
        assert_eq!(st.last_movement.map(|m| m.id), Some(id(2)));
        // Without the rule the second entry is a duplicate admission.
        let st = fold(&[day0, day1], &[], FoldPolicy::default());
        assert_eq!(kinds(&st), vec![ConflictKind::DuplicateAdmission]);
        // The same day, before the check-out, it still is.
        let later = scan(3, B, 2, 22 * H, Direction::In);
        let st = fold(&[day0, later], &[], policy);
        assert_eq!(kinds(&st), vec![ConflictKind::DuplicateAdmission]);
        // A late exit scan of someone the check-out already let out is expected, not an
        // anomaly; a second one is.
        let exit = scan(4, A, 2, 34 * H, Direction::Out);
        let st = fold(&[day0, exit], &[], policy);
        assert!(st.conflicts.is_empty());
        assert!(!st.inside);
        let again = scan(5, A, 3, 35 * H, Direction::Out);
        let st = fold(&[day0, exit, again], &[], policy);
        assert_eq!(kinds(&st), vec![ConflictKind::ExitWithoutEntry]);
    }

    #[test]
    fn entries_are_counted_per_event_local_day() {
        const H: u64 = 3_600_000;
        // UTC+2: 23:00 UTC on day 0 is 01:00 on day 1 locally.
        let policy = FoldPolicy {
            utc_offset_minutes: 120,
            ..FoldPolicy::default()
        };
        let scans = [
            scan(1, A, 1, 10 * H, Direction::In),
            scan(2, A, 2, 11 * H, Direction::Out),
            scan(3, A, 3, 12 * H, Direction::In),
            scan(4, A, 4, 13 * H, Direction::Out),
            scan(5, B, 1, 23 * H, Direction::In),
        ];
        let st = fold(&scans[..4], &[], policy);
        assert_eq!((st.day, st.day_entries, st.entries), (0, 2, 2));
        let st = fold(&scans, &[], policy);
        assert_eq!((st.day, st.day_entries, st.entries), (1, 1, 3));
        // In UTC the late entry is the same day's third.
        let st = fold(&scans, &[], FoldPolicy::default());
        assert_eq!((st.day, st.day_entries), (0, 3));
        // A duplicate admission is not an entry of the day.
        let dup = [scans[0], scan(6, B, 2, 10 * H + 5, Direction::In)];
        assert_eq!(fold(&dup, &[], policy).day_entries, 1);
    }

    #[test]
    fn rejected_scans_change_nothing() {
        let mut r = scan(1, A, 1, 100, Direction::In);
        r.decision = Decision::Reject;
        let st = fold(&[r], &[], FoldPolicy::default());
        assert_eq!(st, TicketState::default());
    }

    #[test]
    fn equal_clocks_are_ordered_by_gate_then_seq() {
        let st = fold(
            &[
                scan(2, B, 1, 100, Direction::In),
                scan(1, A, 9, 100, Direction::In),
            ],
            &[],
            FoldPolicy::default(),
        );
        assert_eq!(st.canonical_admission, Some(id(1))); // gate A < gate B
        assert_eq!(st.conflicts[0].gate_ids, vec![A, B]);
    }

    // ---- property tests: same set of events, any order, any duplication => same result ----

    fn arb_scan() -> impl Strategy<Value = ScanEvent> {
        (
            0u128..12,
            prop_oneof![Just(A), Just(B), Just(Uuid::from_u128(0xC))],
            1u64..5,
            0u64..20,
            any::<bool>(),
            prop_oneof![4 => Just(Decision::Admit), 1 => Just(Decision::Reject)],
            0u64..4,
            proptest::option::weighted(0.1, 0u128..12),
        )
            .prop_map(
                |(n, gate, seq, t, is_in, decision, cursor, undo)| ScanEvent {
                    id: Uuid::from_u128(0x1000 + n),
                    gate_id: gate,
                    seq,
                    hlc: Hlc::new(t, 0),
                    direction: if is_in { Direction::In } else { Direction::Out },
                    decision,
                    replica_cursor: cursor,
                    undoes: undo.map(|u| Uuid::from_u128(0x1000 + u)),
                },
            )
    }

    fn arb_rev() -> impl Strategy<Value = RevocationEvent> {
        (0u64..4, 0u64..20).prop_map(|(c, t)| RevocationEvent {
            change_seq: c,
            hlc: Hlc::new(t, 0),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_permutation_and_duplication_gives_the_same_state(
            scans in proptest::collection::vec(arb_scan(), 0..12),
            revs in proptest::collection::vec(arb_rev(), 0..2),
            shuffle_seed in any::<u64>(),
            dup in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            multi in any::<bool>(),
            checkout in any::<bool>(),
        ) {
            let policy = FoldPolicy {
                allow_multiple_checkins: multi,
                daily_checkout: checkout.then_some(crate::days::DailyCheckout {
                    minute_of_day: 0,
                    utc_offset_minutes: 0,
                }),
                utc_offset_minutes: 0,
            };
            let expected = fold(&scans, &revs, policy);

            let mut mixed = scans.clone();
            if !scans.is_empty() {
                for d in &dup { mixed.push(*d.get(&scans)); }
            }
            // Deterministic Fisher-Yates from the seed.
            let mut x = shuffle_seed | 1;
            for i in (1..mixed.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                mixed.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut revs2 = revs.clone();
            revs2.reverse();
            revs2.extend(revs.iter().copied());
            prop_assert_eq!(fold(&mixed, &revs2, policy), expected);
        }

        #[test]
        fn every_entry_is_counted_or_reported(
            scans in proptest::collection::vec(arb_scan(), 0..12),
        ) {
            // Conservation: each effective entry either moved the person in or raised a
            // duplicate/passback conflict; nothing is silently dropped.
            let st = fold(&scans, &[], FoldPolicy::default());
            let mut uniq: BTreeMap<Uuid, ScanEvent> = BTreeMap::new();
            for s in &scans { uniq.entry(s.id).and_modify(|e| *e = (*e).min(*s)).or_insert(*s); }
            let undone: BTreeSet<Uuid> = uniq.values().filter_map(|s| s.undoes).collect();
            let entries = uniq.values().filter(|s| s.undoes.is_none() && s.decision == Decision::Admit
                && s.direction == Direction::In && !undone.contains(&s.id)).count();
            let dups = st.conflicts.iter().filter(|c| matches!(c.kind,
                ConflictKind::DuplicateAdmission | ConflictKind::Passback)).count();
            prop_assert_eq!(st.entries as usize + dups, entries);
            prop_assert_eq!(st.inside, st.entries > st.exits);
        }
    }
}
