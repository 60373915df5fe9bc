//! Keyboard-wedge scanners: USB/Bluetooth scanners that "type" the code followed by Enter.
//!
//! In production the input is the kiosk's stdin ([`WedgeSource::stdin`]) or a tty; anything that
//! is an [`AsyncBufRead`] works, which is also how the tests drive it.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;

use crate::{CredentialSource, Payload, Reading, SourceError, now_ms};

/// Longest line accepted. A 140-char ticket is the longest real credential; anything past this
/// is a stuck key or a misconfigured scanner, and is dropped rather than buffered without bound.
pub const MAX_LINE_BYTES: usize = 4096;

/// Reads newline-terminated credentials from a keyboard-wedge scanner.
#[derive(Debug)]
pub struct WedgeSource<R> {
    name: String,
    input: R,
}

impl<R: AsyncBufRead + Unpin + Send + 'static> WedgeSource<R> {
    /// `name` identifies the scanner in readings and logs (e.g. `"wedge:stdin"`).
    pub fn new(name: impl Into<String>, input: R) -> Self {
        Self {
            name: name.into(),
            input,
        }
    }
}

impl WedgeSource<tokio::io::BufReader<tokio::io::Stdin>> {
    /// The kiosk's standard input, named `"wedge:stdin"`.
    pub fn stdin() -> Self {
        Self::new("wedge:stdin", tokio::io::BufReader::new(tokio::io::stdin()))
    }
}

impl<R: AsyncBufRead + Unpin + Send + 'static> CredentialSource for WedgeSource<R> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(mut self, tx: mpsc::Sender<Reading>) -> Result<(), SourceError> {
        while let Some(line) = read_line_capped(&mut self.input, MAX_LINE_BYTES).await? {
            let Some(text) = clean_line(&line) else {
                continue;
            };
            let reading = Reading {
                payload: Payload::Text(text),
                t_ms: now_ms(),
                source: self.name.clone(),
            };
            if tx.send(reading).await.is_err() {
                // The gate agent dropped its receiver: it is shutting down.
                break;
            }
        }
        tracing::debug!(source = %self.name, "wedge input ended");
        Ok(())
    }
}

/// Reads one `\n`-terminated line (without the `\n`), or `None` at end of input. Lines longer
/// than `cap` are skipped whole, with a warning.
pub(crate) async fn read_line_capped<R: AsyncBufRead + Unpin>(
    input: &mut R,
    cap: usize,
) -> Result<Option<Vec<u8>>, std::io::Error> {
    let mut line = Vec::new();
    let mut overlong = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            // End of input: a last line without a newline still counts.
            return Ok(if line.is_empty() && !overlong {
                None
            } else if overlong {
                Some(Vec::new())
            } else {
                Some(line)
            });
        }
        let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i)),
            None => (available, None),
        };
        if !overlong {
            if line.len() + chunk.len() > cap {
                tracing::warn!(cap, "wedge line too long; skipped");
                overlong = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = found_newline.map_or(chunk.len(), |i| i + 1);
        input.consume(consumed);
        if found_newline.is_some() {
            return Ok(Some(if overlong { Vec::new() } else { line }));
        }
    }
}

/// Turns one raw scanner line into a credential string, or `None` if nothing is left.
///
/// * Control characters are removed anywhere: CR from CRLF scanners, STX/ETX framing, tabs.
/// * Leading whitespace is removed.
/// * Trailing whitespace is removed *except* from signed tickets (`U<digit>:`): base45 uses the
///   space as a digit, so a ticket can legitimately end in one and trimming it would turn a valid
///   ticket into `malformed`. Short codes and anything typed by hand get both ends trimmed.
pub fn clean_line(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let stripped: String = text.chars().filter(|c| !c.is_control()).collect();
    let start = stripped.trim_start();
    let cleaned = if is_ticket_prefixed(start) {
        start
    } else {
        start.trim_end()
    };
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

fn is_ticket_prefixed(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 3 && b[0] == b'U' && b[1].is_ascii_digit() && b[2] == b':'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean_line(b"U1:ABC\r").as_deref(), Some("U1:ABC"));
        assert_eq!(clean_line(b"  CODE-1234 ").as_deref(), Some("CODE-1234"));
        assert_eq!(clean_line(b"\x02AB\tC\x03").as_deref(), Some("ABC"));
        assert_eq!(clean_line(b" \r"), None);
        // A ticket whose last base45 digit is a space keeps it.
        assert_eq!(clean_line(b"U1:AB \r").as_deref(), Some("U1:AB "));
    }
}
