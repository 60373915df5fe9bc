//! 8-bit greyscale frames and the few pixel operations the QR decoder's retry ladder needs.
//!
//! Everything here is plain safe Rust on a `Vec<u8>`: the operations are cheap enough (a few
//! milliseconds on a 1280×720 frame at most) that pulling `imageproc` in for them would cost more
//! build time than it saves.

use thiserror::Error;

/// Why a buffer could not become a [`LumaFrame`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The byte count does not match `width × height`.
    #[error("luma buffer has {actual} bytes, but a {width}×{height} frame needs {expected}")]
    SizeMismatch {
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
    /// A frame needs at least one pixel.
    #[error("frame dimensions must be non-zero, got {width}×{height}")]
    Empty { width: u32, height: u32 },
}

/// An 8-bit greyscale (luma) frame, row-major, no padding.
///
/// This is the one pixel format the decoders accept: cameras deliver YUYV/NV12/MJPEG whose Y
/// plane is exactly this, and a QR code carries no information in colour.
#[derive(Clone, PartialEq, Eq)]
pub struct LumaFrame {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for LumaFrame {
    // Pixels are left out: a debug print of a 1280×720 frame would be a megabyte of numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LumaFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl LumaFrame {
    /// Wraps a row-major luma buffer of exactly `width × height` bytes.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<Self, FrameError> {
        if width == 0 || height == 0 {
            return Err(FrameError::Empty { width, height });
        }
        let expected = (width as usize).checked_mul(height as usize);
        if expected != Some(pixels.len()) {
            return Err(FrameError::SizeMismatch {
                width,
                height,
                expected: expected.unwrap_or(usize::MAX),
                actual: pixels.len(),
            });
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// A frame of one uniform grey level.
    pub fn filled(width: u32, height: u32, value: u8) -> Result<Self, FrameError> {
        Self::new(
            width,
            height,
            vec![value; (width as usize) * (height as usize)],
        )
    }

    /// Converts any decoded image to luma (ITU-R BT.709 weights, as `image` does).
    pub fn from_image(img: &image::DynamicImage) -> Self {
        let gray = img.to_luma8();
        let (width, height) = gray.dimensions();
        Self {
            width,
            height,
            pixels: gray.into_raw(),
        }
    }

    /// The Y plane of a packed YUYV (YUY2) frame: every even byte. This is what UVC webcams send
    /// uncompressed, and taking Y directly is ~10× cheaper than converting through RGB.
    pub fn from_yuyv(width: u32, height: u32, data: &[u8]) -> Result<Self, FrameError> {
        let n = (width as usize) * (height as usize);
        if data.len() < 2 * n {
            return Err(FrameError::SizeMismatch {
                width,
                height,
                expected: 2 * n,
                actual: data.len(),
            });
        }
        Self::new(
            width,
            height,
            data.iter().step_by(2).take(n).copied().collect(),
        )
    }

    /// The Y plane of an NV12 frame (or any planar YUV layout that starts with a full-size Y
    /// plane), ignoring the chroma that follows.
    pub fn from_y_plane(width: u32, height: u32, data: &[u8]) -> Result<Self, FrameError> {
        let n = (width as usize) * (height as usize);
        match data.get(..n) {
            Some(y) => Self::new(width, height, y.to_vec()),
            None => Err(FrameError::SizeMismatch {
                width,
                height,
                expected: n,
                actual: data.len(),
            }),
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The row-major pixel bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// The pixel at (x, y), or `None` outside the frame.
    pub fn get(&self, x: u32, y: u32) -> Option<u8> {
        if x < self.width && y < self.height {
            self.pixels
                .get(y as usize * self.width as usize + x as usize)
                .copied()
        } else {
            None
        }
    }

    fn from_parts(width: u32, height: u32, pixels: Vec<u8>) -> Self {
        debug_assert_eq!(pixels.len(), width as usize * height as usize);
        Self {
            width,
            height,
            pixels,
        }
    }

    /// Copies `other` into this frame with its top-left corner at (x, y), clipping at the edges.
    pub fn paste(&mut self, other: &LumaFrame, x: i64, y: i64) {
        let w = self.width as i64;
        let h = self.height as i64;
        for oy in 0..other.height as i64 {
            let ty = y + oy;
            if !(0..h).contains(&ty) {
                continue;
            }
            let x0 = x.max(0);
            let x1 = (x + other.width as i64).min(w);
            if x0 >= x1 {
                continue;
            }
            let src_start = (oy * other.width as i64 + (x0 - x)) as usize;
            let dst_start = (ty * w + x0) as usize;
            let len = (x1 - x0) as usize;
            self.pixels[dst_start..dst_start + len]
                .copy_from_slice(&other.pixels[src_start..src_start + len]);
        }
    }

    /// The sub-rectangle at (x, y) of the given size, clipped to the frame; `None` if empty.
    pub fn crop(&self, x: u32, y: u32, width: u32, height: u32) -> Option<LumaFrame> {
        let x1 = x.checked_add(width)?.min(self.width);
        let y1 = y.checked_add(height)?.min(self.height);
        if x >= x1 || y >= y1 {
            return None;
        }
        let (cw, ch) = (x1 - x, y1 - y);
        let mut out = Vec::with_capacity(cw as usize * ch as usize);
        for row in y..y1 {
            let start = row as usize * self.width as usize + x as usize;
            out.extend_from_slice(&self.pixels[start..start + cw as usize]);
        }
        Some(Self::from_parts(cw, ch, out))
    }

    /// Nearest-neighbour enlargement by an integer factor (how a QR renderer draws modules).
    pub fn upscale_nearest(&self, factor: u32) -> LumaFrame {
        let factor = factor.max(1);
        let (w, h) = (self.width * factor, self.height * factor);
        let mut out = Vec::with_capacity(w as usize * h as usize);
        for y in 0..h {
            let row = (y / factor) as usize * self.width as usize;
            for x in 0..w {
                out.push(self.pixels[row + (x / factor) as usize]);
            }
        }
        Self::from_parts(w, h, out)
    }

    /// Box-filter reduction by an integer factor: averaging, not sampling, so thin module
    /// edges blur a little instead of aliasing into noise.
    pub fn downscale(&self, factor: u32) -> LumaFrame {
        let factor = factor.max(1);
        if factor == 1 {
            return self.clone();
        }
        let (w, h) = ((self.width / factor).max(1), (self.height / factor).max(1));
        let area = factor * factor;
        let mut out = Vec::with_capacity(w as usize * h as usize);
        for by in 0..h {
            for bx in 0..w {
                let mut sum = 0u32;
                for dy in 0..factor {
                    let y = (by * factor + dy).min(self.height - 1);
                    let row = y as usize * self.width as usize;
                    for dx in 0..factor {
                        let x = (bx * factor + dx).min(self.width - 1);
                        sum += u32::from(self.pixels[row + x as usize]);
                    }
                }
                out.push(((sum + area / 2) / area) as u8);
            }
        }
        Self::from_parts(w, h, out)
    }

    /// Bilinear resize to an arbitrary size (used to shrink large photos to a target width).
    pub fn resize(&self, width: u32, height: u32) -> LumaFrame {
        let (width, height) = (width.max(1), height.max(1));
        let sx = self.width as f32 / width as f32;
        let sy = self.height as f32 / height as f32;
        let mut out = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height {
            let fy = (y as f32 + 0.5) * sy - 0.5;
            for x in 0..width {
                let fx = (x as f32 + 0.5) * sx - 0.5;
                out.push(self.sample_bilinear(fx, fy).unwrap_or(0));
            }
        }
        Self::from_parts(width, height, out)
    }

    /// Bilinear sample at a sub-pixel position; `None` outside the frame.
    fn sample_bilinear(&self, fx: f32, fy: f32) -> Option<u8> {
        let max_x = (self.width - 1) as f32;
        let max_y = (self.height - 1) as f32;
        if fx < -0.5 || fy < -0.5 || fx > max_x + 0.5 || fy > max_y + 0.5 {
            return None;
        }
        let fx = fx.clamp(0.0, max_x);
        let fy = fy.clamp(0.0, max_y);
        let x0 = fx.floor() as usize;
        let y0 = fy.floor() as usize;
        let x1 = (x0 + 1).min(self.width as usize - 1);
        let y1 = (y0 + 1).min(self.height as usize - 1);
        let tx = fx - x0 as f32;
        let ty = fy - y0 as f32;
        let w = self.width as usize;
        let p = |x: usize, y: usize| f32::from(self.pixels[y * w + x]);
        let top = p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx;
        let bottom = p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx;
        Some((top * (1.0 - ty) + bottom * ty).round().clamp(0.0, 255.0) as u8)
    }

    /// Rotates counter-clockwise by `degrees` about the centre, growing the canvas so nothing is
    /// cut off; uncovered corners get `background`. Multiples of 90° are exact pixel moves.
    pub fn rotate(&self, degrees: f32, background: u8) -> LumaFrame {
        let normalized = degrees.rem_euclid(360.0);
        for (quarter, turns) in [(0.0, 0u8), (90.0, 1), (180.0, 2), (270.0, 3), (360.0, 0)] {
            if (normalized - quarter).abs() < 1e-4 {
                return self.rotate_quarters(turns);
            }
        }
        let (sin, cos) = normalized.to_radians().sin_cos();
        let (w, h) = (self.width as f32, self.height as f32);
        let out_w = (w * cos.abs() + h * sin.abs()).ceil().max(1.0) as u32;
        let out_h = (w * sin.abs() + h * cos.abs()).ceil().max(1.0) as u32;
        let (cx, cy) = ((w - 1.0) / 2.0, (h - 1.0) / 2.0);
        let (ocx, ocy) = ((out_w as f32 - 1.0) / 2.0, (out_h as f32 - 1.0) / 2.0);
        let mut out = Vec::with_capacity(out_w as usize * out_h as usize);
        for y in 0..out_h {
            let dy = y as f32 - ocy;
            for x in 0..out_w {
                let dx = x as f32 - ocx;
                // Inverse mapping: for each output pixel, where did it come from? With y pointing
                // down, a counter-clockwise turn on screen is the matrix [cos sin; -sin cos].
                let sx = cos * dx - sin * dy + cx;
                let sy = sin * dx + cos * dy + cy;
                out.push(self.sample_bilinear(sx, sy).unwrap_or(background));
            }
        }
        Self::from_parts(out_w, out_h, out)
    }

    /// Exact rotation by `turns` quarter turns counter-clockwise.
    pub fn rotate_quarters(&self, turns: u8) -> LumaFrame {
        let (w, h) = (self.width as usize, self.height as usize);
        match turns % 4 {
            0 => self.clone(),
            2 => {
                let mut px = self.pixels.clone();
                px.reverse();
                Self::from_parts(self.width, self.height, px)
            }
            t => {
                let mut out = vec![0u8; w * h];
                for y in 0..h {
                    for x in 0..w {
                        // Output is h wide, w tall.
                        let (nx, ny) = if t == 1 {
                            (y, w - 1 - x)
                        } else {
                            (h - 1 - y, x)
                        };
                        out[ny * h + nx] = self.pixels[y * w + x];
                    }
                }
                Self::from_parts(self.height, self.width, out)
            }
        }
    }

    /// `255 - p` for every pixel: light-on-dark codes (phone screens in dark mode) become normal.
    pub fn inverted(&self) -> LumaFrame {
        Self::from_parts(
            self.width,
            self.height,
            self.pixels.iter().map(|p| 255 - p).collect(),
        )
    }

    fn histogram(&self) -> [u32; 256] {
        let mut hist = [0u32; 256];
        for &p in &self.pixels {
            hist[p as usize] += 1;
        }
        hist
    }

    /// Linear stretch so the 1st..99th percentile spans 0..255: rescues dim, low-contrast
    /// photos whose dark and light modules differ by only a few grey levels.
    pub fn contrast_stretched(&self) -> LumaFrame {
        let hist = self.histogram();
        let total = self.pixels.len() as u64;
        let cut = total / 100;
        let mut acc = 0u64;
        let mut lo = 0u8;
        for (i, &n) in hist.iter().enumerate() {
            acc += u64::from(n);
            if acc > cut {
                lo = i as u8;
                break;
            }
        }
        acc = 0;
        let mut hi = 255u8;
        for (i, &n) in hist.iter().enumerate().rev() {
            acc += u64::from(n);
            if acc > cut {
                hi = i as u8;
                break;
            }
        }
        if hi <= lo {
            return self.clone();
        }
        let span = f32::from(hi - lo);
        let lut: Vec<u8> = (0..=255u8)
            .map(|p| {
                (f32::from(p.saturating_sub(lo)) * 255.0 / span)
                    .round()
                    .clamp(0.0, 255.0) as u8
            })
            .collect();
        Self::from_parts(
            self.width,
            self.height,
            self.pixels.iter().map(|&p| lut[p as usize]).collect(),
        )
    }

    /// Otsu's global threshold (maximises between-class variance of the histogram).
    pub fn otsu_threshold(&self) -> u8 {
        let hist = self.histogram();
        let total = self.pixels.len() as f64;
        let sum_all: f64 = hist
            .iter()
            .enumerate()
            .map(|(i, &n)| i as f64 * f64::from(n))
            .sum();
        let (mut w_b, mut sum_b, mut best, mut best_t) = (0.0f64, 0.0f64, -1.0f64, 127u8);
        for (t, &n) in hist.iter().enumerate() {
            w_b += f64::from(n);
            if w_b == 0.0 {
                continue;
            }
            let w_f = total - w_b;
            if w_f == 0.0 {
                break;
            }
            sum_b += t as f64 * f64::from(n);
            let m_b = sum_b / w_b;
            let m_f = (sum_all - sum_b) / w_f;
            let between = w_b * w_f * (m_b - m_f) * (m_b - m_f);
            if between > best {
                best = between;
                best_t = t as u8;
            }
        }
        best_t
    }

    /// Pure black/white at the Otsu threshold. The decoders' own local binarizers are better on
    /// unevenly lit photos; a global cut helps on blurred prints where local windows see mush.
    pub fn binarized_otsu(&self) -> LumaFrame {
        let t = self.otsu_threshold();
        Self::from_parts(
            self.width,
            self.height,
            self.pixels
                .iter()
                .map(|&p| if p > t { 255 } else { 0 })
                .collect(),
        )
    }

    /// Unsharp mask with a 3×3 box blur: `p + amount·(p − blur(p))`. Steepens the edges of
    /// modules that camera defocus or fabric has smeared into each other.
    pub fn sharpened(&self, amount: f32) -> LumaFrame {
        let blur = self.box_blurred();
        Self::from_parts(
            self.width,
            self.height,
            self.pixels
                .iter()
                .zip(&blur.pixels)
                .map(|(&p, &b)| {
                    (f32::from(p) + amount * (f32::from(p) - f32::from(b)))
                        .round()
                        .clamp(0.0, 255.0) as u8
                })
                .collect(),
        )
    }

    /// 3×3 box blur: knocks down sensor noise and print halftone so the binarizer sees modules,
    /// not dots. Separable (a horizontal then a vertical 3-tap sum), edges clamped.
    pub fn box_blurred(&self) -> LumaFrame {
        let (w, h) = (self.width as usize, self.height as usize);
        // Horizontal 3-sums, at most 765, fit a u16.
        let mut rows = vec![0u16; w * h];
        for (src, dst) in self.pixels.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
            for x in 0..w {
                let l = src[x.saturating_sub(1)];
                let r = src[(x + 1).min(w - 1)];
                dst[x] = u16::from(l) + u16::from(src[x]) + u16::from(r);
            }
        }
        let mut out = vec![0u8; w * h];
        for y in 0..h {
            let up = &rows[y.saturating_sub(1) * w..][..w];
            let mid = &rows[y * w..][..w];
            let down = &rows[(y + 1).min(h - 1) * w..][..w];
            let dst = &mut out[y * w..][..w];
            for x in 0..w {
                let sum = u32::from(up[x]) + u32::from(mid[x]) + u32::from(down[x]);
                dst[x] = ((sum + 4) / 9) as u8;
            }
        }
        Self::from_parts(self.width, self.height, out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ramp(w: u32, h: u32) -> LumaFrame {
        LumaFrame::new(w, h, (0..w * h).map(|i| (i % 251) as u8).collect()).unwrap()
    }

    #[test]
    fn new_rejects_wrong_size_and_empty() {
        assert!(matches!(
            LumaFrame::new(2, 2, vec![0; 3]),
            Err(FrameError::SizeMismatch { .. })
        ));
        assert!(matches!(
            LumaFrame::new(0, 2, vec![]),
            Err(FrameError::Empty { .. })
        ));
    }

    #[test]
    fn four_quarter_turns_are_identity() {
        let f = ramp(7, 3);
        let once = f.rotate_quarters(1);
        assert_eq!((once.width(), once.height()), (3, 7));
        // Counter-clockwise: the top-right pixel moves to the top-left.
        assert_eq!(once.get(0, 0), f.get(6, 0));
        let back = once
            .rotate_quarters(1)
            .rotate_quarters(1)
            .rotate_quarters(1);
        assert_eq!(back, f);
        assert_eq!(f.rotate(90.0, 0), once);
    }

    #[test]
    fn arbitrary_rotation_grows_canvas() {
        let f = LumaFrame::filled(100, 50, 0).unwrap();
        let r = f.rotate(30.0, 255);
        assert!(r.width() > 100 && r.height() > 50);
        // Centre stays dark, a corner is background.
        assert_eq!(r.get(r.width() / 2, r.height() / 2), Some(0));
        assert_eq!(r.get(0, 0), Some(255));
    }

    #[test]
    fn paste_clips_and_crop_round_trips() {
        let mut canvas = LumaFrame::filled(10, 10, 9).unwrap();
        let patch = ramp(4, 4);
        canvas.paste(&patch, 8, -1);
        assert_eq!(canvas.get(8, 0), patch.get(0, 1));
        canvas.paste(&patch, 2, 3);
        assert_eq!(canvas.crop(2, 3, 4, 4).unwrap(), patch);
        assert!(canvas.crop(10, 0, 1, 1).is_none());
    }

    #[test]
    fn otsu_splits_two_levels() {
        let mut px = vec![40u8; 50];
        px.extend(vec![200u8; 50]);
        let f = LumaFrame::new(10, 10, px).unwrap();
        let t = f.otsu_threshold();
        assert!((40..200).contains(&t));
        let b = f.binarized_otsu();
        assert_eq!(b.get(0, 0), Some(0));
        assert_eq!(b.get(9, 9), Some(255));
    }

    #[test]
    fn yuyv_and_nv12_take_the_y_plane() {
        let yuyv = [10u8, 128, 20, 129, 30, 128, 40, 129];
        let f = LumaFrame::from_yuyv(2, 2, &yuyv).unwrap();
        assert_eq!(f.pixels(), &[10, 20, 30, 40]);
        assert!(LumaFrame::from_yuyv(2, 2, &yuyv[..7]).is_err());
        let nv12 = [1u8, 2, 3, 4, 99, 99];
        assert_eq!(
            LumaFrame::from_y_plane(2, 2, &nv12).unwrap().pixels(),
            &[1, 2, 3, 4]
        );
    }

    #[test]
    fn box_blur_matches_the_direct_sum() {
        let f = ramp(9, 7);
        let b = f.box_blurred();
        for y in 0..7i64 {
            for x in 0..9i64 {
                let mut sum = 0u32;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (sx, sy) = ((x + dx).clamp(0, 8), (y + dy).clamp(0, 6));
                        sum += u32::from(f.get(sx as u32, sy as u32).unwrap());
                    }
                }
                assert_eq!(b.get(x as u32, y as u32), Some(((sum + 4) / 9) as u8));
            }
        }
    }

    #[test]
    fn downscale_averages() {
        let f = LumaFrame::new(2, 2, vec![0, 255, 255, 0]).unwrap();
        assert_eq!(f.downscale(2).pixels(), &[128]);
    }
}
