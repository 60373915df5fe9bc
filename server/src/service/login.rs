//! Login throttling: an in-memory fixed-window limiter of attempts per (e-mail, client IP).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// In-memory fixed-window limiter for login attempts per (e-mail, client IP).
#[derive(Debug)]
pub struct LoginLimiter {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<(String, IpAddr), (Instant, u32)>>,
}

impl LoginLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt; `Err(seconds)` tells how long until the next one is allowed.
    pub fn check(&self, email: &str, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() > 10_000 {
            let window = self.window;
            entries.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = entries.entry((email.to_owned(), ip)).or_insert((now, 0));
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

    /// Forgets the attempts of a successful login.
    pub fn reset(&self, email: &str, ip: IpAddr) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.remove(&(email.to_owned(), ip));
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
}
