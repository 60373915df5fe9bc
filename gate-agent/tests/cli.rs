//! The gate-agent binary as scripts use it: scan, status, scan-image, ble-advert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn run(args: &[&str], dir: &Path) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gate-agent"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run gate-agent");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn scan_prints_one_json_line_and_exits_0_for_admit_1_for_reject() {
    let f = fixture(2, |_| {});
    let t = f.ticket(1).encode();
    let (code, out, _) = run(&["scan", &t], f.dir.path());
    assert_eq!(code, 0);
    assert_eq!(out[0]["decision"], "admit");
    assert_eq!(out[0]["name"], "Attendee 1");
    assert_eq!(out[0]["ticket_serial"], 1);
    let (code, out, _) = run(&["scan", &t], f.dir.path());
    assert_eq!(code, 1);
    assert_eq!(out[0]["reason"], "already_inside");
    let (code, out, _) = run(&["scan", &t, "--override", "VIP re-entry"], f.dir.path());
    assert_eq!(
        (code, out[0]["operator_override"].clone()),
        (0, "VIP re-entry".into())
    );
    let (code, out, _) = run(&["scan", &t, "--direction", "out"], f.dir.path());
    assert_eq!((code, out[0]["direction"].clone()), (0, "out".into()));

    let (code, out, _) = run(&["status"], f.dir.path());
    assert_eq!(code, 0);
    let s = &out[0];
    assert_eq!(s["gate_id"], serde_json::json!(f.gate_id));
    assert_eq!(s["event_id"], serde_json::json!(f.event_id));
    assert_eq!(s["replica_tickets"], 2);
    assert_eq!(s["outbox_depth"], 4);
    assert_eq!(s["online"], false);
    assert!(s["replica_cursor"].as_u64().unwrap() > 0);
    assert!(s.get("clock_offset_ms").is_some() && s.get("last_sync_at").is_some());
}

#[test]
fn a_gate_that_is_not_enrolled_says_how_to_enroll() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["scan", "U1:ABC"], dir.path());
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("gate-agent enroll"), "{err}");
}

#[test]
fn scan_image_decodes_photos_and_decides_when_enrolled() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/qr/qrcode-1");
    assert!(
        testdata.is_dir(),
        "QR test data missing at {}",
        testdata.display()
    );
    let photo = testdata.join("1.png");
    let expected = std::fs::read_to_string(testdata.join("1.txt")).unwrap();

    // Not enrolled: decodes, decides nothing.
    let empty = tempfile::tempdir().unwrap();
    let (_, out, _) = run(&["scan-image", photo.to_str().unwrap()], empty.path());
    assert_eq!(out[0]["decoded"], expected.as_str());
    assert_eq!(out[0]["decision"], Value::Null);

    // Enrolled: a ticket rendered to PNG is decoded from pixels and admitted; a photo of some
    // other QR code is decoded and rejected as malformed.
    let f = fixture(3, |_| {});
    let text = f.ticket(2).encode();
    let qr =
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).unwrap();
    let img = qr
        .render::<image::Luma<u8>>()
        .module_dimensions(6, 6)
        .build();
    let png = f.dir.path().join("ticket.png");
    img.save(&png).unwrap();
    let (code, out, _) = run(
        &["scan-image", png.to_str().unwrap(), photo.to_str().unwrap()],
        f.dir.path(),
    );
    assert_eq!(code, 1, "one of the two was rejected");
    assert_eq!(out[0]["decoded"], text.as_str());
    assert_eq!(out[0]["decision"], "admit");
    assert_eq!(out[1]["decision"], "reject");
    assert_eq!(out[1]["reason"], "malformed");
}

#[test]
fn ble_advert_prints_the_badge_payload_for_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let secret = hex::encode(BLE_SECRET);
    let (code, out, _) = run(
        &[
            "ble-advert",
            "--ticket",
            "42",
            "--event-secret",
            &secret,
            "--at",
            "1796083200",
        ],
        dir.path(),
    );
    assert_eq!(code, 0);
    let a = &out[0];
    assert_eq!(a["slot"], 59_869_440);
    let key = sync_protocol::ble::BleKey::derive(BLE_SECRET, 42);
    let expected = sync_protocol::ble::BleCredential::issue(&key, 42, 59_869_440).encode();
    assert_eq!(a["service_data_hex"], hex::encode(expected));
    assert_eq!(a["advert_len"], 28);
    let advert = a["advert_hex"].as_str().unwrap();
    // Flags AD, then Service Data (0x16) of length 0x18 for UUID 0xFEAA (little-endian).
    assert!(advert.starts_with("0201061816aafe"), "{advert}");
    // The same key given directly (as an attendee app holds it) gives the same bytes.
    let (_, out2, _) = run(
        &[
            "ble-advert",
            "--ticket",
            "42",
            "--ble-key",
            &hex::encode(key.0),
            "--at",
            "1796083200",
        ],
        dir.path(),
    );
    assert_eq!(out2[0]["service_data_hex"], a["service_data_hex"]);
    let (code, _, err) = run(
        &["ble-advert", "--ticket", "42", "--ble-key", "abcd"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("32 bytes"), "{err}");
}
