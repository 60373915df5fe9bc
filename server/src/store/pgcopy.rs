//! `COPY … FROM STDIN` for the PostgreSQL bulk paths: about twice the rate of `INSERT … SELECT
//! FROM UNNEST` (DESIGN §9), which matters for a 100,000-row import.
//!
//! Rows are encoded in COPY's text format: fields separated by tabs, rows by newlines, `\N` for
//! NULL, and backslash escapes for backslash, tab, newline and carriage return.

use sqlx::PgConnection;

/// Below this many rows the bulk paths use plain statements. sqlx sets no TCP_NODELAY, so the
/// small CopyDone message that ends a COPY often waits ~40 ms for a delayed ACK: worth paying
/// once per 25,000 rows, not on a single-ticket request.
pub const COPY_MIN_ROWS: usize = 1_000;
/// Rows per COPY: few COPYs (each may pay that ~40 ms), bounded memory.
pub const COPY_CHUNK_ROWS: usize = 25_000;
use uuid::Uuid;

/// A buffer of rows in COPY text format.
#[derive(Debug, Default)]
pub struct CopyRows {
    buf: Vec<u8>,
    at_row_start: bool,
}

impl CopyRows {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            at_row_start: true,
        }
    }

    fn sep(&mut self) {
        if !self.at_row_start {
            self.buf.push(b'\t');
        }
        self.at_row_start = false;
    }

    pub fn text(&mut self, value: Option<&str>) -> &mut Self {
        self.sep();
        match value {
            None => self.buf.extend_from_slice(b"\\N"),
            Some(s) => {
                for &b in s.as_bytes() {
                    match b {
                        b'\\' => self.buf.extend_from_slice(b"\\\\"),
                        b'\t' => self.buf.extend_from_slice(b"\\t"),
                        b'\n' => self.buf.extend_from_slice(b"\\n"),
                        b'\r' => self.buf.extend_from_slice(b"\\r"),
                        b => self.buf.push(b),
                    }
                }
            }
        }
        self
    }

    pub fn int(&mut self, value: Option<i64>) -> &mut Self {
        self.sep();
        match value {
            None => self.buf.extend_from_slice(b"\\N"),
            Some(v) => self.buf.extend_from_slice(v.to_string().as_bytes()),
        }
        self
    }

    pub fn uuid(&mut self, value: Uuid) -> &mut Self {
        self.sep();
        let mut tmp = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.buf
            .extend_from_slice(value.hyphenated().encode_lower(&mut tmp).as_bytes());
        self
    }

    pub fn boolean(&mut self, value: bool) -> &mut Self {
        self.sep();
        self.buf.push(if value { b't' } else { b'f' });
        self
    }

    pub fn end_row(&mut self) {
        self.buf.push(b'\n');
        self.at_row_start = true;
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Runs `statement` (a `COPY … FROM STDIN`) with `rows` as its data, in one message.
pub async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    rows: &CopyRows,
) -> sqlx::Result<u64> {
    let start = std::time::Instant::now();
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(rows.as_bytes()).await?;
    let n = copy.finish().await?;
    tracing::debug!(
        target: "usher::copy",
        rows = n,
        bytes = rows.as_bytes().len(),
        elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
        table = statement.split_whitespace().nth(1).unwrap_or(""),
        "COPY"
    );
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_format() {
        let mut rows = CopyRows::with_capacity(64);
        rows.text(Some("a\tb\\c\nd"))
            .text(None)
            .int(Some(-5))
            .boolean(true);
        rows.end_row();
        rows.uuid(Uuid::nil()).int(None);
        rows.end_row();
        assert_eq!(
            String::from_utf8(rows.as_bytes().to_vec()).unwrap_or_default(),
            "a\\tb\\\\c\\nd\t\\N\t-5\tt\n00000000-0000-0000-0000-000000000000\t\\N\n"
        );
    }
}
