//! The credential sources end to end through their public API: real bytes, real pixels, real
//! recorded adverts; no mocks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hardware::frames::{PipelineConfig, PipelineStats, frame_slot, run_decoder};
use hardware::presence::{BeaconConfig, PresenceFilter};
use hardware::{
    AdvertReplay, BleSource, CameraSource, FileSource, LumaFrame, Payload, Reading, WedgeReplay,
    WedgeSource,
};
use sync_protocol::ble::{BleCredential, BleKey};
use tokio::sync::mpsc;

async fn collect<S: hardware::CredentialSource>(source: S) -> Vec<Reading> {
    let (tx, mut rx) = mpsc::channel(64);
    let task = hardware::spawn(source, tx);
    let mut out = Vec::new();
    while let Some(r) = rx.recv().await {
        out.push(r);
    }
    task.await.unwrap().unwrap();
    out
}

fn texts(readings: &[Reading]) -> Vec<String> {
    readings
        .iter()
        .map(|r| match &r.payload {
            Payload::Text(t) => t.clone(),
            other => panic!("expected text, got {other:?}"),
        })
        .collect()
}

// ---------------------------------------------------------------- keyboard wedge

#[tokio::test]
async fn wedge_yields_one_reading_per_non_empty_line() {
    let input: &[u8] = b"U1:ABC\r\n\n  CODE-1234 \n";
    let readings = collect(WedgeSource::new("wedge:test", input)).await;
    assert_eq!(texts(&readings), ["U1:ABC", "CODE-1234"]);
    assert!(
        readings
            .iter()
            .all(|r| r.source == "wedge:test" && r.t_ms > 0)
    );
}

#[tokio::test]
async fn wedge_strips_control_characters_and_skips_overlong_lines() {
    let mut input = b"\x02U1:XYZ\x03\r\n".to_vec();
    input.extend(vec![b'A'; hardware::wedge::MAX_LINE_BYTES + 10]);
    input.extend_from_slice(b"\nLAST-LINE-NO-NEWLINE");
    let readings = collect(WedgeSource::new("wedge", std::io::Cursor::new(input))).await;
    assert_eq!(texts(&readings), ["U1:XYZ", "LAST-LINE-NO-NEWLINE"]);
}

// ---------------------------------------------------------------- camera pipeline

/// A frame whose first pixel carries an id, so a test decoder can tell frames apart.
fn tagged(id: u8) -> LumaFrame {
    let mut px = vec![0u8; 64 * 48];
    px[0] = id;
    LumaFrame::new(64, 48, px).unwrap()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn pipeline_decodes_the_newest_frame_and_drops_stale_ones() {
    let (mut publisher, subscriber) = frame_slot();
    let stats = subscriber.stats_handle();
    // The decoder blocks on the first frame until the test has published the rest, like a slow
    // decode while the camera keeps delivering.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let decoder = move |frame: &LumaFrame| {
        let id = frame.pixels()[0];
        if id == 1 {
            release_rx.lock().unwrap().recv().unwrap();
        }
        Some(format!("frame-{id}"))
    };
    let (tx, mut rx) = mpsc::channel(16);
    let worker = tokio::spawn(run_decoder(
        subscriber,
        decoder,
        PipelineConfig {
            frame_timeout: Duration::from_secs(5),
            ..PipelineConfig::default()
        },
        tx,
    ));

    publisher.publish(tagged(1)).unwrap();
    wait_until("frame 1 to be taken", || {
        PipelineStats::get(&stats.decoded) == 1
    })
    .await;
    for id in 2..=10 {
        publisher.publish(tagged(id)).unwrap();
    }
    release_tx.send(()).unwrap();
    drop(publisher);

    let mut got = Vec::new();
    while let Some(r) = rx.recv().await {
        got.push(r);
    }
    worker.await.unwrap();
    assert_eq!(texts(&got), ["frame-1", "frame-10"]);
    assert_eq!(PipelineStats::get(&stats.published), 10);
    assert_eq!(PipelineStats::get(&stats.dropped_stale), 8);
    assert_eq!(PipelineStats::get(&stats.decoded), 2);
}

#[tokio::test]
async fn pipeline_survives_a_panicking_decoder() {
    let (mut publisher, subscriber) = frame_slot();
    let stats = subscriber.stats_handle();
    let decoder = |frame: &LumaFrame| -> Option<String> {
        match frame.pixels()[0] {
            1 => panic!("decoder bug on frame 1"),
            id => Some(format!("frame-{id}")),
        }
    };
    let (tx, mut rx) = mpsc::channel(16);
    // A generous timeout: this test is about panics, and unwinding with RUST_BACKTRACE=1 on a
    // loaded machine can take longer than the camera's default frame budget.
    let config = PipelineConfig {
        frame_timeout: Duration::from_secs(30),
        ..PipelineConfig::default()
    };
    let worker = tokio::spawn(run_decoder(subscriber, decoder, config, tx));

    publisher.publish(tagged(1)).unwrap();
    wait_until("the panic to be caught", || {
        PipelineStats::get(&stats.panics) == 1
    })
    .await;
    publisher.publish(tagged(2)).unwrap();
    let reading = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reading.payload, Payload::Text("frame-2".into()));
    drop(publisher);
    worker.await.unwrap();
}

#[tokio::test]
async fn pipeline_abandons_a_decode_that_overruns_its_timeout() {
    let (mut publisher, subscriber) = frame_slot();
    let stats = subscriber.stats_handle();
    let decoder = |frame: &LumaFrame| -> Option<String> {
        let id = frame.pixels()[0];
        if id == 1 {
            std::thread::sleep(Duration::from_millis(400));
        }
        Some(format!("frame-{id}"))
    };
    let (tx, mut rx) = mpsc::channel(16);
    let config = PipelineConfig {
        frame_timeout: Duration::from_millis(50),
        ..PipelineConfig::default()
    };
    let worker = tokio::spawn(run_decoder(subscriber, decoder, config, tx));
    publisher.publish(tagged(1)).unwrap();
    wait_until("the abandonment", || {
        PipelineStats::get(&stats.abandoned) == 1
    })
    .await;
    publisher.publish(tagged(2)).unwrap();
    drop(publisher);
    let mut got = Vec::new();
    while let Some(r) = rx.recv().await {
        got.push(r);
    }
    worker.await.unwrap();
    // Frame 1's late result is discarded; frame 2 is read.
    assert_eq!(texts(&got), ["frame-2"]);
}

#[tokio::test]
async fn camera_source_reads_a_ticket_from_synthetic_frames_once() {
    let ticket = common::ticket_string(3);
    let empty = LumaFrame::filled(1280, 720, 128).unwrap();
    let with_code = common::ticket_frame(&ticket, 3, 0.0);
    // The same ticket in consecutive frames is one reading (repeat hold-off), and the last frame
    // is never dropped, so exactly one reading must come out.
    let frames = vec![empty, with_code.clone(), with_code];
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let qr = hardware::QrDecoder::new(Duration::from_secs(10));
    let decoder = move |f: &LumaFrame| {
        counted.fetch_add(1, Ordering::Relaxed);
        qr.decode(f)
    };
    let source = CameraSource::new(
        frames.into_iter(),
        decoder,
        PipelineConfig {
            source_name: "camera:test".into(),
            frame_timeout: Duration::from_secs(10),
            ..PipelineConfig::default()
        },
    );
    let readings = collect(source).await;
    assert_eq!(texts(&readings), [ticket]);
    assert_eq!(readings[0].source, "camera:test");
    assert!(calls.load(Ordering::Relaxed) >= 1);
}

// ---------------------------------------------------------------- BLE presence

fn beacon() -> BeaconConfig {
    BeaconConfig {
        service_uuid: 0xFEAA,
        threshold_dbm: -70,
        window_ms: 1_500,
        min_samples: 3,
    }
}

#[test]
fn strong_signal_admits_once_per_serial_and_slot() {
    let mut filter = PresenceFilter::new(&beacon());
    let mut sightings = Vec::new();
    // Ten adverts a second for three seconds in slot 100, then slot 101.
    for i in 0..30u64 {
        sightings.extend(filter.observe(7, 100, -55, 1_000 + i * 100));
    }
    for i in 0..30u64 {
        sightings.extend(filter.observe(7, 101, -55, 4_000 + i * 100));
    }
    // Another badge at the same time is its own sighting.
    sightings.extend((0..5u64).filter_map(|i| filter.observe(8, 101, -60, 4_000 + i * 100)));
    let keys: Vec<_> = sightings.iter().map(|s| (s.serial, s.slot)).collect();
    assert_eq!(keys, [(7, 100), (7, 101), (8, 101)]);
    assert_eq!(sightings[0].samples, 3);
    assert_eq!(sightings[0].median_rssi, -55);
    assert_eq!(sightings[0].t_ms, 1_200);
}

#[test]
fn weak_pass_by_emits_nothing() {
    let mut filter = PresenceFilter::new(&beacon());
    // Someone walks past in the corridor: the signal peaks briefly above the threshold, but the
    // median over any window stays below it.
    let rssi = [-92, -88, -84, -79, -74, -66, -63, -71, -77, -83, -89, -93];
    for (i, r) in rssi.iter().enumerate() {
        assert_eq!(
            filter.observe(9, 5, *r, 10_000 + i as u64 * 200),
            None,
            "advert {i}"
        );
    }
}

#[test]
fn fewer_than_min_samples_emits_nothing() {
    let mut filter = PresenceFilter::new(&beacon());
    assert_eq!(filter.observe(1, 1, -40, 0), None);
    assert_eq!(filter.observe(1, 1, -40, 100), None);
    // The third strong advert arrives after the first has left the 1.5 s window: still two.
    assert_eq!(filter.observe(1, 1, -40, 1_550), None);
    // A fourth, with the second still inside the window, makes three.
    assert!(filter.observe(1, 1, -40, 1_560).is_some());
    // Two adverts of a badge with min_samples = 3 never admit, however strong.
    assert_eq!(filter.observe(2, 1, -30, 2_000), None);
    assert_eq!(filter.observe(2, 1, -30, 2_100), None);
}

fn advert_line(t_ms: u64, rssi: i16, uuid: &str, data: &[u8]) -> String {
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        r#"{{"t_ms": {t_ms}, "addr": "C4:7F:51:0A:33:10", "rssi": {rssi}, "service_uuid": {uuid}, "data_hex": "{hex}"}}"#
    )
}

/// A recorded session: a badge at the gate, a badge walking past, an Eddystone beacon sharing
/// the UUID with a non-Usher frame, and a device on another UUID.
fn recorded_log() -> (String, BleCredential, BleCredential) {
    let secret = b"event ble secret for tests";
    let slot = 59_666_666;
    let at_gate = BleCredential::issue(&BleKey::derive(secret, 1001), 1001, slot);
    let passing = BleCredential::issue(&BleKey::derive(secret, 2002), 2002, slot);
    let mut lines = Vec::new();
    for i in 0..20u64 {
        let t = 1_790_000_000_000 + i * 100;
        lines.push(advert_line(
            t,
            -52 - (i % 3) as i16,
            "\"0xFEAA\"",
            &at_gate.encode(),
        ));
        let weak = [-95i16, -90, -85, -80, -75, -68, -72, -82, -88, -93][(i / 2) as usize];
        lines.push(advert_line(t + 5, weak, "65194", &passing.encode()));
        lines.push(advert_line(
            t + 7,
            -40,
            "\"0xFEAA\"",
            &[0x10, 0xEB, 0x01, 0x02],
        ));
        lines.push(advert_line(t + 9, -40, "\"0x180F\"", &at_gate.encode()));
    }
    lines.push(String::new());
    (lines.join("\n"), at_gate, passing)
}

#[tokio::test]
async fn replayed_advert_log_drives_the_presence_filter() {
    let (log, at_gate, _passing) = recorded_log();
    let adverts = AdvertReplay::new(std::io::Cursor::new(log.into_bytes()), 0.0);
    let readings = collect(BleSource::new("ble:replay", adverts, beacon())).await;
    assert_eq!(readings.len(), 1, "{readings:?}");
    let Payload::Ble { service_data, rssi } = &readings[0].payload else {
        panic!("expected a BLE reading");
    };
    assert_eq!(BleCredential::decode(service_data).unwrap(), at_gate);
    assert!((-54..=-52).contains(rssi));
    assert_eq!(readings[0].t_ms, 1_790_000_000_000 + 200);
    assert_eq!(readings[0].source, "ble:replay");
}

#[tokio::test]
async fn replay_is_paced_by_recorded_time() {
    let (log, _, _) = recorded_log();
    // The log spans 1.9 s; at speed 20 that is ~95 ms, at speed 0 no waiting at all.
    let start = std::time::Instant::now();
    let adverts = AdvertReplay::new(std::io::Cursor::new(log.clone().into_bytes()), 20.0);
    collect(BleSource::new("ble", adverts, beacon())).await;
    assert!(
        start.elapsed() >= Duration::from_millis(90),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn malformed_replay_line_is_an_error_with_its_line_number() {
    let log = format!("{}\n{{\"t_ms\": 1}}\n", advert_line(0, -50, "1", &[1]));
    let adverts = AdvertReplay::new(std::io::Cursor::new(log.into_bytes()), 0.0);
    let (tx, _rx) = mpsc::channel(4);
    let err = hardware::spawn(BleSource::new("ble", adverts, beacon()), tx)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, hardware::SourceError::Replay { line: 2, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn wedge_log_replays_with_recorded_timestamps() {
    let log = concat!(
        r#"{"t_ms": 1790000000000, "text": "U1:ABC\r"}"#,
        "\n",
        r#"{"t_ms": 1790000000500, "text": "  "}"#,
        "\n",
        r#"{"t_ms": 1790000001000, "text": "CODE-1234"}"#,
        "\n"
    );
    let readings = collect(WedgeReplay::new("wedge:replay", log.as_bytes(), 0.0)).await;
    assert_eq!(texts(&readings), ["U1:ABC", "CODE-1234"]);
    assert_eq!(readings[1].t_ms, 1_790_000_001_000);
}

// ---------------------------------------------------------------- files

#[tokio::test]
async fn file_source_reads_png_and_jpeg_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ticket = common::ticket_string(11);
    let frame = common::render_qr(&ticket, 4);
    let img =
        image::GrayImage::from_raw(frame.width(), frame.height(), frame.into_pixels()).unwrap();
    let png = dir.path().join("ticket.png");
    let jpg = dir.path().join("ticket.jpg");
    img.save(&png).unwrap();
    img.save(&jpg).unwrap();
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image").unwrap();
    let blank = dir.path().join("blank.png");
    image::GrayImage::from_pixel(200, 200, image::Luma([255]))
        .save(&blank)
        .unwrap();

    let source = FileSource::new("file", [png, junk, blank, jpg]);
    let readings = collect(source).await;
    assert_eq!(texts(&readings), [ticket.clone(), ticket]);
}

// ---------------------------------------------------------------- shutdown

/// Starts `source`, lets it settle into waiting, drops the receiver and expects the source to
/// return promptly: dropping the receiver is the gate agent's shutdown signal.
async fn stops_when_the_receiver_is_dropped<S: hardware::CredentialSource>(what: &str, source: S) {
    let (tx, mut rx) = mpsc::channel(4);
    let task = hardware::spawn(source, tx);
    // Take whatever comes first, then leave the source waiting for more.
    let _ = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    drop(rx);
    let stopped = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .unwrap_or_else(|_| panic!("{what} still running 3 s after its receiver was dropped"));
    stopped.unwrap().unwrap();
}

#[tokio::test]
async fn every_source_stops_while_it_waits_once_the_receiver_is_dropped() {
    // A scanner that never types again.
    let (_typing, silent) = tokio::io::duplex(64);
    stops_when_the_receiver_is_dropped(
        "a silent wedge",
        WedgeSource::new("wedge", tokio::io::BufReader::new(silent)),
    )
    .await;

    // A real-time replay whose next line is an hour away.
    let log = concat!(
        r#"{"t_ms": 1790000000000, "text": "U1:ABC"}"#,
        "\n",
        r#"{"t_ms": 1790003600000, "text": "U1:DEF"}"#,
        "\n"
    );
    stops_when_the_receiver_is_dropped(
        "a paced wedge replay",
        WedgeReplay::new("wedge:replay", log.as_bytes(), 1.0),
    )
    .await;

    let adverts = [
        advert_line(1_790_000_000_000, -50, "\"0xFEAA\"", &[1, 2, 3]),
        advert_line(1_790_003_600_000, -50, "\"0xFEAA\"", &[1, 2, 3]),
    ]
    .join("\n");
    stops_when_the_receiver_is_dropped(
        "a paced advert replay",
        BleSource::new(
            "ble:replay",
            AdvertReplay::new(std::io::Cursor::new(adverts.into_bytes()), 1.0),
            beacon(),
        ),
    )
    .await;

    // A camera streaming frames with nothing in them, forever.
    let frames = std::iter::repeat_with(|| {
        std::thread::sleep(Duration::from_millis(5));
        tagged(0)
    });
    stops_when_the_receiver_is_dropped(
        "a streaming camera",
        CameraSource::new(frames, |_: &LumaFrame| None, PipelineConfig::default()),
    )
    .await;
}
