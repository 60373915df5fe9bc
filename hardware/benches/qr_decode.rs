//! QR decoder benchmark: decode rate and latency on the ZXing photo set and on 1280×720 frames
//! holding a rendered Usher ticket. `cargo bench -p hardware` prints the measurement table that
//! chose the decoder (see `src/qr.rs`). Plain `main`, no harness: the numbers are the output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use hardware::luma::LumaFrame;
use hardware::qr::{Attempt, DEFAULT_LADDER, Engine, Preprocess, QrDecoder};

/// Repetitions per image; the per-image time is the median of these.
const REPS: usize = 5;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

struct Row {
    decoded: usize,
    total: usize,
    p50: f64,
    p95: f64,
    max: f64,
}

/// Runs `decode` over `(frame, expected)` pairs: how many read exactly, and the per-image time.
fn measure<'a>(
    items: impl Iterator<Item = (&'a LumaFrame, &'a str)>,
    decode: &dyn Fn(&LumaFrame) -> Option<String>,
) -> Row {
    let mut times = Vec::new();
    let (mut decoded, mut total) = (0, 0);
    for (frame, expected) in items {
        total += 1;
        let mut reps = Vec::with_capacity(REPS);
        let mut ok = false;
        for _ in 0..REPS {
            let start = Instant::now();
            let text = decode(frame);
            reps.push(start.elapsed().as_secs_f64() * 1e3);
            ok = text.as_deref() == Some(expected);
        }
        reps.sort_by(f64::total_cmp);
        times.push(reps[REPS / 2]);
        decoded += usize::from(ok);
    }
    times.sort_by(f64::total_cmp);
    Row {
        decoded,
        total,
        p50: percentile(&times, 0.5),
        p95: percentile(&times, 0.95),
        max: percentile(&times, 1.0),
    }
}

fn print_row(label: &str, row: &Row) {
    println!(
        "| {label:<44} | {:>3}/{:<3} | {:>7.2} | {:>7.2} | {:>7.2} |",
        row.decoded, row.total, row.p50, row.p95, row.max
    );
}

fn header(title: &str) {
    println!("\n{title}");
    println!(
        "| {:<44} | {:>7} | {:>7} | {:>7} | {:>7} |",
        "decoder × preprocessing", "decoded", "p50 ms", "p95 ms", "max ms"
    );
    println!("|{:-<46}|{:-<9}|{:-<9}|{:-<9}|{:-<9}|", "", "", "", "", "");
}

fn main() {
    // rqrr panics on at least one photo; the guard turns that into "not decoded", but the default
    // hook would still print a backtrace into the table.
    std::panic::set_hook(Box::new(|_| {}));
    // `cargo bench` passes `--bench`; a filter argument selects sections: photos, tickets, empty.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants =
        |section: &str| args.is_empty() || args.iter().any(|a| section.contains(a.as_str()));

    if wants("photos") {
        let set = common::load_photo_set();
        let photos = || set.iter().map(|s| (&s.frame, s.expected.as_str()));
        header(&format!(
            "ZXing black-box photos ({} images; ZXing C++ reads 83), time per image",
            set.len()
        ));
        let chosen = QrDecoder::for_files();
        print_row(
            "CHOSEN rxing fast path + retry ladder",
            &measure(photos(), &|f| chosen.decode(f)),
        );
        let camera = QrDecoder::default();
        print_row(
            "  same, camera config (25 ms, evidence gate)",
            &measure(photos(), &|f| camera.decode(f)),
        );
        let single = |p, e, th| Attempt::new(p, e, th);
        let rows: &[(&str, Attempt)] = &[
            ("rqrr 0.11", single(Preprocess::None, Engine::Rqrr, false)),
            ("rxing 0.9 C++ port, hybrid (fast path)", DEFAULT_LADDER[0]),
            (
                "rxing C++ port, TryHarder",
                single(Preprocess::None, Engine::Rxing, true),
            ),
            (
                "rxing Java port, TryHarder",
                single(Preprocess::None, Engine::RxingJava, true),
            ),
            (
                "rxing C++ port, global histogram",
                single(Preprocess::None, Engine::RxingGlobal, true),
            ),
            (
                "rxing + sharpen",
                single(Preprocess::Sharpen, Engine::Rxing, true),
            ),
            (
                "rxing + upscale 1.5×",
                single(Preprocess::Upscale3Over2, Engine::Rxing, true),
            ),
            (
                "rxing + downscale 2×",
                single(Preprocess::Downscale2, Engine::Rxing, true),
            ),
            (
                "rxing + contrast stretch",
                single(Preprocess::ContrastStretch, Engine::Rxing, true),
            ),
            (
                "rxing global + contrast stretch",
                single(Preprocess::ContrastStretch, Engine::RxingGlobal, true),
            ),
            (
                "rxing + Otsu binarization",
                single(Preprocess::Otsu, Engine::Rxing, true),
            ),
            (
                "rxing + invert",
                single(Preprocess::Invert, Engine::Rxing, true),
            ),
            (
                "rqrr + Otsu binarization",
                single(Preprocess::Otsu, Engine::Rqrr, false),
            ),
            (
                "rqrr + upscale 1.5×",
                single(Preprocess::Upscale3Over2, Engine::Rqrr, false),
            ),
        ];
        for (label, attempt) in rows {
            print_row(label, &measure(photos(), &|f| attempt.run(f)));
        }
        let rqrr_ladder = QrDecoder::with_attempts(
            vec![
                single(Preprocess::None, Engine::Rqrr, false),
                single(Preprocess::Otsu, Engine::Rqrr, false),
                single(Preprocess::Upscale3Over2, Engine::Rqrr, false),
            ],
            Duration::from_millis(500),
        );
        print_row(
            "rqrr ladder (plain, Otsu, upscale)",
            &measure(photos(), &|f| rqrr_ladder.decode(f)),
        );

        println!("\nwhich rung read each photo (chosen ladder):");
        let mut per_rung = vec![0usize; DEFAULT_LADDER.len()];
        let mut missed = Vec::new();
        for s in &set {
            let report = chosen.decode_report(&s.frame);
            match report.attempt {
                Some(i) if report.text.as_deref() == Some(s.expected.as_str()) => per_rung[i] += 1,
                _ => missed.push(s.name.as_str()),
            }
        }
        for (attempt, n) in DEFAULT_LADDER.iter().zip(&per_rung) {
            println!("  {n:>3}  {:?} / {:?}", attempt.preprocess, attempt.engine);
        }
        println!("  not read: {}", missed.join(", "));
    }

    if wants("tickets") {
        let ticket = common::ticket_string(1);
        let mut frames = Vec::new();
        for scale in [2, 3, 4, 6] {
            for degrees in [0.0, 90.0, 180.0, 270.0, 15.0, 30.0] {
                frames.push(common::ticket_frame(&ticket, scale, degrees));
            }
        }
        let items = || frames.iter().map(|f| (f, ticket.as_str()));
        header(&format!(
            "1280×720 frames with a 140-char ticket (ECC M, {} frames: 2/3/4/6 px/module × 0/90/180/270/15/30°)",
            frames.len()
        ));
        let camera = QrDecoder::default();
        print_row(
            "CHOSEN camera decoder (QrDecoder::default)",
            &measure(items(), &|f| camera.decode(f)),
        );
        let fast = Attempt::new(Preprocess::None, Engine::Rxing, false);
        print_row("rxing fast path only", &measure(items(), &|f| fast.run(f)));
        let rqrr = Attempt::new(Preprocess::None, Engine::Rqrr, false);
        print_row("rqrr 0.11", &measure(items(), &|f| rqrr.run(f)));
    }

    if wants("empty") {
        header("1280×720 frames without a readable code (decoded must stay 0)");
        let blank = LumaFrame::filled(1280, 720, 128).unwrap();
        // A textured scene: a gradient with stripes, so binarizers see structure but no code.
        let mut scene = LumaFrame::filled(1280, 720, 0).unwrap();
        for y in 0..720u32 {
            let row: Vec<u8> = (0..1280u32)
                .map(|x| ((x / 7 + y / 11) % 2 * 90 + (x * 100 / 1280) + 30) as u8)
                .collect();
            scene.paste(&LumaFrame::new(1280, 1, row).unwrap(), 0, i64::from(y));
        }
        let camera = QrDecoder::default();
        let rqrr = Attempt::new(Preprocess::None, Engine::Rqrr, false);
        let frames = [blank, scene];
        let none = || frames.iter().map(|f| (f, ""));
        print_row(
            "CHOSEN camera decoder: blank + textured",
            &measure(none(), &|f| camera.decode(f)),
        );
        print_row(
            "rqrr 0.11: blank + textured",
            &measure(none(), &|f| rqrr.run(f)),
        );
        // Finder patterns visible but the data area wiped: the worst case, every rung runs.
        let ticket = common::ticket_string(2);
        let mut damaged = common::ticket_frame(&ticket, 4, 0.0);
        let wipe = LumaFrame::filled(90, 90, 128).unwrap();
        damaged.paste(&wipe, 1280 * 3 / 5 - 45, 720 * 2 / 5 - 45);
        let damaged = [damaged];
        let report = camera.decode_report(&damaged[0]);
        print_row(
            &format!(
                "CHOSEN camera decoder: damaged ({} rungs)",
                report.attempts_run
            ),
            &measure(damaged.iter().map(|f| (f, "")), &|f| camera.decode(f)),
        );
    }
}
