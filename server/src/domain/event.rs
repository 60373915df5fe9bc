//! Events: their lifecycle status and their settings, parsed once.

use serde::{Deserialize, Serialize};
use sync_protocol::merge::FoldPolicy;
use sync_protocol::wire::EventPhase;

use super::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    Draft,
    Live,
    Closed,
    Archived,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Draft => "draft",
            EventStatus::Live => "live",
            EventStatus::Closed => "closed",
            EventStatus::Archived => "archived",
        }
    }
    pub fn parse(s: &str) -> Result<Self, Error> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| Error::Internal(anyhow::anyhow!("bad event status {s:?} in database")))
    }

    /// The status as gates learn it.
    pub fn phase(self) -> EventPhase {
        match self {
            EventStatus::Draft => EventPhase::Draft,
            EventStatus::Live => EventPhase::Live,
            EventStatus::Closed => EventPhase::Closed,
            EventStatus::Archived => EventPhase::Archived,
        }
    }

    /// Whether an event may go from `self` to `to` (staying is always allowed): draft → live,
    /// live ⇄ closed, closed → archived, and draft → closed or archived for an event that never
    /// ran.
    /// Nothing leaves archived, and nothing goes back to draft.
    pub fn can_become(self, to: EventStatus) -> bool {
        use EventStatus::*;
        self == to
            || matches!(
                (self, to),
                (Draft, Live)
                    | (Draft, Closed)
                    | (Live, Closed)
                    | (Closed, Live)
                    | (Closed, Archived)
                    | (Draft, Archived)
            )
    }

    /// Closed and archived events take no imports or new participants.
    pub fn takes_registrations(self) -> bool {
        matches!(self, EventStatus::Draft | EventStatus::Live)
    }
}

/// 422 naming `status` unless the event may change from `from` to `to`.
pub fn check_transition(from: EventStatus, to: EventStatus) -> Result<(), Error> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(Error::validation(
            "status",
            format!(
                "an event cannot go from {} to {}",
                from.as_str(),
                to.as_str()
            ),
        ))
    }
}

/// 409 unless the event takes new participants and imports (draft or live).
pub fn require_registrations(status: EventStatus) -> Result<(), Error> {
    if status.takes_registrations() {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "the event is {}: it takes no new participants or imports",
            status.as_str()
        )))
    }
}

/// 409 if the event is archived (read-only).
pub fn require_writable(status: EventStatus) -> Result<(), Error> {
    if status == EventStatus::Archived {
        Err(Error::Conflict(
            "the event is archived: it is read-only".into(),
        ))
    } else {
        Ok(())
    }
}

fn default_true() -> bool {
    true
}

fn default_margin() -> u32 {
    6
}

/// Per-event behaviour. Unknown keys are refused so a typo does not silently do nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Any number of check-ins per ticket (no "already inside").
    #[serde(default)]
    pub allow_multiple_checkins: bool,
    /// Gates decide locally and sync when they can (always true today).
    #[serde(default = "default_true")]
    pub offline_mode: bool,
    /// New tickets are valid from `starts_at` minus this many hours until `ends_at` plus this
    /// many hours.
    #[serde(default = "default_margin")]
    pub ticket_validity_margin_hours: u32,
    /// Where the venue is: wallet passes carry it so a phone offers the ticket near the venue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue_location: Option<VenueLocation>,
    /// Multi-day events: a local time of day (`"HH:MM"`) at which everyone inside counts as
    /// checked out, every day (e.g. `"23:00"`), so the next morning starts with nobody inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_checkout_at: Option<String>,
    /// The event's local time minus UTC in minutes (e.g. 60 for CET): the local time of
    /// `auto_checkout_at` and the calendar days of day-limited tickets.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub utc_offset_minutes: i16,
    /// Multi-day events: per ticket type, the event-local dates (`YYYY-MM-DD`) it is valid on
    /// (empty: every day) and the most entries per day:
    /// `[{"name": "Day 1", "valid_days": ["2026-12-01"], "entries_per_day": 1}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub ticket_types: Vec<sync_protocol::days::TicketTypeRule>,
}

fn is_zero(v: &i16) -> bool {
    *v == 0
}

/// Minutes after midnight of an `"HH:MM"` time of day.
fn minute_of_day(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// The scopes of a new ticket whose type sets none: zone bit 0.
pub const DEFAULT_SCOPES: u16 = 1;

/// A point on the map, in degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VenueLocation {
    /// -90 to 90.
    pub latitude: f64,
    /// -180 to 180.
    pub longitude: f64,
}

// JSON carries no NaN, and `EventSettings::validate` refuses anything outside the ranges, so
// equality is total on the values that exist.
impl Eq for VenueLocation {}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            allow_multiple_checkins: false,
            offline_mode: true,
            ticket_validity_margin_hours: default_margin(),
            venue_location: None,
            auto_checkout_at: None,
            utc_offset_minutes: 0,
            ticket_types: Vec::new(),
        }
    }
}

impl EventSettings {
    /// The settings as stored (a JSON object; empty text means the defaults). A stored value
    /// that does not parse is an error, not silently the defaults: the gates and the online
    /// redeem must never decide under a policy nobody set.
    pub fn parse(stored: &str) -> Result<Self, Error> {
        if stored.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(stored).map_err(|e| {
            Error::Internal(anyhow::anyhow!("stored event settings do not parse: {e}"))
        })
    }

    /// 422 naming the setting at fault (`settings.venue_location.latitude`).
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(l) = self.venue_location {
            if !(-90.0..=90.0).contains(&l.latitude) {
                return Err(Error::validation(
                    "settings.venue_location.latitude",
                    "latitude must be between -90 and 90",
                ));
            }
            if !(-180.0..=180.0).contains(&l.longitude) {
                return Err(Error::validation(
                    "settings.venue_location.longitude",
                    "longitude must be between -180 and 180",
                ));
            }
        }
        if let Some(at) = &self.auto_checkout_at
            && minute_of_day(at).is_none()
        {
            return Err(Error::validation(
                "settings.auto_checkout_at",
                "auto_checkout_at must be a time of day as HH:MM (00:00 to 23:59)",
            ));
        }
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_minutes) {
            return Err(Error::validation(
                "settings.utc_offset_minutes",
                "utc_offset_minutes must be between -840 and 840",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.ticket_types.iter().enumerate() {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return Err(Error::validation(
                    format!("settings.ticket_types[{i}].name"),
                    "each ticket type rule needs a name of its own",
                ));
            }
            if let Some(d) = t
                .valid_days
                .iter()
                .find(|d| sync_protocol::days::parse_day(d).is_none())
            {
                return Err(Error::validation(
                    format!("settings.ticket_types[{i}].valid_days"),
                    format!(
                        "{:?} is not a date as YYYY-MM-DD",
                        d.chars().take(40).collect::<String>()
                    ),
                ));
            }
            if t.scopes == Some(0) {
                return Err(Error::validation(
                    format!("settings.ticket_types[{i}].scopes"),
                    "scopes must open at least one zone (a non-zero bitmask)",
                ));
            }
            if t.entries_per_day == Some(0) {
                return Err(Error::validation(
                    format!("settings.ticket_types[{i}].entries_per_day"),
                    "entries_per_day must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// The daily automatic check-out, if set.
    pub fn daily_checkout(&self) -> Option<sync_protocol::days::DailyCheckout> {
        let minute = minute_of_day(self.auto_checkout_at.as_deref()?)?;
        Some(sync_protocol::days::DailyCheckout {
            minute_of_day: minute,
            utc_offset_minutes: self.utc_offset_minutes,
        })
    }

    /// The scopes (zones) a new ticket of a participant with `ticket_type` opens: its type's
    /// `scopes` (names compared trimmed, ignoring case), else [`DEFAULT_SCOPES`].
    pub fn scopes_for(&self, ticket_type: Option<&str>) -> u16 {
        let Some(wanted) = ticket_type.map(str::trim) else {
            return DEFAULT_SCOPES;
        };
        self.ticket_types
            .iter()
            .find(|t| t.name.trim().eq_ignore_ascii_case(wanted))
            .and_then(|t| t.scopes)
            .unwrap_or(DEFAULT_SCOPES)
    }

    /// The part of the settings the merge fold needs.
    pub fn fold_policy(&self) -> FoldPolicy {
        FoldPolicy {
            allow_multiple_checkins: self.allow_multiple_checkins,
            daily_checkout: self.daily_checkout(),
            utc_offset_minutes: self.utc_offset_minutes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        use EventStatus::*;
        let all = [Draft, Live, Closed, Archived];
        let allowed = [
            (Draft, Live),
            (Draft, Closed),
            (Live, Closed),
            (Closed, Live),
            (Closed, Archived),
            (Draft, Archived),
        ];
        for from in all {
            for to in all {
                let want = from == to || allowed.contains(&(from, to));
                assert_eq!(from.can_become(to), want, "{from:?} -> {to:?}");
            }
        }
        assert!(check_transition(Archived, Live).is_err());
        assert!(require_registrations(Closed).is_err());
        assert!(require_writable(Archived).is_err());
        assert!(require_writable(Closed).is_ok());
    }

    #[test]
    fn settings_parse_with_defaults_and_refuse_garbage() {
        assert_eq!(EventSettings::parse("").unwrap(), EventSettings::default());
        assert_eq!(
            EventSettings::parse("{}").unwrap(),
            EventSettings::default()
        );
        let s = EventSettings::parse(r#"{"allow_multiple_checkins": true}"#).unwrap();
        assert!(s.fold_policy().allow_multiple_checkins);
        assert!(EventSettings::parse("not json").is_err());
        assert!(EventSettings::parse(r#"{"allow_multiple_checkin": true}"#).is_err());
    }
}
