//! The organizer HTTP API (`/api/v1`, DESIGN §6), health endpoints, metrics and the OpenAPI
//! document.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::extract::Json;
use crate::state::AppState;
use crate::store;
use crate::store::events::EventRow;

pub mod auth;
pub mod events;
pub mod gates;
pub mod import;
pub mod participants;

/// A page of a list: `{"items": [...], "next_cursor": null | "..."}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `?cursor=&limit=` of list endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<u32>,
}

impl PageParams {
    pub fn after(&self) -> Result<Option<Uuid>, ApiError> {
        self.cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| {
                Uuid::parse_str(c).map_err(|_| {
                    ApiError::bad_request(Some("cursor"), "cursor is not one this server issued")
                })
            })
            .transpose()
    }

    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=1000) => Ok(i64::from(n)),
            Some(_) => Err(ApiError::bad_request(
                Some("limit"),
                "limit must be between 1 and 1000",
            )),
        }
    }
}

/// Builds a page from `limit + 1` fetched rows.
pub fn page<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    id: impl Fn(&R) -> Uuid,
    map: impl Fn(R) -> Result<T, ApiError>,
) -> Result<Page<T>, ApiError> {
    let limit = usize::try_from(limit).unwrap_or(100);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| id(r).to_string())
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(map).collect::<Result<_, _>>()?,
        next_cursor,
    })
}

/// The event named in the path, or 404.
pub async fn load_event(state: &AppState, event_id: Uuid) -> Result<EventRow, ApiError> {
    store::events::get(&state.db, event_id)
        .await?
        .ok_or(ApiError::NotFound("event"))
}

/// Trims a text field; empty means absent.
pub fn clean(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Checks a required text field: trimmed, non-empty, at most `max` characters.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::validation(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if v.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(v.to_owned())
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/me", get(auth::me))
        .route("/users", get(auth::list_users).post(auth::create_user))
        .route("/events", get(events::list).post(events::create))
        .route(
            "/events/{event}",
            get(events::get)
                .patch(events::update)
                .delete(events::delete),
        )
        .route("/events/{event}/keys", get(events::keys))
        .route(
            "/events/{event}/participants",
            get(participants::list).post(participants::create),
        )
        .route(
            "/events/{event}/participants/import",
            post(import::import).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/events/{event}/participants/{id}",
            get(participants::get)
                .patch(participants::update)
                .delete(participants::erase),
        )
        .route(
            "/events/{event}/participants/{id}/ticket",
            post(participants::issue_ticket),
        )
        .route(
            "/events/{event}/participants/{id}/ticket/revoke",
            post(participants::revoke_ticket),
        )
        .route(
            "/events/{event}/participants/{id}/ticket.png",
            get(participants::ticket_png),
        )
        .route(
            "/events/{event}/participants/{id}/ticket.svg",
            get(participants::ticket_svg),
        )
        .route(
            "/events/{event}/gates",
            get(gates::list).post(gates::create),
        )
        .route(
            "/events/{event}/gates/{gate}",
            get(gates::get)
                .patch(gates::update)
                .delete(gates::deactivate),
        )
        .route(
            "/events/{event}/gates/{gate}/enrollments",
            post(gates::enroll),
        )
        .route("/events/{event}/redeem", post(crate::sync::redeem::redeem))
        .route(
            "/events/{event}/attendance",
            get(crate::sync::organizer::attendance),
        )
        .route(
            "/events/{event}/stream",
            get(crate::sync::stream::event_stream),
        )
        .route(
            "/events/{event}/checkins",
            get(crate::sync::organizer::list_checkins),
        )
        .route(
            "/events/{event}/conflicts",
            get(crate::sync::organizer::list_conflicts),
        )
        .route(
            "/events/{event}/conflicts/{id}/resolve",
            post(crate::sync::organizer::resolve_conflict),
        )
        .route(
            "/events/{event}/report",
            get(crate::sync::organizer::report),
        );

    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::index))
        .route("/api/openapi.json", get(openapi))
        .merge(crate::sync::router())
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(state)
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Up")))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "Database unreachable", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    match state.db.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let body = serde_json::json!({
                "type": "urn:usher:problem:unavailable",
                "title": "Service Unavailable",
                "status": 503,
                "detail": "the database is unreachable",
            });
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

async fn fallback() -> ApiError {
    ApiError::NotFound("route")
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "gate",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("gate credential from POST /sync/v1/enroll")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Usher API", description = "Organizer API (DESIGN §6) and the gate sync protocol (DESIGN §4). Errors are RFC 9457 problem+json."),
    paths(
        healthz, readyz,
        auth::login, auth::me, auth::list_users, auth::create_user,
        events::list, events::create, events::get, events::update, events::delete, events::keys,
        participants::list, participants::create, participants::get, participants::update,
        participants::erase, participants::issue_ticket, participants::revoke_ticket,
        participants::ticket_png, participants::ticket_svg,
        import::import,
        gates::list, gates::create, gates::get, gates::update, gates::deactivate, gates::enroll,
        crate::sync::capabilities, crate::sync::enroll::enroll, crate::sync::pull::changes,
        crate::sync::push::push, crate::sync::stream::gate_stream, crate::sync::stream::event_stream,
        crate::sync::redeem::redeem, crate::sync::organizer::attendance,
        crate::sync::organizer::list_checkins, crate::sync::organizer::list_conflicts,
        crate::sync::organizer::resolve_conflict, crate::sync::organizer::report,
    ),
    components(schemas(Problem, crate::error::FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Log in, users"),
        (name = "events", description = "Events and their keys"),
        (name = "participants", description = "Participants, tickets, CSV import"),
        (name = "gates", description = "Gates and enrollment codes"),
        (name = "ops", description = "Health"),
        (name = "sync", description = "What gates talk to (DESIGN §4)"),
        (name = "checkins", description = "Check-ins and the online redeem"),
        (name = "conflicts", description = "Conflicts found by the merge"),
        (name = "live", description = "Attendance, report, live stream"),
    )
)]
pub struct ApiDoc;
