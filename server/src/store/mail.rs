//! The ticket e-mail outbox and the organizer's mail templates.
//!
//! Messages are queued in the unit of work that asks for them ([`insert`]) and taken by the mail
//! workers of every server process with [`claim`]: on PostgreSQL `FOR UPDATE SKIP LOCKED` hands
//! each due row to one worker and the lease it sets (`locked_until`) keeps the others off it
//! while the message is sent. Finishing an attempt names the lease it was claimed with, so an
//! attempt whose lease ran out (and whose row another worker took) cannot overwrite that
//! worker's result.

use std::collections::HashMap;

use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub id: Uuid,
    pub event_id: Uuid,
    /// The participant a ticket goes to; for an alert message, the user it goes to.
    pub participant_id: Uuid,
    /// The ticket carried; 0 for an alert message.
    pub ticket_serial: i64,
    /// Set for an alert message to the event's staff: the message as it is to be sent.
    pub alert: Option<AlertMail>,
}

/// An alert message, stored whole (it is built when the alert fires).
#[derive(Debug, Clone)]
pub struct AlertMail {
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

/// Queues messages, due now.
pub async fn insert(tx: &mut Tx, rows: &[NewMail], now: i64) -> sqlx::Result<()> {
    for chunk in rows.chunks(500) {
        match tx {
            Tx::Postgres(t) => {
                let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                    "INSERT INTO ticket_mails (id, event_id, participant_id, ticket_serial,
                            next_attempt_at, created_at, status, kind, recipient, subject,
                            body) ",
                );
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(r.id)
                        .push_bind(r.event_id)
                        .push_bind(r.participant_id)
                        .push_bind(r.ticket_serial)
                        .push_bind(now)
                        .push_bind(now)
                        .push("'queued'")
                        .push_bind(if r.alert.is_some() { "alert" } else { "ticket" })
                        .push_bind(r.alert.as_ref().map(|a| a.recipient.clone()))
                        .push_bind(r.alert.as_ref().map(|a| a.subject.clone()))
                        .push_bind(r.alert.as_ref().map(|a| a.body.clone()));
                });
                q.build().execute(&mut **t).await?;
            }
            Tx::Sqlite(t) => {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO ticket_mails (id, event_id, participant_id, ticket_serial,
                            next_attempt_at, created_at, status, kind, recipient, subject,
                            body) ",
                );
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(r.id)
                        .push_bind(r.event_id)
                        .push_bind(r.participant_id)
                        .push_bind(r.ticket_serial)
                        .push_bind(now)
                        .push_bind(now)
                        .push("'queued'")
                        .push_bind(if r.alert.is_some() { "alert" } else { "ticket" })
                        .push_bind(r.alert.as_ref().map(|a| a.recipient.clone()))
                        .push_bind(r.alert.as_ref().map(|a| a.subject.clone()))
                        .push_bind(r.alert.as_ref().map(|a| a.body.clone()));
                });
                q.build().execute(&mut **t).await?;
            }
        }
    }
    Ok(())
}

/// A participant who could be sent a ticket: their current ticket, whether they have an
/// address, and whether a message for that ticket is already queued or sent.
#[derive(Debug, Clone, FromRow)]
pub struct Candidate {
    pub participant_id: Uuid,
    pub ticket_serial: Option<i64>,
    pub ticket_status: Option<String>,
    pub has_email: bool,
    pub already: bool,
}

const CANDIDATE: &str = "SELECT p.id AS participant_id, t.serial AS ticket_serial,
            t.status AS ticket_status,
            (p.email IS NOT NULL AND p.email <> '') AS has_email,
            EXISTS (SELECT 1 FROM ticket_mails m
                    WHERE m.event_id = p.event_id AND m.participant_id = p.id
                      AND m.ticket_serial = t.serial AND m.status IN ('queued', 'sent')
                      AND m.kind = 'ticket') AS already
     FROM participants p
     LEFT JOIN tickets t ON t.event_id = p.event_id AND t.serial = p.ticket_serial
     WHERE p.event_id = $1 AND p.erased_at IS NULL";

/// Every participant of the event (in id order), or the ones named.
pub async fn candidates(
    tx: &mut Tx,
    event_id: Uuid,
    ids: Option<&[Uuid]>,
) -> sqlx::Result<Vec<Candidate>> {
    match ids {
        None => {
            let sql = format!("{CANDIDATE} ORDER BY p.id");
            tx_run!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(event_id).fetch_all(&mut *c).await)
        }
        Some(ids) => {
            let sql = format!("{CANDIDATE} AND p.id = $2");
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row: Option<Candidate> = tx_run!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(event_id).bind(id).fetch_optional(&mut *c).await)?;
                out.extend(row);
            }
            Ok(out)
        }
    }
}

/// A message a worker claimed.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub event_id: Uuid,
    pub participant_id: Uuid,
    pub ticket_serial: i64,
    pub attempts: i64,
    /// `ticket`, or `alert` (then the stored message is sent as it is).
    pub kind: String,
    pub recipient: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
}

/// Takes up to `limit` due messages and leases them until `lease_until`.
pub async fn claim(db: &Db, now: i64, lease_until: i64, limit: i64) -> sqlx::Result<Vec<Claimed>> {
    const PICK: &str = "SELECT id FROM ticket_mails
         WHERE status = 'queued' AND next_attempt_at <= $1
           AND (locked_until IS NULL OR locked_until <= $1)
         ORDER BY next_attempt_at, id LIMIT $3";
    const RETURNING: &str = "RETURNING id, event_id, participant_id, ticket_serial, attempts, \
         kind, recipient, subject, body";
    let lock = if matches!(db, Db::Postgres(_)) {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql =
        format!("UPDATE ticket_mails SET locked_until = $2 WHERE id IN ({PICK}{lock}) {RETURNING}");
    db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(p)
            .await
    })
}

/// Messages sent since `since` plus messages leased by a worker now: what counts against the
/// per-minute rate of all processes.
pub async fn recent_load(db: &Db, since: i64, now: i64) -> sqlx::Result<i64> {
    db_run!(db, p => {
        sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM ticket_mails
             WHERE (sent_at IS NOT NULL AND sent_at > $1)
                OR (status = 'queued' AND locked_until > $2)",
        )
        .bind(since)
        .bind(now)
        .fetch_one(p)
        .await
    })
}

/// Records a sent message; false when the lease was lost meanwhile.
pub async fn sent(db: &Db, id: Uuid, lease: i64, transport: &str, now: i64) -> sqlx::Result<bool> {
    let n = db_run!(db, p => {
        sqlx::query(
            "UPDATE ticket_mails SET status = 'sent', attempts = attempts + 1, last_error = NULL,
                    transport = $3, sent_at = $4, locked_until = NULL
             WHERE id = $1 AND locked_until = $2 AND status = 'queued'",
        )
        .bind(id)
        .bind(lease)
        .bind(transport)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// Records a failed attempt: retried at `next_attempt_at`, or `failed` when that is `None`.
/// False when the lease was lost meanwhile.
pub async fn attempt_failed(
    db: &Db,
    id: Uuid,
    lease: i64,
    error: &str,
    next_attempt_at: Option<i64>,
) -> sqlx::Result<bool> {
    let status = if next_attempt_at.is_some() {
        "queued"
    } else {
        "failed"
    };
    let n = db_run!(db, p => {
        sqlx::query(
            "UPDATE ticket_mails SET status = $3, attempts = attempts + 1, last_error = $4,
                    next_attempt_at = COALESCE($5, next_attempt_at), locked_until = NULL
             WHERE id = $1 AND locked_until = $2 AND status = 'queued'",
        )
        .bind(id)
        .bind(lease)
        .bind(status)
        .bind(error)
        .bind(next_attempt_at)
        .execute(p)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// When the next queued message comes due (a leased one: when its lease ends), if any.
pub async fn next_due(db: &Db) -> sqlx::Result<Option<i64>> {
    db_run!(db, p => {
        sqlx::query_scalar(
            "SELECT MIN(CASE WHEN locked_until > next_attempt_at THEN locked_until
                             ELSE next_attempt_at END)
             FROM ticket_mails WHERE status = 'queued'",
        )
        .fetch_one(p)
        .await
    })
}

/// A message as the organizer sees it.
#[derive(Debug, Clone, FromRow)]
pub struct MailRow {
    pub id: Uuid,
    pub participant_id: Uuid,
    pub ticket_serial: i64,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub transport: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

const MAIL_COLUMNS: &str = "id, participant_id, ticket_serial, status, attempts, \
     next_attempt_at, last_error, transport, created_at, sent_at";

/// An event's messages, newest first, before `before` (`limit + 1` rows for paging), of one
/// status if given.
pub async fn list(
    db: &Db,
    event_id: Uuid,
    status: Option<&str>,
    before: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<MailRow>> {
    let sql = format!(
        "SELECT {MAIL_COLUMNS} FROM ticket_mails
         WHERE event_id = $1 AND id < $2 AND ($3 IS NULL OR status = $3) AND kind = 'ticket'
         ORDER BY id DESC LIMIT $4"
    );
    db_run!(db, p => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(event_id)
            .bind(before)
            .bind(status)
            .bind(limit + 1)
            .fetch_all(p)
            .await
    })
}

/// The newest message of each of these participants.
pub async fn latest(
    db: &Db,
    event_id: Uuid,
    participants: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, MailRow>> {
    let mut out = HashMap::new();
    if participants.is_empty() {
        return Ok(out);
    }
    let rows: Vec<MailRow> = match db {
        Db::Postgres(p) => {
            let sql = format!(
                "SELECT DISTINCT ON (participant_id) {MAIL_COLUMNS} FROM ticket_mails
                 WHERE event_id = $1 AND participant_id = ANY($2) AND kind = 'ticket'
                 ORDER BY participant_id, id DESC"
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(event_id)
                .bind(participants.to_vec())
                .fetch_all(p)
                .await?
        }
        Db::Sqlite(p) => {
            let sql = format!(
                "SELECT {MAIL_COLUMNS} FROM ticket_mails
                 WHERE event_id = $1 AND participant_id = $2 AND kind = 'ticket'
                 ORDER BY id DESC LIMIT 1"
            );
            let mut rows = Vec::new();
            for id in participants {
                rows.extend(
                    sqlx::query_as::<_, MailRow>(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(event_id)
                        .bind(id)
                        .fetch_optional(p)
                        .await?,
                );
            }
            rows
        }
    };
    for r in rows {
        out.insert(r.participant_id, r);
    }
    Ok(out)
}

/// An event's own templates.
#[derive(Debug, Clone, FromRow)]
pub struct TemplateRow {
    pub subject: String,
    pub html: String,
    pub text: String,
    pub updated_at: i64,
}

pub async fn template(db: &Db, event_id: Uuid) -> sqlx::Result<Option<TemplateRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT subject, html, text, updated_at FROM mail_templates WHERE event_id = $1",
        )
        .bind(event_id)
        .fetch_optional(p)
        .await
    })
}

pub async fn put_template(tx: &mut Tx, event_id: Uuid, t: &TemplateRow) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO mail_templates (event_id, subject, html, text, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (event_id) DO UPDATE SET subject = excluded.subject,
                 html = excluded.html, text = excluded.text, updated_at = excluded.updated_at",
        )
        .bind(event_id)
        .bind(&t.subject)
        .bind(&t.html)
        .bind(&t.text)
        .bind(t.updated_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

pub async fn delete_template(tx: &mut Tx, event_id: Uuid) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("DELETE FROM mail_templates WHERE event_id = $1")
            .bind(event_id)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}
