//! The domain: types and rules of the organizer side with no HTTP and no SQL in them. Everything
//! above (`store`, `live`, `service`, `http`) may use it; it uses none of them.
//!
//! # Layout
//! - [`alerts`]: alert rules, their defaults and checks, and when each condition holds.
//! - [`error`]: the one error type of use cases and storage.
//! - [`auth`], [`jwt`], [`crypto`]: roles, passwords, bearer tokens, the master key and sealing.
//! - [`event`]: event status and settings.
//! - [`gate`]: enrollment codes and gate credentials.
//! - [`live`]: the payload of live notifications.
//! - [`text`]: how text fields are trimmed and bounded.
//! - [`webhook`]: webhook event types, secrets, signatures and the retry schedule.

pub mod alerts;
pub mod auth;
pub mod crypto;
pub mod error;
pub mod event;
pub mod gate;
pub mod jwt;
pub mod live;
pub mod mail;
pub mod text;
pub mod webhook;

pub use error::{Error, FieldError};

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Milliseconds → a date-time for the API edge (RFC 3339). Out-of-range values clamp to the epoch.
pub fn ms_to_time(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A date-time from the API → milliseconds.
pub fn time_to_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
