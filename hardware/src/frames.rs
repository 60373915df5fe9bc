//! The camera pipeline, minus the camera: a newest-frame-wins slot, a decode worker off the
//! async runtime, and repeat suppression.
//!
//! ```text
//!  FrameSource ──publish──▶ frame_slot() ──next──▶ run_decoder ──▶ mpsc<Reading>
//!  (own thread)             (1 frame; newer           spawn_blocking + timeout,
//!                            replaces older)          catch_unwind, repeat hold-off
//! ```
//!
//! Why this shape: a camera delivers 30 frames a second whether or not we keep up. Queueing them
//! would make the gate answer for the frame from two seconds ago; the single slot means the worker
//! always decodes the newest frame and everything older is dropped unseen. Decoding runs on the
//! blocking pool, so a 10 ms decode never stalls the runtime that commits gate decisions, and a
//! decode that overruns [`PipelineConfig::frame_timeout`] is abandoned (its result discarded; no
//! new decode starts until that thread is back, so a pathological frame cannot pile up threads).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::luma::LumaFrame;
use crate::qr::QrDecoder;
use crate::{CredentialSource, Payload, Reading, SourceError, now_ms};

/// Turns a frame into a credential string. Implemented by [`QrDecoder`] and by any
/// `Fn(&LumaFrame) -> Option<String>` closure (how tests inject slow or panicking decoders).
pub trait FrameDecoder: Send + Sync + 'static {
    fn decode(&self, frame: &LumaFrame) -> Option<String>;
}

impl FrameDecoder for QrDecoder {
    fn decode(&self, frame: &LumaFrame) -> Option<String> {
        QrDecoder::decode(self, frame)
    }
}

impl<F> FrameDecoder for F
where
    F: Fn(&LumaFrame) -> Option<String> + Send + Sync + 'static,
{
    fn decode(&self, frame: &LumaFrame) -> Option<String> {
        self(frame)
    }
}

/// A blocking producer of frames: a camera, a video file, or a test's synthetic frames.
/// Called in a loop on a dedicated thread; `Ok(None)` means the stream ended.
pub trait FrameSource: Send + 'static {
    fn next_frame(&mut self) -> Result<Option<LumaFrame>, SourceError>;
}

/// Any iterator of frames is a finite frame source (synthetic frames in tests, a directory of
/// stills). It yields as fast as the consumer lets it, so most frames land on a busy worker and
/// are dropped, exactly like a camera outrunning the decoder.
impl<I> FrameSource for I
where
    I: Iterator<Item = LumaFrame> + Send + 'static,
{
    fn next_frame(&mut self) -> Result<Option<LumaFrame>, SourceError> {
        Ok(self.next())
    }
}

/// A captured frame with its sequence number and capture time.
#[derive(Debug)]
pub struct Frame {
    /// 1, 2, 3, … in capture order; gaps at the worker are dropped frames.
    pub seq: u64,
    /// Wall-clock capture time, unix ms. Becomes [`Reading::t_ms`].
    pub captured_ms: u64,
    pub luma: LumaFrame,
}

/// Counters of what the pipeline did, shared between the producer, the worker and the owner.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Frames published into the slot.
    pub published: AtomicU64,
    /// Frames the worker started decoding.
    pub decoded: AtomicU64,
    /// Frames overwritten in the slot before the worker saw them.
    pub dropped_stale: AtomicU64,
    /// Decodes that overran the frame timeout and were abandoned.
    pub abandoned: AtomicU64,
    /// Decoder panics caught.
    pub panics: AtomicU64,
    /// Readings sent.
    pub readings: AtomicU64,
    /// Decodes suppressed as repeats of the last reading.
    pub repeats: AtomicU64,
}

impl PipelineStats {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

struct Slot {
    frame: Mutex<Option<Arc<Frame>>>,
    notify: Notify,
    publisher_gone: AtomicBool,
    subscriber_gone: AtomicBool,
    stats: PipelineStats,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Frame>>> {
        // The lock only guards a pointer swap, so a poisoned lock still holds a valid value.
        self.frame
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The producer end of the single-frame slot. Never blocks, so a capture thread can publish
/// at camera rate whatever the worker is doing.
pub struct FramePublisher {
    slot: Arc<Slot>,
    next_seq: u64,
}

/// The worker end of the slot.
pub struct FrameSubscriber {
    slot: Arc<Slot>,
}

/// The worker is gone: stop capturing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame pipeline closed")]
pub struct PipelineClosed;

/// Creates the newest-frame-wins slot (a `watch`-style single slot that the worker empties, so
/// the publisher can count frames that were replaced unseen).
pub fn frame_slot() -> (FramePublisher, FrameSubscriber) {
    let slot = Arc::new(Slot {
        frame: Mutex::new(None),
        notify: Notify::new(),
        publisher_gone: AtomicBool::new(false),
        subscriber_gone: AtomicBool::new(false),
        stats: PipelineStats::default(),
    });
    (
        FramePublisher {
            slot: Arc::clone(&slot),
            next_seq: 1,
        },
        FrameSubscriber { slot },
    )
}

impl FramePublisher {
    /// Replaces whatever frame is waiting with this one, stamped with the current time.
    /// Returns the frame's sequence number.
    pub fn publish(&mut self, luma: LumaFrame) -> Result<u64, PipelineClosed> {
        self.publish_at(luma, now_ms())
    }

    /// [`publish`](Self::publish) with an explicit capture time.
    pub fn publish_at(&mut self, luma: LumaFrame, captured_ms: u64) -> Result<u64, PipelineClosed> {
        if self.slot.subscriber_gone.load(Ordering::Acquire) {
            return Err(PipelineClosed);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame = Arc::new(Frame {
            seq,
            captured_ms,
            luma,
        });
        let replaced = self.slot.lock().replace(frame);
        let stats = &self.slot.stats;
        stats.published.fetch_add(1, Ordering::Relaxed);
        if replaced.is_some() {
            stats.dropped_stale.fetch_add(1, Ordering::Relaxed);
        }
        // notify_one stores a permit when nobody waits yet, so a wake-up is never lost.
        self.slot.notify.notify_one();
        Ok(seq)
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.slot.stats
    }
}

impl Drop for FramePublisher {
    fn drop(&mut self) {
        self.slot.publisher_gone.store(true, Ordering::Release);
        self.slot.notify.notify_one();
    }
}

impl FrameSubscriber {
    /// Waits for the next frame and empties the slot. `None` once the publisher is gone and the
    /// last frame has been taken.
    pub async fn next(&mut self) -> Option<Arc<Frame>> {
        loop {
            // Read the flag before the slot: a frame published just before the publisher
            // dropped is then still seen.
            let gone = self.slot.publisher_gone.load(Ordering::Acquire);
            if let Some(frame) = self.slot.lock().take() {
                return Some(frame);
            }
            if gone {
                return None;
            }
            self.slot.notify.notified().await;
        }
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.slot.stats
    }

    /// A handle to the counters that outlives the subscriber.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.slot))
    }
}

impl Drop for FrameSubscriber {
    fn drop(&mut self) {
        self.slot.subscriber_gone.store(true, Ordering::Release);
    }
}

/// Shared read access to a pipeline's [`PipelineStats`].
#[derive(Clone)]
pub struct StatsHandle(Arc<Slot>);

impl std::ops::Deref for StatsHandle {
    type Target = PipelineStats;
    fn deref(&self) -> &PipelineStats {
        &self.0.stats
    }
}

/// Tuning of the decode worker.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Name stamped into readings.
    pub source_name: String,
    /// A decode still running after this long is abandoned and its result discarded.
    pub frame_timeout: Duration,
    /// The same text read again within this window is not a new reading: a ticket held up to the
    /// camera is in 30 frames a second. The gate's own re-entry logic still sees the first one.
    pub repeat_holdoff: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            source_name: "camera".to_owned(),
            frame_timeout: Duration::from_millis(100),
            repeat_holdoff: Duration::from_secs(3),
        }
    }
}

/// Runs the decode worker until the slot's publisher is gone (and the last frame is decoded) or
/// the reading receiver is dropped (noticed while waiting for a frame, too).
pub async fn run_decoder<D: FrameDecoder>(
    mut frames: FrameSubscriber,
    decoder: D,
    config: PipelineConfig,
    tx: mpsc::Sender<Reading>,
) {
    let decoder = Arc::new(decoder);
    let stats = frames.stats_handle();
    let mut last: Option<(String, Instant)> = None;
    loop {
        let frame = tokio::select! {
            () = tx.closed() => break,
            f = frames.next() => f,
        };
        let Some(frame) = frame else { break };
        stats.decoded.fetch_add(1, Ordering::Relaxed);
        let worker_decoder = Arc::clone(&decoder);
        let worker_frame = Arc::clone(&frame);
        let mut job = tokio::task::spawn_blocking(move || {
            catch_unwind(AssertUnwindSafe(|| {
                worker_decoder.decode(&worker_frame.luma)
            }))
        });
        let outcome = match tokio::time::timeout(config.frame_timeout, &mut job).await {
            Ok(joined) => joined,
            Err(_) => {
                stats.abandoned.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    seq = frame.seq,
                    timeout_ms = config.frame_timeout.as_millis() as u64,
                    "frame decode overran its timeout; result discarded"
                );
                // Wait for the straggler before starting another decode (see module docs); newer
                // frames keep replacing each other in the slot meanwhile.
                tokio::select! {
                    () = tx.closed() => break,
                    _ = job => {}
                }
                continue;
            }
        };
        let text = match outcome {
            Ok(Ok(text)) => text,
            Ok(Err(_panic)) => {
                stats.panics.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(seq = frame.seq, "frame decoder panicked; frame skipped");
                continue;
            }
            Err(join_error) => {
                tracing::warn!(seq = frame.seq, %join_error, "frame decode task failed");
                continue;
            }
        };
        let Some(text) = text else { continue };
        let now = Instant::now();
        if let Some((prev, at)) = &last
            && *prev == text
            && now.duration_since(*at) < config.repeat_holdoff
        {
            stats.repeats.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        last = Some((text.clone(), now));
        let reading = Reading {
            payload: Payload::Text(text),
            t_ms: frame.captured_ms,
            source: config.source_name.clone(),
        };
        if tx.send(reading).await.is_err() {
            break;
        }
        stats.readings.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long a stopping camera source waits for its capture thread to notice.
pub const CAPTURE_STOP: Duration = Duration::from_secs(2);

/// A camera (or any [`FrameSource`]) plus a decoder: capture on a dedicated thread, decode in the
/// worker above.
pub struct CameraSource<S, D> {
    source: S,
    decoder: D,
    config: PipelineConfig,
}

impl<S: FrameSource, D: FrameDecoder> CameraSource<S, D> {
    pub fn new(source: S, decoder: D, config: PipelineConfig) -> Self {
        Self {
            source,
            decoder,
            config,
        }
    }
}

impl<S: FrameSource> CameraSource<S, QrDecoder> {
    /// A frame source with the default camera [`QrDecoder`] and pipeline settings.
    pub fn with_qr(source: S, name: impl Into<String>) -> Self {
        Self::new(
            source,
            QrDecoder::default(),
            PipelineConfig {
                source_name: name.into(),
                ..PipelineConfig::default()
            },
        )
    }
}

impl<S: FrameSource, D: FrameDecoder> CredentialSource for CameraSource<S, D> {
    fn name(&self) -> &str {
        &self.config.source_name
    }

    async fn run(self, tx: mpsc::Sender<Reading>) -> Result<(), SourceError> {
        let (mut publisher, subscriber) = frame_slot();
        let mut source = self.source;
        // A plain thread, not spawn_blocking: capture blocks for the life of the source, and a
        // long-lived job would hold one of the blocking pool's threads forever.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-capture", self.config.source_name))
            .spawn(move || {
                let result = loop {
                    match source.next_frame() {
                        Ok(Some(frame)) => {
                            if publisher.publish(frame).is_err() {
                                break Ok(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(error) => break Err(error),
                    }
                };
                drop(publisher);
                let _ = done_tx.send(result);
            });
        if let Err(error) = spawned {
            return Err(SourceError::Task(format!(
                "cannot start capture thread: {error}"
            )));
        }
        let name = self.config.source_name.clone();
        run_decoder(subscriber, self.decoder, self.config, tx).await;
        // The worker stops when the publisher is gone or the receiver is; in the second case the
        // capture thread notices on its next publish, a frame later. A device stuck in a read
        // is not waited for beyond `CAPTURE_STOP`: the thread ends when the read returns.
        match tokio::time::timeout(CAPTURE_STOP, done_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SourceError::Task("capture thread panicked".to_owned())),
            Err(_) => {
                tracing::warn!(source = %name, "capture thread still in a read; not waiting for it");
                Ok(())
            }
        }
    }
}
