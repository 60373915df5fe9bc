//! The supervisor PIN of an event: set by the organizer on the server, replicated to the gates
//! as an argon2id PHC string (the gate's configuration), checked offline at the gate before an
//! override or a badge reprint. The same functions hash on the server and verify on the gate.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Fewest and most digits of a PIN. Six digits at least: the hash is on every gate of the event,
/// so a short PIN would be found from a stolen replica in minutes.
pub const MIN_DIGITS: usize = 6;
pub const MAX_DIGITS: usize = 12;

/// Why a PIN is not acceptable as a new PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("a supervisor PIN is {MIN_DIGITS} to {MAX_DIGITS} digits")]
    Format,
    #[error("PIN hashing failed: {0}")]
    Hash(String),
}

/// Checks the form of a new PIN: digits only, [`MIN_DIGITS`]..=[`MAX_DIGITS`] of them.
pub fn validate(pin: &str) -> Result<(), PinError> {
    let ok =
        (MIN_DIGITS..=MAX_DIGITS).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit());
    if ok { Ok(()) } else { Err(PinError::Format) }
}

/// The argon2id PHC string of a valid PIN (blocking: tens of ms of CPU).
pub fn hash(pin: &str) -> Result<String, PinError> {
    validate(pin)?;
    let hashed: Result<PasswordHash, _> = Argon2::default().hash_password(pin.as_bytes());
    hashed
        .map(|h| h.to_string())
        .map_err(|e| PinError::Hash(e.to_string()))
}

/// Whether `pin` matches the PHC string `phc` (blocking). A hash that does not parse never
/// matches.
pub fn verify(pin: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(pin.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_verifies_against_its_hash_only() {
        assert_eq!(validate("12345"), Err(PinError::Format));
        assert_eq!(validate("12345a"), Err(PinError::Format));
        assert_eq!(validate("1234567890123"), Err(PinError::Format));
        let h = hash("246810").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("246810", &h));
        assert!(!verify("246811", &h));
        assert!(!verify("246810", "not a hash"));
    }
}
