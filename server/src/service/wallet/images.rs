//! The images a pass needs, drawn rather than shipped: an icon (a ticket with a notch on either
//! side, on the pass's background colour) and a logo strip of the same mark.

use image::{Rgba, RgbaImage};

const BACKGROUND: Rgba<u8> = Rgba([17, 24, 39, 255]);
const MARK: Rgba<u8> = Rgba([255, 255, 255, 255]);

fn png(image: &RgbaImage) -> anyhow::Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// Draws the ticket mark into the square `(x0, y0, side)` of `image`.
fn mark(image: &mut RgbaImage, x0: u32, y0: u32, side: u32) {
    let (w, h) = (side * 3 / 4, side / 2);
    let (left, top) = (x0 + (side - w) / 2, y0 + (side - h) / 2);
    let notch = (h / 5).max(1);
    let cy = top + h / 2;
    for y in top..top + h {
        for x in left..left + w {
            let dy = y.abs_diff(cy);
            let dl = x - left;
            let dr = left + w - 1 - x;
            let in_notch = dy * dy + dl * dl <= notch * notch || dy * dy + dr * dr <= notch * notch;
            if !in_notch && x < image.width() && y < image.height() {
                image.put_pixel(x, y, MARK);
            }
        }
    }
}

/// A square icon, `side` pixels.
pub fn icon(side: u32) -> anyhow::Result<Vec<u8>> {
    let mut image = RgbaImage::from_pixel(side, side, BACKGROUND);
    mark(&mut image, 0, 0, side);
    png(&image)
}

/// A logo, `width` × `height` pixels, the mark on the left on a transparent ground.
pub fn logo(width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let mut image = RgbaImage::from_pixel(width, height, Rgba([0, 0, 0, 0]));
    mark(&mut image, 0, 0, height.min(width));
    png(&image)
}
