//! The retention purge's SQL: which archived events are due, the claim that makes a purge run
//! once, and the erasure of their participants' personal data.

use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

const DAY_MS: i64 = 86_400_000;

/// Archived events whose retention ended by `now` (unix ms) and that are not purged yet.
pub async fn due(db: &Db, now: i64) -> sqlx::Result<Vec<(Uuid, i64)>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, retention_days FROM events
             WHERE status = 'archived' AND purged_at IS NULL AND retention_days IS NOT NULL
               AND archived_at IS NOT NULL AND archived_at + retention_days * $2 <= $1
             ORDER BY archived_at",
        )
        .bind(now)
        .bind(DAY_MS)
        .fetch_all(p)
        .await
    })
}

/// Marks the event purged, if it still is due; `false` when another pass (or process) got there
/// first or the event changed. The row stays locked to the commit, so two processes never erase
/// the same event at once.
pub async fn claim(tx: &mut Tx, event_id: Uuid, now: i64) -> sqlx::Result<bool> {
    let n = tx_run!(tx, c => {
        sqlx::query(
            "UPDATE events SET purged_at = $2
             WHERE id = $1 AND status = 'archived' AND purged_at IS NULL
               AND retention_days IS NOT NULL AND archived_at + retention_days * $3 <= $2",
        )
        .bind(event_id)
        .bind(now)
        .bind(DAY_MS)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// What a purge erased.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    /// Participants whose personal data was erased (the already erased are not counted).
    pub participants: u64,
    /// Ticket entries of the replication log whose holder's name was dropped.
    pub ticket_changes: u64,
}

/// Erases the personal data of every participant of the event: name, e-mail, phone,
/// organization, external id, the attention note and metadata. The rows stay (with their ticket
/// type, ticket and check-ins), so counts and the report do not change. The names replicated to
/// gates in the change log go too, and so do the mail server's answers and the webhook messages
/// already delivered, which may quote them.
pub async fn erase_event(tx: &mut Tx, event_id: Uuid, now: i64) -> sqlx::Result<Erased> {
    let participants = tx_run!(tx, c => {
        sqlx::query(
            "UPDATE participants SET external_id = NULL, name = NULL, email = NULL,
                 email_key = NULL, phone = NULL, phone_key = NULL, organization = NULL,
                 attention = NULL, metadata = '{}', updated_at = $2, erased_at = $2,
                 pd_version = NULL
             WHERE event_id = $1 AND erased_at IS NULL",
        )
        .bind(event_id)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    tx_run!(tx, c => {
        sqlx::query("DELETE FROM participant_terms WHERE event_id = $1")
            .bind(event_id)
            .execute(&mut *c)
            .await?;
    });
    let ticket_changes = match tx {
        Tx::Postgres(t) => sqlx::query(
            "UPDATE changes
                 SET data = (data::jsonb || '{\"display_name\": null, \"attention\": null}')::text
                 WHERE event_id = $1 AND kind = 'ticket'",
        )
        .bind(event_id)
        .execute(&mut **t)
        .await?
        .rows_affected(),
        Tx::Sqlite(t) => sqlx::query(
            "UPDATE changes
                 SET data = json_set(data, '$.display_name', NULL, '$.attention', NULL)
                 WHERE event_id = $1 AND kind = 'ticket'",
        )
        .bind(event_id)
        .execute(&mut **t)
        .await?
        .rows_affected(),
    };
    tx_run!(tx, c => {
        sqlx::query("UPDATE ticket_mails SET last_error = NULL WHERE event_id = $1")
            .bind(event_id)
            .execute(&mut *c)
            .await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE event_id = $1 AND status <> 'pending'")
            .bind(event_id)
            .execute(&mut *c)
            .await?;
    });
    Ok(Erased {
        participants,
        ticket_changes,
    })
}
