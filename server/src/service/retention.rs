//! The retention purge (docs/lifecycle.md): an archived event keeps its participants' personal
//! data for the organizer's `retention_days`, then a background pass erases it. Every server
//! process runs the pass; each event is claimed in the transaction that erases it, so two
//! processes (or two passes) never purge one event twice, and a pass that fails halfway rolls
//! back and is retried by the next one. Counts, tickets and check-ins stay: the report of a
//! purged event shows the same numbers, without names.

use std::time::Duration;

use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::Actor;
use crate::service::AppState;
use crate::store::{self, Db, now_ms};

/// How often a process looks for events whose retention has ended.
pub const PASS_EVERY: Duration = Duration::from_secs(600);

/// One event purged by a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub event_id: Uuid,
    pub participants: u64,
}

/// Purges every archived event whose retention ended by `now` (unix ms); returns what this
/// pass purged (nothing for events another process claimed first).
pub async fn purge_due(db: &Db, now: i64) -> Result<Vec<Purged>, Error> {
    let mut purged = Vec::new();
    for (event_id, days) in store::retention::due(db, now).await? {
        let mut tx = db.begin().await?;
        if !store::retention::claim(&mut tx, event_id, now).await? {
            tx.rollback().await?;
            continue;
        }
        let erased = store::retention::erase_event(&mut tx, event_id, now).await?;
        store::audit::record(
            &mut tx,
            &Actor::system(),
            "event.purge",
            Some(event_id),
            Some(format!("event:{event_id}")),
            serde_json::json!({
                "retention_days": days,
                "participants_erased": erased.participants,
                "ticket_changes_scrubbed": erased.ticket_changes,
            }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            event.id = %event_id,
            participants = erased.participants,
            "personal data erased: the event's retention period ended"
        );
        purged.push(Purged {
            event_id,
            participants: erased.participants,
        });
    }
    if !purged.is_empty() {
        db.scrub_erased().await;
    }
    Ok(purged)
}

/// The background pass, every [`PASS_EVERY`] until the process stops.
pub async fn run(state: AppState) {
    loop {
        if let Err(e) = purge_due(&state.db, now_ms()).await {
            tracing::warn!(error = ?e, "retention purge pass failed; retrying at the next pass");
        }
        tokio::select! {
            () = tokio::time::sleep(PASS_EVERY) => {}
            () = state.stopping.cancelled() => return,
        }
    }
}
