//! Importing participants from CSV: the use case behind `POST
//! /api/v1/events/{event}/participants/import`.
//!
//! The input is any blocking reader (the HTTP body through a bridge, a file). It is parsed by
//! [`ParticipantCsv`] on a blocking thread, which hands rows in batches of [`BATCH`] over a
//! bounded channel to the writer, which writes them inside **one** transaction (PostgreSQL:
//! `UNNEST` bulk statements). Parsing and writing overlap, memory stays bounded by the channel,
//! and all-or-nothing is a plain rollback.
//!
//! Matching (upsert) is against the participants that existed before the upload; rows of one
//! file never merge into each other (a repeated key is a row error). A row with an
//! `external_id` updates the participant with that id; else a row with an e-mail updates the
//! oldest participant with that (case-insensitive) e-mail whose external id is empty or equal;
//! else it creates a participant. An empty cell (or a missing column) keeps the stored value, so
//! a narrower export never wipes data; `metadata` keys are merged. New participants get a ticket
//! unless `issue_tickets` is false; existing participants keep theirs (a renamed holder is
//! replicated to the gates).
//!
//! Options: `dry_run` reports what would happen and writes nothing; `partial` writes the valid
//! rows even when some rows have errors.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use serde_json::{Map, Value};
use sync_protocol::wire::ChangeData;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::domain::auth::Actor;
use crate::domain::webhook;
use crate::domain::{Error, FieldError};
use crate::import::{DuplicateTracker, ImportRow, ParticipantCsv, RowError};
use crate::service::AppState;
use crate::service::tickets::{self as issuing, EventKeys, Holder, new_ticket};
use crate::service::uow::UnitOfWork;
use crate::service::webhooks;
use crate::store::participants::{MatchRow, NewParticipant, ParticipantFields};
use crate::store::tickets::{SerialSource, TicketRow};
use crate::store::{self, Tx, now_ms};

/// Rows per batch handed from the parser to the writer (and per bulk statement). Large on
/// purpose: sqlx does not set TCP_NODELAY, and a statement of roughly 16–150 KB then waits
/// ~40 ms for a delayed ACK; 5,000-row statements are well past that window (see the benchmark).
pub const BATCH: usize = 5_000;
/// At most this many row errors are returned.
pub const MAX_ERRORS: usize = 1_000;

/// How to import.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Report what would happen; write nothing.
    pub dry_run: bool,
    /// Write the valid rows even if others have errors.
    pub partial: bool,
    /// Issue tickets for new participants.
    pub issue_tickets: bool,
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug)]
pub struct ImportOutcome {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// The first [`MAX_ERRORS`] row errors (partial imports).
    pub errors: Vec<RowError>,
    pub dry_run: bool,
    /// Tickets issued for new participants.
    pub tickets_issued: u64,
}

enum Msg {
    Batch(Vec<Result<ImportRow, RowError>>),
    Fatal(crate::import::ImportError),
    Done { aborted: bool },
}

/// Imports participants of `event_id` from the CSV that `reader` yields (see the module
/// documentation). Row errors without `partial` (or an upload that could not be read to the
/// end) are an [`Error::Validation`] listing them, and nothing is written.
pub async fn import_csv<R>(
    state: &AppState,
    actor: &Actor,
    event_id: Uuid,
    options: ImportOptions,
    reader: R,
) -> Result<ImportOutcome, Error>
where
    R: Read + Send + 'static,
{
    let event = store::events::require(&state.db, event_id).await?;
    crate::domain::event::require_registrations(crate::domain::event::EventStatus::parse(
        &event.status,
    )?)?;
    let keys = EventKeys::load(&state.db, &state.master, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let issue_tickets = options.issue_tickets;

    // Parser thread: reader → CSV rows, in batches.
    let (sender, mut receiver) = mpsc::channel::<Msg>(4);
    let parser = tokio::task::spawn_blocking(move || {
        let mut csv = match ParticipantCsv::new(reader) {
            Ok(csv) => csv,
            Err(e) => {
                let _ = sender.blocking_send(Msg::Fatal(e));
                return;
            }
        };
        let mut seen = DuplicateTracker::new();
        let mut batch = Vec::with_capacity(BATCH);
        for item in csv.by_ref() {
            batch.push(item.and_then(|row| seen.check(row)));
            if batch.len() == BATCH
                && sender
                    .blocking_send(Msg::Batch(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(BATCH),
                    )))
                    .is_err()
            {
                return;
            }
        }
        if !batch.is_empty() && sender.blocking_send(Msg::Batch(batch)).is_err() {
            return;
        }
        let _ = sender.blocking_send(Msg::Done {
            aborted: csv.aborted(),
        });
    });

    let mut writer = Writer {
        event: &event,
        keys: &keys,
        event_id,
        write: !options.dry_run,
        issue_tickets,
        now: now_ms(),
        created: 0,
        updated: 0,
        unchanged: 0,
        tickets: 0,
        errors: Vec::new(),
        error_count: 0,
        changes: Vec::new(),
        touched: HashMap::new(),
        serials: None,
        lookups: true,
        created_ids: HashSet::new(),
        pending_participants: Vec::new(),
        pending_tickets: Vec::new(),
        hook_created: false,
        hook_updated: false,
        messages: Vec::new(),
    };
    if !options.dry_run && issue_tickets {
        writer.serials = Some(SerialSource::open(&state.db).await?);
    }
    let mut uow = UnitOfWork::begin(&state.db).await?;
    // An empty event (the usual first import) has nothing to match: skip the lookups.
    writer.lookups = store::participants::any(uow.tx(), event_id).await?;
    if writer.write {
        writer.hook_created = uow
            .wants_webhook(event_id, webhook::PARTICIPANT_CREATED)
            .await?;
        writer.hook_updated = uow
            .wants_webhook(event_id, webhook::PARTICIPANT_UPDATED)
            .await?;
    }
    let mut aborted = true;
    while let Some(msg) = receiver.recv().await {
        match msg {
            Msg::Batch(items) => {
                let mut good = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Ok(row) => good.push(row),
                        Err(e) => writer.error(e),
                    }
                }
                // All-or-nothing: after the first error only keep collecting errors.
                if writer.error_count == 0 || options.partial {
                    writer.batch(uow.tx(), good).await?;
                }
            }
            Msg::Fatal(e) => {
                drop(uow);
                let _ = parser.await;
                let row = e.to_row_error();
                return Err(Error::Validation {
                    detail: format!("{e}; nothing was imported"),
                    field: Some(row.field.clone()),
                    errors: vec![FieldError {
                        line: Some(row.line),
                        field: row.field,
                        message: row.message,
                    }],
                });
            }
            Msg::Done { aborted: a } => aborted = a,
        }
    }
    parser.await.map_err(|e| Error::Internal(e.into()))?;
    if let Some(serials) = writer.serials.take() {
        serials.close().await;
    }

    // A truncated upload is never committed, not even in partial mode.
    if writer.error_count > 0 && (!options.partial || aborted) {
        uow.rollback().await?;
        let n = writer.error_count;
        let errors = writer
            .errors
            .into_iter()
            .map(|e| FieldError {
                line: Some(e.line),
                field: e.field,
                message: e.message,
            })
            .collect::<Vec<_>>();
        let detail = if aborted {
            "the upload could not be read to the end; nothing was imported".to_owned()
        } else {
            format!(
                "{n} row(s) have errors; nothing was imported. Fix them, or re-send with \
                 ?partial=true to import the valid rows"
            )
        };
        return Err(Error::Validation {
            field: errors.first().map(|e| e.field.clone()),
            detail,
            errors,
        });
    }
    if options.dry_run {
        uow.rollback().await?;
        return Ok(ImportOutcome {
            created: writer.created,
            updated: writer.updated,
            unchanged: writer.unchanged,
            errors: writer.errors,
            dry_run: true,
            tickets_issued: writer.tickets,
        });
    }
    writer.flush(uow.tx()).await?;
    let outcome = ImportOutcome {
        created: writer.created,
        updated: writer.updated,
        unchanged: writer.unchanged,
        errors: std::mem::take(&mut writer.errors),
        dry_run: false,
        tickets_issued: writer.tickets,
    };
    store::audit::record(
        uow.tx(),
        actor,
        "participant.import",
        Some(event_id),
        None,
        serde_json::json!({
            "created": outcome.created, "updated": outcome.updated,
            "unchanged": outcome.unchanged, "errors": writer.error_count,
            "partial": options.partial, "tickets": outcome.tickets_issued,
        }),
    )
    .await?;
    for (event_type, data) in std::mem::take(&mut writer.messages) {
        uow.webhook(event_id, event_type, data);
    }
    let changes = std::mem::take(&mut writer.changes);
    uow.changes(event_id, changes)?;
    uow.commit(&state.notifier).await?;
    metrics::counter!("usher_import_rows_total").increment(outcome.created + outcome.updated);
    metrics::counter!("usher_tickets_issued_total").increment(outcome.tickets_issued);
    tracing::info!(
        event.id = %event_id,
        created = outcome.created,
        updated = outcome.updated,
        unchanged = outcome.unchanged,
        "import committed"
    );
    Ok(outcome)
}

/// State of one import across batches.
struct Writer<'a> {
    event: &'a store::events::EventRow,
    keys: &'a EventKeys,
    event_id: Uuid,
    write: bool,
    issue_tickets: bool,
    now: i64,
    created: u64,
    updated: u64,
    unchanged: u64,
    tickets: u64,
    errors: Vec<RowError>,
    error_count: usize,
    /// Ticket changes to append at the end (the change log is written last, see
    /// [`store::changes::append`]).
    changes: Vec<(ChangeData, bool)>,
    /// Participant → the line that matched it, so two rows cannot update one participant.
    touched: HashMap<Uuid, u64>,
    /// Where ticket serials come from while the transaction is open.
    serials: Option<SerialSource>,
    /// Whether the event had participants before the import (else nothing can match).
    lookups: bool,
    /// Participants created by this import, which later rows must not match.
    created_ids: HashSet<Uuid>,
    /// New participants and their tickets not written yet (written in large groups: each COPY
    /// may pay a delayed-ACK wait, see [`store::pgcopy`]).
    pending_participants: Vec<NewParticipant>,
    pending_tickets: Vec<TicketRow>,
    /// Whether endpoints subscribe to created / updated participants, and their messages.
    hook_created: bool,
    hook_updated: bool,
    messages: Vec<(&'static str, Value)>,
}

/// Stored fields overlaid with the non-empty cells of a row.
fn merged(existing: &MatchRow, row: &ImportRow) -> ParticipantFields {
    let mut metadata: Map<String, Value> =
        serde_json::from_str(&existing.metadata).unwrap_or_default();
    for (k, v) in &row.metadata {
        metadata.insert(k.clone(), v.clone());
    }
    let pick = |new: &Option<String>, old: &Option<String>| new.clone().or_else(|| old.clone());
    ParticipantFields {
        external_id: pick(&row.external_id, &existing.external_id),
        name: row.name.clone(),
        email: pick(&row.email, &existing.email),
        phone: pick(&row.phone, &existing.phone),
        organization: pick(&row.organization, &existing.organization),
        attention: pick(&row.attention, &existing.attention),
        ticket_type: pick(&row.ticket_type, &existing.ticket_type),
        metadata: serde_json::to_string(&metadata).unwrap_or_else(|_| "{}".into()),
    }
}

fn current(existing: &MatchRow) -> ParticipantFields {
    ParticipantFields {
        external_id: existing.external_id.clone(),
        name: existing.name.clone().unwrap_or_default(),
        email: existing.email.clone(),
        phone: existing.phone.clone(),
        organization: existing.organization.clone(),
        attention: existing.attention.clone(),
        ticket_type: existing.ticket_type.clone(),
        metadata: existing.metadata.clone(),
    }
}

/// Metadata text compared by value (key order in stored JSON may differ).
fn same_fields(a: &ParticipantFields, b: &ParticipantFields) -> bool {
    let meta = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    a.external_id == b.external_id
        && a.name == b.name
        && a.email == b.email
        && a.phone == b.phone
        && a.organization == b.organization
        && a.attention == b.attention
        && a.ticket_type == b.ticket_type
        && meta(&a.metadata) == meta(&b.metadata)
}

impl Writer<'_> {
    fn error(&mut self, e: RowError) {
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        }
    }

    /// Writes the pending new participants and tickets, and queues their ticket changes (after
    /// the insert: a short-code clash may have changed a code).
    async fn flush(&mut self, tx: &mut Tx) -> Result<(), Error> {
        let participants = std::mem::take(&mut self.pending_participants);
        let mut tickets = std::mem::take(&mut self.pending_tickets);
        store::participants::insert_many(tx, self.event_id, self.now, &participants).await?;
        issuing::insert_with_retry(tx, self.event_id, &mut tickets).await?;
        self.tickets += tickets.len() as u64;
        if self.hook_created {
            for p in &participants {
                self.messages.push((
                    webhook::PARTICIPANT_CREATED,
                    webhooks::participant_data(self.event_id, p.id, &p.fields, p.ticket_serial),
                ));
            }
        }
        let holders: HashMap<i64, &NewParticipant> = participants
            .iter()
            .filter_map(|p| p.ticket_serial.map(|s| (s, p)))
            .collect();
        for t in &tickets {
            let holder = holders.get(&t.serial);
            self.changes.push((
                self.keys.ticket_change(
                    t,
                    holder
                        .map(|p| Holder::of_fields(&p.fields))
                        .unwrap_or_default(),
                )?,
                false,
            ));
        }
        Ok(())
    }

    async fn batch(&mut self, tx: &mut Tx, rows: Vec<ImportRow>) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let external_ids: Vec<String> = rows.iter().filter_map(|r| r.external_id.clone()).collect();
        let email_keys: Vec<String> = rows
            .iter()
            .filter_map(|r| store::participants::email_key(r.email.as_deref()))
            .collect();
        let mut found = if self.lookups {
            store::participants::find_by_keys(tx, self.event_id, &external_ids, &email_keys).await?
        } else {
            Vec::new()
        };
        found.retain(|m| !self.created_ids.contains(&m.id));
        let mut by_external: HashMap<&str, &MatchRow> = HashMap::new();
        let mut by_email: HashMap<&str, Vec<&MatchRow>> = HashMap::new();
        for m in &found {
            if let Some(x) = &m.external_id {
                by_external.insert(x.as_str(), m);
            }
            if let Some(e) = &m.email_key {
                by_email.entry(e.as_str()).or_default().push(m);
            }
        }

        let mut inserts: Vec<(ParticipantFields, u64)> = Vec::new();
        let mut updates: Vec<(Uuid, ParticipantFields)> = Vec::new();
        let mut renamed: Vec<(i64, Holder)> = Vec::new();
        for row in rows {
            let email_key = store::participants::email_key(row.email.as_deref());
            let matched = row
                .external_id
                .as_deref()
                .and_then(|x| by_external.get(x).copied())
                .or_else(|| {
                    let candidates = by_email.get(email_key.as_deref()?)?;
                    candidates.iter().copied().find(|m| {
                        m.external_id.is_none()
                            || row.external_id.is_none()
                            || m.external_id == row.external_id
                    })
                });
            let Some(existing) = matched else {
                inserts.push((
                    ParticipantFields {
                        external_id: row.external_id.clone(),
                        name: row.name.clone(),
                        email: row.email.clone(),
                        phone: row.phone.clone(),
                        organization: row.organization.clone(),
                        attention: row.attention.clone(),
                        ticket_type: row.ticket_type.clone(),
                        metadata: serde_json::to_string(&row.metadata)
                            .map_err(anyhow::Error::from)?,
                    },
                    row.line,
                ));
                continue;
            };
            if let Some(first) = self.touched.insert(existing.id, row.line) {
                self.error(RowError {
                    line: row.line,
                    field: if row.external_id.is_some() {
                        "external_id"
                    } else {
                        "email"
                    }
                    .to_owned(),
                    message: format!("matches the same participant as line {first}"),
                });
                continue;
            }
            let new = merged(existing, &row);
            if same_fields(&new, &current(existing)) {
                self.unchanged += 1;
                continue;
            }
            if let Some(serial) = existing.ticket_serial
                && (existing.name.as_deref() != Some(new.name.as_str())
                    || existing.attention != new.attention
                    || existing.organization != new.organization
                    || existing.ticket_type != new.ticket_type)
            {
                renamed.push((serial, Holder::of_fields(&new)));
            }
            self.updated += 1;
            updates.push((existing.id, new));
        }
        self.created += inserts.len() as u64;
        if !self.write {
            if self.issue_tickets {
                self.tickets += inserts.len() as u64;
            }
            return Ok(());
        }

        // New participants and their tickets, written in large groups (see `flush`).
        let mut next_serial = match &mut self.serials {
            Some(source) if self.issue_tickets && !inserts.is_empty() => {
                let n = i64::try_from(inserts.len()).map_err(anyhow::Error::from)?;
                source.allocate(tx, self.event_id, n).await?
            }
            _ => 0,
        };
        for (fields, _line) in inserts {
            let id = Uuid::now_v7();
            let serial = if self.issue_tickets {
                let t = new_ticket(self.keys, self.event, id, next_serial, 1, self.now)?;
                next_serial += 1;
                let s = t.serial;
                self.pending_tickets.push(t);
                Some(s)
            } else {
                None
            };
            if self.lookups {
                self.created_ids.insert(id);
            }
            self.pending_participants.push(NewParticipant {
                id,
                fields,
                ticket_serial: serial,
            });
        }
        if self.pending_participants.len() >= store::pgcopy::COPY_CHUNK_ROWS {
            self.flush(tx).await?;
        }
        store::participants::update_many(tx, self.event_id, self.now, &updates).await?;
        if self.hook_updated && !updates.is_empty() {
            let serials: HashMap<Uuid, Option<i64>> =
                found.iter().map(|m| (m.id, m.ticket_serial)).collect();
            for (id, fields) in &updates {
                let serial = serials.get(id).copied().flatten();
                self.messages.push((
                    webhook::PARTICIPANT_UPDATED,
                    webhooks::participant_data(self.event_id, *id, fields, serial),
                ));
            }
        }

        // Renamed holders of existing tickets: replicate the new display name.
        if !renamed.is_empty() {
            let serials: Vec<i64> = renamed.iter().map(|r| r.0).collect();
            let rows: HashMap<i64, TicketRow> =
                store::tickets::get_many(tx, self.event_id, &serials)
                    .await?
                    .into_iter()
                    .map(|t| (t.serial, t))
                    .collect();
            let mut seen = HashSet::new();
            for (serial, holder) in renamed {
                if let Some(t) = rows.get(&serial)
                    && seen.insert(serial)
                {
                    self.changes
                        .push((self.keys.ticket_change(t, holder)?, false));
                }
            }
        }
        Ok(())
    }
}
