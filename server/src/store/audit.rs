//! The audit trail: one row per write through the organizer API (who, what, which target).

use uuid::Uuid;

use super::{Tx, now_ms, tx_run};
use crate::domain::auth::Actor;

/// Records an action inside the writing transaction, so the trail and the change commit together.
pub async fn record(
    tx: &mut Tx,
    actor: &Actor,
    action: &str,
    event_id: Option<Uuid>,
    target: Option<String>,
    detail: serde_json::Value,
) -> sqlx::Result<()> {
    let detail = detail.to_string();
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor_id, actor, action, event_id, target, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Uuid::now_v7())
        .bind(now_ms())
        .bind(actor.id)
        .bind(actor.name.as_str())
        .bind(action)
        .bind(event_id)
        .bind(target)
        .bind(detail)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}
