//! Ticket e-mail: `POST /api/v1/events/{event}/tickets/send`, the messages and their status
//! (`GET …/mails`), and the organizer's templates (`GET|PUT|DELETE …/mail-template`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Page, PageParams, load_event, page};
use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::domain::mail::Templates;
use crate::http::error::Problem;
use crate::http::extract::{Json, Path, Query, parse_json};
use crate::service::AppState;
use crate::service::mail::{self, SendSummary};
use crate::store::mail::MailRow;
use crate::store::{self, ms_to_time};

/// A ticket message and where it stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailOut {
    pub id: Uuid,
    pub participant_id: Uuid,
    /// The ticket the message carries.
    pub ticket_serial: i64,
    /// `queued` (waiting, or retrying after a failed attempt), `sent`, or `failed` (gave up).
    pub status: String,
    pub attempts: i64,
    /// The mail server's answer to the last failed attempt.
    pub last_error: Option<String>,
    /// `smtp`, or `file` (written as an .eml file: no SMTP server configured).
    pub transport: Option<String>,
    /// When a queued message is attempted next.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub queued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<OffsetDateTime>,
}

impl From<MailRow> for MailOut {
    fn from(r: MailRow) -> Self {
        Self {
            id: r.id,
            participant_id: r.participant_id,
            ticket_serial: r.ticket_serial,
            next_attempt_at: (r.status == "queued").then(|| ms_to_time(r.next_attempt_at)),
            status: r.status,
            attempts: r.attempts,
            last_error: r.last_error,
            transport: r.transport,
            queued_at: ms_to_time(r.created_at),
            sent_at: r.sent_at.map(ms_to_time),
        }
    }
}

/// `{"participant_ids": [...], "resend": false}`; an empty body sends to everyone.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Only these participants (default: every participant of the event).
    #[serde(default)]
    pub participant_ids: Option<Vec<Uuid>>,
    /// Send again to participants whose current ticket was already sent or is queued.
    #[serde(default)]
    pub resend: bool,
}

/// Queues ticket e-mails (staff): to every participant with an address and a valid ticket, or
/// to the ones named, and only to those not yet sent their current ticket unless `resend`.
#[utoipa::path(post, operation_id = "tickets_send", path = "/api/v1/events/{event}/tickets/send", tag = "mail", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    request_body(content = Option<SendRequest>, description = "Optional"),
    responses((status = 202, description = "Queued", body = SendSummary), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn send(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    body: Bytes,
) -> Result<(StatusCode, Json<SendSummary>), Error> {
    auth.require_on(event_id, Role::Staff)?;
    let req: SendRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SendRequest::default()
    } else {
        parse_json(&body)?
    };
    if let Some(ids) = &req.participant_ids {
        if ids.is_empty() {
            return Err(Error::validation(
                "participant_ids",
                "the list is empty; leave it out to send to everyone",
            ));
        }
        if ids.len() > mail::MAX_IDS {
            return Err(Error::validation(
                "participant_ids",
                format!("at most {} participants per request", mail::MAX_IDS),
            ));
        }
    }
    let summary = mail::send_tickets(
        &state,
        &auth.actor(),
        event_id,
        req.participant_ids,
        req.resend,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(summary)))
}

/// `?status=&cursor=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MailParams {
    /// `queued`, `sent` or `failed`.
    pub status: Option<String>,
    pub cursor: Option<String>,
    /// 1..=1000, default 100.
    pub limit: Option<u32>,
}

/// The event's ticket messages, newest first.
#[utoipa::path(get, operation_id = "mail_list", path = "/api/v1/events/{event}/mails", tag = "mail", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), MailParams),
    responses((status = 200, description = "OK", body = Page<MailOut>), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(params): Query<MailParams>,
) -> Result<Json<Page<MailOut>>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(s @ ("queued" | "sent" | "failed")) => Some(s),
        Some(other) => {
            return Err(Error::bad_request(
                Some("status"),
                format!("status {other:?} is not one of queued, sent, failed"),
            ));
        }
    };
    let paging = PageParams {
        cursor: params.cursor.clone(),
        limit: params.limit,
    };
    let limit = paging.limit()?;
    let before = paging.after()?.unwrap_or(Uuid::max());
    let rows = store::mail::list(&state.db, event_id, status, before, limit).await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| Ok(r.into()))?))
}

/// The newest message of each participant, for the participant JSON.
pub async fn latest(
    state: &AppState,
    event_id: Uuid,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, MailOut>, Error> {
    Ok(store::mail::latest(&state.db, event_id, ids)
        .await?
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect())
}

/// An event's mail templates (minijinja; see the template guide in the README).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateBody {
    pub subject: String,
    pub html: String,
    pub text: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateOut {
    pub subject: String,
    pub html: String,
    pub text: String,
    /// False while the event uses the built-in templates.
    pub custom: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<OffsetDateTime>,
}

/// The event's ticket e-mail templates (its own, or the built-in ones).
#[utoipa::path(get, operation_id = "mail_template_get", path = "/api/v1/events/{event}/mail-template", tag = "mail", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "OK", body = TemplateOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get_template(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<Json<TemplateOut>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let (t, updated) = mail::templates_of(&state.db, event_id).await?;
    Ok(Json(TemplateOut {
        subject: t.subject,
        html: t.html,
        text: t.text,
        custom: updated.is_some(),
        updated_at: updated.map(ms_to_time),
    }))
}

/// Replaces the event's templates (staff). Each part must render against a sample ticket:
/// one that does not is a 422 naming the part (`subject`, `html`, `text`).
#[utoipa::path(put, operation_id = "mail_template_put", path = "/api/v1/events/{event}/mail-template", tag = "mail", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = TemplateBody,
    responses((status = 200, description = "Saved", body = TemplateOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "A template does not render (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn put_template(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Json(body): Json<TemplateBody>,
) -> Result<Json<TemplateOut>, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let t = Templates {
        subject: body.subject,
        html: body.html,
        text: body.text,
    };
    let updated = mail::save_templates(&state.db, &auth.actor(), event_id, t.clone()).await?;
    Ok(Json(TemplateOut {
        subject: t.subject,
        html: t.html,
        text: t.text,
        custom: true,
        updated_at: Some(ms_to_time(updated)),
    }))
}

/// Returns the event to the built-in templates (staff).
#[utoipa::path(delete, operation_id = "mail_template_reset", path = "/api/v1/events/{event}/mail-template", tag = "mail", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 204, description = "Reset"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn reset_template(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    auth.require_on(event_id, Role::Staff)?;
    mail::reset_templates(&state.db, &auth.actor(), event_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
