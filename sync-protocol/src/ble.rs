//! The BLE badge credential of DESIGN §2.3: a rotating, unforgeable id in the service data of a
//! legacy advertisement, in the spirit of Eddystone-EID.
//!
//! Payload (21 bytes, big-endian): `ver u8 ‖ ticket_serial u64 ‖ slot u32 ‖ mac[8]` where
//! `slot = unix_seconds / 30`, `mac = HMAC-SHA256(ble_key, ver ‖ serial ‖ slot)[..8]` and
//! `ble_key = HKDF-SHA256(salt = "usher-ble-v1", ikm = event BLE secret, info = serial as u64 BE)`.
//!
//! The gate holds per-ticket `ble_key`s (never the event secret), so a stolen kiosk cannot mint
//! credentials for other tickets. A recorded advert is only good for its 30-second slot (±1 for
//! clock skew). **Do not modify the layout**: badges in the field emit it.

use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Payload version this crate emits and accepts.
pub const BLE_VERSION: u8 = 1;
/// Payload length in bytes.
pub const BLE_PAYLOAD_LEN: usize = 21;
/// Slot length in seconds.
pub const SLOT_SECONDS: u64 = 30;
/// Slots accepted either side of the gate's own slot.
pub const SLOT_TOLERANCE: u32 = 1;
/// Default 16-bit service UUID the badge advertises under (configurable per gate).
pub const DEFAULT_SERVICE_UUID: u16 = 0xFEAA;
const HKDF_SALT: &[u8] = b"usher-ble-v1";

type HmacSha256 = hmac::Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BleError {
    #[error("BLE payload is {0} bytes, expected {BLE_PAYLOAD_LEN}")]
    WrongLength(usize),
    #[error("BLE payload version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("BLE credential MAC does not verify")]
    BadMac,
    #[error("BLE credential slot {slot} is outside the accepted window around {now_slot}")]
    StaleSlot { slot: u32, now_slot: u32 },
}

/// Per-ticket BLE key, as distributed to gates in the replica.
#[derive(Clone, PartialEq, Eq)]
pub struct BleKey(pub [u8; 32]);

impl std::fmt::Debug for BleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BleKey(..)")
    }
}

impl BleKey {
    /// Derives the key of one ticket from the event's BLE secret.
    pub fn derive(event_secret: &[u8], serial: u64) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), event_secret);
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        if hk.expand(&serial.to_be_bytes(), &mut okm).is_err() {
            unreachable!("HKDF output length is constant and valid");
        }
        Self(okm)
    }
}

/// The slot for a unix time.
pub fn slot_at(unix_seconds: u64) -> u32 {
    u32::try_from(unix_seconds / SLOT_SECONDS).unwrap_or(u32::MAX)
}

/// A decoded (not yet verified) BLE credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BleCredential {
    pub version: u8,
    pub serial: u64,
    pub slot: u32,
    pub mac: [u8; 8],
}

fn compute_mac(key: &BleKey, version: u8, serial: u64, slot: u32) -> [u8; 8] {
    let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(&key.0) {
        Ok(m) => m,
        // HMAC accepts keys of any length.
        Err(_) => unreachable!("HMAC takes any key length"),
    };
    mac.update(&[version]);
    mac.update(&serial.to_be_bytes());
    mac.update(&slot.to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 8];
    out.copy_from_slice(&full[..8]);
    out
}

impl BleCredential {
    /// The credential a badge emits for `serial` during `slot`.
    pub fn issue(key: &BleKey, serial: u64, slot: u32) -> Self {
        Self {
            version: BLE_VERSION,
            serial,
            slot,
            mac: compute_mac(key, BLE_VERSION, serial, slot),
        }
    }

    pub fn encode(&self) -> [u8; BLE_PAYLOAD_LEN] {
        let mut out = [0u8; BLE_PAYLOAD_LEN];
        out[0] = self.version;
        out[1..9].copy_from_slice(&self.serial.to_be_bytes());
        out[9..13].copy_from_slice(&self.slot.to_be_bytes());
        out[13..21].copy_from_slice(&self.mac);
        out
    }

    /// Parses service data. Total: any byte string gives a credential or an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, BleError> {
        if bytes.len() != BLE_PAYLOAD_LEN {
            return Err(BleError::WrongLength(bytes.len()));
        }
        if bytes[0] != BLE_VERSION {
            return Err(BleError::UnsupportedVersion(bytes[0]));
        }
        let mut serial = [0u8; 8];
        serial.copy_from_slice(&bytes[1..9]);
        let mut slot = [0u8; 4];
        slot.copy_from_slice(&bytes[9..13]);
        let mut mac = [0u8; 8];
        mac.copy_from_slice(&bytes[13..21]);
        Ok(Self {
            version: bytes[0],
            serial: u64::from_be_bytes(serial),
            slot: u32::from_be_bytes(slot),
            mac,
        })
    }

    /// Checks the MAC (constant time) and that the slot is within ±1 of the gate's slot.
    pub fn verify(&self, key: &BleKey, now_slot: u32) -> Result<(), BleError> {
        let expected = compute_mac(key, self.version, self.serial, self.slot);
        if !bool::from(expected.ct_eq(&self.mac)) {
            return Err(BleError::BadMac);
        }
        if self.slot.abs_diff(now_slot) > SLOT_TOLERANCE {
            return Err(BleError::StaleSlot {
                slot: self.slot,
                now_slot,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"event ble secret, 32 bytes long!";

    /// Computed independently with Python's `cryptography` HKDF and `hmac`.
    #[test]
    fn golden_payload_is_frozen() {
        let key = BleKey::derive(SECRET, 42);
        let slot = slot_at(1_796_083_200);
        assert_eq!(slot, 59_869_440);
        let cred = BleCredential::issue(&key, 42, slot);
        assert_eq!(
            hex::encode(key.0),
            "5bb080715912adf02ec312455538b80077878cc6f87dd359aee9e0c39432b557"
        );
        assert_eq!(
            hex::encode(cred.encode()),
            "01000000000000002a03918900ec841ce2446f2d37"
        );
    }

    #[test]
    fn round_trips_and_verifies_within_one_slot() {
        let key = BleKey::derive(SECRET, 7);
        let cred = BleCredential::issue(&key, 7, 1000);
        let back = BleCredential::decode(&cred.encode()).unwrap();
        assert_eq!(back, cred);
        for now in [999, 1000, 1001] {
            assert_eq!(back.verify(&key, now), Ok(()));
        }
        assert_eq!(
            back.verify(&key, 1002),
            Err(BleError::StaleSlot {
                slot: 1000,
                now_slot: 1002
            })
        );
        assert!(back.verify(&key, 998).is_err());
    }

    #[test]
    fn another_tickets_key_or_a_tampered_field_fails() {
        let key = BleKey::derive(SECRET, 7);
        let other = BleKey::derive(SECRET, 8);
        let cred = BleCredential::issue(&key, 7, 1000);
        assert_eq!(cred.verify(&other, 1000), Err(BleError::BadMac));
        let mut moved = cred;
        moved.slot = 1001; // replaying an old advert under a new slot
        assert_eq!(moved.verify(&key, 1001), Err(BleError::BadMac));
        let mut serial = cred;
        serial.serial = 8;
        assert_eq!(serial.verify(&other, 1000), Err(BleError::BadMac));
    }

    #[test]
    fn malformed_payloads_get_typed_errors() {
        assert_eq!(BleCredential::decode(&[]), Err(BleError::WrongLength(0)));
        assert_eq!(
            BleCredential::decode(&[1; 22]),
            Err(BleError::WrongLength(22))
        );
        let mut p = [0u8; 21];
        p[0] = 9;
        assert_eq!(
            BleCredential::decode(&p),
            Err(BleError::UnsupportedVersion(9))
        );
    }

    proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = BleCredential::decode(&bytes);
        }

        #[test]
        fn any_credential_round_trips(serial: u64, slot: u32) {
            let key = BleKey::derive(SECRET, serial);
            let cred = BleCredential::issue(&key, serial, slot);
            prop_assert_eq!(BleCredential::decode(&cred.encode()).unwrap(), cred);
            prop_assert_eq!(cred.verify(&key, slot), Ok(()));
        }
    }
}
