//! Alert rules as the organizer writes them, their defaults and checks, and the conditions the
//! evaluator computes from what it read. No SQL and no clock here: the evaluator passes `now`.

use serde::{Deserialize, Serialize};

use super::Error;

/// The subject of an alert about the whole event (not one gate).
pub const EVENT_SUBJECT: &str = "event";

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A gate not heard from for a while.
    GateOffline,
    /// A gate's outbox deeper than a threshold.
    OutboxDepth,
    /// Unresolved conflicts exist.
    ConflictCreated,
    /// Attendance reached a share of the tickets issued.
    Attendance,
    /// The share of rejected scans over a recent window is high.
    ErrorRate,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::GateOffline,
        Kind::OutboxDepth,
        Kind::ConflictCreated,
        Kind::Attendance,
        Kind::ErrorRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GateOffline => "gate_offline",
            Kind::OutboxDepth => "outbox_depth",
            Kind::ConflictCreated => "conflict_created",
            Kind::Attendance => "attendance",
            Kind::ErrorRate => "error_rate",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A line for people (e-mail subject, dashboard).
    pub fn title(self) -> &'static str {
        match self {
            Kind::GateOffline => "Gate offline",
            Kind::OutboxDepth => "Gate outbox deep",
            Kind::ConflictCreated => "Unresolved conflicts",
            Kind::Attendance => "Attendance threshold reached",
            Kind::ErrorRate => "High share of rejected scans",
        }
    }
}

/// `gate_offline`: a gate that was heard from once and then not for `after_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GateOfflineRule {
    pub enabled: bool,
    /// 30..=86400 (default 120). An idle gate agent is heard from at least every 20 s (its
    /// long poll), recorded at most every 5 s: a shorter threshold would flag healthy gates.
    pub after_seconds: u32,
}

impl Default for GateOfflineRule {
    fn default() -> Self {
        Self {
            enabled: true,
            after_seconds: 120,
        }
    }
}

/// `outbox_depth`: a gate reports more than `above` check-ins not yet accepted by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxDepthRule {
    pub enabled: bool,
    /// 1..=1000000 (default 500).
    pub above: u32,
}

impl Default for OutboxDepthRule {
    fn default() -> Self {
        Self {
            enabled: true,
            above: 500,
        }
    }
}

/// `conflict_created`: fires when the event has unresolved conflicts, clears when none is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ConflictRule {
    pub enabled: bool,
}

impl Default for ConflictRule {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `attendance`: tickets admitted at least once reach `percent` of the valid tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AttendanceRule {
    pub enabled: bool,
    /// 1..=100 (default 90).
    pub percent: u32,
}

impl Default for AttendanceRule {
    fn default() -> Self {
        Self {
            enabled: false,
            percent: 90,
        }
    }
}

/// `error_rate`: of the scans received over the last `window_seconds` (at least `min_scans` of
/// them), `percent` or more were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorRateRule {
    pub enabled: bool,
    /// 1..=100 (default 20).
    pub percent: u32,
    /// 10..=86400 (default 300).
    pub window_seconds: u32,
    /// 1..=1000000 (default 20): fewer scans in the window never fire.
    pub min_scans: u32,
}

impl Default for ErrorRateRule {
    fn default() -> Self {
        Self {
            enabled: true,
            percent: 20,
            window_seconds: 300,
            min_scans: 20,
        }
    }
}

/// An event's alert rules. Every kind and field may be left out of a `PUT`: it then takes its
/// default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    pub gate_offline: GateOfflineRule,
    pub outbox_depth: OutboxDepthRule,
    pub conflict_created: ConflictRule,
    pub attendance: AttendanceRule,
    pub error_rate: ErrorRateRule,
}

fn within(field: &str, value: u32, min: u32, max: u32) -> Result<(), Error> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::validation(
            field,
            format!("{field} must be between {min} and {max} (got {value})"),
        ))
    }
}

impl Rules {
    /// Checks every threshold; the error names the field (`gate_offline.after_seconds`).
    pub fn check(&self) -> Result<(), Error> {
        within(
            "gate_offline.after_seconds",
            self.gate_offline.after_seconds,
            30,
            86_400,
        )?;
        within("outbox_depth.above", self.outbox_depth.above, 1, 1_000_000)?;
        within("attendance.percent", self.attendance.percent, 1, 100)?;
        within("error_rate.percent", self.error_rate.percent, 1, 100)?;
        within(
            "error_rate.window_seconds",
            self.error_rate.window_seconds,
            10,
            86_400,
        )?;
        within(
            "error_rate.min_scans",
            self.error_rate.min_scans,
            1,
            1_000_000,
        )?;
        Ok(())
    }

    /// Stored rules, or the defaults when the stored text cannot be read (it was checked when
    /// written, so that only happens after a downgrade).
    pub fn from_stored(text: Option<&str>) -> Rules {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }
}

/// What the evaluator read of one gate.
#[derive(Debug, Clone)]
pub struct GateSeen {
    pub id: uuid::Uuid,
    pub name: String,
    pub is_active: bool,
    pub last_seen_at: Option<i64>,
    pub outbox_depth: Option<i64>,
}

/// What the evaluator read of one event.
#[derive(Debug, Clone, Default)]
pub struct EventSeen {
    pub gates: Vec<GateSeen>,
    /// Tickets admitted at least once, valid tickets.
    pub admitted: i64,
    pub issued: i64,
    pub open_conflicts: i64,
    /// Scans (not undos) received within the error-rate window, and how many were rejected.
    pub scans: i64,
    pub rejected: i64,
}

/// One condition that holds now: kind, subject, what was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    pub kind: Kind,
    pub subject: String,
    pub detail: serde_json::Value,
}

/// Every condition of `rules` that holds for what was seen at `now` (Unix ms).
pub fn holding(rules: &Rules, seen: &EventSeen, now: i64) -> Vec<Holding> {
    let mut out = Vec::new();
    let active = seen.gates.iter().filter(|g| g.is_active);
    for g in active {
        if rules.gate_offline.enabled
            && let Some(at) = g.last_seen_at
            && now - at > i64::from(rules.gate_offline.after_seconds) * 1000
        {
            out.push(Holding {
                kind: Kind::GateOffline,
                subject: g.id.to_string(),
                detail: serde_json::json!({
                    "gate_id": g.id, "gate_name": g.name,
                    "last_seen_at": super::mail::rfc3339(super::ms_to_time(at)),
                    "after_seconds": rules.gate_offline.after_seconds,
                }),
            });
        }
        if rules.outbox_depth.enabled
            && let Some(depth) = g.outbox_depth
            && depth > i64::from(rules.outbox_depth.above)
        {
            out.push(Holding {
                kind: Kind::OutboxDepth,
                subject: g.id.to_string(),
                detail: serde_json::json!({
                    "gate_id": g.id, "gate_name": g.name,
                    "outbox_depth": depth, "above": rules.outbox_depth.above,
                }),
            });
        }
    }
    if rules.conflict_created.enabled && seen.open_conflicts > 0 {
        out.push(Holding {
            kind: Kind::ConflictCreated,
            subject: EVENT_SUBJECT.into(),
            detail: serde_json::json!({"open_conflicts": seen.open_conflicts}),
        });
    }
    if rules.attendance.enabled
        && seen.issued > 0
        && seen.admitted * 100 >= i64::from(rules.attendance.percent) * seen.issued
    {
        out.push(Holding {
            kind: Kind::Attendance,
            subject: EVENT_SUBJECT.into(),
            detail: serde_json::json!({
                "admitted": seen.admitted, "issued": seen.issued,
                "percent": rules.attendance.percent,
            }),
        });
    }
    if rules.error_rate.enabled
        && seen.scans >= i64::from(rules.error_rate.min_scans)
        && seen.scans > 0
        && seen.rejected * 100 >= i64::from(rules.error_rate.percent) * seen.scans
    {
        out.push(Holding {
            kind: Kind::ErrorRate,
            subject: EVENT_SUBJECT.into(),
            detail: serde_json::json!({
                "scans": seen.scans, "rejected": seen.rejected,
                "percent": rules.error_rate.percent,
                "window_seconds": rules.error_rate.window_seconds,
            }),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(last_seen_at: Option<i64>, depth: Option<i64>) -> GateSeen {
        GateSeen {
            id: uuid::Uuid::nil(),
            name: "North".into(),
            is_active: true,
            last_seen_at,
            outbox_depth: depth,
        }
    }

    #[test]
    fn defaults_check_and_partial_documents_take_defaults() {
        let d = Rules::default();
        assert!(d.check().is_ok());
        assert_eq!(d.gate_offline.after_seconds, 120);
        assert_eq!(d.outbox_depth.above, 500);
        assert!(!d.attendance.enabled);
        let r: Rules = serde_json::from_str(r#"{"gate_offline": {"after_seconds": 30}}"#).unwrap();
        assert!(r.gate_offline.enabled);
        assert_eq!(r.gate_offline.after_seconds, 30);
        assert_eq!(r.error_rate, ErrorRateRule::default());
        let bad = Rules {
            gate_offline: GateOfflineRule {
                enabled: true,
                after_seconds: 5,
            },
            ..Rules::default()
        };
        match bad.check() {
            Err(Error::Validation { field, .. }) => {
                assert_eq!(field.as_deref(), Some("gate_offline.after_seconds"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn conditions_hold_past_their_thresholds_only() {
        let rules = Rules {
            attendance: AttendanceRule {
                enabled: true,
                percent: 50,
            },
            ..Rules::default()
        };
        let now = 1_000_000_000;
        let mut seen = EventSeen {
            gates: vec![gate(Some(now - 120_000), Some(500)), gate(None, None)],
            admitted: 4,
            issued: 10,
            scans: 19,
            rejected: 19,
            ..EventSeen::default()
        };
        assert!(holding(&rules, &seen, now).is_empty(), "at the thresholds");
        seen.gates[0].last_seen_at = Some(now - 120_001);
        seen.gates[0].outbox_depth = Some(501);
        seen.admitted = 5;
        seen.scans = 20;
        seen.rejected = 4;
        seen.open_conflicts = 1;
        let kinds: Vec<Kind> = holding(&rules, &seen, now)
            .into_iter()
            .map(|h| h.kind)
            .collect();
        assert_eq!(kinds, Kind::ALL.to_vec());
        seen.gates[0].is_active = false;
        let kinds: Vec<Kind> = holding(&rules, &seen, now)
            .into_iter()
            .map(|h| h.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![Kind::ConflictCreated, Kind::Attendance, Kind::ErrorRate],
            "a deactivated gate raises nothing"
        );
    }
}
