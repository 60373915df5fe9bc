//! Importing participants from CSV: the use case behind `POST
//! /api/v1/events/{event}/participants/import`.
//!
//! The input is any blocking reader (the HTTP body through a bridge, a file). It is parsed by
//! [`ParticipantCsv`] on a blocking thread, which hands rows in batches of [`BATCH`] over a
//! bounded channel to the writer, which writes them inside **one** transaction (PostgreSQL:
//! `UNNEST` bulk statements). Parsing and writing overlap, and all-or-nothing is a plain
//! rollback.
//!
//! Memory does not grow with the file: the keys every row is checked against (external IDs and
//! e-mails of earlier rows, participants created or matched by earlier rows) live in the
//! transaction's scratch table ([`store::scratch`]), and the replication changes and webhook
//! deliveries are spilled between batches ([`UnitOfWork::spill`]).
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
//! The shop's facts: a row's barcode becomes an extra credential of the participant's ticket
//! (stored and replicated by its keyed lookup key, [`sync_protocol::barcode`]); a row the shop
//! marks void (cancelled, refunded, not attending) gets, or turns its ticket into, a revoked
//! ticket, counted in [`ImportOutcome::cancelled`].
//!
//! Options: `dry_run` reports what would happen and writes nothing; `partial` writes the valid
//! rows even when some rows have errors.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use serde_json::{Map, Value};
use sync_protocol::wire::{BarcodeChange, ChangeData};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::domain::auth::Actor;
use crate::domain::webhook;
use crate::domain::{Error, FieldError};
use crate::import::{DuplicateTracker, ImportRow, KeyKind, ParticipantCsv, RowError};
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
    /// Rows the shop marks void: their tickets are (or are issued) revoked.
    pub cancelled: u64,
    /// Shop barcodes stored or moved.
    pub barcodes: u64,
}

/// Why an import revokes a ticket.
pub const CANCELLED_REASON: &str = "cancelled in the ticket shop's export";

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
        let mut batch = Vec::with_capacity(BATCH);
        for item in csv.by_ref() {
            batch.push(item);
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
        settings: crate::domain::event::EventSettings::parse(&event.settings)?,
        keys: &keys,
        personal: state.master.personal(),
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
        cancelled: 0,
        barcodes: 0,
        hlc: state.hlc_now(),
        pending_shop: Vec::new(),
        unspilled: 0,
        serials: None,
        lookups: true,
        pending_participants: Vec::new(),
        pending_tickets: Vec::new(),
        hook_created: false,
        hook_updated: false,
    };
    if !options.dry_run && issue_tickets {
        writer.serials = Some(SerialSource::open(&state.db).await?);
    }
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    store::scratch::open(uow.tx()).await?;
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
                let good = writer.check_duplicates(uow.tx(), items).await?;
                // All-or-nothing: after the first error only keep collecting errors.
                if writer.error_count == 0 || options.partial {
                    writer.batch(&mut uow, good).await?;
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
            cancelled: writer.cancelled,
            barcodes: writer.barcodes,
        });
    }
    writer.flush(&mut uow).await?;
    store::scratch::close(uow.tx()).await?;
    let outcome = ImportOutcome {
        created: writer.created,
        updated: writer.updated,
        unchanged: writer.unchanged,
        errors: std::mem::take(&mut writer.errors),
        dry_run: false,
        tickets_issued: writer.tickets,
        cancelled: writer.cancelled,
        barcodes: writer.barcodes,
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
            "cancelled": outcome.cancelled, "barcodes": outcome.barcodes,
        }),
    )
    .await?;
    uow.commit(&state.notifier).await?;
    if outcome.created >= ANALYZE_AFTER {
        // Without fresh statistics PostgreSQL plans the first pages of a freshly imported event
        // as if it held a few hundred rows: it joins and sorts all of them for every page.
        if let Err(e) = store::refresh_statistics(&state.db).await {
            tracing::warn!(error = %e, "could not refresh the planner statistics after an import");
        }
    }
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

/// From this many new participants an import refreshes the planner's statistics.
const ANALYZE_AFTER: u64 = 1_000;

/// State of one import across batches.
struct Writer<'a> {
    event: &'a store::events::EventRow,
    /// The event's settings: which zones a ticket type's new tickets open.
    settings: crate::domain::event::EventSettings,
    keys: &'a EventKeys,
    /// Seals the participants' personal data.
    personal: &'a crate::domain::crypto::PersonalKeys,
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
    cancelled: u64,
    barcodes: u64,
    /// The server clock of the import's revocations.
    hlc: sync_protocol::Hlc,
    /// The shop's facts of the pending new participants' tickets.
    pending_shop: Vec<ShopFacts>,
    /// Changes and webhook messages recorded in the unit of work since it last spilled.
    unspilled: usize,
    /// Where ticket serials come from while the transaction is open.
    serials: Option<SerialSource>,
    /// Whether the event had participants before the import (else nothing can match).
    lookups: bool,
    /// New participants and their tickets not written yet (written in large groups: each COPY
    /// may pay a delayed-ACK wait, see [`store::pgcopy`]).
    pending_participants: Vec<NewParticipant>,
    pending_tickets: Vec<TicketRow>,
    /// Whether endpoints subscribe to created / updated participants, and their messages.
    hook_created: bool,
    hook_updated: bool,
}

/// A row's barcode and void status, for the ticket `serial`.
struct ShopFacts {
    serial: i64,
    barcode: Option<String>,
    cancelled: bool,
}

/// Scratch-table kinds of the keys an import remembers besides the rows' own keys: the
/// participants it created (which later rows must not match) and the existing participants it
/// matched (so two rows cannot update one participant).
const CREATED: &str = "created";
const TOUCHED: &str = "touched";

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

    /// Spills the unit of work once it holds a batch's worth of changes and messages.
    async fn maybe_spill(&mut self, uow: &mut UnitOfWork) -> Result<(), Error> {
        if self.unspilled >= BATCH {
            uow.spill().await?;
            self.unspilled = 0;
        }
        Ok(())
    }

    /// Fails the rows of `items` that repeat a key of an earlier row of the file (by the
    /// [`DuplicateTracker`] rule, against the keys in the scratch table), records every error,
    /// and returns the good rows.
    async fn check_duplicates(
        &mut self,
        tx: &mut Tx,
        items: Vec<Result<ImportRow, RowError>>,
    ) -> Result<Vec<ImportRow>, Error> {
        let keys: Vec<(KeyKind, String)> = items
            .iter()
            .filter_map(|item| item.as_ref().ok())
            .flat_map(DuplicateTracker::keys_of)
            .collect();
        // The scratch table lives in a temporary file on SQLite: an e-mail goes there as its
        // keyed hash, never as text.
        let stored: Vec<String> = keys
            .iter()
            .map(|(kind, key)| self.scratch_key(*kind, key))
            .collect();
        let lookup: Vec<(&str, &str)> = keys
            .iter()
            .zip(&stored)
            .map(|((k, _), v)| (k.as_str(), v.as_str()))
            .collect();
        let known = store::scratch::lookup(tx, &lookup).await?;
        let known = keys.iter().zip(&stored).filter_map(|((kind, key), s)| {
            let line = known.get(&(kind.as_str().to_owned(), s.clone()))?;
            Some((*kind, key.clone(), u64::try_from(*line).ok()?))
        });
        let mut tracker = DuplicateTracker::seeded(known.collect::<Vec<_>>());
        let mut good = Vec::with_capacity(items.len());
        for item in items {
            match item.and_then(|row| tracker.check(row)) {
                Ok(row) => good.push(row),
                Err(e) => self.error(e),
            }
        }
        let added: Vec<(KeyKind, String, u64)> = tracker
            .take_added()
            .into_iter()
            .map(|(kind, key, line)| (kind, self.scratch_key(kind, &key), line))
            .collect();
        let remember = added
            .iter()
            .map(|(kind, key, line)| Ok((kind.as_str(), key.as_str(), i64::try_from(*line)?)))
            .collect::<Result<Vec<_>, std::num::TryFromIntError>>()
            .map_err(anyhow::Error::from)?;
        store::scratch::remember(tx, &remember).await?;
        Ok(good)
    }

    /// How a row's key is held in the scratch table: an e-mail (personal data) by its keyed
    /// blind hash, an external id as it is.
    fn scratch_key(&self, kind: KeyKind, key: &str) -> String {
        match kind {
            KeyKind::Email => hex::encode(self.personal.blind(
                b"usher-import-scratch-email",
                self.event_id,
                key,
            )),
            KeyKind::ExternalId => key.to_owned(),
        }
    }

    /// Writes the pending new participants and tickets, and queues their ticket changes (after
    /// the insert: a short-code clash may have changed a code).
    async fn flush(&mut self, uow: &mut UnitOfWork) -> Result<(), Error> {
        let participants = std::mem::take(&mut self.pending_participants);
        let mut tickets = std::mem::take(&mut self.pending_tickets);
        let tx = uow.tx();
        store::participants::insert_many(tx, self.personal, self.event_id, self.now, &participants)
            .await?;
        issuing::insert_with_retry(tx, self.event_id, &mut tickets).await?;
        self.tickets += tickets.len() as u64;
        let shop = std::mem::take(&mut self.pending_shop);
        let revoked = self.apply_shop_facts(uow, &shop).await?;
        for t in &mut tickets {
            if revoked.contains(&t.serial) {
                t.status = sync_protocol::wire::TicketStatus::Revoked.as_str().into();
            }
        }
        if self.hook_created {
            for p in &participants {
                uow.webhook(
                    self.event_id,
                    webhook::PARTICIPANT_CREATED,
                    webhooks::participant_data(self.event_id, p.id, &p.fields, p.ticket_serial),
                );
            }
            self.unspilled += participants.len();
        }
        let holders: HashMap<i64, &NewParticipant> = participants
            .iter()
            .filter_map(|p| p.ticket_serial.map(|s| (s, p)))
            .collect();
        let mut changes = Vec::with_capacity(tickets.len());
        for t in &tickets {
            let holder = holders.get(&t.serial);
            changes.push((
                self.keys.ticket_change(
                    t,
                    holder
                        .map(|p| Holder::of_fields(&p.fields))
                        .unwrap_or_default(),
                )?,
                false,
            ));
        }
        self.unspilled += changes.len();
        uow.changes(self.event_id, changes)?;
        self.maybe_spill(uow).await
    }

    /// Stores the barcodes of `facts` (with their changes) and revokes the tickets of the void
    /// ones; returns the serials it revoked.
    async fn apply_shop_facts(
        &mut self,
        uow: &mut UnitOfWork,
        facts: &[ShopFacts],
    ) -> Result<HashSet<i64>, Error> {
        let mut revoked = HashSet::new();
        if facts.is_empty() {
            return Ok(revoked);
        }
        let wanted: Vec<(String, i64)> = facts
            .iter()
            .filter_map(|f| {
                let code = f.barcode.as_deref()?;
                Some((
                    sync_protocol::barcode::lookup_key(&self.keys.barcode_key, code),
                    f.serial,
                ))
            })
            .collect();
        let keys: Vec<String> = wanted.iter().map(|(k, _)| k.clone()).collect();
        let known = store::barcodes::serials_of(uow.tx(), self.event_id, &keys).await?;
        let moved: Vec<(String, i64)> = wanted
            .into_iter()
            .filter(|(k, s)| known.get(k) != Some(s))
            .collect();
        store::barcodes::upsert(uow.tx(), self.event_id, &moved).await?;
        self.barcodes += moved.len() as u64;
        let mut changes = Vec::with_capacity(moved.len());
        for (key, serial) in moved {
            changes.push((
                ChangeData::Barcode(BarcodeChange {
                    key,
                    serial: u64::try_from(serial).map_err(anyhow::Error::from)?,
                }),
                false,
            ));
        }
        for f in facts.iter().filter(|f| f.cancelled) {
            if store::tickets::revoke(
                uow.tx(),
                self.event_id,
                f.serial,
                CANCELLED_REASON,
                self.now,
            )
            .await?
            {
                revoked.insert(f.serial);
                changes.push((
                    issuing::revocation_change(f.serial, self.hlc, CANCELLED_REASON)?,
                    false,
                ));
            }
        }
        self.unspilled += changes.len();
        uow.changes(self.event_id, changes)?;
        Ok(revoked)
    }

    /// [`Self::apply_shop_facts`] for existing participants' tickets, replicating the revoked
    /// tickets' new status with the holder's name and note.
    async fn apply_existing_shop_facts(
        &mut self,
        uow: &mut UnitOfWork,
        facts: Vec<(ShopFacts, Holder)>,
    ) -> Result<(), Error> {
        let (facts, holders): (Vec<ShopFacts>, Vec<Holder>) = facts.into_iter().unzip();
        let revoked = self.apply_shop_facts(uow, &facts).await?;
        if revoked.is_empty() {
            return Ok(());
        }
        let serials: Vec<i64> = revoked.iter().copied().collect();
        let rows = store::tickets::get_many(uow.tx(), self.event_id, &serials).await?;
        let holder: HashMap<i64, &Holder> = facts
            .iter()
            .zip(&holders)
            .map(|(f, h)| (f.serial, h))
            .collect();
        let mut changes = Vec::with_capacity(rows.len());
        for t in &rows {
            let holder = holder
                .get(&t.serial)
                .map(|h| (*h).clone())
                .unwrap_or_default();
            changes.push((self.keys.ticket_change(t, holder)?, false));
        }
        self.unspilled += changes.len();
        uow.changes(self.event_id, changes)?;
        Ok(())
    }

    async fn batch(&mut self, uow: &mut UnitOfWork, rows: Vec<ImportRow>) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let tx = uow.tx();
        let external_ids: Vec<String> = rows.iter().filter_map(|r| r.external_id.clone()).collect();
        let email_keys: Vec<String> = rows
            .iter()
            .filter_map(|r| store::participants::email_key(r.email.as_deref()))
            .collect();
        // Participant → the line that first matched it (earlier batches, then this one).
        let mut touched: HashMap<Uuid, u64> = HashMap::new();
        let mut newly_touched: Vec<(String, i64)> = Vec::new();
        let mut found = if self.lookups {
            store::participants::find_by_keys(
                tx,
                self.personal,
                self.event_id,
                &external_ids,
                &email_keys,
            )
            .await?
        } else {
            Vec::new()
        };
        if !found.is_empty() {
            let ids: Vec<String> = found.iter().map(|m| m.id.to_string()).collect();
            let mut keys: Vec<(&str, &str)> = ids.iter().map(|id| (CREATED, id.as_str())).collect();
            keys.extend(ids.iter().map(|id| (TOUCHED, id.as_str())));
            let known = store::scratch::lookup(tx, &keys).await?;
            found.retain(|m| !known.contains_key(&(CREATED.to_owned(), m.id.to_string())));
            for m in &found {
                if let Some(line) = known.get(&(TOUCHED.to_owned(), m.id.to_string())) {
                    touched.insert(m.id, u64::try_from(*line).map_err(anyhow::Error::from)?);
                }
            }
        }
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

        let mut inserts: Vec<(ParticipantFields, u64, Option<String>, bool)> = Vec::new();
        let mut existing_shop: Vec<(ShopFacts, Holder)> = Vec::new();
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
                    row.barcode.clone(),
                    row.cancelled,
                ));
                if row.cancelled {
                    self.cancelled += 1;
                }
                continue;
            };
            if let Some(&first) = touched.get(&existing.id) {
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
            touched.insert(existing.id, row.line);
            if let Some(serial) = existing.ticket_serial
                && (row.barcode.is_some() || row.cancelled)
            {
                if row.cancelled {
                    self.cancelled += 1;
                }
                existing_shop.push((
                    ShopFacts {
                        serial,
                        barcode: row.barcode.clone(),
                        cancelled: row.cancelled,
                    },
                    Holder::of_fields(&merged(existing, &row)),
                ));
            }
            newly_touched.push((
                existing.id.to_string(),
                i64::try_from(row.line).map_err(anyhow::Error::from)?,
            ));
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
        if self.write && !existing_shop.is_empty() {
            self.apply_existing_shop_facts(uow, existing_shop).await?;
        }
        let tx = uow.tx();
        let remember: Vec<(&str, &str, i64)> = newly_touched
            .iter()
            .map(|(id, line)| (TOUCHED, id.as_str(), *line))
            .collect();
        store::scratch::remember(tx, &remember).await?;
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
        let mut created: Vec<(String, i64)> = Vec::new();
        for (fields, line, barcode, cancelled) in inserts {
            let id = Uuid::now_v7();
            let serial = if self.issue_tickets {
                let scopes = self.settings.scopes_for(fields.ticket_type.as_deref());
                let t = new_ticket(self.keys, self.event, id, next_serial, scopes, self.now)?;
                next_serial += 1;
                let s = t.serial;
                self.pending_tickets.push(t);
                if barcode.is_some() || cancelled {
                    self.pending_shop.push(ShopFacts {
                        serial: s,
                        barcode,
                        cancelled,
                    });
                }
                Some(s)
            } else {
                None
            };
            if self.lookups {
                created.push((
                    id.to_string(),
                    i64::try_from(line).map_err(anyhow::Error::from)?,
                ));
            }
            self.pending_participants.push(NewParticipant {
                id,
                fields,
                ticket_serial: serial,
            });
        }
        let remember: Vec<(&str, &str, i64)> = created
            .iter()
            .map(|(id, line)| (CREATED, id.as_str(), *line))
            .collect();
        store::scratch::remember(tx, &remember).await?;
        store::participants::update_many(tx, self.personal, self.event_id, self.now, &updates)
            .await?;
        if self.hook_updated && !updates.is_empty() {
            let serials: HashMap<Uuid, Option<i64>> =
                found.iter().map(|m| (m.id, m.ticket_serial)).collect();
            for (id, fields) in &updates {
                let serial = serials.get(id).copied().flatten();
                uow.webhook(
                    self.event_id,
                    webhook::PARTICIPANT_UPDATED,
                    webhooks::participant_data(self.event_id, *id, fields, serial),
                );
            }
            self.unspilled += updates.len();
        }

        // Renamed holders of existing tickets: replicate the new display name.
        if !renamed.is_empty() {
            let serials: Vec<i64> = renamed.iter().map(|r| r.0).collect();
            let rows: HashMap<i64, TicketRow> =
                store::tickets::get_many(uow.tx(), self.event_id, &serials)
                    .await?
                    .into_iter()
                    .map(|t| (t.serial, t))
                    .collect();
            let mut seen = HashSet::new();
            let mut changes = Vec::new();
            for (serial, holder) in renamed {
                if let Some(t) = rows.get(&serial)
                    && seen.insert(serial)
                {
                    changes.push((self.keys.ticket_change(t, holder)?, false));
                }
            }
            self.unspilled += changes.len();
            uow.changes(self.event_id, changes)?;
        }
        if self.pending_participants.len() >= store::pgcopy::COPY_CHUNK_ROWS {
            self.flush(uow).await?;
        }
        self.maybe_spill(uow).await
    }
}
