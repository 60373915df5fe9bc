//! The admission rule (DESIGN §3), once, for every place that decides: the gate agent (offline,
//! against its replica) and the server's online redeem (against the database) call these pure
//! functions and keep no copy, so a ticket gets the same decision and the same reason
//! everywhere. `tests/decision_table.rs` at the workspace's end-to-end tests runs one table of
//! cases through both.
//!
//! A decision has three steps, split where a caller must take a lock in between:
//! 1. [`direction_for`]: which way the person goes (the request, else the gate's default), and
//!    whether the gate allows that way.
//! 2. The credential, storage-free: [`check_signed`] for a `U1:` ticket (event, signature, and on
//!    entry the validity window and the zone), [`check_row`] for a ticket found by short code,
//!    manual pick or BLE (window and zone of the stored row). Leaving checks authenticity only:
//!    an expired ticket may still walk out.
//! 3. The holder, under the ticket's lock: [`check_holder`] (revocation, then presence and the
//!    re-entry policy), on entry only.
//!
//! [`settle`] turns the verdict and an optional supervisor override into what is recorded, and
//! [`decide`] composes the whole rule for callers (and tests) that have every fact at hand.
//!
//! Order: parse → event → signature → window → zone → direction → revocation → presence. The
//! event tag is compared before the signature (a deviation from the design's listing, on
//! purpose): another event's ticket is signed with a key this gate does not hold, and "unknown
//! key — sync the gate" would send the operator to the wrong fix. Checking an unsigned field
//! first cannot admit anything, since every path that admits still verifies the signature.

use crate::ble::BleCredential;
use crate::short_code::ShortCode;
use crate::ticket::{KeyRing, SignedTicket, TICKET_PREFIX, VerifyError};
use crate::wire::{Decision, Direction, EventPhase, GateDirection, Reason, TicketStatus};

/// Seconds of tolerance on both ends of a validity window, on every gate and on the server:
/// kiosk clocks drift, and a person at the door a minute after the end is not a fraud.
pub const GRACE_SECONDS: u32 = 120;

/// A credential as read from any source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Ticket(SignedTicket),
    Code(ShortCode),
    Ble(BleCredential),
}

/// Classifies scanned or typed text: a `U1:` ticket or a short code. Anything else is
/// `malformed`.
pub fn parse_text(text: &str) -> Result<Credential, Reason> {
    let t = text.trim();
    let looks_like_ticket = t
        .get(..TICKET_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(TICKET_PREFIX));
    if looks_like_ticket {
        return SignedTicket::decode(t)
            .map(Credential::Ticket)
            .map_err(|_| Reason::Malformed);
    }
    match ShortCode::parse(t) {
        Ok(code) => Ok(Credential::Code(code)),
        // A code-shaped string with a bad check character was mistyped: "unknown code" tells the
        // operator to retype, which is the right action.
        Err(crate::short_code::ShortCodeError::BadCheck) => Err(Reason::UnknownCode),
        Err(_) => Err(Reason::Malformed),
    }
}

/// What the deciding side knows about where and when it is.
#[derive(Debug, Clone, Copy)]
pub struct GatePolicy {
    pub event_tag: u32,
    /// Scope bits this gate checks; 0 = any ticket of the event.
    pub zone_mask: u16,
    /// Current unix time in seconds.
    pub now_unix: u64,
    /// Seconds of tolerance on the validity window ([`GRACE_SECONDS`] everywhere but in tests of
    /// the window itself).
    pub grace_seconds: u32,
}

impl GatePolicy {
    /// The policy of a gate of the event with tag `event_tag`, at `now_unix`, with the one grace.
    pub fn new(event_tag: u32, zone_mask: u16, now_unix: u64) -> Self {
        Self {
            event_tag,
            zone_mask,
            now_unix,
            grace_seconds: GRACE_SECONDS,
        }
    }
}

/// Validity window check (both ends inclusive, widened by the grace).
pub fn check_window(
    valid_from: u32,
    valid_until: u32,
    now_unix: u64,
    grace: u32,
) -> Result<(), Reason> {
    if valid_from == 0 && valid_until == 0 {
        return Ok(()); // no window recorded (e.g. a code-only ticket row without dates)
    }
    if now_unix + u64::from(grace) < u64::from(valid_from) {
        return Err(Reason::NotYetValid);
    }
    if now_unix > u64::from(valid_until) + u64::from(grace) {
        return Err(Reason::Expired);
    }
    Ok(())
}

/// Zone check: the ticket must open at least one of the gate's zones.
pub fn check_zone(scopes: u16, zone_mask: u16) -> Result<(), Reason> {
    if zone_mask == 0 || scopes & zone_mask != 0 {
        Ok(())
    } else {
        Err(Reason::WrongZone)
    }
}

/// Event and signature of a signed ticket: what proves it is ours.
fn check_authentic(ticket: &SignedTicket, keys: &KeyRing, event_tag: u32) -> Result<(), Reason> {
    if ticket.fields.event_tag != event_tag {
        return Err(Reason::WrongEvent);
    }
    keys.verify(ticket).map_err(|e| match e {
        VerifyError::UnknownKey(_) => Reason::UnknownKey,
        VerifyError::InvalidSignature => Reason::InvalidSignature,
    })
}

/// All storage-free checks of a signed ticket on entry.
pub fn check_ticket(
    ticket: &SignedTicket,
    keys: &KeyRing,
    policy: &GatePolicy,
) -> Result<(), Reason> {
    check_authentic(ticket, keys, policy.event_tag)?;
    let f = &ticket.fields;
    check_window(
        f.valid_from,
        f.valid_until,
        policy.now_unix,
        policy.grace_seconds,
    )?;
    check_zone(f.scopes, policy.zone_mask)
}

/// The storage-free checks of a signed ticket moving `direction`: everything on entry,
/// authenticity only when leaving.
pub fn check_signed(
    ticket: &SignedTicket,
    keys: &KeyRing,
    policy: &GatePolicy,
    direction: Direction,
) -> Result<(), Reason> {
    match direction {
        Direction::In => check_ticket(ticket, keys, policy),
        Direction::Out => check_authentic(ticket, keys, policy.event_tag),
    }
}

/// A stored ticket row as the deciding side reads it (replica or database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TicketFacts {
    pub status: TicketStatus,
    pub valid_from: u32,
    pub valid_until: u32,
    pub scopes: u16,
}

/// The storage-free checks of a ticket found by its row (short code, manual pick, BLE): window
/// and zone on entry, nothing when leaving.
pub fn check_row(
    row: &TicketFacts,
    policy: &GatePolicy,
    direction: Direction,
) -> Result<(), Reason> {
    match direction {
        Direction::In => {
            check_window(
                row.valid_from,
                row.valid_until,
                policy.now_unix,
                policy.grace_seconds,
            )?;
            check_zone(row.scopes, policy.zone_mask)
        }
        Direction::Out => Ok(()),
    }
}

/// The direction a scan is recorded with, and whether the gate allows it. No request means the
/// gate's own way (entry on two-way gates). A request against a one-way gate is recorded as
/// asked and refused with `wrong_direction`, so a misconfigured screen cannot turn an exit-only
/// door into an entrance.
pub fn direction_for(
    gate: GateDirection,
    requested: Option<Direction>,
) -> (Direction, Result<(), Reason>) {
    let default = match gate {
        GateDirection::Out => Direction::Out,
        GateDirection::In | GateDirection::Both => Direction::In,
    };
    let direction = requested.unwrap_or(default);
    let allowed = match (gate, direction) {
        (GateDirection::Both, _)
        | (GateDirection::In, Direction::In)
        | (GateDirection::Out, Direction::Out) => Ok(()),
        _ => Err(Reason::WrongDirection),
    };
    (direction, allowed)
}

/// The event's lifecycle on a scan: a closed event lets people out but admits nobody; an
/// archived one takes no scans at all. Draft and live events decide as usual (a draft's
/// check-ins are recorded as tests by the server).
pub fn check_event_open(phase: EventPhase, direction: Direction) -> Result<(), Reason> {
    match (phase, direction) {
        (EventPhase::Draft | EventPhase::Live, _) | (EventPhase::Closed, Direction::Out) => Ok(()),
        (EventPhase::Closed, Direction::In) | (EventPhase::Archived, _) => Err(Reason::EventClosed),
    }
}

/// Whether a scan the server stores now is a test of the gates rather than an admission: the
/// event is still a draft. Test scans are kept in the log (flagged) and take no part in the
/// merge, so presence, conflicts and every count start from zero when the event goes live.
pub fn is_test_scan(phase: EventPhase) -> bool {
    phase == EventPhase::Draft
}

/// Where the holder is, as the deciding side knows it (its replica plus what peers and the
/// server told it, or the server's merged state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Presence {
    pub inside: bool,
    /// Effective entries so far.
    pub entries: u32,
}

/// The presence and re-entry policy of one gate of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryPolicy {
    /// The event allows any number of check-ins per ticket: presence is not checked at all.
    pub allow_multiple_checkins: bool,
    /// The gate lets a ticket back in after an exit; otherwise one entry per ticket.
    pub allow_reentry: bool,
    /// This entry is a zone transfer ([`crate::zones::is_transfer`]): a holder inside another
    /// zone moves into this one (the deciding side records their exit first), so neither
    /// "already inside" nor the single-entry rule refuses them.
    pub zone_transfer: bool,
}

/// Revocation and presence, checked under the ticket's lock, on entry only (leaving is never
/// refused for who the holder is).
pub fn check_holder(
    direction: Direction,
    revoked: bool,
    presence: Presence,
    policy: EntryPolicy,
) -> Result<(), Reason> {
    if direction == Direction::Out {
        return Ok(());
    }
    if revoked {
        return Err(Reason::Revoked);
    }
    if policy.allow_multiple_checkins || (presence.inside && policy.zone_transfer) {
        return Ok(());
    }
    if presence.inside {
        return Err(Reason::AlreadyInside);
    }
    if presence.entries > 0 && !policy.allow_reentry {
        return Err(Reason::ReentryNotAllowed);
    }
    Ok(())
}

/// What is recorded for a verdict: admit, or reject with the reason; a supervisor's override
/// admits a rejected credential and keeps the reason it overrode (an override of an admit is
/// not recorded: there was nothing to override).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Option<Reason>,
    pub operator_override: Option<String>,
}

pub fn settle(verdict: Result<(), Reason>, operator_override: Option<String>) -> Verdict {
    match (verdict, operator_override) {
        (Ok(()), _) => Verdict {
            decision: Decision::Admit,
            reason: None,
            operator_override: None,
        },
        (Err(r), Some(why)) => Verdict {
            decision: Decision::Admit,
            reason: Some(r),
            operator_override: Some(why),
        },
        (Err(r), None) => Verdict {
            decision: Decision::Reject,
            reason: Some(r),
            operator_override: None,
        },
    }
}

/// How the credential presented itself, after parsing and lookup.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// A `U1:` ticket; `row` is its stored row when the deciding side has one.
    Signed {
        ticket: &'a SignedTicket,
        row: Option<&'a TicketFacts>,
    },
    /// A ticket found by short code, manual pick or a verified BLE advert.
    Row(&'a TicketFacts),
    /// Not a credential of a known ticket (malformed text, unknown code, bad BLE).
    Refused(Reason),
}

/// Every fact of one decision.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub presented: Presented<'a>,
    pub keys: &'a KeyRing,
    pub gate: GatePolicy,
    pub gate_direction: GateDirection,
    pub requested: Option<Direction>,
    /// Known revoked besides the row's status (the gate's replicated revocation list).
    pub revoked: bool,
    pub presence: Presence,
    pub entry: EntryPolicy,
    /// The event's lifecycle status.
    pub event: EventPhase,
}

/// The whole rule: the direction recorded and the verdict (before any override).
pub fn decide(f: &Facts<'_>) -> (Direction, Result<(), Reason>) {
    let (direction, allowed) = direction_for(f.gate_direction, f.requested);
    let (credential, row) = match f.presented {
        Presented::Signed { ticket, row } => {
            (check_signed(ticket, f.keys, &f.gate, direction), row)
        }
        Presented::Row(row) => (check_row(row, &f.gate, direction), Some(row)),
        Presented::Refused(r) => (Err(r), None),
    };
    let revoked = f.revoked || row.is_some_and(|r| r.status == TicketStatus::Revoked);
    let verdict = credential
        .and(check_event_open(f.event, direction))
        .and(allowed)
        .and_then(|()| check_holder(direction, revoked, f.presence, f.entry));
    (direction, verdict)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ticket::TicketFields;
    use ed25519_dalek::SigningKey;

    #[test]
    fn only_a_drafts_scans_are_tests() {
        assert!(is_test_scan(EventPhase::Draft));
        for phase in [EventPhase::Live, EventPhase::Closed, EventPhase::Archived] {
            assert!(!is_test_scan(phase), "{phase:?}");
        }
    }

    fn setup() -> (SigningKey, KeyRing, TicketFields, GatePolicy) {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let mut ring = KeyRing::new();
        ring.insert(5, key.verifying_key());
        let fields = TicketFields {
            key_id: 5,
            event_tag: 77,
            serial: 1,
            valid_from: 1_000,
            valid_until: 2_000,
            scopes: 0b10,
        };
        let policy = GatePolicy {
            event_tag: 77,
            zone_mask: 0,
            now_unix: 1_500,
            grace_seconds: 0,
        };
        (key, ring, fields, policy)
    }

    #[test]
    fn each_reason_is_reached() {
        let (key, ring, fields, policy) = setup();
        let ok = fields.sign(&key);
        assert_eq!(check_ticket(&ok, &ring, &policy), Ok(()));

        let mut other_event = fields;
        other_event.event_tag = 78;
        assert_eq!(
            check_ticket(&other_event.sign(&key), &ring, &policy),
            Err(Reason::WrongEvent)
        );
        let mut unknown = fields;
        unknown.key_id = 6;
        assert_eq!(
            check_ticket(&unknown.sign(&key), &ring, &policy),
            Err(Reason::UnknownKey)
        );
        let mut forged = ok;
        forged.fields.scopes = 0xffff;
        assert_eq!(
            check_ticket(&forged, &ring, &policy),
            Err(Reason::InvalidSignature)
        );
        let early = GatePolicy {
            now_unix: 999,
            ..policy
        };
        assert_eq!(check_ticket(&ok, &ring, &early), Err(Reason::NotYetValid));
        let late = GatePolicy {
            now_unix: 2_001,
            ..policy
        };
        assert_eq!(check_ticket(&ok, &ring, &late), Err(Reason::Expired));
        let graced = GatePolicy {
            now_unix: 2_001,
            grace_seconds: 60,
            ..policy
        };
        assert_eq!(check_ticket(&ok, &ring, &graced), Ok(()));
        let vip_only = GatePolicy {
            zone_mask: 0b100,
            ..policy
        };
        assert_eq!(check_ticket(&ok, &ring, &vip_only), Err(Reason::WrongZone));
        let main = GatePolicy {
            zone_mask: 0b110,
            ..policy
        };
        assert_eq!(check_ticket(&ok, &ring, &main), Ok(()));
    }

    #[test]
    fn text_is_classified() {
        let (key, _, fields, _) = setup();
        let text = fields.sign(&key).encode();
        assert!(matches!(parse_text(&text), Ok(Credential::Ticket(_))));
        let code = ShortCode::from_value(12345).unwrap().to_string();
        assert!(matches!(parse_text(&code), Ok(Credential::Code(_))));
        assert_eq!(parse_text("U1:garbage"), Err(Reason::Malformed));
        assert_eq!(parse_text("hello world"), Err(Reason::Malformed));
        assert_eq!(parse_text(""), Err(Reason::Malformed));
        let mut typo: Vec<char> = code.chars().collect();
        typo[0] = if typo[0] == '0' { '1' } else { '0' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(parse_text(&typo), Err(Reason::UnknownCode));
    }

    #[test]
    fn direction_follows_the_gate_and_refuses_the_other_way() {
        use GateDirection as G;
        assert_eq!(direction_for(G::Both, None), (Direction::In, Ok(())));
        assert_eq!(direction_for(G::In, None), (Direction::In, Ok(())));
        assert_eq!(direction_for(G::Out, None), (Direction::Out, Ok(())));
        assert_eq!(
            direction_for(G::Both, Some(Direction::Out)),
            (Direction::Out, Ok(()))
        );
        assert_eq!(
            direction_for(G::Out, Some(Direction::In)),
            (Direction::In, Err(Reason::WrongDirection))
        );
        assert_eq!(
            direction_for(G::In, Some(Direction::Out)),
            (Direction::Out, Err(Reason::WrongDirection))
        );
    }

    #[test]
    fn holder_rules_apply_on_entry_only() {
        let single = EntryPolicy::default();
        let reentry = EntryPolicy {
            allow_reentry: true,
            ..single
        };
        let multiple = EntryPolicy {
            allow_multiple_checkins: true,
            ..single
        };
        let fresh = Presence::default();
        let inside = Presence {
            inside: true,
            entries: 1,
        };
        let left = Presence {
            inside: false,
            entries: 1,
        };
        let d = Direction::In;
        assert_eq!(check_holder(d, false, fresh, single), Ok(()));
        assert_eq!(check_holder(d, true, fresh, multiple), Err(Reason::Revoked));
        assert_eq!(
            check_holder(d, false, inside, reentry),
            Err(Reason::AlreadyInside)
        );
        assert_eq!(
            check_holder(d, false, left, single),
            Err(Reason::ReentryNotAllowed)
        );
        assert_eq!(check_holder(d, false, left, reentry), Ok(()));
        assert_eq!(check_holder(d, false, inside, multiple), Ok(()));
        let transfer = EntryPolicy {
            zone_transfer: true,
            ..single
        };
        assert_eq!(check_holder(d, false, inside, transfer), Ok(()));
        assert_eq!(
            check_holder(d, true, inside, transfer),
            Err(Reason::Revoked)
        );
        // Not inside anywhere: a transfer gate applies its own single-entry rule.
        assert_eq!(
            check_holder(d, false, left, transfer),
            Err(Reason::ReentryNotAllowed)
        );
        for p in [fresh, inside, left] {
            assert_eq!(check_holder(Direction::Out, true, p, single), Ok(()));
        }
    }

    #[test]
    fn an_override_admits_and_keeps_the_reason_it_overrode() {
        assert_eq!(
            settle(Err(Reason::Revoked), Some("supervisor".into())),
            Verdict {
                decision: Decision::Admit,
                reason: Some(Reason::Revoked),
                operator_override: Some("supervisor".into()),
            }
        );
        assert_eq!(settle(Ok(()), Some("x".into())).operator_override, None);
        assert_eq!(
            settle(Err(Reason::Expired), None).decision,
            Decision::Reject
        );
    }

    #[test]
    fn ninety_seconds_past_the_end_is_inside_the_one_grace() {
        let (key, ring, fields, _) = setup();
        let t = fields.sign(&key);
        let at = |now_unix| GatePolicy::new(77, 0, now_unix);
        let facts = |gate| Facts {
            presented: Presented::Signed {
                ticket: &t,
                row: None,
            },
            keys: &ring,
            gate,
            gate_direction: GateDirection::Both,
            requested: None,
            revoked: false,
            presence: Presence::default(),
            entry: EntryPolicy::default(),
            event: EventPhase::Live,
        };
        let end = u64::from(fields.valid_until);
        assert_eq!(decide(&facts(at(end + 90))).1, Ok(()));
        assert_eq!(
            decide(&facts(at(end + u64::from(GRACE_SECONDS) + 1))).1,
            Err(Reason::Expired)
        );
        // Leaving checks authenticity only: a long-expired ticket still walks out.
        let out = Facts {
            requested: Some(Direction::Out),
            ..facts(at(end + 86_400))
        };
        assert_eq!(decide(&out), (Direction::Out, Ok(())));
        // A known revocation on the row wins over everything but authenticity.
        let row = TicketFacts {
            status: TicketStatus::Revoked,
            ..TicketFacts::default()
        };
        let revoked = Facts {
            presented: Presented::Row(&row),
            ..facts(at(1_500))
        };
        assert_eq!(decide(&revoked).1, Err(Reason::Revoked));
    }

    #[test]
    fn a_closed_event_lets_people_out_and_an_archived_one_takes_no_scans() {
        use EventPhase::*;
        for phase in [Draft, Live] {
            assert_eq!(check_event_open(phase, Direction::In), Ok(()));
            assert_eq!(check_event_open(phase, Direction::Out), Ok(()));
        }
        assert_eq!(
            check_event_open(Closed, Direction::In),
            Err(Reason::EventClosed)
        );
        assert_eq!(check_event_open(Closed, Direction::Out), Ok(()));
        for d in [Direction::In, Direction::Out] {
            assert_eq!(check_event_open(Archived, d), Err(Reason::EventClosed));
        }
        // Through the whole rule: a valid ticket at a closed event's entrance.
        let (key, ring, fields, policy) = setup();
        let t = fields.sign(&key);
        let facts = |event, requested| Facts {
            presented: Presented::Signed {
                ticket: &t,
                row: None,
            },
            keys: &ring,
            gate: policy,
            gate_direction: GateDirection::Both,
            requested,
            revoked: false,
            presence: Presence::default(),
            entry: EntryPolicy::default(),
            event,
        };
        assert_eq!(decide(&facts(Live, None)).1, Ok(()));
        assert_eq!(decide(&facts(Closed, None)).1, Err(Reason::EventClosed));
        assert_eq!(
            decide(&facts(Closed, Some(Direction::Out))),
            (Direction::Out, Ok(()))
        );
    }
}
