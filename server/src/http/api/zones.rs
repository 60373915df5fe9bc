//! `GET|POST /api/v1/events/{event}/zones`, `GET|PATCH|DELETE …/zones/{zone}`: rooms, sessions
//! and areas with a capacity.
//!
//! A zone is one bit (0..=15) of the tickets' `scopes` bitmask: ticket types map onto zones
//! through the scopes their tickets carry, and a gate admits into the zones whose bit is in its
//! `zone_mask`. Every change re-replicates the configuration of every gate of the event, which
//! carries the event's zones, so gates refuse `zone_full` offline.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sync_protocol::zones::MAX_ZONE_BIT;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Page, load_event};
use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::domain::event::EventSettings;
use crate::domain::text::required_text;
use crate::http::error::Problem;
use crate::http::extract::{Json, Path, double_option};
use crate::service::AppState;
use crate::service::tickets::EventKeys;
use crate::service::uow::UnitOfWork;
use crate::store::zones::ZoneRow;
use crate::store::{self, ms_to_time, now_ms};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ZoneOut {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    /// The scope bit (0..=15) tickets carry for this zone and gates list in their `zone_mask`.
    pub bit: u8,
    /// Hard capacity: the entry that would exceed it is refused with `zone_full`.
    pub capacity: Option<u32>,
    /// Soft threshold: entries that reach it are admitted with a warning on the gate's screen.
    pub soft_capacity: Option<u32>,
    /// Entering this zone checks the holder out of the zone they are in.
    pub transfer: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl ZoneOut {
    fn from_row(z: &ZoneRow) -> Result<Self, Error> {
        let rule = z.rule()?;
        Ok(Self {
            id: z.id,
            event_id: z.event_id,
            name: rule.name,
            bit: rule.bit,
            capacity: rule.capacity,
            soft_capacity: rule.soft_capacity,
            transfer: rule.transfer,
            created_at: ms_to_time(z.created_at),
            updated_at: ms_to_time(z.updated_at),
        })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneCreate {
    pub name: String,
    /// Defaults to the lowest bit no zone of the event uses.
    #[serde(default)]
    pub bit: Option<u8>,
    #[serde(default)]
    pub capacity: Option<u32>,
    #[serde(default)]
    pub soft_capacity: Option<u32>,
    #[serde(default)]
    pub transfer: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZonePatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub capacity: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub soft_capacity: Option<Option<u32>>,
    #[serde(default)]
    pub transfer: Option<bool>,
}

fn check_limits(capacity: Option<i64>, soft: Option<i64>) -> Result<(), Error> {
    if let (Some(c), Some(s)) = (capacity, soft)
        && s > c
    {
        return Err(Error::validation(
            "soft_capacity",
            "soft_capacity must not be above capacity",
        ));
    }
    Ok(())
}

/// Saves (or deletes) a zone and re-replicates every gate's configuration, in one transaction.
async fn save(
    state: &AppState,
    auth: &Auth,
    event_id: Uuid,
    zone: &ZoneRow,
    action: &str,
    delete: bool,
) -> Result<(), Error> {
    let event = load_event(state, event_id).await?;
    let status = crate::domain::event::EventStatus::parse(&event.status)?;
    crate::domain::event::require_writable(status)?;
    let settings = EventSettings::parse(&event.settings)?;
    let mut keys = EventKeys::load(&state.db, &state.master, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let written = if delete {
        store::zones::delete(uow.tx(), event_id, zone.id).await
    } else {
        store::zones::upsert(uow.tx(), zone).await.map(|()| true)
    };
    match written {
        Ok(true) => {}
        Ok(false) => return Err(Error::NotFound("zone")),
        Err(e) if store::is_unique_violation(&e) => {
            return Err(Error::Conflict(
                "another zone of this event has this name or bit".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    keys.zones = store::zones::rules_tx(uow.tx(), event_id).await?;
    store::audit::record(
        uow.tx(),
        &auth.actor(),
        action,
        Some(event_id),
        Some(format!("zone:{}", zone.id)),
        serde_json::json!({"name": zone.name, "bit": zone.bit, "capacity": zone.capacity}),
    )
    .await?;
    super::gates::replicate_all_gates(&mut uow, event_id, &keys, &settings, status).await?;
    uow.commit(&state.notifier).await?;
    Ok(())
}

/// Lists the zones of an event.
#[utoipa::path(get, operation_id = "zone_list", path = "/api/v1/events/{event}/zones", tag = "zones", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "OK", body = Page<ZoneOut>), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<Json<Page<ZoneOut>>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let rows = store::zones::list(&state.db, event_id).await?;
    Ok(Json(Page {
        items: rows
            .iter()
            .map(ZoneOut::from_row)
            .collect::<Result<_, _>>()?,
        next_cursor: None,
    }))
}

/// Creates a zone (admin).
#[utoipa::path(post, operation_id = "zone_create", path = "/api/v1/events/{event}/zones", tag = "zones", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = ZoneCreate,
    responses((status = 201, description = "Created", body = ZoneOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Name or bit taken", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Json(req): Json<ZoneCreate>,
) -> Result<(StatusCode, Json<ZoneOut>), Error> {
    auth.require_on(event_id, Role::Admin)?;
    load_event(&state, event_id).await?;
    let name = required_text("name", &req.name, 100)?;
    let bit = match req.bit {
        Some(b) if b > MAX_ZONE_BIT => {
            return Err(Error::validation("bit", "bit must be between 0 and 15"));
        }
        Some(b) => b,
        None => {
            let used: Vec<i64> = store::zones::list(&state.db, event_id)
                .await?
                .iter()
                .map(|z| z.bit)
                .collect();
            (0..=MAX_ZONE_BIT)
                .find(|b| !used.contains(&i64::from(*b)))
                .ok_or_else(|| Error::validation("bit", "all 16 zone bits are in use"))?
        }
    };
    let capacity = req.capacity.map(i64::from);
    let soft_capacity = req.soft_capacity.map(i64::from);
    check_limits(capacity, soft_capacity)?;
    let now = now_ms();
    let zone = ZoneRow {
        id: Uuid::now_v7(),
        event_id,
        bit: i64::from(bit),
        name,
        capacity,
        soft_capacity,
        transfer: req.transfer,
        created_at: now,
        updated_at: now,
    };
    save(&state, &auth, event_id, &zone, "zone.create", false).await?;
    Ok((StatusCode::CREATED, Json(ZoneOut::from_row(&zone)?)))
}

/// One zone.
#[utoipa::path(get, operation_id = "zone_get", path = "/api/v1/events/{event}/zones/{zone}", tag = "zones", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("zone" = Uuid, Path, description = "Zone id")),
    responses((status = 200, description = "OK", body = ZoneOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, zone_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<ZoneOut>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    let zone = store::zones::get(&state.db, event_id, zone_id)
        .await?
        .ok_or(Error::NotFound("zone"))?;
    Ok(Json(ZoneOut::from_row(&zone)?))
}

/// Changes a zone (admin).
#[utoipa::path(patch, operation_id = "zone_update", path = "/api/v1/events/{event}/zones/{zone}", tag = "zones", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("zone" = Uuid, Path, description = "Zone id")),
    request_body = ZonePatch,
    responses((status = 200, description = "OK", body = ZoneOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, zone_id)): Path<(Uuid, Uuid)>,
    Json(req): Json<ZonePatch>,
) -> Result<Json<ZoneOut>, Error> {
    auth.require_on(event_id, Role::Admin)?;
    let mut zone = store::zones::get(&state.db, event_id, zone_id)
        .await?
        .ok_or(Error::NotFound("zone"))?;
    if let Some(name) = &req.name {
        zone.name = required_text("name", name, 100)?;
    }
    if let Some(c) = req.capacity {
        zone.capacity = c.map(i64::from);
    }
    if let Some(s) = req.soft_capacity {
        zone.soft_capacity = s.map(i64::from);
    }
    if let Some(t) = req.transfer {
        zone.transfer = t;
    }
    check_limits(zone.capacity, zone.soft_capacity)?;
    zone.updated_at = now_ms();
    save(&state, &auth, event_id, &zone, "zone.update", false).await?;
    Ok(Json(ZoneOut::from_row(&zone)?))
}

/// Deletes a zone (admin). Tickets keep their scope bit; gates stop counting the zone.
#[utoipa::path(delete, operation_id = "zone_delete", path = "/api/v1/events/{event}/zones/{zone}", tag = "zones", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("zone" = Uuid, Path, description = "Zone id")),
    responses((status = 204, description = "No content"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, zone_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    auth.require_on(event_id, Role::Admin)?;
    let zone = store::zones::get(&state.db, event_id, zone_id)
        .await?
        .ok_or(Error::NotFound("zone"))?;
    save(&state, &auth, event_id, &zone, "zone.delete", true).await?;
    Ok(StatusCode::NO_CONTENT)
}
