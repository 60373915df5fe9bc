//! HTTP: the router, middleware, extractors, the problem+json mapping and the OpenAPI document.
//! The top layer: it calls `service` (use cases) and, for plain reads, `store`; nothing below
//! imports it.
//!
//! # Layout
//! - [`api`]: `/api/v1`, the organizer API, one module per resource.
//! - [`sync`]: `/sync/v1`, what gates talk to (DESIGN §4).
//! - [`auth`], [`gate_auth`]: the organizer's and the gate's bearer credentials as extractors.
//! - [`error`]: domain errors as problem+json.
//! - [`csv`]: CSV for spreadsheets, safe from formula injection.
//! - [`extract`]: `Json`/`Path`/`Query` whose rejections are problem+json naming the field.
//! - [`ops`]: health, readiness, Prometheus metrics and the request-metrics middleware.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use utoipa::OpenApi;

use crate::domain::error::Error;
use crate::service::AppState;
use error::Problem;
use extract::Json;

pub mod api;
pub mod auth;
pub mod csv;
pub mod error;
pub mod extract;
pub mod gate_auth;
pub mod ops;
pub mod sync;
pub mod web;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/login", post(api::auth::login))
        .route("/auth/me", get(api::auth::me))
        .route(
            "/api-keys",
            get(api::api_keys::list).post(api::api_keys::create),
        )
        .route(
            "/api-keys/{id}",
            axum::routing::delete(api::api_keys::revoke),
        )
        .route(
            "/users",
            get(api::auth::list_users).post(api::auth::create_user),
        )
        .route("/events", get(api::events::list).post(api::events::create))
        .route(
            "/events/{event}",
            get(api::events::get)
                .patch(api::events::update)
                .delete(api::events::delete),
        )
        .route("/events/{event}/keys", get(api::events::keys))
        .route(
            "/events/{event}/participants",
            get(api::participants::list).post(api::participants::create),
        )
        .route(
            "/events/{event}/participants/import",
            post(api::import::import).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/events/{event}/participants/{id}",
            get(api::participants::get)
                .patch(api::participants::update)
                .delete(api::participants::erase),
        )
        .route(
            "/events/{event}/participants/{id}/export",
            get(api::participants::export_personal_data),
        )
        .route(
            "/events/{event}/participants/{id}/ticket",
            post(api::participants::issue_ticket),
        )
        .route(
            "/events/{event}/participants/{id}/ticket/revoke",
            post(api::participants::revoke_ticket),
        )
        .route(
            "/events/{event}/participants/{id}/ticket.png",
            get(api::participants::ticket_png),
        )
        .route(
            "/events/{event}/participants/{id}/ticket.svg",
            get(api::participants::ticket_svg),
        )
        .route(
            "/events/{event}/participants/{id}/ticket.pdf",
            get(api::ticket_docs::pdf),
        )
        .route(
            "/events/{event}/tickets.pdf",
            get(api::ticket_docs::event_pdf),
        )
        .route(
            "/events/{event}/participants/{id}/ticket.pkpass",
            get(api::ticket_docs::pkpass),
        )
        .route(
            "/events/{event}/participants/{id}/wallet/google",
            get(api::ticket_docs::google),
        )
        .route(
            "/events/{event}/gates",
            get(api::gates::list).post(api::gates::create),
        )
        .route(
            "/events/{event}/gates/{gate}",
            get(api::gates::get)
                .patch(api::gates::update)
                .delete(api::gates::deactivate),
        )
        .route(
            "/events/{event}/gates/{gate}/enrollments",
            post(api::gates::enroll),
        )
        .route(
            "/events/{event}/zones",
            get(api::zones::list).post(api::zones::create),
        )
        .route(
            "/events/{event}/zones/{zone}",
            get(api::zones::get)
                .patch(api::zones::update)
                .delete(api::zones::delete),
        )
        .route("/events/{event}/redeem", post(api::redeem::redeem))
        .route("/events/{event}/attendance", get(api::checkins::attendance))
        .route("/events/{event}/stream", get(sync::stream::event_stream))
        .route(
            "/events/{event}/checkins",
            get(api::checkins::list_checkins),
        )
        .route(
            "/events/{event}/conflicts",
            get(api::checkins::list_conflicts),
        )
        .route(
            "/events/{event}/conflicts/{id}/resolve",
            post(api::checkins::resolve_conflict),
        )
        .route("/events/{event}/report", get(api::checkins::report))
        .route(
            "/events/{event}/exports/participants",
            get(api::exports::participants),
        )
        .route(
            "/events/{event}/exports/checkins",
            get(api::exports::checkins),
        )
        .route(
            "/events/{event}/webhooks",
            get(api::webhooks::list).post(api::webhooks::create),
        )
        .route(
            "/events/{event}/webhooks/{id}",
            get(api::webhooks::get)
                .patch(api::webhooks::update)
                .delete(api::webhooks::delete),
        )
        .route(
            "/events/{event}/webhooks/{id}/rotate",
            post(api::webhooks::rotate),
        )
        .route(
            "/events/{event}/webhooks/{id}/test",
            post(api::webhooks::test),
        )
        .route(
            "/events/{event}/webhooks/{id}/deliveries",
            get(api::webhooks::deliveries),
        )
        .route("/events/{event}/tickets/send", post(api::mail::send))
        .route("/events/{event}/mails", get(api::mail::list))
        .route(
            "/events/{event}/mail-template",
            get(api::mail::get_template)
                .put(api::mail::put_template)
                .delete(api::mail::reset_template),
        )
        .route(
            "/events/{event}/supervisor-pin",
            put(api::door::set_supervisor_pin),
        )
        .route(
            "/users/{id}",
            axum::routing::patch(api::users::update_user).delete(api::users::delete_user),
        )
        .route(
            "/users/{id}/events/{event}",
            put(api::users::put_grant).delete(api::users::delete_grant),
        )
        .route("/auth/password", post(api::users::change_password))
        .route("/events/{event}/arrivals", get(api::arrivals::arrivals))
        .route(
            "/events/{event}/alert-rules",
            get(api::alerts::get_rules).put(api::alerts::put_rules),
        )
        .route("/events/{event}/alerts", get(api::alerts::list))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ));

    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(openapi))
        .route(
            "/wallet/v1/apple/{token}",
            get(api::ticket_docs::apple_link),
        )
        .merge(sync::router())
        .merge(web::router())
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(state)
}

async fn fallback() -> Error {
    Error::NotFound("route")
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
        ops::healthz, ops::readyz,
        api::auth::login, api::auth::me, api::auth::list_users, api::auth::create_user,
        api::events::list, api::events::create, api::events::get, api::events::update, api::events::delete, api::events::keys,
        api::participants::list, api::participants::create, api::participants::get, api::participants::update,
        api::participants::erase, api::participants::export_personal_data, api::participants::issue_ticket, api::participants::revoke_ticket,
        api::participants::ticket_png, api::participants::ticket_svg,
        api::ticket_docs::pdf, api::ticket_docs::event_pdf, api::ticket_docs::pkpass, api::ticket_docs::google, api::ticket_docs::apple_link,
        api::import::import,
        api::gates::list, api::gates::create, api::gates::get, api::gates::update, api::gates::deactivate, api::gates::enroll,
        api::zones::list, api::zones::create, api::zones::get, api::zones::update, api::zones::delete,
        sync::capabilities, sync::enroll::enroll, sync::pull::changes,
        sync::push::push, sync::stream::gate_stream, sync::stream::event_stream,
        api::redeem::redeem, api::checkins::attendance,
        api::checkins::list_checkins, api::checkins::list_conflicts,
        api::checkins::resolve_conflict, api::checkins::report,
        api::exports::participants, api::exports::checkins,
        api::api_keys::create, api::api_keys::list, api::api_keys::revoke,
        api::webhooks::list, api::webhooks::create, api::webhooks::get, api::webhooks::update,
        api::webhooks::delete, api::webhooks::rotate, api::webhooks::test, api::webhooks::deliveries,
        api::mail::send, api::mail::list, api::mail::get_template, api::mail::put_template,
        api::mail::reset_template,
        api::door::set_supervisor_pin,
        api::users::update_user, api::users::delete_user, api::users::put_grant,
        api::users::delete_grant, api::users::change_password, api::arrivals::arrivals,
        api::alerts::get_rules, api::alerts::put_rules, api::alerts::list,
    ),
    components(schemas(Problem, crate::domain::error::FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Log in, users"),
        (name = "events", description = "Events and their keys"),
        (name = "participants", description = "Participants, tickets, CSV import"),
        (name = "gates", description = "Gates and enrollment codes"),
        (name = "zones", description = "Zones with a capacity (rooms, sessions, areas)"),
        (name = "ops", description = "Health"),
        (name = "sync", description = "What gates talk to (DESIGN §4)"),
        (name = "checkins", description = "Check-ins and the online redeem"),
        (name = "conflicts", description = "Conflicts found by the merge"),
        (name = "live", description = "Attendance, report, live stream"),
        (name = "exports", description = "Participants with check-in facts, the check-in log"),
        (name = "webhooks", description = "Webhook endpoints and their deliveries (Standard Webhooks)"),
        (name = "mail", description = "Ticket e-mail: sending, status, templates"),
        (name = "alerts", description = "Alert rules per event and the alerts that fired"),
    )
)]
pub struct ApiDoc;
