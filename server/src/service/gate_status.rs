//! What gates report about themselves on every pull and push (agent version, outbox depth, last
//! sync), recorded cheaply, and whether a gate counts as online.

use uuid::Uuid;

use crate::domain::Error;
use crate::domain::gate::{GateReport, ONLINE_WINDOW_MS, REPORT_INTERVAL_MS};
use crate::store::{self, Db};

/// Records that the gate was heard from now, with its report (at most every
/// [`REPORT_INTERVAL_MS`] unless the version or the outbox depth changed).
pub async fn heard_from(db: &Db, gate_id: Uuid, report: &GateReport) -> Result<(), Error> {
    store::gates::record_report(db, gate_id, store::now_ms(), REPORT_INTERVAL_MS, report).await?;
    Ok(())
}

/// Whether a gate last heard from at `last_seen_at` (Unix ms) counts as online at `now`.
pub fn online(last_seen_at: Option<i64>, now: i64) -> bool {
    last_seen_at.is_some_and(|at| now - at <= ONLINE_WINDOW_MS)
}
