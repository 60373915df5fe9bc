//! `PATCH /api/v1/users/{id}` (role, disabled) and `POST /api/v1/auth/password` (one's own).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::http::api::auth::UserOut;
use crate::http::error::Problem;
use crate::http::extract::{Json, Path};
use crate::service::AppState;
use crate::service::users::{self, Change};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// Changes a user's role or disables/enables them (admin; not oneself). Their console
/// sessions end at once; bearer tokens within their 15 minutes.
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
        user = Some(users::change_by_id(&state.db, &actor, id, Change::Role(role)).await?);
    }
    if let Some(disabled) = req.disabled {
        user = Some(users::change_by_id(&state.db, &actor, id, Change::Disabled(disabled)).await?);
    }
    let user = user.ok_or(Error::NotFound("user"))?;
    Ok(Json(UserOut::from_row(user)?))
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
