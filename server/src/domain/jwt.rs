//! Minimal HS256 JSON Web Tokens for the organizer API's bearer tokens.
//!
//! Why not the `jsonwebtoken` crate: its crypto backends pull in rsa, p256, p384 and a second
//! ed25519-dalek for algorithms we never use, and it leaves algorithm choice to configuration.
//! We need exactly one algorithm with a server-held key, so this module does HS256 with the
//! `hmac`/`sha2`/`base64` crates already in the tree: the header is pinned (`alg` must be
//! `HS256`, so `none` and algorithm-confusion tokens are refused), the MAC is compared in constant
//! time (`Mac::verify_slice`), and `exp` is always checked.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The fixed header: `{"alg":"HS256","typ":"JWT"}`.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Claims of an organizer session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    /// User e-mail, for audit lines without a lookup.
    pub email: String,
    /// `admin`, `staff` or `viewer`.
    pub role: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// The user's session epoch when the token was issued; a token whose epoch differs from
    /// the stored one is refused.
    #[serde(default)]
    pub epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is not three base64url parts")]
    Malformed,
    #[error("token algorithm is not HS256")]
    WrongAlgorithm,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

fn mac(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key length"),
    }
}

/// Signs `claims` into a compact JWT.
pub fn encode(key: &[u8], claims: &Claims) -> Result<String, serde_json::Error> {
    let payload = serde_json::to_vec(claims)?;
    let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
    let sig = signature(key, &signing_input);
    Ok(format!("{signing_input}.{sig}"))
}

/// The base64url HS256 signature of a JWS signing input (`header.payload`).
fn signature(key: &[u8], signing_input: &str) -> String {
    let mut m = mac(key);
    m.update(signing_input.as_bytes());
    B64.encode(m.finalize().into_bytes())
}

/// Verifies signature, algorithm and expiry (`now` in unix seconds) and returns the claims.
pub fn decode(key: &[u8], token: &str, now: i64) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if header.alg != "HS256" {
        return Err(JwtError::WrongAlgorithm);
    }
    let sig = B64.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut m = mac(key);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    m.verify_slice(&sig).map_err(|_| JwtError::BadSignature)?;
    let claims: Claims = B64
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if claims.exp <= now {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Uuid::nil(),
            email: "a@b".into(),
            role: "admin".into(),
            iat: 1000,
            exp,
            epoch: 3,
        }
    }

    #[test]
    fn round_trips() {
        let token = encode(b"k", &claims(2000)).unwrap();
        assert_eq!(decode(b"k", &token, 1500).unwrap(), claims(2000));
    }

    #[test]
    fn matches_an_independent_hs256_implementation() {
        // RFC 7515 A.1 style check: recompute the MAC over header.payload by hand.
        let token = encode(b"secret", &claims(2000)).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut m = mac(b"secret");
        m.update(input.as_bytes());
        assert_eq!(B64.encode(m.finalize().into_bytes()), sig);
        assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    }

    /// The published HS256 example of RFC 7515, appendix A.1: its key, signing input and
    /// signature, byte for byte.
    #[test]
    fn signs_and_verifies_the_rfc_7515_a1_example() {
        const KEY: &str = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
        const INPUT: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
            eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        const SIGNATURE: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let key = B64.decode(KEY).unwrap();
        assert_eq!(signature(&key, INPUT), SIGNATURE);
        let token = format!("{INPUT}.{SIGNATURE}");
        // The signature verifies; the RFC's claims are not ours, so decoding stops there.
        assert_eq!(decode(&key, &token, 0), Err(JwtError::Malformed));
        assert_eq!(decode(b"other key", &token, 0), Err(JwtError::BadSignature));
    }

    #[test]
    fn rejects_expired_forged_and_other_algorithms() {
        let token = encode(b"k", &claims(2000)).unwrap();
        assert_eq!(decode(b"k", &token, 2000), Err(JwtError::Expired));
        assert_eq!(decode(b"other", &token, 1500), Err(JwtError::BadSignature));
        // Tamper with the payload: role escalation must fail the MAC.
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(2000);
        forged.role = "admin2".into();
        let p = B64.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], p, parts[2]);
        assert_eq!(decode(b"k", &tampered, 1500), Err(JwtError::BadSignature));
        // alg=none and friends are refused before any MAC is computed.
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), parts[1]);
        assert_eq!(decode(b"k", &none, 1500), Err(JwtError::WrongAlgorithm));
        assert_eq!(decode(b"k", "a.b", 1500), Err(JwtError::Malformed));
        assert_eq!(decode(b"k", "a.b.c.d", 1500), Err(JwtError::Malformed));
        assert_eq!(decode(b"k", "", 1500), Err(JwtError::Malformed));
    }
}
