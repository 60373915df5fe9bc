//! The signed QR ticket of DESIGN §2.1.
//!
//! Binary layout (all integers big-endian), 91 bytes:
//!
//! | field         | bytes |
//! |---------------|-------|
//! | version (=1)  | 1     |
//! | key_id        | 4     |
//! | event_tag     | 4     |
//! | ticket_serial | 8     |
//! | valid_from    | 4     |
//! | valid_until   | 4     |
//! | scopes        | 2     |
//! | signature     | 64    |
//!
//! The signature is ed25519 over `b"usher-ticket-v1" ‖ first 27 bytes`, checked with
//! `verify_strict` (rejects small-order keys and non-canonical signatures, so a ticket has exactly
//! one valid byte string). The text form is `U1:` + base45 (RFC 9285), which stays inside the QR
//! alphanumeric alphabet: 140 characters, a version-6 QR code at ECC level M.
//!
//! **Do not modify the layout.** Gates in the field and tickets already printed depend on it; the
//! golden-vector tests below freeze it byte for byte.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Text prefix of a version-1 ticket.
pub const TICKET_PREFIX: &str = "U1:";
/// The only binary version this crate issues and accepts.
pub const TICKET_VERSION: u8 = 1;
/// Length of the signed part (everything but the signature).
pub const SIGNED_LEN: usize = 27;
/// Length of a whole binary ticket.
pub const TICKET_LEN: usize = SIGNED_LEN + 64;
/// Length of the text form (`U1:` + base45 of 91 bytes).
pub const TICKET_TEXT_LEN: usize = 3 + 137;
/// Domain separation for the signature, so a ticket signature can never be replayed as a
/// signature over any other Usher message (or the other way round).
pub const SIGNING_DOMAIN: &[u8] = b"usher-ticket-v1";

/// Every way a string can fail to be a well-formed ticket. Signature problems are separate
/// ([`VerifyError`]): a malformed ticket and a forged ticket call for different operator actions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("not a Usher ticket: the text must start with {TICKET_PREFIX:?}")]
    MissingPrefix,
    #[error("ticket text is not valid base45 (RFC 9285)")]
    Base45,
    #[error("ticket is {actual} bytes long, expected {TICKET_LEN}")]
    WrongLength { actual: usize },
    #[error("ticket version {0} is not supported (this gate reads version {TICKET_VERSION})")]
    UnsupportedVersion(u8),
}

/// Why a well-formed ticket did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The key ring has no key with this id: the replica is stale (a key was added after the last
    /// sync) or the ticket comes from another system. Not proof of forgery.
    #[error("signing key {0:#010x} is unknown to this gate (replica may be stale)")]
    UnknownKey(u32),
    #[error("ticket signature is invalid")]
    InvalidSignature,
}

/// The signed fields of a ticket (everything but the version byte, which is implied, and the
/// signature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TicketFields {
    /// Which event signing key signed this ticket; lets keys rotate.
    pub key_id: u32,
    /// Short id of the event; a gate rejects other events' tickets.
    pub event_tag: u32,
    /// Unique per event and never reused: a reissue gets a new serial and revokes the old one.
    pub serial: u64,
    /// Unix seconds from which the ticket is valid.
    pub valid_from: u32,
    /// Unix seconds until which the ticket is valid (inclusive).
    pub valid_until: u32,
    /// Bitmask of the zones (check-in lists) the ticket opens.
    pub scopes: u16,
}

impl TicketFields {
    /// The 27 signed bytes, version byte first.
    pub fn to_bytes(&self) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        out[0] = TICKET_VERSION;
        out[1..5].copy_from_slice(&self.key_id.to_be_bytes());
        out[5..9].copy_from_slice(&self.event_tag.to_be_bytes());
        out[9..17].copy_from_slice(&self.serial.to_be_bytes());
        out[17..21].copy_from_slice(&self.valid_from.to_be_bytes());
        out[21..25].copy_from_slice(&self.valid_until.to_be_bytes());
        out[25..27].copy_from_slice(&self.scopes.to_be_bytes());
        out
    }

    /// The exact message the signature covers: domain ‖ signed bytes.
    pub fn signing_message(&self) -> [u8; SIGNING_DOMAIN.len() + SIGNED_LEN] {
        let mut msg = [0u8; SIGNING_DOMAIN.len() + SIGNED_LEN];
        msg[..SIGNING_DOMAIN.len()].copy_from_slice(SIGNING_DOMAIN);
        msg[SIGNING_DOMAIN.len()..].copy_from_slice(&self.to_bytes());
        msg
    }

    /// Signs the fields. The caller is responsible for `key_id` naming `key`.
    pub fn sign(&self, key: &SigningKey) -> SignedTicket {
        let signature = key.sign(&self.signing_message()).to_bytes();
        SignedTicket {
            fields: *self,
            signature,
        }
    }
}

/// A ticket with its signature, not yet verified (or verified: the type does not say; call
/// [`SignedTicket::verify`] or [`KeyRing::verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignedTicket {
    pub fields: TicketFields,
    pub signature: [u8; 64],
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

impl SignedTicket {
    /// The 91-byte binary form.
    pub fn to_bytes(&self) -> [u8; TICKET_LEN] {
        let mut out = [0u8; TICKET_LEN];
        out[..SIGNED_LEN].copy_from_slice(&self.fields.to_bytes());
        out[SIGNED_LEN..].copy_from_slice(&self.signature);
        out
    }

    /// Parses the 91-byte binary form. Total: any input gives a ticket or an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TicketError> {
        if bytes.len() != TICKET_LEN {
            return Err(TicketError::WrongLength {
                actual: bytes.len(),
            });
        }
        if bytes[0] != TICKET_VERSION {
            return Err(TicketError::UnsupportedVersion(bytes[0]));
        }
        let mut serial = [0u8; 8];
        serial.copy_from_slice(&bytes[9..17]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[SIGNED_LEN..]);
        Ok(Self {
            fields: TicketFields {
                key_id: be_u32(bytes, 1),
                event_tag: be_u32(bytes, 5),
                serial: u64::from_be_bytes(serial),
                valid_from: be_u32(bytes, 17),
                valid_until: be_u32(bytes, 21),
                scopes: u16::from_be_bytes([bytes[25], bytes[26]]),
            },
            signature,
        })
    }

    /// The text form printed in the QR code: `U1:` + base45.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(TICKET_TEXT_LEN);
        s.push_str(TICKET_PREFIX);
        s.push_str(&base45::encode(self.to_bytes()));
        s
    }

    /// Parses the text form. Leading/trailing whitespace (a scanner's Enter) is ignored and the
    /// text is read case-insensitively (the base45 alphabet has no lower-case letters, so a
    /// keyboard-wedge scanner with Caps Lock on still works).
    pub fn decode(text: &str) -> Result<Self, TicketError> {
        let text = text.trim();
        let body = match text.get(..TICKET_PREFIX.len()) {
            Some(p) if p.eq_ignore_ascii_case(TICKET_PREFIX) => &text[TICKET_PREFIX.len()..],
            _ => return Err(TicketError::MissingPrefix),
        };
        // 91 bytes are exactly 137 base45 characters; refuse anything far off before allocating.
        if body.len() > 2 * TICKET_TEXT_LEN {
            return Err(TicketError::WrongLength {
                actual: body.len() / 3 * 2,
            });
        }
        let body: Cow<'_, str> = if body.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(body.to_ascii_uppercase())
        } else {
            Cow::Borrowed(body)
        };
        let bytes = base45::decode(body.as_bytes()).map_err(|_| TicketError::Base45)?;
        let ticket = Self::from_bytes(&bytes)?;
        // The base45 decoder truncates an out-of-range final character pair instead of rejecting
        // it; insist on the canonical text so that one ticket has exactly one text form.
        if base45::encode(bytes) != *body {
            return Err(TicketError::Base45);
        }
        Ok(ticket)
    }

    /// Verifies the signature with `verify_strict`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), VerifyError> {
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.fields.signing_message(), &sig)
            .map_err(|_| VerifyError::InvalidSignature)
    }
}

/// Maps `key_id` to verifying keys so event keys can rotate: old tickets stay valid while their
/// key is in the ring, new tickets use the new key.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<u32, VerifyingKey>,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key_id: u32, key: VerifyingKey) {
        self.keys.insert(key_id, key);
    }

    /// Adds a key from its 32 raw bytes; fails if they are not a valid curve point.
    pub fn insert_bytes(&mut self, key_id: u32, key: &[u8; 32]) -> Result<(), VerifyError> {
        let key = VerifyingKey::from_bytes(key).map_err(|_| VerifyError::InvalidSignature)?;
        self.insert(key_id, key);
        Ok(())
    }

    pub fn remove(&mut self, key_id: u32) -> Option<VerifyingKey> {
        self.keys.remove(&key_id)
    }

    pub fn get(&self, key_id: u32) -> Option<&VerifyingKey> {
        self.keys.get(&key_id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a ticket against the key its `key_id` names.
    pub fn verify(&self, ticket: &SignedTicket) -> Result<(), VerifyError> {
        let key = self
            .get(ticket.fields.key_id)
            .ok_or(VerifyError::UnknownKey(ticket.fields.key_id))?;
        ticket.verify(key)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1, TEST 1.
    pub(crate) const RFC8032_TEST1_SECRET: &str =
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_TEST1_PUBLIC: &str =
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn test_key() -> SigningKey {
        let bytes: [u8; 32] = hex::decode(RFC8032_TEST1_SECRET)
            .unwrap()
            .try_into()
            .unwrap();
        SigningKey::from_bytes(&bytes)
    }

    fn golden_fields() -> TicketFields {
        TicketFields {
            key_id: 0x0000_0001,
            event_tag: 0x5553_4852, // "USHR"
            serial: 42,
            valid_from: 1_796_083_200,  // 2026-12-01T00:00:00Z
            valid_until: 1_796_169_599, // 2026-12-01T23:59:59Z
            scopes: 0x0003,
        }
    }

    // The golden vector: any other implementation can check itself against these bytes. The
    // values were computed independently (Python `cryptography` + a from-scratch base45), not
    // copied from this crate's output.
    const GOLDEN_SIGNED_HEX: &str = "010000000155534852000000000000002a6b0e0e006b0f5f7f0003";
    const GOLDEN_SIGNATURE_HEX: &str = concat!(
        "55ab7162622b707c51a828f3d857fb6ef94ec33b6ce0aca7b83974167ff36c53",
        "13cdd16e2bd7aaad2f095ca4cce468168ace1549f2053d1010c787ee10c3cc03"
    );
    const GOLDEN_TEXT: &str = concat!(
        "U1:V50000Q70ZNAMGA000000000EG5/Y1H20K.1M2G/I0EULVJC5M5AWFSBL9$UN5BE1E3/92N76IS69L%B7:$2 ",
        "YURMA*0QX-D+BRA+LB81N$KH*SA%2H2QUF9 T0H124APE4U*XO30"
    );

    #[test]
    fn rfc8032_key_matches_the_rfc_public_key() {
        assert_eq!(
            hex::encode(test_key().verifying_key().to_bytes()),
            RFC8032_TEST1_PUBLIC
        );
    }

    #[test]
    fn golden_vector_is_frozen_byte_for_byte() {
        let fields = golden_fields();
        assert_eq!(hex::encode(fields.to_bytes()), GOLDEN_SIGNED_HEX);
        let ticket = fields.sign(&test_key());
        assert_eq!(hex::encode(ticket.signature), GOLDEN_SIGNATURE_HEX);
        let text = ticket.encode();
        assert_eq!(text, GOLDEN_TEXT);
        assert_eq!(text.len(), TICKET_TEXT_LEN);
        let back = SignedTicket::decode(GOLDEN_TEXT).unwrap();
        assert_eq!(back, ticket);
        back.verify(&test_key().verifying_key()).unwrap();
    }

    #[test]
    fn text_form_is_qr_alphanumeric() {
        let text = golden_fields().sign(&test_key()).encode();
        assert!(
            text.chars()
                .all(|c| "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:".contains(c))
        );
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let key = test_key();
        let ticket = golden_fields().sign(&key);
        let bytes = ticket.to_bytes();
        for i in 0..TICKET_LEN * 8 {
            let mut b = bytes;
            b[i / 8] ^= 1 << (i % 8);
            match SignedTicket::from_bytes(&b) {
                Err(TicketError::UnsupportedVersion(_)) => assert!(i < 8),
                Err(e) => panic!("unexpected parse error {e}"),
                Ok(t) => assert_eq!(
                    t.verify(&key.verifying_key()),
                    Err(VerifyError::InvalidSignature),
                    "bit {i} flipped and still verified"
                ),
            }
        }
    }

    #[test]
    fn lower_case_and_whitespace_from_scanners_are_accepted() {
        let ticket = golden_fields().sign(&test_key());
        let text = format!("  {}\r\n", ticket.encode().to_ascii_lowercase());
        assert_eq!(SignedTicket::decode(&text).unwrap(), ticket);
    }

    #[test]
    fn malformed_inputs_get_typed_errors() {
        assert_eq!(SignedTicket::decode(""), Err(TicketError::MissingPrefix));
        assert_eq!(
            SignedTicket::decode("U2:ABC"),
            Err(TicketError::MissingPrefix)
        );
        assert_eq!(SignedTicket::decode("U1:ÄÖ"), Err(TicketError::Base45));
        assert_eq!(
            SignedTicket::decode("U1:"),
            Err(TicketError::WrongLength { actual: 0 })
        );
        assert_eq!(
            SignedTicket::decode("U1:0B9"),
            Err(TicketError::WrongLength { actual: 2 })
        );
        let mut bytes = golden_fields().sign(&test_key()).to_bytes();
        bytes[0] = 2;
        let text = format!("U1:{}", base45::encode(bytes));
        assert_eq!(
            SignedTicket::decode(&text),
            Err(TicketError::UnsupportedVersion(2))
        );
        let long = format!("U1:{}", "0".repeat(10_000));
        assert!(matches!(
            SignedTicket::decode(&long),
            Err(TicketError::WrongLength { .. })
        ));
        // Multi-byte UTF-8 right after where the prefix would end must not panic on slicing.
        assert_eq!(SignedTicket::decode("U1é"), Err(TicketError::MissingPrefix));
    }

    #[test]
    fn non_canonical_base45_is_rejected() {
        // The final byte is written as two characters c1 + 45*c2. Adding 256 to that value keeps
        // the low byte (the base45 crate would truncate) but is not the canonical encoding.
        const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
        let text = GOLDEN_TEXT;
        let tail: Vec<u8> = text.as_bytes()[text.len() - 2..].to_vec();
        let pos = |c: u8| A.iter().position(|&a| a == c).unwrap();
        let v = pos(tail[0]) + 45 * pos(tail[1]) + 256;
        let forged = format!(
            "{}{}{}",
            &text[..text.len() - 2],
            A[v % 45] as char,
            A[v / 45] as char
        );
        assert_eq!(SignedTicket::decode(&forged), Err(TicketError::Base45));
    }

    #[test]
    fn key_ring_tells_unknown_keys_from_forgeries() {
        let key = test_key();
        let ticket = golden_fields().sign(&key);
        let mut ring = KeyRing::new();
        assert_eq!(ring.verify(&ticket), Err(VerifyError::UnknownKey(1)));
        let other = SigningKey::from_bytes(&[7u8; 32]);
        ring.insert(1, other.verifying_key());
        assert_eq!(ring.verify(&ticket), Err(VerifyError::InvalidSignature));
        ring.insert(1, key.verifying_key());
        assert_eq!(ring.verify(&ticket), Ok(()));
        // Rotation: a ticket under key 2 verifies while key 1 tickets still do.
        let mut f2 = golden_fields();
        f2.key_id = 2;
        let t2 = f2.sign(&other);
        ring.insert(2, other.verifying_key());
        assert_eq!(ring.verify(&t2), Ok(()));
        assert_eq!(ring.verify(&ticket), Ok(()));
        ring.remove(1);
        assert_eq!(ring.verify(&ticket), Err(VerifyError::UnknownKey(1)));
    }
}
