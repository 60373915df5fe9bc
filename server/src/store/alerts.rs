//! Alert rules per event, the alerts the evaluator records, and what it reads to decide them.
//!
//! A firing alert is a row whose `cleared_at` is NULL; the partial unique index
//! `alerts_firing (event_id, kind, subject) WHERE cleared_at IS NULL` allows one per subject.
//! [`fire`] inserts with `ON CONFLICT … DO NOTHING` and [`clear`] updates only a row still
//! firing: when several server processes decide the same transition at once, exactly one
//! statement changes a row (PostgreSQL makes the others wait on the index entry or the row lock
//! and then find nothing to do), and only that process sends the messages.

use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

/// The stored rules of an event (JSON), if it has its own.
pub async fn rules(db: &Db, event_id: Uuid) -> sqlx::Result<Option<String>> {
    db_run!(db, p => {
        sqlx::query_scalar("SELECT rules FROM alert_rules WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(p)
            .await
    })
}

/// Stores an event's rules.
pub async fn put_rules(tx: &mut Tx, event_id: Uuid, rules: &str, now: i64) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO alert_rules (event_id, rules, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (event_id) DO UPDATE SET rules = excluded.rules,
                 updated_at = excluded.updated_at",
        )
        .bind(event_id)
        .bind(rules)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// An event the evaluator looks at.
#[derive(Debug, Clone, FromRow)]
pub struct Watched {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub rules: Option<String>,
}

/// The events being prepared or running, and every other event with a firing alert (so that
/// closing an event clears what fired for it).
pub async fn watched(db: &Db) -> sqlx::Result<Vec<Watched>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT e.id, e.name, e.status, r.rules
             FROM events e LEFT JOIN alert_rules r ON r.event_id = e.id
             WHERE e.status IN ('draft', 'live')
                OR EXISTS (SELECT 1 FROM alerts a WHERE a.event_id = e.id AND a.cleared_at IS NULL)
             ORDER BY e.id",
        )
        .fetch_all(p)
        .await
    })
}

/// A gate as the evaluator sees it.
#[derive(Debug, Clone, FromRow)]
pub struct GateSeenRow {
    pub id: Uuid,
    pub name: String,
    pub is_active: bool,
    pub last_seen_at: Option<i64>,
    pub outbox_depth: Option<i64>,
}

pub async fn gates(db: &Db, event_id: Uuid) -> sqlx::Result<Vec<GateSeenRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, name, is_active, last_seen_at, outbox_depth FROM gates
             WHERE event_id = $1 ORDER BY id",
        )
        .bind(event_id)
        .fetch_all(p)
        .await
    })
}

/// Scans (not undos) received since `since` (Unix ms), and how many of them were rejected.
pub async fn scans_since(db: &Db, event_id: Uuid, since: i64) -> sqlx::Result<(i64, i64)> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT CAST(count(*) AS BIGINT),
                    CAST(COALESCE(sum(CASE WHEN decision = 'reject' THEN 1 ELSE 0 END), 0) AS BIGINT)
             FROM checkins
             WHERE event_id = $1 AND received_at >= $2 AND undoes IS NULL",
        )
        .bind(event_id)
        .bind(since)
        .fetch_one(p)
        .await
    })
}

/// A recorded alert.
#[derive(Debug, Clone, FromRow)]
pub struct AlertRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub kind: String,
    pub subject: String,
    pub fired_at: i64,
    pub cleared_at: Option<i64>,
    pub detail: String,
    pub cleared_detail: Option<String>,
}

const SELECT: &str = "SELECT id, event_id, kind, subject, fired_at, cleared_at, detail,
        cleared_detail FROM alerts ";

/// The alerts of an event firing now.
pub async fn firing(db: &Db, event_id: Uuid) -> sqlx::Result<Vec<AlertRow>> {
    let sql = format!("{SELECT} WHERE event_id = $1 AND cleared_at IS NULL ORDER BY id");
    db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(event_id)
            .fetch_all(p)
            .await
    })
}

/// Records that `kind` started firing for `subject`; false when it already fires (another
/// process decided it first).
pub async fn fire(tx: &mut Tx, row: &AlertRow) -> sqlx::Result<bool> {
    let done = tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO alerts (id, event_id, kind, subject, fired_at, detail)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (event_id, kind, subject) WHERE cleared_at IS NULL DO NOTHING",
        )
        .bind(row.id)
        .bind(row.event_id)
        .bind(row.kind.as_str())
        .bind(row.subject.as_str())
        .bind(row.fired_at)
        .bind(row.detail.as_str())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

/// Records that a firing alert stopped; false when it was already cleared.
pub async fn clear(tx: &mut Tx, id: Uuid, now: i64, detail: &str) -> sqlx::Result<bool> {
    let done = tx_run!(tx, c => {
        sqlx::query(
            "UPDATE alerts SET cleared_at = $2, cleared_detail = $3
             WHERE id = $1 AND cleared_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(detail)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

/// A page of an event's alerts, newest first, below `before`; `firing` keeps only the firing
/// ones (`Some(true)`) or the cleared ones (`Some(false)`).
pub async fn list(
    db: &Db,
    event_id: Uuid,
    firing: Option<bool>,
    before: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<AlertRow>> {
    let filter = match firing {
        None => "",
        Some(true) => " AND cleared_at IS NULL",
        Some(false) => " AND cleared_at IS NOT NULL",
    };
    let sql = format!("{SELECT} WHERE event_id = $1 AND id < $2{filter} ORDER BY id DESC LIMIT $3");
    db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(event_id)
            .bind(before)
            .bind(limit + 1)
            .fetch_all(p)
            .await
    })
}

/// The event's staff: active users who can act on events (admins and staff), id and address.
pub async fn staff(tx: &mut Tx) -> sqlx::Result<Vec<(Uuid, String)>> {
    tx_run!(tx, c => {
        sqlx::query_as(
            "SELECT id, email FROM users
             WHERE role IN ('admin', 'staff') AND NOT disabled ORDER BY email",
        )
        .fetch_all(&mut *c)
        .await
    })
}
