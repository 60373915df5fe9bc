//! The credential checks of the gate decision (DESIGN §3) that need no storage: parse, event,
//! signature, validity window, zone. Gates and the server's online redeem both call these, so a
//! ticket gets the same answer and the same reason everywhere.
//!
//! Order: parse → event → signature → window → zone. The event tag is compared before the
//! signature (a deviation from the design's listing, on purpose): another event's ticket is signed
//! with a key this gate does not hold, and "unknown key — sync the gate" would send the operator
//! to the wrong fix. Checking an unsigned field first cannot admit anything, since every path
//! that admits still verifies the signature.
//!
//! Revocation and presence need the replica and are checked by the caller afterwards.

use crate::ble::BleCredential;
use crate::short_code::ShortCode;
use crate::ticket::{KeyRing, SignedTicket, TICKET_PREFIX, VerifyError};
use crate::wire::Reason;

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

/// What the gate knows about where and when it is.
#[derive(Debug, Clone, Copy)]
pub struct GatePolicy {
    pub event_tag: u32,
    /// Scope bits this gate checks; 0 = any ticket of the event.
    pub zone_mask: u16,
    /// Current unix time in seconds.
    pub now_unix: u64,
    /// Seconds of tolerance on the validity window for gate clocks that drift.
    pub grace_seconds: u32,
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

/// All storage-free checks of a signed ticket.
pub fn check_ticket(
    ticket: &SignedTicket,
    keys: &KeyRing,
    policy: &GatePolicy,
) -> Result<(), Reason> {
    let f = &ticket.fields;
    if f.event_tag != policy.event_tag {
        return Err(Reason::WrongEvent);
    }
    keys.verify(ticket).map_err(|e| match e {
        VerifyError::UnknownKey(_) => Reason::UnknownKey,
        VerifyError::InvalidSignature => Reason::InvalidSignature,
    })?;
    check_window(
        f.valid_from,
        f.valid_until,
        policy.now_unix,
        policy.grace_seconds,
    )?;
    check_zone(f.scopes, policy.zone_mask)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ticket::TicketFields;
    use ed25519_dalek::SigningKey;

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
}
