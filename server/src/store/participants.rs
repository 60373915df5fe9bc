//! Participants and the lookups the CSV import needs.

use sqlx::FromRow;
use uuid::Uuid;

use super::tickets::TicketRow;
use super::{Db, Tx, db_run, tx_run};

/// A participant with its current ticket (LEFT JOIN, so the `t_` columns may all be NULL).
#[derive(Debug, Clone, FromRow)]
pub struct ParticipantRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub organization: Option<String>,
    pub attention: Option<String>,
    pub ticket_type: Option<String>,
    pub metadata: String,
    pub ticket_serial: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub t_serial: Option<i64>,
    pub t_key_id: Option<i64>,
    pub t_short_code: Option<i64>,
    pub t_scopes: Option<i64>,
    pub t_valid_from: Option<i64>,
    pub t_valid_until: Option<i64>,
    pub t_status: Option<String>,
    pub t_issued_at: Option<i64>,
    pub t_revoked_at: Option<i64>,
}

impl ParticipantRow {
    /// The joined ticket, if the participant has one.
    pub fn ticket(&self) -> Option<TicketRow> {
        Some(TicketRow {
            serial: self.t_serial?,
            participant_id: self.id,
            key_id: self.t_key_id?,
            short_code: self.t_short_code?,
            scopes: self.t_scopes?,
            valid_from: self.t_valid_from?,
            valid_until: self.t_valid_until?,
            status: self.t_status.clone()?,
            issued_at: self.t_issued_at?,
            revoked_at: self.t_revoked_at,
        })
    }
}

macro_rules! select_participant {
    () => {
        "SELECT p.id, p.event_id, p.external_id, p.name, p.email, p.phone, p.organization,
                p.attention, p.ticket_type, p.metadata, p.ticket_serial, p.created_at,
                p.updated_at, t.serial AS t_serial, t.key_id AS t_key_id,
                t.short_code AS t_short_code, t.scopes AS t_scopes,
                t.valid_from AS t_valid_from, t.valid_until AS t_valid_until,
                t.status AS t_status, t.issued_at AS t_issued_at, t.revoked_at AS t_revoked_at
         FROM participants p
         LEFT JOIN tickets t ON t.event_id = p.event_id AND t.serial = p.ticket_serial "
    };
}

/// Everything a participant row holds that the API can set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantFields {
    pub external_id: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub organization: Option<String>,
    pub attention: Option<String>,
    pub ticket_type: Option<String>,
    /// JSON object text.
    pub metadata: String,
}

/// The normalised e-mail used to match imports: trimmed and lower-case.
pub fn email_key(email: Option<&str>) -> Option<String> {
    email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty())
}

pub async fn get(db: &Db, event_id: Uuid, id: Uuid) -> sqlx::Result<Option<ParticipantRow>> {
    db_run!(db, p => {
        sqlx::query_as(concat!(
            select_participant!(),
            "WHERE p.event_id = $1 AND p.id = $2 AND p.erased_at IS NULL"
        ))
        .bind(event_id)
        .bind(id)
        .fetch_optional(p)
        .await
    })
}

pub async fn get_tx(tx: &mut Tx, event_id: Uuid, id: Uuid) -> sqlx::Result<Option<ParticipantRow>> {
    tx_run!(tx, c => {
        sqlx::query_as(concat!(
            select_participant!(),
            "WHERE p.event_id = $1 AND p.id = $2 AND p.erased_at IS NULL"
        ))
        .bind(event_id)
        .bind(id)
        .fetch_optional(&mut *c)
        .await
    })
}

/// A page of participants ordered by id, optionally filtered by a search text (name, e-mail,
/// organisation or external id, case-insensitive substring) or an exact short code.
pub async fn list(
    db: &Db,
    event_id: Uuid,
    after: Option<Uuid>,
    q: Option<&str>,
    short_code: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<ParticipantRow>> {
    list_of_type(db, event_id, after, q, short_code, None, limit).await
}

/// [`list`], only participants of this ticket type (exact match) when one is given.
///
/// The statement holds only the conditions asked for (no `$n IS NULL OR …`): PostgreSQL plans a
/// prepared statement once for every parameter value, and a catch-all condition makes that plan
/// join and sort all of the event's participants for every page (half a second at 100,000)
/// instead of walking the primary key in id order to the page's end. A text that is a short code
/// is looked up by its code alone (an index probe), not as a substring of names.
pub async fn list_of_type(
    db: &Db,
    event_id: Uuid,
    after: Option<Uuid>,
    q: Option<&str>,
    short_code: Option<i64>,
    ticket_type: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<ParticipantRow>> {
    let pattern = q.filter(|_| short_code.is_none()).map(|q| {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    // PostgreSQL's ILIKE folds case in every script; SQLite's LIKE folds ASCII only (names in
    // other scripts have no case to fold or match exactly).
    let like = match db {
        Db::Postgres(_) => "ILIKE",
        Db::Sqlite(_) => "LIKE",
    };
    let mut sql = String::from(select_participant!());
    sql.push_str("WHERE p.event_id = $1 AND p.erased_at IS NULL");
    let mut n = 1;
    let mut next = || {
        n += 1;
        n
    };
    if after.is_some() {
        sql.push_str(&format!(" AND p.id > ${}", next()));
    }
    if pattern.is_some() {
        let i = next();
        sql.push_str(&format!(
            " AND (p.name {like} ${i} ESCAPE '\\' OR p.email {like} ${i} ESCAPE '\\'
               OR p.organization {like} ${i} ESCAPE '\\' OR p.external_id {like} ${i} ESCAPE '\\')"
        ));
    }
    if short_code.is_some() {
        sql.push_str(&format!(" AND t.short_code = ${}", next()));
    }
    if ticket_type.is_some() {
        sql.push_str(&format!(" AND p.ticket_type = ${}", next()));
    }
    sql.push_str(&format!(" ORDER BY p.id LIMIT ${}", next()));
    db_run!(db, p => {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(event_id);
        if let Some(a) = after {
            query = query.bind(a);
        }
        if let Some(pat) = &pattern {
            query = query.bind(pat.as_str());
        }
        if let Some(code) = short_code {
            query = query.bind(code);
        }
        if let Some(t) = ticket_type {
            query = query.bind(t);
        }
        query.bind(limit).fetch_all(p).await
    })
}

/// Does the event have any (non-erased) participant?
pub async fn any(tx: &mut Tx, event_id: Uuid) -> sqlx::Result<bool> {
    let found: Option<Uuid> = tx_run!(tx, c => {
        sqlx::query_scalar("SELECT id FROM participants WHERE event_id = $1 AND erased_at IS NULL LIMIT 1")
            .bind(event_id)
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(found.is_some())
}

/// Is this external id taken in the event (by anyone but `except`)?
pub async fn external_id_taken(
    tx: &mut Tx,
    event_id: Uuid,
    external_id: &str,
    except: Option<Uuid>,
) -> sqlx::Result<bool> {
    let n: i64 = tx_run!(tx, c => {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM participants
             WHERE event_id = $1 AND external_id = $2 AND ($3 IS NULL OR id <> $3)",
        )
        .bind(event_id)
        .bind(external_id)
        .bind(except)
        .fetch_one(&mut *c)
        .await?
    });
    Ok(n > 0)
}

/// A new participant for [`insert_many`].
#[derive(Debug, Clone)]
pub struct NewParticipant {
    pub id: Uuid,
    pub fields: ParticipantFields,
    pub ticket_serial: Option<i64>,
}

/// Inserts participants (PostgreSQL bulk: `COPY`, 25,000 rows per COPY).
pub async fn insert_many(
    tx: &mut Tx,
    event_id: Uuid,
    now: i64,
    rows: &[NewParticipant],
) -> sqlx::Result<()> {
    if let Tx::Postgres(t) = tx
        && rows.len() >= super::pgcopy::COPY_MIN_ROWS
    {
        for chunk in rows.chunks(super::pgcopy::COPY_CHUNK_ROWS) {
            let mut copy = super::pgcopy::CopyRows::with_capacity(chunk.len() * 256);
            for r in chunk {
                let f = &r.fields;
                copy.uuid(r.id)
                    .uuid(event_id)
                    .text(f.external_id.as_deref())
                    .text(Some(&f.name))
                    .text(f.email.as_deref())
                    .text(email_key(f.email.as_deref()).as_deref())
                    .text(f.phone.as_deref())
                    .text(f.organization.as_deref())
                    .text(f.attention.as_deref())
                    .text(f.ticket_type.as_deref())
                    .text(Some(&f.metadata))
                    .int(r.ticket_serial)
                    .int(Some(now))
                    .int(Some(now));
                copy.end_row();
            }
            super::pgcopy::copy_in(
                t,
                "COPY participants (id, event_id, external_id, name, email, email_key, phone,
                     organization, attention, ticket_type, metadata, ticket_serial,
                     created_at, updated_at) FROM STDIN",
                &copy,
            )
            .await?;
        }
        return Ok(());
    }
    for r in rows {
        let f = &r.fields;
        tx_run!(tx, c => {
            sqlx::query(
                "INSERT INTO participants (id, event_id, external_id, name, email, email_key,
                     phone, organization, attention, ticket_type, metadata, ticket_serial,
                     created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
            )
            .bind(r.id)
            .bind(event_id)
            .bind(f.external_id.as_deref())
            .bind(f.name.as_str())
            .bind(f.email.as_deref())
            .bind(email_key(f.email.as_deref()))
            .bind(f.phone.as_deref())
            .bind(f.organization.as_deref())
            .bind(f.attention.as_deref())
            .bind(f.ticket_type.as_deref())
            .bind(f.metadata.as_str())
            .bind(r.ticket_serial)
            .bind(now)
            .execute(&mut *c)
            .await?;
        });
    }
    Ok(())
}

/// Overwrites the API-settable fields of existing participants.
pub async fn update_many(
    tx: &mut Tx,
    event_id: Uuid,
    now: i64,
    rows: &[(Uuid, ParticipantFields)],
) -> sqlx::Result<()> {
    match tx {
        Tx::Postgres(t) => {
            for chunk in rows.chunks(5_000) {
                let mut ids = Vec::with_capacity(chunk.len());
                let mut ext = Vec::with_capacity(chunk.len());
                let mut names = Vec::with_capacity(chunk.len());
                let mut emails = Vec::with_capacity(chunk.len());
                let mut keys = Vec::with_capacity(chunk.len());
                let mut phones = Vec::with_capacity(chunk.len());
                let mut orgs = Vec::with_capacity(chunk.len());
                let mut attention = Vec::with_capacity(chunk.len());
                let mut types = Vec::with_capacity(chunk.len());
                let mut meta = Vec::with_capacity(chunk.len());
                for (id, f) in chunk {
                    ids.push(*id);
                    ext.push(f.external_id.as_deref());
                    names.push(f.name.as_str());
                    emails.push(f.email.as_deref());
                    keys.push(email_key(f.email.as_deref()));
                    phones.push(f.phone.as_deref());
                    orgs.push(f.organization.as_deref());
                    attention.push(f.attention.as_deref());
                    types.push(f.ticket_type.as_deref());
                    meta.push(f.metadata.as_str());
                }
                sqlx::query(
                    "UPDATE participants AS p SET external_id = u.ext, name = u.name,
                         email = u.email, email_key = u.email_key, phone = u.phone,
                         organization = u.org, attention = u.att, ticket_type = u.tt,
                         metadata = u.meta, updated_at = $2
                     FROM UNNEST($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                                 $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
                          AS u(id, ext, name, email, email_key, phone, org, att, tt, meta)
                     WHERE p.id = u.id AND p.event_id = $1",
                )
                .bind(event_id)
                .bind(now)
                .bind(ids)
                .bind(ext)
                .bind(names)
                .bind(emails)
                .bind(keys)
                .bind(phones)
                .bind(orgs)
                .bind(attention)
                .bind(types)
                .bind(meta)
                .execute(&mut **t)
                .await?;
            }
        }
        Tx::Sqlite(t) => {
            for (id, f) in rows {
                sqlx::query(
                    "UPDATE participants SET external_id = $3, name = $4, email = $5,
                         email_key = $6, phone = $7, organization = $8, attention = $9,
                         ticket_type = $10, metadata = $11, updated_at = $2
                     WHERE id = $12 AND event_id = $1",
                )
                .bind(event_id)
                .bind(now)
                .bind(f.external_id.as_deref())
                .bind(f.name.as_str())
                .bind(f.email.as_deref())
                .bind(email_key(f.email.as_deref()))
                .bind(f.phone.as_deref())
                .bind(f.organization.as_deref())
                .bind(f.attention.as_deref())
                .bind(f.ticket_type.as_deref())
                .bind(f.metadata.as_str())
                .bind(*id)
                .execute(&mut **t)
                .await?;
            }
        }
    }
    Ok(())
}

/// Points a participant at its (new) current ticket.
pub async fn set_ticket(
    tx: &mut Tx,
    event_id: Uuid,
    id: Uuid,
    serial: i64,
    now: i64,
) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE participants SET ticket_serial = $3, updated_at = $4
             WHERE event_id = $1 AND id = $2",
        )
            .bind(event_id)
            .bind(id)
            .bind(serial)
            .bind(now)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Erases personal data; the row (and so the ticket's check-in history) stays, anonymous.
pub async fn erase(tx: &mut Tx, event_id: Uuid, id: Uuid, now: i64) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE participants SET external_id = NULL, name = NULL, email = NULL,
                 email_key = NULL, phone = NULL, organization = NULL, attention = NULL,
                 ticket_type = NULL, metadata = '{}', updated_at = $3, erased_at = $3
             WHERE event_id = $1 AND id = $2",
        )
        .bind(event_id)
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// What the import compares a CSV row with.
#[derive(Debug, Clone, FromRow)]
pub struct MatchRow {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub email_key: Option<String>,
    pub phone: Option<String>,
    pub organization: Option<String>,
    pub attention: Option<String>,
    pub ticket_type: Option<String>,
    pub metadata: String,
    pub ticket_serial: Option<i64>,
}

/// Live participants whose external id or normalised e-mail is among the given ones, oldest
/// first.
pub async fn find_by_keys(
    tx: &mut Tx,
    event_id: Uuid,
    external_ids: &[String],
    email_keys: &[String],
) -> anyhow::Result<Vec<MatchRow>> {
    if external_ids.is_empty() && email_keys.is_empty() {
        return Ok(Vec::new());
    }
    Ok(match tx {
        Tx::Postgres(t) => {
            // Two index-backed lookups rather than one `a = ANY(..) OR b = ANY(..)`, which the
            // planner answers with a sequential scan (quadratic over a large import).
            let mut rows: Vec<MatchRow> = sqlx::query_as(
                "SELECT id, external_id, name, email, email_key, phone, organization, attention,
                        ticket_type, metadata, ticket_serial
                 FROM participants
                 WHERE event_id = $1 AND external_id IS NOT NULL AND external_id = ANY($2)
                   AND erased_at IS NULL",
            )
            .bind(event_id)
            .bind(external_ids)
            .fetch_all(&mut **t)
            .await?;
            if !email_keys.is_empty() {
                let by_email: Vec<MatchRow> = sqlx::query_as(
                    "SELECT id, external_id, name, email, email_key, phone, organization,
                            attention, ticket_type, metadata, ticket_serial
                     FROM participants
                     WHERE event_id = $1 AND email_key = ANY($2) AND erased_at IS NULL",
                )
                .bind(event_id)
                .bind(email_keys)
                .fetch_all(&mut **t)
                .await?;
                let known: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
                rows.extend(by_email.into_iter().filter(|r| !known.contains(&r.id)));
            }
            rows.sort_by_key(|r| r.id);
            rows
        }
        Tx::Sqlite(t) => {
            sqlx::query_as(
                "SELECT id, external_id, name, email, email_key, phone, organization, attention,
                        ticket_type, metadata, ticket_serial
                 FROM participants
                 WHERE event_id = $1 AND erased_at IS NULL
                   AND (external_id IN (SELECT value FROM json_each($2))
                        OR email_key IN (SELECT value FROM json_each($3)))
                 ORDER BY id",
            )
            .bind(event_id)
            .bind(serde_json::to_string(external_ids)?)
            .bind(serde_json::to_string(email_keys)?)
            .fetch_all(&mut **t)
            .await?
        }
    })
}
