//! `GET|POST /api/v1/api-keys`, `DELETE /api/v1/api-keys/{id}`: service API keys (admin).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Page;
use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::http::error::Problem;
use crate::http::extract::{Json, Path};
use crate::service::{AppState, api_keys};
use crate::store::api_keys::ApiKeyRow;
use crate::store::{self, ms_to_time};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCreate {
    /// What calls with it ("CRM sync", "badge station 2").
    pub name: String,
    /// The role it acts with.
    pub role: Role,
    /// Limit it to one event (absent: every event).
    #[serde(default)]
    pub event_id: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyOut {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub role: String,
    pub event_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<ApiKeyRow> for ApiKeyOut {
    fn from(k: ApiKeyRow) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            role: k.role,
            event_id: k.event_id,
            created_at: ms_to_time(k.created_at),
            last_used_at: k.last_used_at.map(ms_to_time),
            revoked_at: k.revoked_at.map(ms_to_time),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub key_info: ApiKeyOut,
    /// The key itself: send it as `Authorization: Bearer <key>`. Shown only this once.
    pub key: String,
}

/// Creates a service API key (admin). The key is in the answer and nowhere else.
#[utoipa::path(post, operation_id = "api_key_create", path = "/api/v1/api-keys", tag = "auth", security(("bearer" = [])),
    request_body = ApiKeyCreate,
    responses((status = 201, description = "Created; `key` is shown only now", body = ApiKeyCreated),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Unknown event", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<ApiKeyCreate>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), Error> {
    auth.require(Role::Admin)?;
    let created = api_keys::create(
        &state.db,
        &auth.actor(),
        &body.name,
        body.role,
        body.event_id,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            key_info: created.row.into(),
            key: created.key,
        }),
    ))
}

/// Every service API key, revoked ones too, without their secrets (admin).
#[utoipa::path(get, operation_id = "api_key_list", path = "/api/v1/api-keys", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The keys", body = Page<ApiKeyOut>),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Page<ApiKeyOut>>, Error> {
    auth.require(Role::Admin)?;
    let items = store::api_keys::list(&state.db)
        .await?
        .into_iter()
        .map(ApiKeyOut::from)
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Revokes a key at once (admin).
#[utoipa::path(delete, operation_id = "api_key_revoke", path = "/api/v1/api-keys/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No live key with this id", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    auth.require(Role::Admin)?;
    if store::api_keys::get(&state.db, id).await?.is_none() {
        return Err(Error::NotFound("api key"));
    }
    api_keys::revoke(&state.db, &auth.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
