//! The console's sign-in: a signed session cookie, checked against the user on every request,
//! and a CSRF token derived from it.
//!
//! The cookie is `usher_session=<user id>.<expiry>.<mac>`, where the MAC (HMAC-SHA256 under the
//! server's session key) covers the id, the expiry and a *stamp* of the user's current state
//! (password hash, role, disabled, session epoch). Each request loads the user by id and
//! recomputes the MAC: a disabled user, a changed role on all events or on one event (the epoch
//! moves with every grant) or a changed password ends every session at once, on every
//! server process (nothing is kept in memory, so several processes share sessions through the
//! database alone). The cookie is `HttpOnly; SameSite=Strict; Path=/`, and `Secure` when the
//! request came over TLS (a proxy's `X-Forwarded-Proto: https`).
//!
//! CSRF: every write from the console carries a token, `HMAC(key, "csrf" ‖ cookie)`, in the
//! form field `csrf` or the `X-CSRF-Token` header; the API refuses a cookie-authenticated write
//! without it. Bearer tokens are unaffected (a browser never sends them by itself).

use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::auth::Auth;
use crate::domain::crypto::MasterKey;
use crate::domain::error::Error;
use crate::service::AppState;
use crate::store;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The cookie's name.
pub const COOKIE: &str = "usher_session";
/// The header an htmx/fetch write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a console session lasts (12 hours: an event day).
pub const SESSION_TTL_SECONDS: i64 = 12 * 3600;

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct Session {
    pub auth: Auth,
    /// The token every write form carries.
    pub csrf: String,
    /// The password was generated: nothing but changing it is allowed.
    pub must_change_password: bool,
}

fn stamp(user: &store::users::SessionUser) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(user.password_hash.as_bytes());
    h.update([0]);
    h.update(user.role.as_bytes());
    h.update([u8::from(user.disabled), u8::from(user.events_only)]);
    h.update(user.session_epoch.to_be_bytes());
    h.finalize().to_vec()
}

fn mac(master: &MasterKey, parts: &[&[u8]]) -> Result<HmacSha256, Error> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(master.session_key())
        .map_err(|e| Error::Internal(anyhow::anyhow!("hmac key: {e}")))?;
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    Ok(m)
}

/// A new cookie value for `user`, valid for [`SESSION_TTL_SECONDS`].
pub fn issue(master: &MasterKey, user: &store::users::SessionUser) -> Result<String, Error> {
    let exp = crate::domain::now_ms() / 1000 + SESSION_TTL_SECONDS;
    let id = user.id.simple().to_string();
    let exp_s = exp.to_string();
    let tag = mac(
        master,
        &[
            b"session",
            id.as_bytes(),
            exp_s.as_bytes(),
            stamp(user).as_slice(),
        ],
    )?
    .finalize()
    .into_bytes();
    Ok(format!("{id}.{exp_s}.{}", B64.encode(tag)))
}

/// The CSRF token of a cookie value.
pub fn csrf_token(master: &MasterKey, cookie: &str) -> Result<String, Error> {
    let tag = mac(master, &[b"csrf", cookie.as_bytes()])?
        .finalize()
        .into_bytes();
    Ok(B64.encode(tag))
}

/// Whether `given` is the CSRF token of `cookie` (constant time).
pub fn csrf_ok(master: &MasterKey, cookie: &str, given: &str) -> bool {
    let Ok(given) = B64.decode(given.trim()) else {
        return false;
    };
    mac(master, &[b"csrf", cookie.as_bytes()]).is_ok_and(|m| m.verify_slice(&given).is_ok())
}

/// The session cookie's value in a request, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The session a cookie value stands for, checked against the user as stored now.
pub async fn verify(state: &AppState, cookie: &str) -> Result<Session, Error> {
    const LOST: Error = Error::Unauthorized("the session has ended; sign in again");
    let mut it = cookie.splitn(3, '.');
    let (Some(id), Some(exp_s), Some(tag)) = (it.next(), it.next(), it.next()) else {
        return Err(LOST);
    };
    let user_id = Uuid::try_parse(id).map_err(|_| LOST)?;
    let exp: i64 = exp_s.parse().map_err(|_| LOST)?;
    if exp < crate::domain::now_ms() / 1000 {
        return Err(LOST);
    }
    let tag = B64.decode(tag).map_err(|_| LOST)?;
    let user = store::users::session_user(&state.db, user_id)
        .await?
        .ok_or(LOST)?;
    if user.disabled {
        return Err(LOST);
    }
    mac(
        &state.master,
        &[
            b"session",
            id.as_bytes(),
            exp_s.as_bytes(),
            stamp(&user).as_slice(),
        ],
    )?
    .verify_slice(&tag)
    .map_err(|_| LOST)?;
    let auth = crate::service::users::auth_of(&state.db, &user).await?;
    Ok(Session {
        auth,
        csrf: csrf_token(&state.master, cookie)?,
        must_change_password: user.must_change_password,
    })
}

/// `Set-Cookie` for a new session (or, with `None`, one that removes it).
pub fn set_cookie(headers: &HeaderMap, value: Option<&str>) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL_SECONDS}{secure}"
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// The API's cookie authentication (for the console's own calls to `/api/v1`): the session
/// must be valid, a write must carry the CSRF header, and a user who must change their
/// password may do nothing else.
pub async fn api_auth(parts: &Parts, state: &AppState, cookie: &str) -> Result<Auth, Error> {
    let session = verify(state, cookie).await?;
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let given = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !csrf_ok(&state.master, cookie, given) {
            return Err(Error::Forbidden);
        }
    }
    if session.must_change_password {
        return Err(Error::Unauthorized(
            "change the generated password first (sign in to the console at /)",
        ));
    }
    Ok(session.auth)
}
