//! Organizer authentication: argon2id passwords, HS256 bearer tokens, roles.
//!
//! Roles are ordered `viewer < staff < admin`; each route states the least role it needs:
//! viewers read, staff manage participants, imports and tickets, admins manage events, gates and
//! users. Tokens are stateless and short-lived (15 minutes), so a disabled user keeps access at
//! most that long.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::crypto::MasterKey;
use super::error::Error;
use super::jwt;

/// Token lifetime in seconds.
pub const TOKEN_TTL_SECONDS: i64 = 900;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Staff,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Staff => "staff",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "staff" => Some(Role::Staff),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who performed a write, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: Option<Uuid>,
    pub name: String,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            id: None,
            name: "system".into(),
        }
    }
}

/// An authenticated organizer (from the bearer token).
#[derive(Debug, Clone)]
pub struct Auth {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
}

impl Auth {
    /// Fails with 403 unless the user's role is at least `min`.
    pub fn require(&self, min: Role) -> Result<(), Error> {
        if self.role >= min {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            id: Some(self.user_id),
            name: self.email.clone(),
        }
    }
}

/// The organizer a bearer token names, if it is valid now.
pub fn verify_token(master: &MasterKey, token: &str) -> Result<Auth, Error> {
    let now = super::now_ms() / 1000;
    let claims = jwt::decode(master.session_key(), token.trim(), now).map_err(|e| {
        tracing::debug!(error = %e, "bearer token rejected");
        match e {
            jwt::JwtError::Expired => Error::Unauthorized("the token has expired; log in again"),
            _ => Error::Unauthorized("the token is invalid; log in again"),
        }
    })?;
    let role = Role::parse(&claims.role)
        .ok_or(Error::Unauthorized("the token is invalid; log in again"))?;
    Ok(Auth {
        user_id: claims.sub,
        email: claims.email,
        role,
    })
}

/// Issues a token for a user.
pub fn issue_token(
    master: &MasterKey,
    user_id: Uuid,
    email: &str,
    role: Role,
) -> Result<String, Error> {
    let now = super::now_ms() / 1000;
    let claims = jwt::Claims {
        sub: user_id,
        email: email.to_owned(),
        role: role.as_str().to_owned(),
        iat: now,
        exp: now + TOKEN_TTL_SECONDS,
    };
    jwt::encode(master.session_key(), &claims).map_err(|e| Error::Internal(e.into()))
}

/// argon2id PHC string of a password (blocking: ~20 ms of CPU; call from `spawn_blocking`).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let hash: Result<PasswordHash, _> = Argon2::default().hash_password(password.as_bytes());
    hash.map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))
}

/// Checks a password against a PHC string (blocking). Unparseable hashes never verify.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// A real argon2id hash of a throw-away password, verified against when the e-mail is unknown
/// so that a failed login costs the same time either way.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("usher-dummy-password").unwrap_or_default())
}

/// A random password people can type: 20 characters of Crockford base32 (100 bits).
pub fn random_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let bytes = super::crypto::random_bytes::<20>()?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Staff && Role::Staff < Role::Admin);
        let auth = Auth {
            user_id: Uuid::nil(),
            email: "a".into(),
            role: Role::Staff,
        };
        assert!(auth.require(Role::Viewer).is_ok());
        assert!(auth.require(Role::Staff).is_ok());
        assert!(matches!(auth.require(Role::Admin), Err(Error::Forbidden)));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn random_passwords_differ() {
        let a = random_password().unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, random_password().unwrap());
    }
}
