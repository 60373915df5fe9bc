//! Participants' personal data at rest: sealed columns, blind indexes and search terms.
//!
//! A participant's name, e-mail, phone, organisation, attention note and metadata are stored
//! sealed with AES-256-GCM ([`PersonalKeys::seal_field`]) under an AAD of the participant's id
//! and the column, so a value copied into another row or column does not decrypt. A row's
//! `pd_version` says which key version sealed it (NULL: a row written before encryption, read as
//! it is until the start-up backfill in [`backfill`] seals it; erased rows hold nothing).
//!
//! Lookups go through keyed blind indexes (truncated HMAC-SHA256, scoped to the event):
//! - `email_key`: the trimmed lower-case e-mail (the CSV import's duplicate key), hex;
//! - `phone_key`: the phone's digits, hex;
//! - `participant_terms`: every word of the name and organisation (NFKD, diacritics dropped,
//!   lower-case) and its prefixes from [`MIN_PREFIX`] to [`MAX_PREFIX`] characters, at most
//!   [`MAX_WORDS`] words a row. A search word matches a term of the same text: words match by
//!   prefix, and a search word longer than [`MAX_PREFIX`] by its first [`MAX_PREFIX`]
//!   characters.

use std::collections::BTreeSet;

use sqlx::FromRow;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use uuid::Uuid;

use super::{Db, Tx, tx_run};
use crate::domain::crypto::{BLIND_LEN, PersonalKeys};

/// Blind-index domains: one value never matches across kinds.
const EMAIL: &[u8] = b"email";
const PHONE: &[u8] = b"phone";
const WORD: &[u8] = b"word";

/// Shortest indexed prefix: one letter would match a good part of any event.
pub const MIN_PREFIX: usize = 2;
/// Longest indexed prefix, in characters (longer words are indexed whole as well).
pub const MAX_PREFIX: usize = 12;
/// Most words of one participant that are indexed.
pub const MAX_WORDS: usize = 12;

pub type Term = [u8; BLIND_LEN];

/// The AAD of one sealed column of one participant.
fn aad(id: Uuid, column: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 1 + column.len());
    out.extend_from_slice(id.as_bytes());
    out.push(b'/');
    out.extend_from_slice(column.as_bytes());
    out
}

/// Seals a column value. `None` stays NULL and an empty text stays empty, so "has an e-mail"
/// remains a plain SQL test (`email <> ''`) and nothing is spent on nothing.
pub fn seal(
    keys: &PersonalKeys,
    id: Uuid,
    column: &str,
    value: Option<&str>,
) -> anyhow::Result<Option<String>> {
    match value {
        None => Ok(None),
        Some("") => Ok(Some(String::new())),
        Some(v) => keys.seal_field(&aad(id, column), v).map(Some),
    }
}

/// Opens a column value of a row whose `pd_version` is `version` (NULL: stored plain).
pub fn open(
    keys: &PersonalKeys,
    id: Uuid,
    version: Option<i64>,
    column: &str,
    value: Option<String>,
) -> anyhow::Result<Option<String>> {
    match (version, value) {
        (None, v) => Ok(v),
        (Some(_), None) => Ok(None),
        (Some(_), Some(v)) if v.is_empty() => Ok(Some(v)),
        (Some(_), Some(v)) => keys.open_field(&aad(id, column), &v).map(Some),
    }
}

/// The words of a text: NFKD, combining marks dropped, NFC, lower-case, split at everything that is
/// not a letter or digit ("José-Luis O'Neil" → jose, luis, o, neil).
pub fn words(text: &str) -> Vec<String> {
    // Recomposed after the marks are gone, so scripts built from composed characters (Hangul
    // syllables) count prefixes in the characters people type.
    let bare: String = text.nfkd().filter(|c| !is_combining_mark(*c)).collect();
    let folded: String = bare.nfc().flat_map(char::to_lowercase).collect();
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The normalised e-mail used to match imports: trimmed and lower-case.
pub fn normal_email(email: Option<&str>) -> Option<String> {
    email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty())
}

/// A phone's digits, when it has enough of them to tell people apart.
pub fn phone_digits(phone: &str) -> Option<String> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 4).then_some(digits)
}

/// The `email_key` column: the blind index of the normalised e-mail, hex.
pub fn email_index(keys: &PersonalKeys, event_id: Uuid, email: Option<&str>) -> Option<String> {
    normal_email(email).map(|e| hex::encode(keys.blind(EMAIL, event_id, &e)))
}

/// The `email_key` of an already normalised e-mail.
pub fn email_index_of_key(keys: &PersonalKeys, event_id: Uuid, key: &str) -> String {
    hex::encode(keys.blind(EMAIL, event_id, key))
}

/// The `phone_key` column: the blind index of the phone's digits, hex.
pub fn phone_index(keys: &PersonalKeys, event_id: Uuid, phone: Option<&str>) -> Option<String> {
    phone
        .and_then(phone_digits)
        .map(|d| hex::encode(keys.blind(PHONE, event_id, &d)))
}

/// The search terms of a participant: its name's and organisation's words and their prefixes.
pub fn row_terms(
    keys: &PersonalKeys,
    event_id: Uuid,
    name: Option<&str>,
    organization: Option<&str>,
) -> Vec<Term> {
    let mut texts: BTreeSet<String> = BTreeSet::new();
    let all = name
        .into_iter()
        .chain(organization)
        .flat_map(words)
        .take(MAX_WORDS);
    for word in all {
        let chars: Vec<char> = word.chars().collect();
        for len in MIN_PREFIX..=chars.len().min(MAX_PREFIX) {
            texts.insert(chars[..len].iter().collect());
        }
        if chars.len() > MAX_PREFIX {
            texts.insert(word);
        }
    }
    let mut terms: Vec<Term> = texts
        .iter()
        .map(|t| keys.blind(WORD, event_id, t))
        .collect();
    terms.sort_unstable();
    terms.dedup();
    terms
}

/// The term each searchable word of a query must match (words shorter than [`MIN_PREFIX`] are
/// left out; longer than [`MAX_PREFIX`]: its first [`MAX_PREFIX`] characters).
pub fn query_terms(keys: &PersonalKeys, event_id: Uuid, q: &str) -> Vec<Term> {
    let mut terms: Vec<Term> = words(q)
        .into_iter()
        .filter(|w| w.chars().count() >= MIN_PREFIX)
        .take(MAX_WORDS)
        .map(|w| {
            let text: String = w.chars().take(MAX_PREFIX).collect();
            keys.blind(WORD, event_id, &text)
        })
        .collect();
    terms.sort_unstable();
    terms.dedup();
    terms
}

/// Replaces the search terms of participants (after an insert: pass `fresh` to skip the
/// delete).
pub async fn put_terms(
    tx: &mut Tx,
    event_id: Uuid,
    rows: &[(Uuid, Vec<Term>)],
    fresh: bool,
) -> sqlx::Result<()> {
    if !fresh {
        for (id, _) in rows {
            delete_terms(tx, event_id, *id).await?;
        }
    }
    match tx {
        Tx::Postgres(t) => {
            let mut ids: Vec<Uuid> = Vec::new();
            let mut terms: Vec<Vec<u8>> = Vec::new();
            for (id, row) in rows {
                for term in row {
                    ids.push(*id);
                    terms.push(term.to_vec());
                }
                if ids.len() >= 20_000 {
                    insert_pg(t, event_id, &ids, &terms).await?;
                    ids.clear();
                    terms.clear();
                }
            }
            if !ids.is_empty() {
                insert_pg(t, event_id, &ids, &terms).await?;
            }
        }
        Tx::Sqlite(t) => {
            // 300 rows of 2 parameters (+ the event) a statement.
            let flat: Vec<(Uuid, &Term)> = rows
                .iter()
                .flat_map(|(id, row)| row.iter().map(move |term| (*id, term)))
                .collect();
            for chunk in flat.chunks(300) {
                let mut sql = String::from(
                    "INSERT INTO participant_terms (event_id, term, participant_id) VALUES ",
                );
                for i in 0..chunk.len() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3));
                }
                sql.push_str(" ON CONFLICT DO NOTHING");
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(event_id);
                for (id, term) in chunk {
                    query = query.bind(term.as_slice()).bind(*id);
                }
                query.execute(&mut **t).await?;
            }
        }
    }
    Ok(())
}

async fn insert_pg(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    event_id: Uuid,
    ids: &[Uuid],
    terms: &[Vec<u8>],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO participant_terms (event_id, term, participant_id)
         SELECT $1, u.term, u.id FROM UNNEST($2::bytea[], $3::uuid[]) AS u(term, id)
         ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(terms)
    .bind(ids)
    .execute(&mut **t)
    .await?;
    Ok(())
}

/// Removes a participant's search terms (an update, an erasure).
pub async fn delete_terms(tx: &mut Tx, event_id: Uuid, id: Uuid) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("DELETE FROM participant_terms WHERE event_id = $1 AND participant_id = $2")
            .bind(event_id)
            .bind(id)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

#[derive(FromRow)]
struct StoredRow {
    id: Uuid,
    event_id: Uuid,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    organization: Option<String>,
    attention: Option<String>,
    metadata: String,
    pd_version: Option<i64>,
}

/// Rows sealed per transaction by [`backfill`] and [`reseal`].
const BATCH: i64 = 1_000;

/// Seals the personal data of rows written before encryption and fills their blind indexes
/// and terms, a batch per transaction. Idempotent: only rows with no `pd_version` that are not
/// erased are touched, so an interrupted run resumes where it stopped. Returns how many rows it
/// sealed.
pub async fn backfill(db: &Db, keys: &PersonalKeys) -> anyhow::Result<u64> {
    let mut done = 0u64;
    loop {
        let mut tx = db.begin().await?;
        let rows: Vec<StoredRow> = tx_run!(&mut tx, c => {
            sqlx::query_as(
                "SELECT id, event_id, name, email, phone, organization, attention, metadata,
                        pd_version
                 FROM participants WHERE pd_version IS NULL AND erased_at IS NULL LIMIT $1",
            )
            .bind(BATCH)
            .fetch_all(&mut *c)
            .await?
        });
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(done);
        }
        for r in &rows {
            rewrite(&mut tx, keys, keys, r).await?;
        }
        tx.commit().await?;
        done += rows.len() as u64;
    }
}

/// Re-encrypts every participant sealed under `from` with `to` and recomputes their blind
/// indexes and search terms (the key rotation in `docs/personal-data.md`). Rows already under
/// `to` are recognised (they open with `to`) and skipped, so an interrupted run can simply be
/// started again. Returns how many rows it re-encrypted.
pub async fn reseal(db: &Db, from: &PersonalKeys, to: &PersonalKeys) -> anyhow::Result<u64> {
    let mut done = 0u64;
    let mut after = (Uuid::nil(), Uuid::nil());
    loop {
        let mut tx = db.begin().await?;
        let rows: Vec<StoredRow> = tx_run!(&mut tx, c => {
            sqlx::query_as(
                "SELECT id, event_id, name, email, phone, organization, attention, metadata,
                        pd_version
                 FROM participants
                 WHERE erased_at IS NULL AND (event_id > $1 OR (event_id = $1 AND id > $2))
                 ORDER BY event_id, id LIMIT $3",
            )
            .bind(after.0)
            .bind(after.1)
            .bind(BATCH)
            .fetch_all(&mut *c)
            .await?
        });
        let Some(last) = rows.last() else {
            tx.rollback().await?;
            return Ok(done);
        };
        after = (last.event_id, last.id);
        for r in &rows {
            let sealed_by_to = r.pd_version.is_some()
                && open(to, r.id, r.pd_version, "name", r.name.clone()).is_ok()
                && open(to, r.id, r.pd_version, "metadata", Some(r.metadata.clone())).is_ok();
            if sealed_by_to {
                continue;
            }
            rewrite(&mut tx, from, to, r).await?;
            done += 1;
        }
        tx.commit().await?;
    }
}

/// Opens a stored row with `from` (plain when it has no `pd_version`) and writes it back
/// sealed with `to`, with fresh blind indexes and terms.
async fn rewrite(
    tx: &mut Tx,
    from: &PersonalKeys,
    to: &PersonalKeys,
    r: &StoredRow,
) -> anyhow::Result<()> {
    let v = r.pd_version;
    let plain = |column: &str, value: &Option<String>| open(from, r.id, v, column, value.clone());
    let name = plain("name", &r.name)?;
    let email = plain("email", &r.email)?;
    let phone = plain("phone", &r.phone)?;
    let organization = plain("organization", &r.organization)?;
    let attention = plain("attention", &r.attention)?;
    let metadata = plain("metadata", &Some(r.metadata.clone()))?.unwrap_or_default();
    let sealed = |column: &str, value: Option<&str>| seal(to, r.id, column, value);
    let s_name = sealed("name", name.as_deref())?;
    let s_email = sealed("email", email.as_deref())?;
    let s_phone = sealed("phone", phone.as_deref())?;
    let s_org = sealed("organization", organization.as_deref())?;
    let s_att = sealed("attention", attention.as_deref())?;
    let s_meta = sealed("metadata", Some(&metadata))?.unwrap_or_default();
    tx_run!(&mut *tx, c => {
        sqlx::query(
            "UPDATE participants SET name = $3, email = $4, email_key = $5, phone = $6,
                 phone_key = $7, organization = $8, attention = $9, metadata = $10,
                 pd_version = $11
             WHERE event_id = $1 AND id = $2",
        )
        .bind(r.event_id)
        .bind(r.id)
        .bind(s_name)
        .bind(s_email)
        .bind(email_index(to, r.event_id, email.as_deref()))
        .bind(s_phone)
        .bind(phone_index(to, r.event_id, phone.as_deref()))
        .bind(s_org)
        .bind(s_att)
        .bind(s_meta)
        .bind(i64::from(to.version()))
        .execute(&mut *c)
        .await?;
    });
    let terms = row_terms(to, r.event_id, name.as_deref(), organization.as_deref());
    put_terms(tx, r.event_id, &[(r.id, terms)], false).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::crypto::MasterKey;

    #[test]
    fn words_fold_case_and_accents_and_split_at_punctuation() {
        assert_eq!(words("José-Luis O'Neil"), ["jose", "luis", "o", "neil"]);
        assert_eq!(words("ÅSA  Öberg, Straße"), ["asa", "oberg", "straße"]);
        assert_eq!(words("  "), Vec::<String>::new());
        assert_eq!(words("Ｍｉｎｊｉ 김민지"), ["minji", "김민지"]);
    }

    #[test]
    fn every_prefix_of_a_word_is_a_term_and_a_query_word_finds_it() {
        let key = MasterKey::from_bytes([3; 32]);
        let keys = key.personal();
        let event = Uuid::from_u128(5);
        let terms = row_terms(keys, event, Some("Alexandra Johansson"), Some("ACME"));
        for q in ["al", "Alex", "alexandra", "JOH", "acme"] {
            let want = query_terms(keys, event, q);
            assert_eq!(want.len(), 1, "{q}");
            assert!(terms.contains(&want[0]), "{q} should match");
        }
        for q in ["lex", "alexandrb", "smith"] {
            let want = query_terms(keys, event, q);
            assert!(!terms.contains(&want[0]), "{q} should not match");
        }
        // One-letter words are not searchable; the other words still are.
        assert_eq!(query_terms(keys, event, "a joh").len(), 1);
        // A long word is found by its first MAX_PREFIX characters and whole.
        let long = row_terms(keys, event, Some("Wolfeschlegelsteinhausen"), None);
        assert!(long.contains(&query_terms(keys, event, "wolfeschlegelsteinhausen")[0]));
        assert!(long.contains(&query_terms(keys, event, "wolfeschlege")[0]));
        // Capped: at most MAX_WORDS words, each at most MAX_PREFIX - 1 prefixes + itself.
        let many = "abcdefghijklmnop ".repeat(40);
        assert!(row_terms(keys, event, Some(&many), None).len() <= MAX_PREFIX);
    }

    #[test]
    fn phones_match_by_their_digits_and_emails_by_their_lower_case() {
        let key = MasterKey::from_bytes([3; 32]);
        let keys = key.personal();
        let event = Uuid::from_u128(5);
        assert_eq!(
            phone_index(keys, event, Some("+46 (70) 123-45 67")),
            phone_index(keys, event, Some("46701234567"))
        );
        assert_eq!(phone_index(keys, event, Some("12")), None);
        assert_eq!(
            email_index(keys, event, Some(" Ada@Example.ORG ")),
            email_index(keys, event, Some("ada@example.org"))
        );
        assert_eq!(email_index(keys, event, Some("  ")), None);
    }

    #[test]
    fn sealed_columns_open_only_in_their_row_and_column() {
        let key = MasterKey::from_bytes([3; 32]);
        let keys = key.personal();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let sealed = seal(keys, a, "email", Some("ada@example.org")).unwrap();
        assert_eq!(
            open(keys, a, Some(1), "email", sealed.clone())
                .unwrap()
                .as_deref(),
            Some("ada@example.org")
        );
        assert!(open(keys, b, Some(1), "email", sealed.clone()).is_err());
        assert!(open(keys, a, Some(1), "phone", sealed).is_err());
        assert_eq!(
            seal(keys, a, "email", Some("")).unwrap().as_deref(),
            Some("")
        );
        assert_eq!(seal(keys, a, "email", None).unwrap(), None);
        // A row from before encryption reads as it is.
        assert_eq!(
            open(keys, a, None, "email", Some("x@y".into()))
                .unwrap()
                .as_deref(),
            Some("x@y")
        );
    }
}
