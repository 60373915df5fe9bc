//! The V4L2/UVC camera via nokhwa (feature `camera`): a blocking [`FrameSource`].
//!
//! Frames are reduced to luma right here, on the capture thread: YUYV and NV12 by taking the Y
//! plane directly, MJPEG through nokhwa's decoder. Everything after that (slot, decode worker,
//! QR ladder) is the camera-independent pipeline in [`crate::frames`].

use nokhwa::Camera;
use nokhwa::pixel_format::LumaFormat;
use nokhwa::utils::{
    CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};

use crate::SourceError;
use crate::frames::FrameSource;
use crate::luma::LumaFrame;

/// What to ask the camera for. The driver picks the closest mode it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraSettings {
    /// `/dev/videoN`.
    pub index: u32,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl Default for CameraSettings {
    /// 1280×720 at 30 fps: enough pixels for a version-6 ticket at arm's length, and the frame
    /// size the decode budget (DESIGN §7) is set for.
    fn default() -> Self {
        Self {
            index: 0,
            width: 1280,
            height: 720,
            fps: 30,
        }
    }
}

fn camera_error(context: &str, error: impl std::fmt::Display) -> SourceError {
    SourceError::Camera(format!("{context}: {error}"))
}

/// Consecutive failed captures tolerated before the camera counts as gone. UVC cameras drop the
/// odd frame (USB bandwidth, a corrupt MJPEG frame); a run of failures means it was unplugged.
const MAX_CONSECUTIVE_FAILURES: u32 = 30;

/// An open camera stream.
pub struct NokhwaCamera {
    camera: Camera,
    failures: u32,
}

impl NokhwaCamera {
    /// Opens the camera and starts streaming. Prefers YUYV (luma for free); the driver may
    /// answer with MJPEG or NV12, which [`next_frame`](FrameSource::next_frame) also handles.
    pub fn open(settings: CameraSettings) -> Result<Self, SourceError> {
        let wanted = CameraFormat::new(
            Resolution::new(settings.width, settings.height),
            FrameFormat::YUYV,
            settings.fps,
        );
        let requested = RequestedFormat::new::<LumaFormat>(RequestedFormatType::Closest(wanted));
        let mut camera =
            Camera::new(CameraIndex::Index(settings.index), requested).map_err(|e| {
                camera_error(
                    "cannot open camera (is /dev/video present and readable?)",
                    e,
                )
            })?;
        camera
            .open_stream()
            .map_err(|e| camera_error("cannot start the camera stream", e))?;
        let format = camera.camera_format();
        tracing::info!(
            index = settings.index,
            width = format.width(),
            height = format.height(),
            fps = format.frame_rate(),
            fourcc = %format.format(),
            "camera streaming"
        );
        Ok(Self {
            camera,
            failures: 0,
        })
    }
}

impl FrameSource for NokhwaCamera {
    fn next_frame(&mut self) -> Result<Option<LumaFrame>, SourceError> {
        loop {
            match self.capture() {
                Ok(frame) => {
                    self.failures = 0;
                    return Ok(Some(frame));
                }
                Err(error) if self.failures < MAX_CONSECUTIVE_FAILURES => {
                    self.failures += 1;
                    tracing::debug!(%error, failures = self.failures, "camera frame lost");
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl NokhwaCamera {
    fn capture(&mut self) -> Result<LumaFrame, SourceError> {
        let buffer = self
            .camera
            .frame()
            .map_err(|e| camera_error("frame capture failed", e))?;
        let res = buffer.resolution();
        let (w, h) = (res.width(), res.height());
        let frame = match buffer.source_frame_format() {
            FrameFormat::YUYV => LumaFrame::from_yuyv(w, h, buffer.buffer())?,
            FrameFormat::NV12 | FrameFormat::GRAY => {
                LumaFrame::from_y_plane(w, h, buffer.buffer())?
            }
            _ => {
                let image = buffer
                    .decode_image::<LumaFormat>()
                    .map_err(|e| camera_error("frame decode failed", e))?;
                let (iw, ih) = image.dimensions();
                LumaFrame::new(iw, ih, image.into_raw())?
            }
        };
        Ok(frame)
    }
}

impl Drop for NokhwaCamera {
    fn drop(&mut self) {
        if let Err(error) = self.camera.stop_stream() {
            tracing::warn!(%error, "camera stream did not stop cleanly");
        }
    }
}
