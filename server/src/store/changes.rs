//! The replication change log gates pull (DESIGN §4).
//!
//! One row per entity `(event_id, kind, entity_key)` holding its latest state: an update takes a
//! new `change_seq` and replaces the row, so a bootstrap from cursor 0 reads each entity once and
//! tombstones (`deleted`) stay until compaction.
//!
//! ## Why a reader never skips a row
//! Sequence numbers come from `change_counters`, one row per event, bumped with
//! `… SET last_seq = last_seq + n RETURNING last_seq` by [`append`], which every writer calls as
//! the **last step before COMMIT**. The row lock taken by that update is held until the
//! transaction ends, so a second writer of the same event waits there until the first commits
//! and then gets the next numbers: per event, sequence order equals commit order. A reader
//! polling `change_seq > cursor` therefore never sees seq N+1 before N is visible (a plain
//! sequence would hand out N to a transaction that commits after N+1). On SQLite writers are
//! serialised by `BEGIN IMMEDIATE` anyway.

use std::collections::HashMap;

use sqlx::FromRow;
use sync_protocol::wire::{Change, ChangeData};
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};
use crate::domain::crypto::PersonalKeys;

/// Kind name and entity key of a change (the primary key within an event).
pub fn entity_of(data: &ChangeData) -> (&'static str, String) {
    match data {
        ChangeData::Ticket(t) => ("ticket", t.serial.to_string()),
        ChangeData::Revocation(r) => ("revocation", r.serial.to_string()),
        ChangeData::SigningKey(k) => ("signing_key", k.key_id.to_string()),
        ChangeData::GateConfig(g) => ("gate_config", g.gate_id.to_string()),
        ChangeData::Presence(p) => ("presence", p.serial.to_string()),
        ChangeData::Barcode(b) => ("barcode", b.key.clone()),
    }
}

/// The stored payload. A ticket's holder (display name, attention note, organisation) is not
/// stored: it is personal data, kept sealed in the participant's row alone, and put back from
/// there when the change is read ([`page`], [`list_after`]).
fn payload_json(data: &ChangeData) -> Result<String, serde_json::Error> {
    match data {
        ChangeData::Ticket(t) => {
            let mut t = t.clone();
            t.display_name = None;
            t.attention = None;
            t.organization = None;
            serde_json::to_string(&t)
        }
        ChangeData::Revocation(r) => serde_json::to_string(r),
        ChangeData::SigningKey(k) => serde_json::to_string(k),
        ChangeData::GateConfig(g) => serde_json::to_string(g),
        ChangeData::Presence(p) => serde_json::to_string(p),
        ChangeData::Barcode(b) => serde_json::to_string(b),
    }
}

/// Appends changes for one event and returns the last `change_seq` assigned (or `None` when
/// `changes` is empty). Call it as the **last** statement of the writing transaction, right
/// before commit: it takes the per-event counter lock that orders commits (see the module docs).
/// Several changes to the same entity in one call collapse to the last one.
pub async fn append(
    tx: &mut Tx,
    event_id: Uuid,
    changes: &[(ChangeData, bool)],
) -> anyhow::Result<Option<u64>> {
    let rows = dedup(changes)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let n = i64::try_from(rows.len())?;
    if let Tx::Postgres(t) = tx
        && rows.len() < super::pgcopy::COPY_MIN_ROWS
    {
        return append_small(t, event_id, &rows, n).await.map(Some);
    }
    let last: i64 = tx_run!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO change_counters (event_id, last_seq) VALUES ($1, $2)
             ON CONFLICT (event_id) DO UPDATE SET last_seq = change_counters.last_seq + $2
             RETURNING last_seq",
        )
        .bind(event_id)
        .bind(n)
        .fetch_one(&mut *c)
        .await?
    });
    let first = last - n + 1;
    match tx {
        Tx::Postgres(t) => {
            let chunk_rows = super::pgcopy::COPY_CHUNK_ROWS;
            for (chunk_no, chunk) in rows.chunks(chunk_rows).enumerate() {
                let base = first + i64::try_from(chunk_no * chunk_rows)?;
                let mut kinds = Vec::with_capacity(chunk.len());
                let mut keys = Vec::with_capacity(chunk.len());
                let mut seqs = Vec::with_capacity(chunk.len());
                let mut deleted = Vec::with_capacity(chunk.len());
                let mut data = Vec::with_capacity(chunk.len());
                for (i, (kind, key, del, json)) in chunk.iter().enumerate() {
                    kinds.push(*kind);
                    keys.push(key.as_str());
                    seqs.push(base + i64::try_from(i)?);
                    deleted.push(*del);
                    data.push(json.as_str());
                }
                // New entities (every ticket of an import) need no upsert, and COPY costs a
                // fraction of `INSERT … ON CONFLICT DO UPDATE`: try it first for bulk chunks and
                // fall back to the upsert when some entity already has a row.
                if chunk.len() >= super::pgcopy::COPY_MIN_ROWS
                    && copy_chunk(t, event_id, chunk, base).await?
                {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO changes (event_id, kind, entity_key, change_seq, deleted, data)
                     SELECT $1, u.kind, u.entity_key, u.change_seq, u.deleted, u.data
                     FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::bool[], $6::text[])
                          AS u(kind, entity_key, change_seq, deleted, data)
                     ON CONFLICT (event_id, kind, entity_key) DO UPDATE
                     SET change_seq = EXCLUDED.change_seq, deleted = EXCLUDED.deleted,
                         data = EXCLUDED.data",
                )
                .bind(event_id)
                .bind(&kinds)
                .bind(&keys)
                .bind(&seqs)
                .bind(&deleted)
                .bind(&data)
                .execute(&mut **t)
                .await?;
            }
        }
        Tx::Sqlite(t) => {
            for (i, (kind, key, del, json)) in rows.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO changes (event_id, kind, entity_key, change_seq, deleted, data)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (event_id, kind, entity_key) DO UPDATE
                     SET change_seq = excluded.change_seq, deleted = excluded.deleted,
                         data = excluded.data",
                )
                .bind(event_id)
                .bind(*kind)
                .bind(key.as_str())
                .bind(first + i64::try_from(i)?)
                .bind(*del)
                .bind(json.as_str())
                .execute(&mut **t)
                .await?;
            }
        }
    }
    notify_head(tx, event_id, last).await?;
    Ok(Some(u64::try_from(last)?))
}

/// Wakes long-polling gates and SSE clients of every server process: a notification sent inside
/// the transaction is delivered exactly when it commits (SQLite has one process; its notifier
/// watches the counters instead, see `live`).
async fn notify_head(tx: &mut Tx, event_id: Uuid, last: i64) -> anyhow::Result<()> {
    if let Tx::Postgres(t) = tx {
        let payload = serde_json::json!({"type": "changes", "event_id": event_id, "head": last});
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::domain::live::CHANNEL)
            .bind(payload.to_string())
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

/// The rows of `changes`, one per entity in first-seen order holding its last state (one
/// statement may not touch a row twice).
fn dedup(
    changes: &[(ChangeData, bool)],
) -> anyhow::Result<Vec<(&'static str, String, bool, String)>> {
    let mut index: HashMap<(&'static str, String), usize> = HashMap::with_capacity(changes.len());
    let mut rows: Vec<(&'static str, String, bool, String)> = Vec::with_capacity(changes.len());
    for (data, deleted) in changes {
        let (kind, key) = entity_of(data);
        let json = payload_json(data)?;
        match index.get(&(kind, key.clone())) {
            Some(&i) => rows[i] = (kind, key, *deleted, json),
            None => {
                index.insert((kind, key.clone()), rows.len());
                rows.push((kind, key, *deleted, json));
            }
        }
    }
    Ok(rows)
}

/// Stages changes of a long transaction in its `TEMP` table instead of the caller's memory; a
/// later [`append_staged`] appends them (with `ord` giving their order; a later state of an
/// entity replaces an earlier one). `ord` continues from the caller's counter.
pub async fn stage(
    tx: &mut Tx,
    changes: &[(ChangeData, bool)],
    ord: &mut i64,
) -> anyhow::Result<()> {
    let rows = dedup(changes)?;
    if rows.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(t) => {
            sqlx::query(
                "CREATE TEMP TABLE IF NOT EXISTS usher_staged_changes (
                     kind TEXT NOT NULL, entity_key TEXT NOT NULL, deleted BOOLEAN NOT NULL,
                     data TEXT NOT NULL, ord BIGINT NOT NULL,
                     PRIMARY KEY (kind, entity_key)) ON COMMIT DROP",
            )
            .execute(&mut **t)
            .await?;
            for chunk in rows.chunks(super::pgcopy::COPY_CHUNK_ROWS) {
                let mut kinds = Vec::with_capacity(chunk.len());
                let mut keys = Vec::with_capacity(chunk.len());
                let mut deleted = Vec::with_capacity(chunk.len());
                let mut data = Vec::with_capacity(chunk.len());
                let mut ords = Vec::with_capacity(chunk.len());
                for (kind, key, del, json) in chunk {
                    *ord += 1;
                    kinds.push(*kind);
                    keys.push(key.as_str());
                    deleted.push(*del);
                    data.push(json.as_str());
                    ords.push(*ord);
                }
                sqlx::query(
                    "INSERT INTO usher_staged_changes (kind, entity_key, deleted, data, ord)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::text[],
                                          $5::int8[])
                     ON CONFLICT (kind, entity_key) DO UPDATE
                     SET deleted = EXCLUDED.deleted, data = EXCLUDED.data, ord = EXCLUDED.ord",
                )
                .bind(&kinds)
                .bind(&keys)
                .bind(&deleted)
                .bind(&data)
                .bind(&ords)
                .execute(&mut **t)
                .await?;
            }
        }
        Tx::Sqlite(t) => {
            sqlx::query(
                "CREATE TEMP TABLE IF NOT EXISTS usher_staged_changes (
                     kind TEXT NOT NULL, entity_key TEXT NOT NULL, deleted INTEGER NOT NULL,
                     data TEXT NOT NULL, ord INTEGER NOT NULL,
                     PRIMARY KEY (kind, entity_key)) WITHOUT ROWID",
            )
            .execute(&mut **t)
            .await?;
            for (kind, key, del, json) in &rows {
                *ord += 1;
                sqlx::query(
                    "INSERT INTO usher_staged_changes (kind, entity_key, deleted, data, ord)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (kind, entity_key) DO UPDATE
                     SET deleted = excluded.deleted, data = excluded.data, ord = excluded.ord",
                )
                .bind(*kind)
                .bind(key.as_str())
                .bind(*del)
                .bind(json.as_str())
                .bind(*ord)
                .execute(&mut **t)
                .await?;
            }
        }
    }
    Ok(())
}

/// Appends the changes [`stage`]d in this transaction (in `ord` order) to the change log of
/// `event_id`, as [`append`] does: last before COMMIT, under the event's counter lock. Returns
/// the last `change_seq` assigned, `None` when nothing was staged.
pub async fn append_staged(tx: &mut Tx, event_id: Uuid) -> anyhow::Result<Option<u64>> {
    let n: i64 = tx_run!(tx, c => {
        sqlx::query_scalar("SELECT count(*) FROM usher_staged_changes")
            .fetch_one(&mut *c)
            .await?
    });
    if n == 0 {
        tx_run!(tx, c => {
            sqlx::query("DROP TABLE usher_staged_changes").execute(&mut *c).await?;
        });
        return Ok(None);
    }
    let last: i64 = tx_run!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO change_counters (event_id, last_seq) VALUES ($1, $2)
             ON CONFLICT (event_id) DO UPDATE SET last_seq = change_counters.last_seq + $2
             RETURNING last_seq",
        )
        .bind(event_id)
        .bind(n)
        .fetch_one(&mut *c)
        .await?
    });
    let first = last - n + 1;
    // `WHERE true` lets SQLite's parser tell the upsert clause from a join constraint.
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO changes (event_id, kind, entity_key, change_seq, deleted, data)
             SELECT $1, kind, entity_key, $2 - 1 + ROW_NUMBER() OVER (ORDER BY ord), deleted,
                    data
             FROM usher_staged_changes WHERE true
             ON CONFLICT (event_id, kind, entity_key) DO UPDATE
             SET change_seq = excluded.change_seq, deleted = excluded.deleted,
                 data = excluded.data",
        )
        .bind(event_id)
        .bind(first)
        .execute(&mut *c)
        .await?;
    });
    tx_run!(tx, c => {
        sqlx::query("DROP TABLE usher_staged_changes").execute(&mut *c).await?;
    });
    notify_head(tx, event_id, last).await?;
    Ok(Some(u64::try_from(last)?))
}

/// [`append`] of a few changes on PostgreSQL: bumps the counter, upserts the rows and sends the
/// `changes` notification in one statement — two round trips fewer for every small writer (an
/// online redeem, a gate edit), inside the section serialised by the counter lock. The counter
/// row is updated (and locked) by the CTE before the first row is inserted; the rows take
/// `last - n + 1 ..= last` in order. The payload is [`crate::domain::live::Live::Changes`] as
/// JSON, built by PostgreSQL. Returns `last`.
async fn append_small(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    event_id: Uuid,
    rows: &[(&'static str, String, bool, String)],
    n: i64,
) -> anyhow::Result<u64> {
    let mut kinds = Vec::with_capacity(rows.len());
    let mut keys = Vec::with_capacity(rows.len());
    let mut deleted = Vec::with_capacity(rows.len());
    let mut data = Vec::with_capacity(rows.len());
    for (kind, key, del, json) in rows {
        kinds.push(*kind);
        keys.push(key.as_str());
        deleted.push(*del);
        data.push(json.as_str());
    }
    let last: Option<i64> = sqlx::query_scalar(
        "WITH counter AS (
             INSERT INTO change_counters (event_id, last_seq) VALUES ($1, $2)
             ON CONFLICT (event_id) DO UPDATE SET last_seq = change_counters.last_seq + $2
             RETURNING last_seq),
         written AS (
             INSERT INTO changes (event_id, kind, entity_key, change_seq, deleted, data)
             SELECT $1, u.kind, u.entity_key, counter.last_seq - $2 + u.ord, u.deleted, u.data
             FROM counter,
                  UNNEST($3::text[], $4::text[], $5::bool[], $6::text[]) WITH ORDINALITY
                      AS u(kind, entity_key, deleted, data, ord)
             ON CONFLICT (event_id, kind, entity_key) DO UPDATE
             SET change_seq = EXCLUDED.change_seq, deleted = EXCLUDED.deleted,
                 data = EXCLUDED.data
             RETURNING 1)
         SELECT counter.last_seq
         FROM counter
         CROSS JOIN LATERAL (SELECT pg_notify($7, json_build_object(
             'type', 'changes', 'event_id', $1::uuid, 'head', counter.last_seq)::text)) AS n
         WHERE (SELECT count(*) FROM written) = $2",
    )
    .bind(event_id)
    .bind(n)
    .bind(&kinds)
    .bind(&keys)
    .bind(&deleted)
    .bind(&data)
    .bind(crate::domain::live::CHANNEL)
    .fetch_optional(&mut **t)
    .await?;
    let last =
        last.ok_or_else(|| anyhow::anyhow!("change log append wrote fewer rows than asked"))?;
    Ok(u64::try_from(last)?)
}

/// COPYs a chunk (seqs from `base`) under a savepoint; `false` (rolled back) when some entity
/// already had a row.
async fn copy_chunk(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    event_id: Uuid,
    chunk: &[(&'static str, String, bool, String)],
    base: i64,
) -> anyhow::Result<bool> {
    sqlx::query("SAVEPOINT changes_chunk")
        .execute(&mut **t)
        .await?;
    let mut copy = super::pgcopy::CopyRows::with_capacity(chunk.len() * 320);
    for (i, (kind, key, del, json)) in chunk.iter().enumerate() {
        copy.uuid(event_id)
            .text(Some(kind))
            .text(Some(key))
            .int(Some(base + i64::try_from(i)?))
            .boolean(*del)
            .text(Some(json));
        copy.end_row();
    }
    let result = super::pgcopy::copy_in(
        t,
        "COPY changes (event_id, kind, entity_key, change_seq, deleted, data) FROM STDIN",
        &copy,
    )
    .await;
    match result {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT changes_chunk")
                .execute(&mut **t)
                .await?;
            Ok(true)
        }
        Err(e) if super::is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT changes_chunk")
                .execute(&mut **t)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Changes of an event with `change_seq > after`, oldest first (what `GET /sync/v1/changes`
/// serves).
pub async fn list_after(
    db: &Db,
    keys: &PersonalKeys,
    event_id: Uuid,
    after: u64,
    limit: u32,
) -> anyhow::Result<Vec<Change>> {
    let after = i64::try_from(after)?;
    let mut rows: Vec<RawChange> = db_run!(db, p => {
        sqlx::query_as(
            "SELECT change_seq, kind, deleted, data FROM changes
             WHERE event_id = $1 AND change_seq > $2 ORDER BY change_seq LIMIT $3",
        )
        .bind(event_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?
    });
    with_holders(db, keys, event_id, &mut rows).await?;
    rows.into_iter()
        .map(|r| {
            let data: serde_json::Value = serde_json::from_str(&r.data)?;
            let data: ChangeData =
                serde_json::from_value(serde_json::json!({"kind": r.kind, "data": data}))?;
            Ok(Change {
                change_seq: u64::try_from(r.change_seq)?,
                deleted: r.deleted,
                data,
            })
        })
        .collect()
}

/// The last sequence number handed out for an event (0 when none).
/// Every event's change-log head (the SQLite live feed polls this).
pub async fn heads(db: &Db) -> sqlx::Result<Vec<(Uuid, u64)>> {
    let rows: Vec<(Uuid, i64)> = db_run!(db, p => {
        sqlx::query_as("SELECT event_id, last_seq FROM change_counters")
            .fetch_all(p)
            .await?
    });
    Ok(rows
        .into_iter()
        .map(|(e, h)| (e, u64::try_from(h).unwrap_or(0)))
        .collect())
}

pub async fn head(db: &Db, event_id: Uuid) -> sqlx::Result<u64> {
    let last: Option<i64> = db_run!(db, p => {
        sqlx::query_scalar("SELECT last_seq FROM change_counters WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(p)
            .await?
    });
    Ok(last.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

/// [`head`] inside a transaction.
pub async fn head_tx(tx: &mut Tx, event_id: Uuid) -> anyhow::Result<u64> {
    let last: Option<i64> = tx_run!(tx, c => {
        sqlx::query_scalar("SELECT last_seq FROM change_counters WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(last.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

/// A stored change as the pull sends it.
#[derive(Debug, FromRow)]
pub struct RawChange {
    pub change_seq: i64,
    pub kind: String,
    pub deleted: bool,
    /// The payload as JSON text.
    pub data: String,
}

/// Up to `limit + 1` changes of the event after `after` (the extra one says there are more).
pub async fn page(
    db: &Db,
    keys: &PersonalKeys,
    event_id: Uuid,
    after: u64,
    limit: u32,
) -> anyhow::Result<Vec<RawChange>> {
    let after = i64::try_from(after)?;
    let mut rows: Vec<RawChange> = db_run!(db, p => {
        sqlx::query_as(
            "SELECT change_seq, kind, deleted, data FROM changes
             WHERE event_id = $1 AND change_seq > $2 ORDER BY change_seq LIMIT $3",
        )
        .bind(event_id)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(p)
        .await?
    });
    with_holders(db, keys, event_id, &mut rows).await?;
    Ok(rows)
}

#[derive(FromRow)]
struct HolderRow {
    serial: i64,
    id: Uuid,
    name: Option<String>,
    attention: Option<String>,
    organization: Option<String>,
    pd_version: Option<i64>,
}

/// Puts each ticket change's holder (as the participant's row has it now, decrypted) back
/// into its payload.
async fn with_holders(
    db: &Db,
    keys: &PersonalKeys,
    event_id: Uuid,
    rows: &mut [RawChange],
) -> anyhow::Result<()> {
    let serials: Vec<i64> = rows
        .iter()
        .filter(|r| r.kind == "ticket" && !r.deleted)
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.data).ok()?;
            v.get("serial")?.as_i64()
        })
        .collect();
    if serials.is_empty() {
        return Ok(());
    }
    const SELECT: &str = "SELECT t.serial, p.id, p.name, p.attention, p.organization, p.pd_version
         FROM tickets t
         JOIN participants p ON p.event_id = t.event_id AND p.id = t.participant_id";
    let holders: Vec<HolderRow> =
        match db {
            Db::Postgres(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT} WHERE t.event_id = $1 AND t.serial = ANY($2)"
                )))
                .bind(event_id)
                .bind(&serials)
                .fetch_all(p)
                .await?
            }
            Db::Sqlite(p) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SELECT} WHERE t.event_id = $1 AND t.serial IN (SELECT value FROM json_each($2))"
            )))
            .bind(event_id)
            .bind(serde_json::to_string(&serials)?)
            .fetch_all(p)
            .await?,
        };
    let mut by_serial: HashMap<i64, HolderRow> = HashMap::with_capacity(holders.len());
    for h in holders {
        by_serial.insert(h.serial, h);
    }
    for r in rows.iter_mut().filter(|r| r.kind == "ticket" && !r.deleted) {
        let mut v: serde_json::Value = serde_json::from_str(&r.data)?;
        let Some(h) = v
            .get("serial")
            .and_then(serde_json::Value::as_i64)
            .and_then(|s| by_serial.get(&s))
        else {
            continue;
        };
        let o = |column: &str, value: &Option<String>| {
            super::personal::open(keys, h.id, h.pd_version, column, value.clone())
        };
        if let Some(m) = v.as_object_mut() {
            m.insert("display_name".into(), o("name", &h.name)?.into());
            m.insert("attention".into(), o("attention", &h.attention)?.into());
            m.insert(
                "organization".into(),
                o("organization", &h.organization)?.into(),
            );
        }
        r.data = serde_json::to_string(&v)?;
    }
    Ok(())
}
