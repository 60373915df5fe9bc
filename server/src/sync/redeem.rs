//! `POST /api/v1/events/{event}/redeem`: the gate decision made on the server, for thin clients
//! with no replica (a phone browser at a side door). Same checks, same reasons as a gate
//! (`sync_protocol::decide`), and the result is stored as a check-in of the named gate and
//! merged like any pushed one. The ticket's merge lock is held from the presence check to the
//! commit, so concurrent redeems of one ticket admit it exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use sync_protocol::decide::{
    Credential, GatePolicy, check_ticket, check_window, check_zone, parse_text,
};
use sync_protocol::merge::FoldPolicy;
use sync_protocol::wire::{Checkin, Decision, Direction, Method, Reason};
use sync_protocol::{KeyRing, ShortCode};
use uuid::Uuid;

use super::gate_auth::{self, GateAuth};
use super::merge::{self, Row};
use super::notify::Live;
use crate::auth::{Auth, Role};
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::state::AppState;
use crate::store::{self, Tx, db_run, now_ms, tx_run};

/// How long a cached key ring / gate configuration is trusted. Rotations and gate edits reach
/// the online redeem within this time.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// Who may redeem: staff (organizer token) or the enrolled gate itself.
pub enum RedeemAuth {
    Staff(Auth),
    Gate(GateAuth),
}

impl FromRequestParts<AppState> for RedeemAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(token) = gate_auth::bearer(parts)
            && token.starts_with("ugc_")
        {
            return gate_auth::lookup(state, token)
                .await?
                .map(RedeemAuth::Gate)
                .ok_or(ApiError::Unauthorized(
                    "this gate credential is unknown or revoked; enroll the gate again",
                ));
        }
        let auth = Auth::from_request_parts(parts, state).await?;
        auth.require(Role::Staff)?;
        Ok(RedeemAuth::Staff(auth))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    /// The scanned `U1:` ticket or a typed short code.
    pub credential: String,
    /// The gate the thin client stands at.
    pub gate_id: Uuid,
    /// `in` (default for entry and two-way gates) or `out`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub direction: Option<Direction>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RedeemOut {
    #[schema(value_type = String)]
    pub decision: Decision,
    #[schema(value_type = Option<String>)]
    pub reason: Option<Reason>,
    pub ticket_serial: Option<u64>,
    pub name: Option<String>,
    pub attention: Option<String>,
    pub checkin_id: Uuid,
    #[schema(value_type = String)]
    pub direction: Direction,
}

/// What the redeem path keeps per event and gate, refreshed every [`CACHE_TTL`].
#[derive(Clone, Debug)]
pub struct EventCache {
    ring: Arc<KeyRing>,
    event_tag: u32,
    policy: FoldPolicy,
    loaded: Instant,
}

#[derive(Clone, FromRow)]
struct GateLite {
    event_id: Uuid,
    direction: String,
    zone_mask: i64,
    allow_reentry: bool,
    is_active: bool,
}

#[derive(FromRow)]
struct KeyLite {
    key_id: i64,
    public_key: Vec<u8>,
}

async fn event_cache(state: &AppState, event_id: Uuid) -> Result<EventCache, ApiError> {
    if let Some(c) = state
        .redeem_events
        .lock()
        .ok()
        .and_then(|m| m.get(&event_id).cloned())
        .filter(|c| c.loaded.elapsed() < CACHE_TTL)
    {
        return Ok(c);
    }
    let ev = crate::routes::load_event(state, event_id).await?;
    let keys: Vec<KeyLite> = db_run!(&state.db, p => {
        sqlx::query_as("SELECT key_id, public_key FROM signing_keys WHERE event_id = $1")
            .bind(event_id)
            .fetch_all(p)
            .await?
    });
    let mut ring = KeyRing::new();
    for k in keys {
        let bytes: [u8; 32] = k
            .public_key
            .try_into()
            .map_err(|_| anyhow::anyhow!("stored public key is not 32 bytes"))?;
        ring.insert_bytes(
            u32::try_from(k.key_id).map_err(anyhow::Error::from)?,
            &bytes,
        )
        .map_err(|e| anyhow::anyhow!("stored public key invalid: {e}"))?;
    }
    let settings: serde_json::Value = serde_json::from_str(&ev.settings).unwrap_or_default();
    let c = EventCache {
        ring: Arc::new(ring),
        event_tag: u32::try_from(ev.event_tag).map_err(anyhow::Error::from)?,
        policy: FoldPolicy {
            allow_multiple_checkins: settings
                .get("allow_multiple_checkins")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        },
        loaded: Instant::now(),
    };
    if let Ok(mut m) = state.redeem_events.lock() {
        m.insert(event_id, c.clone());
    }
    Ok(c)
}

#[derive(FromRow)]
struct TicketLite {
    serial: i64,
    scopes: i64,
    valid_from: i64,
    valid_until: i64,
    status: String,
    name: Option<String>,
    attention: Option<String>,
}

const TICKET_BY_SERIAL: &str =
    "SELECT t.serial, t.scopes, t.valid_from, t.valid_until, t.status, p.name, p.attention
     FROM tickets t JOIN participants p ON p.id = t.participant_id
     WHERE t.event_id = $1 AND t.serial = $2";

/// Decides a credential on the server and stores it as a check-in of `gate_id`.
#[utoipa::path(post, path = "/api/v1/events/{event}/redeem", tag = "checkins",
    security(("bearer" = []), ("gate" = [])),
    params(("event" = Uuid, Path, description = "Event id")), request_body = RedeemBody,
    responses((status = 200, body = RedeemOut),
              (status = 403, description = "A gate credential of another event, or a viewer"),
              (status = 404, description = "Unknown event or gate"),
              (status = 422, description = "Invalid body")))]
pub async fn redeem(
    State(state): State<AppState>,
    auth: RedeemAuth,
    Path(event_id): Path<Uuid>,
    Json(body): Json<RedeemBody>,
) -> Result<axum::Json<RedeemOut>, ApiError> {
    if let RedeemAuth::Gate(g) = &auth {
        g.require_event(event_id)?;
    }
    let cache = event_cache(&state, event_id).await?;
    let gate: GateLite = db_run!(&state.db, p => {
        sqlx::query_as(
            "SELECT event_id, direction, zone_mask, allow_reentry, is_active FROM gates WHERE id = $1",
        )
        .bind(body.gate_id)
        .fetch_optional(p)
        .await?
    })
    .filter(|g: &GateLite| g.event_id == event_id)
    .ok_or(ApiError::NotFound("gate"))?;
    if !gate.is_active {
        return Err(ApiError::Conflict("the gate is deactivated".into()));
    }
    if let RedeemAuth::Gate(g) = &auth
        && g.gate_id != body.gate_id
    {
        return Err(ApiError::Forbidden);
    }
    let direction = body.direction.unwrap_or(if gate.direction == "out" {
        Direction::Out
    } else {
        Direction::In
    });
    let zone_mask = u16::try_from(gate.zone_mask).unwrap_or(0);
    let now = now_ms();
    let now_unix = u64::try_from(now / 1000).unwrap_or(0);
    let entering = direction == Direction::In;

    // Storage-free checks first (no lock held while verifying the signature).
    let (serial, method, mut verdict, code) = match parse_text(&body.credential) {
        Ok(Credential::Ticket(t)) => {
            let policy = GatePolicy {
                event_tag: cache.event_tag,
                zone_mask: if entering { zone_mask } else { 0 },
                now_unix,
                grace_seconds: if entering { 60 } else { u32::MAX / 2 },
            };
            (
                Some(t.fields.serial),
                Method::Qr,
                check_ticket(&t, &cache.ring, &policy),
                None,
            )
        }
        Ok(Credential::Code(c)) => (None, Method::Code, Ok(()), Some(c)),
        Ok(Credential::Ble(_)) | Err(_) => {
            let reason = parse_text(&body.credential)
                .err()
                .unwrap_or(Reason::Malformed);
            (None, Method::Code, Err(reason), None)
        }
    };

    let mut tx = state.db.begin().await?;
    let (serial, ticket) = match (serial, code) {
        (Some(s), _) => {
            let t = ticket_tx(&mut tx, event_id, s).await?;
            (Some(s), t)
        }
        (None, Some(code)) => {
            let t = ticket_by_code(&mut tx, event_id, code).await?;
            match t {
                Some(t) => {
                    let s = u64::try_from(t.serial).map_err(anyhow::Error::from)?;
                    if entering {
                        verdict = check_window(
                            u32::try_from(t.valid_from).unwrap_or(0),
                            u32::try_from(t.valid_until).unwrap_or(u32::MAX),
                            now_unix,
                            60,
                        )
                        .and_then(|()| check_zone(u16::try_from(t.scopes).unwrap_or(0), zone_mask));
                    }
                    (Some(s), Some(t))
                }
                None => {
                    verdict = Err(Reason::UnknownCode);
                    (None, None)
                }
            }
        }
        (None, None) => (None, None),
    };
    if let Some(s) = serial {
        merge::lock_tickets(&mut tx, event_id, &[s]).await?;
        if verdict.is_ok() && entering {
            if ticket.as_ref().is_some_and(|t| t.status == "revoked") {
                verdict = Err(Reason::Revoked);
            } else if !cache.policy.allow_multiple_checkins {
                let p: Option<(bool, i64)> = tx_run!(&mut tx, c => {
                    sqlx::query_as("SELECT inside, entries FROM presence WHERE event_id = $1 AND serial = $2")
                        .bind(event_id)
                        .bind(i64::try_from(s).map_err(anyhow::Error::from)?)
                        .fetch_optional(&mut *c)
                        .await?
                });
                let (inside, entries) = p.unwrap_or((false, 0));
                if inside || (!gate.allow_reentry && entries > 0) {
                    verdict = Err(Reason::AlreadyInside);
                }
            }
        }
    }
    let (decision, reason) = match verdict {
        Ok(()) => (Decision::Admit, None),
        Err(r) => (Decision::Reject, Some(r)),
    };

    // The next seq of this gate's log, under the gate row's lock.
    let seq: i64 = tx_run!(&mut tx, c => {
        sqlx::query_scalar(
            "UPDATE gates SET acked_seq = acked_seq + 1 WHERE id = $1 RETURNING acked_seq",
        )
        .bind(body.gate_id)
        .fetch_one(&mut *c)
        .await?
    });
    let hlc = state.hlc_now();
    let checkin = Checkin {
        id: Uuid::now_v7(),
        seq: u64::try_from(seq).map_err(anyhow::Error::from)?,
        ticket_serial: serial,
        code: if serial.is_none() {
            Some(body.credential.trim().chars().take(64).collect())
        } else {
            None
        },
        method,
        direction,
        decision,
        reason,
        hlc,
        scanned_at: store::ms_to_time(now),
        replica_cursor: store::changes::head_tx(&mut tx, event_id).await?,
        operator_override: None,
        undoes: None,
    };
    merge::insert_checkins(
        &mut tx,
        event_id,
        body.gate_id,
        &[Row {
            checkin: checkin.clone(),
            invalid: None,
        }],
        now,
    )
    .await?;
    let mut live = Vec::new();
    if let Some(s) = serial {
        let refolded = merge::refold(&mut tx, event_id, &[s].into(), cache.policy, now).await?;
        live.extend(refolded.live);
        if decision == Decision::Admit {
            live.push(Live::Admission {
                event_id,
                ticket_serial: s,
                gate_id: body.gate_id,
                checkin_id: checkin.id,
                direction,
                inside: refolded.states.get(&s).is_some_and(|st| st.inside),
            });
        }
        store::changes::append(&mut tx, event_id, &refolded.changes).await?;
    }
    let staged = state.notifier.stage(&mut tx, live).await?;
    tx.commit().await?;
    state.notifier.committed(staged);
    Ok(axum::Json(RedeemOut {
        decision,
        reason,
        ticket_serial: serial,
        name: ticket.as_ref().and_then(|t| t.name.clone()),
        attention: ticket.as_ref().and_then(|t| t.attention.clone()),
        checkin_id: checkin.id,
        direction,
    }))
}

async fn ticket_tx(
    tx: &mut Tx,
    event_id: Uuid,
    serial: u64,
) -> Result<Option<TicketLite>, ApiError> {
    let serial = i64::try_from(serial).map_err(anyhow::Error::from)?;
    Ok(tx_run!(tx, c => {
        sqlx::query_as(TICKET_BY_SERIAL)
            .bind(event_id)
            .bind(serial)
            .fetch_optional(&mut *c)
            .await?
    }))
}

async fn ticket_by_code(
    tx: &mut Tx,
    event_id: Uuid,
    code: ShortCode,
) -> Result<Option<TicketLite>, ApiError> {
    let value = i64::try_from(code.value()).map_err(anyhow::Error::from)?;
    Ok(tx_run!(tx, c => {
        sqlx::query_as(
            "SELECT t.serial, t.scopes, t.valid_from, t.valid_until, t.status, p.name, p.attention
             FROM tickets t JOIN participants p ON p.id = t.participant_id
             WHERE t.event_id = $1 AND t.short_code = $2",
        )
        .bind(event_id)
        .bind(value)
        .fetch_optional(&mut *c)
        .await?
    }))
}
