//! Recorded BLE advert logs through the real decision path: the hardware replay source, the
//! presence filter with the gate's beacon config, the intake's dedupe, and the gate decision.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gate_agent::decide::{Gate, wall_ms};
use gate_agent::handle::GateHandle;
use gate_agent::replica::Replica;
use sync_protocol::ble::{BleCredential, BleKey, slot_at};
use sync_protocol::wire::{BeaconConfig, Decision, Reason};
use tokio::sync::{Notify, mpsc};

fn advert_line(t_ms: u64, rssi: i16, serial: u64, slot: u32) -> String {
    let data = BleCredential::issue(&BleKey::derive(BLE_SECRET, serial), serial, slot).encode();
    format!(
        r#"{{"t_ms": {t_ms}, "addr": "C0:FF:EE:00:00:{serial:02X}", "rssi": {rssi}, "service_uuid": "0xFEAA", "data_hex": "{}"}}"#,
        hex::encode(data)
    )
}

#[tokio::test]
async fn a_recorded_log_admits_the_badge_once_and_rejects_replays_and_pass_bys() {
    let beacon = BeaconConfig {
        service_uuid: 0xFEAA,
        threshold_dbm: -70,
        window_ms: 1_500,
        min_samples: 3,
    };
    let f = fixture(5, |g| g.beacon_config = Some(beacon));
    let now = wall_ms();
    let slot = slot_at(now / 1000);
    let mut log = Vec::new();
    for i in 0..8u64 {
        let t = now + i * 200;
        // Badge 1 stands at the gate, strong signal, advertising its current slot.
        log.push(advert_line(t, -48 - (i % 3) as i16, 1, slot));
        // Badge 2's advert was recorded five slots ago and is replayed now, also strong.
        log.push(advert_line(t + 10, -50, 2, slot - 5));
        // Badge 3 walks past in the corridor: heard, but weak.
        log.push(advert_line(t + 20, -88 - (i % 4) as i16, 3, slot));
    }
    // An unrelated advert under another service UUID is ignored.
    log.push(format!(
        r#"{{"t_ms": {}, "addr": "AA:AA:AA:AA:AA:AA", "rssi": -40, "service_uuid": "0x180F", "data_hex": "00"}}"#,
        now + 2_000
    ));
    let path = f.dir.path().join("adverts.jsonl");
    std::fs::write(&path, log.join("\n")).unwrap();

    let gate = Gate::new(Replica::open(&f.path()).unwrap()).unwrap();
    let handle = GateHandle::spawn(gate, Arc::new(Notify::new())).unwrap();
    let mut decisions = handle.subscribe();
    let (tx, rx) = mpsc::channel(64);
    let replay = hardware::AdvertReplay::open(&path, 0.0).await.unwrap();
    let source = hardware::spawn(hardware::BleSource::new("ble:replay", replay, beacon), tx);
    let intake = tokio::spawn(gate_agent::run::intake(
        rx,
        handle.clone(),
        Duration::from_secs(3),
        None,
        tokio_util::sync::CancellationToken::new(),
    ));
    source.await.unwrap().unwrap();
    intake.await.unwrap();

    let mut got = Vec::new();
    while let Ok(o) = decisions.try_recv() {
        got.push(o);
    }
    let for_serial = |s: u64| {
        got.iter()
            .filter(|o| o.ticket_serial == Some(s))
            .collect::<Vec<_>>()
    };
    let one = for_serial(1);
    assert_eq!(one.len(), 1, "badge 1 decided once: {got:#?}");
    assert_eq!(one[0].decision, Decision::Admit);
    assert_eq!(one[0].name.as_deref(), Some("Attendee 1"));
    let two = for_serial(2);
    assert_eq!(two.len(), 1, "{got:#?}");
    assert_eq!(
        (two[0].decision, two[0].reason),
        (Decision::Reject, Some(Reason::Expired))
    );
    assert!(
        for_serial(3).is_empty(),
        "a weak pass-by decides nothing: {got:#?}"
    );
    assert_eq!(got.len(), 2);
}
