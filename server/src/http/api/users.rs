//! `PATCH|DELETE /api/v1/users/{id}` (role on all events, disabled; removal),
//! `PUT|DELETE /api/v1/users/{id}/events/{event}` (a role on one event) and
//! `POST /api/v1/auth/password` (one's own). Every change ends the user's sessions at once.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Auth, GlobalRole, Role};
use crate::http::api::auth::UserOut;
use crate::http::error::Problem;
use crate::http::extract::{Json, Path};
use crate::service::AppState;
use crate::service::users::{self, Change};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// The role on all events (`none`: roles per event only).
    #[serde(default)]
    pub role: Option<GlobalRole>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// A user's stored state as the API shows it.
async fn user_out(state: &AppState, user: crate::store::users::UserRow) -> Result<UserOut, Error> {
    let grants = crate::store::users::grants(&state.db, user.id).await?;
    UserOut::from_row(user, grants)
}

/// Changes a user's role on all events or disables/enables them (admin on all events; not
/// oneself). Their bearer tokens and console sessions end at once.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")), request_body = UserPatch,
    responses((status = 200, description = "OK", body = UserOut),
              (status = 403, description = "Forbidden for this role", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn update_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    Json(req): Json<UserPatch>,
) -> Result<Json<UserOut>, Error> {
    auth.require(Role::Admin)?;
    let actor = auth.actor();
    if req.role.is_none() && req.disabled.is_none() {
        return Err(Error::validation("role", "send `role` or `disabled`"));
    }
    let mut user = None;
    if let Some(role) = req.role {
        user = Some(users::change_by_id(&state.db, &actor, id, Change::Role(role.role())).await?);
    }
    if let Some(disabled) = req.disabled {
        user = Some(users::change_by_id(&state.db, &actor, id, Change::Disabled(disabled)).await?);
    }
    let user = user.ok_or(Error::NotFound("user"))?;
    Ok(Json(user_out(&state, user).await?))
}

/// Removes a user (admin on all events; not oneself). Their sessions end at once.
#[utoipa::path(delete, operation_id = "user_delete", path = "/api/v1/users/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 204, description = "Removed"),
              (status = 403, description = "Forbidden for this role", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "That is you", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    auth.require(Role::Admin)?;
    users::delete(&state.db, &auth.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A role on one event.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub role: Role,
}

/// Grants a user a role on one event, replacing an earlier one there (admin on all events). On
/// the event the higher of this and their role on all events counts. Their sessions end at once.
#[utoipa::path(put, operation_id = "user_grant_put", path = "/api/v1/users/{id}/events/{event}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id"), ("event" = Uuid, Path, description = "Event id")),
    request_body = GrantBody,
    responses((status = 200, description = "The user with their grants", body = UserOut),
              (status = 403, description = "Forbidden for this role", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such user or event", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn put_grant(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, event_id)): Path<(Uuid, Uuid)>,
    Json(req): Json<GrantBody>,
) -> Result<Json<UserOut>, Error> {
    auth.require(Role::Admin)?;
    users::grant(&state.db, &auth.actor(), id, event_id, req.role).await?;
    let user = crate::store::users::by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound("user"))?;
    Ok(Json(user_out(&state, user).await?))
}

/// Takes a user's role on one event away (admin on all events). Their sessions end at once.
#[utoipa::path(delete, operation_id = "user_grant_delete", path = "/api/v1/users/{id}/events/{event}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id"), ("event" = Uuid, Path, description = "Event id")),
    responses((status = 204, description = "Taken away"),
              (status = 403, description = "Forbidden for this role", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "The user has no role on this event", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_grant(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, event_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    auth.require(Role::Admin)?;
    users::revoke_grant(&state.db, &auth.actor(), id, event_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    /// At least 12 characters.
    pub new_password: String,
}

/// Changes the caller's own password (the current one is required).
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 204, description = "Changed"),
              (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn change_password(
    State(state): State<AppState>,
    auth: Auth,
    Json(req): Json<PasswordChange>,
) -> Result<StatusCode, Error> {
    users::change_own_password(
        &state.db,
        auth.user_id,
        &req.current_password,
        &req.new_password,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
