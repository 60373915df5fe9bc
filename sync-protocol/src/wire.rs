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

/// How a credential reached the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Qr,
    Code,
    Ble,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Admit,
    Reject,
}

/// Why a credential was rejected (DESIGN §3). The same enum on gates and the server, so an
/// operator sees the same words everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    InvalidSignature,
    UnknownKey,
    WrongEvent,
    NotYetValid,
    Expired,
    Revoked,
    AlreadyInside,
    WrongZone,
    UnknownCode,
    Malformed,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::InvalidSignature,
        Reason::UnknownKey,
        Reason::WrongEvent,
        Reason::NotYetValid,
        Reason::Expired,
        Reason::Revoked,
        Reason::AlreadyInside,
        Reason::WrongZone,
        Reason::UnknownCode,
        Reason::Malformed,
    ];

    /// The snake_case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSignature => "invalid_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::WrongEvent => "wrong_event",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
            Reason::AlreadyInside => "already_inside",
            Reason::WrongZone => "wrong_zone",
            Reason::UnknownCode => "unknown_code",
            Reason::Malformed => "malformed",
        }
    }

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
            Reason::WrongZone => "Ticket does not open this zone",
            Reason::UnknownCode => "Unknown code",
            Reason::Malformed => "Not a readable ticket",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds of conflict the merge reports (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// A second gate admitted a ticket that was already inside.
    DuplicateAdmission,
    /// The same gate admitted a ticket that was already inside.
    Passback,
    /// An exit of a ticket that was not inside.
    ExitWithoutEntry,
    /// Admitted after a revocation the gate could not yet know of (expected while offline).
    LateRevocation,
    /// Admitted after a revocation the gate already had: an operator override or a bug.
    AdmittedDespiteKnownRevocation,
    /// Revoked while the holder was inside.
    RevokedWhileInside,
}

impl ConflictKind {
    pub const ALL: [ConflictKind; 6] = [
        ConflictKind::DuplicateAdmission,
        ConflictKind::Passback,
        ConflictKind::ExitWithoutEntry,
        ConflictKind::LateRevocation,
        ConflictKind::AdmittedDespiteKnownRevocation,
        ConflictKind::RevokedWhileInside,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::DuplicateAdmission => "duplicate_admission",
            ConflictKind::Passback => "passback",
            ConflictKind::ExitWithoutEntry => "exit_without_entry",
            ConflictKind::LateRevocation => "late_revocation",
            ConflictKind::AdmittedDespiteKnownRevocation => "admitted_despite_known_revocation",
            ConflictKind::RevokedWhileInside => "revoked_while_inside",
        }
    }

    pub fn parse(s: &str) -> Option<ConflictKind> {
        ConflictKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

/// Ticket status as replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    #[default]
    Valid,
    Revoked,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GateDirection {
    In,
    Out,
    #[default]
    Both,
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
    /// Hex of the per-event mesh key (DESIGN §8).
    #[serde(default)]
    pub mesh_key: Option<String>,
    /// Where this gate serves its log to peers on the venue LAN.
    #[serde(default)]
    pub mesh_addr: Option<String>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushStatus {
    Stored,
    Duplicate,
    Invalid,
}

/// The merged state of the ticket after a check-in, as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Inside,
    Outside,
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
        for r in Reason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        for k in ConflictKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
            assert_eq!(ConflictKind::parse(k.as_str()), Some(k));
        }
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
