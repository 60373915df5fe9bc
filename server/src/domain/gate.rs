//! Gates as the organizer side knows them: who an authenticated gate is, its credentials and
//! enrollment codes.

use base64::Engine;
use uuid::Uuid;

use super::crypto::{random_bytes, sha256};
use super::error::Error;

/// An authenticated gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateAuth {
    pub gate_id: Uuid,
    pub event_id: Uuid,
}

impl GateAuth {
    /// 403 unless the request is about this gate's own event.
    pub fn require_event(&self, event_id: Uuid) -> Result<(), Error> {
        if self.event_id == event_id {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }
}

/// A gate counts as online while it was heard from within this window (a long poll answers
/// within 30 s, so a live gate is heard from well inside it).
pub const ONLINE_WINDOW_MS: i64 = 90_000;
/// The server records a gate's report at most this often (or at once when the version or the
/// outbox depth changed).
pub const REPORT_INTERVAL_MS: i64 = 5_000;

/// What a gate reports about itself on a pull or push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateReport {
    pub agent_version: Option<String>,
    pub outbox_depth: Option<i64>,
    /// Unix ms.
    pub last_sync_at: Option<i64>,
}

/// A new gate credential: 256 random bits, URL-safe. Returns (credential, its SHA-256).
pub fn new_credential() -> anyhow::Result<(String, [u8; 32])> {
    let raw = random_bytes::<32>()?;
    let token = format!(
        "ugc_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let hash = sha256(token.as_bytes());
    Ok((token, hash))
}

/// The canonical form of a typed enrollment code: upper case, no dashes or spaces, look-alike
/// letters mapped. Its SHA-256 is what the database holds.
pub fn normalize_enrollment_code(code: &str) -> String {
    code.chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_256_bit_and_distinct() {
        let (a, ha) = new_credential().unwrap();
        let (b, hb) = new_credential().unwrap();
        assert!(a.starts_with("ugc_"));
        assert_eq!(a.len(), 4 + 43);
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(ha, sha256(a.as_bytes()));
    }
}
