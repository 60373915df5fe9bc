//! The organizer's bearer token (a session token, or a service API key `usk_…`) as an extractor: `Auth` in a handler's arguments means "a valid
//! token is required"; the role check is the handler's first line (`auth.require(Role::Staff)`).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::domain::auth::{self, Auth};
use crate::domain::error::Error;
use crate::service::{AppState, api_keys};

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        // The console's own calls: the session cookie (with CSRF on writes), when no bearer
        // token is sent.
        if parts.headers.get(header::AUTHORIZATION).is_none()
            && let Some(cookie) = crate::http::web::session::cookie_value(&parts.headers)
        {
            return crate::http::web::session::api_auth(parts, state, &cookie).await;
        }
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(Error::Unauthorized(
                "send `Authorization: Bearer <token>`; get a token from POST /api/v1/auth/login",
            ))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(Error::Unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let token = token.trim();
        if token.starts_with(api_keys::PREFIX) {
            // Inside `/api/v1` the router sees the path without its prefix; scope checks use
            // the path as sent.
            let path = parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or_else(|| parts.uri.path().to_owned(), |u| u.path().to_owned());
            return api_keys::authenticate(&state.db, token, &path).await;
        }
        auth::verify_token(&state.master, token)
    }
}
