//! Fixtures shared by the integration tests and the benchmark (which includes this file with
//! `#[path]`): the ZXing photo set and rendered Usher ticket frames. Real pixels only.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use hardware::luma::LumaFrame;
use qrcode::{Color, EcLevel, QrCode};

/// The repository's `testdata/qr`, resolved from this crate's manifest (no absolute path).
pub fn qr_testdata_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/qr");
    assert!(
        dir.join("qrcode-1").is_dir(),
        "QR test photos not found at {} (testdata/qr/qrcode-1..6 with N.png + N.txt, \
         part of the repository)",
        dir.display()
    );
    dir
}

/// One photo of the set: its name relative to the set (`qrcode-4/09.png`), pixels, expected text.
pub struct Sample {
    pub name: String,
    pub frame: LumaFrame,
    pub expected: String,
}

/// Every `N.png` with its `N.txt`, in a stable order.
pub fn load_photo_set() -> Vec<Sample> {
    let dir = qr_testdata_dir();
    let mut out = Vec::new();
    for d in 1..=6 {
        let sub = dir.join(format!("qrcode-{d}"));
        let mut pngs: Vec<PathBuf> = std::fs::read_dir(&sub)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", sub.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "png"))
            .collect();
        pngs.sort();
        for png in pngs {
            let expected = std::fs::read_to_string(png.with_extension("txt"))
                .unwrap_or_else(|e| panic!("missing expected text for {}: {e}", png.display()));
            let frame = hardware::qr::load_luma(&png).unwrap();
            out.push(Sample {
                name: format!("qrcode-{d}/{}", png.file_name().unwrap().to_string_lossy()),
                frame,
                expected,
            });
        }
    }
    out
}

/// RFC 9285 base45 (the QR alphanumeric alphabet), written out so the tests do not lean on
/// the protocol crate they are meant to be independent of.
pub fn base45(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
    let mut out = String::new();
    for chunk in bytes.chunks(2) {
        let (mut n, digits) = match chunk {
            [a, b] => (u32::from(*a) * 256 + u32::from(*b), 3),
            [a] => (u32::from(*a), 2),
            _ => unreachable!(),
        };
        for _ in 0..digits {
            out.push(ALPHABET[(n % 45) as usize] as char);
            n /= 45;
        }
    }
    out
}

/// A realistic ticket: `U1:` + base45 of 91 bytes (version 1, key id, event tag, serial,
/// validity, scopes, then 64 pseudo-random "signature" bytes) = 140 characters.
pub fn ticket_string(seed: u64) -> String {
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&7u32.to_be_bytes());
    bytes.extend_from_slice(&0x5553_4845u32.to_be_bytes());
    bytes.extend_from_slice(&(1_000_000 + seed).to_be_bytes());
    bytes.extend_from_slice(&1_790_000_000u32.to_be_bytes());
    bytes.extend_from_slice(&1_790_086_400u32.to_be_bytes());
    bytes.extend_from_slice(&0b101u16.to_be_bytes());
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..64 {
        // xorshift64: deterministic filler standing in for an ed25519 signature.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.push(x as u8);
    }
    assert_eq!(bytes.len(), 91);
    let s = format!("U1:{}", base45(&bytes));
    assert_eq!(s.len(), 140);
    s
}

/// The ticket as the server renders it (ECC level M), `scale` pixels per module, with the
/// standard 4-module quiet zone, dark = 20, light = 235 (paper and a phone screen are never
/// pure black and white).
pub fn render_qr(text: &str, scale: u32) -> LumaFrame {
    let code = QrCode::with_error_correction_level(text, EcLevel::M).unwrap();
    let n = code.width() as u32;
    let quiet = 4;
    let side = n + 2 * quiet;
    let colors = code.to_colors();
    let mut px = Vec::with_capacity((side * side) as usize);
    for y in 0..side {
        for x in 0..side {
            let dark = x >= quiet
                && y >= quiet
                && x < quiet + n
                && y < quiet + n
                && colors[((y - quiet) * n + (x - quiet)) as usize] == Color::Dark;
            px.push(if dark { 20 } else { 235 });
        }
    }
    LumaFrame::new(side, side, px)
        .unwrap()
        .upscale_nearest(scale)
}

/// A 1280×720 mid-grey camera frame with `code` rotated by `degrees` and placed off-centre,
/// so the code covers only a small part of the frame as at a real gate.
pub fn ticket_frame(text: &str, scale: u32, degrees: f32) -> LumaFrame {
    let code = render_qr(text, scale).rotate(degrees, 128);
    let mut frame = LumaFrame::filled(1280, 720, 128).unwrap();
    let x = 1280 * 3 / 5 - i64::from(code.width()) / 2;
    let y = 720 * 2 / 5 - i64::from(code.height()) / 2;
    frame.paste(&code, x, y);
    frame
}
