//! `gate-agent inspect` as an operator runs it: the real binary, real signatures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use ed25519_dalek::SigningKey;
use serde_json::Value;
use sync_protocol::{ShortCode, SignedTicket, TicketFields};

const RFC8032_TEST1_SECRET: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];

fn inspect(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gate-agent"))
        .arg("inspect")
        .args(args)
        .output()
        .expect("run gate-agent");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn ticket() -> (SigningKey, SignedTicket) {
    let key = SigningKey::from_bytes(&RFC8032_TEST1_SECRET);
    let t = TicketFields {
        key_id: 1,
        event_tag: 0x5553_4852,
        serial: 42,
        valid_from: 1_796_083_200,
        valid_until: 1_796_169_599,
        scopes: 3,
    }
    .sign(&key);
    (key, t)
}

#[test]
fn a_library_ticket_verifies_and_prints_its_fields() {
    let (key, t) = ticket();
    let pk = hex::encode(key.verifying_key().to_bytes());
    let (code, json, _) = inspect(&[&t.encode(), "--public-key", &pk]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["kind"], "ticket");
    assert_eq!(json["serial"], 42);
    assert_eq!(json["key_id"], 1);
    assert_eq!(json["event_tag"], 0x5553_4852);
    assert_eq!(json["scopes"], 3);
    assert_eq!(json["scope_bits"], serde_json::json!([0, 1]));
    assert_eq!(json["valid_from"], "2026-12-01T00:00:00Z");
    assert_eq!(json["valid_until"], "2026-12-01T23:59:59Z");
    assert_eq!(json["signature_valid"], true);
}

#[test]
fn without_a_key_the_fields_print_and_the_signature_is_not_judged() {
    let (_, t) = ticket();
    let (code, json, _) = inspect(&[&t.encode()]);
    assert_eq!(code, 0);
    assert_eq!(json["signature_valid"], Value::Null);
}

#[test]
fn a_one_bit_change_is_rejected_with_exit_code_1() {
    let (key, t) = ticket();
    let pk = hex::encode(key.verifying_key().to_bytes());
    for bit in [8 * 9, 8 * 20 + 3, 8 * 60 + 7] {
        let mut bytes = t.to_bytes();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let tampered = SignedTicket::from_bytes(&bytes).expect("still well-formed");
        let (code, json, _) = inspect(&[&tampered.encode(), "--public-key", &pk]);
        assert_eq!(code, 1, "bit {bit}: {json}");
        assert_eq!(json["signature_valid"], false);
        assert_eq!(json["error"], "invalid_signature");
    }
    // The right ticket under another event's key is invalid too.
    let other = hex::encode(SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes());
    let (code, _, _) = inspect(&[&t.encode(), "--public-key", &other]);
    assert_eq!(code, 1);
}

#[test]
fn malformed_input_exits_2_with_a_reason() {
    for bad in ["U1:NOT-BASE45~", "U1:", "hello", "ble:zz", "ble:0102"] {
        let (code, json, _) = inspect(&[bad]);
        assert_eq!(code, 2, "{bad}: {json}");
        assert_eq!(json["error"], "malformed", "{bad}");
        assert!(json["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let (_, t) = ticket();
    let (code, _, stderr) = inspect(&[&t.encode(), "--public-key", "abcd"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("32 bytes"), "{stderr}");
}

#[test]
fn short_codes_are_normalised() {
    let code = ShortCode::from_value(987_654_321).expect("fits");
    let typed = code.to_string().to_lowercase().replace('-', " ");
    let (exit, json, _) = inspect(&[&typed]);
    assert_eq!(exit, 0);
    assert_eq!(json["kind"], "short_code");
    assert_eq!(json["code"], code.to_string());
}
