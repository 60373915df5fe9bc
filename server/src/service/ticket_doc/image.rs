//! The readable ticket as PNG and as SVG: the event name, when and where, the holder, the
//! organization and ticket type, the QR code (10 px per module in the PNG, ample for a gate
//! camera) and the short code under it.
//!
//! PNG text is drawn with DejaVu Sans (embedded; Bitstream Vera licence, `assets/fonts/`), so
//! names in most scripts print; a line too wide for the ticket is shrunk, then cut with "…".

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::{GrayImage, Luma};

use super::{TicketDoc, qr_modules};

static FONT_DATA: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

const WIDTH: u32 = 720;
const MARGIN: u32 = 40;
/// Pixels per QR module in the PNG.
const MODULE: u32 = 10;
/// Quiet zone around the QR code, in modules.
const QUIET: u32 = 4;

pub fn font() -> anyhow::Result<FontRef<'static>> {
    FontRef::try_from_slice(FONT_DATA).map_err(|e| anyhow::anyhow!("embedded font: {e}"))
}

/// Width of `text` at `size` px.
fn text_width(font: &FontRef<'_>, size: f32, text: &str) -> f32 {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut width = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            width += scaled.kern(p, id);
        }
        width += scaled.h_advance(id);
        previous = Some(id);
    }
    width
}

/// The text as it fits into `max` px: at `size` if it can, else smaller down to 70 %, else cut
/// with an ellipsis. Returns (text, size).
pub fn fit(font: &FontRef<'_>, size: f32, max: f32, text: &str) -> (String, f32) {
    let mut s = size;
    while s > size * 0.7 {
        if text_width(font, s, text) <= max {
            return (text.to_owned(), s);
        }
        s -= 1.0;
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut: String = chars.iter().collect::<String>().trim_end().to_owned() + "…";
        if text_width(font, s, &cut) <= max {
            return (cut, s);
        }
    }
    (String::new(), s)
}

/// Draws `text` with its baseline at `y`, starting at `x` (or centred when `x` is `None`).
fn draw(image: &mut GrayImage, font: &FontRef<'_>, size: f32, x: Option<f32>, y: f32, text: &str) {
    let scaled = font.as_scaled(PxScale::from(size));
    let width = text_width(font, size, text);
    let mut caret = x.unwrap_or((image.width() as f32 - width) / 2.0);
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            caret += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(PxScale::from(size), point(caret, y));
        caret += scaled.h_advance(id);
        previous = Some(id);
        if let Some(outlined) = font.outline_glyph(glyph) {
            let bounds = outlined.px_bounds();
            outlined.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i64 + i64::from(gx);
                let py = bounds.min.y as i64 + i64::from(gy);
                if let (Ok(px), Ok(py)) = (u32::try_from(px), u32::try_from(py))
                    && px < image.width()
                    && py < image.height()
                {
                    let old = f32::from(image.get_pixel(px, py).0[0]);
                    let new = old * (1.0 - coverage.clamp(0.0, 1.0));
                    image.put_pixel(px, py, Luma([new as u8]));
                }
            });
        }
    }
}

/// One line of the ticket: its text and pixel size.
struct Line {
    text: String,
    size: f32,
    gap_after: f32,
}

fn layout(font: &FontRef<'_>, doc: &TicketDoc) -> Vec<Line> {
    let max = (WIDTH - 2 * MARGIN) as f32;
    let mut lines = Vec::new();
    let mut push = |text: &str, size: f32, gap_after: f32| {
        let (text, size) = fit(font, size, max, text);
        lines.push(Line {
            text,
            size,
            gap_after,
        });
    };
    push(&doc.event_name, 40.0, 14.0);
    push(&doc.when(), 22.0, 8.0);
    if let Some(v) = doc.venue.as_deref().filter(|v| !v.is_empty()) {
        push(v, 22.0, 8.0);
    }
    // A wider gap between the event and the holder.
    push("", 4.0, 8.0);
    if let Some(name) = doc.name.as_deref().filter(|v| !v.is_empty()) {
        push(name, 34.0, 8.0);
    }
    if let Some(o) = doc.organization.as_deref().filter(|v| !v.is_empty()) {
        push(o, 22.0, 8.0);
    }
    if let Some(t) = doc.ticket_type.as_deref().filter(|v| !v.is_empty()) {
        push(&format!("Ticket: {t}"), 22.0, 8.0);
    }
    lines
}

/// The readable ticket as a PNG.
pub fn png(doc: &TicketDoc) -> anyhow::Result<Vec<u8>> {
    let font = font()?;
    let lines = layout(&font, doc);
    let (width, modules) = qr_modules(&doc.credential)?;
    let qr_side = (u32::try_from(width)? + 2 * QUIET) * MODULE;
    let text_height: f32 = lines.iter().map(|l| l.size * 1.2 + l.gap_after).sum();
    let code_size = 40.0;
    let height = MARGIN + text_height.ceil() as u32 + 16 + qr_side + code_size as u32 + MARGIN;
    let mut image = GrayImage::from_pixel(WIDTH, height, Luma([255]));
    let mut y = MARGIN as f32;
    for line in &lines {
        y += line.size;
        draw(
            &mut image,
            &font,
            line.size,
            Some(MARGIN as f32),
            y,
            &line.text,
        );
        y += line.size * 0.2 + line.gap_after;
    }
    let top = y.ceil() as u32 + 16;
    let left = (WIDTH - qr_side) / 2;
    for (i, dark) in modules.iter().enumerate() {
        if !dark {
            continue;
        }
        let (mx, my) = (
            u32::try_from(i % width)? + QUIET,
            u32::try_from(i / width)? + QUIET,
        );
        for dy in 0..MODULE {
            for dx in 0..MODULE {
                image.put_pixel(left + mx * MODULE + dx, top + my * MODULE + dy, Luma([0]));
            }
        }
    }
    let baseline = (top + qr_side) as f32 + code_size * 0.8;
    draw(
        &mut image,
        &font,
        code_size,
        None,
        baseline,
        &doc.short_code,
    );
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The readable ticket as SVG: the texts as `<text>`, the QR code as one `<rect>` per run of
/// dark modules in a row, inside a group that maps one unit to one module.
pub fn svg(doc: &TicketDoc) -> anyhow::Result<String> {
    use std::fmt::Write;
    let font = font()?;
    let lines = layout(&font, doc);
    let (width, modules) = qr_modules(&doc.credential)?;
    let qr_side = (u32::try_from(width)? + 2 * QUIET) * MODULE;
    let text_height: f32 = lines.iter().map(|l| l.size * 1.2 + l.gap_after).sum();
    let height = MARGIN + text_height.ceil() as u32 + 16 + qr_side + 40 + MARGIN;
    let mut out = String::new();
    write!(
        out,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">
<rect width="{WIDTH}" height="{height}" fill="#fff"/>
<g font-family="DejaVu Sans, Verdana, Arial, sans-serif" fill="#000">
"##
    )?;
    let mut y = MARGIN as f32;
    for line in &lines {
        y += line.size;
        writeln!(
            out,
            r#"<text x="{MARGIN}" y="{y:.1}" font-size="{:.1}">{}</text>"#,
            line.size,
            xml_escape(&line.text)
        )?;
        y += line.size * 0.2 + line.gap_after;
    }
    let top = y.ceil() as u32 + 16;
    let left = (WIDTH - qr_side) / 2;
    writeln!(
        out,
        r#"<text x="{}" y="{:.1}" font-size="40" text-anchor="middle" class="short-code">{}</text>"#,
        WIDTH / 2,
        (top + qr_side) as f32 + 32.0,
        xml_escape(&doc.short_code)
    )?;
    out.push_str("</g>\n");
    writeln!(
        out,
        r##"<g class="qr" transform="translate({} {}) scale({MODULE})" fill="#000" shape-rendering="crispEdges">"##,
        left + QUIET * MODULE,
        top + QUIET * MODULE
    )?;
    for row in 0..width {
        let mut col = 0;
        while col < width {
            if modules[row * width + col] {
                let start = col;
                while col < width && modules[row * width + col] {
                    col += 1;
                }
                writeln!(
                    out,
                    r#"<rect x="{start}" y="{row}" width="{}" height="1"/>"#,
                    col - start
                )?;
            } else {
                col += 1;
            }
        }
    }
    out.push_str("</g>\n</svg>\n");
    Ok(out)
}
