//! Keyboard-wedge scanners: USB/Bluetooth scanners that "type" the code followed by Enter.
//!
//! In production the input is the kiosk's stdin ([`WedgeSource::stdin`], read on a thread of
//! its own so that a silent scanner never holds up shutdown) or a tty; anything that is an
//! [`AsyncBufRead`] works, which is also how the tests drive it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, ReadBuf};
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

impl WedgeSource<ThreadStdin> {
    /// The kiosk's standard input, named `"wedge:stdin"`, read on a thread of its own
    /// ([`ThreadStdin`]).
    pub fn stdin() -> std::io::Result<Self> {
        Ok(Self::new("wedge:stdin", ThreadStdin::spawn()?))
    }
}

impl<R: AsyncBufRead + Unpin + Send + 'static> CredentialSource for WedgeSource<R> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(mut self, tx: mpsc::Sender<Reading>) -> Result<(), SourceError> {
        loop {
            // A scanner may stay silent for hours: stop as soon as the gate agent drops its
            // receiver, not at the next line.
            let line = tokio::select! {
                () = tx.closed() => break,
                line = read_line_capped(&mut self.input, MAX_LINE_BYTES) => line?,
            };
            let Some(line) = line else {
                tracing::debug!(source = %self.name, "wedge input ended");
                break;
            };
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
        Ok(())
    }
}

/// The process's standard input as an [`AsyncBufRead`], read on a dedicated thread.
///
/// Not `tokio::io::stdin`: that reads on the runtime's blocking pool, and a read that never
/// returns (a scanner that sends nothing, a terminal nobody types in) holds up the runtime's
/// shutdown until it does. This thread is never waited for: it ends at end of input, after its
/// next read once this reader is dropped, or with the process.
#[derive(Debug)]
pub struct ThreadStdin {
    chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ThreadStdin {
    /// Starts the reading thread.
    pub fn spawn() -> std::io::Result<Self> {
        let (tx, chunks) = mpsc::channel(16);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                use std::io::Read;
                let mut stdin = std::io::stdin().lock();
                let mut chunk = vec![0u8; 4096];
                loop {
                    let read = match stdin.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => Ok(chunk.get(..n).unwrap_or_default().to_vec()),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    };
                    let failed = read.is_err();
                    if tx.blocking_send(read).is_err() || failed {
                        break;
                    }
                }
            })?;
        Ok(Self {
            chunks,
            buf: Vec::new(),
            pos: 0,
            ended: false,
        })
    }
}

impl AsyncBufRead for ThreadStdin {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.pos >= this.buf.len() && !this.ended {
            match ready!(this.chunks.poll_recv(cx)) {
                Some(Ok(chunk)) => {
                    this.buf = chunk;
                    this.pos = 0;
                }
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Err(e));
                }
                None => this.ended = true,
            }
        }
        // Empty once ended: end of input.
        Poll::Ready(Ok(this.buf.get(this.pos..).unwrap_or_default()))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = this.pos.saturating_add(amt).min(this.buf.len());
    }
}

impl AsyncRead for ThreadStdin {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(out.remaining());
        out.put_slice(available.get(..n).unwrap_or_default());
        self.consume(n);
        Poll::Ready(Ok(()))
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
