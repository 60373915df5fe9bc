//! Server-sent event streams: `GET /sync/v1/stream` for gates (new changes exist: pull now) and
//! `GET /api/v1/events/{event}/stream` for organizer dashboards (admissions, conflicts, changes).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::domain::gate::GateAuth;
use crate::domain::live::Live;
use crate::http::extract::Path;
use crate::service::AppState;

fn events_for(
    state: &AppState,
    event_id: Uuid,
    filter: fn(&Live) -> bool,
) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let rx = state.notifier.subscribe();
    let stopping = state.stopping.clone();
    futures_util::stream::unfold(rx, move |mut rx| {
        let stopping = stopping.clone();
        async move {
            loop {
                // The stream ends when the server shuts down (graceful drain does not wait for it).
                let item = tokio::select! {
                    () = stopping.cancelled() => return None,
                    item = rx.recv() => item,
                };
                match item {
                    Ok(item) if item.event_id() == event_id && filter(&item) => {
                        let name = match &item {
                            Live::Changes { .. } => "changes",
                            Live::Admission { .. } => "admission",
                            Live::Conflict { .. } => "conflict",
                            Live::Alert { .. } => "alert",
                            // Internal to the server processes.
                            Live::WebhooksChanged { .. } => continue,
                        };
                        let ev = Event::default()
                            .event(name)
                            .json_data(&item)
                            .unwrap_or_else(|_| Event::default().comment("unencodable"));
                        return Some((Ok(ev), rx));
                    }
                    Ok(_) => {}
                    // A slow client missed items: tell it to resynchronise (pull / refresh).
                    Err(RecvError::Lagged(n)) => {
                        let ev = Event::default().event("lagged").data(n.to_string());
                        return Some((Ok(ev), rx));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    })
}

/// Gate stream: one `changes` event per commit that grew the gate's event change log.
#[utoipa::path(get, path = "/sync/v1/stream", tag = "sync", security(("gate" = [])),
    responses((status = 200, description = "text/event-stream of `changes` events")))]
pub async fn gate_stream(
    State(state): State<AppState>,
    gate: GateAuth,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(events_for(&state, gate.event_id, |l| {
        matches!(l, Live::Changes { .. })
    }))
    .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Dashboard stream: admissions, conflicts, alerts and change-log growth of one event (viewer role).
#[utoipa::path(get, path = "/api/v1/events/{event}/stream", tag = "live", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "text/event-stream of `admission`, `conflict`, `alert`, `changes` events")))]
pub async fn event_stream(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    crate::http::api::load_event(&state, event_id).await?;
    Ok(Sse::new(events_for(&state, event_id, |_| true))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
