//! Multi-day events at the gate, against a real SQLite replica file: ticket types valid on some
//! days only, entries-per-day limits counted over this gate's scans and the presence the server
//! sent, and the event's UTC offset deciding what "today" is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gate_agent::decide::{Gate, ScanRequest};
use gate_agent::replica::Replica;
use sync_protocol::Hlc;
use sync_protocol::days::TicketTypeRule;
use sync_protocol::wire::{
    Change, ChangeData, Decision, Direction, GateConfig, PresenceChange, Reason, TicketChange,
};
use uuid::Uuid;

fn now() -> u64 {
    NOW_MS // 2026-12-01T12:00:00Z
}

const TODAY: i32 = 20_788; // 2026-12-01

fn rules(g: &mut GateConfig) {
    g.allow_reentry = true;
    g.ticket_types = vec![
        TicketTypeRule {
            name: "Tuesday".into(),
            valid_days: vec!["2026-12-01".into()],
            entries_per_day: Some(2),
            scopes: None,
        },
        TicketTypeRule {
            name: "Wednesday".into(),
            valid_days: vec!["2026-12-02".into()],
            entries_per_day: None,
            scopes: None,
        },
    ];
}

/// Gives ticket `serial` a ticket type, as the server replicates it.
fn typed(g: &mut Gate, seq: u64, serial: u64, ticket_type: &str) {
    g.replica_mut()
        .apply_changes(
            &[Change {
                change_seq: seq,
                deleted: false,
                data: ChangeData::Ticket(TicketChange {
                    serial,
                    display_name: Some(format!("Attendee {serial}")),
                    scopes: 1,
                    valid_from: VALID_FROM,
                    valid_until: VALID_UNTIL,
                    ticket_type: Some(ticket_type.into()),
                    organization: Some("Acme".into()),
                    ..Default::default()
                }),
            }],
            seq,
        )
        .unwrap();
}

fn pass(g: &mut Gate, f: &Fixture, serial: u64, d: Direction) -> (Decision, Option<Reason>) {
    let o = g
        .scan(&ScanRequest {
            direction: Some(d),
            ..ScanRequest::text(f.ticket(serial).encode())
        })
        .unwrap();
    (o.decision, o.reason)
}

#[test]
fn a_day_ticket_opens_its_day_only_and_up_to_its_daily_limit() {
    let f = fixture(5, rules);
    let mut g = Gate::new(Replica::open(&f.path()).unwrap())
        .unwrap()
        .with_clock(now);
    typed(&mut g, 100, 1, "Tuesday");
    typed(&mut g, 101, 2, "Wednesday");
    let admit = (Decision::Admit, None);
    for _ in 0..2 {
        assert_eq!(pass(&mut g, &f, 1, Direction::In), admit);
        assert_eq!(pass(&mut g, &f, 1, Direction::Out), admit);
    }
    assert_eq!(
        pass(&mut g, &f, 1, Direction::In),
        (Decision::Reject, Some(Reason::DailyLimitReached))
    );
    assert_eq!(
        pass(&mut g, &f, 2, Direction::In),
        (Decision::Reject, Some(Reason::NotValidToday))
    );
    // Leaving is never refused for the day rules.
    assert_eq!(pass(&mut g, &f, 2, Direction::Out), admit);
    // A ticket whose type has no rule (or no type) is not limited.
    assert_eq!(pass(&mut g, &f, 3, Direction::In), admit);
    // Search results carry the holder's organization and ticket type.
    let hits = g.replica().search("Attendee 2", 5).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (
            hits[0].organization.as_deref(),
            hits[0].ticket_type.as_deref()
        ),
        (Some("Acme"), Some("Wednesday"))
    );
}

#[test]
fn entries_the_server_counted_today_count_and_yesterdays_do_not() {
    let f = fixture(5, rules);
    let mut g = Gate::new(Replica::open(&f.path()).unwrap())
        .unwrap()
        .with_clock(now);
    typed(&mut g, 100, 4, "Tuesday");
    typed(&mut g, 101, 5, "Tuesday");
    let other = Uuid::now_v7();
    let presence = |seq, serial, day, at| Change {
        change_seq: seq,
        deleted: false,
        data: ChangeData::Presence(PresenceChange {
            serial,
            inside: false,
            gate_id: Some(other),
            checkin_id: Some(Uuid::now_v7()),
            hlc: Hlc::new(at, 0),
            entries: 2,
            day,
            day_entries: 2,
        }),
    };
    g.replica_mut()
        .apply_changes(
            &[
                presence(102, 4, TODAY, NOW_MS - 3_600_000),
                presence(103, 5, TODAY - 1, NOW_MS - 86_400_000),
            ],
            103,
        )
        .unwrap();
    assert_eq!(
        pass(&mut g, &f, 4, Direction::In).1,
        Some(Reason::DailyLimitReached)
    );
    assert_eq!(pass(&mut g, &f, 5, Direction::In), (Decision::Admit, None));
    assert_eq!(g.replica().presence(5).unwrap().day_entries, 1);
}

#[test]
fn the_events_utc_offset_decides_which_day_it_is() {
    // At 12:00 UTC it is still 2026-11-30 at UTC-13: the Tuesday ticket is not valid yet.
    let f = fixture(2, |g| {
        rules(g);
        g.utc_offset_minutes = -13 * 60;
    });
    let mut g = Gate::new(Replica::open(&f.path()).unwrap())
        .unwrap()
        .with_clock(now);
    typed(&mut g, 100, 1, "Tuesday");
    assert_eq!(
        pass(&mut g, &f, 1, Direction::In).1,
        Some(Reason::NotValidToday)
    );
    // At UTC+12 it is already 2026-12-02.
    let f = fixture(2, |g| {
        rules(g);
        g.utc_offset_minutes = 12 * 60;
    });
    let mut g = Gate::new(Replica::open(&f.path()).unwrap())
        .unwrap()
        .with_clock(now);
    typed(&mut g, 100, 2, "Wednesday");
    assert_eq!(pass(&mut g, &f, 2, Direction::In), (Decision::Admit, None));
}
