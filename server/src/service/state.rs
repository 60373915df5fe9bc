//! The composition root of the use cases: everything a request needs (database, keys, clock,
//! live fan-out, caches), built once at start and handed to every handler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::login::LoginLimiter;
use super::redeem::Caches;
use super::redeem::batch::Queues;
use crate::domain::crypto::MasterKey;
use crate::live::Notifier;
use crate::store::Db;

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub db: Db,
    pub master: MasterKey,
    pub login_limiter: LoginLimiter,
    /// The server's hybrid logical clock: stamps revocations so they take their place in the
    /// merge order (DESIGN §5).
    pub clock: Mutex<sync_protocol::HlcClock>,
    /// Live fan-out to SSE clients and long-polling gates (across processes on PostgreSQL).
    pub notifier: Notifier,
    /// What the online redeem keeps between requests (bounded TTL caches, batch queues).
    pub redeem: Caches,
    /// The online redeem's per-event batch queues.
    pub redeem_queues: Queues,
    /// Cancelled when shutdown starts: long polls answer at once and event streams end, so the
    /// graceful drain does not wait on them.
    pub stopping: tokio_util::sync::CancellationToken,
    /// How webhooks are delivered (timeouts, retry timing).
    pub webhooks: super::webhooks::Config,
    /// How ticket e-mail is sent.
    pub mail: super::mail::Config,
    /// The wallet signers (Apple, Google) this server has.
    pub wallet: super::wallet::Config,
}

impl AppState {
    /// Builds the state; on PostgreSQL this also starts the LISTEN task (needs a runtime).
    pub fn new(db: Db, master: MasterKey, webhooks: super::webhooks::Config) -> Self {
        Self::with_mail(db, master, webhooks, super::mail::Config::default())
    }

    /// [`AppState::new`] with the ticket e-mail settings.
    pub fn with_mail(
        db: Db,
        master: MasterKey,
        webhooks: super::webhooks::Config,
        mail: super::mail::Config,
    ) -> Self {
        Self::with_wallet(db, master, webhooks, mail, super::wallet::Config::default())
    }

    /// [`AppState::with_mail`] with the wallet signers.
    pub fn with_wallet(
        db: Db,
        master: MasterKey,
        webhooks: super::webhooks::Config,
        mail: super::mail::Config,
        wallet: super::wallet::Config,
    ) -> Self {
        let stopping = tokio_util::sync::CancellationToken::new();
        let notifier = Notifier::start(&db, stopping.clone());
        super::webhooks::follow_changes(&notifier, stopping.clone());
        Self(Arc::new(Inner {
            notifier,
            redeem: Caches::default(),
            redeem_queues: Queues::default(),
            stopping,
            webhooks,
            mail,
            wallet,
            db,
            master,
            login_limiter: LoginLimiter::new(10, Duration::from_secs(60)),
            clock: Mutex::new(sync_protocol::HlcClock::new()),
        }))
    }

    /// A fresh HLC stamp from the server clock.
    pub fn hlc_now(&self) -> sync_protocol::Hlc {
        let wall = u64::try_from(crate::store::now_ms()).unwrap_or(0);
        let mut clock = self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clock.now(wall)
    }

    /// Takes in a gate's clock (the newest stamp of a push) and returns a server stamp after it:
    /// the `server_time` that keeps every gate's clock causally ahead of what it has seen.
    pub fn observe_hlc(&self, remote: sync_protocol::Hlc) -> sync_protocol::Hlc {
        let wall = u64::try_from(crate::store::now_ms()).unwrap_or(0);
        let mut clock = self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clock.update(remote, wall)
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
