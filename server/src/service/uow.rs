//! The unit of work of every gate-visible write: one transaction that collects the replication
//! changes and the live items of what it did, then, in this order,
//! 1. stages the live items (PostgreSQL: `pg_notify` inside the transaction, delivered at commit),
//! 2. writes the webhook deliveries of the messages it recorded (the outbox: one indexed query
//!    when the event has no endpoints, one set-based insert when it has),
//! 3. appends the changes to the event's change log — last before the commit, because from there
//!    on concurrent writers of the event wait on its change counter,
//! 4. commits,
//! 5. publishes the staged items locally (SQLite; PostgreSQL's arrive through LISTEN) and wakes
//!    the webhook worker.
//!
//! Ticket e-mails a unit queues ([`UnitOfWork::ticket_mails`]) are written with the webhook
//! deliveries, and the mail worker is woken after the commit.
//!
//! Every conflict among the live items is also a `conflict.created` message.
//!
//! A long unit (an import of a million rows) calls [`UnitOfWork::spill`] between its batches:
//! the changes recorded so far move to the transaction's `TEMP` staging table and the webhook
//! deliveries are written, so its memory does not grow with its size. The staged changes are
//! appended at step 3 like the others.
//!
//! Dropping a unit without [`UnitOfWork::commit`] rolls everything back: no change, no live item.

use std::collections::HashMap;

use sync_protocol::wire::ChangeData;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::crypto::PersonalKeys;
use crate::domain::live::Live;
use crate::domain::webhook;
use crate::live::Notifier;
use crate::service::outbox::{self as webhooks, Message, Subscribers};
use crate::store::{self, Db, Tx};

pub struct UnitOfWork {
    tx: Tx,
    keys: PersonalKeys,
    /// The event whose change log the changes go to (a unit writes one event's log).
    event_id: Option<Uuid>,
    changes: Vec<(ChangeData, bool)>,
    live: Vec<Live>,
    webhooks: Vec<Message>,
    /// The webhook subscribers of each event, once read in this transaction.
    subscribers: HashMap<Uuid, Subscribers>,
    /// Ticket e-mails to queue.
    mails: Vec<store::mail::NewMail>,
    /// Changes spilled to the staging table so far (their last `ord`), and webhook deliveries
    /// already written.
    staged: Option<i64>,
    queued: usize,
}

impl UnitOfWork {
    /// Starts the transaction (SQLite: `BEGIN IMMEDIATE`).
    /// `keys` seal what the unit writes that may hold personal data (webhook bodies).
    pub async fn begin(db: &Db, keys: &PersonalKeys) -> Result<Self, Error> {
        Ok(Self {
            tx: db.begin().await?,
            keys: keys.clone(),
            event_id: None,
            changes: Vec::new(),
            live: Vec::new(),
            webhooks: Vec::new(),
            subscribers: HashMap::new(),
            mails: Vec::new(),
            staged: None,
            queued: 0,
        })
    }

    /// The transaction, for the statements of the use case.
    pub fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// Records a replication change of `event_id` (`deleted` marks a tombstone).
    pub fn change(&mut self, event_id: Uuid, data: ChangeData, deleted: bool) -> Result<(), Error> {
        self.for_event(event_id)?;
        self.changes.push((data, deleted));
        Ok(())
    }

    /// Records several changes of `event_id`.
    pub fn changes(
        &mut self,
        event_id: Uuid,
        changes: impl IntoIterator<Item = (ChangeData, bool)>,
    ) -> Result<(), Error> {
        self.for_event(event_id)?;
        self.changes.extend(changes);
        Ok(())
    }

    /// Records live items, published once the unit commits.
    pub fn live(&mut self, items: impl IntoIterator<Item = Live>) {
        self.live.extend(items);
    }

    /// Records a webhook message about `event_id`, written to the outbox at commit for every
    /// enabled endpoint subscribed to `event_type`.
    pub fn webhook(&mut self, event_id: Uuid, event_type: &'static str, data: serde_json::Value) {
        self.webhooks.push(Message {
            event_id,
            event_type,
            at: store::now_ms(),
            data,
        });
    }

    /// Queues ticket e-mails, written with the unit's other outbox rows.
    pub fn ticket_mails(&mut self, rows: impl IntoIterator<Item = store::mail::NewMail>) {
        self.mails.extend(rows);
    }

    /// Whether an enabled endpoint of `event_id` subscribes to `event_type`: lets a use case skip
    /// building messages nobody receives. Read once per event and transaction.
    pub async fn wants_webhook(&mut self, event_id: Uuid, event_type: &str) -> Result<bool, Error> {
        let subs = match self.subscribers.entry(event_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(webhooks::subscribers(&mut self.tx, event_id).await?)
            }
        };
        Ok(subs.iter().any(|(_, types)| types.contains(event_type)))
    }

    fn for_event(&mut self, event_id: Uuid) -> Result<(), Error> {
        match self.event_id {
            None => {
                self.event_id = Some(event_id);
                Ok(())
            }
            Some(e) if e == event_id => Ok(()),
            Some(e) => Err(Error::Internal(anyhow::anyhow!(
                "one unit of work writes one event's change log ({e}), not also {event_id}"
            ))),
        }
    }

    /// Appends the changes recorded so far now, for a step that must read them back from the
    /// change log (the re-fold after a revocation reads the revocation's change seq). The
    /// event's change counter stays locked from here to the commit.
    pub async fn append_now(&mut self) -> Result<(), Error> {
        if let Some(event_id) = self.event_id
            && !self.changes.is_empty()
        {
            let changes = std::mem::take(&mut self.changes);
            store::changes::append(&mut self.tx, event_id, &changes).await?;
        }
        Ok(())
    }

    /// Moves the changes recorded so far to the staging table and writes the webhook deliveries
    /// of the messages recorded so far (see the module documentation).
    pub async fn spill(&mut self) -> Result<(), Error> {
        if !self.changes.is_empty() {
            let changes = std::mem::take(&mut self.changes);
            let ord = self.staged.get_or_insert(0);
            store::changes::stage(&mut self.tx, &changes, ord).await?;
        }
        let messages = std::mem::take(&mut self.webhooks);
        self.queued +=
            webhooks::write_outbox(&mut self.tx, &self.keys, &mut self.subscribers, messages)
                .await?;
        Ok(())
    }

    /// Stage → append → commit → publish (see the module documentation).
    pub async fn commit(mut self, notifier: &Notifier) -> Result<(), Error> {
        let live = std::mem::take(&mut self.live);
        for item in &live {
            if let Live::Conflict {
                event_id,
                conflict_id,
                kind,
                ticket_serial,
            } = item
            {
                self.webhook(
                    *event_id,
                    webhook::CONFLICT_CREATED,
                    serde_json::json!({"event_id": event_id, "conflict_id": conflict_id,
                        "kind": kind.as_str(), "ticket_serial": ticket_serial}),
                );
            }
        }
        let staged = notifier.stage(&mut self.tx, live).await?;
        let messages = std::mem::take(&mut self.webhooks);
        let queued = self.queued
            + webhooks::write_outbox(&mut self.tx, &self.keys, &mut self.subscribers, messages)
                .await?;
        let mails = std::mem::take(&mut self.mails);
        let mails = super::mail_outbox::write(&mut self.tx, &mails).await?;
        match (self.event_id, self.staged) {
            (Some(event_id), Some(mut ord)) => {
                store::changes::stage(&mut self.tx, &self.changes, &mut ord).await?;
                store::changes::append_staged(&mut self.tx, event_id).await?;
            }
            (Some(event_id), None) if !self.changes.is_empty() => {
                store::changes::append(&mut self.tx, event_id, &self.changes).await?;
            }
            _ => {}
        }
        self.tx.commit().await?;
        notifier.committed(staged);
        if queued > 0 {
            webhooks::wake();
        }
        if mails > 0 {
            super::mail_outbox::wake();
        }
        Ok(())
    }

    /// Rolls back explicitly (dropping does the same).
    pub async fn rollback(self) -> Result<(), Error> {
        self.tx.rollback().await?;
        Ok(())
    }
}
