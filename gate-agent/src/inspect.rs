//! `gate-agent inspect`: the operator's "why was this ticket rejected" tool, and the
//! interoperability check for anyone who issues tickets outside Usher.

use serde_json::{Value, json};
use sync_protocol::ble::BleCredential;
use sync_protocol::ticket::{SignedTicket, TICKET_PREFIX};
use sync_protocol::{ShortCode, wire::Reason};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The result of inspecting one credential; `exit_code` follows the CLI contract:
/// 0 = well-formed (and valid, when a key was given), 1 = signature invalid, 2 = malformed.
#[derive(Debug)]
pub struct Inspection {
    pub report: Value,
    pub exit_code: u8,
}

fn rfc3339(unix: u32) -> Value {
    OffsetDateTime::from_unix_timestamp(i64::from(unix))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn parse_public_key(hex_key: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("--public-key is not hex: {e}"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("--public-key must be 32 bytes, got {}", b.len()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&arr)
        .map_err(|_| "--public-key is not a valid ed25519 public key".to_string())
}

/// Inspects a credential: a `U1:` ticket, a short code, or `ble:HEX` service data.
pub fn inspect(credential: &str, public_key: Option<&str>) -> Result<Inspection, String> {
    let key = public_key.map(parse_public_key).transpose()?;
    let text = credential.trim();
    let malformed = |detail: String| Inspection {
        report: json!({"kind": "unknown", "error": Reason::Malformed, "detail": detail}),
        exit_code: 2,
    };

    if let Some(hex_payload) = text.strip_prefix("ble:") {
        let bytes = match hex::decode(hex_payload) {
            Ok(b) => b,
            Err(e) => return Ok(malformed(format!("BLE payload is not hex: {e}"))),
        };
        return Ok(match BleCredential::decode(&bytes) {
            Ok(c) => Inspection {
                report: json!({"kind": "ble", "version": c.version, "serial": c.serial,
                    "slot": c.slot, "slot_start": rfc3339(c.slot.saturating_mul(30)),
                    "mac": hex::encode(c.mac),
                    "note": "the MAC needs the per-ticket BLE key and is checked at the gate"}),
                exit_code: 0,
            },
            Err(e) => malformed(e.to_string()),
        });
    }

    let is_ticket = text
        .get(..TICKET_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(TICKET_PREFIX));
    if !is_ticket {
        return Ok(match ShortCode::parse(text) {
            Ok(code) => Inspection {
                report: json!({"kind": "short_code", "code": code.to_string(),
                    "compact": code.compact(), "value": code.value(),
                    "note": "short codes carry no signature; the gate looks them up in its replica"}),
                exit_code: 0,
            },
            Err(e) => malformed(e.to_string()),
        });
    }

    let ticket = match SignedTicket::decode(text) {
        Ok(t) => t,
        Err(e) => return Ok(malformed(e.to_string())),
    };
    let f = ticket.fields;
    let scopes: Vec<u8> = (0..16u8).filter(|b| f.scopes & (1 << b) != 0).collect();
    let (signature_valid, exit_code) = match &key {
        None => (Value::Null, 0),
        Some(k) => match ticket.verify(k) {
            Ok(()) => (Value::Bool(true), 0),
            Err(_) => (Value::Bool(false), 1),
        },
    };
    let mut report = json!({
        "kind": "ticket",
        "version": sync_protocol::ticket::TICKET_VERSION,
        "key_id": f.key_id,
        "event_tag": f.event_tag,
        "serial": f.serial,
        "valid_from": rfc3339(f.valid_from),
        "valid_until": rfc3339(f.valid_until),
        "valid_from_unix": f.valid_from,
        "valid_until_unix": f.valid_until,
        "scopes": f.scopes,
        "scope_bits": scopes,
        "signature": hex::encode(ticket.signature),
        "signature_valid": signature_valid,
    });
    if let (Some(k), Some(obj)) = (&key, report.as_object_mut()) {
        obj.insert(
            "public_key".into(),
            Value::String(hex::encode(k.to_bytes())),
        );
        if exit_code == 1 {
            obj.insert("error".into(), json!(Reason::InvalidSignature));
        }
    }
    Ok(Inspection { report, exit_code })
}
