//! `POST /api/v1/auth/login`, `GET /api/v1/auth/me`, `GET|POST /api/v1/users`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{self, Auth, GlobalRole, Role, TOKEN_TTL_SECONDS};
use crate::http::error::Problem;
use crate::http::extract::Json;
use crate::service::AppState;
use crate::store::{self, ms_to_time};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires (900).
    pub expires_in: i64,
}

/// Exchanges e-mail and password for a short-lived bearer token. Limited to 10 attempts per
/// minute per e-mail and client address, 30 per minute per client address, 600 per minute in
/// all; 429 with `Retry-After` beyond.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "OK", body = LoginResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, Error> {
    let email = req.email.trim().to_lowercase();
    if let Err(retry_after) = state.login_limiter.check(&email, peer.ip()) {
        tracing::warn!(email = %email, ip = %peer.ip(), "login rate limit hit");
        return Err(Error::TooManyRequests { retry_after });
    }
    // A place in the hashing queue before any work: when it is full, refuse at once.
    let _place = state
        .login_limiter
        .enter()
        .map_err(|retry_after| Error::TooManyRequests { retry_after })?;
    let user = store::users::by_email(&state.db, &email).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let ok = crate::service::login::verify_password(req.password, hash).await?;
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        _ => {
            metrics::counter!("usher_logins_failed_total").increment(1);
            return Err(Error::Unauthorized("wrong e-mail or password"));
        }
    };
    state.login_limiter.reset(&email, peer.ip());
    let role = global_role(&user)?;
    let token = auth::issue_token(
        &state.master,
        user.id,
        &user.email,
        role,
        user.session_epoch,
    )?;
    tracing::info!(user.id = %user.id, "logged in");
    Ok(Json(LoginResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: TOKEN_TTL_SECONDS,
    }))
}

/// The role on all events a stored user has (`None`: roles per event only).
fn global_role(u: &store::users::UserRow) -> Result<Option<Role>, Error> {
    if u.events_only {
        return Ok(None);
    }
    Ok(Some(
        Role::parse(&u.role).ok_or_else(|| anyhow::anyhow!("bad role in database"))?,
    ))
}

/// A user's role on one event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantOut {
    pub event_id: Uuid,
    pub role: Role,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserOut {
    pub id: Uuid,
    pub email: String,
    /// The role on all events (`none`: only the roles in `grants`).
    pub role: GlobalRole,
    /// Roles on single events; on an event the higher of `role` and its grant counts.
    pub grants: Vec<GrantOut>,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

impl UserOut {
    pub fn from_row(
        u: store::users::UserRow,
        grants: Vec<store::users::GrantRow>,
    ) -> Result<Self, Error> {
        Ok(Self {
            id: u.id,
            role: global_role(&u)?.into(),
            grants: grants
                .into_iter()
                .map(|g| {
                    Ok(GrantOut {
                        event_id: g.event_id,
                        role: Role::parse(&g.role)
                            .ok_or_else(|| anyhow::anyhow!("bad grant role in database"))?,
                    })
                })
                .collect::<Result<_, Error>>()?,
            email: u.email,
            disabled: u.disabled,
            created_at: ms_to_time(u.created_at),
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    /// The role on all events (`none`: only the roles in `grants`).
    pub role: GlobalRole,
    pub grants: Vec<GrantOut>,
}

/// Who the token belongs to, and their roles.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = Me), (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json")))]
pub async fn me(auth: Auth) -> Json<Me> {
    Json(Me {
        id: auth.user_id,
        email: auth.email,
        role: auth.role.into(),
        grants: auth
            .grants
            .into_iter()
            .map(|(event_id, role)| GrantOut { event_id, role })
            .collect(),
    })
}

/// Lists users (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = super::Page<UserOut>), (status = 403, description = "Forbidden for this role or gate", body = Problem, content_type = "application/problem+json")))]
pub async fn list_users(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<super::Page<UserOut>>, Error> {
    auth.require(Role::Admin)?;
    let users = store::users::list(&state.db).await?;
    let mut grants: std::collections::HashMap<Uuid, Vec<store::users::GrantRow>> =
        std::collections::HashMap::new();
    for (user, g) in store::users::all_grants(&state.db).await? {
        grants.entry(user).or_default().push(g);
    }
    Ok(Json(super::Page {
        items: users
            .into_iter()
            .map(|u| {
                let g = grants.remove(&u.id).unwrap_or_default();
                UserOut::from_row(u, g)
            })
            .collect::<Result<_, _>>()?,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub email: String,
    /// At least 12 characters.
    pub password: String,
    /// The role on all events; `none` for a user who gets roles per event
    /// (`PUT /api/v1/users/{id}/events/{event}`).
    pub role: GlobalRole,
}

/// Creates a user (admin).
#[utoipa::path(post, path = "/api/v1/users", tag = "auth", security(("bearer" = [])), request_body = UserCreate,
    responses((status = 201, description = "Created", body = UserOut), (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn create_user(
    State(state): State<AppState>,
    auth: Auth,
    Json(req): Json<UserCreate>,
) -> Result<(StatusCode, Json<UserOut>), Error> {
    auth.require(Role::Admin)?;
    let user = crate::service::users::create(
        &state.db,
        &auth.actor(),
        &req.email,
        &req.password,
        req.role.role(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserOut::from_row(user, Vec::new())?),
    ))
}
