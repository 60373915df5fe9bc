//! Prints parse-per-second and verify-per-second figures for the credential formats.
//! Run with `cargo bench -p sync-protocol`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use sync_protocol::ble::{BleCredential, BleKey};
use sync_protocol::decide::{GatePolicy, check_ticket};
use sync_protocol::merge::{FoldPolicy, ScanEvent, fold};
use sync_protocol::{Decision, Direction, Hlc, KeyRing, ShortCode, SignedTicket, TicketFields};

/// Runs `f` repeatedly for about `budget` and returns operations per second.
fn rate(name: &str, budget: Duration, mut f: impl FnMut()) {
    // Warm-up.
    for _ in 0..1_000 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..256 {
            f();
        }
        n += 256;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<40} {:>12.0} ops/s  {:>9.2} µs/op",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_500),
    );
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let mut ring = KeyRing::new();
    ring.insert(1, key.verifying_key());
    let fields = TicketFields {
        key_id: 1,
        event_tag: 7,
        serial: 123_456,
        valid_from: 0,
        valid_until: u32::MAX,
        scopes: 1,
    };
    let ticket = fields.sign(&key);
    let text = ticket.encode();
    let policy = GatePolicy {
        event_tag: 7,
        zone_mask: 0,
        now_unix: 1_800_000_000,
        grace_seconds: 0,
    };

    println!(
        "sync-protocol credential benchmark ({} ms per line)",
        budget.as_millis()
    );
    rate("ticket parse (U1: text -> fields)", budget, || {
        let _ = black_box(SignedTicket::decode(black_box(&text)));
    });
    rate("ticket verify_strict (parsed)", budget, || {
        let _ = black_box(ring.verify(black_box(&ticket)));
    });
    rate("ticket parse + all checks", budget, || {
        if let Ok(t) = SignedTicket::decode(black_box(&text)) {
            let _ = black_box(check_ticket(&t, &ring, &policy));
        }
    });
    rate("ticket sign + encode", budget, || {
        let _ = black_box(fields.sign(&key).encode());
    });
    let code = ShortCode::from_value(0x1234_5678_9ABC)
        .map(|c| c.to_string())
        .unwrap_or_default();
    rate("short code parse", budget, || {
        let _ = black_box(ShortCode::parse(black_box(&code)));
    });
    let ble_key = BleKey::derive(b"event secret", 123_456);
    let advert = BleCredential::issue(&ble_key, 123_456, 60_000_000).encode();
    rate("BLE payload decode + MAC verify", budget, || {
        if let Ok(c) = BleCredential::decode(black_box(&advert)) {
            let _ = black_box(c.verify(&ble_key, 60_000_000));
        }
    });
    let scans: Vec<ScanEvent> = (0..8u64)
        .map(|i| ScanEvent {
            id: uuid::Uuid::from_u128(u128::from(i) + 1),
            gate_id: uuid::Uuid::from_u128(u128::from(i % 3)),
            seq: i + 1,
            hlc: Hlc::new(1_000 + i, 0),
            direction: if i % 2 == 0 {
                Direction::In
            } else {
                Direction::Out
            },
            decision: Decision::Admit,
            replica_cursor: 0,
            undoes: None,
        })
        .collect();
    rate("merge fold (8 events)", budget, || {
        let _ = black_box(fold(black_box(&scans), &[], FoldPolicy::default()));
    });
}
