//! QR decoding: panic-proof engine calls and a time-budgeted retry ladder.
//!
//! The engine and the ladder were chosen by measuring (release build, this 2-core machine) on
//! the 90 ZXing black-box photos in `testdata/qr`; `cargo bench -p hardware` reprints the
//! whole table:
//!
//! * rxing's port of the ZXing C++ QR reader reads 83/90 alone, the same count as ZXing C++,
//!   at 0.23 ms median / 0.8 ms p95 per photo. rqrr reads 53/90 at 4.5 ms / 8.3 ms, and panics on
//!   one photo. On 1280×720 frames with a ticket, rxing takes 1.2 ms, rqrr 11.6 ms.
//! * The fast path is that one rxing call (TryHarder off). It is all a ticket on a phone or on
//!   paper needs: 1.3 ms p95 on a 720p frame, against the 10 ms target of DESIGN §7.
//! * Only when it fails *and* the binarized frame shows a finder pattern (most camera frames
//!   show none, and then the whole decode costs 1.6 ms) do the retries run, in order of value
//!   per millisecond, until one reads or the time budget is spent. They add two photos (85/90,
//!   p95 1.9 ms); the full ladder on a 720p frame costs 16 ms. The five photos left are crumpled
//!   fabric prints and a code with photo-textured modules: both engines locate the symbol, but
//!   the warp is beyond a homography and Reed–Solomon gives up.
//! * Every engine call runs under `catch_unwind`: a decoder bug costs one frame, not the gate.

use std::borrow::Cow;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use rxing::common::{GlobalHistogramBinarizer, HybridBinarizer};
use rxing::qrcode::QRCodeReader;
use rxing::qrcode::cpp_port::QrReader;
use rxing::qrcode::cpp_port::detector::FindFinderPatterns;
use rxing::{BarcodeFormat, BinaryBitmap, DecodeHints, ImmutableReader, Luma8Source, Reader};
use thiserror::Error;

use crate::luma::LumaFrame;

/// Which decoding library (and binarizer) to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// rxing's port of the ZXing C++ QR reader with the local (hybrid) binarizer. The default.
    Rxing,
    /// The same reader with a global-histogram binarizer, which copes better with strong blur.
    RxingGlobal,
    /// rxing's port of the older ZXing Java QR reader (different finder-pattern logic, so it
    /// reads some photos the C++ port misses).
    RxingJava,
    /// rqrr, a port of quirc. Kept for comparison; slower and weaker on photos.
    Rqrr,
}

/// A cheap transform applied to the frame before an engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preprocess {
    /// The frame as captured.
    None,
    /// Unsharp mask (amount ½): separates modules that defocus smeared together.
    Sharpen,
    /// Bilinear enlargement by 3/2: gives the finder-pattern scan more pixels per module on
    /// small or low-resolution codes.
    Upscale3Over2,
    /// 2×2 box average: big photos of a code that fills the frame decode faster and more
    /// reliably with sensor noise averaged out.
    Downscale2,
    /// Percentile contrast stretch (dim, washed-out prints).
    ContrastStretch,
    /// Global Otsu threshold.
    Otsu,
    /// `255 − p`: light-on-dark codes (phones in dark mode).
    Invert,
}

impl Preprocess {
    fn apply<'a>(self, frame: &'a LumaFrame) -> Cow<'a, LumaFrame> {
        match self {
            Preprocess::None => Cow::Borrowed(frame),
            Preprocess::Sharpen => Cow::Owned(frame.sharpened(0.5)),
            Preprocess::Upscale3Over2 => Cow::Owned(frame.resize(
                frame.width().saturating_mul(3) / 2,
                frame.height().saturating_mul(3) / 2,
            )),
            Preprocess::Downscale2 => Cow::Owned(frame.downscale(2)),
            Preprocess::ContrastStretch => Cow::Owned(frame.contrast_stretched()),
            Preprocess::Otsu => Cow::Owned(frame.binarized_otsu()),
            Preprocess::Invert => Cow::Owned(frame.inverted()),
        }
    }
}

/// One rung of the ladder: a transform, then an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempt {
    pub preprocess: Preprocess,
    pub engine: Engine,
    /// ZXing's TryHarder: scan every third row for finder patterns instead of skipping rows
    /// in proportion to the frame height. Needed for small codes in big frames.
    pub try_harder: bool,
}

impl Attempt {
    pub const fn new(preprocess: Preprocess, engine: Engine, try_harder: bool) -> Self {
        Self {
            preprocess,
            engine,
            try_harder,
        }
    }

    /// Runs this attempt alone (no budget, no fallback). Engine panics become `None`.
    pub fn run(&self, frame: &LumaFrame) -> Option<String> {
        let prepared = self.preprocess.apply(frame);
        decode_once(self.engine, &prepared, self.try_harder)
    }
}

/// Which attempt produced a result, and what it cost. For logs and the benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeReport {
    /// The decoded text, if any attempt succeeded.
    pub text: Option<String>,
    /// Index into [`QrDecoder::attempts`] of the attempt that read the code.
    pub attempt: Option<usize>,
    /// How many attempts ran.
    pub attempts_run: usize,
    /// Whether retries were skipped because the deadline passed.
    pub budget_exhausted: bool,
    /// Whether retries were skipped because the frame shows no finder pattern.
    pub no_evidence: bool,
    pub elapsed: Duration,
}

/// A QR decoder: one fast attempt, then budgeted retries.
#[derive(Debug, Clone)]
pub struct QrDecoder {
    attempts: Vec<Attempt>,
    budget: Duration,
    require_evidence: bool,
}

/// Retry budget for live camera frames: the fast path is ~1 ms, and a frame every 33 ms must
/// leave the CPU to the gate decision and the next frame.
pub const CAMERA_BUDGET: Duration = Duration::from_millis(25);

/// Retry budget for still images, where nothing newer is waiting.
pub const FILE_BUDGET: Duration = Duration::from_millis(500);

/// The measured ladder, fast path first.
///
/// On the photo set the fast path reads 83/90, the Java-port reader one more (a fabric print
/// whose finder patterns the C++ port rejects) and sharpening one more (a blurred print); the
/// rest add nothing there but are cheap (≤ 1.5 ms on 1280×720) and cover what gates meet:
/// sharpening also rescues small codes at 2 px/module turned 30°, Otsu and a stretched global
/// binarizer cover washed-out prints, inversion covers phones in dark mode. Upscaling also
/// reads the blurred print but costs 15 ms on a camera frame, so it is not in the ladder.
pub const DEFAULT_LADDER: [Attempt; 6] = [
    Attempt::new(Preprocess::None, Engine::Rxing, false),
    Attempt::new(Preprocess::None, Engine::RxingJava, true),
    Attempt::new(Preprocess::Sharpen, Engine::Rxing, true),
    Attempt::new(Preprocess::Otsu, Engine::Rxing, true),
    Attempt::new(Preprocess::ContrastStretch, Engine::RxingGlobal, true),
    Attempt::new(Preprocess::Invert, Engine::Rxing, true),
];

impl Default for QrDecoder {
    /// The camera configuration: default ladder, [`CAMERA_BUDGET`], retries only with evidence.
    fn default() -> Self {
        Self {
            attempts: DEFAULT_LADDER.to_vec(),
            budget: CAMERA_BUDGET,
            require_evidence: true,
        }
    }
}

impl QrDecoder {
    /// The default ladder with a custom retry budget.
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// For still images: the full ladder with [`FILE_BUDGET`] and no evidence gate.
    pub fn for_files() -> Self {
        Self {
            attempts: DEFAULT_LADDER.to_vec(),
            budget: FILE_BUDGET,
            require_evidence: false,
        }
    }

    /// A custom ladder (the first attempt is the fast path and always runs). An empty list
    /// decodes nothing.
    pub fn with_attempts(attempts: Vec<Attempt>, budget: Duration) -> Self {
        Self {
            attempts,
            budget,
            require_evidence: false,
        }
    }

    /// Whether retries need a finder pattern in the fast path's binarized frame first.
    pub fn require_evidence(mut self, on: bool) -> Self {
        self.require_evidence = on;
        self
    }

    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Decodes one QR code from the frame, or `None`.
    pub fn decode(&self, frame: &LumaFrame) -> Option<String> {
        self.decode_report(frame).text
    }

    /// [`decode`](Self::decode) with the details of which attempt worked.
    pub fn decode_report(&self, frame: &LumaFrame) -> DecodeReport {
        let start = Instant::now();
        let mut report = DecodeReport {
            text: None,
            attempt: None,
            attempts_run: 0,
            budget_exhausted: false,
            no_evidence: false,
            elapsed: Duration::ZERO,
        };
        for (i, attempt) in self.attempts.iter().enumerate() {
            if i > 0 && start.elapsed() >= self.budget {
                report.budget_exhausted = true;
                break;
            }
            report.attempts_run += 1;
            let text = if i == 0 && self.require_evidence && attempt.engine != Engine::Rqrr {
                // The fast path shares its binarized frame with the evidence check.
                match fast_path_with_evidence(frame, *attempt) {
                    FastPath::Read(text) => Some(text),
                    FastPath::Evidence => None,
                    FastPath::NoEvidence => {
                        report.no_evidence = true;
                        break;
                    }
                }
            } else {
                attempt.run(frame)
            };
            if let Some(text) = text {
                report.text = Some(text);
                report.attempt = Some(i);
                break;
            }
        }
        report.elapsed = start.elapsed();
        if report.attempt.is_some_and(|i| i > 0) {
            tracing::debug!(
                attempt = ?report.attempt,
                elapsed_us = report.elapsed.as_micros() as u64,
                "QR read on a retry"
            );
        }
        report
    }
}

enum FastPath {
    Read(String),
    Evidence,
    NoEvidence,
}

fn fast_path_with_evidence(frame: &LumaFrame, attempt: Attempt) -> FastPath {
    let run = || -> FastPath {
        let prepared = attempt.preprocess.apply(frame);
        let Ok(source) =
            Luma8Source::new_with_slice(prepared.pixels(), prepared.width(), prepared.height())
        else {
            return FastPath::NoEvidence;
        };
        let hints = qr_hints(attempt.try_harder);
        let read = match attempt.engine {
            Engine::RxingGlobal => {
                let mut bitmap = BinaryBitmap::new(GlobalHistogramBinarizer::new(source));
                let read = QrReader.immutable_decode_with_hints(&mut bitmap, &hints);
                read.map_err(|_| has_finder_pattern(&mut bitmap))
            }
            engine => {
                let mut bitmap = BinaryBitmap::new(HybridBinarizer::new(source));
                let read = if engine == Engine::RxingJava {
                    QRCodeReader.decode_with_hints(&mut bitmap, &hints)
                } else {
                    QrReader.immutable_decode_with_hints(&mut bitmap, &hints)
                };
                read.map_err(|_| has_finder_pattern(&mut bitmap))
            }
        };
        match read {
            Ok(result) => FastPath::Read(result.getText().to_owned()),
            Err(true) => FastPath::Evidence,
            Err(false) => FastPath::NoEvidence,
        }
    };
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
        tracing::warn!("QR engine panicked on the fast path; retrying with the ladder");
        FastPath::Evidence
    })
}

/// Whether the binarized frame shows a finder pattern, dark-on-light or (for the inversion rung)
/// light-on-dark. Reuses the fast path's binarization, so it costs two row scans.
fn has_finder_pattern<B: rxing::Binarizer>(bitmap: &mut BinaryBitmap<B>) -> bool {
    // try_harder = true: scan every third row, so a small code in a big frame is not skipped.
    if !FindFinderPatterns(bitmap.get_black_matrix(), true, 0).is_empty() {
        return true;
    }
    bitmap.invert();
    !FindFinderPatterns(bitmap.get_black_matrix(), true, 0).is_empty()
}

fn qr_hints(try_harder: bool) -> DecodeHints {
    DecodeHints {
        PossibleFormats: Some(HashSet::from([BarcodeFormat::QR_CODE])),
        TryHarder: Some(try_harder),
        ..DecodeHints::default()
    }
}

/// One decode attempt with one engine, no preprocessing. A panic inside the engine (rqrr has
/// panicked on real photos) is caught and reported as "nothing decoded".
pub fn decode_once(engine: Engine, frame: &LumaFrame, try_harder: bool) -> Option<String> {
    let result = catch_unwind(AssertUnwindSafe(|| match engine {
        Engine::Rqrr => decode_rqrr(frame),
        _ => decode_rxing(engine, frame, try_harder),
    }));
    result.unwrap_or_else(|_| {
        tracing::warn!(?engine, "QR engine panicked; frame treated as unreadable");
        None
    })
}

fn decode_rxing(engine: Engine, frame: &LumaFrame, try_harder: bool) -> Option<String> {
    let hints = qr_hints(try_harder);
    let source = Luma8Source::new_with_slice(frame.pixels(), frame.width(), frame.height()).ok()?;
    let result = match engine {
        Engine::RxingGlobal => {
            let mut bitmap = BinaryBitmap::new(GlobalHistogramBinarizer::new(source));
            QrReader.immutable_decode_with_hints(&mut bitmap, &hints)
        }
        Engine::RxingJava => {
            let mut bitmap = BinaryBitmap::new(HybridBinarizer::new(source));
            QRCodeReader.decode_with_hints(&mut bitmap, &hints)
        }
        _ => {
            let mut bitmap = BinaryBitmap::new(HybridBinarizer::new(source));
            QrReader.immutable_decode_with_hints(&mut bitmap, &hints)
        }
    };
    result.ok().map(|r| r.getText().to_owned())
}

fn decode_rqrr(frame: &LumaFrame) -> Option<String> {
    let w = frame.width() as usize;
    let px = frame.pixels();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(w, frame.height() as usize, |x, y| {
            px.get(y * w + x).copied().unwrap_or(255)
        });
    prepared
        .detect_grids()
        .into_iter()
        .find_map(|grid| grid.decode().ok().map(|(_, text)| text))
}

/// Decodes a camera frame with the default (camera) decoder.
pub fn decode_luma(frame: &LumaFrame) -> Option<String> {
    QrDecoder::default().decode(frame)
}

/// Why an image file could not be decoded.
#[derive(Debug, Error)]
pub enum ImageFileError {
    #[error("cannot read image {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: image::ImageError,
    },
}

/// Loads a PNG or JPEG, converts it to luma and decodes it with [`QrDecoder::for_files`].
/// `Ok(None)` means the image was read but holds no readable QR code.
pub fn decode_image_file(path: impl AsRef<Path>) -> Result<Option<String>, ImageFileError> {
    let frame = load_luma(path)?;
    Ok(QrDecoder::for_files().decode(&frame))
}

/// Loads an image file as a luma frame.
pub fn load_luma(path: impl AsRef<Path>) -> Result<LumaFrame, ImageFileError> {
    let path = path.as_ref();
    let img = image::open(path).map_err(|source| ImageFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(LumaFrame::from_image(&img))
}
