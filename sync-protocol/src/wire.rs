//! Wire types of the sync protocol (DESIGN §4), shared by the server, the gate agent and any
//! outside client. JSON via serde.
//!
//! **Do not modify these types incompatibly.** Gates in the field speak them; add optional fields
//! (with `#[serde(default)]`) and bump [`PROTOCOL_VERSION`] only for breaking changes.
//! A `u64` clock goes over the wire as a decimal string (see [`Hlc`]); change sequence numbers
//! and ticket serials stay numbers and are kept below 2^53 by the server.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::hlc::Hlc;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Every protocol version this crate accepts.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];
/// Request header carrying the protocol version.
pub const PROTOCOL_HEADER: &str = "usher-protocol";
/// Sent by a gate on every pull and push: its agent version (e.g. `0.1.0`).
pub const AGENT_VERSION_HEADER: &str = "usher-agent-version";
/// Sent by a gate on every pull and push: check-ins in its outbox not yet acknowledged.
pub const OUTBOX_DEPTH_HEADER: &str = "usher-outbox-depth";
/// Sent by a gate on every pull and push: when it last synced with the server (Unix ms).
pub const LAST_SYNC_HEADER: &str = "usher-last-sync-at";

/// A wire enum with exactly one string form: serde, [`as_str`](Reason::as_str),
/// [`parse`](Reason::parse), `FromStr` and `Display` all come from the one list of
/// `Variant = "name"` pairs, so a database column, a metric label and the JSON agree.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value with this wire name.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                $name::parse(s).ok_or_else(|| UnknownName {
                    kind: stringify!($name),
                    value: s.chars().take(64).collect(),
                })
            }
        }
    };
}

/// A string that names no value of a wire enum (e.g. a corrupt database column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {kind}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

wire_enum! {
    /// How a credential reached the gate.
    pub enum Method {
        Qr = "qr",
        Code = "code",
        Ble = "ble",
        Manual = "manual",
    }
}

wire_enum! {
    /// Which way a person passes a gate.
    pub enum Direction {
        In = "in",
        Out = "out",
    }
}

impl Direction {
    /// The other way (an undo reverses a movement).
    pub const fn reverse(self) -> Direction {
        match self {
            Direction::In => Direction::Out,
            Direction::Out => Direction::In,
        }
    }
}

wire_enum! {
    pub enum Decision {
        Admit = "admit",
        Reject = "reject",
    }
}

wire_enum! {
    /// Why a credential was rejected (DESIGN §3). The same enum on gates and the server, so an
    /// operator sees the same words everywhere.
    pub enum Reason {
        InvalidSignature = "invalid_signature",
        UnknownKey = "unknown_key",
        WrongEvent = "wrong_event",
        NotYetValid = "not_yet_valid",
        Expired = "expired",
        Revoked = "revoked",
        /// The holder is inside right now.
        AlreadyInside = "already_inside",
        /// The holder went in and came out, and this gate is single entry.
        ReentryNotAllowed = "reentry_not_allowed",
        WrongZone = "wrong_zone",
        /// This gate does not let people through in the requested direction.
        WrongDirection = "wrong_direction",
        UnknownCode = "unknown_code",
        Malformed = "malformed",
        /// The event is closed (no new admissions) or archived (no scans at all).
        EventClosed = "event_closed",
        /// The zone this gate admits into is at its hard capacity.
        ZoneFull = "zone_full",
        /// The ticket's type is not valid on this (event-local) day.
        NotValidToday = "not_valid_today",
        /// The ticket's type allows no more entries today.
        DailyLimitReached = "daily_limit_reached",
    }
}

impl Reason {
    /// What the operator screen says.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::InvalidSignature => "Forged or damaged ticket (signature does not verify)",
            Reason::UnknownKey => "Ticket key unknown to this gate (sync, then retry)",
            Reason::WrongEvent => "Ticket is for another event",
            Reason::NotYetValid => "Ticket is not valid yet",
            Reason::Expired => "Ticket has expired",
            Reason::Revoked => "Ticket was revoked",
            Reason::AlreadyInside => "Already checked in",
            Reason::ReentryNotAllowed => "Already used: this gate allows one entry per ticket",
            Reason::WrongZone => "Ticket does not open this zone",
            Reason::WrongDirection => "This gate does not let people through in that direction",
            Reason::UnknownCode => "Unknown code",
            Reason::Malformed => "Not a readable ticket",
            Reason::EventClosed => "The event is closed: no more admissions",
            Reason::ZoneFull => "Zone is full: wait until someone leaves",
            Reason::NotValidToday => "Ticket is not valid today",
            Reason::DailyLimitReached => "No more entries today on this ticket",
        }
    }
}

wire_enum! {
    /// Kinds of conflict the merge reports (DESIGN §5).
    pub enum ConflictKind {
        /// A second gate admitted a ticket that was already inside.
        DuplicateAdmission = "duplicate_admission",
        /// The same gate admitted a ticket that was already inside.
        Passback = "passback",
        /// An exit of a ticket that was not inside.
        ExitWithoutEntry = "exit_without_entry",
        /// Admitted after a revocation the gate could not yet know of (expected while offline).
        LateRevocation = "late_revocation",
        /// Admitted after a revocation the gate already had: an operator override or a bug.
        AdmittedDespiteKnownRevocation = "admitted_despite_known_revocation",
        /// Revoked while the holder was inside.
        RevokedWhileInside = "revoked_while_inside",
        /// Entries took a zone above its hard capacity (gates that could not see each other
        /// each let someone in).
        OverCapacity = "over_capacity",
    }
}

wire_enum! {
    /// An event's lifecycle status as gates learn it with their configuration (what each allows:
    /// `docs/lifecycle.md`).
    pub enum EventPhase {
        Draft = "draft",
        Live = "live",
        Closed = "closed",
        Archived = "archived",
    }
}

impl Default for EventPhase {
    /// A configuration from a server that does not send the status is of a live event.
    fn default() -> Self {
        EventPhase::Live
    }
}

/// One entry of a gate's append-only scan log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkin {
    /// UUIDv7 chosen by the gate: the idempotency key.
    pub id: Uuid,
    /// Per-gate sequence, dense from 1: lets the gate acknowledge by the highest contiguous seq.
    pub seq: u64,
    pub ticket_serial: Option<u64>,
    /// The short code as typed, when the scan was a manual code entry that matched no ticket.
    #[serde(default)]
    pub code: Option<String>,
    pub method: Method,
    pub direction: Direction,
    pub decision: Decision,
    #[serde(default)]
    pub reason: Option<Reason>,
    pub hlc: Hlc,
    #[serde(with = "time::serde::rfc3339")]
    pub scanned_at: OffsetDateTime,
    /// The last server change the gate had applied when it decided: tells a late revocation
    /// (the gate could not know) from a known one.
    pub replica_cursor: u64,
    /// Supervisor override: the reason given for admitting against the rules.
    #[serde(default)]
    pub operator_override: Option<String>,
    /// Set on an undo: the id of the mistaken scan this event cancels. Corrections are new
    /// events, never edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<Uuid>,
}

/// Why a check-in is not acceptable as sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckinError {
    #[error("seq must start at 1")]
    ZeroSeq,
    #[error("a rejected check-in needs a reason")]
    RejectWithoutReason,
    #[error("an admitted check-in carries no reason unless it was an operator override")]
    AdmitWithReason,
    #[error("a check-in names a ticket serial, a code or the scan it undoes")]
    NoSubject,
    #[error("an undo must name a ticket serial")]
    UndoWithoutTicket,
}

impl CheckinError {
    /// The JSON field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            CheckinError::ZeroSeq => "seq",
            CheckinError::RejectWithoutReason | CheckinError::AdmitWithReason => "reason",
            CheckinError::NoSubject => "ticket_serial",
            CheckinError::UndoWithoutTicket => "undoes",
        }
    }
}

impl Checkin {
    /// Structural checks beyond what serde enforces.
    pub fn validate(&self) -> Result<(), CheckinError> {
        if self.seq == 0 {
            return Err(CheckinError::ZeroSeq);
        }
        if self.undoes.is_some() {
            return if self.ticket_serial.is_some() {
                Ok(())
            } else {
                Err(CheckinError::UndoWithoutTicket)
            };
        }
        if self.ticket_serial.is_none() && self.code.is_none() {
            return Err(CheckinError::NoSubject);
        }
        match (self.decision, self.reason) {
            (Decision::Reject, None) => Err(CheckinError::RejectWithoutReason),
            (Decision::Admit, Some(_)) if self.operator_override.is_none() => {
                Err(CheckinError::AdmitWithReason)
            }
            _ => Ok(()),
        }
    }
}

wire_enum! {
    /// Ticket status as replicated.
    #[derive(Default)]
    pub enum TicketStatus {
        #[default]
        Valid = "valid",
        Revoked = "revoked",
    }
}

/// A ticket row of the replica: what a gate needs to decide without the network and to show the
/// operator who is in front of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TicketChange {
    pub serial: u64,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub status: TicketStatus,
    #[serde(default)]
    pub scopes: u16,
    /// Compact form (no dashes).
    #[serde(default)]
    pub short_code: Option<String>,
    /// Hex of the 32-byte per-ticket BLE key.
    #[serde(default)]
    pub ble_key: Option<String>,
    /// Shown prominently at the gate ("VIP", "wheelchair access").
    #[serde(default)]
    pub attention: Option<String>,
    #[serde(default)]
    pub valid_from: u32,
    #[serde(default)]
    pub valid_until: u32,
    /// The participant's ticket type (day rules, search results, badges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_type: Option<String>,
    /// The participant's organization (search results, badges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

/// A ticket shop's barcode of a ticket, by its lookup key ([`crate::barcode`]): entity key
/// `key`. A tombstone removes the barcode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BarcodeChange {
    /// The barcode's lookup key (32 hex digits).
    pub key: String,
    #[serde(default)]
    pub serial: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RevocationChange {
    pub serial: u64,
    /// Server clock when the revocation happened: its place in the merge order.
    #[serde(default)]
    pub hlc: Hlc,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SigningKeyChange {
    pub key_id: u32,
    /// Hex of the 32-byte ed25519 public key.
    #[serde(default)]
    pub public_key: String,
    /// Retired keys issue no new tickets but still verify the ones they signed.
    #[serde(default)]
    pub retired: bool,
}

wire_enum! {
    /// Which ways a gate lets people through.
    #[derive(Default)]
    pub enum GateDirection {
        In = "in",
        Out = "out",
        #[default]
        Both = "both",
    }
}

/// BLE presence settings of a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconConfig {
    pub service_uuid: u16,
    pub threshold_dbm: i16,
    pub window_ms: u32,
    pub min_samples: u32,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        Self {
            service_uuid: crate::ble::DEFAULT_SERVICE_UUID,
            threshold_dbm: -70,
            window_ms: 1_500,
            min_samples: 3,
        }
    }
}

/// Configuration of one gate, replicated to every gate of the event (peers use each other's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GateConfig {
    pub gate_id: Uuid,
    #[serde(default)]
    pub event_id: Uuid,
    #[serde(default)]
    pub event_tag: u32,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub zone: Option<String>,
    /// Scope bits this gate checks (0 = any scope opens it).
    #[serde(default)]
    pub zone_mask: u16,
    #[serde(default)]
    pub direction: GateDirection,
    /// Entry/exit gates let a ticket back in after an exit; otherwise single entry.
    #[serde(default)]
    pub allow_reentry: bool,
    /// The event allows any number of check-ins per ticket (no "already inside").
    #[serde(default)]
    pub allow_multiple_checkins: bool,
    #[serde(default)]
    pub beacon_config: Option<BeaconConfig>,
    #[serde(default = "default_true")]
    pub is_active: bool,
    /// Hex of the per-event shared mesh key of mesh v1. No longer sent (servers leave it
    /// empty, gates ignore it): mesh v2 peers authenticate with [`GateConfig::mesh_public_key`].
    #[serde(default)]
    pub mesh_key: Option<String>,
    /// Hex of this gate's own ed25519 mesh public key (DESIGN §8): peers accept its mesh
    /// requests and answers only when signed by it. Present only while the gate is active and a
    /// device is enrolled on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_public_key: Option<String>,
    /// Where this gate serves its log to peers on the venue LAN.
    #[serde(default)]
    pub mesh_addr: Option<String>,
    /// The event's supervisor PIN as an argon2id PHC string ([`crate::pin`]): overrides and
    /// reprints at the gate need it, checked offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pin: Option<String>,
    /// The event's lifecycle status (closed events admit nobody new).
    #[serde(default)]
    pub event_status: EventPhase,
    /// Hex of the event barcode key ([`crate::barcode`]): scans of shop barcodes are looked up
    /// by the key it gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barcode_key: Option<String>,
    /// The event's zones with their capacities (`zones`); every gate gets them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneRule>,
    /// The event's automatic daily check-out (`days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_checkout: Option<DailyCheckout>,
    /// The event's local time minus UTC in minutes: what "today" means at the gate.
    #[serde(default)]
    pub utc_offset_minutes: i16,
    /// Day validity and daily limits per ticket type (`days`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ticket_types: Vec<TicketTypeRule>,
}

fn default_true() -> bool {
    true
}

/// Another gate admitted or let out this ticket (the server's derived presence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PresenceChange {
    pub serial: u64,
    pub inside: bool,
    #[serde(default)]
    pub gate_id: Option<Uuid>,
    #[serde(default)]
    pub checkin_id: Option<Uuid>,
    #[serde(default)]
    pub hlc: Hlc,
    /// Effective entries so far: single-entry gates reject a ticket that has any.
    #[serde(default)]
    pub entries: u32,
    /// The event-local day of the last effective entry (`days::local_day`).
    #[serde(default)]
    pub day: i32,
    /// Effective entries on that day (daily limits).
    #[serde(default)]
    pub day_entries: u32,
}

/// The payload of a change, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum ChangeData {
    Ticket(TicketChange),
    Revocation(RevocationChange),
    SigningKey(SigningKeyChange),
    GateConfig(GateConfig),
    Presence(PresenceChange),
    Barcode(BarcodeChange),
}

/// One entry of the server's change log:
/// `{"change_seq": 5120, "kind": "ticket", "deleted": false, "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub change_seq: u64,
    /// A tombstone: the row named by `data`'s key is gone (data carries the key only).
    #[serde(default)]
    pub deleted: bool,
    #[serde(flatten)]
    pub data: ChangeData,
}

/// `GET /sync/v1/changes` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse {
    pub changes: Vec<Change>,
    /// Cursor to pass as `after` next time.
    pub next: u64,
    /// More changes are waiting beyond `next`.
    pub more: bool,
    pub server_time: Hlc,
}

/// `POST /sync/v1/checkins` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    pub gate_id: Uuid,
    pub checkins: Vec<Checkin>,
}

wire_enum! {
    pub enum PushStatus {
        Stored = "stored",
        Duplicate = "duplicate",
        Invalid = "invalid",
    }
}

wire_enum! {
    /// The merged state of the ticket after a check-in, as the server sees it.
    pub enum Outcome {
        Inside = "inside",
        Outside = "outside",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinResult {
    pub id: Uuid,
    pub status: PushStatus,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub conflicts: Vec<ConflictKind>,
    /// For `invalid`: what was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Highest seq such that every check-in 1..=seq of this gate is on the server.
    pub acked_through_seq: u64,
    pub results: Vec<CheckinResult>,
    pub server_time: Hlc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub code: String,
    pub device_name: String,
    /// Hex of the ed25519 public key this device signs its mesh traffic with; its private key
    /// never leaves the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_public_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub gate_id: Uuid,
    pub event_id: Uuid,
    /// The bearer secret; shown once, stored hashed on the server.
    pub credential: String,
    #[serde(default)]
    pub server_time: Hlc,
    /// Where this gate's check-in sequence continues (a replacement device for a gate picks up
    /// after the last seq the server holds for it).
    #[serde(default = "one")]
    pub next_seq: u64,
}

fn one() -> u64 {
    1
}

/// `GET /sync/v1/capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub protocol_versions: Vec<u32>,
    pub max_push_batch: u32,
    pub max_pull_limit: u32,
    #[serde(default)]
    pub features: Vec<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checkin_matches_the_documented_json() {
        let doc = json!({"id": "01936d2a-7c1e-7b3a-9f00-2c5d8e1a4b77", "seq": 17, "ticket_serial": 42,
            "code": null, "method": "qr", "direction": "in", "decision": "admit", "reason": null,
            "hlc": "113612398471233541", "scanned_at": "2026-12-01T09:31:07.412Z",
            "replica_cursor": 5120, "operator_override": null});
        let c: Checkin = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(c.seq, 17);
        assert_eq!(c.hlc.as_u64(), 113_612_398_471_233_541);
        assert_eq!(c.validate(), Ok(()));
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["hlc"], json!("113612398471233541"));
        assert_eq!(back["method"], json!("qr"));
        assert_eq!(back["decision"], json!("admit"));
        assert_eq!(back["replica_cursor"], json!(5120));
        assert!(back.get("undoes").is_none());
        let again: Checkin = serde_json::from_value(back).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn change_matches_the_documented_json() {
        let doc = json!({"change_seq": 5120, "kind": "ticket", "deleted": false, "data": {"serial": 42,
            "display_name": "Minji Kim", "status": "valid", "scopes": 1, "short_code": "ABCD2345WXYZ",
            "attention": null}});
        let c: Change = serde_json::from_value(doc).unwrap();
        assert_eq!(c.change_seq, 5120);
        match &c.data {
            ChangeData::Ticket(t) => {
                assert_eq!(t.serial, 42);
                assert_eq!(t.display_name.as_deref(), Some("Minji Kim"));
                assert_eq!(t.status, TicketStatus::Valid);
            }
            other => panic!("wrong kind {other:?}"),
        }
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["kind"], json!("ticket"));
        assert_eq!(v["data"]["serial"], json!(42));
        let tomb: Change = serde_json::from_value(
            json!({"change_seq": 9, "kind": "revocation", "deleted": true, "data": {"serial": 3}}),
        )
        .unwrap();
        assert!(tomb.deleted);
        assert!(matches!(
            tomb.data,
            ChangeData::Revocation(RevocationChange { serial: 3, .. })
        ));
    }

    #[test]
    fn reasons_and_conflict_kinds_use_their_wire_names() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + std::fmt::Debug + Serialize + std::fmt::Display,
            T: std::str::FromStr + serde::de::DeserializeOwned,
        {
            for &v in all {
                let name = v.to_string();
                assert_eq!(serde_json::to_value(v).unwrap(), json!(name));
                assert_eq!(serde_json::from_value::<T>(json!(name)).unwrap(), v);
                assert_eq!(name.parse::<T>().ok(), Some(v));
            }
            assert!("no such name".parse::<T>().is_err());
        }
        check(Reason::ALL);
        check(ConflictKind::ALL);
        check(Method::ALL);
        check(Direction::ALL);
        check(Decision::ALL);
        check(TicketStatus::ALL);
        check(GateDirection::ALL);
        check(PushStatus::ALL);
        check(Outcome::ALL);
    }

    #[test]
    fn validation_names_the_field() {
        let mut c: Checkin =
            serde_json::from_value(json!({"id": "01936d2a-7c1e-7b3a-9f00-2c5d8e1a4b77",
            "seq": 0, "ticket_serial": 42, "method": "qr", "direction": "in", "decision": "reject",
            "hlc": "1", "scanned_at": "2026-12-01T09:31:07Z", "replica_cursor": 0}))
            .unwrap();
        assert_eq!(c.validate().unwrap_err().field(), "seq");
        c.seq = 1;
        assert_eq!(c.validate(), Err(CheckinError::RejectWithoutReason));
        c.reason = Some(Reason::Revoked);
        assert_eq!(c.validate(), Ok(()));
        c.decision = Decision::Admit;
        assert_eq!(c.validate(), Err(CheckinError::AdmitWithReason));
        c.operator_override = Some("supervisor: lost wristband".into());
        assert_eq!(c.validate(), Ok(()));
        c.ticket_serial = None;
        assert_eq!(c.validate(), Err(CheckinError::NoSubject));
    }
}

// The rule data gates receive in their configuration; the rules that read them are in `days`
// and `zones`.

/// The event's daily automatic check-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyCheckout {
    /// Minutes after local midnight (0..1440).
    pub minute_of_day: u16,
    /// The event's local time minus UTC, in minutes.
    #[serde(default)]
    pub utc_offset_minutes: i16,
}

/// What a ticket type allows on which days, as replicated to gates in their configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TicketTypeRule {
    /// The participants' `ticket_type`.
    pub name: String,
    /// Event-local dates (`YYYY-MM-DD`) the type is valid on; empty = every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_days: Vec<String>,
    /// Most entries per event-local day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_per_day: Option<u32>,
    /// The zones (scope bits, [`crate::zones`]) new tickets of this type open; unset: the
    /// default scope (bit 0). Read by the server when it issues a ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<u16>,
}

/// A zone as replicated to gates in their configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ZoneRule {
    /// The scope bit (0..=15) of the zone.
    pub bit: u8,
    #[serde(default)]
    pub name: String,
    /// Hard capacity: an entry while this many are inside is refused (`zone_full`).
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Soft threshold: an entry that brings the occupancy to this many is admitted with a
    /// warning.
    #[serde(default)]
    pub soft_capacity: Option<u32>,
    /// Entering this zone checks the holder out of the zone they are in.
    #[serde(default)]
    pub transfer: bool,
}
