//! Exports for the organizer's other tools: participants with their check-in facts (columns of
//! the organizer's choosing) and the whole check-in log, failed scans included; CSV (safe from
//! formula injection) or JSON with the same columns.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::load_event;
use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::http::csv::SafeCsv;
use crate::http::error::Problem;
use crate::http::extract::{Path, Query};
use crate::service::AppState;
use crate::store::{self, ms_to_time};

/// The participant export's columns, in their default order.
pub const PARTICIPANT_COLUMNS: &[&str] = &[
    "participant_id",
    "external_id",
    "name",
    "email",
    "phone",
    "organization",
    "ticket_type",
    "ticket_serial",
    "ticket_status",
    "inside",
    "entries",
    "exits",
    "first_entry",
    "last_exit",
    "gates",
];

/// The check-in log's columns.
pub const CHECKIN_COLUMNS: &[&str] = &[
    "checkin_id",
    "scanned_at",
    "received_at",
    "gate",
    "seq",
    "ticket_serial",
    "code",
    "method",
    "direction",
    "decision",
    "reason",
    "operator_override",
    "undoes",
    "invalid",
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` (default) or `json`.
    pub format: Option<String>,
    /// Comma-separated columns, in the order wanted (default: all).
    pub columns: Option<String>,
}

enum Format {
    Csv,
    Json,
}

fn format_of(q: &ExportQuery) -> Result<Format, Error> {
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => Ok(Format::Csv),
        "json" => Ok(Format::Json),
        other => Err(Error::bad_request(
            Some("format"),
            format!("format is csv or json, not {other:?}"),
        )),
    }
}

fn columns_of(q: &ExportQuery, known: &[&'static str]) -> Result<Vec<&'static str>, Error> {
    let Some(list) = q.columns.as_deref().filter(|c| !c.trim().is_empty()) else {
        return Ok(known.to_vec());
    };
    list.split(',')
        .map(str::trim)
        .map(|c| {
            known.iter().copied().find(|k| *k == c).ok_or_else(|| {
                Error::bad_request(
                    Some("columns"),
                    format!("unknown column {c:?}; known: {}", known.join(", ")),
                )
            })
        })
        .collect()
}

fn time_text(ms: Option<i64>) -> Value {
    ms.and_then(|ms| ms_to_time(ms).format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn text(v: Option<String>) -> Value {
    v.map_or(Value::Null, Value::String)
}

/// Rows of named values → the response in the asked format.
fn respond(
    rows: Vec<Map<String, Value>>,
    columns: &[&str],
    format: Format,
    filename: &str,
) -> Result<Response, Error> {
    match format {
        Format::Json => {
            let items: Vec<Value> = rows
                .into_iter()
                .map(|mut r| {
                    Value::Object(
                        columns
                            .iter()
                            .map(|c| ((*c).to_owned(), r.remove(*c).unwrap_or(Value::Null)))
                            .collect(),
                    )
                })
                .collect();
            Ok(axum::Json(items).into_response())
        }
        Format::Csv => {
            let mut w = SafeCsv::default();
            w.row(columns)?;
            for r in rows {
                w.row(columns.iter().map(|c| {
                    match r.get(*c) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(items)) => items
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("; "),
                        Some(other) => other.to_string(),
                    }
                }))?;
            }
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{filename}\""),
                    ),
                ],
                w.finish()?,
            )
                .into_response())
        }
    }
}

/// Participants with their check-in facts (staff: it holds contact details): first entry and
/// last exit (times), entries, exits, whether inside, and the gates that admitted them.
#[utoipa::path(get, operation_id = "export_participants", path = "/api/v1/events/{event}/exports/participants", tag = "exports", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ExportQuery),
    responses((status = 200, description = "CSV (`text/csv`) or a JSON array, one row per participant"),
              (status = 400, description = "Unknown format or column (problem+json names it)", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Below staff", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Unknown event", body = Problem, content_type = "application/problem+json")))]
pub async fn participants(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, Error> {
    auth.require(Role::Staff)?;
    load_event(&state, event_id).await?;
    let format = format_of(&q)?;
    let columns = columns_of(&q, PARTICIPANT_COLUMNS)?;
    let mut gates: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for (serial, gate) in store::exports::admitting_gates(&state.db, event_id).await? {
        gates.entry(serial).or_default().push(Value::String(gate));
    }
    let rows = store::exports::participants(&state.db, event_id)
        .await?
        .into_iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("participant_id".into(), Value::String(p.id.to_string()));
            m.insert("external_id".into(), text(p.external_id));
            m.insert("name".into(), text(p.name));
            m.insert("email".into(), text(p.email));
            m.insert("phone".into(), text(p.phone));
            m.insert("organization".into(), text(p.organization));
            m.insert("ticket_type".into(), text(p.ticket_type));
            m.insert(
                "ticket_serial".into(),
                p.ticket_serial.map_or(Value::Null, Value::from),
            );
            m.insert("ticket_status".into(), text(p.ticket_status));
            m.insert("inside".into(), Value::Bool(p.inside.unwrap_or(false)));
            m.insert("entries".into(), Value::from(p.entries.unwrap_or(0)));
            m.insert("exits".into(), Value::from(p.exits.unwrap_or(0)));
            m.insert("first_entry".into(), time_text(p.first_entry));
            m.insert("last_exit".into(), time_text(p.last_exit));
            m.insert(
                "gates".into(),
                Value::Array(
                    p.ticket_serial
                        .and_then(|s| gates.remove(&s))
                        .unwrap_or_default(),
                ),
            );
            m
        })
        .collect();
    respond(rows, &columns, format, "participants.csv")
}

/// The whole check-in log of the event, oldest scan first, failed scans included (viewer).
#[utoipa::path(get, operation_id = "export_checkins", path = "/api/v1/events/{event}/exports/checkins", tag = "exports", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ExportQuery),
    responses((status = 200, description = "CSV (`text/csv`) or a JSON array, one row per check-in"),
              (status = 400, description = "Unknown format or column (problem+json names it)", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Unknown event", body = Problem, content_type = "application/problem+json")))]
pub async fn checkins(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, Error> {
    auth.require(Role::Viewer)?;
    load_event(&state, event_id).await?;
    let format = format_of(&q)?;
    let columns = columns_of(&q, CHECKIN_COLUMNS)?;
    let rows = store::exports::checkin_log(&state.db, event_id)
        .await?
        .into_iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("checkin_id".into(), Value::String(c.id.to_string()));
            m.insert("scanned_at".into(), time_text(Some(c.scanned_at)));
            m.insert("received_at".into(), time_text(Some(c.received_at)));
            m.insert("gate".into(), text(c.gate_name));
            m.insert("seq".into(), Value::from(c.seq));
            m.insert(
                "ticket_serial".into(),
                c.ticket_serial.map_or(Value::Null, Value::from),
            );
            m.insert("code".into(), text(c.code));
            m.insert("method".into(), Value::String(c.method));
            m.insert("direction".into(), Value::String(c.direction));
            m.insert("decision".into(), Value::String(c.decision));
            m.insert("reason".into(), text(c.reason));
            m.insert("operator_override".into(), text(c.operator_override));
            m.insert(
                "undoes".into(),
                c.undoes
                    .map_or(Value::Null, |u| Value::String(u.to_string())),
            );
            m.insert("invalid".into(), text(c.invalid));
            m
        })
        .collect();
    respond(rows, &columns, format, "checkins.csv")
}
