//! The bodies of the fuzz targets: every parser of outside input, fed arbitrary bytes. Each
//! function must return for any input; a panic (including a failed `assert!` on what the parser
//! promises) is a bug.
//!
//! Shared by the libFuzzer binaries (`fuzz/fuzz_targets/*.rs`, nightly, `fuzz/run`) and by the
//! stable test that replays every file of `fuzz/corpus/<target>/` through the same functions
//! (`gate-agent/tests/fuzz_corpus.rs`, part of `cargo test --workspace`).

use ed25519_dalek::SigningKey;
use sync_protocol::ble::{BleCredential, BleKey};
use sync_protocol::decide::{Credential, GatePolicy, check_signed, parse_text};
use sync_protocol::wire::{Checkin, Direction, PushRequest};
use sync_protocol::{Hlc, KeyRing, ShortCode, SignedTicket, barcode, too_far_ahead};

/// The seed of the test signing key the corpus credentials are signed with (key id
/// [`TEST_KEY_ID`], event tag [`TEST_EVENT_TAG`]). A test key: it signs nothing real.
pub const TEST_KEY_SEED: [u8; 32] = [0x55; 32];
pub const TEST_KEY_ID: u32 = 1;
pub const TEST_EVENT_TAG: u32 = 0xA1B2_C3D4;

/// A fixed "now" for the checks that need one (2026-12-01T00:00:00Z), so a run is reproducible.
pub const NOW_MS: u64 = 1_796_083_200_000;

/// A target body: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name: the directory of its corpus and the name of its fuzz binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("credentials", credentials),
    ("wedge_line", wedge_line),
    ("ble_advert", ble_advert),
    ("csv_import", csv_import),
    ("push", push),
    ("mesh_page", mesh_page),
];

/// The key ring of a gate that knows the test key.
pub fn test_keys() -> KeyRing {
    let mut keys = KeyRing::new();
    keys.insert(
        TEST_KEY_ID,
        SigningKey::from_bytes(&TEST_KEY_SEED).verifying_key(),
    );
    keys
}

/// Whether `text` is a ticket that verifies under the test key (the corpus test counts them).
pub fn is_test_signed(text: &str) -> bool {
    SignedTicket::decode(text).is_ok_and(|t| test_keys().verify(&t).is_ok())
}

/// Ticket credentials as scanned or typed: the `U1:` text (decode, verify, the gate's checks),
/// the binary ticket, short codes, the shop's barcodes, BLE service data and clock stamps.
pub fn credentials(data: &[u8]) {
    if let Ok(t) = SignedTicket::from_bytes(data) {
        assert_eq!(t.to_bytes().as_slice(), data, "binary ticket round trip");
    }
    if let Ok(c) = BleCredential::decode(data) {
        assert_eq!(c.encode().as_slice(), data, "BLE payload round trip");
        let key = BleKey::derive(&TEST_KEY_SEED, c.serial);
        let _ = c.verify(&key, c.slot);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    text_credential(text);
    if let Some(b) = barcode::normalize(text) {
        assert!((barcode::MIN_LEN..=barcode::MAX_LEN).contains(&b.len()));
        assert_eq!(
            barcode::normalize(b),
            Some(b),
            "a barcode normalizes to itself"
        );
    }
    if let Ok(h) = text.parse::<Hlc>() {
        assert_eq!(
            h.to_string().parse::<Hlc>().ok(),
            Some(h),
            "clock round trip"
        );
    }
}

/// What the gate does with one line of text: classify it, and check a ticket as a gate of the
/// test event would, both ways.
fn text_credential(text: &str) {
    if let Ok(t) = SignedTicket::decode(text) {
        // Whatever parses must re-encode to a text that parses to the same ticket.
        assert_eq!(
            SignedTicket::decode(&t.encode()),
            Ok(t),
            "ticket text round trip"
        );
    }
    if let Ok(code) = ShortCode::parse(text) {
        assert_eq!(ShortCode::parse(&code.compact()), Ok(code), "compact form");
        assert_eq!(
            ShortCode::parse(&code.to_string()),
            Ok(code),
            "display form"
        );
    }
    match parse_text(text) {
        Ok(Credential::Ticket(t)) => {
            let keys = test_keys();
            let policy = GatePolicy::new(TEST_EVENT_TAG, 0, NOW_MS / 1_000);
            for direction in [Direction::In, Direction::Out] {
                let _ = check_signed(&t, &keys, &policy, direction);
            }
        }
        Ok(Credential::Code(_) | Credential::Ble(_)) | Err(_) => {}
    }
}

/// One raw line from a keyboard-wedge scanner: cleaned as the gate cleans it, then classified.
pub fn wedge_line(data: &[u8]) {
    let Some(line) = hardware::wedge::clean_line(data) else {
        return;
    };
    assert!(!line.is_empty());
    assert!(
        !line.chars().any(char::is_control),
        "control character kept"
    );
    assert!(!line.starts_with(char::is_whitespace), "leading space kept");
    assert_eq!(
        hardware::wedge::clean_line(line.as_bytes()).as_deref(),
        Some(line.as_str()),
        "cleaning is idempotent"
    );
    text_credential(&line);
}

/// One line of a recorded BLE advert log, and the badge payload it carries.
pub fn ble_advert(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let Ok(advert) = hardware::replay::parse_advert_line(line) else {
            continue;
        };
        if let Ok(c) = BleCredential::decode(&advert.service_data) {
            let key = BleKey::derive(&TEST_KEY_SEED, c.serial);
            let _ = c.verify(&key, sync_protocol::ble::slot_at(NOW_MS / 1_000));
        }
        let full = hardware::advert::uuid128_from_u16(advert.service_uuid);
        assert_eq!(
            hardware::advert::uuid16_from_u128(full),
            Some(advert.service_uuid)
        );
    }
}

/// A participant list upload: the header mapping, every row, and duplicate detection.
pub fn csv_import(data: &[u8]) {
    let Ok(csv) = server::import::ParticipantCsv::new(data) else {
        return;
    };
    let mut tracker = server::import::DuplicateTracker::new();
    let mut last_line = 1;
    for item in csv {
        let line = match item {
            Ok(row) => {
                assert!(!row.name.is_empty(), "a row has a name");
                if let Some(b) = &row.barcode {
                    assert_eq!(
                        barcode::normalize(b),
                        Some(b.as_str()),
                        "barcode normalized"
                    );
                }
                let line = row.line;
                let _ = tracker.check(row);
                line
            }
            Err(e) => e.line,
        };
        assert!(
            line >= last_line,
            "lines go forward: {line} after {last_line}"
        );
        last_line = last_line.max(line);
    }
}

/// A gate's push body: the strict wire type the gate sends, and the server's per-check-in
/// checks on the loosely parsed body (one bad entry must not fail the batch).
pub fn push(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<PushRequest>(data) {
        for c in &req.checkins {
            checkin_round_trip(c);
        }
    }
    let Ok(body) = serde_json::from_slice::<server::http::sync::push::PushBody>(data) else {
        return;
    };
    for item in body.checkins {
        if let Ok(c) = server::service::push::check_pushed(item, NOW_MS) {
            assert_eq!(c.validate(), Ok(()), "a stored check-in is valid");
            assert!(
                !too_far_ahead(c.hlc, NOW_MS),
                "a stored clock is within its bound"
            );
        }
    }
}

/// A page of a mesh peer's log, as a gate reads it from a peer.
pub fn mesh_page(data: &[u8]) {
    let Ok(page) = serde_json::from_slice::<gate_agent::mesh::LogPage>(data) else {
        return;
    };
    for c in &page.checkins {
        let _ = c.validate();
        let _ = too_far_ahead(c.hlc, NOW_MS);
        checkin_round_trip(c);
    }
}

fn checkin_round_trip(c: &Checkin) {
    let json = serde_json::to_vec(c).unwrap_or_default();
    let back = serde_json::from_slice::<Checkin>(&json).ok();
    assert_eq!(back.as_ref(), Some(c), "check-in JSON round trip");
}
