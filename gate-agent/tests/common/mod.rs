//! Shared fixtures: a replica populated the way a server would populate it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use gate_agent::replica::{Enrollment, Replica};
use sync_protocol::ble::BleKey;
use sync_protocol::wire::{
    Change, ChangeData, GateConfig, GateDirection, SigningKeyChange, TicketChange,
};
use sync_protocol::{ShortCode, SignedTicket, TicketFields};
use uuid::Uuid;

pub const EVENT_TAG: u32 = 0xE7E7_0001;
pub const BLE_SECRET: &[u8] = b"per-event ble secret for tests!!";
/// 2026-12-01T12:00:00Z, inside every ticket's window below.
pub const NOW_MS: u64 = 1_796_126_400_000;
/// Ticket windows wide enough for the fixed test clock and for the real clock (processes).
pub const VALID_FROM: u32 = 1_700_000_000;
pub const VALID_UNTIL: u32 = 2_000_000_000;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub gate_id: Uuid,
    pub event_id: Uuid,
}

impl Fixture {
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("replica.db")
    }

    pub fn ticket(&self, serial: u64) -> SignedTicket {
        self.ticket_with(serial, |_| {})
    }

    pub fn ticket_with(&self, serial: u64, f: impl FnOnce(&mut TicketFields)) -> SignedTicket {
        let mut fields = TicketFields {
            key_id: 1,
            event_tag: EVENT_TAG,
            serial,
            valid_from: VALID_FROM,
            valid_until: VALID_UNTIL,
            scopes: 1,
        };
        f(&mut fields);
        fields.sign(&self.key)
    }

    pub fn code(serial: u64) -> ShortCode {
        ShortCode::from_value(serial * 7919 + 13).unwrap()
    }
}

pub fn ticket_change(seq: u64, serial: u64) -> Change {
    Change {
        change_seq: seq,
        deleted: false,
        data: ChangeData::Ticket(TicketChange {
            serial,
            display_name: Some(format!("Attendee {serial}")),
            scopes: 1,
            short_code: Some(Fixture::code(serial).compact()),
            ble_key: Some(hex::encode(BleKey::derive(BLE_SECRET, serial).0)),
            attention: (serial == 3).then(|| "wheelchair access".to_string()),
            valid_from: VALID_FROM,
            valid_until: VALID_UNTIL,
            ..Default::default()
        }),
    }
}

pub fn gate_config(gate_id: Uuid, event_id: Uuid, f: impl FnOnce(&mut GateConfig)) -> GateConfig {
    let mut g = GateConfig {
        gate_id,
        event_id,
        event_tag: EVENT_TAG,
        name: "North".into(),
        direction: GateDirection::Both,
        allow_reentry: true,
        is_active: true,
        ..Default::default()
    };
    f(&mut g);
    g
}

/// An enrolled replica with a signing key, a gate config and `tickets` tickets (serials 1..=n).
pub fn fixture(tickets: u64, cfg: impl FnOnce(&mut GateConfig)) -> Fixture {
    fixture_in(Uuid::now_v7(), tickets, cfg)
}

/// [`fixture`] for a gate of the given event (gates of one event are mesh peers).
pub fn fixture_in(event_id: Uuid, tickets: u64, cfg: impl FnOnce(&mut GateConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let gate_id = Uuid::now_v7();
    let mut r = Replica::open(&dir.path().join("replica.db")).unwrap();
    r.store_enrollment(&Enrollment {
        server_url: "http://127.0.0.1:9".into(),
        gate_id,
        event_id,
        credential: "secret".into(),
    })
    .unwrap();
    let mut changes = vec![
        Change {
            change_seq: 1,
            deleted: false,
            data: ChangeData::SigningKey(SigningKeyChange {
                key_id: 1,
                public_key: hex::encode(key.verifying_key().to_bytes()),
                retired: false,
            }),
        },
        Change {
            change_seq: 2,
            deleted: false,
            data: ChangeData::GateConfig(gate_config(gate_id, event_id, cfg)),
        },
    ];
    for serial in 1..=tickets {
        changes.push(ticket_change(2 + serial, serial));
    }
    for chunk in changes.chunks(5_000) {
        let next = chunk.last().map(|c| c.change_seq).unwrap_or(0);
        r.apply_changes(chunk, next).unwrap();
    }
    Fixture {
        dir,
        key,
        gate_id,
        event_id,
    }
}

/// Replicates a peer gate's configuration into `f`'s replica, the way the server would: the
/// peer's mesh public key (hex) and address, active or not.
pub fn add_peer(
    f: &Fixture,
    peer: Uuid,
    mesh_public_key: Option<String>,
    mesh_addr: Option<String>,
    active: bool,
) {
    let mut r = Replica::open(&f.path()).unwrap();
    let seq = r.replica_cursor().unwrap() + 1;
    let cfg = gate_config(peer, f.event_id, |g| {
        g.name = format!("Peer {peer}");
        g.mesh_public_key = mesh_public_key;
        g.mesh_addr = mesh_addr;
        g.is_active = active;
    });
    r.apply_changes(
        &[Change {
            change_seq: seq,
            deleted: false,
            data: ChangeData::GateConfig(cfg),
        }],
        seq,
    )
    .unwrap();
}

/// The hex mesh public key of the gate whose data directory `f` is.
pub fn mesh_public_key(f: &Fixture) -> String {
    Replica::open(&f.path()).unwrap().mesh_public_key_hex()
}
