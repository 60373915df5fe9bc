//! The online redeem: the gate decision made on the server, for thin clients with no replica (a
//! phone browser at a side door). The rule is `sync_protocol::decide`, the one the gate agent
//! runs, so a ticket gets the same decision and reason at a kiosk and at a phone. The result is
//! stored as a check-in of the named gate and merged like any pushed one; the ticket's merge
//! lock is held from the presence check to the commit, so concurrent redeems of one ticket
//! admit it exactly once.
//!
//! # Layout
//! - this module: the request and answer, and [`redeem`] (what happens before the queue).
//! - [`cache`]: bounded TTL caches of key rings, gate rows, credentials.
//! - [`batch`]: the per-event group commit.

use serde::Serialize;
use sync_protocol::wire::{Decision, Direction, Reason};
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::gate::GateAuth;
use crate::service::AppState;
use crate::store::now_ms;

pub mod batch;
pub mod cache;

pub use cache::Caches;

/// Who asks: staff (an organizer token) or the gate's own enrolled device.
#[derive(Debug, Clone, Copy)]
pub enum Redeemer {
    Staff,
    Gate(GateAuth),
}

/// One scan to decide.
#[derive(Debug, Clone)]
pub struct RedeemRequest {
    /// The scanned `U1:` ticket or a typed short code.
    pub credential: String,
    pub gate_id: Uuid,
    /// `None`: the gate's own direction (entry on two-way gates).
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

/// Decides a credential on the server and stores it as a check-in of the request's gate.
pub async fn redeem(
    state: &AppState,
    event_id: Uuid,
    by: Redeemer,
    req: RedeemRequest,
) -> Result<RedeemOut, Error> {
    if let Redeemer::Gate(g) = &by {
        g.require_event(event_id)?;
    }
    let view = state
        .redeem
        .event(&state.db, &state.master, event_id)
        .await?;
    let gate = state
        .redeem
        .gate(&state.db, req.gate_id)
        .await?
        .filter(|g| g.event_id == event_id)
        .ok_or(Error::NotFound("gate"))?;
    if !gate.is_active {
        return Err(Error::Conflict("the gate is deactivated".into()));
    }
    if let Redeemer::Gate(g) = &by
        && g.gate_id != req.gate_id
    {
        return Err(Error::Forbidden);
    }
    // A redeem is a check-in of the gate and takes the gate's next seq. A device enrolled on
    // the gate numbers its own scans, offline too, and would find its seqs taken: its scans
    // would be refused as invalid when it pushes them. Staff redeem on gates of their own.
    if matches!(by, Redeemer::Staff) && state.redeem.has_device(&state.db, req.gate_id).await? {
        return Err(Error::validation(
            "gate_id",
            "a device is enrolled on this gate and numbers its own check-ins; \
             redeem on a gate without one (or with that device's own credential)",
        ));
    }
    let now = now_ms();
    // Storage-free checks first, here, concurrently (no lock held while verifying signatures).
    let check = batch::check(
        &view,
        &gate,
        req.direction,
        &req.credential,
        u64::try_from(now / 1000).unwrap_or(0),
    );
    let scan = batch::Scan {
        gate_id: req.gate_id,
        gate,
        requested: req.direction,
        credential: req.credential,
        now,
        check,
    };
    batch::submit(state, event_id, scan).await
}
