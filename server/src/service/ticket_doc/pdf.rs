//! The readable ticket as PDF: one A6 page per ticket, the QR code drawn as vector rectangles
//! (4 pt per module, 16 cm² on paper), the texts in Helvetica.
//!
//! [`PdfStream`] writes a document piece by piece: every object is its own `pdf-writer` chunk,
//! handed out as soon as its page is drawn, and only the byte offset of each object is kept for
//! the cross-reference table at the end. A whole event's tickets therefore stream out in memory
//! bounded by one page, plus a few bytes per page.
//!
//! The standard PDF fonts cover WinAnsi (Western European) text only; a character outside it
//! prints as `?` in the PDF (the PNG and SVG tickets draw any script DejaVu Sans has).

use pdf_writer::{Chunk, Content, Finish, Name, Rect, Ref, Str};

use super::{TicketDoc, qr_modules};

/// A6 portrait, in points.
const PAGE_W: f32 = 297.64;
const PAGE_H: f32 = 419.53;
const MARGIN: f32 = 22.0;
/// Points per QR module.
const MODULE: f32 = 4.0;
const QUIET: usize = 4;

const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// The text in WinAnsiEncoding: Latin-1 maps onto itself; a few typographic characters have
/// their own codes; anything else becomes `?`.
pub fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' | '\u{a0}'..='\u{ff}' => c as u8,
            '–' => 0x96,
            '—' => 0x97,
            '…' => 0x85,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '€' => 0x80,
            _ => b'?',
        })
        .collect()
}

/// A PDF being written object by object.
pub struct PdfStream {
    next_id: i32,
    /// (object number, byte offset), in the order written.
    offsets: Vec<(i32, usize)>,
    written: usize,
    pages: Vec<Ref>,
    catalog: Ref,
    page_tree: Ref,
    regular: Ref,
    bold: Ref,
}

impl PdfStream {
    /// A new document and its header bytes.
    pub fn start() -> (Self, Vec<u8>) {
        let header = b"%PDF-1.7\n%\x80\x80\x80\x80\n".to_vec();
        (
            Self {
                next_id: 5,
                offsets: Vec::new(),
                written: header.len(),
                pages: Vec::new(),
                catalog: Ref::new(1),
                page_tree: Ref::new(2),
                regular: Ref::new(3),
                bold: Ref::new(4),
            },
            header,
        )
    }

    fn alloc(&mut self) -> Ref {
        let r = Ref::new(self.next_id);
        self.next_id += 1;
        r
    }

    /// Appends one object's chunk to `out`, remembering where it starts.
    fn emit(&mut self, id: Ref, chunk: &Chunk, out: &mut Vec<u8>) {
        self.offsets.push((id.get(), self.written));
        self.written += chunk.len();
        out.extend_from_slice(chunk.as_bytes());
    }

    /// Pages written so far.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// The bytes of one more page holding `doc`.
    pub fn page(&mut self, doc: &TicketDoc) -> anyhow::Result<Vec<u8>> {
        let page_id = self.alloc();
        let content_id = self.alloc();
        self.pages.push(page_id);
        let content = page_content(doc)?;
        let mut out = Vec::with_capacity(content.len() + 512);

        let mut chunk = Chunk::new();
        {
            let mut page = chunk.page(page_id);
            page.parent(self.page_tree)
                .media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
                .contents(content_id);
            let mut resources = page.resources();
            let mut fonts = resources.fonts();
            fonts.pair(REGULAR, self.regular);
            fonts.pair(BOLD, self.bold);
            fonts.finish();
            resources.finish();
            page.finish();
        }
        self.emit(page_id, &chunk, &mut out);

        let mut chunk = Chunk::new();
        chunk.stream(content_id, &content).finish();
        self.emit(content_id, &chunk, &mut out);
        Ok(out)
    }

    /// The closing bytes: fonts, page tree, catalog, cross-reference table, trailer.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for (id, base) in [(self.regular, "Helvetica"), (self.bold, "Helvetica-Bold")] {
            let mut chunk = Chunk::new();
            chunk
                .type1_font(id)
                .base_font(Name(base.as_bytes()))
                .encoding_predefined(Name(b"WinAnsiEncoding"));
            self.emit(id, &chunk, &mut out);
        }
        let mut chunk = Chunk::new();
        let count = i32::try_from(self.pages.len()).unwrap_or(i32::MAX);
        chunk
            .pages(self.page_tree)
            .kids(self.pages.iter().copied())
            .count(count);
        let tree = self.page_tree;
        self.emit(tree, &chunk, &mut out);
        let mut chunk = Chunk::new();
        chunk
            .indirect(self.catalog)
            .start::<pdf_writer::writers::Catalog>()
            .pages(self.page_tree);
        let catalog = self.catalog;
        self.emit(catalog, &chunk, &mut out);

        let size = self.next_id;
        let mut by_id = vec![None; usize::try_from(size).unwrap_or(0)];
        for (id, offset) in &self.offsets {
            if let Some(slot) = usize::try_from(*id).ok().and_then(|i| by_id.get_mut(i)) {
                *slot = Some(*offset);
            }
        }
        // Every object's bytes have been counted into `written`: the table starts here.
        let xref_at = self.written;
        let mut xref = format!("xref\n0 {size}\n0000000000 65535 f\r\n");
        for slot in by_id.iter().skip(1) {
            match slot {
                Some(offset) => xref.push_str(&format!("{offset:010} 00000 n\r\n")),
                None => xref.push_str("0000000000 65535 f\r\n"),
            }
        }
        xref.push_str(&format!(
            "trailer\n<< /Size {size} /Root {} 0 R >>\nstartxref\n{xref_at}\n%%EOF\n",
            self.catalog.get()
        ));
        out.extend_from_slice(xref.as_bytes());
        out
    }
}

/// One ticket's drawing.
fn page_content(doc: &TicketDoc) -> anyhow::Result<Vec<u8>> {
    let font = super::image::font()?;
    let max = PAGE_W - 2.0 * MARGIN;
    let mut content = Content::new();
    let mut y = PAGE_H - MARGIN;
    let text = |content: &mut Content, y: &mut f32, f: Name<'_>, size: f32, s: &str| {
        // DejaVu Sans is wider than Helvetica: what fits measured in it fits printed.
        let (s, size) = super::image::fit(&font, size, max, s);
        *y -= size;
        content
            .begin_text()
            .set_font(f, size)
            .next_line(MARGIN, *y)
            .show(Str(&win_ansi(&s)))
            .end_text();
        *y -= size * 0.35;
    };
    text(&mut content, &mut y, BOLD, 16.0, &doc.event_name);
    y -= 2.0;
    text(&mut content, &mut y, REGULAR, 9.0, &doc.when());
    if let Some(v) = doc.venue.as_deref().filter(|v| !v.is_empty()) {
        text(&mut content, &mut y, REGULAR, 9.0, v);
    }
    y -= 10.0;
    if let Some(v) = doc.name.as_deref().filter(|v| !v.is_empty()) {
        text(&mut content, &mut y, BOLD, 14.0, v);
    }
    if let Some(v) = doc.organization.as_deref().filter(|v| !v.is_empty()) {
        text(&mut content, &mut y, REGULAR, 10.0, v);
    }
    if let Some(v) = doc.ticket_type.as_deref().filter(|v| !v.is_empty()) {
        text(&mut content, &mut y, REGULAR, 10.0, &format!("Ticket: {v}"));
    }

    let (width, modules) = qr_modules(&doc.credential)?;
    let side = (width + 2 * QUIET) as f32 * MODULE;
    let left = (PAGE_W - side) / 2.0 + QUIET as f32 * MODULE;
    // Below the texts, but never off the page.
    let top = (y - 6.0).min(PAGE_H - MARGIN) - QUIET as f32 * MODULE;
    content.set_fill_gray(0.0);
    for row in 0..width {
        let mut col = 0;
        while col < width {
            if modules[row * width + col] {
                let start = col;
                while col < width && modules[row * width + col] {
                    col += 1;
                }
                content.rect(
                    left + start as f32 * MODULE,
                    top - (row + 1) as f32 * MODULE,
                    (col - start) as f32 * MODULE,
                    MODULE,
                );
            } else {
                col += 1;
            }
        }
    }
    content.fill_nonzero();
    let code_y = (top - width as f32 * MODULE - QUIET as f32 * MODULE - 14.0).max(MARGIN);
    let code = win_ansi(&doc.short_code);
    // Helvetica's capitals and digits are about 0.6 em wide.
    let approx = doc.short_code.chars().count() as f32 * 14.0 * 0.6;
    content
        .begin_text()
        .set_font(REGULAR, 14.0)
        .next_line((PAGE_W - approx) / 2.0, code_y)
        .show(Str(&code))
        .end_text();
    Ok(content.finish().into_vec())
}

/// A PDF of one ticket.
pub fn one(doc: &TicketDoc) -> anyhow::Result<Vec<u8>> {
    let (mut pdf, mut out) = PdfStream::start();
    out.extend(pdf.page(doc)?);
    out.extend(pdf.finish());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_outside_win_ansi_prints_as_a_question_mark() {
        assert_eq!(win_ansi("Zoë Müller"), b"Zo\xeb M\xfcller".to_vec());
        assert_eq!(win_ansi("09:00 – 18:00…"), b"09:00 \x96 18:00\x85".to_vec());
        assert_eq!(win_ansi("김민지 Kim"), b"??? Kim".to_vec());
    }

    #[test]
    fn a_line_too_long_is_shrunk_then_cut() {
        let font = super::super::image::font().unwrap();
        let (text, size) = super::super::image::fit(&font, 20.0, 200.0, "Short");
        assert_eq!((text.as_str(), size), ("Short", 20.0));
        let long = "An extraordinarily long participant name that cannot fit";
        let (text, size) = super::super::image::fit(&font, 20.0, 200.0, long);
        assert!(text.ends_with('…') && text.len() < long.len(), "{text}");
        assert!(size < 20.0);
    }
}
