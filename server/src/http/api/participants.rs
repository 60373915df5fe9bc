//! Participants and their tickets:
//! `GET|POST /api/v1/events/{event}/participants`, `GET|PATCH|DELETE …/participants/{id}`,
//! `POST …/{id}/ticket` (issue or reissue), `POST …/{id}/ticket/revoke`,
//! `GET …/{id}/ticket.png|.svg` (the readable ticket, or `?layout=qr` for the QR alone).
//!
//! Every write that a gate must know about (a new ticket, a revocation, a renamed holder) appends
//! to the change log in the same transaction.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sync_protocol::ShortCode;
use sync_protocol::wire::ChangeData;
use sync_protocol::wire::TicketStatus;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Page, PageParams, load_event, page};
use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::domain::event::{EventStatus, require_registrations, require_writable};
use crate::domain::text::{clean, optional_line, required_text};
use crate::domain::webhook;
use crate::http::error::Problem;
use crate::http::extract::{Json, Path, Query, double_option, from_value_at, parse_json};
use crate::service::AppState;
use crate::service::merge;
use crate::service::ticket_doc::{self, TicketDoc};
use crate::service::tickets::{self as issuing, EventKeys, Holder, new_ticket};
use crate::service::uow::UnitOfWork;
use crate::service::webhooks;
use crate::store::participants::{NewParticipant, ParticipantFields, ParticipantRow};
use crate::store::tickets::TicketRow;
use crate::store::{self, Tx, ms_to_time, now_ms};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketOut {
    pub serial: u64,
    /// The signed `U1:` text encoded in the QR code. A bearer secret: absent for viewers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// `XXXX-XXXX-XXXX`, typed at a gate's manual entry. A bearer secret: absent for viewers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_code: Option<String>,
    /// `valid` or `revoked`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub valid_until: OffsetDateTime,
    pub scopes: u16,
    pub key_id: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
}

impl TicketOut {
    pub fn build(t: &TicketRow, keys: &EventKeys) -> Result<Self, Error> {
        let secs =
            |s: i64| OffsetDateTime::from_unix_timestamp(s).map_err(|e| Error::Internal(e.into()));
        Ok(Self {
            serial: u64::try_from(t.serial).map_err(anyhow::Error::from)?,
            credential: Some(keys.credential(t)?),
            short_code: Some(issuing::short_code(t.short_code)?.to_string()),
            status: t.status.clone(),
            valid_from: secs(t.valid_from)?,
            valid_until: secs(t.valid_until)?,
            scopes: u16::try_from(t.scopes).map_err(anyhow::Error::from)?,
            key_id: u32::try_from(t.key_id).map_err(anyhow::Error::from)?,
            issued_at: ms_to_time(t.issued_at),
            revoked_at: t.revoked_at.map(ms_to_time),
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParticipantOut {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub organization: Option<String>,
    /// Shown prominently at the gate ("VIP", "wheelchair access").
    pub attention: Option<String>,
    pub ticket_type: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub ticket: Option<TicketOut>,
    /// The newest ticket e-mail to this participant and where it stands (`null`: none).
    pub ticket_mail: Option<super::mail::MailOut>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl ParticipantOut {
    /// Drops the ticket's bearer secrets (credential, short code) unless the caller is staff on
    /// the event: a viewer reads names and attendance, never what opens the door.
    fn for_caller(mut self, auth: &Auth, event_id: Uuid) -> Self {
        if !auth.can_on(event_id, Role::Staff)
            && let Some(t) = self.ticket.as_mut()
        {
            t.credential = None;
            t.short_code = None;
        }
        self
    }

    fn build(p: ParticipantRow, keys: &EventKeys) -> Result<Self, Error> {
        let ticket = p.ticket().map(|t| TicketOut::build(&t, keys)).transpose()?;
        Ok(Self {
            id: p.id,
            external_id: p.external_id,
            name: p.name,
            email: p.email,
            phone: p.phone,
            organization: p.organization,
            attention: p.attention,
            ticket_type: p.ticket_type,
            metadata: serde_json::from_str(&p.metadata).unwrap_or_default(),
            ticket,
            ticket_mail: None,
            created_at: ms_to_time(p.created_at),
            updated_at: ms_to_time(p.updated_at),
        })
    }

    fn from_new(
        n: &NewParticipant,
        ticket: Option<&TicketRow>,
        keys: &EventKeys,
        now: i64,
    ) -> Result<Self, Error> {
        let f = &n.fields;
        Ok(Self {
            id: n.id,
            external_id: f.external_id.clone(),
            name: Some(f.name.clone()),
            email: f.email.clone(),
            phone: f.phone.clone(),
            organization: f.organization.clone(),
            attention: f.attention.clone(),
            ticket_type: f.ticket_type.clone(),
            metadata: serde_json::from_str(&f.metadata).unwrap_or_default(),
            ticket: ticket.map(|t| TicketOut::build(t, keys)).transpose()?,
            ticket_mail: None,
            created_at: ms_to_time(now),
            updated_at: ms_to_time(now),
        })
    }
}

/// A new participant. `POST …/participants` takes one object or an array of them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantCreate {
    /// Your system's id for this person (unique per event); the CSV import upserts by it.
    #[serde(default)]
    pub external_id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub attention: Option<String>,
    #[serde(default)]
    pub ticket_type: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Scope bits of the ticket (default 1).
    #[serde(default)]
    pub scopes: Option<u16>,
    /// Issue a ticket right away (default true).
    #[serde(default)]
    pub issue_ticket: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantPatch {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub organization: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub attention: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub ticket_type: Option<Option<String>>,
    /// Replaces the metadata object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// Checks an e-mail address loosely (one `@`, something either side, no spaces).
pub fn check_email(field: &str, email: Option<String>) -> Result<Option<String>, Error> {
    let Some(email) = optional_line(field, email)? else {
        return Ok(None);
    };
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if ok {
        Ok(Some(email))
    } else {
        Err(Error::validation(
            field,
            format!("{email:?} is not an e-mail address"),
        ))
    }
}

fn short_text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, Error> {
    let v = optional_line(field, value)?;
    if let Some(v) = &v
        && v.chars().count() > max
    {
        return Err(Error::validation(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(v)
}

fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn validate_create(
    req: ParticipantCreate,
    prefix: &str,
) -> Result<(ParticipantFields, Option<u16>, bool), Error> {
    let fields = ParticipantFields {
        external_id: short_text(&field(prefix, "external_id"), req.external_id, 200)?,
        name: required_text(&field(prefix, "name"), &req.name, 300)?,
        email: check_email(&field(prefix, "email"), req.email)?,
        phone: short_text(&field(prefix, "phone"), req.phone, 100)?,
        organization: short_text(&field(prefix, "organization"), req.organization, 300)?,
        attention: short_text(&field(prefix, "attention"), req.attention, 300)?,
        ticket_type: short_text(&field(prefix, "ticket_type"), req.ticket_type, 100)?,
        metadata: serde_json::to_string(&req.metadata.unwrap_or_default())
            .map_err(anyhow::Error::from)?,
    };
    Ok((fields, req.scopes, req.issue_ticket.unwrap_or(true)))
}

async fn event_keys(state: &AppState, event_id: Uuid) -> Result<EventKeys, Error> {
    EventKeys::load(&state.db, &state.master, event_id)
        .await?
        .ok_or(Error::NotFound("event"))
}

/// Lists participants; `?q=` searches name, e-mail, organisation and external id (substring,
/// case-insensitive) and matches a short code exactly.
#[utoipa::path(get, operation_id = "participant_list", path = "/api/v1/events/{event}/participants", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), SearchParams),
    responses((status = 200, description = "OK", body = Page<ParticipantOut>), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(params): Query<SearchParams>,
) -> Result<Json<Page<ParticipantOut>>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let paging = PageParams {
        cursor: params.cursor.clone(),
        limit: params.limit,
    };
    let limit = paging.limit()?;
    let q = clean(params.q.clone());
    let short_code = q
        .as_deref()
        .and_then(|q| ShortCode::parse(q).ok())
        .and_then(|c| i64::try_from(c.value()).ok());
    let ticket_type = clean(params.ticket_type.clone());
    let rows = store::participants::list_of_type(
        &state.db,
        state.master.personal(),
        event_id,
        paging.after()?,
        q.as_deref(),
        short_code,
        ticket_type.as_deref(),
        limit + 1,
    )
    .await?;
    let keys = event_keys(&state, event_id).await?;
    let mut out = page(
        rows,
        limit,
        |p| p.id,
        |p| Ok(ParticipantOut::build(p, &keys)?.for_caller(&auth, event_id)),
    )?;
    attach_mail(&state, event_id, &mut out.items).await?;
    Ok(Json(out))
}

/// Fills in each participant's newest ticket e-mail.
async fn attach_mail(
    state: &AppState,
    event_id: Uuid,
    items: &mut [ParticipantOut],
) -> Result<(), Error> {
    let ids: Vec<Uuid> = items.iter().map(|p| p.id).collect();
    let mut mails = super::mail::latest(state, event_id, &ids).await?;
    for p in items {
        p.ticket_mail = mails.remove(&p.id);
    }
    Ok(())
}

/// `?q=&ticket_type=&cursor=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Search text, or a short code.
    pub q: Option<String>,
    /// Only participants of this ticket type (exact).
    pub ticket_type: Option<String>,
    pub cursor: Option<String>,
    /// 1..=1000, default 100.
    pub limit: Option<u32>,
}

/// Creates one participant (object body → the participant) or many (array body → `{"items"}`),
/// issuing each a ticket unless `issue_ticket` is false (staff).
#[utoipa::path(post, operation_id = "participant_create", path = "/api/v1/events/{event}/participants", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = ParticipantCreate,
    responses((status = 201, description = "Created", body = ParticipantOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Json(body): Json<Value>,
) -> Result<Response, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let event = load_event(&state, event_id).await?;
    require_registrations(EventStatus::parse(&event.status)?)?;
    let (items, many) = match body {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    if many && items.is_empty() {
        return Err(Error::validation("", "the array is empty"));
    }
    if items.len() > 10_000 {
        return Err(Error::validation(
            "",
            "at most 10,000 participants per request; use the CSV import",
        ));
    }
    let mut wanted = Vec::with_capacity(items.len());
    let mut seen_external = std::collections::HashMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let prefix = if many {
            format!("[{i}]")
        } else {
            String::new()
        };
        let req: ParticipantCreate = from_value_at(item, &prefix)?;
        let (fields, scopes, issue) = validate_create(req, &prefix)?;
        if let Some(x) = &fields.external_id
            && let Some(first) = seen_external.insert(x.clone(), i)
        {
            return Err(Error::validation(
                field(&prefix, "external_id"),
                format!("external_id {x:?} is also used by element [{first}]"),
            ));
        }
        wanted.push((prefix, fields, scopes, issue));
    }
    let keys = event_keys(&state, event_id).await?;
    let now = now_ms();
    let n_tickets =
        i64::try_from(wanted.iter().filter(|w| w.3).count()).map_err(anyhow::Error::from)?;
    // Serials first, outside the transaction (see `allocate_serials`).
    let mut next_serial = if n_tickets > 0 {
        store::tickets::allocate_serials(&state.db, event_id, n_tickets).await?
    } else {
        0
    };
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    for (prefix, fields, _, _) in &wanted {
        if let Some(x) = &fields.external_id
            && store::participants::external_id_taken(uow.tx(), event_id, x, None).await?
        {
            return Err(Error::validation(
                field(prefix, "external_id"),
                format!("external_id {x:?} is already used by another participant of this event"),
            ));
        }
    }
    let mut participants = Vec::with_capacity(wanted.len());
    let mut tickets = Vec::new();
    let settings = crate::domain::event::EventSettings::parse(&event.settings)?;
    for (_, fields, scopes, issue) in wanted {
        let id = Uuid::now_v7();
        let serial = if issue {
            let scopes =
                scopes.unwrap_or_else(|| settings.scopes_for(fields.ticket_type.as_deref()));
            let t = new_ticket(&keys, &event, id, next_serial, scopes, now)?;
            next_serial += 1;
            let s = t.serial;
            tickets.push(t);
            Some(s)
        } else {
            None
        };
        participants.push(NewParticipant {
            id,
            fields,
            ticket_serial: serial,
        });
    }
    store::participants::insert_many(
        uow.tx(),
        state.master.personal(),
        event_id,
        now,
        &participants,
    )
    .await?;
    issuing::insert_with_retry(uow.tx(), event_id, &mut tickets).await?;
    let mut changes = Vec::with_capacity(tickets.len());
    for (t, p) in tickets
        .iter()
        .zip(participants.iter().filter(|p| p.ticket_serial.is_some()))
    {
        changes.push((keys.ticket_change(t, Holder::of_fields(&p.fields))?, false));
    }
    let ids: Vec<String> = participants
        .iter()
        .take(100)
        .map(|p| p.id.to_string())
        .collect();
    store::audit::record(
        uow.tx(),
        &auth.actor(),
        "participant.create",
        Some(event_id),
        (!many).then(|| format!("participant:{}", participants[0].id)),
        serde_json::json!({"count": participants.len(), "ids": ids, "tickets": tickets.len()}),
    )
    .await?;
    if uow
        .wants_webhook(event_id, webhook::PARTICIPANT_CREATED)
        .await?
    {
        for p in &participants {
            uow.webhook(
                event_id,
                webhook::PARTICIPANT_CREATED,
                webhooks::participant_data(event_id, p.id, &p.fields, p.ticket_serial),
            );
        }
    }
    uow.changes(event_id, changes)?;
    uow.commit(&state.notifier).await?;
    metrics::counter!("usher_tickets_issued_total").increment(tickets.len() as u64);

    let by_serial: std::collections::HashMap<i64, &TicketRow> =
        tickets.iter().map(|t| (t.serial, t)).collect();
    let out = participants
        .iter()
        .map(|p| {
            ParticipantOut::from_new(
                p,
                p.ticket_serial.and_then(|s| by_serial.get(&s).copied()),
                &keys,
                now,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    if many {
        Ok((
            StatusCode::CREATED,
            Json(Page {
                items: out,
                next_cursor: None,
            }),
        )
            .into_response())
    } else {
        let one = out
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no participant built"))?;
        Ok((StatusCode::CREATED, Json(one)).into_response())
    }
}

/// One participant with its current ticket.
#[utoipa::path(get, operation_id = "participant_get", path = "/api/v1/events/{event}/participants/{id}", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id")),
    responses((status = 200, description = "OK", body = ParticipantOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<Json<ParticipantOut>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    let p = store::participants::get(&state.db, state.master.personal(), event_id, id)
        .await?
        .ok_or(Error::NotFound("participant"))?;
    let keys = event_keys(&state, event_id).await?;
    let mut out = [ParticipantOut::build(p, &keys)?.for_caller(&auth, event_id)];
    attach_mail(&state, event_id, &mut out).await?;
    let [out] = out;
    Ok(Json(out))
}

/// Everything the server holds about one person, for their access request (GDPR art. 15).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PersonalDataExport {
    /// The participant as `GET …/participants/{id}` shows them (with the current ticket).
    pub participant: ParticipantOut,
    /// Every ticket issued to them, revoked ones too.
    pub tickets: Vec<store::subject::SubjectTicket>,
    /// Every scan of those tickets: when, at which gate, with what decision.
    pub checkins: Vec<store::subject::SubjectCheckin>,
    /// The messages queued or sent to them.
    pub mails: Vec<store::subject::SubjectMail>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub exported_at: OffsetDateTime,
}

/// A person's data as a JSON download (staff): their participant record, tickets and their
/// status, check-ins and the mail sent to them.
#[utoipa::path(get, operation_id = "participant_export", path = "/api/v1/events/{event}/participants/{id}/export", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id")),
    responses((status = 200, description = "The person's data, as an attachment", body = PersonalDataExport), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn export_personal_data(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<Response, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let p = store::participants::get(&state.db, state.master.personal(), event_id, id)
        .await?
        .ok_or(Error::NotFound("participant"))?;
    let keys = event_keys(&state, event_id).await?;
    let tickets = store::subject::tickets(&state.db, event_id, id).await?;
    let serials: Vec<i64> = tickets.iter().map(|t| t.serial).collect();
    let checkins = store::subject::checkins(&state.db, event_id, &serials).await?;
    let mails = store::subject::mails(&state.db, event_id, id).await?;
    let mut participant = [ParticipantOut::build(p, &keys)?];
    attach_mail(&state, event_id, &mut participant).await?;
    let [participant] = participant;
    let body = PersonalDataExport {
        participant,
        tickets,
        checkins,
        mails,
        exported_at: OffsetDateTime::now_utc(),
    };
    Ok((
        [
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"participant-{id}.json\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Json(body),
    )
        .into_response())
}

/// Changes a participant (staff). A new name or attention note is replicated to the gates.
#[utoipa::path(patch, operation_id = "participant_update", path = "/api/v1/events/{event}/participants/{id}", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id")),
    request_body = ParticipantPatch,
    responses((status = 200, description = "OK", body = ParticipantOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
    Json(req): Json<ParticipantPatch>,
) -> Result<Json<ParticipantOut>, Error> {
    auth.require_on(event_id, Role::Staff)?;
    require_writable(EventStatus::parse(
        &load_event(&state, event_id).await?.status,
    )?)?;
    let keys = event_keys(&state, event_id).await?;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let p = store::participants::get_tx(uow.tx(), state.master.personal(), event_id, id)
        .await?
        .ok_or(Error::NotFound("participant"))?;
    let mut f = ParticipantFields {
        external_id: p.external_id.clone(),
        name: p.name.clone().unwrap_or_default(),
        email: p.email.clone(),
        phone: p.phone.clone(),
        organization: p.organization.clone(),
        attention: p.attention.clone(),
        ticket_type: p.ticket_type.clone(),
        metadata: p.metadata.clone(),
    };
    let before = f.clone();
    if let Some(v) = req.external_id {
        f.external_id = short_text("external_id", v, 200)?;
    }
    if let Some(v) = &req.name {
        f.name = required_text("name", v, 300)?;
    }
    if let Some(v) = req.email {
        f.email = check_email("email", v)?;
    }
    if let Some(v) = req.phone {
        f.phone = short_text("phone", v, 100)?;
    }
    if let Some(v) = req.organization {
        f.organization = short_text("organization", v, 300)?;
    }
    if let Some(v) = req.attention {
        f.attention = short_text("attention", v, 300)?;
    }
    if let Some(v) = req.ticket_type {
        f.ticket_type = short_text("ticket_type", v, 100)?;
    }
    if let Some(v) = req.metadata {
        f.metadata = serde_json::to_string(&v).map_err(anyhow::Error::from)?;
    }
    if let Some(x) = &f.external_id
        && f.external_id != before.external_id
        && store::participants::external_id_taken(uow.tx(), event_id, x, Some(id)).await?
    {
        return Err(Error::validation(
            "external_id",
            format!("external_id {x:?} is already used by another participant of this event"),
        ));
    }
    if f != before {
        store::participants::update_many(
            uow.tx(),
            state.master.personal(),
            event_id,
            now_ms(),
            &[(id, f.clone())],
        )
        .await?;
        store::audit::record(
            uow.tx(),
            &auth.actor(),
            "participant.update",
            Some(event_id),
            Some(format!("participant:{id}")),
            serde_json::json!({}),
        )
        .await?;
        if (f.name != before.name
            || f.attention != before.attention
            || f.organization != before.organization
            || f.ticket_type != before.ticket_type)
            && let Some(t) = p.ticket()
        {
            let change = keys.ticket_change(&t, Holder::of_fields(&f))?;
            uow.change(event_id, change, false)?;
        }
        uow.webhook(
            event_id,
            webhook::PARTICIPANT_UPDATED,
            webhooks::participant_data(event_id, id, &f, p.ticket_serial),
        );
    }
    let p = store::participants::get_tx(uow.tx(), state.master.personal(), event_id, id)
        .await?
        .ok_or(Error::NotFound("participant"))?;
    uow.commit(&state.notifier).await?;
    Ok(Json(ParticipantOut::build(p, &keys)?))
}

/// Revokes a ticket inside `tx` and returns the changes to replicate (status + revocation).
async fn revoke_in_tx(
    state: &AppState,
    tx: &mut Tx,
    keys: &EventKeys,
    ticket: &TicketRow,
    holder: Holder,
    reason: &str,
) -> Result<Vec<(ChangeData, bool)>, Error> {
    let now = now_ms();
    let mut changes = Vec::new();
    if store::tickets::revoke(tx, keys.event_id, ticket.serial, reason, now).await? {
        let hlc = state.hlc_now();
        changes.push((
            issuing::revocation_change(ticket.serial, hlc, reason)?,
            false,
        ));
    }
    let mut revoked = ticket.clone();
    revoked.status = TicketStatus::Revoked.as_str().into();
    changes.push((keys.ticket_change(&revoked, holder)?, false));
    Ok(changes)
}

/// Erases a participant's personal data (staff): name, contact details, organisation and
/// metadata are cleared and the ticket revoked; check-ins stay as anonymous facts.
#[utoipa::path(delete, operation_id = "participant_erase", path = "/api/v1/events/{event}/participants/{id}", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id")),
    responses((status = 204, description = "No content"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn erase(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let keys = event_keys(&state, event_id).await?;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let tx = uow.tx();
    let p = store::participants::get_tx(tx, state.master.personal(), event_id, id)
        .await?
        .ok_or(Error::NotFound("participant"))?;
    let changes = match p.ticket() {
        // Even an already revoked ticket is re-sent without the name, so replicas forget it.
        Some(t) => {
            revoke_in_tx(
                &state,
                tx,
                &keys,
                &t,
                Holder::default(),
                "participant erased",
            )
            .await?
        }
        None => Vec::new(),
    };
    store::participants::erase(tx, event_id, id, now_ms()).await?;
    store::audit::record(
        tx,
        &auth.actor(),
        "participant.erase",
        Some(event_id),
        Some(format!("participant:{id}")),
        serde_json::json!({"ticket_serial": p.ticket_serial}),
    )
    .await?;
    merge::revoke_in(&mut uow, event_id, changes).await?;
    uow.commit(&state.notifier).await?;
    state.db.scrub_erased().await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketIssue {
    /// Scope bits (default: the previous ticket's, else 1).
    #[serde(default)]
    pub scopes: Option<u16>,
    /// Override the validity window (default: the event's window widened by the margin).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_until: Option<OffsetDateTime>,
}

fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

/// Issues a ticket, or reissues it: a reissue always gets a new serial and revokes the old one
/// (staff).
#[utoipa::path(post, operation_id = "participant_issue_ticket", path = "/api/v1/events/{event}/participants/{id}/ticket", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id")),
    request_body(content = Option<TicketIssue>, description = "Optional"),
    responses((status = 201, description = "Created", body = TicketOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn issue_ticket(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
    body: Bytes,
) -> Result<(StatusCode, Json<TicketOut>), Error> {
    auth.require_on(event_id, Role::Staff)?;
    let req: TicketIssue = optional_body(&body)?;
    let event = load_event(&state, event_id).await?;
    require_registrations(EventStatus::parse(&event.status)?)?;
    let keys = event_keys(&state, event_id).await?;
    let now = now_ms();
    // Serial first, outside the transaction (see `allocate_serials`).
    let serial = store::tickets::allocate_serials(&state.db, event_id, 1).await?;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let p = store::participants::get_tx(uow.tx(), state.master.personal(), event_id, id)
        .await?
        .ok_or(Error::NotFound("participant"))?;
    let name = p.name.clone();
    let old = p.ticket();
    let mut changes = Vec::new();
    if let Some(old) = &old
        && old.status()? == TicketStatus::Valid
    {
        changes = revoke_in_tx(&state, uow.tx(), &keys, old, Holder::of(&p), "reissued").await?;
    }
    let scopes = req
        .scopes
        .or_else(|| old.as_ref().and_then(|t| u16::try_from(t.scopes).ok()))
        .unwrap_or(1);
    let mut ticket = new_ticket(&keys, &event, id, serial, scopes, now)?;
    if let Some(t) = req.valid_from {
        ticket.valid_from = t.unix_timestamp();
    }
    if let Some(t) = req.valid_until {
        ticket.valid_until = t.unix_timestamp();
    }
    if !(0..=i64::from(u32::MAX)).contains(&ticket.valid_from) {
        return Err(Error::validation(
            "valid_from",
            "valid_from must lie between 1970 and 2106",
        ));
    }
    if !(ticket.valid_from..=i64::from(u32::MAX)).contains(&ticket.valid_until) {
        return Err(Error::validation(
            "valid_until",
            "valid_until must not be before valid_from",
        ));
    }
    let mut tickets = vec![ticket];
    issuing::insert_with_retry(uow.tx(), event_id, &mut tickets).await?;
    store::participants::set_ticket(uow.tx(), event_id, id, serial, now).await?;
    let ticket = tickets.remove(0);
    changes.push((
        keys.ticket_change(
            &ticket,
            Holder {
                display_name: name,
                ..Holder::of(&p)
            },
        )?,
        false,
    ));
    store::audit::record(
        uow.tx(),
        &auth.actor(),
        if old.is_some() {
            "ticket.reissue"
        } else {
            "ticket.issue"
        },
        Some(event_id),
        Some(format!("participant:{id}")),
        serde_json::json!({"serial": serial, "previous": old.as_ref().map(|t| t.serial)}),
    )
    .await?;
    merge::revoke_in(&mut uow, event_id, changes).await?;
    uow.commit(&state.notifier).await?;
    metrics::counter!("usher_tickets_issued_total").increment(1);
    Ok((StatusCode::CREATED, Json(TicketOut::build(&ticket, &keys)?)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRevoke {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Revokes the participant's current ticket (staff). Idempotent.
#[utoipa::path(post, operation_id = "participant_revoke_ticket", path = "/api/v1/events/{event}/participants/{id}/ticket/revoke", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id")),
    request_body(content = Option<TicketRevoke>, description = "Optional"),
    responses((status = 200, description = "OK", body = TicketOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_ticket(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
    body: Bytes,
) -> Result<Json<TicketOut>, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let req: TicketRevoke = optional_body(&body)?;
    require_writable(EventStatus::parse(
        &load_event(&state, event_id).await?.status,
    )?)?;
    let reason =
        optional_line("reason", req.reason)?.unwrap_or_else(|| "revoked by organizer".into());
    let keys = event_keys(&state, event_id).await?;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let p = store::participants::get_tx(uow.tx(), state.master.personal(), event_id, id)
        .await?
        .ok_or(Error::NotFound("participant"))?;
    let ticket = p.ticket().ok_or(Error::NotFound("ticket"))?;
    if ticket.status()? == TicketStatus::Valid {
        let changes =
            revoke_in_tx(&state, uow.tx(), &keys, &ticket, Holder::of(&p), &reason).await?;
        store::audit::record(
            uow.tx(),
            &auth.actor(),
            "ticket.revoke",
            Some(event_id),
            Some(format!("participant:{id}")),
            serde_json::json!({"serial": ticket.serial, "reason": reason}),
        )
        .await?;
        merge::revoke_in(&mut uow, event_id, changes).await?;
    }
    let ticket = store::tickets::get_tx(uow.tx(), event_id, ticket.serial)
        .await?
        .ok_or(Error::NotFound("ticket"))?;
    uow.commit(&state.notifier).await?;
    Ok(Json(TicketOut::build(&ticket, &keys)?))
}

/// Revokes a ticket by serial inside the caller's transaction (conflict resolution): the
/// revocation, the ticket change and the re-fold, as a revoke through the participant would.
pub async fn revoke_serial(
    state: &AppState,
    uow: &mut UnitOfWork,
    event_id: Uuid,
    serial: i64,
    reason: &str,
) -> Result<(), Error> {
    let keys = event_keys(state, event_id).await?;
    let tx = uow.tx();
    let ticket = store::tickets::get_tx(tx, event_id, serial)
        .await?
        .ok_or(Error::NotFound("ticket"))?;
    if ticket.status()? != TicketStatus::Valid {
        return Ok(());
    }
    let p =
        store::participants::get_tx(tx, state.master.personal(), event_id, ticket.participant_id)
            .await?;
    let holder = p.as_ref().map(Holder::of).unwrap_or_default();
    let changes = revoke_in_tx(state, tx, &keys, &ticket, holder, reason).await?;
    merge::revoke_in(uow, event_id, changes).await
}

async fn current_credential(state: &AppState, event_id: Uuid, id: Uuid) -> Result<String, Error> {
    let p = store::participants::get(&state.db, state.master.personal(), event_id, id)
        .await?
        .ok_or(Error::NotFound("participant"))?;
    let ticket = p.ticket().ok_or(Error::NotFound("ticket"))?;
    if ticket.status()? != TicketStatus::Valid {
        return Err(Error::Conflict(
            "the ticket is revoked; issue a new one first".into(),
        ));
    }
    let keys = event_keys(state, event_id).await?;
    Ok(keys.credential(&ticket)?)
}

/// The credential is a bearer secret: never let a proxy or browser cache keep it.
fn image_response(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `?layout=` of the ticket images.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketImageParams {
    /// `ticket` (default): the readable ticket (event, holder, ticket type, QR, short code);
    /// `qr`: the QR code alone.
    pub layout: Option<String>,
}

impl TicketImageParams {
    /// Whether the bare QR code was asked for (422 naming `layout` for anything unknown).
    fn qr_only(&self) -> Result<bool, Error> {
        match self.layout.as_deref() {
            None | Some("ticket") => Ok(false),
            Some("qr") => Ok(true),
            Some(_) => Err(Error::validation("layout", "layout must be ticket or qr")),
        }
    }
}

/// The readable ticket as PNG (the QR at 10 px per module), or with `?layout=qr` the QR code
/// alone (ECC M, quiet zone, 8 px per module).
#[utoipa::path(get, operation_id = "participant_ticket_png", path = "/api/v1/events/{event}/participants/{id}/ticket.png", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id"), TicketImageParams),
    responses((status = 200, description = "OK", content_type = "image/png", body = Vec<u8>), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json")))]
pub async fn ticket_png(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
    Query(params): Query<TicketImageParams>,
) -> Result<Response, Error> {
    auth.require_on(event_id, Role::Staff)?;
    if params.qr_only()? {
        let text = current_credential(&state, event_id, id).await?;
        return Ok(image_response("image/png", issuing::render_png(&text)?));
    }
    let doc = TicketDoc::load(&state, event_id, id).await?;
    Ok(image_response("image/png", ticket_doc::image::png(&doc)?))
}

/// The readable ticket as SVG (texts as `<text>`, the QR as rectangles), or with `?layout=qr`
/// the QR code alone.
#[utoipa::path(get, operation_id = "participant_ticket_svg", path = "/api/v1/events/{event}/participants/{id}/ticket.svg", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("id" = Uuid, Path, description = "Participant id"), TicketImageParams),
    responses((status = 200, description = "OK", content_type = "image/svg+xml", body = String), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn ticket_svg(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, id)): Path<(Uuid, Uuid)>,
    Query(params): Query<TicketImageParams>,
) -> Result<Response, Error> {
    auth.require_on(event_id, Role::Staff)?;
    if params.qr_only()? {
        let text = current_credential(&state, event_id, id).await?;
        return Ok(image_response("image/svg+xml", issuing::render_svg(&text)?));
    }
    let doc = TicketDoc::load(&state, event_id, id).await?;
    Ok(image_response(
        "image/svg+xml",
        ticket_doc::image::svg(&doc)?,
    ))
}
