//! `GET /api/v1/events/{event}/arrivals`: admitted entries per minute, for the live chart.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Auth, Role};
use crate::http::api::load_event;
use crate::http::extract::{Json, Path, Query};
use crate::service::AppState;
use crate::store::{self, ms_to_time, now_ms};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArrivalsQuery {
    /// How many minutes back from now, 1..=1440 (default 60).
    pub minutes: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArrivalMinute {
    /// The minute's start.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub minute: OffsetDateTime,
    /// Admitted entries scanned in that minute.
    pub entries: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Arrivals {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub since: OffsetDateTime,
    /// Minutes with at least one entry, oldest first.
    pub minutes: Vec<ArrivalMinute>,
}

/// Admitted entries per minute over the last `minutes` minutes (viewer).
#[utoipa::path(get, path = "/api/v1/events/{event}/arrivals", tag = "live", security(("bearer" = [])),
    params(("event" = Uuid, Path, description = "Event id"), ArrivalsQuery),
    responses((status = 200, description = "OK", body = Arrivals)))]
pub async fn arrivals(
    State(state): State<AppState>,
    auth: Auth,
    Path(event_id): Path<Uuid>,
    Query(q): Query<ArrivalsQuery>,
) -> Result<Json<Arrivals>, Error> {
    auth.require_on(event_id, Role::Viewer)?;
    let minutes = q.minutes.unwrap_or(60);
    if !(1..=1440).contains(&minutes) {
        return Err(Error::validation("minutes", "minutes must be 1..=1440"));
    }
    load_event(&state, event_id).await?;
    let now = now_ms();
    let since = (now / 60_000 - i64::from(minutes) + 1) * 60_000;
    let rows = store::reports::arrivals_per_minute(&state.db, event_id, since).await?;
    Ok(Json(Arrivals {
        since: ms_to_time(since),
        minutes: rows
            .into_iter()
            .map(|(m, n)| ArrivalMinute {
                minute: ms_to_time(m),
                entries: u64::try_from(n).unwrap_or(0),
            })
            .collect(),
    }))
}
