//! Organizer authentication: argon2id passwords, HS256 bearer tokens, roles, login rate limit.
//!
//! Roles are ordered `viewer < staff < admin`; each route states the least role it needs:
//! viewers read, staff manage participants, imports and tickets, admins manage events, gates and
//! users. Tokens are stateless and short-lived (15 minutes), so a disabled user keeps access at
//! most that long.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::jwt;
use crate::state::AppState;

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
    pub fn require(&self, min: Role) -> Result<(), ApiError> {
        if self.role >= min {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            id: Some(self.user_id),
            name: self.email.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "send `Authorization: Bearer <token>`; get a token from POST /api/v1/auth/login",
            ))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let now = crate::store::now_ms() / 1000;
        let claims = jwt::decode(state.master.session_key(), token.trim(), now).map_err(|e| {
            tracing::debug!(error = %e, "bearer token rejected");
            match e {
                jwt::JwtError::Expired => {
                    ApiError::Unauthorized("the token has expired; log in again")
                }
                _ => ApiError::Unauthorized("the token is invalid; log in again"),
            }
        })?;
        let role = Role::parse(&claims.role)
            .ok_or(ApiError::Unauthorized("the token is invalid; log in again"))?;
        Ok(Auth {
            user_id: claims.sub,
            email: claims.email,
            role,
        })
    }
}

/// Issues a token for a user.
pub fn issue_token(
    state: &AppState,
    user_id: Uuid,
    email: &str,
    role: Role,
) -> Result<String, ApiError> {
    let now = crate::store::now_ms() / 1000;
    let claims = jwt::Claims {
        sub: user_id,
        email: email.to_owned(),
        role: role.as_str().to_owned(),
        iat: now,
        exp: now + TOKEN_TTL_SECONDS,
    };
    jwt::encode(state.master.session_key(), &claims).map_err(|e| ApiError::Internal(e.into()))
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
    let bytes = crate::crypto::random_bytes::<20>()?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect())
}

/// In-memory fixed-window limiter for login attempts per (e-mail, client IP).
#[derive(Debug)]
pub struct LoginLimiter {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<(String, IpAddr), (Instant, u32)>>,
}

impl LoginLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt; `Err(seconds)` tells how long until the next one is allowed.
    pub fn check(&self, email: &str, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() > 10_000 {
            let window = self.window;
            entries.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = entries.entry((email.to_owned(), ip)).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Forgets the attempts of a successful login.
    pub fn reset(&self, email: &str, ip: IpAddr) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.remove(&(email.to_owned(), ip));
    }
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
        assert!(matches!(
            auth.require(Role::Admin),
            Err(ApiError::Forbidden)
        ));
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
    fn limiter_allows_max_per_window() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(l.check("a", ip).is_ok());
        }
        assert!(l.check("a", ip).is_err());
        assert!(l.check("b", ip).is_ok());
        l.reset("a", ip);
        assert!(l.check("a", ip).is_ok());
    }

    #[test]
    fn random_passwords_differ() {
        let a = random_password().unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, random_password().unwrap());
    }
}
