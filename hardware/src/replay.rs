//! Replaying recorded hardware input: BLE advert logs and keyboard-wedge logs, as JSON lines.
//!
//! Advert log, one object per line (what a scanner session records, and what field reports come
//! back as):
//!
//! ```json
//! {"t_ms": 1790000000123, "addr": "C4:7F:51:0A:33:10", "rssi": -58, "service_uuid": "0xFEAA", "data_hex": "01…"}
//! ```
//!
//! `service_uuid` may also be a plain integer (`65194`). Wedge log: `{"t_ms": …, "text": "U1:…"}`.
//!
//! Replays are paced by the recorded timestamps divided by `speed` (`1.0` = real time, `10.0` =
//! ten times faster, `0.0` = as fast as possible). Readings and adverts keep their *recorded*
//! `t_ms`, so the presence filter windows and any time checks behave identically at every speed.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncBufRead;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::advert::{Advert, AdvertSource};
use crate::wedge::{MAX_LINE_BYTES, clean_line, read_line_capped};
use crate::{CredentialSource, Payload, Reading, SourceError};

/// Longest accepted log line; a legacy advert is 31 bytes, so 4 KiB of JSON is generous.
const MAX_LOG_LINE: usize = 4 * MAX_LINE_BYTES;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Uuid16 {
    Int(u16),
    Text(String),
}

impl Uuid16 {
    fn value(&self) -> Result<u16, String> {
        match self {
            Uuid16::Int(v) => Ok(*v),
            Uuid16::Text(s) => {
                let digits = s
                    .strip_prefix("0x")
                    .or_else(|| s.strip_prefix("0X"))
                    .unwrap_or(s);
                u16::from_str_radix(digits, 16)
                    .map_err(|_| format!("service_uuid {s:?} is not a 16-bit hex UUID"))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct AdvertRecord {
    t_ms: u64,
    #[serde(default)]
    addr: String,
    rssi: i16,
    service_uuid: Uuid16,
    data_hex: String,
}

#[derive(Debug, Deserialize)]
struct WedgeRecord {
    t_ms: u64,
    text: String,
}

/// Decodes a hex string (either case, no separators).
fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err("data_hex has an odd number of digits".to_owned());
    }
    bytes
        .chunks(2)
        .map(|pair| match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
            _ => Err(format!("data_hex contains a non-hex digit near {pair:?}")),
        })
        .collect()
}

/// Sleeps so that record time `t_ms` happens at `(t_ms − first) / speed` after the start.
/// Measured from the start rather than the previous record, so sleeps do not accumulate drift.
#[derive(Debug)]
struct Pacer {
    speed: f64,
    origin: Option<(u64, Instant)>,
}

impl Pacer {
    fn new(speed: f64) -> Self {
        // NaN or negative speeds make no sense; treat them as "no pacing".
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            0.0
        };
        Self {
            speed,
            origin: None,
        }
    }

    async fn wait_for(&mut self, t_ms: u64) {
        if self.speed == 0.0 {
            return;
        }
        let (t0, start) = *self.origin.get_or_insert((t_ms, Instant::now()));
        let offset_ms = t_ms.saturating_sub(t0) as f64 / self.speed;
        tokio::time::sleep_until(start + Duration::from_secs_f64(offset_ms / 1_000.0)).await;
    }
}

/// JSON-lines reader shared by both replays: returns (line number, parsed record).
async fn next_record<R, T>(input: &mut R, line_no: &mut usize) -> Result<Option<T>, SourceError>
where
    R: AsyncBufRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    loop {
        let Some(raw) = read_line_capped(input, MAX_LOG_LINE).await? else {
            return Ok(None);
        };
        *line_no += 1;
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        return serde_json::from_str(text)
            .map(Some)
            .map_err(|e| SourceError::Replay {
                line: *line_no,
                message: e.to_string(),
            });
    }
}

/// A recorded advert log as an [`AdvertSource`]; feed it to [`crate::BleSource`].
#[derive(Debug)]
pub struct AdvertReplay<R> {
    input: R,
    pacer: Pacer,
    line: usize,
}

impl<R: AsyncBufRead + Unpin + Send + 'static> AdvertReplay<R> {
    /// `speed`: 1.0 real time, 0.0 as fast as possible.
    pub fn new(input: R, speed: f64) -> Self {
        Self {
            input,
            pacer: Pacer::new(speed),
            line: 0,
        }
    }
}

impl AdvertReplay<tokio::io::BufReader<tokio::fs::File>> {
    /// Opens a log file.
    pub async fn open(path: impl AsRef<std::path::Path>, speed: f64) -> Result<Self, SourceError> {
        let file = tokio::fs::File::open(path).await?;
        Ok(Self::new(tokio::io::BufReader::new(file), speed))
    }
}

impl<R: AsyncBufRead + Unpin + Send + 'static> AdvertSource for AdvertReplay<R> {
    async fn next_advert(&mut self) -> Result<Option<Advert>, SourceError> {
        let Some(record) = next_record::<_, AdvertRecord>(&mut self.input, &mut self.line).await?
        else {
            return Ok(None);
        };
        let advert = record
            .into_advert()
            .map_err(|message| SourceError::Replay {
                line: self.line,
                message,
            })?;
        self.pacer.wait_for(advert.t_ms).await;
        Ok(Some(advert))
    }
}

impl AdvertRecord {
    fn into_advert(self) -> Result<Advert, String> {
        Ok(Advert {
            t_ms: self.t_ms,
            service_uuid: self.service_uuid.value()?,
            service_data: decode_hex(&self.data_hex)?,
            addr: self.addr,
            rssi: self.rssi,
        })
    }
}

/// Parses one line of an advert log (the format above) into an [`Advert`]: what
/// [`AdvertReplay`] does with each non-blank line. The error is the message a replay reports.
pub fn parse_advert_line(line: &str) -> Result<Advert, String> {
    serde_json::from_str::<AdvertRecord>(line.trim())
        .map_err(|e| e.to_string())?
        .into_advert()
}

/// A recorded keyboard-wedge log replayed as text readings.
#[derive(Debug)]
pub struct WedgeReplay<R> {
    name: String,
    input: R,
    pacer: Pacer,
}

impl<R: AsyncBufRead + Unpin + Send + 'static> WedgeReplay<R> {
    pub fn new(name: impl Into<String>, input: R, speed: f64) -> Self {
        Self {
            name: name.into(),
            input,
            pacer: Pacer::new(speed),
        }
    }
}

impl<R: AsyncBufRead + Unpin + Send + 'static> CredentialSource for WedgeReplay<R> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(mut self, tx: mpsc::Sender<Reading>) -> Result<(), SourceError> {
        let mut line = 0usize;
        loop {
            // Reading and pacing both wait; either stops when the receiver is gone.
            let record = tokio::select! {
                () = tx.closed() => break,
                r = next_record::<_, WedgeRecord>(&mut self.input, &mut line) => r?,
            };
            let Some(record) = record else { break };
            // The log holds what the scanner typed; clean it exactly as the live source would.
            let Some(text) = clean_line(record.text.as_bytes()) else {
                continue;
            };
            tokio::select! {
                () = tx.closed() => break,
                () = self.pacer.wait_for(record.t_ms) => {}
            }
            let reading = Reading {
                payload: Payload::Text(text),
                t_ms: record.t_ms,
                source: self.name.clone(),
            };
            if tx.send(reading).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_uuid_parsing() {
        assert_eq!(decode_hex("01aB"), Ok(vec![0x01, 0xAB]));
        assert!(decode_hex("0").is_err());
        assert!(decode_hex("zz").is_err());
        assert_eq!(Uuid16::Text("0xFEAA".into()).value(), Ok(0xFEAA));
        assert_eq!(Uuid16::Text("feaa".into()).value(), Ok(0xFEAA));
        assert_eq!(Uuid16::Int(65194).value(), Ok(0xFEAA));
        assert!(Uuid16::Text("0x1FEAA".into()).value().is_err());
    }
}
