//! `gate-agent status`: what an operator or a monitoring script needs to know about a gate.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::decide::wall_ms;
use crate::replica::{Replica, ReplicaError};

/// A gate counts as online when it heard from the server this recently. The puller long-polls
/// with a 20 s wait, so a healthy gate refreshes `last_sync_at` at least that often.
pub const ONLINE_WITHIN_MS: u64 = 45_000;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    pub gate_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub server_url: Option<String>,
    pub gate_name: Option<String>,
    pub enrolled: bool,
    pub active: bool,
    pub online: bool,
    pub replica_cursor: u64,
    pub replica_tickets: u64,
    pub outbox_depth: u64,
    pub checkins_total: u64,
    pub last_sync_at: Option<String>,
    pub clock_offset_ms: i64,
    /// The ways this gate lets people through, as the organizer configured it.
    pub direction: Option<sync_protocol::wire::GateDirection>,
    pub zone: Option<String>,
}

pub fn status(r: &Replica) -> Result<Status, ReplicaError> {
    let enrollment = r.enrollment()?;
    let last_sync_ms: Option<u64> = r.meta("last_sync_at")?.and_then(|v| v.parse().ok());
    let now = wall_ms();
    let config = match &enrollment {
        Some(e) => r.gate_config(e.gate_id)?,
        None => None,
    };
    let wiped = r.meta("wiped")?.is_some();
    Ok(Status {
        gate_id: enrollment.as_ref().map(|e| e.gate_id),
        event_id: enrollment.as_ref().map(|e| e.event_id),
        server_url: enrollment.as_ref().map(|e| e.server_url.clone()),
        gate_name: config.as_ref().map(|c| c.name.clone()),
        enrolled: enrollment.is_some(),
        active: config.as_ref().is_some_and(|c| c.is_active) && !wiped,
        online: last_sync_ms.is_some_and(|t| now.saturating_sub(t) < ONLINE_WITHIN_MS),
        replica_cursor: r.replica_cursor()?,
        replica_tickets: r.ticket_count()?,
        outbox_depth: r.outbox_depth()?,
        checkins_total: r.outbox_len()?,
        last_sync_at: last_sync_ms.and_then(|ms| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
        }),
        clock_offset_ms: sync_protocol::HlcClock::resume(r.hlc()?).offset_ms(now),
        direction: config.as_ref().map(|c| c.direction),
        zone: config.as_ref().and_then(|c| c.zone.clone()),
    })
}
