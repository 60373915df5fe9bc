//! Multi-day events: calendar days in the event's local time, and the automatic daily
//! check-out.
//!
//! Days are counted in the event's local time given as a fixed UTC offset in minutes (the
//! event's `utc_offset_minutes` setting; a fixed offset, not a time-zone name, so that a gate
//! with no time-zone database decides exactly as the server does). A day is a number of days
//! since 1970-01-01 in that local time.
//!
//! The automatic check-out is a rule, not a job: at `minute_of_day` local time every holder
//! inside counts as outside. Whoever reads presence (the gate's occupancy view, the merge's
//! zone fold, the server's attendance) applies [`DailyCheckout::checked_out_between`] to the
//! time of the admission that has someone inside, so the result does not depend on any task
//! having run at that moment.

use crate::wire::Reason;
pub use crate::wire::{DailyCheckout, TicketTypeRule};

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

impl DailyCheckout {
    /// The latest check-out instant at or before `t_ms` (unix ms; may be negative only for
    /// instants before 1970, never in practice).
    pub fn last_at_or_before(&self, t_ms: u64) -> i64 {
        let offset = i64::from(self.utc_offset_minutes) * MINUTE_MS;
        let local = i64::try_from(t_ms).unwrap_or(i64::MAX) + offset;
        let minute = i64::from(self.minute_of_day.min(1439)) * MINUTE_MS;
        let mut boundary = local.div_euclid(DAY_MS) * DAY_MS + minute;
        if boundary > local {
            boundary -= DAY_MS;
        }
        boundary - offset
    }

    /// Whether a holder admitted at `since_ms` counts as checked out at `at_ms`: a check-out
    /// instant lies after the admission and at or before `at_ms`.
    pub fn checked_out_between(&self, since_ms: u64, at_ms: u64) -> bool {
        at_ms > since_ms
            && self.last_at_or_before(at_ms) > i64::try_from(since_ms).unwrap_or(i64::MAX)
    }
}

/// The event-local day (days since 1970-01-01) of an instant.
pub fn local_day(t_ms: u64, utc_offset_minutes: i16) -> i32 {
    let local = i64::try_from(t_ms).unwrap_or(i64::MAX) + i64::from(utc_offset_minutes) * MINUTE_MS;
    i32::try_from(local.div_euclid(DAY_MS)).unwrap_or(i32::MAX)
}

/// The day number of a `YYYY-MM-DD` date; `None` if it is not one.
pub fn parse_day(text: &str) -> Option<i32> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).ok()?;
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).ok()?;
    i32::try_from((date - epoch).whole_days()).ok()
}

/// An entry on event-local day `today` by a holder of a ticket of this type who already entered
/// `entries_today` times that day: `not_valid_today` off its days, `daily_limit_reached` at its
/// limit. A day that does not parse never matches (the server refuses such settings).
pub fn check_day(rule: &TicketTypeRule, today: i32, entries_today: u32) -> Result<(), Reason> {
    if !rule.valid_days.is_empty() && !rule.valid_days.iter().any(|d| parse_day(d) == Some(today)) {
        return Err(Reason::NotValidToday);
    }
    if rule.entries_per_day.is_some_and(|n| entries_today >= n) {
        return Err(Reason::DailyLimitReached);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_pass_opens_its_days_up_to_its_daily_limit() {
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(parse_day("2026-12-01"), Some(20_788));
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("tomorrow"), None);
        let rule = TicketTypeRule {
            name: "Tuesday".into(),
            valid_days: vec!["2026-12-01".into(), "2026-12-03".into()],
            entries_per_day: Some(2),
            scopes: None,
        };
        assert_eq!(check_day(&rule, 20_788, 0), Ok(()));
        assert_eq!(check_day(&rule, 20_788, 1), Ok(()));
        assert_eq!(check_day(&rule, 20_788, 2), Err(Reason::DailyLimitReached));
        assert_eq!(check_day(&rule, 20_789, 0), Err(Reason::NotValidToday));
        assert_eq!(check_day(&rule, 20_790, 0), Ok(()));
        let any_day = TicketTypeRule {
            name: "Full".into(),
            ..TicketTypeRule::default()
        };
        assert_eq!(check_day(&any_day, 1, 500), Ok(()));
    }

    const H: u64 = 3_600_000;

    #[test]
    fn the_check_out_instant_is_the_latest_at_or_before() {
        let c = DailyCheckout {
            minute_of_day: 23 * 60,
            utc_offset_minutes: 0,
        };
        assert_eq!(c.last_at_or_before(23 * H), 23 * H as i64);
        assert_eq!(c.last_at_or_before(23 * H - 1), -(H as i64));
        assert_eq!(c.last_at_or_before(24 * H + 5 * H), 23 * H as i64);
        // Admitted at 10:00, read at 22:59: inside; at 23:00: out; next morning: out.
        assert!(!c.checked_out_between(10 * H, 23 * H - 1));
        assert!(c.checked_out_between(10 * H, 23 * H));
        assert!(c.checked_out_between(10 * H, 33 * H));
        // Admitted after the check-out: inside until the next one.
        assert!(!c.checked_out_between(23 * H + 1, 46 * H));
        assert!(c.checked_out_between(23 * H + 1, 47 * H));
    }

    #[test]
    fn the_offset_moves_the_local_day_and_the_check_out() {
        // 03:00 local at UTC+2 is 01:00 UTC.
        let c = DailyCheckout {
            minute_of_day: 3 * 60,
            utc_offset_minutes: 120,
        };
        assert_eq!(c.last_at_or_before(2 * H), H as i64);
        assert!(c.checked_out_between(0, H));
        assert!(!c.checked_out_between(0, H - 1));
        // 23:30 UTC on day 0 is already day 1 at UTC+1, still day 0 at UTC-5.
        let t = 23 * H + H / 2;
        assert_eq!(local_day(t, 0), 0);
        assert_eq!(local_day(t, 60), 1);
        assert_eq!(local_day(t, -300), 0);
        assert_eq!(local_day(4 * H, -300), -1);
    }
}
