//! `GET|POST /api/v1/events/{event}/gates`, `GET|PATCH|DELETE …/gates/{gate}`,
//! `POST …/gates/{gate}/enrollments`.
//!
//! Every change to a gate is replicated as a `gate_config` change, so gates learn each other's
//! configuration (mesh peers) and a deactivated gate learns it has been switched off.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sync_protocol::wire::{BeaconConfig, ChangeData, GateConfig, GateDirection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Page, load_event};
use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::domain::crypto::{random_bytes, sha256};
use crate::domain::event::EventSettings;
use crate::domain::gate::normalize_enrollment_code;
use crate::domain::text::{optional_line, required_text};
use crate::http::error::Problem;
use crate::http::extract::{Json, Path, double_option};
use crate::service::AppState;
use crate::service::gate_status;
use crate::service::tickets::EventKeys;
use crate::service::uow::UnitOfWork;
use crate::store::gates::{GateRow, GateStatusRow};
use crate::store::{self, ms_to_time, now_ms};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GateOut {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    pub zone: Option<String>,
    #[schema(value_type = String, example = "both")]
    pub direction: GateDirection,
    /// Scope bits this gate checks (0 = any ticket of the event).
    pub zone_mask: u16,
    pub allow_reentry: bool,
    /// `{service_uuid, threshold_dbm, window_ms, min_samples}` or null.
    #[schema(value_type = Option<Object>)]
    pub beacon_config: Option<BeaconConfig>,
    pub mesh_addr: Option<String>,
    pub is_active: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// When the server last heard from the gate (a pull or push); null if never.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen_at: Option<OffsetDateTime>,
    /// The gate agent's version, as it last reported it.
    pub agent_version: Option<String>,
    /// Check-ins in the gate's outbox not yet acknowledged, as it last reported it.
    pub outbox_depth: Option<i64>,
    /// When the gate last synced, by its own report.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_sync_at: Option<OffsetDateTime>,
    /// Heard from within the last 90 s.
    pub online: bool,
}

fn beacon_of(g: &GateRow) -> Result<Option<BeaconConfig>, Error> {
    g.beacon_config
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| Error::Internal(anyhow::anyhow!("bad beacon_config in database: {e}")))
}

impl GateOut {
    fn from_row(g: GateRow, status: Option<&GateStatusRow>) -> Result<Self, Error> {
        let last_seen = status.and_then(|s| s.last_seen_at);
        Ok(Self {
            last_seen_at: last_seen.map(ms_to_time),
            agent_version: status.and_then(|s| s.agent_version.clone()),
            outbox_depth: status.and_then(|s| s.outbox_depth),
            last_sync_at: status.and_then(|s| s.last_sync_at).map(ms_to_time),
            online: gate_status::online(last_seen, now_ms()),
            beacon_config: beacon_of(&g)?,
            zone_mask: u16::try_from(g.zone_mask).map_err(anyhow::Error::from)?,
            direction: g.direction()?,
            id: g.id,
            event_id: g.event_id,
            name: g.name,
            zone: g.zone,
            allow_reentry: g.allow_reentry,
            mesh_addr: g.mesh_addr,
            is_active: g.is_active,
            created_at: ms_to_time(g.created_at),
            updated_at: ms_to_time(g.updated_at),
        })
    }
}

/// The replicated configuration of a gate.
pub fn gate_change(
    g: &GateRow,
    keys: &EventKeys,
    settings: &EventSettings,
    status: crate::domain::event::EventStatus,
) -> Result<ChangeData, Error> {
    Ok(ChangeData::GateConfig(GateConfig {
        gate_id: g.id,
        event_id: g.event_id,
        event_tag: keys.event_tag,
        name: g.name.clone(),
        zone: g.zone.clone(),
        zone_mask: u16::try_from(g.zone_mask).map_err(anyhow::Error::from)?,
        direction: g.direction()?,
        allow_reentry: g.allow_reentry,
        allow_multiple_checkins: settings.allow_multiple_checkins,
        beacon_config: beacon_of(g)?,
        is_active: g.is_active,
        // The shared per-event mesh key is no longer handed out: a peer proves itself with its
        // own key, and only an active gate's key is replicated (DESIGN §8).
        mesh_key: None,
        mesh_public_key: if g.is_active {
            g.mesh_public_key.clone()
        } else {
            None
        },
        mesh_addr: g.mesh_addr.clone(),
        supervisor_pin: keys.supervisor_pin.clone(),
        event_status: status.phase(),
        barcode_key: Some(hex::encode(keys.barcode_key)),
        zones: keys.zones.clone(),
        auto_checkout: settings.daily_checkout(),
        utc_offset_minutes: settings.utc_offset_minutes,
        ticket_types: settings.ticket_types.clone(),
    }))
}

/// Records the replicated configuration of every gate of the event in `uow` (after a change to
/// something all of them carry: the event's status, settings, zones or supervisor PIN).
pub async fn replicate_all_gates(
    uow: &mut UnitOfWork,
    event_id: Uuid,
    keys: &EventKeys,
    settings: &EventSettings,
    status: crate::domain::event::EventStatus,
) -> Result<(), Error> {
    let gates = store::gates::list_tx(uow.tx(), event_id).await?;
    let changes = gates
        .iter()
        .map(|g| gate_change(g, keys, settings, status).map(|c| (c, false)))
        .collect::<Result<Vec<(ChangeData, bool)>, Error>>()?;
    uow.changes(event_id, changes)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateCreate {
    pub name: String,
    #[serde(default)]
    pub zone: Option<String>,
    /// Defaults to `both`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub direction: Option<GateDirection>,
    #[serde(default)]
    pub zone_mask: u16,
    #[serde(default)]
    pub allow_reentry: bool,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub beacon_config: Option<BeaconConfig>,
    #[serde(default)]
    pub mesh_addr: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatePatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub zone: Option<Option<String>>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub direction: Option<GateDirection>,
    #[serde(default)]
    pub zone_mask: Option<u16>,
    #[serde(default)]
    pub allow_reentry: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub beacon_config: Option<Option<BeaconConfig>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub mesh_addr: Option<Option<String>>,
    /// `false` deactivates the gate: its credentials are revoked and its replica wiped.
    #[serde(default)]
    pub is_active: Option<bool>,
}

fn check_beacon(b: &Option<BeaconConfig>) -> Result<(), Error> {
    if let Some(b) = b {
        if !(-127..=20).contains(&b.threshold_dbm) {
            return Err(Error::validation(
                "beacon_config.threshold_dbm",
                "threshold_dbm must be between -127 and 20",
            ));
        }
        if b.min_samples == 0 || b.window_ms == 0 {
            return Err(Error::validation(
                "beacon_config.min_samples",
                "window_ms and min_samples must be positive",
            ));
        }
    }
    Ok(())
}

/// Saves a gate, replicates its configuration and writes the audit line, in one transaction.
async fn save(
    state: &AppState,
    auth: &Auth,
    gate: &GateRow,
    action: &str,
    was_active: bool,
) -> Result<(), Error> {
    let event = load_event(state, gate.event_id).await?;
    let keys = EventKeys::load(&state.db, &state.master, gate.event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let status = crate::domain::event::EventStatus::parse(&event.status)?;
    crate::domain::event::require_writable(status)?;
    let change = gate_change(gate, &keys, &EventSettings::parse(&event.settings)?, status)?;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    store::gates::upsert(uow.tx(), gate).await?;
    if was_active && !gate.is_active {
        store::gates::revoke_credentials(uow.tx(), gate.id, gate.updated_at).await?;
    }
    store::audit::record(
        uow.tx(),
        &auth.actor(),
        action,
        Some(gate.event_id),
        Some(format!("gate:{}", gate.id)),
        serde_json::json!({"name": gate.name, "is_active": gate.is_active}),
    )
    .await?;
    uow.change(gate.event_id, change, false)?;
    uow.commit(&state.notifier).await?;
    Ok(())
}

/// Lists the gates of an event.
#[utoipa::path(get, operation_id = "gate_list", path = "/api/v1/events/{event}/gates", tag = "gates", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "OK", body = Page<GateOut>), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<Json<Page<GateOut>>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let rows = store::gates::list(&state.db, event_id).await?;
    let statuses: std::collections::HashMap<Uuid, GateStatusRow> =
        store::gates::statuses(&state.db, event_id)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
    Ok(Json(Page {
        items: rows
            .into_iter()
            .map(|g| {
                let status = statuses.get(&g.id);
                GateOut::from_row(g, status)
            })
            .collect::<Result<_, _>>()?,
        next_cursor: None,
    }))
}

/// Creates a gate (admin).
#[utoipa::path(post, operation_id = "gate_create", path = "/api/v1/events/{event}/gates", tag = "gates", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = GateCreate,
    responses((status = 201, description = "Created", body = GateOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Json(req): Json<GateCreate>,
) -> Result<(StatusCode, Json<GateOut>), Error> {
    auth.require_on(event_id, Role::Admin)?;
    load_event(&state, event_id).await?;
    let name = required_text("name", &req.name, 100)?;
    check_beacon(&req.beacon_config)?;
    let now = now_ms();
    let gate = GateRow {
        id: Uuid::now_v7(),
        event_id,
        name,
        zone: optional_line("zone", req.zone)?,
        direction: req.direction.unwrap_or_default().as_str().to_owned(),
        zone_mask: i64::from(req.zone_mask),
        allow_reentry: req.allow_reentry,
        beacon_config: req
            .beacon_config
            .map(|b| serde_json::to_string(&b))
            .transpose()
            .map_err(anyhow::Error::from)?,
        mesh_addr: optional_line("mesh_addr", req.mesh_addr)?,
        mesh_public_key: None,
        is_active: true,
        created_at: now,
        updated_at: now,
    };
    save(&state, &auth, &gate, "gate.create", true).await?;
    Ok((StatusCode::CREATED, Json(GateOut::from_row(gate, None)?)))
}

/// One gate.
#[utoipa::path(get, operation_id = "gate_get", path = "/api/v1/events/{event}/gates/{gate}", tag = "gates", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("gate" = Uuid, Path, description = "Gate id")),
    responses((status = 200, description = "OK", body = GateOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, gate_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<GateOut>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    let gate = store::gates::get(&state.db, event_id, gate_id)
        .await?
        .ok_or(Error::NotFound("gate"))?;
    let status = store::gates::status(&state.db, gate.id).await?;
    Ok(Json(GateOut::from_row(gate, status.as_ref())?))
}

/// Changes a gate (admin); `is_active: false` deactivates it.
#[utoipa::path(patch, operation_id = "gate_update", path = "/api/v1/events/{event}/gates/{gate}", tag = "gates", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("gate" = Uuid, Path, description = "Gate id")),
    request_body = GatePatch,
    responses((status = 200, description = "OK", body = GateOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid field (problem+json names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, gate_id)): Path<(Uuid, Uuid)>,
    Json(req): Json<GatePatch>,
) -> Result<Json<GateOut>, Error> {
    auth.require_on(event_id, Role::Admin)?;
    let mut gate = store::gates::get(&state.db, event_id, gate_id)
        .await?
        .ok_or(Error::NotFound("gate"))?;
    let was_active = gate.is_active;
    if let Some(name) = &req.name {
        gate.name = required_text("name", name, 100)?;
    }
    if let Some(zone) = req.zone {
        gate.zone = optional_line("zone", zone)?;
    }
    if let Some(d) = req.direction {
        gate.direction = d.as_str().to_owned();
    }
    if let Some(m) = req.zone_mask {
        gate.zone_mask = i64::from(m);
    }
    if let Some(r) = req.allow_reentry {
        gate.allow_reentry = r;
    }
    if let Some(b) = req.beacon_config {
        check_beacon(&b)?;
        gate.beacon_config = b
            .map(|b| serde_json::to_string(&b))
            .transpose()
            .map_err(anyhow::Error::from)?;
    }
    if let Some(a) = req.mesh_addr {
        gate.mesh_addr = optional_line("mesh_addr", a)?;
    }
    if let Some(active) = req.is_active {
        gate.is_active = active;
    }
    gate.updated_at = now_ms();
    save(&state, &auth, &gate, "gate.update", was_active).await?;
    let status = store::gates::status(&state.db, gate.id).await?;
    Ok(Json(GateOut::from_row(gate, status.as_ref())?))
}

/// Deactivates a gate (admin). Gates are never deleted: their check-ins reference them.
#[utoipa::path(delete, operation_id = "gate_deactivate", path = "/api/v1/events/{event}/gates/{gate}", tag = "gates", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("gate" = Uuid, Path, description = "Gate id")),
    responses((status = 204, description = "No content"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn deactivate(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, gate_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    auth.require_on(event_id, Role::Admin)?;
    let mut gate = store::gates::get(&state.db, event_id, gate_id)
        .await?
        .ok_or(Error::NotFound("gate"))?;
    let was_active = gate.is_active;
    gate.is_active = false;
    gate.updated_at = now_ms();
    save(&state, &auth, &gate, "gate.deactivate", was_active).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentCreate {
    /// How long the code stays valid, 60..=86400 seconds (default 900).
    #[serde(default)]
    pub ttl_seconds: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnrollmentOut {
    /// `XXXXX-XXXXX`, shown once; only its hash is stored.
    pub code: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub gate_id: Uuid,
}

/// Crockford base32 without look-alikes, as in short codes.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Creates a one-time enrollment code for a gate (admin). The agent exchanges it at
/// `POST /sync/v1/enroll` for the gate's credential.
#[utoipa::path(post, operation_id = "gate_enroll", path = "/api/v1/events/{event}/gates/{gate}/enrollments", tag = "gates", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ("gate" = Uuid, Path, description = "Gate id")),
    request_body(content = Option<EnrollmentCreate>, description = "Optional"),
    responses((status = 201, description = "Created", body = EnrollmentOut), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json")))]
pub async fn enroll(
    State(state): State<AppState>,
    auth: Auth,
    Path((event_id, gate_id)): Path<(Uuid, Uuid)>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<EnrollmentOut>), Error> {
    auth.require_on(event_id, Role::Admin)?;
    let req: EnrollmentCreate = if body.iter().all(u8::is_ascii_whitespace) {
        EnrollmentCreate::default()
    } else {
        crate::http::extract::parse_json(&body)?
    };
    let ttl = req.ttl_seconds.unwrap_or(900);
    if !(60..=86_400).contains(&ttl) {
        return Err(Error::validation(
            "ttl_seconds",
            "ttl_seconds must be between 60 and 86400",
        ));
    }
    let gate = store::gates::get(&state.db, event_id, gate_id)
        .await?
        .ok_or(Error::NotFound("gate"))?;
    if !gate.is_active {
        return Err(Error::Conflict(
            "the gate is deactivated; reactivate it first".into(),
        ));
    }
    // 10 characters of base32: 50 bits, plenty for a code that lives minutes and works once.
    let raw = random_bytes::<10>()?;
    let code: String = raw
        .iter()
        .map(|b| CODE_ALPHABET[usize::from(b & 31)] as char)
        .collect();
    let display = format!("{}-{}", &code[..5], &code[5..]);
    let now = now_ms();
    let expires_at = now + i64::from(ttl) * 1000;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    store::gates::insert_enrollment(
        uow.tx(),
        &sha256(normalize_enrollment_code(&code).as_bytes()),
        event_id,
        gate_id,
        Some(auth.user_id),
        now,
        expires_at,
    )
    .await?;
    store::audit::record(
        uow.tx(),
        &auth.actor(),
        "gate.enrollment.create",
        Some(event_id),
        Some(format!("gate:{gate_id}")),
        serde_json::json!({"ttl_seconds": ttl}),
    )
    .await?;
    uow.commit(&state.notifier).await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentOut {
            code: display,
            expires_at: ms_to_time(expires_at),
            gate_id,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_codes_normalise_to_the_stored_form() {
        assert_eq!(normalize_enrollment_code("abcde-fgh1o"), "ABCDEFGH10");
        assert_eq!(normalize_enrollment_code(" ABCDE FGHIJ "), "ABCDEFGH1J");
    }
}
