//! `GET /sync/v1/changes`: the replica delta, with long polling.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sqlx::FromRow;
use uuid::Uuid;

use super::gate_auth::GateAuth;
use super::notify::Live;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::AppState;
use crate::store::db_run;

/// Largest page.
pub const MAX_LIMIT: u32 = 10_000;
/// Longest long-poll wait, seconds.
pub const MAX_WAIT: u32 = 30;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PullParams {
    /// Cursor: the `next` of the previous page (0 to bootstrap).
    #[serde(default)]
    pub after: u64,
    /// Page size (default 1000, at most 10000).
    pub limit: Option<u32>,
    /// Seconds to hold the request when nothing is new (at most 30).
    pub wait: Option<u32>,
    /// Optional: the event the gate believes it belongs to (403 if it is another).
    pub event: Option<Uuid>,
}

#[derive(FromRow)]
struct RawChange {
    change_seq: i64,
    kind: String,
    deleted: bool,
    data: String,
}

async fn page(
    state: &AppState,
    event_id: Uuid,
    after: u64,
    limit: u32,
) -> anyhow::Result<Vec<RawChange>> {
    let after = i64::try_from(after)?;
    Ok(db_run!(&state.db, p => {
        sqlx::query_as(
            "SELECT change_seq, kind, deleted, data FROM changes
             WHERE event_id = $1 AND change_seq > $2 ORDER BY change_seq LIMIT $3",
        )
        .bind(event_id)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(p)
        .await?
    }))
}

/// Changes of the gate's event after `after`, oldest first: `{changes, next, more,
/// server_time}`. The payloads are stored as JSON text and spliced into the response as they
/// are, so a 100,000-ticket bootstrap costs no per-row re-encoding.
#[utoipa::path(get, path = "/sync/v1/changes", tag = "sync", params(PullParams), security(("gate" = [])),
    responses((status = 200, description = "{changes: [Change], next, more, server_time}"),
              (status = 401, description = "Unknown or revoked gate credential"),
              (status = 403, description = "`event` is not the gate's event")))]
pub async fn changes(
    State(state): State<AppState>,
    gate: GateAuth,
    Query(p): Query<PullParams>,
) -> Result<Response, ApiError> {
    if let Some(event) = p.event {
        gate.require_event(event)?;
    }
    let limit = p.limit.unwrap_or(1_000).clamp(1, MAX_LIMIT);
    let wait = Duration::from_secs(u64::from(p.wait.unwrap_or(0).min(MAX_WAIT)));
    // Subscribe before the first query, so a change committed in between still wakes us.
    let mut live = state.notifier.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    let mut rows = page(&state, gate.event_id, p.after, limit).await?;
    while rows.is_empty() && tokio::time::Instant::now() < deadline {
        let stopping = state.stopping.clone();
        let woke = tokio::time::timeout_at(deadline, async {
            loop {
                let item = tokio::select! {
                    () = stopping.cancelled() => return false,
                    item = live.recv() => item,
                };
                match item {
                    Ok(Live::Changes { event_id, head })
                        if event_id == gate.event_id && head > p.after =>
                    {
                        return true;
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(_) => return false,
                }
            }
        })
        .await;
        match woke {
            Ok(true) => rows = page(&state, gate.event_id, p.after, limit).await?,
            _ => break,
        }
    }
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = rows
        .last()
        .map_or(Ok(p.after), |r| u64::try_from(r.change_seq))
        .map_err(anyhow::Error::from)?;

    let mut body =
        String::with_capacity(64 + rows.iter().map(|r| r.data.len() + 64).sum::<usize>());
    body.push_str("{\"changes\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        // kind is one of our fixed names; data is JSON we wrote ourselves.
        body.push_str("{\"change_seq\":");
        body.push_str(&r.change_seq.to_string());
        body.push_str(",\"kind\":\"");
        body.push_str(&r.kind);
        body.push_str("\",\"deleted\":");
        body.push_str(if r.deleted { "true" } else { "false" });
        body.push_str(",\"data\":");
        body.push_str(&r.data);
        body.push('}');
    }
    body.push_str("],\"next\":");
    body.push_str(&next.to_string());
    body.push_str(",\"more\":");
    body.push_str(if more { "true" } else { "false" });
    body.push_str(",\"server_time\":\"");
    body.push_str(&state.hlc_now().to_string());
    body.push_str("\"}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
