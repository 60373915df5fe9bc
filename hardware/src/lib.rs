//! Credential sources for the Usher gate agent: keyboard-wedge scanners, a camera with QR
//! decoding, BLE badges, image files and recorded logs.
//!
//! Every source is a [`CredentialSource`]: the gate agent spawns it with an
//! `mpsc::Sender<Reading>` and receives [`Reading`]s until the input ends or the receiver is
//! dropped. Dropping the receiver is the shutdown signal: every source notices it while it waits
//! for input (a silent scanner, a paced replay, an idle adapter), not only at its next reading,
//! and returns promptly; device threads (camera capture, stdin) stop at their next read. Sources
//! hold no state worth flushing, so aborting the task is fine too. Each kind of hardware sits behind its own small trait, so the pipelines are
//! tested with real pixels and recorded adverts but no devices:
//!
//! | kind | device trait | source |
//! |---|---|---|
//! | keyboard wedge | [`tokio::io::AsyncBufRead`] | [`wedge::WedgeSource`] |
//! | camera | [`frames::FrameSource`] + [`frames::FrameDecoder`] | [`frames::CameraSource`] |
//! | BLE badge | [`advert::AdvertSource`] | [`advert::BleSource`] |
//! | image files | — | [`file::FileSource`] |
//! | recorded logs | [`advert::AdvertSource`] / wedge log | [`replay::AdvertReplay`], [`replay::WedgeReplay`] |
//!
//! The default build needs no system libraries. Feature `camera` adds the nokhwa (V4L2) frame
//! grabber, feature `ble` the btleplug (BlueZ over D-Bus) scanner.
//!
//! # Layout
//!
//! * `lib.rs` — [`Reading`], [`Payload`], [`CredentialSource`], [`SourceError`].
//! * `luma.rs` — [`luma::LumaFrame`], 8-bit greyscale frames and the pixel operations the
//!   decoder's retries use.
//! * `qr.rs` — [`qr::QrDecoder`]: rxing fast path plus a time-budgeted retry ladder, chosen by
//!   measurement (`benches/qr_decode.rs`).
//! * `frames.rs` — the camera pipeline: newest-frame-wins slot, off-runtime decode worker with
//!   timeout and panic guard, repeat suppression.
//! * `wedge.rs` — keyboard-wedge line reader.
//! * `presence.rs` — [`presence::PresenceFilter`]: median-RSSI gate and (serial, slot) dedup.
//! * `advert.rs` — [`advert::Advert`], the BLE source built on the filter.
//! * `replay.rs` — recorded advert and wedge logs (JSON lines), optionally paced.
//! * `file.rs` — decode QR codes from PNG/JPEG files.
//! * `camera.rs` (feature `camera`), `ble.rs` (feature `ble`) — the device bindings.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::mpsc;

pub mod advert;
pub mod file;
pub mod frames;
pub mod luma;
pub mod presence;
pub mod qr;
pub mod replay;
pub mod wedge;

#[cfg(feature = "ble")]
pub mod ble;
#[cfg(feature = "camera")]
pub mod camera;

pub use advert::{Advert, AdvertSource, BleSource};
pub use file::FileSource;
pub use frames::{CameraSource, FrameDecoder, FrameSource, PipelineConfig};
pub use luma::LumaFrame;
pub use presence::{PresenceFilter, Sighting};
pub use qr::{QrDecoder, decode_image_file, decode_luma};
pub use replay::{AdvertReplay, WedgeReplay};
pub use wedge::WedgeSource;

/// What a source read: a credential string, or a BLE badge's raw service data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A QR ticket (`U1:…`) or a short code, exactly as scanned (see [`wedge::clean_line`] for
    /// what a wedge line loses on the way).
    Text(String),
    /// The service data of a BLE advert that passed the presence filter. Left undecoded and
    /// unverified: the gate holds the keys and checks MAC and slot itself.
    Ble {
        /// The 21-byte payload of DESIGN §2.3.
        service_data: Vec<u8>,
        /// Median RSSI over the presence window, in dBm.
        rssi: i16,
    },
}

/// One credential read by one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub payload: Payload,
    /// Wall-clock time of the read, unix milliseconds: frame capture time for the camera, the
    /// advert that completed the sighting for BLE, the recorded time for replays.
    pub t_ms: u64,
    /// Which source read it (`"wedge:stdin"`, `"camera:0"`, `"ble"`, …), for the outbox and logs.
    pub source: String,
}

/// Why a source stopped early.
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
    #[error("camera: {0}")]
    Camera(String),
    #[error("bluetooth: {0}")]
    Bluetooth(String),
    #[error("replay log line {line}: {message}")]
    Replay { line: usize, message: String },
    #[error(transparent)]
    Frame(#[from] luma::FrameError),
    #[error("source task failed: {0}")]
    Task(String),
}

/// A producer of [`Reading`]s. `run` returns when the input is exhausted (`Ok`), when the
/// receiver is dropped (`Ok`), or when the device fails (`Err`).
pub trait CredentialSource: Send + 'static {
    /// The name stamped into each [`Reading::source`].
    fn name(&self) -> &str;

    /// Runs the source to completion, sending every reading into `tx`.
    fn run(self, tx: mpsc::Sender<Reading>)
    -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// Runs a source to completion, logging a failure.
pub async fn run_source<S: CredentialSource>(
    source: S,
    tx: mpsc::Sender<Reading>,
) -> Result<(), SourceError> {
    let name = source.name().to_owned();
    let result = source.run(tx).await;
    if let Err(error) = &result {
        tracing::error!(source = %name, %error, "credential source stopped");
    }
    result
}

/// Spawns a source on the current tokio runtime.
pub fn spawn<S: CredentialSource>(
    source: S,
    tx: mpsc::Sender<Reading>,
) -> tokio::task::JoinHandle<Result<(), SourceError>> {
    tokio::spawn(run_source(source, tx))
}

/// Wall-clock unix milliseconds. A clock before 1970 (a kiosk with a dead RTC battery) reads as
/// 0 rather than failing: the gate's own clock checks flag that case.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
