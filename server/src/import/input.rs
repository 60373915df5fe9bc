//! Byte-level preparation of an upload before the CSV parser sees it.
//!
//! Two jobs happen here, both in constant memory:
//!
//! 1. [`sniff`] reads just enough of the start of the upload (one line, at most
//!    [`SNIFF_LIMIT`] bytes) to strip a UTF-8 byte-order mark, recognise things that
//!    are not CSV text at all (UTF-16, Excel workbooks) and pick the delimiter. The
//!    bytes it read are replayed in front of the rest of the stream, so nothing is
//!    buffered beyond that first line.
//! 2. [`Normalized`] rewrites every line ending (`\r\n`, and the lone `\r` that
//!    "CSV (Macintosh)" exports still use) to `\n` as the bytes stream past. The
//!    `csv` crate counts lines by `\n` only, and the parent module derives
//!    spreadsheet line numbers from that count; with one kind of line ending the
//!    count is exact. It also refuses to let a single record grow past
//!    [`MAX_RECORD_BYTES`], which is what an unclosed quote would otherwise do: swallow
//!    the rest of the file into one field, in memory.

use std::io::{self, Chain, Cursor, Read};

use super::ImportError;

/// The most bytes one record may span. A real participant row is well under 4 KiB;
/// a record this long is an unclosed quote eating the rest of the file.
pub(super) const MAX_RECORD_BYTES: u64 = 1 << 20;

/// How far [`sniff`] reads looking for the end of the header line.
const SNIFF_LIMIT: usize = 64 * 1024;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The upload as the CSV parser reads it: the sniffed prefix, then the rest.
pub(super) type Upload<R> = Normalized<Chain<Cursor<Vec<u8>>, R>>;

/// Marker carried inside the `io::Error` that [`Normalized`] returns when a record
/// exceeds [`MAX_RECORD_BYTES`], so the parent can tell it from a real I/O failure.
#[derive(Debug)]
pub(super) struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a record is longer than {MAX_RECORD_BYTES} bytes")
    }
}

impl std::error::Error for RecordTooLong {}

/// Read the start of `reader`, check that it looks like CSV text, and return the
/// stream to parse together with the detected delimiter.
pub(super) fn sniff<R: Read>(mut reader: R) -> Result<(Upload<R>, u8), ImportError> {
    let mut prefix = Vec::new();
    let mut chunk = [0u8; 8 * 1024];
    let mut eof = false;
    while prefix.len() < SNIFF_LIMIT && first_line(&prefix).is_none() {
        match reader.read(&mut chunk) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => prefix.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(ImportError::Io(err)),
        }
    }

    if let Some(detail) = not_text(&prefix) {
        return Err(ImportError::Encoding {
            line: 1,
            detail: detail.to_owned(),
        });
    }
    let start = if prefix.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    if eof && prefix[start..].iter().all(u8::is_ascii_whitespace) {
        return Err(ImportError::Empty);
    }

    let header = first_line(&prefix).unwrap_or(&prefix[start..]);
    let delimiter = detect_delimiter(header);

    let mut replay = Cursor::new(prefix);
    replay.set_position(start as u64);
    Ok((Normalized::new(replay.chain(reader)), delimiter))
}

/// The first line with any content (after a BOM and leading blank lines), without
/// its terminator; `None` until a terminator has been seen.
fn first_line(prefix: &[u8]) -> Option<&[u8]> {
    let body = prefix.strip_prefix(UTF8_BOM).unwrap_or(prefix);
    let begin = body.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let rest = &body[begin..];
    let end = rest.iter().position(|b| matches!(b, b'\r' | b'\n'))?;
    Some(&rest[..end])
}

/// Recognise uploads that are not UTF-8 text at all, with a hint the organizer can
/// act on. Plain non-UTF-8 text (Windows-1252 and friends) is caught later, per
/// line, where the line number is known.
fn not_text(prefix: &[u8]) -> Option<&'static str> {
    if prefix.starts_with(b"\xFF\xFE") || prefix.starts_with(b"\xFE\xFF") {
        Some("the file is UTF-16 text; export it again as \"CSV UTF-8\"")
    } else if prefix.starts_with(b"PK\x03\x04") {
        Some("this looks like an Excel workbook (.xlsx), not CSV; save it as \"CSV UTF-8\"")
    } else if prefix.starts_with(b"\xD0\xCF\x11\xE0") {
        Some("this looks like an Excel 97-2003 workbook (.xls), not CSV; save it as \"CSV UTF-8\"")
    } else if prefix.contains(&0) {
        Some(
            "the file contains NUL bytes (binary data or UTF-16 text); upload a \"CSV UTF-8\" file",
        )
    } else {
        None
    }
}

/// Pick `,`, `;` or tab: whichever occurs most often outside quotes in the header
/// line. Ties and a header with none of them (a one-column file) mean `,`.
///
/// The header is the right line to look at: exports never leave header cells
/// empty, and header names do not contain the delimiter, whereas a data line's
/// organization may well contain commas.
fn detect_delimiter(header: &[u8]) -> u8 {
    let (mut comma, mut semicolon, mut tab) = (0usize, 0usize, 0usize);
    let mut quoted = false;
    for &b in header {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => comma += 1,
            b';' if !quoted => semicolon += 1,
            b'\t' if !quoted => tab += 1,
            _ => {}
        }
    }
    if semicolon > comma && semicolon >= tab {
        b';'
    } else if tab > comma && tab > semicolon {
        b'\t'
    } else {
        b','
    }
}

/// A reader that turns every line ending into `\n`, counts what it hands out, and
/// fails once the current record is longer than [`MAX_RECORD_BYTES`].
pub(super) struct Normalized<R> {
    inner: R,
    /// The previous byte handed out was a `\r` turned into `\n`; a `\n` right after
    /// it belongs to the same line ending and is dropped.
    after_cr: bool,
    /// Bytes handed out so far (after normalization).
    produced: u64,
    /// The last byte handed out.
    last: Option<u8>,
    /// Offset (in handed-out bytes) where the record being parsed starts.
    record_start: u64,
}

impl<R: Read> Normalized<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            after_cr: false,
            produced: 0,
            last: None,
            record_start: 0,
        }
    }

    /// Bytes handed out so far.
    pub(super) fn produced(&self) -> u64 {
        self.produced
    }

    /// The last byte handed out, if any.
    pub(super) fn last_byte(&self) -> Option<u8> {
        self.last
    }

    /// Tell the reader where the next record starts (the parser's byte position).
    pub(super) fn start_record(&mut self, offset: u64) {
        self.record_start = offset;
    }
}

impl<R: Read> Read for Normalized<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.produced.saturating_sub(self.record_start) > MAX_RECORD_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, RecordTooLong));
            }
            let n = match self.inner.read(buf) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if n == 0 {
                return Ok(0);
            }
            let mut kept = 0;
            for i in 0..n {
                let byte = buf[i];
                let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
                let out = match byte {
                    b'\n' if after_cr => continue,
                    b'\r' => b'\n',
                    other => other,
                };
                buf[kept] = out;
                kept += 1;
            }
            if kept == 0 {
                // The chunk was only the `\n` of a `\r\n` split across reads.
                continue;
            }
            self.produced += kept as u64;
            self.last = Some(buf[kept - 1]);
            return Ok(kept);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(input: &[u8], chunk: usize) -> Vec<u8> {
        /// Hands out at most `chunk` bytes per read, to split `\r\n` across reads.
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        Normalized::new(Trickle(input, chunk))
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_line_ending_becomes_a_single_newline() {
        let input = b"a\r\nb\rc\nd\r\n\r\ne\r";
        for chunk in [1, 2, 3, 64] {
            assert_eq!(
                normalized(input, chunk),
                b"a\nb\nc\nd\n\ne\n",
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn the_delimiter_is_the_most_frequent_one_outside_quotes() {
        assert_eq!(detect_delimiter(b"name,email,phone"), b',');
        assert_eq!(detect_delimiter(b"name;email;phone"), b';');
        assert_eq!(detect_delimiter(b"name\temail\tphone"), b'\t');
        assert_eq!(detect_delimiter(b"\"a;b;c\",email"), b',');
        assert_eq!(detect_delimiter(b"name"), b',');
        assert_eq!(detect_delimiter(b"Name, Vorname;E-Mail;Firma"), b';');
    }

    #[test]
    fn the_first_line_skips_a_bom_and_blank_lines() {
        assert_eq!(
            first_line(b"\xEF\xBB\xBFname,email\r\nx"),
            Some(&b"name,email"[..])
        );
        assert_eq!(first_line(b"\r\n\nname\n"), Some(&b"name"[..]));
        assert_eq!(first_line(b"name,email"), None);
    }
}
