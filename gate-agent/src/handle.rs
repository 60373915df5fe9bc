//! The decision thread and the handle every input (scanner, camera, BLE, kiosk screen) uses.
//!
//! One thread owns the decision engine and its replica connection, so decisions are strictly
//! sequential (dense `seq`, one writer) and never wait on the async runtime. Each committed
//! decision is broadcast to the screen and the stdout log, and wakes the sync pusher.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use uuid::Uuid;

use crate::decide::{Gate, GateError, ScanOutcome, ScanRequest};
use crate::replica::TicketRow;
use crate::telemetry;

/// Most scans decided in one commit.
const MAX_BATCH: usize = 64;

/// A lookup hit with its presence.
#[derive(Debug, Clone, Serialize)]
pub struct LookupHit {
    #[serde(flatten)]
    pub ticket: TicketRow,
    pub inside: bool,
}

enum Command {
    /// A scan, with the moment it was asked for (the decision latency runs from there to the
    /// durable commit).
    Scan(
        ScanRequest,
        Instant,
        oneshot::Sender<Result<ScanOutcome, GateError>>,
    ),
    Undo(Uuid, oneshot::Sender<Result<ScanOutcome, GateError>>),
    Lookup(String, oneshot::Sender<Result<Vec<LookupHit>, GateError>>),
    /// Stop after everything queued before this; acknowledged when the thread is done.
    Stop(oneshot::Sender<()>),
}

/// Clonable access to the decision thread.
#[derive(Clone)]
pub struct GateHandle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<ScanOutcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("the decision thread has stopped")]
    Stopped,
}

impl GateHandle {
    /// Starts the decision thread. `kick` is notified after every committed decision.
    pub fn spawn(mut gate: Gate, kick: Arc<Notify>) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Command>(1024);
        let (events, _) = broadcast::channel(1024);
        let out = events.clone();
        std::thread::Builder::new()
            .name("decisions".into())
            .spawn(move || {
                let mut next: Option<Command> = None;
                while let Some(cmd) = next.take().or_else(|| rx.blocking_recv()) {
                    match cmd {
                        Command::Scan(req, asked, reply) => {
                            // Group commit: scans already queued behind this one (several
                            // inputs at once) share its durable commit.
                            let mut batch = vec![(req, (asked, reply))];
                            while batch.len() < MAX_BATCH {
                                match rx.try_recv() {
                                    Ok(Command::Scan(req, asked, reply)) => {
                                        batch.push((req, (asked, reply)));
                                    }
                                    Ok(other) => {
                                        next = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            let (reqs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                            let results = gate.scan_batch(&reqs);
                            for (r, (asked, reply)) in results.into_iter().zip(replies) {
                                if let Ok(o) = &r {
                                    telemetry::decision_latency(asked.elapsed());
                                    let _ = out.send(o.clone());
                                }
                                let _ = reply.send(r);
                            }
                            kick.notify_one();
                        }
                        Command::Undo(id, reply) => {
                            let r = gate.undo(id);
                            if let Ok(o) = &r {
                                let _ = out.send(o.clone());
                                kick.notify_one();
                            }
                            let _ = reply.send(r);
                        }
                        Command::Stop(done) => {
                            let _ = done.send(());
                            return;
                        }
                        Command::Lookup(q, reply) => {
                            let r = (|| -> Result<Vec<LookupHit>, GateError> {
                                let rows = gate.replica().search(&q, 20)?;
                                let mut hits = Vec::with_capacity(rows.len());
                                for ticket in rows {
                                    let inside = gate.replica().presence(ticket.serial)?.inside;
                                    hits.push(LookupHit { ticket, inside });
                                }
                                Ok(hits)
                            })();
                            let _ = reply.send(r);
                        }
                    }
                }
            })?;
        Ok(Self { tx, events })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, GateError>>) -> Command,
    ) -> Result<T, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| HandleError::Stopped)?;
        Ok(rx.await.map_err(|_| HandleError::Stopped)??)
    }

    pub async fn scan(&self, req: ScanRequest) -> Result<ScanOutcome, HandleError> {
        let asked = Instant::now();
        self.call(|r| Command::Scan(req, asked, r)).await
    }

    pub async fn undo(&self, id: Uuid) -> Result<ScanOutcome, HandleError> {
        self.call(|r| Command::Undo(id, r)).await
    }

    pub async fn lookup(&self, q: String) -> Result<Vec<LookupHit>, HandleError> {
        self.call(|r| Command::Lookup(q, r)).await
    }

    /// Stops the decision thread once it has decided everything asked of it before this call;
    /// returns when it has stopped. Later requests (from any clone) fail with
    /// [`HandleError::Stopped`].
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Command::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }

    /// Every committed decision, in order.
    pub fn subscribe(&self) -> broadcast::Receiver<ScanOutcome> {
        self.events.subscribe()
    }
}
