//! Zones with a capacity at the gate, against a real SQLite replica file: `zone_full` at the
//! hard capacity counting this gate's own admissions and the presence it learnt from the
//! server and its peers, the soft threshold's warning, zone transfers, and the daily automatic
//! check-out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gate_agent::decide::{Gate, ScanRequest};
use gate_agent::replica::Replica;
use sync_protocol::Hlc;
use sync_protocol::days::DailyCheckout;
use sync_protocol::wire::{Change, ChangeData, Decision, Direction, PresenceChange, Reason};
use sync_protocol::zones::ZoneRule;
use uuid::Uuid;

fn now() -> u64 {
    NOW_MS
}

fn gate(f: &Fixture) -> Gate {
    Gate::new(Replica::open(&f.path()).unwrap())
        .unwrap()
        .with_clock(now)
}

fn room(capacity: u32, soft: Option<u32>) -> ZoneRule {
    ZoneRule {
        bit: 0,
        name: "Room A".into(),
        capacity: Some(capacity),
        soft_capacity: soft,
        transfer: false,
    }
}

fn scan(g: &mut Gate, f: &Fixture, serial: u64) -> gate_agent::decide::ScanOutcome {
    g.scan(&ScanRequest::text(f.ticket(serial).encode()))
        .unwrap()
}

/// Another gate's configuration, as the server replicates it to every gate of the event.
fn peer(f: &Fixture, seq: u64, zone_mask: u16) -> (Uuid, Change) {
    let id = Uuid::now_v7();
    let change = Change {
        change_seq: seq,
        deleted: false,
        data: ChangeData::GateConfig(gate_config(id, f.event_id, |g| {
            g.name = "South".into();
            g.zone_mask = zone_mask;
        })),
    };
    (id, change)
}

fn presence(seq: u64, serial: u64, gate: Uuid, at_ms: u64, inside: bool) -> Change {
    Change {
        change_seq: seq,
        deleted: false,
        data: ChangeData::Presence(PresenceChange {
            serial,
            inside,
            gate_id: Some(gate),
            checkin_id: Some(Uuid::now_v7()),
            hlc: Hlc::new(at_ms, 0),
            entries: 1,
            ..Default::default()
        }),
    }
}

#[test]
fn with_capacity_two_the_third_entry_is_zone_full() {
    let f = fixture(6, |g| {
        g.zone_mask = 0b1;
        g.zones = vec![room(2, None)];
    });
    let mut g = gate(&f);
    assert_eq!(scan(&mut g, &f, 1).decision, Decision::Admit);
    assert_eq!(scan(&mut g, &f, 2).decision, Decision::Admit);
    let third = scan(&mut g, &f, 3);
    assert_eq!(
        (third.decision, third.reason),
        (Decision::Reject, Some(Reason::ZoneFull))
    );
    assert_eq!(third.name.as_deref(), Some("Attendee 3"));
    // An exit makes room for one.
    let out = g
        .scan(&ScanRequest {
            direction: Some(Direction::Out),
            ..ScanRequest::text(f.ticket(1).encode())
        })
        .unwrap();
    assert_eq!(out.decision, Decision::Admit);
    assert_eq!(scan(&mut g, &f, 3).decision, Decision::Admit);
    assert_eq!(scan(&mut g, &f, 4).reason, Some(Reason::ZoneFull));
    // A supervisor may still admit over the capacity; the reason stays on record.
    let o = g
        .scan(&ScanRequest {
            operator_override: Some("speaker".into()),
            ..ScanRequest::text(f.ticket(4).encode())
        })
        .unwrap();
    assert_eq!(
        (o.decision, o.reason),
        (Decision::Admit, Some(Reason::ZoneFull))
    );
    let log = g.replica().all_checkins().unwrap();
    assert_eq!(
        log.iter()
            .filter(|r| r.checkin.reason == Some(Reason::ZoneFull))
            .count(),
        3
    );
}

#[test]
fn entries_another_gate_of_the_zone_made_count_and_other_zones_do_not() {
    let f = fixture(6, |g| {
        g.zone_mask = 0b1;
        g.zones = vec![room(2, None)];
    });
    let (south, south_cfg) = peer(&f, 100, 0b1);
    let (lobby, lobby_cfg) = peer(&f, 101, 0b10);
    let mut g = gate(&f);
    g.replica_mut()
        .apply_changes(
            &[
                south_cfg,
                lobby_cfg,
                // The server's presence: one inside through the other gate of the room, two in
                // the lobby (another zone).
                presence(102, 5, south, NOW_MS - 60_000, true),
                presence(103, 6, lobby, NOW_MS - 60_000, true),
                presence(104, 4, lobby, NOW_MS - 60_000, true),
            ],
            104,
        )
        .unwrap();
    assert_eq!(scan(&mut g, &f, 1).decision, Decision::Admit);
    assert_eq!(scan(&mut g, &f, 2).reason, Some(Reason::ZoneFull));
    // The holder inside through the other gate leaves (the server says so): room for one.
    g.replica_mut()
        .apply_changes(&[presence(105, 5, south, NOW_MS - 1_000, false)], 105)
        .unwrap();
    assert_eq!(scan(&mut g, &f, 2).decision, Decision::Admit);
}

#[test]
fn the_soft_threshold_admits_with_a_warning() {
    let f = fixture(4, |g| {
        g.zone_mask = 0b1;
        g.zones = vec![room(3, Some(2))];
    });
    let mut g = gate(&f);
    let first = scan(&mut g, &f, 1);
    assert_eq!((first.decision, first.warning), (Decision::Admit, None));
    let second = scan(&mut g, &f, 2);
    assert_eq!(second.decision, Decision::Admit);
    assert_eq!(
        second.warning.as_deref(),
        Some("Room A is nearly full: 2 of 3 inside")
    );
    let third = scan(&mut g, &f, 3);
    assert!(third.warning.unwrap().contains("3 of 3"));
    let fourth = scan(&mut g, &f, 4);
    assert_eq!(
        (fourth.reason, fourth.warning),
        (Some(Reason::ZoneFull), None)
    );
}

#[test]
fn entering_a_transfer_zone_checks_the_holder_out_of_the_zone_they_are_in() {
    // This gate is the session room's door; the hall is another zone.
    let f = fixture(3, |g| {
        g.zone_mask = 0b10;
        g.allow_reentry = false;
        g.zones = vec![
            ZoneRule {
                bit: 0,
                name: "Hall".into(),
                capacity: Some(100),
                ..Default::default()
            },
            ZoneRule {
                bit: 1,
                name: "Session".into(),
                capacity: Some(1),
                transfer: true,
                ..Default::default()
            },
        ];
    });
    let (hall, hall_cfg) = peer(&f, 100, 0b01);
    let mut g = gate(&f);
    g.replica_mut()
        .apply_changes(
            &[
                hall_cfg,
                presence(101, 1, hall, NOW_MS - 60_000, true),
                presence(102, 2, hall, NOW_MS - 60_000, true),
            ],
            102,
        )
        .unwrap();
    let o = g
        .scan(&ScanRequest::text(
            f.ticket_with(1, |t| t.scopes = 0b11).encode(),
        ))
        .unwrap();
    assert_eq!((o.decision, o.reason), (Decision::Admit, None));
    let exit = o.transfer_exit.expect("the exit from the hall is recorded");
    let log = g.replica().all_checkins().unwrap();
    let moves: Vec<(Uuid, Direction, u64)> = log
        .iter()
        .map(|r| (r.checkin.id, r.checkin.direction, r.checkin.seq))
        .collect();
    assert_eq!(
        moves,
        vec![(exit, Direction::Out, 1), (o.id, Direction::In, 2)]
    );
    assert!(log.iter().all(|r| r.checkin.validate().is_ok()));
    assert!(log[0].checkin.hlc < log[1].checkin.hlc);
    // Inside the session now: scanning again is "already inside", not another transfer.
    let again = g
        .scan(&ScanRequest::text(
            f.ticket_with(1, |t| t.scopes = 0b11).encode(),
        ))
        .unwrap();
    assert_eq!(again.reason, Some(Reason::AlreadyInside));
    // The session (capacity 1) is full: the next one from the hall is refused.
    let full = g
        .scan(&ScanRequest::text(
            f.ticket_with(2, |t| t.scopes = 0b11).encode(),
        ))
        .unwrap();
    assert_eq!(full.reason, Some(Reason::ZoneFull));
}

#[test]
fn after_the_daily_check_out_nobody_from_yesterday_counts_as_inside() {
    // Check-out at 03:00 UTC; the test clock is 12:00 UTC.
    let checkout = DailyCheckout {
        minute_of_day: 3 * 60,
        utc_offset_minutes: 0,
    };
    let f = fixture(4, |g| {
        g.zone_mask = 0b1;
        g.allow_reentry = true;
        g.zones = vec![room(2, None)];
        g.auto_checkout = Some(checkout);
    });
    let (south, south_cfg) = peer(&f, 100, 0b1);
    let yesterday = NOW_MS - 20 * 3_600_000; // 16:00 the day before
    let this_morning = NOW_MS - 2 * 3_600_000; // 10:00 today
    let mut g = gate(&f);
    g.replica_mut()
        .apply_changes(
            &[
                south_cfg,
                presence(101, 1, south, yesterday, true),
                presence(102, 2, south, yesterday, true),
                presence(103, 3, south, this_morning, true),
            ],
            103,
        )
        .unwrap();
    // Yesterday's two are out: holder 1 comes back in (no "already inside"), and the room
    // holds holder 3 (this morning) and holder 1.
    let back = scan(&mut g, &f, 1);
    assert_eq!((back.decision, back.reason), (Decision::Admit, None));
    assert_eq!(scan(&mut g, &f, 4).reason, Some(Reason::ZoneFull));
    // Holder 3 came in today: still inside.
    assert_eq!(scan(&mut g, &f, 3).reason, Some(Reason::AlreadyInside));
}
