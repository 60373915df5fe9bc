//! `GET|POST /api/v1/events`, `GET|PATCH|DELETE /api/v1/events/{event}`,
//! `GET /api/v1/events/{event}/keys`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Page, PageParams, load_event, page};
use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::domain::event::{EventSettings, EventStatus};
use crate::domain::text::{optional_line, required_text};
use crate::http::error::Problem;
use crate::http::extract::{Json, Path, Query, double_option};
use crate::service::AppState;
use crate::service::uow::UnitOfWork;
use crate::store::events::EventRow;
use crate::store::{self, is_unique_violation, ms_to_time, now_ms, time_to_ms};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventOut {
    pub id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: OffsetDateTime,
    pub venue: Option<String>,
    pub status: EventStatus,
    pub settings: EventSettings,
    /// The short id signed into every ticket of this event.
    pub event_tag: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// Days after archiving that participants' personal data is kept; then it is erased (counts
    /// stay). `null`: kept until erased by hand.
    pub retention_days: Option<u32>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub archived_at: Option<OffsetDateTime>,
    /// When the retention period ended and the personal data was erased.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub purged_at: Option<OffsetDateTime>,
}

impl EventOut {
    pub fn from_row(e: EventRow) -> Result<Self, Error> {
        Ok(Self {
            settings: EventSettings::parse(&e.settings)?,
            status: EventStatus::parse(&e.status)?,
            event_tag: u32::try_from(e.event_tag).map_err(anyhow::Error::from)?,
            id: e.id,
            name: e.name,
            starts_at: ms_to_time(e.starts_at),
            ends_at: ms_to_time(e.ends_at),
            venue: e.venue,
            created_at: ms_to_time(e.created_at),
            updated_at: ms_to_time(e.updated_at),
            retention_days: e
                .retention_days
                .map(u32::try_from)
                .transpose()
                .map_err(anyhow::Error::from)?,
            archived_at: e.archived_at.map(ms_to_time),
            purged_at: e.purged_at.map(ms_to_time),
        })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventCreate {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: OffsetDateTime,
    #[serde(default)]
    pub venue: Option<String>,
    /// Defaults to `draft`.
    #[serde(default)]
    pub status: Option<EventStatus>,
    #[serde(default)]
    pub settings: Option<EventSettings>,
    /// Days after archiving that participants' personal data is kept (0 to 3650).
    #[serde(default)]
    pub retention_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<OffsetDateTime>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub venue: Option<Option<String>>,
    #[serde(default)]
    pub status: Option<EventStatus>,
    /// Replaces the settings object as a whole.
    #[serde(default)]
    pub settings: Option<EventSettings>,
    /// Days after archiving that participants' personal data is kept (0 to 3650); `null`
    /// keeps it until erased by hand.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub retention_days: Option<Option<i64>>,
}

/// Longest retention an organizer may set (ten years).
pub const MAX_RETENTION_DAYS: i64 = 3650;

/// A retention in days, 0 to [`MAX_RETENTION_DAYS`]; anything else is a 422 naming the field.
fn retention_days(days: Option<i64>) -> Result<Option<i64>, Error> {
    match days {
        Some(d) if !(0..=MAX_RETENTION_DAYS).contains(&d) => Err(Error::validation(
            "retention_days",
            format!("retention_days is a number of days from 0 to {MAX_RETENTION_DAYS}"),
        )),
        d => Ok(d),
    }
}

fn check_window(starts_at: i64, ends_at: i64) -> Result<(), Error> {
    if ends_at < starts_at {
        return Err(Error::validation(
            "ends_at",
            "ends_at must not be before starts_at",
        ));
    }
    // Ticket validity is signed as u32 unix seconds.
    if starts_at < 0 || ends_at / 1000 > i64::from(u32::MAX) - 86_400 * 30 {
        return Err(Error::validation(
            "starts_at",
            "event times must lie between 1970 and 2105",
        ));
    }
    Ok(())
}

/// Lists the events the caller has a role on.
#[utoipa::path(get, operation_id = "event_list", path = "/api/v1/events", tag = "events", security(("bearer" = [])), params(PageParams),
    responses((status = 200, description = "OK", body = Page<EventOut>), (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<EventOut>>, Error> {
    let limit = params.limit()?;
    let after = params.after()?;
    let rows = match auth.visible_events() {
        None => store::events::list(&state.db, after, limit + 1).await?,
        // A user with roles on single events only sees those: a few, read one by one.
        Some(ids) => {
            let mut rows = Vec::new();
            for id in ids.into_iter().filter(|id| after.is_none_or(|a| *id > a)) {
                if rows.len() as i64 > limit {
                    break;
                }
                if let Some(row) = store::events::get(&state.db, id).await? {
                    rows.push(row);
                }
            }
            rows
        }
    };
    Ok(Json(page(rows, limit, |e| e.id, EventOut::from_row)?))
}

/// Creates an event with a fresh signing key, BLE secret and mesh key (admin).
#[utoipa::path(post, operation_id = "event_create", path = "/api/v1/events", tag = "events", security(("bearer" = [])), request_body = EventCreate,
    responses((status = 201, description = "Created", body = EventOut), (status = 403, description = "Forbidden for this role or gate", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Json(req): Json<EventCreate>,
) -> Result<(StatusCode, Json<EventOut>), Error> {
    auth.require(Role::Admin)?;
    let name = required_text("name", &req.name, 200)?;
    let starts_at = time_to_ms(req.starts_at);
    let ends_at = time_to_ms(req.ends_at);
    check_window(starts_at, ends_at)?;
    let settings = req.settings.unwrap_or_default();
    settings.validate()?;
    let now = now_ms();
    // The event tag is a random u32; on the rare collision draw again.
    for _attempt in 0..5 {
        let id = Uuid::now_v7();
        let event_tag = u32::from_be_bytes(crate::domain::crypto::random_bytes::<4>()?);
        let row = EventRow {
            id,
            name: name.clone(),
            venue: optional_line("venue", req.venue.clone())?,
            starts_at,
            ends_at,
            status: req.status.unwrap_or(EventStatus::Draft).as_str().to_owned(),
            settings: serde_json::to_string(&settings).map_err(anyhow::Error::from)?,
            event_tag: i64::from(event_tag),
            created_at: now,
            updated_at: now,
            retention_days: retention_days(req.retention_days)?,
            archived_at: (req.status == Some(EventStatus::Archived)).then_some(now),
            purged_at: None,
        };
        let (secrets, key, key_change) =
            crate::service::tickets::new_event_material(&state.master, id, event_tag, now)?;
        let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
        match store::events::insert(uow.tx(), &row, &secrets).await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => {
                uow.rollback().await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        store::events::insert_signing_key(uow.tx(), id, &key).await?;
        store::audit::record(
            uow.tx(),
            &auth.actor(),
            "event.create",
            Some(id),
            Some(format!("event:{id}")),
            serde_json::json!({"name": row.name}),
        )
        .await?;
        uow.change(id, key_change, false)?;
        uow.commit(&state.notifier).await?;
        tracing::info!(event.id = %id, "event created");
        return Ok((StatusCode::CREATED, Json(EventOut::from_row(row)?)));
    }
    Err(Error::Internal(anyhow::anyhow!(
        "no free event tag after 5 attempts"
    )))
}

/// One event.
#[utoipa::path(get, operation_id = "event_get", path = "/api/v1/events/{event}", tag = "events", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "OK", body = EventOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<Json<EventOut>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    Ok(Json(EventOut::from_row(
        load_event(&state, event_id).await?,
    )?))
}

/// Changes an event (admin). A change of `settings.allow_multiple_checkins` is replicated to
/// every gate. Existing tickets keep their validity; reissue them after moving the dates.
#[utoipa::path(patch, operation_id = "event_update", path = "/api/v1/events/{event}", tag = "events", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = EventPatch,
    responses((status = 200, description = "OK", body = EventOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Json(req): Json<EventPatch>,
) -> Result<Json<EventOut>, Error> {
    auth.require_on(event_id, Role::Admin)?;
    // Loaded before the transaction: never wait for a second pooled connection while holding one.
    let keys = crate::service::tickets::EventKeys::load(&state.db, &state.master, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let mut row = store::events::get_tx(uow.tx(), event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let before = EventSettings::parse(&row.settings)?;
    let was = EventStatus::parse(&row.status)?;
    // An archived event is read-only: only its own status may be asked for (and it stays).
    if was == EventStatus::Archived
        && (req.name.is_some()
            || req.starts_at.is_some()
            || req.ends_at.is_some()
            || req.venue.is_some()
            || req.settings.is_some())
    {
        crate::domain::event::require_writable(was)?;
    }
    if let Some(name) = &req.name {
        row.name = required_text("name", name, 200)?;
    }
    if let Some(t) = req.starts_at {
        row.starts_at = time_to_ms(t);
    }
    if let Some(t) = req.ends_at {
        row.ends_at = time_to_ms(t);
    }
    check_window(row.starts_at, row.ends_at)?;
    if let Some(venue) = req.venue {
        row.venue = optional_line("venue", venue)?;
    }
    if let Some(status) = req.status {
        crate::domain::event::check_transition(was, status)?;
        row.status = status.as_str().to_owned();
    }
    if let Some(days) = req.retention_days {
        // Allowed on an archived event too: it is how its personal data goes.
        row.retention_days = retention_days(days)?;
    }
    let status = EventStatus::parse(&row.status)?;
    let settings = req.settings.clone().unwrap_or_else(|| before.clone());
    settings.validate()?;
    row.settings = serde_json::to_string(&settings).map_err(anyhow::Error::from)?;
    row.updated_at = now_ms();
    if status == EventStatus::Archived && was != EventStatus::Archived {
        row.archived_at = Some(row.updated_at);
    }
    store::events::update(uow.tx(), &row).await?;
    store::audit::record(
        uow.tx(),
        &auth.actor(),
        "event.update",
        Some(event_id),
        Some(format!("event:{event_id}")),
        serde_json::json!({"status": row.status, "settings_changed": settings != before,
            "retention_days": row.retention_days}),
    )
    .await?;
    if settings.allow_multiple_checkins != before.allow_multiple_checkins
        || settings.daily_checkout() != before.daily_checkout()
        || settings.utc_offset_minutes != before.utc_offset_minutes
        || settings.ticket_types != before.ticket_types
        || status != was
    {
        super::gates::replicate_all_gates(&mut uow, event_id, &keys, &settings, status).await?;
    }
    uow.commit(&state.notifier).await?;
    state.redeem.forget_event(event_id);
    Ok(Json(EventOut::from_row(row)?))
}

/// Deletes an event and everything in it (admin). A `live` event cannot be deleted: close it
/// first.
#[utoipa::path(delete, operation_id = "event_delete", path = "/api/v1/events/{event}", tag = "events", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 204, description = "No content"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    auth.require_on(event_id, Role::Admin)?;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let row = store::events::get_tx(uow.tx(), event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    if row.status == "live" {
        return Err(Error::Conflict(
            "the event is live; set its status to closed or archived before deleting it".into(),
        ));
    }
    store::events::delete(uow.tx(), event_id).await?;
    store::audit::record(
        uow.tx(),
        &auth.actor(),
        "event.delete",
        Some(event_id),
        Some(format!("event:{event_id}")),
        serde_json::json!({"name": row.name}),
    )
    .await?;
    uow.commit(&state.notifier).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SigningKeyOut {
    pub key_id: u32,
    /// Hex of the 32-byte ed25519 public key (for `gate-agent inspect --public-key`).
    pub public_key: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retired_at: Option<OffsetDateTime>,
}

/// The event's ticket verification keys (public halves only).
#[utoipa::path(get, operation_id = "event_keys", path = "/api/v1/events/{event}/keys", tag = "events", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "OK", body = Page<SigningKeyOut>), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn keys(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<Json<Page<SigningKeyOut>>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let rows = store::events::signing_keys(&state.db, event_id).await?;
    let items = rows
        .into_iter()
        .map(|k| {
            Ok(SigningKeyOut {
                key_id: u32::try_from(k.key_id).map_err(anyhow::Error::from)?,
                public_key: hex::encode(&k.public_key),
                created_at: ms_to_time(k.created_at),
                retired_at: k.retired_at.map(ms_to_time),
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}
