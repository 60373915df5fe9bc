//! The three renderings of the event report ([`crate::service::reports`]): JSON (the model as
//! it is), CSV and a printable HTML page. CSV and HTML are both written from one flat list of
//! facts, so they cannot disagree: a fact is (scope, ticket type, section, subject, metric,
//! value); a CSV row is one fact, an HTML table cell is one fact and carries its key in a
//! `data-fact` attribute.

use std::sync::LazyLock;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::Error;
use crate::http::csv::SafeCsv;
use crate::service::reports::{Report, Summary};

/// One number or text of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// `event`, `ticket_type` or `participant`.
    pub scope: &'static str,
    /// The ticket type (for `ticket_type` and `participant`; empty when none).
    pub ticket_type: String,
    /// `summary`, `arrivals`, `gates`, `conflicts` or `participants`.
    pub section: &'static str,
    /// What the row is about: a bucket's start, a gate's name, a conflict kind, a participant id
    /// (empty for the summary).
    pub subject: String,
    pub metric: &'static str,
    pub value: String,
}

impl Fact {
    fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.scope, self.ticket_type, self.section, self.subject, self.metric
        )
    }
}

pub const CSV_HEADER: [&str; 6] = [
    "scope",
    "ticket_type",
    "section",
    "subject",
    "metric",
    "value",
];

fn time_text(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

fn summary_facts(out: &mut Vec<Fact>, scope: &'static str, ticket_type: &str, s: &Summary) {
    let mut push = |section: &'static str, subject: String, metric: &'static str, value: String| {
        out.push(Fact {
            scope,
            ticket_type: ticket_type.to_owned(),
            section,
            subject,
            metric,
            value,
        })
    };
    push(
        "summary",
        String::new(),
        "registered",
        s.registered.to_string(),
    );
    push("summary", String::new(), "attended", s.attended.to_string());
    push("summary", String::new(), "no_shows", s.no_shows.to_string());
    push(
        "summary",
        String::new(),
        "attendance_rate",
        s.attendance_rate.to_string(),
    );
    push(
        "summary",
        String::new(),
        "peak_minute",
        s.peak_minute
            .as_ref()
            .map(|p| time_text(p.minute))
            .unwrap_or_default(),
    );
    push(
        "summary",
        String::new(),
        "peak_minute_arrivals",
        s.peak_minute
            .as_ref()
            .map(|p| p.arrivals.to_string())
            .unwrap_or_else(|| "0".into()),
    );
    for b in &s.arrivals {
        push(
            "arrivals",
            time_text(b.start),
            "arrivals",
            b.arrivals.to_string(),
        );
    }
    for g in &s.gates {
        push("gates", g.name.clone(), "zone", opt(&g.zone));
        push("gates", g.name.clone(), "entries", g.entries.to_string());
        push("gates", g.name.clone(), "exits", g.exits.to_string());
        push("gates", g.name.clone(), "rejected", g.rejected.to_string());
        push("gates", g.name.clone(), "scans", g.scans.to_string());
        push(
            "gates",
            g.name.clone(),
            "median_seconds_between_scans",
            opt(&g.median_seconds_between_scans),
        );
    }
    for c in &s.conflicts {
        push("conflicts", c.kind.clone(), "count", c.count.to_string());
    }
}

/// The report as a flat list of facts, in reading order.
pub fn facts(r: &Report) -> Vec<Fact> {
    let mut out = Vec::new();
    summary_facts(&mut out, "event", "", &r.totals);
    for t in &r.by_ticket_type {
        summary_facts(
            &mut out,
            "ticket_type",
            t.ticket_type.as_deref().unwrap_or(""),
            &t.summary,
        );
    }
    for p in &r.participants {
        let mut push = |metric: &'static str, value: String| {
            out.push(Fact {
                scope: "participant",
                ticket_type: opt(&p.ticket_type),
                section: "participants",
                subject: p.participant_id.to_string(),
                metric,
                value,
            })
        };
        push("external_id", opt(&p.external_id));
        push("name", opt(&p.name));
        push("email", opt(&p.email));
        push("organization", opt(&p.organization));
        push("ticket_serial", opt(&p.ticket_serial));
        push("ticket_status", opt(&p.ticket_status));
        push("entries", p.entries.to_string());
        push("exits", p.exits.to_string());
        push(
            "first_admission",
            p.first_admission.map(time_text).unwrap_or_default(),
        );
        push("last_exit", p.last_exit.map(time_text).unwrap_or_default());
    }
    out
}

/// The report as CSV: a header, then one fact per row, every cell formula-safe.
pub fn csv(r: &Report) -> Result<Vec<u8>, Error> {
    let mut w = SafeCsv::default();
    w.row(CSV_HEADER)?;
    for f in facts(r) {
        w.row([
            f.scope,
            &f.ticket_type,
            f.section,
            &f.subject,
            f.metric,
            &f.value,
        ])?;
    }
    w.finish()
}

#[derive(Serialize)]
struct Cell {
    key: String,
    value: String,
}

#[derive(Serialize)]
struct Row {
    label: String,
    subject: String,
    cells: Vec<Option<Cell>>,
}

#[derive(Serialize)]
struct Section {
    title: &'static str,
    columns: Vec<&'static str>,
    rows: Vec<Row>,
}

fn title(section: &str) -> &'static str {
    match section {
        "summary" => "Summary",
        "arrivals" => "Arrivals per 5 minutes",
        "gates" => "Gates",
        "conflicts" => "Conflicts by kind",
        _ => "Participants",
    }
}

fn label(f: &Fact) -> String {
    match (f.scope, f.ticket_type.as_str()) {
        ("event", _) => "Whole event".into(),
        ("ticket_type", "") => "No ticket type".into(),
        ("ticket_type", t) => format!("Type {t}"),
        (_, "") => String::new(),
        (_, t) => t.to_owned(),
    }
}

/// A section being pivoted: its name, its metrics (columns), its rows as (key, label, subject).
type Pivot = (
    &'static str,
    Vec<&'static str>,
    Vec<(String, String, String)>,
);

/// The facts as one table per section: a row per (scope, type, subject), a column per metric.
fn sections(facts: &[Fact]) -> Vec<Section> {
    let mut out: Vec<Pivot> = Vec::new();
    let mut cells: std::collections::HashMap<(String, &'static str), &Fact> = Default::default();
    for f in facts {
        let pos = match out.iter().position(|(s, _, _)| *s == f.section) {
            Some(p) => p,
            None => {
                out.push((f.section, Vec::new(), Vec::new()));
                out.len() - 1
            }
        };
        let (_, columns, rows) = &mut out[pos];
        if !columns.contains(&f.metric) {
            columns.push(f.metric);
        }
        let row_key = format!("{}|{}|{}", f.scope, f.ticket_type, f.subject);
        if !rows.iter().any(|(k, _, _)| *k == row_key) {
            rows.push((row_key.clone(), label(f), f.subject.clone()));
        }
        cells.insert((row_key, f.metric), f);
    }
    out.into_iter()
        .map(|(section, columns, rows)| Section {
            title: title(section),
            rows: rows
                .into_iter()
                .map(|(key, label, subject)| Row {
                    cells: columns
                        .iter()
                        .map(|m| {
                            cells.get(&(key.clone(), *m)).map(|f| Cell {
                                key: f.key(),
                                value: f.value.clone(),
                            })
                        })
                        .collect(),
                    label,
                    subject,
                })
                .collect(),
            columns,
        })
        .collect()
}

static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    // `.html` names are auto-escaped.
    if let Err(e) = env.add_template("report.html", include_str!("report.html")) {
        tracing::error!(error = %e, "the report template does not parse");
    }
    env
});

/// The printable HTML page.
pub fn html(r: &Report) -> Result<String, Error> {
    let facts = facts(r);
    let tmpl = TEMPLATES
        .get_template("report.html")
        .map_err(|e| Error::Internal(anyhow::anyhow!("report template: {e}")))?;
    #[derive(Serialize)]
    struct Page<'a> {
        event_name: &'a str,
        venue: Option<&'a str>,
        status: &'a str,
        generated_at: String,
        sections: Vec<Section>,
    }
    tmpl.render(minijinja::value::Serde(Page {
        event_name: &r.event_name,
        venue: r.venue.as_deref(),
        status: &r.status,
        generated_at: time_text(r.generated_at),
        sections: sections(&facts),
    }))
    .map_err(|e| Error::Internal(anyhow::anyhow!("report template: {e}")))
}
