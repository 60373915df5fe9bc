//! Shared application state handed to every handler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::LoginLimiter;
use crate::crypto::MasterKey;
use crate::metrics::Metrics;
use crate::store::Db;

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
}

impl AppState {
    pub fn new(db: Db, master: MasterKey) -> Self {
        Self(Arc::new(Inner {
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
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
