//! What the online redeem keeps between requests, in bounded TTL caches (moka): the event's key
//! ring and policy, valid gate credentials, active gate rows, and whether a device is enrolled on
//! a gate. A cached value is trusted for [`TTL`]: rotations, event edits and enrollments reach
//! the redeem within that time; a gate's own settings and its deactivation are re-read under its
//! lock in every batch, so they apply at once.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use sync_protocol::KeyRing;
use sync_protocol::decide::EntryPolicy;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::event::EventSettings;
use crate::domain::gate::GateAuth;
use crate::store::{self, Db, redeem::GateLite};

/// How long a cached value is trusted.
pub const TTL: Duration = Duration::from_secs(2);

/// Bounds: events, credentials and gates one process serves at once, with room to spare.
const MAX_EVENTS: u64 = 10_000;
const MAX_GATES: u64 = 100_000;

/// The redeem's view of one event.
#[derive(Debug, Clone)]
pub struct EventView {
    pub ring: Arc<KeyRing>,
    pub event_tag: u32,
    pub allow_multiple_checkins: bool,
    /// The event's daily automatic check-out.
    pub daily_checkout: Option<sync_protocol::days::DailyCheckout>,
    pub utc_offset_minutes: i16,
    /// The event's lifecycle status (cached like the rest: a status change is seen within
    /// [`TTL`]).
    pub phase: sync_protocol::wire::EventPhase,
    /// The event barcode key: a scanned shop barcode is looked up by the key it gives.
    pub barcode_key: Option<[u8; 32]>,
}

impl EventView {
    /// The entry policy of a gate of this event.
    pub fn entry(&self, gate: &GateLite) -> EntryPolicy {
        EntryPolicy {
            allow_multiple_checkins: self.allow_multiple_checkins,
            allow_reentry: gate.allow_reentry,
            // The online redeem does not move holders between zones.
            zone_transfer: false,
        }
    }
}

#[derive(Debug)]
pub struct Caches {
    events: Cache<Uuid, EventView>,
    /// Valid gate credentials by SHA-256 (scoped by event in the key, so one event's entry never
    /// answers for another).
    credentials: Cache<(Uuid, [u8; 32]), GateAuth>,
    /// Active gate rows (only active ones are cached).
    gates: Cache<Uuid, GateLite>,
    devices: Cache<Uuid, bool>,
}

impl Default for Caches {
    fn default() -> Self {
        Self {
            events: Cache::builder()
                .max_capacity(MAX_EVENTS)
                .time_to_live(TTL)
                .build(),
            credentials: Cache::builder()
                .max_capacity(MAX_GATES)
                .time_to_live(TTL)
                .build(),
            gates: Cache::builder()
                .max_capacity(MAX_GATES)
                .time_to_live(TTL)
                .build(),
            devices: Cache::builder()
                .max_capacity(MAX_GATES)
                .time_to_live(TTL)
                .build(),
        }
    }
}

impl Caches {
    /// The event's key ring and policy.
    pub async fn event(
        &self,
        db: &Db,
        master: &crate::domain::crypto::MasterKey,
        event_id: Uuid,
    ) -> Result<EventView, Error> {
        if let Some(v) = self.events.get(&event_id) {
            return Ok(v);
        }
        let ev = store::events::require(db, event_id).await?;
        let settings = EventSettings::parse(&ev.settings)?;
        let view = EventView {
            ring: Arc::new(store::redeem::key_ring(db, event_id).await?),
            event_tag: u32::try_from(ev.event_tag).map_err(anyhow::Error::from)?,
            allow_multiple_checkins: settings.allow_multiple_checkins,
            daily_checkout: settings.daily_checkout(),
            utc_offset_minutes: settings.utc_offset_minutes,
            phase: crate::domain::event::EventStatus::parse(&ev.status)?.phase(),
            barcode_key: match store::events::secrets(db, event_id).await? {
                Some(s) => Some(sync_protocol::barcode::event_key(&master.open_32(
                    &crate::service::tickets::secret_aad(event_id, "ble"),
                    &s.ble_secret,
                )?)),
                None => None,
            },
        };
        self.events.insert(event_id, view.clone());
        Ok(view)
    }

    /// Drops this process's view of the event (its status or settings just changed here; other
    /// processes see the change within [`TTL`]).
    pub fn forget_event(&self, event_id: Uuid) {
        self.events.invalidate(&event_id);
    }

    pub fn credential(&self, event_id: Uuid, hash: &[u8; 32]) -> Option<GateAuth> {
        self.credentials.get(&(event_id, *hash))
    }

    pub fn remember_credential(&self, hash: [u8; 32], gate: GateAuth) {
        self.credentials.insert((gate.event_id, hash), gate);
    }

    /// The gate row, from the cache when fresh.
    pub async fn gate(&self, db: &Db, gate_id: Uuid) -> Result<Option<GateLite>, Error> {
        if let Some(g) = self.gates.get(&gate_id) {
            return Ok(Some(g));
        }
        let gate = store::redeem::gate(db, gate_id).await?;
        if let Some(g) = &gate
            && g.is_active
        {
            self.gates.insert(gate_id, g.clone());
        }
        Ok(gate)
    }

    /// The gate row as a batch just read it under its lock.
    pub fn refresh_gate(&self, gate_id: Uuid, row: Option<GateLite>) {
        match row {
            Some(g) if g.is_active => self.gates.insert(gate_id, g),
            _ => self.gates.invalidate(&gate_id),
        }
    }

    /// Whether a device is enrolled on the gate.
    pub async fn has_device(&self, db: &Db, gate_id: Uuid) -> Result<bool, Error> {
        if let Some(d) = self.devices.get(&gate_id) {
            return Ok(d);
        }
        let enrolled = store::redeem::device_enrolled(db, gate_id).await?;
        self.devices.insert(gate_id, enrolled);
        Ok(enrolled)
    }
}
