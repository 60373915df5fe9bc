//! The gate decision against a real SQLite replica file: every reason, re-entry policies,
//! overrides, undo, BLE, and durability of what was shown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gate_agent::decide::{Gate, GateError, ScanRequest, Subject};
use gate_agent::replica::Replica;
use sync_protocol::ble::{BleCredential, BleKey, slot_at};
use sync_protocol::wire::{
    Change, ChangeData, Decision, Direction, GateDirection, Method, PresenceChange, Reason,
    RevocationChange, TicketStatus,
};
use sync_protocol::{Hlc, SignedTicket};
use uuid::Uuid;

fn now() -> u64 {
    NOW_MS
}

fn gate(f: &Fixture) -> Gate {
    Gate::new(Replica::open(&f.path()).unwrap())
        .unwrap()
        .with_clock(now)
}

fn scan(g: &mut Gate, text: &str) -> (Decision, Option<Reason>) {
    let o = g.scan(&ScanRequest::text(text)).unwrap();
    (o.decision, o.reason)
}

fn dir(text: &str, d: Direction) -> ScanRequest {
    ScanRequest {
        direction: Some(d),
        ..ScanRequest::text(text)
    }
}

#[test]
fn a_valid_ticket_is_admitted_once_and_the_name_and_note_are_shown() {
    let f = fixture(5, |_| {});
    let mut g = gate(&f);
    let t = f.ticket(3).encode();
    let o = g.scan(&ScanRequest::text(&t)).unwrap();
    assert_eq!(o.decision, Decision::Admit);
    assert_eq!(o.reason, None);
    assert_eq!(o.ticket_serial, Some(3));
    assert_eq!(o.name.as_deref(), Some("Attendee 3"));
    assert_eq!(o.attention.as_deref(), Some("wheelchair access"));
    assert_eq!(o.method, Method::Qr);
    assert_eq!(o.seq, 1);
    assert_eq!(
        scan(&mut g, &t),
        (Decision::Reject, Some(Reason::AlreadyInside))
    );
}

#[test]
fn every_reject_reason_is_reachable() {
    let f = fixture(5, |g| g.zone_mask = 0b01);
    let mut g = gate(&f);
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);

    let other_event = f.ticket_with(1, |t| t.event_tag = 99).encode();
    assert_eq!(scan(&mut g, &other_event).1, Some(Reason::WrongEvent));

    let mut forged = f.ticket(1);
    forged.fields.scopes = 0xff;
    assert_eq!(
        scan(&mut g, &forged.encode()).1,
        Some(Reason::InvalidSignature)
    );

    let mut fields = f.ticket(1).fields;
    fields.key_id = 2;
    assert_eq!(
        scan(&mut g, &fields.sign(&other_key).encode()).1,
        Some(Reason::UnknownKey)
    );

    let early = f.ticket_with(1, |t| t.valid_from = 1_796_200_000).encode();
    assert_eq!(scan(&mut g, &early).1, Some(Reason::NotYetValid));
    let late = f.ticket_with(1, |t| t.valid_until = 1_796_100_000).encode();
    assert_eq!(scan(&mut g, &late).1, Some(Reason::Expired));
    let vip = f.ticket_with(1, |t| t.scopes = 0b10).encode();
    assert_eq!(scan(&mut g, &vip).1, Some(Reason::WrongZone));

    assert_eq!(scan(&mut g, "U1:ZZZ").1, Some(Reason::Malformed));
    assert_eq!(
        scan(&mut g, "https://example.com").1,
        Some(Reason::Malformed)
    );
    let unknown_code = sync_protocol::ShortCode::from_value(1).unwrap().to_string();
    assert_eq!(scan(&mut g, &unknown_code).1, Some(Reason::UnknownCode));

    g.replica_mut()
        .apply_changes(
            &[Change {
                change_seq: 100,
                deleted: false,
                data: ChangeData::Revocation(RevocationChange {
                    serial: 2,
                    hlc: Hlc::new(NOW_MS - 1000, 0),
                    reason: None,
                }),
            }],
            100,
        )
        .unwrap();
    assert_eq!(scan(&mut g, &f.ticket(2).encode()).1, Some(Reason::Revoked));

    // Every one of those was logged, none admitted.
    let log = g.replica().all_checkins().unwrap();
    assert_eq!(log.len(), 10);
    assert!(log.iter().all(|r| r.checkin.decision == Decision::Reject));
    assert!(log.iter().all(|r| r.checkin.validate().is_ok()));
    let seqs: Vec<u64> = log.iter().map(|r| r.checkin.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "seq is dense from 1");
}

#[test]
fn short_codes_and_manual_picks_admit_from_the_replica() {
    let f = fixture(5, |_| {});
    let mut g = gate(&f);
    let typed = Fixture::code(4).to_string().to_lowercase();
    let o = g.scan(&ScanRequest::text(&typed)).unwrap();
    assert_eq!(
        (o.decision, o.ticket_serial, o.method),
        (Decision::Admit, Some(4), Method::Code)
    );
    let o = g
        .scan(&ScanRequest {
            subject: Subject::Serial(5),
            method: None,
            direction: None,
            operator_override: None,
        })
        .unwrap();
    assert_eq!((o.decision, o.method), (Decision::Admit, Method::Manual));
    // The QR of a ticket admitted by code is already inside.
    assert_eq!(
        scan(&mut g, &f.ticket(4).encode()).1,
        Some(Reason::AlreadyInside)
    );
}

#[test]
fn entry_exit_gates_let_people_back_in_single_entry_gates_do_not() {
    let f = fixture(2, |g| g.allow_reentry = true);
    let mut g = gate(&f);
    let t = f.ticket(1).encode();
    assert_eq!(scan(&mut g, &t).0, Decision::Admit);
    let out = g.scan(&dir(&t, Direction::Out)).unwrap();
    assert_eq!(
        (out.decision, out.direction),
        (Decision::Admit, Direction::Out)
    );
    assert_eq!(scan(&mut g, &t).0, Decision::Admit, "re-entry after exit");

    let f = fixture(2, |g| g.allow_reentry = false);
    let mut g = gate(&f);
    let t = f.ticket(1).encode();
    assert_eq!(scan(&mut g, &t).0, Decision::Admit);
    assert_eq!(
        g.scan(&dir(&t, Direction::Out)).unwrap().decision,
        Decision::Admit
    );
    assert_eq!(
        scan(&mut g, &t).1,
        Some(Reason::ReentryNotAllowed),
        "single entry: out again, not back in"
    );

    let f = fixture(2, |g| g.allow_multiple_checkins = true);
    let mut g = gate(&f);
    let t = f.ticket(1).encode();
    assert_eq!(scan(&mut g, &t).0, Decision::Admit);
    assert_eq!(
        scan(&mut g, &t).0,
        Decision::Admit,
        "multiple check-ins allowed"
    );
}

#[test]
fn a_one_way_gate_refuses_the_other_way_and_defaults_to_its_own() {
    let f = fixture(2, |g| g.direction = GateDirection::Out);
    let mut g = gate(&f);
    let t = f.ticket(1).encode();
    let out = g.scan(&ScanRequest::text(&t)).unwrap();
    assert_eq!(
        (out.decision, out.direction, out.reason),
        (Decision::Admit, Direction::Out, None),
        "an exit gate lets people out without being told"
    );
    let wrong = g.scan(&dir(&t, Direction::In)).unwrap();
    assert_eq!(
        (wrong.decision, wrong.direction, wrong.reason),
        (
            Decision::Reject,
            Direction::In,
            Some(Reason::WrongDirection)
        ),
        "recorded as asked, refused"
    );
    // A credential's own reason comes first.
    assert_eq!(
        g.scan(&dir("garbage", Direction::In)).unwrap().reason,
        Some(Reason::Malformed)
    );

    let f = fixture(1, |g| g.direction = GateDirection::In);
    let mut g = gate(&f);
    let t = f.ticket(1).encode();
    assert_eq!(
        g.scan(&dir(&t, Direction::Out)).unwrap().reason,
        Some(Reason::WrongDirection)
    );
    assert_eq!(scan(&mut g, &t), (Decision::Admit, None));
}

#[test]
fn the_grace_is_the_shared_one_on_both_ends_of_the_window() {
    let f = fixture(4, |_| {});
    let mut g = gate(&f);
    let now = (NOW_MS / 1000) as u32;
    let grace = sync_protocol::decide::GRACE_SECONDS;
    let ended = |f: &Fixture, serial, ago: u32| {
        f.ticket_with(serial, |t| t.valid_until = now - ago)
            .encode()
    };
    assert_eq!(scan(&mut g, &ended(&f, 1, 90)).0, Decision::Admit);
    assert_eq!(scan(&mut g, &ended(&f, 2, grace)).0, Decision::Admit);
    assert_eq!(
        scan(&mut g, &ended(&f, 3, grace + 1)).1,
        Some(Reason::Expired)
    );
    let early = f
        .ticket_with(4, |t| t.valid_from = now + grace + 1)
        .encode();
    assert_eq!(scan(&mut g, &early).1, Some(Reason::NotYetValid));
}

#[test]
fn a_ticket_row_marked_revoked_is_refused_on_entry_and_may_leave() {
    let f = fixture(1, |_| {});
    let mut g = gate(&f);
    let mut change = ticket_change(10, 1);
    if let ChangeData::Ticket(t) = &mut change.data {
        t.status = TicketStatus::Revoked;
    }
    g.replica_mut().apply_changes(&[change], 10).unwrap();
    assert_eq!(
        g.replica().ticket(1).unwrap().unwrap().status,
        TicketStatus::Revoked
    );
    let t = f.ticket(1).encode();
    assert_eq!(scan(&mut g, &t).1, Some(Reason::Revoked));
    let code = Fixture::code(1).to_string();
    assert_eq!(scan(&mut g, &code).1, Some(Reason::Revoked));
    assert_eq!(
        g.scan(&dir(&t, Direction::Out)).unwrap().decision,
        Decision::Admit
    );
}

#[test]
fn an_expired_ticket_may_still_leave() {
    let f = fixture(1, |_| {});
    let mut g = gate(&f);
    let late = f.ticket_with(1, |t| t.valid_until = 1_796_100_000).encode();
    assert_eq!(
        g.scan(&dir(&late, Direction::Out)).unwrap().decision,
        Decision::Admit
    );
}

#[test]
fn a_supervisor_override_admits_and_keeps_the_reason() {
    let f = fixture(2, |_| {});
    let mut g = gate(&f);
    let t = f.ticket(1).encode();
    scan(&mut g, &t);
    let o = g
        .scan(&ScanRequest {
            operator_override: Some("lost wristband, ID checked".into()),
            ..ScanRequest::text(&t)
        })
        .unwrap();
    assert_eq!(o.decision, Decision::Admit);
    assert_eq!(o.reason, Some(Reason::AlreadyInside));
    let stored = g.replica().checkin(o.id).unwrap().unwrap().checkin;
    assert_eq!(
        stored.operator_override.as_deref(),
        Some("lost wristband, ID checked")
    );
    assert!(stored.validate().is_ok());
    // An override needs a ticket.
    let err = g
        .scan(&ScanRequest {
            operator_override: Some("x".into()),
            ..ScanRequest::text("garbage")
        })
        .unwrap_err();
    assert!(matches!(err, GateError::OverrideWithoutTicket));
}

#[test]
fn undo_is_a_new_event_and_frees_the_ticket() {
    let f = fixture(2, |_| {});
    let mut g = gate(&f);
    let t = f.ticket(1).encode();
    let first = g.scan(&ScanRequest::text(&t)).unwrap();
    let undo = g.undo(first.id).unwrap();
    assert_eq!(undo.undoes, Some(first.id));
    assert_eq!(undo.seq, 2);
    assert!(!g.replica().presence(1).unwrap().inside);
    assert_eq!(
        scan(&mut g, &t).0,
        Decision::Admit,
        "admitted again after the undo"
    );
    assert!(matches!(g.undo(first.id), Err(GateError::CannotUndo(_, _))));
    assert!(matches!(g.undo(undo.id), Err(GateError::CannotUndo(_, _))));
    assert!(matches!(
        g.undo(Uuid::now_v7()),
        Err(GateError::UnknownCheckin(_))
    ));
    // The original is untouched.
    let original = g.replica().checkin(first.id).unwrap().unwrap().checkin;
    assert_eq!(original.decision, Decision::Admit);
}

#[test]
fn undo_is_refused_after_the_window() {
    let f = fixture(1, |_| {});
    let mut g = gate(&f);
    let first = g.scan(&ScanRequest::text(f.ticket(1).encode())).unwrap();
    let mut later = gate(&f).with_clock(|| NOW_MS + 10 * 60 * 1000);
    drop(g);
    assert!(matches!(
        later.undo(first.id),
        Err(GateError::CannotUndo(_, "the undo window has passed"))
    ));
}

#[test]
fn ble_credentials_admit_in_their_slot_and_not_from_an_old_one() {
    let f = fixture(3, |_| {});
    let mut g = gate(&f);
    let key = BleKey::derive(BLE_SECRET, 2);
    let slot = slot_at(NOW_MS / 1000);
    let ble = |slot| ScanRequest {
        subject: Subject::Ble(BleCredential::issue(&key, 2, slot).encode().to_vec()),
        method: None,
        direction: None,
        operator_override: None,
    };
    let old = g.scan(&ble(slot - 5)).unwrap();
    assert_eq!(
        (old.decision, old.reason),
        (Decision::Reject, Some(Reason::Expired))
    );
    let o = g.scan(&ble(slot)).unwrap();
    assert_eq!(
        (o.decision, o.method, o.ticket_serial),
        (Decision::Admit, Method::Ble, Some(2))
    );
    let wrong = BleCredential::issue(&BleKey::derive(BLE_SECRET, 3), 2, slot);
    let o = g
        .scan(&ScanRequest {
            subject: Subject::Ble(wrong.encode().to_vec()),
            method: None,
            direction: None,
            operator_override: None,
        })
        .unwrap();
    assert_eq!(o.reason, Some(Reason::InvalidSignature));
}

#[test]
fn another_gates_admission_from_the_server_makes_the_ticket_inside() {
    let f = fixture(2, |_| {});
    let mut g = gate(&f);
    g.replica_mut()
        .apply_changes(
            &[Change {
                change_seq: 50,
                deleted: false,
                data: ChangeData::Presence(PresenceChange {
                    serial: 1,
                    inside: true,
                    gate_id: Some(Uuid::now_v7()),
                    checkin_id: Some(Uuid::now_v7()),
                    hlc: Hlc::new(NOW_MS - 5_000, 0),
                    entries: 1,
                    ..Default::default()
                }),
            }],
            50,
        )
        .unwrap();
    assert_eq!(
        scan(&mut g, &f.ticket(1).encode()).1,
        Some(Reason::AlreadyInside)
    );
    // The replica cursor at decision time is recorded for late-revocation classification.
    let last = g.replica().all_checkins().unwrap().pop().unwrap().checkin;
    assert_eq!(last.replica_cursor, 50);
}

#[test]
fn what_was_shown_is_on_disk_for_a_second_connection() {
    let f = fixture(1, |_| {});
    let o = {
        let mut g = gate(&f);
        g.scan(&ScanRequest::text(f.ticket(1).encode())).unwrap()
    };
    let r = Replica::open(&f.path()).unwrap();
    let stored = r.checkin(o.id).unwrap().expect("committed");
    assert_eq!(stored.checkin.decision, Decision::Admit);
    assert!(!stored.synced);
    assert_eq!(r.outbox_depth().unwrap(), 1);
    assert_eq!(r.pending(10).unwrap()[0].id, o.id);
}

#[test]
fn a_deactivated_gate_decides_nothing() {
    let f = fixture(1, |g| g.is_active = false);
    let mut g = gate(&f);
    assert!(matches!(
        g.scan(&ScanRequest::text(f.ticket(1).encode())),
        Err(GateError::Deactivated)
    ));
    assert_eq!(g.replica().outbox_len().unwrap(), 0);
}

#[test]
fn clocks_only_move_forward_and_stamps_follow_server_time() {
    let f = fixture(2, |_| {});
    let mut g = gate(&f);
    let server = Hlc::new(NOW_MS + 60_000, 0);
    g.replica_mut().observe_clock(server, NOW_MS).unwrap();
    let o = g.scan(&ScanRequest::text(f.ticket(1).encode())).unwrap();
    assert!(
        o.hlc > server,
        "a scan after seeing server time sorts after it"
    );
    let parsed = SignedTicket::decode(&f.ticket(2).encode()).unwrap();
    assert_eq!(parsed.fields.serial, 2);
}

#[test]
fn a_batch_is_one_commit_in_which_each_decision_sees_the_previous_ones() {
    let f = fixture(3, |_| {});
    let mut g = gate(&f);
    let t1 = f.ticket(1).encode();
    let results = g.scan_batch(&[
        ScanRequest::text(&t1),
        ScanRequest::text("garbage"),
        ScanRequest::text(&t1),
        ScanRequest::text(f.ticket(2).encode()),
    ]);
    let got: Vec<_> = results
        .iter()
        .map(|r| {
            let o = r.as_ref().unwrap();
            (o.seq, o.decision, o.reason)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Decision::Admit, None),
            (2, Decision::Reject, Some(Reason::Malformed)),
            (3, Decision::Reject, Some(Reason::AlreadyInside)),
            (4, Decision::Admit, None),
        ]
    );
    // An error for one request (override without a ticket) does not sink the others.
    let results = g.scan_batch(&[
        ScanRequest {
            operator_override: Some("x".into()),
            ..ScanRequest::text("garbage")
        },
        ScanRequest::text(f.ticket(3).encode()),
    ]);
    assert!(matches!(results[0], Err(GateError::OverrideWithoutTicket)));
    assert_eq!(results[1].as_ref().unwrap().decision, Decision::Admit);
    assert_eq!(Replica::open(&f.path()).unwrap().outbox_len().unwrap(), 5);
}
