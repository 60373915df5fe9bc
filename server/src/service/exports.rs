//! What the exports contain: participants with their check-in facts and the whole check-in log,
//! as rows of named values, the columns chosen by the organizer. The HTTP exports and `server
//! export` both build their rows here and differ only in where the CSV or JSON goes.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::domain::Error;
use crate::store::{self, Db, ms_to_time};

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
    "test",
];

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

/// `csv` (the default) or `json`.
pub fn format_of(format: Option<&str>) -> Result<Format, Error> {
    match format.unwrap_or("csv") {
        "csv" => Ok(Format::Csv),
        "json" => Ok(Format::Json),
        other => Err(Error::bad_request(
            Some("format"),
            format!("format is csv or json, not {other:?}"),
        )),
    }
}

/// The columns named in a comma-separated list, in its order (all of `known` when empty).
pub fn columns_of(
    columns: Option<&str>,
    known: &[&'static str],
) -> Result<Vec<&'static str>, Error> {
    let Some(list) = columns.filter(|c| !c.trim().is_empty()) else {
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

/// A row as the cells of a CSV line (before formula escaping): absent values are empty, lists are
/// joined with `; `.
pub fn csv_cells(row: &Map<String, Value>, columns: &[&str]) -> Vec<String> {
    columns
        .iter()
        .map(|c| match row.get(*c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
            Some(other) => other.to_string(),
        })
        .collect()
}

/// A row as a JSON object with exactly the chosen columns, in their order.
pub fn json_object(mut row: Map<String, Value>, columns: &[&str]) -> Value {
    Value::Object(
        columns
            .iter()
            .map(|c| ((*c).to_owned(), row.remove(*c).unwrap_or(Value::Null)))
            .collect(),
    )
}

/// One row per participant with their check-in facts: first entry and last exit (times),
/// entries, exits, whether inside, and the gates that admitted them.
pub async fn participant_rows(
    db: &Db,
    keys: &crate::domain::crypto::PersonalKeys,
    event_id: Uuid,
) -> Result<Vec<Map<String, Value>>, Error> {
    let mut gates: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for (serial, gate) in store::exports::admitting_gates(db, event_id).await? {
        gates.entry(serial).or_default().push(Value::String(gate));
    }
    let rows: Vec<Map<String, Value>> = store::exports::participants(db, keys, event_id)
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
    Ok(rows)
}

/// One row per check-in of the event, oldest scan first, failed scans included.
pub async fn checkin_rows(db: &Db, event_id: Uuid) -> Result<Vec<Map<String, Value>>, Error> {
    let rows: Vec<Map<String, Value>> = store::exports::checkin_log(db, event_id)
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
            m.insert("test".into(), Value::Bool(c.is_test));
            m
        })
        .collect();
    Ok(rows)
}
