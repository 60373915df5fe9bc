//! The event report: what happened at an event, for the whole event and per ticket type,
//! computed from the stored check-ins in one place so that every rendering (JSON, CSV, the
//! printable page, the console) shows the same numbers.
//!
//! Definitions (also in the README's report section):
//! - **registered**: participants of the event (an erased participant still counts, without
//!   personal data), as `store::reports::type_counts` counts them for the dashboard too;
//! - **attended**: participants whose ticket has at least one effective entry (admitted, not
//!   undone); **no-shows** = registered − attended; **attendance rate** = attended / registered,
//!   rounded to four decimals (0 when nobody is registered);
//! - **arrivals**: a participant's first effective entry; the curve counts them per 5 minutes of
//!   the gate's scan time (UTC), every bucket from the first to the last arrival listed, empty
//!   ones too; the **peak minute** is the minute with the most arrivals (the earliest on a tie);
//! - **per gate**: effective entries and exits, rejections, all scans (admissions, rejections and
//!   undone admissions; not the undo records or check-ins stored as invalid), and the median
//!   time between consecutive scans in seconds (the mean of the two middle gaps when the number
//!   of gaps is even; none with fewer than two scans);
//! - **conflicts**: every conflict the merge recorded (open or resolved), by kind;
//! - per participant: entries, exits, the time of the first admission and of the last exit.
//!
//! A ticket type's numbers count only the participants of that type and the scans and conflicts
//! of their tickets.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Error;
use crate::store::reports::{ReportGate, ReportInput, ReportScan};
use crate::store::{self, Db, ms_to_time};

/// Width of a bucket of the arrival curve.
pub const BUCKET_MINUTES: i64 = 5;
const MINUTE_MS: i64 = 60_000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub event_id: Uuid,
    pub event_name: String,
    pub venue: Option<String>,
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: OffsetDateTime,
    /// Width of an arrival bucket (5).
    pub bucket_minutes: i64,
    /// The whole event.
    pub totals: Summary,
    /// The same numbers per ticket type (`null`: participants without a type), by type name.
    pub by_ticket_type: Vec<TypeSummary>,
    pub participants: Vec<ParticipantLine>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub registered: u64,
    pub attended: u64,
    pub no_shows: u64,
    /// attended / registered, four decimals.
    pub attendance_rate: f64,
    pub arrivals: Vec<ArrivalBucket>,
    pub peak_minute: Option<PeakMinute>,
    pub gates: Vec<GateThroughput>,
    /// Every conflict kind, zero counts included.
    pub conflicts: Vec<ConflictCount>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TypeSummary {
    pub ticket_type: Option<String>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ArrivalBucket {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub start: OffsetDateTime,
    pub arrivals: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PeakMinute {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub minute: OffsetDateTime,
    pub arrivals: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GateThroughput {
    pub gate_id: Uuid,
    pub name: String,
    pub zone: Option<String>,
    pub entries: u64,
    pub exits: u64,
    pub rejected: u64,
    pub scans: u64,
    pub median_seconds_between_scans: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConflictCount {
    pub kind: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParticipantLine {
    pub participant_id: Uuid,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub organization: Option<String>,
    pub ticket_type: Option<String>,
    pub ticket_serial: Option<i64>,
    pub ticket_status: Option<String>,
    pub entries: u64,
    pub exits: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub first_admission: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_exit: Option<OffsetDateTime>,
}

/// The report of an event as the database holds it now.
pub async fn event_report(
    db: &Db,
    keys: &crate::domain::crypto::PersonalKeys,
    event_id: Uuid,
) -> Result<Report, Error> {
    let event = store::events::require(db, event_id).await?;
    let input = store::reports::report_input(db, keys, event_id).await?;
    Ok(assemble(
        event.id,
        event.name,
        event.venue,
        event.status,
        input,
        // To the second: a printed report says when, not to the nanosecond.
        {
            let now = OffsetDateTime::now_utc();
            now.replace_nanosecond(0).unwrap_or(now)
        },
    ))
}

fn effective(s: &ReportScan) -> bool {
    s.admitted && !s.undone
}

/// The report from its raw rows (pure).
pub fn assemble(
    event_id: Uuid,
    event_name: String,
    venue: Option<String>,
    status: String,
    input: ReportInput,
    now: OffsetDateTime,
) -> Report {
    // Per ticket serial: entries, exits, first entry, last exit.
    #[derive(Default, Clone, Copy)]
    struct Facts {
        entries: u64,
        exits: u64,
        first_in: Option<i64>,
        last_out: Option<i64>,
    }
    let mut facts: HashMap<i64, Facts> = HashMap::new();
    for s in input.scans.iter().filter(|s| effective(s)) {
        let Some(serial) = s.ticket_serial else {
            continue;
        };
        let f = facts.entry(serial).or_default();
        if s.direction == "in" {
            f.entries += 1;
            f.first_in = Some(f.first_in.map_or(s.scanned_at, |t| t.min(s.scanned_at)));
        } else {
            f.exits += 1;
            f.last_out = Some(f.last_out.map_or(s.scanned_at, |t| t.max(s.scanned_at)));
        }
    }
    let type_of: HashMap<i64, Option<String>> = input
        .participants
        .iter()
        .filter_map(|p| p.ticket_serial.map(|s| (s, p.ticket_type.clone())))
        .collect();

    let group = |filter: &dyn Fn(Option<&Option<String>>) -> bool| -> Summary {
        let members: Vec<_> = input
            .participants
            .iter()
            .filter(|p| filter(Some(&p.ticket_type)))
            .collect();
        let first_ins: Vec<i64> = members
            .iter()
            .filter_map(|p| p.ticket_serial)
            .filter_map(|s| facts.get(&s).and_then(|f| f.first_in))
            .collect();
        let scans: Vec<&ReportScan> = input
            .scans
            .iter()
            .filter(|s| filter(s.ticket_serial.and_then(|n| type_of.get(&n))))
            .collect();
        let conflicts: Vec<&(String, i64)> = input
            .conflicts
            .iter()
            .filter(|(_, serial)| filter(type_of.get(serial)))
            .collect();
        let registered: i64 = input
            .registered
            .iter()
            .filter(|t| filter(Some(&t.ticket_type)))
            .map(|t| t.registered)
            .sum();
        summary(
            u64::try_from(registered).unwrap_or(0),
            &first_ins,
            &scans,
            &input.gates,
            &conflicts,
        )
    };

    let totals = group(&|_| true);
    let mut types: Vec<Option<String>> = input
        .participants
        .iter()
        .map(|p| p.ticket_type.clone())
        .collect();
    types.sort();
    types.dedup();
    let by_ticket_type = types
        .into_iter()
        .map(|t| TypeSummary {
            summary: group(&|pt| pt == Some(&t)),
            ticket_type: t,
        })
        .collect();

    let participants = input
        .participants
        .into_iter()
        .map(|p| {
            let f = p
                .ticket_serial
                .and_then(|s| facts.get(&s).copied())
                .unwrap_or_default();
            ParticipantLine {
                participant_id: p.id,
                external_id: p.external_id,
                name: p.name,
                email: p.email,
                organization: p.organization,
                ticket_type: p.ticket_type,
                ticket_serial: p.ticket_serial,
                ticket_status: p.ticket_status,
                entries: f.entries,
                exits: f.exits,
                first_admission: f.first_in.map(ms_to_time),
                last_exit: f.last_out.map(ms_to_time),
            }
        })
        .collect();

    Report {
        event_id,
        event_name,
        venue,
        status,
        generated_at: now,
        bucket_minutes: BUCKET_MINUTES,
        totals,
        by_ticket_type,
        participants,
    }
}

fn summary(
    registered: u64,
    first_ins: &[i64],
    scans: &[&ReportScan],
    gates: &[ReportGate],
    conflicts: &[&(String, i64)],
) -> Summary {
    let attended = first_ins.len() as u64;
    let attendance_rate = if registered == 0 {
        0.0
    } else {
        (attended as f64 / registered as f64 * 10_000.0).round() / 10_000.0
    };

    let bucket_ms = BUCKET_MINUTES * MINUTE_MS;
    let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
    let mut minutes: BTreeMap<i64, u64> = BTreeMap::new();
    for &t in first_ins {
        *buckets.entry(t.div_euclid(bucket_ms)).or_default() += 1;
        *minutes.entry(t.div_euclid(MINUTE_MS)).or_default() += 1;
    }
    let arrivals = match (buckets.keys().next(), buckets.keys().next_back()) {
        (Some(&first), Some(&last)) => (first..=last)
            .map(|b| ArrivalBucket {
                start: ms_to_time(b * bucket_ms),
                arrivals: buckets.get(&b).copied().unwrap_or(0),
            })
            .collect(),
        _ => Vec::new(),
    };
    // The first minute with the highest count (BTreeMap iterates in time order).
    let peak_minute = minutes
        .iter()
        .fold(None::<(i64, u64)>, |best, (&m, &n)| match best {
            Some((_, b)) if b >= n => best,
            _ => Some((m, n)),
        })
        .map(|(m, n)| PeakMinute {
            minute: ms_to_time(m * MINUTE_MS),
            arrivals: n,
        });

    let gates = gates
        .iter()
        .map(|g| {
            let at_gate: Vec<&&ReportScan> = scans.iter().filter(|s| s.gate_id == g.id).collect();
            let count = |dir: &str| {
                at_gate
                    .iter()
                    .filter(|s| effective(s) && s.direction == dir)
                    .count() as u64
            };
            let mut times: Vec<i64> = at_gate.iter().map(|s| s.scanned_at).collect();
            times.sort_unstable();
            let mut gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
            gaps.sort_unstable();
            let median_ms = match gaps.len() {
                0 => None,
                n if n % 2 == 1 => Some(gaps[n / 2] as f64),
                n => Some((gaps[n / 2 - 1] + gaps[n / 2]) as f64 / 2.0),
            };
            GateThroughput {
                gate_id: g.id,
                name: g.name.clone(),
                zone: g.zone.clone(),
                entries: count("in"),
                exits: count("out"),
                rejected: at_gate.iter().filter(|s| !s.admitted).count() as u64,
                scans: at_gate.len() as u64,
                median_seconds_between_scans: median_ms.map(|ms| ms / 1000.0),
            }
        })
        .collect();

    let conflicts = sync_protocol::ConflictKind::ALL
        .iter()
        .map(|k| ConflictCount {
            kind: k.as_str().to_owned(),
            count: conflicts
                .iter()
                .filter(|(kind, _)| kind == k.as_str())
                .count() as u64,
        })
        .collect();

    Summary {
        registered,
        attended,
        no_shows: registered - attended,
        attendance_rate,
        arrivals,
        peak_minute,
        gates,
        conflicts,
    }
}
