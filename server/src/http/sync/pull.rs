//! `GET /sync/v1/changes`: the replica delta, with long polling.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::gate::GateAuth;
use crate::domain::live::Live;
use crate::http::extract::Query;
use crate::service::AppState;
use crate::store;

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

/// One change as sent: its payload is the stored JSON text, spliced in as it is.
#[derive(Serialize)]
struct RawChangeOut<'a> {
    change_seq: i64,
    kind: &'a str,
    deleted: bool,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct PullOut<'a> {
    changes: Vec<RawChangeOut<'a>>,
    next: u64,
    more: bool,
    server_time: sync_protocol::Hlc,
}

/// Changes of the gate's event after `after`, oldest first: `{changes, next, more,
/// server_time}`. The payloads are stored as JSON text and go out as `RawValue`s, so a
/// 100,000-ticket bootstrap costs no per-row re-encoding.
#[utoipa::path(get, path = "/sync/v1/changes", tag = "sync", params(PullParams), security(("gate" = [])),
    responses((status = 200, description = "{changes: [Change], next, more, server_time}"),
              (status = 401, description = "Unknown or revoked gate credential"),
              (status = 403, description = "`event` is not the gate's event")))]
pub async fn changes(
    State(state): State<AppState>,
    gate: GateAuth,
    Query(p): Query<PullParams>,
) -> Result<Response, Error> {
    if let Some(event) = p.event {
        gate.require_event(event)?;
    }
    if i64::try_from(p.after).is_err() {
        return Err(Error::validation(
            "after",
            "after is beyond any change cursor (at most 2^63-1)",
        ));
    }
    let limit = p.limit.unwrap_or(1_000).clamp(1, MAX_LIMIT);
    let wait = Duration::from_secs(u64::from(p.wait.unwrap_or(0).min(MAX_WAIT)));
    // Subscribe before the first query, so a change committed in between still wakes us.
    let mut live = state.notifier.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    let mut rows = store::changes::page(
        &state.db,
        state.master.personal(),
        gate.event_id,
        p.after,
        limit,
    )
    .await?;
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
            Ok(true) => {
                rows = store::changes::page(
                    &state.db,
                    state.master.personal(),
                    gate.event_id,
                    p.after,
                    limit,
                )
                .await?
            }
            _ => break,
        }
    }
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = rows
        .last()
        .map_or(Ok(p.after), |r| u64::try_from(r.change_seq))
        .map_err(anyhow::Error::from)?;

    let changes = rows
        .iter()
        .map(|r| {
            Ok(RawChangeOut {
                change_seq: r.change_seq,
                kind: &r.kind,
                deleted: r.deleted,
                data: serde_json::from_str(&r.data).map_err(|e| {
                    anyhow::anyhow!("stored change {} is not JSON: {e}", r.change_seq)
                })?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let body = serde_json::to_string(&PullOut {
        changes,
        next,
        more,
        server_time: state.hlc_now(),
    })
    .map_err(anyhow::Error::from)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
