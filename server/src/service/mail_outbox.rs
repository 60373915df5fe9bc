//! The ticket e-mail outbox as the unit of work writes it: the queued messages of a fact, and
//! the worker's wake-up. Below `uow` and `mail`; the worker and the use cases are
//! `service::mail`.

use std::sync::LazyLock;

use tokio::sync::Notify;

use crate::domain::Error;
use crate::store::mail::NewMail;
use crate::store::{self, Tx, now_ms};

/// Wakes this process's mail worker when a unit of work queued messages.
pub(super) static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Tells the mail worker there is new work.
pub fn wake() {
    WAKE.notify_waiters();
}

/// Queues the messages in the fact's transaction; returns how many.
pub async fn write(tx: &mut Tx, rows: &[NewMail]) -> Result<usize, Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    store::mail::insert(tx, rows, now_ms()).await?;
    metrics::counter!("usher_ticket_mails_queued_total").increment(rows.len() as u64);
    Ok(rows.len())
}
