//! Webhook endpoints and the delivery outbox.
//!
//! Deliveries are written in the unit of work of the fact they announce ([`insert_deliveries`],
//! one set-based statement per few thousand rows) and taken by the delivery workers of every
//! server process with [`claim`]: on PostgreSQL `FOR UPDATE SKIP LOCKED` hands each due row to
//! one worker, and the lease it sets (`locked_until`) keeps the others off it while the attempt
//! runs. Finishing an attempt names the lease it was claimed with, so an attempt whose lease ran
//! out (and whose row another worker took) cannot overwrite that worker's result.

use std::collections::HashMap;

use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

/// One endpoint row (secrets sealed).
#[derive(Debug, Clone, FromRow)]
pub struct EndpointRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// JSON array of event type names.
    pub event_types: String,
    pub enabled: bool,
    pub secret: Vec<u8>,
    pub previous_secret: Option<Vec<u8>>,
    pub previous_until: Option<i64>,
    pub failing_since: Option<i64>,
    pub consecutive_failures: i64,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl EndpointRow {
    /// The subscribed event types (an unreadable column subscribes to nothing).
    pub fn types(&self) -> Vec<String> {
        serde_json::from_str(&self.event_types).unwrap_or_default()
    }
}

const ENDPOINT_COLUMNS: &str = "id, event_id, url, description, event_types, enabled, secret, \
     previous_secret, previous_until, failing_since, consecutive_failures, disabled_reason, \
     created_at, updated_at";

pub async fn insert_endpoint(tx: &mut Tx, e: &EndpointRow) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, event_id, url, description, event_types, enabled,
                    secret, previous_secret, previous_until, failing_since, consecutive_failures,
                    disabled_reason, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(e.id)
        .bind(e.event_id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(&e.event_types)
        .bind(e.enabled)
        .bind(&e.secret)
        .bind(&e.previous_secret)
        .bind(e.previous_until)
        .bind(e.failing_since)
        .bind(e.consecutive_failures)
        .bind(&e.disabled_reason)
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Writes every mutable column of an endpoint.
pub async fn update_endpoint(tx: &mut Tx, e: &EndpointRow) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $2, description = $3, event_types = $4,
                    enabled = $5, secret = $6, previous_secret = $7, previous_until = $8,
                    failing_since = $9, consecutive_failures = $10, disabled_reason = $11,
                    updated_at = $12
             WHERE id = $1",
        )
        .bind(e.id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(&e.event_types)
        .bind(e.enabled)
        .bind(&e.secret)
        .bind(&e.previous_secret)
        .bind(e.previous_until)
        .bind(e.failing_since)
        .bind(e.consecutive_failures)
        .bind(&e.disabled_reason)
        .bind(e.updated_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

pub async fn get_endpoint(db: &Db, event_id: Uuid, id: Uuid) -> sqlx::Result<Option<EndpointRow>> {
    let sql =
        format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE event_id = $1 AND id = $2");
    db_run!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(event_id).bind(id).fetch_optional(p).await)
}

/// The endpoint, locked for an update (PostgreSQL; SQLite's writer lock does the same).
pub async fn get_endpoint_tx(
    tx: &mut Tx,
    event_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<EndpointRow>> {
    let lock = if matches!(tx, Tx::Postgres(_)) {
        " FOR UPDATE"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE event_id = $1 AND id = $2{lock}"
    );
    tx_run!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(event_id).bind(id).fetch_optional(&mut *c).await)
}

pub async fn list_endpoints(db: &Db, event_id: Uuid) -> sqlx::Result<Vec<EndpointRow>> {
    let sql =
        format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE event_id = $1 ORDER BY id");
    db_run!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(event_id).fetch_all(p).await)
}

/// Endpoints by id (the delivery worker's view of what it claimed).
pub async fn endpoints_by_id(db: &Db, ids: &[Uuid]) -> sqlx::Result<Vec<EndpointRow>> {
    match db {
        Db::Postgres(p) => {
            let sql =
                format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ANY($1)");
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(ids.to_vec())
                .fetch_all(p)
                .await
        }
        Db::Sqlite(p) => {
            let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1");
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(row) = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(id)
                    .fetch_optional(p)
                    .await?
                {
                    out.push(row);
                }
            }
            Ok(out)
        }
    }
}

/// Deletes an endpoint and its deliveries; false when there was none.
pub async fn delete_endpoint(tx: &mut Tx, event_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    tx_run!(tx, c => {
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *c)
            .await?;
        let n = sqlx::query("DELETE FROM webhook_endpoints WHERE event_id = $1 AND id = $2")
            .bind(event_id)
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected();
        Ok(n > 0)
    })
}

/// The enabled endpoints of an event and what each subscribes to: the one (indexed) query a
/// fact's unit of work pays when nobody listens.
pub async fn subscribers(tx: &mut Tx, event_id: Uuid) -> sqlx::Result<Vec<(Uuid, String)>> {
    tx_run!(tx, c => {
        sqlx::query_as(
            "SELECT id, event_types FROM webhook_endpoints WHERE event_id = $1 AND enabled",
        )
        .bind(event_id)
        .fetch_all(&mut *c)
        .await
    })
}

/// A delivery to insert.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
    pub message_id: Uuid,
    pub event_type: &'static str,
    pub payload: String,
}

/// Rows per insert statement.
const INSERT_CHUNK: usize = 2_000;
/// SQLite binds 8 values per row; stay well below its 32,766 variables.
const SQLITE_INSERT_CHUNK: usize = 500;

/// Inserts pending deliveries, due now: one statement per [`INSERT_CHUNK`] rows.
pub async fn insert_deliveries(tx: &mut Tx, rows: &[NewDelivery], now: i64) -> sqlx::Result<()> {
    match tx {
        Tx::Postgres(t) => {
            for chunk in rows.chunks(INSERT_CHUNK) {
                let ids: Vec<Uuid> = chunk.iter().map(|r| r.id).collect();
                let events: Vec<Uuid> = chunk.iter().map(|r| r.event_id).collect();
                let endpoints: Vec<Uuid> = chunk.iter().map(|r| r.endpoint_id).collect();
                let messages: Vec<Uuid> = chunk.iter().map(|r| r.message_id).collect();
                let types: Vec<&str> = chunk.iter().map(|r| r.event_type).collect();
                let payloads: Vec<&str> = chunk.iter().map(|r| r.payload.as_str()).collect();
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, message_id,
                            event_type, payload, status, attempts, next_attempt_at, created_at)
                     SELECT u.id, u.event_id, u.endpoint_id, u.message_id, u.event_type,
                            u.payload, 'pending', 0, $7, $7
                     FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                                 $6::text[])
                       AS u(id, event_id, endpoint_id, message_id, event_type, payload)",
                )
                .bind(ids)
                .bind(events)
                .bind(endpoints)
                .bind(messages)
                .bind(types)
                .bind(payloads)
                .bind(now)
                .execute(&mut **t)
                .await?;
            }
        }
        Tx::Sqlite(t) => {
            for chunk in rows.chunks(SQLITE_INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, message_id,
                            event_type, payload, next_attempt_at, created_at, status) ",
                );
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(r.id)
                        .push_bind(r.event_id)
                        .push_bind(r.endpoint_id)
                        .push_bind(r.message_id)
                        .push_bind(r.event_type)
                        .push_bind(r.payload.as_str())
                        .push_bind(now)
                        .push_bind(now)
                        .push("'pending'");
                });
                q.build().execute(&mut **t).await?;
            }
        }
    }
    Ok(())
}

/// A delivery a worker claimed.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub message_id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub attempts: i64,
    pub created_at: i64,
}

/// Takes up to `limit` due deliveries and leases them until `lease_until`.
pub async fn claim(db: &Db, now: i64, lease_until: i64, limit: i64) -> sqlx::Result<Vec<Claimed>> {
    const PICK: &str = "SELECT id FROM webhook_deliveries
         WHERE status = 'pending' AND next_attempt_at <= $1
           AND (locked_until IS NULL OR locked_until <= $1)
         ORDER BY next_attempt_at LIMIT $3";
    const RETURNING: &str =
        "RETURNING id, endpoint_id, message_id, event_type, payload, attempts, created_at";
    match db {
        Db::Postgres(p) => {
            let sql = format!(
                "UPDATE webhook_deliveries SET locked_until = $2
                 WHERE id IN ({PICK} FOR UPDATE SKIP LOCKED) {RETURNING}"
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(now)
                .bind(lease_until)
                .bind(limit)
                .fetch_all(p)
                .await
        }
        Db::Sqlite(p) => {
            let sql = format!(
                "UPDATE webhook_deliveries SET locked_until = $2 WHERE id IN ({PICK}) {RETURNING}"
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(now)
                .bind(lease_until)
                .bind(limit)
                .fetch_all(p)
                .await
        }
    }
}

/// Records a successful attempt; false when the lease was lost meanwhile.
pub async fn delivered(
    db: &Db,
    id: Uuid,
    lease: i64,
    status_code: i64,
    now: i64,
) -> sqlx::Result<bool> {
    let n = db_run!(db, p => {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
                    last_status = $3, last_error = NULL, delivered_at = $4, locked_until = NULL
             WHERE id = $1 AND locked_until = $2",
        )
        .bind(id)
        .bind(lease)
        .bind(status_code)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// Clears an endpoint's failure streak (a no-op write-free when there is none).
pub async fn endpoint_succeeded(db: &Db, endpoint_id: Uuid) -> sqlx::Result<()> {
    db_run!(db, p => {
        sqlx::query(
            "UPDATE webhook_endpoints SET failing_since = NULL, consecutive_failures = 0
             WHERE id = $1 AND (failing_since IS NOT NULL OR consecutive_failures <> 0)",
        )
        .bind(endpoint_id)
        .execute(p)
        .await?;
    });
    Ok(())
}

/// Records a failed attempt: retried at `next_attempt_at`, or `failed` when that is `None`.
/// False when the lease was lost meanwhile, or the delivery failed with its endpoint's disabling.
#[allow(clippy::too_many_arguments)]
pub async fn attempt_failed(
    tx: &mut Tx,
    id: Uuid,
    lease: i64,
    status_code: Option<i64>,
    error: &str,
    next_attempt_at: Option<i64>,
) -> sqlx::Result<bool> {
    let status = if next_attempt_at.is_some() {
        "pending"
    } else {
        "failed"
    };
    let n = tx_run!(tx, c => {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1,
                    last_status = $4, last_error = $5,
                    next_attempt_at = COALESCE($6, next_attempt_at), locked_until = NULL
             WHERE id = $1 AND locked_until = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(lease)
        .bind(status)
        .bind(status_code)
        .bind(error)
        .bind(next_attempt_at)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// Extends an endpoint's failure streak; returns `(failing_since, enabled)`.
pub async fn endpoint_failed(
    tx: &mut Tx,
    endpoint_id: Uuid,
    now: i64,
) -> sqlx::Result<Option<(i64, bool)>> {
    tx_run!(tx, c => {
        sqlx::query_as(
            "UPDATE webhook_endpoints
             SET failing_since = COALESCE(failing_since, $2),
                 consecutive_failures = consecutive_failures + 1
             WHERE id = $1
             RETURNING failing_since, enabled",
        )
        .bind(endpoint_id)
        .bind(now)
        .fetch_optional(&mut *c)
        .await
    })
}

/// Disables an endpoint and fails its pending deliveries; false when it was already disabled.
pub async fn disable(tx: &mut Tx, endpoint_id: Uuid, reason: &str, now: i64) -> sqlx::Result<bool> {
    let n = tx_run!(tx, c => {
        sqlx::query(
            "UPDATE webhook_endpoints SET enabled = $2, disabled_reason = $3, updated_at = $4
             WHERE id = $1 AND enabled",
        )
        .bind(endpoint_id)
        .bind(false)
        .bind(reason)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if n > 0 {
        fail_pending(tx, endpoint_id, reason).await?;
    }
    Ok(n > 0)
}

/// Fails the pending deliveries of an endpoint (it was disabled).
pub async fn fail_pending(tx: &mut Tx, endpoint_id: Uuid, reason: &str) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'failed', last_error = $2
             WHERE endpoint_id = $1 AND status = 'pending'",
        )
        .bind(endpoint_id)
        .bind(format!("endpoint disabled: {reason}"))
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// When the next pending delivery not leased by a worker comes due (a leased one: when its lease
/// ends), if there is one.
pub async fn next_due(db: &Db) -> sqlx::Result<Option<i64>> {
    db_run!(db, p => {
        sqlx::query_scalar(
            "SELECT MIN(CASE WHEN locked_until > next_attempt_at THEN locked_until
                             ELSE next_attempt_at END)
             FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(p)
        .await
    })
}

/// A delivery as the organizer sees it.
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub message_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// An endpoint's deliveries, newest first, before `before` (`limit + 1` rows for paging).
pub async fn list_deliveries(
    db: &Db,
    endpoint_id: Uuid,
    before: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, message_id, event_type, status, attempts, next_attempt_at, last_status,
                    last_error, created_at, delivered_at
             FROM webhook_deliveries WHERE endpoint_id = $1 AND id < $2
             ORDER BY id DESC LIMIT $3",
        )
        .bind(endpoint_id)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(p)
        .await
    })
}

/// Pending deliveries of all events (the queue depth gauge).
pub async fn queue_depth(db: &Db) -> sqlx::Result<i64> {
    db_run!(db, p => {
        sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(p)
        .await
    })
}

/// The participant holding each ticket serial (for message payloads).
pub async fn holders(
    tx: &mut Tx,
    event_id: Uuid,
    serials: &[i64],
) -> sqlx::Result<HashMap<i64, Uuid>> {
    if serials.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(i64, Uuid)> = match tx {
        Tx::Postgres(t) => {
            sqlx::query_as(
                "SELECT serial, participant_id FROM tickets
                 WHERE event_id = $1 AND serial = ANY($2)",
            )
            .bind(event_id)
            .bind(serials.to_vec())
            .fetch_all(&mut **t)
            .await?
        }
        Tx::Sqlite(t) => {
            let list = serde_json::to_string(serials).unwrap_or_else(|_| "[]".into());
            sqlx::query_as(
                "SELECT serial, participant_id FROM tickets
                 WHERE event_id = $1 AND serial IN (SELECT value FROM json_each($2))",
            )
            .bind(event_id)
            .bind(list)
            .fetch_all(&mut **t)
            .await?
        }
    };
    Ok(rows.into_iter().collect())
}
