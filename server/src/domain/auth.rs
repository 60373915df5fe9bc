//! Organizer authentication: argon2id passwords, HS256 bearer tokens, roles.
//!
//! Roles are ordered `viewer < staff < admin`; each route states the least role it needs:
//! viewers read (never a ticket credential), staff manage participants, imports and tickets,
//! admins manage an event's gates, zones and webhooks; creating events and managing users takes
//! an admin on all events. A user holds a role on all events, roles on single events, or both;
//! their role on an event is the highest of the two ([`Auth::role_on`]).
//!
//! Tokens are short-lived (15 minutes) and carry the user's *session epoch*: every request
//! compares it with the user as stored now, and any change to the user (role, grant, disabling,
//! password, removal) bumps it, so a changed user's tokens end on their next request.

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

/// A user's role on all events as the API shows and takes it: `none` for a user who only has
/// roles on single events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GlobalRole {
    None,
    Viewer,
    Staff,
    Admin,
}

impl GlobalRole {
    pub fn role(self) -> Option<Role> {
        match self {
            GlobalRole::None => None,
            GlobalRole::Viewer => Some(Role::Viewer),
            GlobalRole::Staff => Some(Role::Staff),
            GlobalRole::Admin => Some(Role::Admin),
        }
    }

    pub fn parse(s: &str) -> Option<GlobalRole> {
        if s == "none" {
            Some(GlobalRole::None)
        } else {
            Role::parse(s).map(GlobalRole::from)
        }
    }
}

impl From<Role> for GlobalRole {
    fn from(r: Role) -> Self {
        Some(r).into()
    }
}

impl From<Option<Role>> for GlobalRole {
    fn from(r: Option<Role>) -> Self {
        match r {
            None => GlobalRole::None,
            Some(Role::Viewer) => GlobalRole::Viewer,
            Some(Role::Staff) => GlobalRole::Staff,
            Some(Role::Admin) => GlobalRole::Admin,
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

/// An authenticated organizer (from a bearer token, a console session or a service key), with
/// their roles as stored when the request came in.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user_id: Uuid,
    pub email: String,
    /// The role on every event; `None`: only the roles in `grants`.
    pub role: Option<Role>,
    /// Roles on single events.
    pub grants: Vec<(Uuid, Role)>,
}

impl Auth {
    /// Fails with 403 unless the user's role on *all* events is at least `min` (creating
    /// events, managing users and service keys).
    pub fn require(&self, min: Role) -> Result<(), Error> {
        if self.role >= Some(min) {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    /// The user's role on `event`: the higher of their role on all events and their grant on
    /// this one.
    pub fn role_on(&self, event: Uuid) -> Option<Role> {
        let grant = self
            .grants
            .iter()
            .filter(|(e, _)| *e == event)
            .map(|(_, r)| *r)
            .max();
        self.role.max(grant)
    }

    /// Whether the user's role on `event` is at least `min`.
    pub fn can_on(&self, event: Uuid, min: Role) -> bool {
        self.role_on(event) >= Some(min)
    }

    /// Fails unless the user's role on `event` is at least `min`: 404 when they have no role on
    /// it at all (the event is not theirs to know of), 403 when the role is too low.
    pub fn require_on(&self, event: Uuid, min: Role) -> Result<(), Error> {
        match self.role_on(event) {
            None => Err(Error::NotFound("event")),
            Some(r) if r >= min => Ok(()),
            Some(_) => Err(Error::Forbidden),
        }
    }

    /// The events the user may see: `None` for all of them, else those with a grant.
    pub fn visible_events(&self) -> Option<Vec<Uuid>> {
        if self.role.is_some() {
            return None;
        }
        let mut ids: Vec<Uuid> = self.grants.iter().map(|(e, _)| *e).collect();
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    }

    /// The highest role the user holds anywhere (what the console's menus offer).
    pub fn highest(&self) -> Option<Role> {
        self.role.max(self.grants.iter().map(|(_, r)| *r).max())
    }

    pub fn actor(&self) -> Actor {
        Actor {
            id: Some(self.user_id),
            name: self.email.clone(),
        }
    }
}

/// What a valid bearer token says: whose it is and the session epoch it was issued in. The
/// caller checks both against the user as stored now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub user_id: Uuid,
    pub session_epoch: i64,
}

/// The user a bearer token names, if its signature and expiry hold now.
pub fn verify_token(master: &MasterKey, token: &str) -> Result<TokenClaims, Error> {
    let now = super::now_ms() / 1000;
    let claims = jwt::decode(master.session_key(), token.trim(), now).map_err(|e| {
        tracing::debug!(error = %e, "bearer token rejected");
        match e {
            jwt::JwtError::Expired => Error::Unauthorized("the token has expired; log in again"),
            _ => Error::Unauthorized("the token is invalid; log in again"),
        }
    })?;
    Ok(TokenClaims {
        user_id: claims.sub,
        session_epoch: claims.epoch,
    })
}

/// Issues a token for a user in their current session epoch; `role` is informational (the
/// roles that count are read from the store on every request).
pub fn issue_token(
    master: &MasterKey,
    user_id: Uuid,
    email: &str,
    role: Option<Role>,
    session_epoch: i64,
) -> Result<String, Error> {
    let now = super::now_ms() / 1000;
    let claims = jwt::Claims {
        sub: user_id,
        email: email.to_owned(),
        role: role.map_or("none", Role::as_str).to_owned(),
        iat: now,
        exp: now + TOKEN_TTL_SECONDS,
        epoch: session_epoch,
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
            role: Some(Role::Staff),
            grants: vec![],
        };
        assert!(auth.require(Role::Viewer).is_ok());
        assert!(auth.require(Role::Staff).is_ok());
        assert!(matches!(auth.require(Role::Admin), Err(Error::Forbidden)));
    }

    #[test]
    fn the_role_on_an_event_is_the_higher_of_global_and_grant() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut auth = Auth {
            user_id: Uuid::nil(),
            email: "a".into(),
            role: None,
            grants: vec![(a, Role::Staff)],
        };
        assert_eq!(auth.role_on(a), Some(Role::Staff));
        assert_eq!(auth.role_on(b), None);
        assert!(matches!(
            auth.require_on(b, Role::Viewer),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            auth.require_on(a, Role::Admin),
            Err(Error::Forbidden)
        ));
        assert!(auth.require_on(a, Role::Staff).is_ok());
        assert!(matches!(auth.require(Role::Viewer), Err(Error::Forbidden)));
        assert_eq!(auth.visible_events(), Some(vec![a]));
        auth.role = Some(Role::Viewer);
        assert_eq!(auth.role_on(b), Some(Role::Viewer));
        assert_eq!(auth.role_on(a), Some(Role::Staff));
        assert_eq!(auth.visible_events(), None);
        auth.role = Some(Role::Admin);
        assert_eq!(auth.role_on(a), Some(Role::Admin));
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
