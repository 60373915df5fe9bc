//! The organizer's bearer token (a session token, or a service API key `usk_…`) as an extractor:
//! `Auth` in a handler's arguments means "a valid token is required"; the role check is the
//! handler's first line (`auth.require_on(event_id, Role::Staff)` on an event,
//! `auth.require(Role::Admin)` for what spans all events).
//!
//! A session token is checked against the user as stored now, on every request: a disabled or
//! removed user, or one whose session epoch moved (any change of role, grant or password), is
//! refused with 401; the roles that count are the stored ones, not the token's.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::domain::auth::{self, Auth, Role};
use crate::domain::error::Error;
use crate::service::{AppState, api_keys, users};
use crate::store;

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if let Some(Authenticated(auth)) = parts.extensions.get::<Authenticated>() {
            return Ok(auth.clone());
        }
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
        let claims = auth::verify_token(&state.master, token)?;
        let user = store::users::session_user(&state.db, claims.user_id)
            .await?
            .filter(|u| !u.disabled && u.session_epoch == claims.session_epoch)
            .ok_or(Error::Unauthorized(
                "the session has ended (the account was changed, disabled or removed); log in again",
            ))?;
        users::auth_of(&state.db, &user).await
    }
}

/// The least role a request to `/api/v1` needs, decided from its method and path alone, before
/// any body is read: a caller without it is refused (401, 403, or 404 for an event they have no
/// role on) before the body is validated, so the answer never tells a caller who may not write
/// whether their body would have been accepted. The handler's own first line then checks the
/// exact role (this table is never stricter than a handler; `tests/api/authz.rs` holds both to
/// the OpenAPI document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Nothing decided here (login, one's own account, a route that takes gate credentials).
    Nothing,
    /// A role on all events.
    Global(Role),
    /// Any valid organizer credential (the handler narrows it, e.g. the event list).
    Anyone,
    /// A role on one event.
    On(Uuid, Role),
}

fn needs(method: &Method, path: &str) -> Needs {
    let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut segments = path.trim_start_matches('/').split('/');
    match segments.next() {
        Some("users" | "api-keys") => Needs::Global(Role::Admin),
        Some("events") => {
            let Some(event) = segments.next() else {
                return if write {
                    Needs::Global(Role::Admin)
                } else {
                    Needs::Anyone
                };
            };
            let Ok(event) = Uuid::try_parse(event) else {
                return Needs::Nothing; // the handler's path extractor answers
            };
            let resource = segments.next();
            if !write {
                return Needs::On(event, Role::Viewer);
            }
            match resource {
                // A gate may redeem with its own credential; the handler's extractor decides.
                Some("redeem") => Needs::Nothing,
                None | Some("gates" | "zones" | "webhooks" | "supervisor-pin") => {
                    Needs::On(event, Role::Admin)
                }
                Some(_) => Needs::On(event, Role::Staff),
            }
        }
        _ => Needs::Nothing,
    }
}

/// Middleware on `/api/v1` applying [`needs`]; the caller it authenticated is kept in the
/// request, so the handler's `Auth` does not look the user up again.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let need = needs(req.method(), req.uri().path());
    if need == Needs::Nothing {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let auth = match Auth::from_request_parts(&mut parts, &state).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let decided = match need {
        Needs::Nothing | Needs::Anyone => Ok(()),
        Needs::Global(min) => auth.require(min),
        Needs::On(event, min) => auth.require_on(event, min),
    };
    if let Err(e) = decided {
        return e.into_response();
    }
    parts.extensions.insert(Authenticated(auth));
    next.run(Request::from_parts(parts, body)).await
}

/// The caller [`guard`] authenticated for this request.
#[derive(Debug, Clone)]
struct Authenticated(Auth);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_role_is_read_from_method_and_path() {
        let e = Uuid::now_v7();
        let on = |m: Method, rest: &str| needs(&m, &format!("/events/{e}{rest}"));
        assert_eq!(on(Method::GET, ""), Needs::On(e, Role::Viewer));
        assert_eq!(
            on(Method::GET, "/participants/x/ticket.png"),
            Needs::On(e, Role::Viewer),
            "the handler narrows reads"
        );
        assert_eq!(on(Method::POST, "/participants"), Needs::On(e, Role::Staff));
        assert_eq!(on(Method::PUT, "/alert-rules"), Needs::On(e, Role::Staff));
        assert_eq!(on(Method::PATCH, ""), Needs::On(e, Role::Admin));
        assert_eq!(on(Method::POST, "/gates"), Needs::On(e, Role::Admin));
        assert_eq!(on(Method::DELETE, "/zones/z"), Needs::On(e, Role::Admin));
        assert_eq!(on(Method::POST, "/webhooks"), Needs::On(e, Role::Admin));
        assert_eq!(on(Method::POST, "/redeem"), Needs::Nothing);
        assert_eq!(needs(&Method::GET, "/events"), Needs::Anyone);
        assert_eq!(needs(&Method::POST, "/events"), Needs::Global(Role::Admin));
        assert_eq!(needs(&Method::GET, "/events/not-an-id"), Needs::Nothing);
        assert_eq!(needs(&Method::GET, "/users"), Needs::Global(Role::Admin));
        assert_eq!(
            needs(&Method::PUT, &format!("/users/u/events/{e}")),
            Needs::Global(Role::Admin)
        );
        assert_eq!(
            needs(&Method::DELETE, "/api-keys/k"),
            Needs::Global(Role::Admin)
        );
        assert_eq!(needs(&Method::POST, "/auth/login"), Needs::Nothing);
        assert_eq!(needs(&Method::GET, "/auth/me"), Needs::Nothing);
    }
}
