//! Login throttling and password hashing under a budget.
//!
//! Every login attempt costs an argon2id verification (19 MiB and ~20 ms of CPU), so attempts
//! are counted before any hashing, cheaply, in three fixed windows: per (e-mail, client IP)
//! against guessing one account, per client IP against spraying many accounts from one address,
//! and over the whole server. Hashing itself runs on the blocking pool under a semaphore of one
//! permit per core ([`hash_password`], [`verify_password`]), and at most [`MAX_WAITING`]
//! attempts per permit may wait for one: beyond that a login is refused at once, so memory
//! stays bounded however many requests arrive.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::domain::Error;
use crate::domain::auth;

/// Attempts per client IP per window (any e-mail).
pub const PER_IP_MAX: u32 = 30;
/// Attempts per window over the whole server.
pub const GLOBAL_MAX: u32 = 600;
/// Attempts that may wait for a hashing permit, per permit.
pub const MAX_WAITING: usize = 4;

/// One permit per core: at most that many argon2 computations (19 MiB each) at once.
static HASHING: LazyLock<tokio::sync::Semaphore> =
    LazyLock::new(|| tokio::sync::Semaphore::new(hashing_permits()));

fn hashing_permits() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

/// Hashes a password (argon2id) on the blocking pool, under the hashing limit.
pub async fn hash_password(password: String) -> Result<String, Error> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| Error::Internal(e.into()))?
        .map_err(Error::Internal)
}

/// Verifies a password against a stored hash, or against a dummy one when there is none (so
/// timing does not tell which e-mails have accounts); under the hashing limit.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, Error> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    tokio::task::spawn_blocking(move || match hash {
        Some(hash) => auth::verify_password(&password, &hash),
        None => {
            let _ = auth::verify_password(&password, auth::dummy_hash());
            false
        }
    })
    .await
    .map_err(|e| Error::Internal(e.into()))
}

/// A fixed-window counter of attempts per key.
#[derive(Debug)]
struct Window<K> {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Hash + Eq + Clone> Window<K> {
    fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt; `Err(seconds)` tells how long until the next one is allowed.
    fn check(&self, key: &K) -> Result<(), u64> {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() > 10_000 {
            let window = self.window;
            entries.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = entries.entry(key.clone()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    fn reset(&self, key: &K) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.remove(key);
    }
}

/// The login budgets: per (e-mail, client IP), per client IP, global, and the hashing queue.
#[derive(Debug)]
pub struct LoginLimiter {
    per_account: Window<(String, IpAddr)>,
    per_ip: Window<IpAddr>,
    global: Window<()>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Holds a place in the hashing queue; gives it back when dropped.
#[derive(Debug)]
pub struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LoginLimiter {
    /// `max` attempts per (e-mail, client IP) per `window`; the other budgets per the constants.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            per_account: Window::new(max, window),
            per_ip: Window::new(PER_IP_MAX.max(max), window),
            global: Window::new(GLOBAL_MAX, window),
            waiting: AtomicUsize::new(0),
            max_waiting: MAX_WAITING * hashing_permits(),
        }
    }

    /// Counts an attempt in every budget; `Err(seconds)` tells how long until the next one is
    /// allowed. Costs a few map lookups, nothing more.
    pub fn check(&self, email: &str, ip: IpAddr) -> Result<(), u64> {
        self.global.check(&())?;
        self.per_ip.check(&ip)?;
        self.per_account.check(&(email.to_owned(), ip))
    }

    /// A place in the queue for a hashing permit, or `Err(seconds)` when the queue is full.
    pub fn enter(&self) -> Result<QueuePlace<'_>, u64> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let place = QueuePlace(&self.waiting);
        if before >= self.max_waiting {
            return Err(1);
        }
        Ok(place)
    }

    /// Forgets the attempts of a successful login (of this e-mail and IP).
    pub fn reset(&self, email: &str, ip: IpAddr) {
        self.per_account.reset(&(email.to_owned(), ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_max_per_window() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(l.check("a", ip).is_ok());
        }
        assert!(l.check("a", ip).is_err());
        assert!(l.check("b", ip).is_ok());
        l.reset("a", ip);
        assert!(l.check("a", ip).is_ok());
    }

    #[test]
    fn one_ip_has_a_budget_across_e_mails() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let spent = (0..100)
            .take_while(|i| l.check(&format!("user{i}@x"), ip).is_ok())
            .count();
        assert_eq!(spent, PER_IP_MAX as usize);
        assert!(l.check("other@x", [10, 0, 0, 2].into()).is_ok());
    }

    #[test]
    fn the_hashing_queue_is_bounded() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let places: Vec<_> = (0..l.max_waiting).map(|_| l.enter()).collect();
        assert!(places.iter().all(Result::is_ok));
        assert!(l.enter().is_err());
        drop(places);
        assert!(l.enter().is_ok());
    }
}
