//! QR decoding on real pixels: the ZXing photo set and rendered Usher tickets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use hardware::luma::LumaFrame;
use hardware::qr::{DEFAULT_LADDER, QrDecoder, decode_image_file};

/// The photos the chosen decoder (rxing fast path + retry ladder) reads in the measurement
/// (`cargo bench -p hardware`): 85 of 90. ZXing C++ reads 83. Not here, and why:
/// `qrcode-2/13` (modules textured with an aerial photo, no quiet zone) and
/// `qrcode-4/05`, `/13`, `/31`, `/33` (prints on crumpled fabric: the symbol is found but the
/// warp defeats a homography and Reed–Solomon gives up, in both rxing and rqrr).
const DECODABLE: &[&str] = &[
    "qrcode-1/1.png",
    "qrcode-1/3.png",
    "qrcode-1/5.png",
    "qrcode-1/7.png",
    "qrcode-1/9.png",
    "qrcode-1/11.png",
    "qrcode-1/13.png",
    "qrcode-1/15.png",
    "qrcode-1/17.png",
    "qrcode-1/19.png",
    "qrcode-2/1.png",
    "qrcode-2/5.png",
    "qrcode-2/7.png",
    "qrcode-2/9.png",
    "qrcode-2/11.png",
    "qrcode-2/15.png",
    "qrcode-2/17.png",
    "qrcode-2/19.png",
    "qrcode-2/21.png",
    "qrcode-2/23.png",
    "qrcode-2/25.png",
    "qrcode-2/27.png",
    "qrcode-2/29.png",
    "qrcode-2/31.png",
    "qrcode-2/33.png",
    "qrcode-2/35.png",
    "qrcode-3/01.png",
    "qrcode-3/03.png",
    "qrcode-3/05.png",
    "qrcode-3/07.png",
    "qrcode-3/09.png",
    "qrcode-3/11.png",
    "qrcode-3/13.png",
    "qrcode-3/15.png",
    "qrcode-3/17.png",
    "qrcode-3/19.png",
    "qrcode-3/21.png",
    "qrcode-3/23.png",
    "qrcode-3/25.png",
    "qrcode-3/27.png",
    "qrcode-3/29.png",
    "qrcode-3/31.png",
    "qrcode-3/33.png",
    "qrcode-3/35.png",
    "qrcode-3/37.png",
    "qrcode-3/39.png",
    "qrcode-3/41.png",
    "qrcode-4/01.png",
    "qrcode-4/03.png",
    "qrcode-4/07.png",
    "qrcode-4/09.png",
    "qrcode-4/11.png",
    "qrcode-4/15.png",
    "qrcode-4/17.png",
    "qrcode-4/19.png",
    "qrcode-4/21.png",
    "qrcode-4/23.png",
    "qrcode-4/25.png",
    "qrcode-4/27.png",
    "qrcode-4/29.png",
    "qrcode-4/35.png",
    "qrcode-4/37.png",
    "qrcode-4/39.png",
    "qrcode-4/41.png",
    "qrcode-4/43.png",
    "qrcode-4/45.png",
    "qrcode-4/47.png",
    "qrcode-5/01.png",
    "qrcode-5/03.png",
    "qrcode-5/05.png",
    "qrcode-5/07.png",
    "qrcode-5/09.png",
    "qrcode-5/11.png",
    "qrcode-5/13.png",
    "qrcode-5/15.png",
    "qrcode-5/17.png",
    "qrcode-5/19.png",
    "qrcode-6/1.png",
    "qrcode-6/3.png",
    "qrcode-6/5.png",
    "qrcode-6/7.png",
    "qrcode-6/9.png",
    "qrcode-6/11.png",
    "qrcode-6/13.png",
    "qrcode-6/15.png",
];

#[test]
fn every_expected_photo_decodes_to_its_exact_text() {
    let dir = common::qr_testdata_dir();
    let mut failures = Vec::new();
    for name in DECODABLE {
        let png = dir.join(name);
        let expected = std::fs::read_to_string(png.with_extension("txt"))
            .unwrap_or_else(|e| panic!("missing {}: {e}", png.with_extension("txt").display()));
        match decode_image_file(&png) {
            Ok(Some(text)) if text == expected => {}
            other => failures.push(format!("{name}: got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "regressions:\n{}", failures.join("\n"));
}

#[test]
fn the_expected_list_is_the_whole_set_minus_five_and_nothing_reads_wrong() {
    let set = common::load_photo_set();
    assert_eq!(set.len(), 90, "the shared set should hold 90 photos");
    assert_eq!(DECODABLE.len(), 85);
    let decoder = QrDecoder::for_files();
    for sample in &set {
        let listed = DECODABLE.contains(&sample.name.as_str());
        let got = decoder.decode(&sample.frame);
        // A photo off the list may start reading after an improvement (then add it), but no
        // photo may ever read as the wrong text.
        if let Some(text) = &got {
            assert_eq!(
                text, &sample.expected,
                "{} read as the wrong text",
                sample.name
            );
        }
        if !listed && got.is_some() {
            println!("{} now decodes: add it to DECODABLE", sample.name);
        }
    }
}

/// A generous budget: these tests check what decodes; the benchmark checks how fast.
fn patient() -> QrDecoder {
    QrDecoder::new(Duration::from_secs(10))
}

#[test]
fn ticket_in_a_720p_frame_decodes_at_every_scale_and_rotation() {
    let ticket = common::ticket_string(42);
    assert!(ticket.starts_with("U1:") && ticket.len() == 140);
    let decoder = patient();
    let mut failures = Vec::new();
    for scale in [2, 3, 4, 6] {
        for degrees in [0.0, 90.0, 180.0, 270.0, 15.0, 30.0] {
            let frame = common::ticket_frame(&ticket, scale, degrees);
            assert_eq!((frame.width(), frame.height()), (1280, 720));
            match decoder.decode(&frame) {
                Some(text) if text == ticket => {}
                other => failures.push(format!("{scale} px/module at {degrees}°: {other:?}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "undecoded tickets:\n{}",
        failures.join("\n")
    );
}

#[test]
fn dark_mode_ticket_decodes_through_the_retry_ladder() {
    let ticket = common::ticket_string(7);
    let inverted = common::ticket_frame(&ticket, 4, 0.0).inverted();
    let report = patient().decode_report(&inverted);
    assert_eq!(report.text.as_deref(), Some(ticket.as_str()), "{report:?}");
    let invert_rung = DEFAULT_LADDER.len() - 1;
    assert_eq!(report.attempt, Some(invert_rung));
}

#[test]
fn the_camera_decoder_gives_up_fast_on_an_empty_frame() {
    let empty = LumaFrame::filled(1280, 720, 128).unwrap();
    let report = QrDecoder::default().decode_report(&empty);
    assert_eq!(report.text, None);
    assert!(
        report.no_evidence,
        "no finder pattern should skip the retries: {report:?}"
    );
    assert_eq!(report.attempts_run, 1);
}

#[test]
fn unreadable_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-an-image.png");
    std::fs::write(&path, b"definitely not a PNG").unwrap();
    assert!(decode_image_file(&path).is_err());
    assert!(decode_image_file(dir.path().join("missing.png")).is_err());
}
