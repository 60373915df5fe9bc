//! What happened, as live subscribers (SSE clients, long-polling gates, other server processes)
//! are told: the payload the `live` fan-out carries.

use serde::{Deserialize, Serialize};
use sync_protocol::wire::{ConflictKind, Direction};
use uuid::Uuid;

/// The PostgreSQL channel live items travel on between server processes.
pub const CHANNEL: &str = "usher_live";

/// One live event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Live {
    /// The change log of an event grew to `head`.
    Changes { event_id: Uuid, head: u64 },
    /// A check-in moved a ticket.
    Admission {
        event_id: Uuid,
        ticket_serial: u64,
        gate_id: Uuid,
        checkin_id: Uuid,
        direction: Direction,
        inside: bool,
    },
    /// The merge found a conflict.
    /// The webhook endpoints of an event changed: processes forget what they cached of them.
    WebhooksChanged { event_id: Uuid },
    Conflict {
        event_id: Uuid,
        conflict_id: Uuid,
        kind: ConflictKind,
        ticket_serial: u64,
    },
    /// An alert started (`firing`) or stopped firing.
    Alert {
        event_id: Uuid,
        alert_id: Uuid,
        kind: String,
        subject: String,
        firing: bool,
    },
}

impl Live {
    pub fn event_id(&self) -> Uuid {
        match self {
            Live::Changes { event_id, .. }
            | Live::Admission { event_id, .. }
            | Live::Conflict { event_id, .. }
            | Live::Alert { event_id, .. }
            | Live::WebhooksChanged { event_id } => *event_id,
        }
    }
}
