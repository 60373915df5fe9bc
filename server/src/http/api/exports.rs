//! Exports for the organizer's other tools: participants with their check-in facts (columns of
//! the organizer's choosing) and the whole check-in log, failed scans included; CSV (safe from
//! formula injection) or JSON with the same columns.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::load_event;
use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::http::csv::SafeCsv;
use crate::http::error::Problem;
use crate::http::extract::{Path, Query};
use crate::service::AppState;
use crate::service::exports::{self, Format};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` (default) or `json`.
    pub format: Option<String>,
    /// Comma-separated columns, in the order wanted (default: all).
    pub columns: Option<String>,
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
                .map(|r| exports::json_object(r, columns))
                .collect();
            Ok(axum::Json(items).into_response())
        }
        Format::Csv => {
            let mut w = SafeCsv::default();
            w.row(columns)?;
            for r in rows {
                w.row(exports::csv_cells(&r, columns))?;
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
    auth.require_on(event_id, Role::Staff)?;
    load_event(&state, event_id).await?;
    let format = exports::format_of(q.format.as_deref())?;
    let columns = exports::columns_of(q.columns.as_deref(), exports::PARTICIPANT_COLUMNS)?;
    let rows = exports::participant_rows(&state.db, state.master.personal(), event_id).await?;
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
    auth.require_on(event_id, Role::Viewer)?;
    load_event(&state, event_id).await?;
    let format = exports::format_of(q.format.as_deref())?;
    let columns = exports::columns_of(q.columns.as_deref(), exports::CHECKIN_COLUMNS)?;
    let rows = exports::checkin_rows(&state.db, event_id).await?;
    respond(rows, &columns, format, "checkins.csv")
}
