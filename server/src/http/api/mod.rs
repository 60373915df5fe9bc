//! The organizer API (`/api/v1`, DESIGN §6): one module per resource, plus the paging helpers
//! every list shares.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::error::Error;
use crate::service::AppState;
use crate::store;
use crate::store::events::EventRow;

pub mod alerts;
pub mod api_keys;
pub mod arrivals;
pub mod auth;
pub mod checkins;
pub mod door;
pub mod events;
pub mod exports;
pub mod gates;
pub mod import;
pub mod mail;
pub mod participants;
pub mod redeem;
pub mod report;
pub mod ticket_docs;
pub mod users;
pub mod webhooks;
pub mod zones;

/// A page of a list: `{"items": [...], "next_cursor": null | "..."}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `?cursor=&limit=` of list endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<u32>,
}

impl PageParams {
    pub fn after(&self) -> Result<Option<Uuid>, Error> {
        self.cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| {
                Uuid::parse_str(c).map_err(|_| {
                    Error::bad_request(Some("cursor"), "cursor is not one this server issued")
                })
            })
            .transpose()
    }

    pub fn limit(&self) -> Result<i64, Error> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=1000) => Ok(i64::from(n)),
            Some(_) => Err(Error::bad_request(
                Some("limit"),
                "limit must be between 1 and 1000",
            )),
        }
    }
}

/// Builds a page from `limit + 1` fetched rows.
pub fn page<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    id: impl Fn(&R) -> Uuid,
    map: impl Fn(R) -> Result<T, Error>,
) -> Result<Page<T>, Error> {
    let limit = usize::try_from(limit).unwrap_or(100);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| id(r).to_string())
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(map).collect::<Result<_, _>>()?,
        next_cursor,
    })
}

/// The event named in the path, or 404.
pub async fn load_event(state: &AppState, event_id: Uuid) -> Result<EventRow, Error> {
    store::events::require(&state.db, event_id).await
}
