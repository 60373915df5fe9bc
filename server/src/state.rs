//! Shared application state handed to every handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::auth::LoginLimiter;
use crate::crypto::MasterKey;
use crate::metrics::Metrics;
use crate::store::Db;
use crate::sync::notify::Notifier;
use crate::sync::redeem::EventCache;

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub db: Db,
    pub master: MasterKey,
    pub login_limiter: LoginLimiter,
    pub metrics: Metrics,
    /// The server's hybrid logical clock: stamps revocations so they take their place in the
    /// merge order (DESIGN §5).
    pub clock: Mutex<sync_protocol::HlcClock>,
    /// Live fan-out to SSE clients and long-polling gates (across processes on PostgreSQL).
    pub notifier: Notifier,
    /// Key rings and policies the online redeem keeps per event (short TTL).
    pub redeem_events: Mutex<HashMap<Uuid, EventCache>>,
    /// Cancelled when shutdown starts: long polls answer at once and event streams end, so the
    /// graceful drain does not wait on them.
    pub stopping: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// Builds the state; on PostgreSQL this also starts the LISTEN task (needs a runtime).
    pub fn new(db: Db, master: MasterKey) -> Self {
        let notifier = Notifier::start(&db);
        Self(Arc::new(Inner {
            notifier,
            redeem_events: Mutex::new(HashMap::new()),
            stopping: tokio_util::sync::CancellationToken::new(),
            db,
            master,
            login_limiter: LoginLimiter::new(10, Duration::from_secs(60)),
            metrics: Metrics::default(),
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
