//! Participants and the lookups the CSV import needs.
//!
//! Personal columns are sealed on the way in and opened on the way out (see
//! [`super::personal`]): callers read and write plaintext [`ParticipantRow`]s and
//! [`ParticipantFields`], the database holds ciphertext and blind indexes.

use sqlx::FromRow;
use uuid::Uuid;

use super::personal::{self, Term};
use super::tickets::TicketRow;
use super::{Db, Tx, db_run, tx_run};
use crate::domain::crypto::PersonalKeys;

/// A decryption failure as a database decoding error, so the store keeps `sqlx::Result`.
fn undecodable(e: anyhow::Error) -> sqlx::Error {
    sqlx::Error::Decode(e.into())
}

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
    /// The key version that sealed the personal columns (NULL: stored plain).
    pub pd_version: Option<i64>,
}

impl ParticipantRow {
    /// Decrypts the personal columns in place (as read from the database).
    fn open(mut self, keys: &PersonalKeys) -> sqlx::Result<Self> {
        let Self {
            id,
            pd_version,
            name,
            email,
            phone,
            organization,
            attention,
            metadata,
            ..
        } = &mut self;
        open_sealed(
            keys,
            (*id, *pd_version),
            [name, email, phone, organization, attention],
            metadata,
        )?;
        Ok(self)
    }

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
                t.status AS t_status, t.issued_at AS t_issued_at, t.revoked_at AS t_revoked_at,
                p.pd_version
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

/// The normalised e-mail used to match imports: trimmed and lower-case (compared in memory;
/// the database holds only its blind index).
pub fn email_key(email: Option<&str>) -> Option<String> {
    personal::normal_email(email)
}

/// A participant's fields sealed for its row, with their blind indexes and search terms.
struct Sealed {
    name: Option<String>,
    email: Option<String>,
    email_key: Option<String>,
    phone: Option<String>,
    phone_key: Option<String>,
    organization: Option<String>,
    attention: Option<String>,
    metadata: String,
    terms: Vec<Term>,
}

impl Sealed {
    fn new(
        keys: &PersonalKeys,
        event_id: Uuid,
        id: Uuid,
        f: &ParticipantFields,
    ) -> sqlx::Result<Self> {
        let s = |column: &str, v: Option<&str>| {
            personal::seal(keys, id, column, v).map_err(undecodable)
        };
        Ok(Self {
            name: s("name", Some(&f.name))?,
            email: s("email", f.email.as_deref())?,
            email_key: personal::email_index(keys, event_id, f.email.as_deref()),
            phone: s("phone", f.phone.as_deref())?,
            phone_key: personal::phone_index(keys, event_id, f.phone.as_deref()),
            organization: s("organization", f.organization.as_deref())?,
            attention: s("attention", f.attention.as_deref())?,
            metadata: s("metadata", Some(&f.metadata))?.unwrap_or_default(),
            terms: personal::row_terms(keys, event_id, Some(&f.name), f.organization.as_deref()),
        })
    }
}

pub async fn get(
    db: &Db,
    keys: &PersonalKeys,
    event_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<ParticipantRow>> {
    let row: Option<ParticipantRow> = db_run!(db, p => {
        sqlx::query_as(concat!(
            select_participant!(),
            "WHERE p.event_id = $1 AND p.id = $2 AND p.erased_at IS NULL"
        ))
        .bind(event_id)
        .bind(id)
        .fetch_optional(p)
        .await?
    });
    row.map(|r| r.open(keys)).transpose()
}

pub async fn get_tx(
    tx: &mut Tx,
    keys: &PersonalKeys,
    event_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<ParticipantRow>> {
    let row: Option<ParticipantRow> = tx_run!(tx, c => {
        sqlx::query_as(concat!(
            select_participant!(),
            "WHERE p.event_id = $1 AND p.id = $2 AND p.erased_at IS NULL"
        ))
        .bind(event_id)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
    });
    row.map(|r| r.open(keys)).transpose()
}

/// What a search text asks for: every word a term (AND), or the whole text an exact e-mail,
/// phone or external id.
struct Search {
    terms: Vec<Term>,
    email_key: Option<String>,
    phone_key: Option<String>,
    external_id: String,
}

impl Search {
    fn new(keys: &PersonalKeys, event_id: Uuid, q: &str) -> Self {
        let q = q.trim();
        let phone_like = q
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c));
        Self {
            terms: personal::query_terms(keys, event_id, q),
            email_key: q
                .contains('@')
                .then(|| personal::email_index(keys, event_id, Some(q)))
                .flatten(),
            phone_key: phone_like
                .then(|| personal::phone_index(keys, event_id, Some(q)))
                .flatten(),
            external_id: q.to_owned(),
        }
    }
}

/// A page of participants ordered by id, optionally filtered by a search text or an exact short
/// code. A search text matches when each of its words begins a word of the name or organisation
/// (case and accents aside), or when it is exactly the e-mail (any case), the phone (its
/// digits) or the external id.
pub async fn list(
    db: &Db,
    keys: &PersonalKeys,
    event_id: Uuid,
    after: Option<Uuid>,
    q: Option<&str>,
    short_code: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<ParticipantRow>> {
    list_of_type(db, keys, event_id, after, q, short_code, None, limit).await
}

/// [`list`], only participants of this ticket type (exact match) when one is given.
///
/// The statement holds only the conditions asked for (no `$n IS NULL OR …`): PostgreSQL plans a
/// prepared statement once for every parameter value, and a catch-all condition makes that plan
/// join and sort all of the event's participants for every page (half a second at 100,000)
/// instead of walking the primary key in id order to the page's end. A text that is a short code
/// is looked up by its code alone (an index probe). A search is two statements whose pages are
/// merged by id: the words through `participant_terms` (an index range per word, in participant
/// id order) and the exact e-mail, phone and external id through their indexes. One statement
/// with `words OR exact` makes both backends walk every participant of the event when the words
/// match few. No row is decrypted to search.
#[allow(clippy::too_many_arguments)]
pub async fn list_of_type(
    db: &Db,
    keys: &PersonalKeys,
    event_id: Uuid,
    after: Option<Uuid>,
    q: Option<&str>,
    short_code: Option<i64>,
    ticket_type: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<ParticipantRow>> {
    let search = q
        .filter(|_| short_code.is_none())
        .map(|q| Search::new(keys, event_id, q));
    let all = Page {
        event_id,
        after,
        condition: Condition::All,
        short_code,
        ticket_type,
        limit,
    };
    let mut rows = match &search {
        None => all.fetch(db).await?,
        Some(s) => {
            let exact = Page {
                condition: Condition::Exact(s),
                ..all
            };
            let mut rows = exact.fetch(db).await?;
            if !s.terms.is_empty() {
                let known: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
                let words = Page {
                    condition: Condition::Words(&s.terms),
                    ..all
                };
                let by_words = words.fetch(db).await?;
                rows.extend(by_words.into_iter().filter(|r| !known.contains(&r.id)));
                rows.sort_by_key(|r| r.id);
                rows.truncate(usize::try_from(limit).unwrap_or(0));
            }
            rows
        }
    };
    rows = rows
        .into_iter()
        .map(|r| r.open(keys))
        .collect::<sqlx::Result<_>>()?;
    Ok(rows)
}

/// Which participants a [`Page`] selects.
enum Condition<'a> {
    All,
    /// Every term (AND).
    Words(&'a [Term]),
    /// The exact e-mail, phone or external id.
    Exact(&'a Search),
}

/// One page statement of [`list_of_type`].
struct Page<'a> {
    event_id: Uuid,
    after: Option<Uuid>,
    condition: Condition<'a>,
    short_code: Option<i64>,
    ticket_type: Option<&'a str>,
    limit: i64,
}

/// A value bound to a [`Page`] statement.
enum Bind<'a> {
    Id(Uuid),
    Bytes(&'a [u8]),
    Text(&'a str),
    Int(i64),
}

impl Page<'_> {
    async fn fetch(&self, db: &Db) -> sqlx::Result<Vec<ParticipantRow>> {
        let mut sql = String::from(select_participant!());
        sql.push_str("WHERE p.event_id = $1 AND p.erased_at IS NULL");
        let mut binds: Vec<Bind<'_>> = vec![Bind::Id(self.event_id)];
        fn at<'b>(binds: &mut Vec<Bind<'b>>, b: Bind<'b>) -> String {
            binds.push(b);
            format!("${}", binds.len())
        }
        let after = self.after.map(|a| at(&mut binds, Bind::Id(a)));
        if let Some(a) = &after {
            sql.push_str(&format!(" AND p.id > {a}"));
        }
        match &self.condition {
            Condition::All => {}
            Condition::Words(terms) => {
                // One index range per word, intersected: a join of the ranges lets SQLite
                // choose to walk every participant instead.
                let mut parts = Vec::with_capacity(terms.len());
                for term in terms.iter() {
                    let i = at(&mut binds, Bind::Bytes(term.as_slice()));
                    let mut part = format!(
                        "SELECT participant_id FROM participant_terms
                         WHERE event_id = $1 AND term = {i}"
                    );
                    if let Some(a) = &after {
                        part.push_str(&format!(" AND participant_id > {a}"));
                    }
                    parts.push(part);
                }
                sql.push_str(&format!(" AND p.id IN ({})", parts.join(" INTERSECT ")));
            }
            Condition::Exact(s) => {
                let mut any = Vec::new();
                if let Some(e) = &s.email_key {
                    any.push(format!("p.email_key = {}", at(&mut binds, Bind::Text(e))));
                }
                if let Some(ph) = &s.phone_key {
                    any.push(format!("p.phone_key = {}", at(&mut binds, Bind::Text(ph))));
                }
                let x = at(&mut binds, Bind::Text(&s.external_id));
                any.push(format!("p.external_id = {x}"));
                sql.push_str(&format!(" AND ({})", any.join(" OR ")));
            }
        }
        if let Some(code) = self.short_code {
            let i = at(&mut binds, Bind::Int(code));
            sql.push_str(&format!(" AND t.short_code = {i}"));
        }
        if let Some(t) = self.ticket_type {
            let i = at(&mut binds, Bind::Text(t));
            sql.push_str(&format!(" AND p.ticket_type = {i}"));
        }
        let i = at(&mut binds, Bind::Int(self.limit));
        sql.push_str(&format!(" ORDER BY p.id LIMIT {i}"));
        db_run!(db, p => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()));
            for b in &binds {
                query = match b {
                    Bind::Id(v) => query.bind(*v),
                    Bind::Bytes(v) => query.bind(*v),
                    Bind::Text(v) => query.bind(*v),
                    Bind::Int(v) => query.bind(*v),
                };
            }
            query.fetch_all(p).await
        })
    }
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

/// Inserts participants (PostgreSQL bulk: `COPY`, 25,000 rows per COPY), sealed, with their
/// search terms.
pub async fn insert_many(
    tx: &mut Tx,
    keys: &PersonalKeys,
    event_id: Uuid,
    now: i64,
    rows: &[NewParticipant],
) -> sqlx::Result<()> {
    let version = i64::from(keys.version());
    if let Tx::Postgres(t) = tx
        && rows.len() >= super::pgcopy::COPY_MIN_ROWS
    {
        let mut terms = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(super::pgcopy::COPY_CHUNK_ROWS) {
            let mut copy = super::pgcopy::CopyRows::with_capacity(chunk.len() * 512);
            for r in chunk {
                let f = &r.fields;
                let s = Sealed::new(keys, event_id, r.id, f)?;
                copy.uuid(r.id)
                    .uuid(event_id)
                    .text(f.external_id.as_deref())
                    .text(s.name.as_deref())
                    .text(s.email.as_deref())
                    .text(s.email_key.as_deref())
                    .text(s.phone.as_deref())
                    .text(s.phone_key.as_deref())
                    .text(s.organization.as_deref())
                    .text(s.attention.as_deref())
                    .text(f.ticket_type.as_deref())
                    .text(Some(&s.metadata))
                    .int(r.ticket_serial)
                    .int(Some(now))
                    .int(Some(now))
                    .int(Some(version));
                copy.end_row();
                terms.push((r.id, s.terms));
            }
            super::pgcopy::copy_in(
                t,
                "COPY participants (id, event_id, external_id, name, email, email_key, phone,
                     phone_key, organization, attention, ticket_type, metadata, ticket_serial,
                     created_at, updated_at, pd_version) FROM STDIN",
                &copy,
            )
            .await?;
        }
        return personal::put_terms(tx, event_id, &terms, true).await;
    }
    let mut terms = Vec::with_capacity(rows.len());
    for r in rows {
        let f = &r.fields;
        let s = Sealed::new(keys, event_id, r.id, f)?;
        tx_run!(tx, c => {
            sqlx::query(
                "INSERT INTO participants (id, event_id, external_id, name, email, email_key,
                     phone, phone_key, organization, attention, ticket_type, metadata,
                     ticket_serial, created_at, updated_at, pd_version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15)",
            )
            .bind(r.id)
            .bind(event_id)
            .bind(f.external_id.as_deref())
            .bind(s.name.as_deref())
            .bind(s.email.as_deref())
            .bind(s.email_key.as_deref())
            .bind(s.phone.as_deref())
            .bind(s.phone_key.as_deref())
            .bind(s.organization.as_deref())
            .bind(s.attention.as_deref())
            .bind(f.ticket_type.as_deref())
            .bind(s.metadata.as_str())
            .bind(r.ticket_serial)
            .bind(now)
            .bind(version)
            .execute(&mut *c)
            .await?;
        });
        terms.push((r.id, s.terms));
    }
    personal::put_terms(tx, event_id, &terms, true).await
}

/// Overwrites the API-settable fields of existing participants (sealed; their search terms
/// are replaced).
pub async fn update_many(
    tx: &mut Tx,
    keys: &PersonalKeys,
    event_id: Uuid,
    now: i64,
    rows: &[(Uuid, ParticipantFields)],
) -> sqlx::Result<()> {
    let version = i64::from(keys.version());
    for chunk in rows.chunks(5_000) {
        let sealed: Vec<(Uuid, &ParticipantFields, Sealed)> = chunk
            .iter()
            .map(|(id, f)| Ok((*id, f, Sealed::new(keys, event_id, *id, f)?)))
            .collect::<sqlx::Result<_>>()?;
        match tx {
            Tx::Postgres(t) => {
                let mut ids = Vec::with_capacity(chunk.len());
                let mut ext = Vec::with_capacity(chunk.len());
                let mut names = Vec::with_capacity(chunk.len());
                let mut emails = Vec::with_capacity(chunk.len());
                let mut email_keys = Vec::with_capacity(chunk.len());
                let mut phones = Vec::with_capacity(chunk.len());
                let mut phone_keys = Vec::with_capacity(chunk.len());
                let mut orgs = Vec::with_capacity(chunk.len());
                let mut attention = Vec::with_capacity(chunk.len());
                let mut types = Vec::with_capacity(chunk.len());
                let mut meta = Vec::with_capacity(chunk.len());
                for (id, f, s) in &sealed {
                    ids.push(*id);
                    ext.push(f.external_id.as_deref());
                    names.push(s.name.as_deref());
                    emails.push(s.email.as_deref());
                    email_keys.push(s.email_key.as_deref());
                    phones.push(s.phone.as_deref());
                    phone_keys.push(s.phone_key.as_deref());
                    orgs.push(s.organization.as_deref());
                    attention.push(s.attention.as_deref());
                    types.push(f.ticket_type.as_deref());
                    meta.push(s.metadata.as_str());
                }
                sqlx::query(
                    "UPDATE participants AS p SET external_id = u.ext, name = u.name,
                         email = u.email, email_key = u.email_key, phone = u.phone,
                         phone_key = u.phone_key, organization = u.org, attention = u.att,
                         ticket_type = u.tt, metadata = u.meta, updated_at = $2, pd_version = $3
                     FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[],
                                 $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                                 $14::text[])
                          AS u(id, ext, name, email, email_key, phone, phone_key, org, att, tt,
                               meta)
                     WHERE p.id = u.id AND p.event_id = $1",
                )
                .bind(event_id)
                .bind(now)
                .bind(version)
                .bind(&ids)
                .bind(ext)
                .bind(names)
                .bind(emails)
                .bind(email_keys)
                .bind(phones)
                .bind(phone_keys)
                .bind(orgs)
                .bind(attention)
                .bind(types)
                .bind(meta)
                .execute(&mut **t)
                .await?;
                sqlx::query(
                    "DELETE FROM participant_terms
                     WHERE event_id = $1 AND participant_id = ANY($2)",
                )
                .bind(event_id)
                .bind(&ids)
                .execute(&mut **t)
                .await?;
            }
            Tx::Sqlite(t) => {
                for (id, f, s) in &sealed {
                    sqlx::query(
                        "UPDATE participants SET external_id = $3, name = $4, email = $5,
                             email_key = $6, phone = $7, phone_key = $8, organization = $9,
                             attention = $10, ticket_type = $11, metadata = $12, updated_at = $2,
                             pd_version = $13
                         WHERE id = $14 AND event_id = $1",
                    )
                    .bind(event_id)
                    .bind(now)
                    .bind(f.external_id.as_deref())
                    .bind(s.name.as_deref())
                    .bind(s.email.as_deref())
                    .bind(s.email_key.as_deref())
                    .bind(s.phone.as_deref())
                    .bind(s.phone_key.as_deref())
                    .bind(s.organization.as_deref())
                    .bind(s.attention.as_deref())
                    .bind(f.ticket_type.as_deref())
                    .bind(s.metadata.as_str())
                    .bind(version)
                    .bind(*id)
                    .execute(&mut **t)
                    .await?;
                    sqlx::query(
                        "DELETE FROM participant_terms WHERE event_id = $1 AND participant_id = $2",
                    )
                    .bind(event_id)
                    .bind(*id)
                    .execute(&mut **t)
                    .await?;
                }
            }
        }
        let terms: Vec<(Uuid, Vec<Term>)> =
            sealed.into_iter().map(|(id, _, s)| (id, s.terms)).collect();
        personal::put_terms(tx, event_id, &terms, true).await?;
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

/// Erases personal data; the row (and so the ticket's check-in history) stays, anonymous. Its
/// blind indexes and search terms go too (with SQLite's `secure_delete` the freed bytes are
/// zeroed, see [`super::Db::connect`]).
pub async fn erase(tx: &mut Tx, event_id: Uuid, id: Uuid, now: i64) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE participants SET external_id = NULL, name = NULL, email = NULL,
                 email_key = NULL, phone = NULL, phone_key = NULL, organization = NULL,
                 attention = NULL, ticket_type = NULL, metadata = '{}', updated_at = $3,
                 erased_at = $3, pd_version = NULL
             WHERE event_id = $1 AND id = $2",
        )
        .bind(event_id)
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    personal::delete_terms(tx, event_id, id).await
}

/// What the import compares a CSV row with (opened: `email_key` is the normalised e-mail, as
/// [`email_key`] makes it, not its blind index).
#[derive(Debug, Clone, FromRow)]
pub struct MatchRow {
    pub id: Uuid,
    pub event_id: Uuid,
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
    pub pd_version: Option<i64>,
}

impl MatchRow {
    fn open(mut self, keys: &PersonalKeys) -> sqlx::Result<Self> {
        let Self {
            id,
            pd_version,
            name,
            email,
            phone,
            organization,
            attention,
            metadata,
            ..
        } = &mut self;
        open_sealed(
            keys,
            (*id, *pd_version),
            [name, email, phone, organization, attention],
            metadata,
        )?;
        self.email_key = email_key(self.email.as_deref());
        Ok(self)
    }
}

/// Decrypts a participant's sealed columns in place: `texts` are name, e-mail, phone,
/// organisation and attention, in that order; `(id, pd_version)` as the row holds them.
fn open_sealed(
    keys: &PersonalKeys,
    (id, version): (Uuid, Option<i64>),
    texts: [&mut Option<String>; 5],
    metadata: &mut String,
) -> sqlx::Result<()> {
    let columns = ["name", "email", "phone", "organization", "attention"];
    for (column, value) in columns.into_iter().zip(texts) {
        *value = personal::open(keys, id, version, column, value.take()).map_err(undecodable)?;
    }
    *metadata = personal::open(
        keys,
        id,
        version,
        "metadata",
        Some(std::mem::take(metadata)),
    )
    .map_err(undecodable)?
    .unwrap_or_default();
    Ok(())
}

const MATCH_COLUMNS: &str = "id, event_id, external_id, name, email, email_key, phone,
    organization, attention, ticket_type, metadata, ticket_serial, pd_version";

/// Live participants whose external id or normalised e-mail (as [`email_key`] gives it) is among
/// the given ones, oldest first. E-mails are looked up by their blind index.
pub async fn find_by_keys(
    tx: &mut Tx,
    keys: &PersonalKeys,
    event_id: Uuid,
    external_ids: &[String],
    email_keys: &[String],
) -> anyhow::Result<Vec<MatchRow>> {
    if external_ids.is_empty() && email_keys.is_empty() {
        return Ok(Vec::new());
    }
    let blind: Vec<String> = email_keys
        .iter()
        .map(|e| personal::email_index_of_key(keys, event_id, e))
        .collect();
    let rows: Vec<MatchRow> = match tx {
        Tx::Postgres(t) => {
            // Two index-backed lookups rather than one `a = ANY(..) OR b = ANY(..)`, which the
            // planner answers with a sequential scan (quadratic over a large import).
            let mut rows: Vec<MatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {MATCH_COLUMNS}
                 FROM participants
                 WHERE event_id = $1 AND external_id IS NOT NULL AND external_id = ANY($2)
                   AND erased_at IS NULL"
            )))
            .bind(event_id)
            .bind(external_ids)
            .fetch_all(&mut **t)
            .await?;
            if !blind.is_empty() {
                let by_email: Vec<MatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {MATCH_COLUMNS}
                     FROM participants
                     WHERE event_id = $1 AND email_key = ANY($2) AND erased_at IS NULL"
                )))
                .bind(event_id)
                .bind(&blind)
                .fetch_all(&mut **t)
                .await?;
                let known: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
                rows.extend(by_email.into_iter().filter(|r| !known.contains(&r.id)));
            }
            rows.sort_by_key(|r| r.id);
            rows
        }
        Tx::Sqlite(t) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {MATCH_COLUMNS}
                 FROM participants
                 WHERE event_id = $1 AND erased_at IS NULL
                   AND (external_id IN (SELECT value FROM json_each($2))
                        OR email_key IN (SELECT value FROM json_each($3)))
                 ORDER BY id"
            )))
            .bind(event_id)
            .bind(serde_json::to_string(external_ids)?)
            .bind(serde_json::to_string(&blind)?)
            .fetch_all(&mut **t)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|r| r.open(keys))
        .collect::<sqlx::Result<_>>()?)
}
