//! Webhooks as the organizer's receivers see them: the event types, the signing secret, the
//! Standard Webhooks signature (<https://www.standardwebhooks.com/>), the message body and the
//! retry schedule. No HTTP client and no SQL here.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use super::Error;

type HmacSha256 = hmac::Hmac<Sha256>;

/// A gate stored a check-in (admitted or rejected).
pub const CHECKIN_CREATED: &str = "checkin.created";
/// A gate stored an undo of an earlier check-in.
pub const CHECKIN_REVERTED: &str = "checkin.reverted";
/// The merge found a conflict.
pub const CONFLICT_CREATED: &str = "conflict.created";
/// An organizer resolved a conflict.
pub const CONFLICT_RESOLVED: &str = "conflict.resolved";
pub const PARTICIPANT_CREATED: &str = "participant.created";
pub const PARTICIPANT_UPDATED: &str = "participant.updated";
pub const TICKET_REVOKED: &str = "ticket.revoked";
/// A gate has not been heard from (emitted by alerting).
pub const GATE_OFFLINE: &str = "gate.offline";
/// A gate that was offline is back (emitted by alerting).
pub const GATE_ONLINE: &str = "gate.online";
/// An alert rule started firing (emitted by alerting).
pub const ALERT_FIRED: &str = "alert.fired";
/// A firing alert stopped: its condition no longer holds (emitted by alerting).
pub const ALERT_CLEARED: &str = "alert.cleared";
/// Sent on request (`POST …/webhooks/{id}/test`); never subscribed to.
pub const WEBHOOK_TEST: &str = "webhook.test";

/// The event types an endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    CHECKIN_CREATED,
    CHECKIN_REVERTED,
    CONFLICT_CREATED,
    CONFLICT_RESOLVED,
    PARTICIPANT_CREATED,
    PARTICIPANT_UPDATED,
    TICKET_REVOKED,
    GATE_OFFLINE,
    GATE_ONLINE,
    ALERT_FIRED,
    ALERT_CLEARED,
];

/// Prefix of a secret as shown to the organizer (as Standard Webhooks does).
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a signing secret.
pub const SECRET_LEN: usize = 32;

/// The secret as shown once to the organizer: `whsec_` + base64 of its bytes.
pub fn display_secret(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

/// The bytes of a displayed secret (for receivers and tests).
pub fn decode_secret(shown: &str) -> Option<Vec<u8>> {
    B64.decode(shown.strip_prefix(SECRET_PREFIX).unwrap_or(shown))
        .ok()
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` for one key.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key length"),
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one `v1,` signature per key, space-separated (the new
/// secret first during a rotation's grace window).
pub fn signature_header<K: AsRef<[u8]>>(
    keys: &[K],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    keys.iter()
        .map(|k| sign(k.as_ref(), msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `webhook-id` of a message.
pub fn message_id(id: uuid::Uuid) -> String {
    format!("msg_{}", id.simple())
}

/// The body of a message: `{"type", "timestamp", "data"}`.
pub fn body(event_type: &str, at: OffsetDateTime, data: serde_json::Value) -> String {
    let timestamp = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({"type": event_type, "timestamp": timestamp, "data": data}).to_string()
}

/// Checks an endpoint URL: absolute `http` or `https` with a host, no credentials in it.
pub fn check_url(raw: &str) -> Result<String, Error> {
    let raw = raw.trim();
    let bad = |why: &str| Error::validation("url", format!("url {why}"));
    if raw.len() > 2000 {
        return Err(bad("must be at most 2000 characters"));
    }
    let parsed = url::Url::parse(raw).map_err(|e| bad(&format!("is not a valid URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not contain a user name or password"));
    }
    Ok(parsed.to_string())
}

/// Checks a subscription list: non-empty, each a known type; returned sorted, without
/// duplicates.
pub fn check_event_types(types: &[String]) -> Result<Vec<String>, Error> {
    if types.is_empty() {
        return Err(Error::validation(
            "events",
            format!(
                "events must name at least one event type: {}",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let t = t.trim();
        if !EVENT_TYPES.contains(&t) {
            return Err(Error::validation(
                "events",
                format!(
                    "unknown event type {t:?}; known types: {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        out.push(t.to_owned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Seconds to wait after the n-th failed attempt (1-based) before the next one: quick at first,
/// then every 2–4 hours, for a little over 24 hours in all. After the last, the message fails.
pub const RETRY_SCHEDULE: &[u64] = &[
    5, 30, 120, 600, 1_800, 3_600, 7_200, 10_800, 14_400, 14_400, 14_400, 14_400, 14_400, 14_400,
];

/// The delay after `failed_attempts` failures, scaled (tests shrink it) and with ±20 % jitter
/// (`jitter` in 0..1000), or `None` when the schedule is exhausted.
pub fn retry_delay(failed_attempts: u64, scale: f64, jitter: u64) -> Option<Duration> {
    let idx = usize::try_from(failed_attempts.checked_sub(1)?).ok()?;
    let base = *RETRY_SCHEDULE.get(idx)?;
    let factor = 0.8 + 0.4 * (jitter.min(1000) as f64 / 1000.0);
    let secs = base as f64 * scale * factor;
    Some(Duration::from_secs_f64(secs.max(0.001)))
}

/// The whole schedule, unscaled and without jitter.
pub fn retry_span() -> Duration {
    Duration::from_secs(RETRY_SCHEDULE.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries.
    #[test]
    fn signatures_match_the_specification_example() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_both_keys() {
        let h = signature_header(&[b"new".as_slice(), b"old".as_slice()], "msg_1", 1, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(b"new", "msg_1", 1, b"{}"));
        assert_eq!(parts[1], sign(b"old", "msg_1", 1, b"{}"));
    }

    #[test]
    fn urls_and_types_are_checked() {
        assert!(check_url("https://crm.example.org/hooks?x=1").is_ok());
        assert!(check_url("http://127.0.0.1:9000/").is_ok());
        for bad in [
            "",
            "ftp://x/",
            "crm.example.org",
            "http://",
            "https://u:p@x/",
            "mailto:a@b",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_event_types(&["ticket.revoked".into(), "checkin.created".into()]).unwrap(),
            vec!["checkin.created", "ticket.revoked"]
        );
        assert!(check_event_types(&[]).is_err());
        assert!(check_event_types(&["checkin.deleted".into()]).is_err());
        assert!(check_event_types(&[WEBHOOK_TEST.into()]).is_err());
    }

    #[test]
    fn the_schedule_lasts_over_a_day_and_then_ends() {
        assert!(retry_span() >= Duration::from_secs(24 * 3600));
        assert_eq!(retry_delay(1, 1.0, 500), Some(Duration::from_secs(5)));
        let d = retry_delay(2, 1.0, 0).unwrap();
        assert_eq!(d, Duration::from_secs(24));
        assert!(retry_delay(RETRY_SCHEDULE.len() as u64, 1.0, 999).is_some());
        assert_eq!(retry_delay(RETRY_SCHEDULE.len() as u64 + 1, 1.0, 0), None);
        assert_eq!(retry_delay(0, 1.0, 0), None);
        assert!(retry_delay(1, 0.001, 500).unwrap() < Duration::from_millis(10));
    }
}
