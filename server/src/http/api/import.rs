//! `POST /api/v1/events/{event}/participants/import`: CSV upload, streamed.
//!
//! The body is never buffered whole: `Body` → `StreamReader` → `SyncIoBridge` feeds the
//! import use case ([`crate::service::import`], which holds the matching rules) on a blocking
//! thread. This module only extracts the request and shapes the response.
//!
//! Query: `dry_run` (default false) reports what would happen and writes nothing; `partial`
//! (default false) writes the valid rows even when some rows have errors; `issue_tickets`
//! (default true).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::{StreamReader, SyncIoBridge};
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::http::error::Problem;
use crate::http::extract::{Json, Path, Query};
use crate::service::AppState;
use crate::service::import::{self as importing, ImportOptions};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// Report what would happen; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Write the valid rows even if others have errors.
    #[serde(default)]
    pub partial: bool,
    /// Issue tickets for new participants (default true).
    #[serde(default)]
    pub issue_tickets: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportRowError {
    pub line: u64,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub errors: Vec<ImportRowError>,
    pub dry_run: bool,
    /// Tickets issued for new participants.
    pub tickets_issued: u64,
    /// Rows the ticket shop marks void (cancelled, refunded, not attending): their tickets are
    /// revoked.
    pub cancelled: u64,
    /// The shop's barcodes stored (or moved to another ticket); a scan of one is looked up like
    /// a short code.
    pub barcodes: u64,
}

/// Imports participants from CSV (staff). See the module documentation for matching rules.
#[utoipa::path(post, path = "/api/v1/events/{event}/participants/import", tag = "participants", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ImportParams),
    request_body(content = String, content_type = "text/csv", description = "CSV with a header line"),
    responses((status = 200, description = "OK", body = ImportResult),
              (status = 415, description = "Unsupported media type", body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, description = "Row errors (nothing written unless ?partial=true)", content_type = "application/problem+json")))]
pub async fn import(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportResult>, Error> {
    auth.require_on(event_id, Role::Staff)?;
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(
        mime.as_str(),
        "text/csv" | "application/csv" | "text/plain" | "application/vnd.ms-excel"
    ) {
        return Err(Error::UnsupportedMediaType("text/csv"));
    }
    let options = ImportOptions {
        dry_run: params.dry_run,
        partial: params.partial,
        issue_tickets: params.issue_tickets.unwrap_or(true),
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader =
        SyncIoBridge::new_with_handle(StreamReader::new(stream), tokio::runtime::Handle::current());
    let outcome = importing::import_csv(&state, &auth.actor(), event_id, options, reader).await?;
    Ok(Json(ImportResult {
        created: outcome.created,
        updated: outcome.updated,
        unchanged: outcome.unchanged,
        errors: outcome
            .errors
            .into_iter()
            .map(|e| ImportRowError {
                line: e.line,
                field: e.field,
                message: e.message,
            })
            .collect(),
        dry_run: outcome.dry_run,
        tickets_issued: outcome.tickets_issued,
        cancelled: outcome.cancelled,
        barcodes: outcome.barcodes,
    }))
}
