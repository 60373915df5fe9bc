//! Tickets: one row per serial ever issued; a participant points at its current one.

use sqlx::FromRow;
use sync_protocol::wire::TicketStatus;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TicketRow {
    pub serial: i64,
    pub participant_id: Uuid,
    pub key_id: i64,
    pub short_code: i64,
    pub scopes: i64,
    pub valid_from: i64,
    pub valid_until: i64,
    pub status: String,
    pub issued_at: i64,
    pub revoked_at: Option<i64>,
}

impl TicketRow {
    /// The stored status, typed.
    pub fn status(&self) -> Result<TicketStatus, crate::domain::Error> {
        self.status
            .parse()
            .map_err(|e| crate::domain::Error::Internal(anyhow::Error::from(e)))
    }
}

const ALLOCATE_SQL: &str = "INSERT INTO serial_counters (event_id, last_serial) VALUES ($1, $2)
     ON CONFLICT (event_id) DO UPDATE SET last_serial = serial_counters.last_serial + $2
     RETURNING last_serial";

/// Reserves `n` consecutive serials for an event and returns the first, in its own autocommit
/// statement: the counter row is locked only for an instant instead of until a long transaction
/// ends, and serials of a rolled-back transaction are simply never used (gaps are harmless,
/// reuse would not be).
///
/// Call it **before** opening the writing transaction: a handler that holds a pooled
/// transaction and then waits for a second pooled connection deadlocks once every connection is
/// held that way (and on SQLite the second connection would wait for the write lock its own
/// transaction holds).
pub async fn allocate_serials(db: &Db, event_id: Uuid, n: i64) -> sqlx::Result<i64> {
    let last: i64 = db_run!(db, p => {
        sqlx::query_scalar(ALLOCATE_SQL).bind(event_id).bind(n).fetch_one(p).await?
    });
    Ok(last - n + 1)
}

/// Where a long-running writer (the CSV import) draws serials from while it holds its
/// transaction: on PostgreSQL a dedicated connection outside the pool (autocommit, see
/// [`allocate_serials`]); on SQLite the transaction itself, which already owns the only write
/// lock.
pub enum SerialSource {
    Postgres(sqlx::PgConnection),
    InTransaction,
}

impl SerialSource {
    pub async fn open(db: &Db) -> sqlx::Result<Self> {
        use sqlx::ConnectOptions;
        Ok(match db {
            Db::Postgres(p) => SerialSource::Postgres(p.connect_options().connect().await?),
            Db::Sqlite(_) => SerialSource::InTransaction,
        })
    }

    pub async fn allocate(&mut self, tx: &mut Tx, event_id: Uuid, n: i64) -> sqlx::Result<i64> {
        let last: i64 = match self {
            SerialSource::Postgres(c) => {
                sqlx::query_scalar(ALLOCATE_SQL)
                    .bind(event_id)
                    .bind(n)
                    .fetch_one(&mut *c)
                    .await?
            }
            SerialSource::InTransaction => tx_run!(tx, c => {
                sqlx::query_scalar(ALLOCATE_SQL).bind(event_id).bind(n).fetch_one(&mut *c).await?
            }),
        };
        Ok(last - n + 1)
    }

    pub async fn close(self) {
        if let SerialSource::Postgres(c) = self {
            use sqlx::Connection;
            let _ = c.close().await;
        }
    }
}

/// Tickets by serial.
pub async fn get_many(
    tx: &mut Tx,
    event_id: Uuid,
    serials: &[i64],
) -> anyhow::Result<Vec<TicketRow>> {
    if serials.is_empty() {
        return Ok(Vec::new());
    }
    Ok(match tx {
        Tx::Postgres(t) => {
            sqlx::query_as(
                "SELECT serial, participant_id, key_id, short_code, scopes, valid_from,
                        valid_until, status, issued_at, revoked_at
                 FROM tickets WHERE event_id = $1 AND serial = ANY($2)",
            )
            .bind(event_id)
            .bind(serials)
            .fetch_all(&mut **t)
            .await?
        }
        Tx::Sqlite(t) => {
            sqlx::query_as(
                "SELECT serial, participant_id, key_id, short_code, scopes, valid_from,
                        valid_until, status, issued_at, revoked_at
                 FROM tickets WHERE event_id = $1 AND serial IN (SELECT value FROM json_each($2))",
            )
            .bind(event_id)
            .bind(serde_json::to_string(serials)?)
            .fetch_all(&mut **t)
            .await?
        }
    })
}

/// Inserts tickets; returns the serials that were **not** inserted because their short code was
/// taken (the caller draws new codes and retries those).
pub async fn insert_many(
    tx: &mut Tx,
    event_id: Uuid,
    tickets: &[TicketRow],
) -> sqlx::Result<Vec<i64>> {
    let mut clashed = Vec::new();
    match tx {
        Tx::Postgres(t) => {
            for chunk in tickets.chunks(super::pgcopy::COPY_CHUNK_ROWS) {
                let serials: Vec<i64> = chunk.iter().map(|r| r.serial).collect();
                let participants: Vec<Uuid> = chunk.iter().map(|r| r.participant_id).collect();
                let key_ids: Vec<i64> = chunk.iter().map(|r| r.key_id).collect();
                let codes: Vec<i64> = chunk.iter().map(|r| r.short_code).collect();
                let scopes: Vec<i64> = chunk.iter().map(|r| r.scopes).collect();
                let froms: Vec<i64> = chunk.iter().map(|r| r.valid_from).collect();
                let untils: Vec<i64> = chunk.iter().map(|r| r.valid_until).collect();
                let issued: Vec<i64> = chunk.iter().map(|r| r.issued_at).collect();
                // COPY is far cheaper than `INSERT … ON CONFLICT DO NOTHING` (speculative
                // insertion), and a short-code clash is rare: try it first for bulk chunks, and
                // only on a unique violation redo the chunk the careful way.
                if chunk.len() >= super::pgcopy::COPY_MIN_ROWS
                    && copy_chunk(t, event_id, chunk).await?
                {
                    continue;
                }
                let inserted: Vec<i64> = sqlx::query_scalar(
                    "INSERT INTO tickets (event_id, serial, participant_id, key_id, short_code,
                         scopes, valid_from, valid_until, status, issued_at)
                     SELECT $1, u.serial, u.pid, u.key_id, u.code, u.scopes, u.vf, u.vu, 'valid',
                            u.issued
                     FROM UNNEST($2::int8[], $3::uuid[], $4::int8[], $5::int8[], $6::int8[],
                                 $7::int8[], $8::int8[], $9::int8[])
                          AS u(serial, pid, key_id, code, scopes, vf, vu, issued)
                     ON CONFLICT DO NOTHING
                     RETURNING serial",
                )
                .bind(event_id)
                .bind(&serials)
                .bind(&participants)
                .bind(&key_ids)
                .bind(&codes)
                .bind(&scopes)
                .bind(&froms)
                .bind(&untils)
                .bind(&issued)
                .fetch_all(&mut **t)
                .await?;
                let inserted: std::collections::HashSet<i64> = inserted.into_iter().collect();
                clashed.extend(serials.into_iter().filter(|s| !inserted.contains(s)));
            }
        }
        Tx::Sqlite(t) => {
            for r in tickets {
                let done = sqlx::query(
                    "INSERT INTO tickets (event_id, serial, participant_id, key_id, short_code,
                         scopes, valid_from, valid_until, status, issued_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'valid', $9)
                     ON CONFLICT DO NOTHING",
                )
                .bind(event_id)
                .bind(r.serial)
                .bind(r.participant_id)
                .bind(r.key_id)
                .bind(r.short_code)
                .bind(r.scopes)
                .bind(r.valid_from)
                .bind(r.valid_until)
                .bind(r.issued_at)
                .execute(&mut **t)
                .await?;
                if done.rows_affected() == 0 {
                    clashed.push(r.serial);
                }
            }
        }
    }
    Ok(clashed)
}

/// COPYs a chunk under a savepoint; `false` (rolled back) when a unique constraint clashed.
async fn copy_chunk(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    event_id: Uuid,
    chunk: &[TicketRow],
) -> sqlx::Result<bool> {
    sqlx::query("SAVEPOINT tickets_chunk")
        .execute(&mut **t)
        .await?;
    let mut copy = super::pgcopy::CopyRows::with_capacity(chunk.len() * 128);
    for r in chunk {
        copy.uuid(event_id)
            .int(Some(r.serial))
            .uuid(r.participant_id)
            .int(Some(r.key_id))
            .int(Some(r.short_code))
            .int(Some(r.scopes))
            .int(Some(r.valid_from))
            .int(Some(r.valid_until))
            .text(Some(TicketStatus::Valid.as_str()))
            .int(Some(r.issued_at));
        copy.end_row();
    }
    let result = super::pgcopy::copy_in(
        t,
        "COPY tickets (event_id, serial, participant_id, key_id, short_code, scopes,
             valid_from, valid_until, status, issued_at) FROM STDIN",
        &copy,
    )
    .await;
    match result {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT tickets_chunk")
                .execute(&mut **t)
                .await?;
            Ok(true)
        }
        Err(e) if super::is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT tickets_chunk")
                .execute(&mut **t)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Marks a ticket revoked (no-op if it already is). Returns whether it changed.
pub async fn revoke(
    tx: &mut Tx,
    event_id: Uuid,
    serial: i64,
    reason: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let n = tx_run!(tx, c => {
        sqlx::query(
            "UPDATE tickets SET status = 'revoked', revoked_at = $3, revoke_reason = $4
             WHERE event_id = $1 AND serial = $2 AND status = 'valid'",
        )
        .bind(event_id)
        .bind(serial)
        .bind(now)
        .bind(reason)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

pub async fn get_tx(tx: &mut Tx, event_id: Uuid, serial: i64) -> sqlx::Result<Option<TicketRow>> {
    tx_run!(tx, c => {
        sqlx::query_as(
            "SELECT serial, participant_id, key_id, short_code, scopes, valid_from, valid_until,
                    status, issued_at, revoked_at
             FROM tickets WHERE event_id = $1 AND serial = $2",
        )
        .bind(event_id)
        .bind(serial)
        .fetch_optional(&mut *c)
        .await
    })
}
