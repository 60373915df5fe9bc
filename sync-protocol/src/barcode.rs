//! The ticket shop's own barcodes as credentials (an Eventbrite `Barcode #`, a pretix ticket
//! secret, a plain `barcode` column of an import).
//!
//! A barcode is an opaque string the shop printed on its PDF ticket, so a gate can only look it
//! up, never verify it. Neither the server's database nor a gate replica keeps it as text: both
//! keep its **lookup key**, `HMAC-SHA256(event barcode key, "usher-barcode-v1" ‖ 0 ‖ barcode)`
//! cut to 16 bytes, in hex. The event barcode key is derived by the server from the event's
//! secrets and replicated to the event's gates in their configuration, so a gate computes the
//! lookup key of what it scans offline, and a copy of the replica alone does not list the
//! barcodes.
//!
//! [`normalize`] fixes what a barcode is, so the import and the scan agree: trimmed, 2 to 128
//! visible ASCII characters without spaces. Anything else is not a barcode (a scan of it stays
//! `malformed`).

use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Shortest and longest accepted barcode.
pub const MIN_LEN: usize = 2;
pub const MAX_LEN: usize = 128;

/// The barcode text as imported and scanned, or `None` when `text` cannot be a barcode.
#[must_use]
pub fn normalize(text: &str) -> Option<&str> {
    let t = text.trim();
    let ok = (MIN_LEN..=MAX_LEN).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(t)
}

/// The event barcode key, derived from a per-event secret of at least 32 bytes.
#[must_use]
pub fn event_key(event_secret: &[u8]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"usher-barcode-key-v1"), event_secret);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit: expand cannot fail.
    let _ = hk.expand(b"barcode", &mut out);
    out
}

/// The lookup key of a (normalized) barcode under `key`: 32 hex digits.
#[must_use]
pub fn lookup_key(key: &[u8; 32], barcode: &str) -> String {
    let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(b"usher-barcode-v1\0");
    mac.update(barcode.as_bytes());
    let tag = mac.finalize().into_bytes();
    hex::encode(&tag[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_accepts_shop_barcodes_and_refuses_the_rest() {
        assert_eq!(normalize(" 1000000000000001\r\n"), Some("1000000000000001"));
        assert_eq!(normalize("p7zcq3xtyr4ab9s2"), Some("p7zcq3xtyr4ab9s2"));
        assert_eq!(normalize("a"), None, "too short");
        assert_eq!(normalize("B1"), Some("B1"));
        assert_eq!(normalize(&"9".repeat(129)), None, "too long");
        assert_eq!(normalize("12 34 56"), None, "inner space");
        assert_eq!(normalize("1234\u{0}5678"), None, "control character");
        assert_eq!(normalize("123456é"), None, "not ASCII");
    }

    #[test]
    fn lookup_keys_are_keyed_stable_and_distinct() {
        let a = event_key(&[1u8; 32]);
        let b = event_key(&[2u8; 32]);
        assert_ne!(a, b);
        let k = lookup_key(&a, "1000000000000001");
        assert_eq!(k.len(), 32);
        assert!(k.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(k, lookup_key(&a, "1000000000000001"), "deterministic");
        assert_ne!(k, lookup_key(&b, "1000000000000001"), "keyed by event");
        assert_ne!(k, lookup_key(&a, "1000000000000002"));
        assert!(!k.contains("1000000000000001"));
    }
}
