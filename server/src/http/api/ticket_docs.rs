//! Tickets as a person holds them: `GET …/participants/{id}/ticket.pdf`, `GET
//! …/events/{event}/tickets.pdf` (one page per ticket), `GET …/participants/{id}/ticket.pkpass`
//! (Apple Wallet) and `GET …/participants/{id}/wallet/google` (a Google Wallet save link).
//!
//! They carry the credential, so they are authorized exactly as `ticket.png` is, and answered
//! with `Cache-Control: no-store`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sync_protocol::wire::TicketStatus;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::http::error::Problem;
use crate::http::extract::{Json, Path, Query};
use crate::service::AppState;
use crate::service::ticket_doc::{self, TicketDoc, pdf::PdfStream};
use crate::service::tickets::EventKeys;
use crate::store;
use crate::store::participants::ParticipantRow;

/// A response holding a credential: never kept by a proxy or browser cache.
pub fn private(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The ticket as an Apple Wallet pass (eventTicket; the QR is the `U1:` credential).
#[utoipa::path(get, operation_id = "participant_ticket_pkpass", path = "/api/v1/events/{event}/participants/{id}/ticket.pkpass", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id")),
    responses((status = 200, description = "A signed .pkpass", content_type = "application/vnd.apple.pkpass", body = Vec<u8>),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Apple Wallet not configured (the detail names the settings), or the ticket is revoked", body = Problem, content_type = "application/problem+json")))]
pub async fn pkpass(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<Response, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let signer = state.wallet.require_apple()?;
    let doc = TicketDoc::load(&state, event_id, id).await?;
    let pass = signer.pass(&doc, OffsetDateTime::now_utc())?;
    let mut response = private("application/vnd.apple.pkpass", pass);
    if let Ok(v) = format!("attachment; filename=\"ticket-{}.pkpass\"", doc.serial)
        .parse::<header::HeaderValue>()
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GoogleWalletLink {
    /// `https://pay.google.com/gp/v/save/<jwt>`: opening it adds the ticket to Google Wallet.
    pub url: String,
}

/// A Google Wallet "save" link for the ticket (a signed JWT holding the event ticket).
#[utoipa::path(get, operation_id = "participant_wallet_google", path = "/api/v1/events/{event}/participants/{id}/wallet/google", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id")),
    responses((status = 200, description = "OK", body = GoogleWalletLink),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Google Wallet not configured (the detail names the settings), or the ticket is revoked", body = Problem, content_type = "application/problem+json")))]
pub async fn google(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<Response, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let signer = state.wallet.require_google()?;
    let doc = TicketDoc::load(&state, event_id, id).await?;
    let url = signer.save_url(&doc, OffsetDateTime::now_utc())?;
    let mut response = Json(GoogleWalletLink { url }).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// The ticket as a one-page PDF (A6: event, holder, ticket type, QR, short code).
#[utoipa::path(get, operation_id = "participant_ticket_pdf", path = "/api/v1/events/{event}/participants/{id}/ticket.pdf", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id")),
    responses((status = 200, description = "OK", content_type = "application/pdf", body = Vec<u8>),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The ticket is revoked", body = Problem, content_type = "application/problem+json")))]
pub async fn pdf(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<Response, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let doc = TicketDoc::load(&state, event_id, id).await?;
    Ok(private("application/pdf", ticket_doc::pdf::one(&doc)?))
}

/// `?participant_ids=` of the event PDF.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventPdfParams {
    /// Comma-separated participant ids (at most 1000), in the order to print; unset = every
    /// participant with a valid ticket.
    pub participant_ids: Option<String>,
}

/// Most participants named in one `?participant_ids=`.
const MAX_NAMED: usize = 1000;
/// Participants read per page of the whole-event PDF.
const BATCH: i64 = 200;

/// The ids of `?participant_ids=`, or a 422 naming the parameter.
fn named_ids(text: &str) -> Result<Vec<Uuid>, Error> {
    let ids: Vec<Uuid> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Uuid::parse_str(s).map_err(|_| {
                Error::validation(
                    "participant_ids",
                    "participant_ids must be comma-separated participant ids",
                )
            })
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(Error::validation(
            "participant_ids",
            "participant_ids names no participant",
        ));
    }
    if ids.len() > MAX_NAMED {
        return Err(Error::validation(
            "participant_ids",
            format!("at most {MAX_NAMED} participants at once"),
        ));
    }
    Ok(ids)
}

/// Every valid ticket of the event (or of the participants named), one per page, for printing
/// or attaching. The PDF is streamed as its pages are drawn.
#[utoipa::path(get, operation_id = "event_tickets_pdf", path = "/api/v1/events/{event}/tickets.pdf", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), EventPdfParams),
    responses((status = 200, description = "One page per ticket", content_type = "application/pdf", body = Vec<u8>),
              (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "No participant has a valid ticket", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "A participant id that is malformed, unknown or without a valid ticket (the field names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn event_pdf(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(params): Query<EventPdfParams>,
) -> Result<Response, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let named = params
        .participant_ids
        .as_deref()
        .map(named_ids)
        .transpose()?;
    let event = store::events::require(&state.db, event_id).await?;
    let keys = EventKeys::load(&state.db, &state.master, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let valid = |p: &ParticipantRow| {
        p.ticket()
            .filter(|t| t.status == TicketStatus::Valid.as_str())
    };

    // Checked before the first byte goes out: a refused request is a whole problem answer.
    let mut first = Vec::new();
    let mut after = None;
    if let Some(ids) = &named {
        for (i, id) in ids.iter().enumerate() {
            let field = format!("participant_ids[{i}]");
            let p = store::participants::get(&state.db, state.master.personal(), event_id, *id)
                .await?
                .ok_or_else(|| {
                    Error::validation(field.clone(), format!("no participant {id} in this event"))
                })?;
            let t = valid(&p).ok_or_else(|| {
                Error::validation(field, format!("participant {id} has no valid ticket"))
            })?;
            first.push(TicketDoc::build(&event, &p, &t, &keys)?);
        }
    } else {
        loop {
            let rows = store::participants::list(
                &state.db,
                state.master.personal(),
                event_id,
                after,
                None,
                None,
                BATCH,
            )
            .await?;
            let more = rows.len() as i64 == BATCH;
            after = rows.last().map(|p| p.id);
            for p in &rows {
                if let Some(t) = valid(p) {
                    first.push(TicketDoc::build(&event, p, &t, &keys)?);
                }
            }
            if !first.is_empty() || !more {
                if !more {
                    after = None;
                }
                break;
            }
        }
        if first.is_empty() {
            return Err(Error::Conflict(
                "no participant of this event has a valid ticket".into(),
            ));
        }
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let send = |bytes: Vec<u8>| tx.send(Ok(Bytes::from(bytes)));
        let (mut writer, header) = PdfStream::start();
        if send(header).await.is_err() {
            return;
        }
        let mut batch = first;
        loop {
            for doc in &batch {
                let page = match writer.page(doc) {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(error = %e, event = %event_id, "ticket page failed");
                        let _ = tx
                            .send(Err(std::io::Error::other("ticket page failed")))
                            .await;
                        return;
                    }
                };
                if send(page).await.is_err() {
                    // The client went away.
                    return;
                }
            }
            let Some(cursor) = after else { break };
            let rows = match store::participants::list(
                &state.db,
                state.master.personal(),
                event_id,
                Some(cursor),
                None,
                None,
                BATCH,
            )
            .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, event = %event_id, "reading participants failed");
                    let _ = tx.send(Err(std::io::Error::other("database error"))).await;
                    return;
                }
            };
            after = if rows.len() as i64 == BATCH {
                rows.last().map(|p| p.id)
            } else {
                None
            };
            batch = Vec::with_capacity(rows.len());
            for p in &rows {
                if let Some(t) = valid(p) {
                    match TicketDoc::build(&event, p, &t, &keys) {
                        Ok(doc) => batch.push(doc),
                        Err(e) => {
                            tracing::error!(error = %e, event = %event_id, "ticket failed");
                            let _ = tx.send(Err(std::io::Error::other("ticket failed"))).await;
                            return;
                        }
                    }
                }
            }
        }
        let pages = writer.page_count();
        let _ = send(writer.finish()).await;
        metrics::counter!("usher_ticket_pdf_pages_total").increment(pages as u64);
    });
    let mut response = private(
        "application/pdf",
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    );
    if let Ok(v) = "inline; filename=\"tickets.pdf\"".parse::<header::HeaderValue>() {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The Apple Wallet pass behind the link in a ticket e-mail: no account, the token is the proof
/// (it opens one ticket, until that ticket is reissued or revoked).
#[utoipa::path(get, operation_id = "wallet_apple_link", path = "/wallet/v1/apple/{token}", tag = "participants",
    params(("token" = String, Path, description = "The token of the e-mailed link")),
    responses((status = 200, description = "A signed .pkpass", content_type = "application/vnd.apple.pkpass", body = Vec<u8>),
              (status = 404, description = "Not a link this server made, or the ticket was reissued", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Apple Wallet not configured, or the ticket is revoked", body = Problem, content_type = "application/problem+json")))]
pub async fn apple_link(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, Error> {
    let signer = state.wallet.require_apple()?;
    let (event_id, id, serial) = crate::service::wallet::open_link_token(&state.master, &token)
        .ok_or(Error::NotFound("wallet link"))?;
    let doc = TicketDoc::load(&state, event_id, id).await?;
    if doc.serial != serial {
        return Err(Error::NotFound("wallet link"));
    }
    let pass = signer.pass(&doc, OffsetDateTime::now_utc())?;
    Ok(private("application/vnd.apple.pkpass", pass))
}
