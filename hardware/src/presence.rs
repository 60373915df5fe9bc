//! Deciding that a BLE badge is *at* the gate, not just somewhere in the hall.
//!
//! A single advert proves little: RSSI swings by ±10 dB with body shadowing and multipath, and a
//! badge walking past the gate in the corridor will spike once or twice. DESIGN §2.3 therefore
//! asks for the **median** RSSI over a short window to reach the gate's threshold, with at least
//! `min_samples` adverts in that window. And because a badge repeats the same payload for its
//! whole 30-second slot, one (serial, slot) is one sighting, however many adverts carry it.
//!
//! [`PresenceFilter`] is pure: time comes in with each advert (`t_ms`), so it is tested with
//! recorded or synthetic adverts and replays behave the same at any speed.

use std::collections::{HashMap, VecDeque};

pub use sync_protocol::wire::BeaconConfig;

/// How long a (serial, slot) is remembered after its last advert. A slot is 30 s and gates accept
/// ±1 slot, so after 90 s of silence the same pair can no longer be a valid credential and
/// forgetting it is safe.
pub const RETENTION_MS: u64 = 90_000;

/// A badge judged present at the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    pub serial: u64,
    pub slot: u32,
    /// Median RSSI of the window that admitted it (lower middle for an even count), dBm.
    pub median_rssi: i16,
    /// Adverts in that window.
    pub samples: usize,
    /// Time of the advert that completed the window.
    pub t_ms: u64,
}

#[derive(Debug, Default)]
struct Track {
    /// (t_ms, rssi) within the window, oldest first.
    samples: VecDeque<(u64, i16)>,
    emitted: bool,
    last_seen: u64,
}

/// Median-RSSI presence detection with (serial, slot) deduplication.
#[derive(Debug)]
pub struct PresenceFilter {
    threshold_dbm: i16,
    window_ms: u64,
    min_samples: usize,
    tracks: HashMap<(u64, u32), Track>,
    last_prune: u64,
}

impl PresenceFilter {
    /// Uses the gate's `beacon_config` (the service UUID in it is the scanner's business).
    pub fn new(config: &BeaconConfig) -> Self {
        Self {
            threshold_dbm: config.threshold_dbm,
            window_ms: u64::from(config.window_ms),
            // Zero would admit on no evidence at all; one advert is the least that means anything.
            min_samples: (config.min_samples as usize).max(1),
            tracks: HashMap::new(),
            last_prune: 0,
        }
    }

    /// Feeds one decoded advert. Returns a sighting the first time this (serial, slot) has
    /// `min_samples` adverts within `window_ms` whose median RSSI is at or above the threshold;
    /// `None` otherwise, including for every later advert of an already-sighted pair.
    ///
    /// Adverts may arrive slightly out of order (several scanner threads); the window is measured
    /// back from the newest time seen for the pair.
    pub fn observe(&mut self, serial: u64, slot: u32, rssi: i16, t_ms: u64) -> Option<Sighting> {
        self.prune(t_ms);
        let track = self.tracks.entry((serial, slot)).or_default();
        track.last_seen = track.last_seen.max(t_ms);
        if track.emitted {
            return None;
        }
        let pos = track.samples.partition_point(|&(t, _)| t <= t_ms);
        track.samples.insert(pos, (t_ms, rssi));
        let horizon = track.last_seen.saturating_sub(self.window_ms);
        while track.samples.front().is_some_and(|&(t, _)| t < horizon) {
            track.samples.pop_front();
        }
        if track.samples.len() < self.min_samples {
            return None;
        }
        let mut values: Vec<i16> = track.samples.iter().map(|&(_, r)| r).collect();
        values.sort_unstable();
        let n = values.len();
        // Compare 2·median with 2·threshold so an even count needs no rounding.
        let twice_median = if n % 2 == 1 {
            2 * i32::from(values[n / 2])
        } else {
            i32::from(values[n / 2 - 1]) + i32::from(values[n / 2])
        };
        if twice_median < 2 * i32::from(self.threshold_dbm) {
            return None;
        }
        track.emitted = true;
        let median_rssi = i16::try_from(twice_median.div_euclid(2)).unwrap_or(i16::MIN);
        Some(Sighting {
            serial,
            slot,
            median_rssi,
            samples: n,
            t_ms,
        })
    }

    /// Pairs currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    fn prune(&mut self, now_ms: u64) {
        // Sweeping every advert would make a busy hall O(badges) per advert; once a second is
        // plenty for a 90-second retention.
        if now_ms < self.last_prune.saturating_add(1_000) {
            return;
        }
        self.last_prune = now_ms;
        self.tracks
            .retain(|_, t| t.last_seen.saturating_add(RETENTION_MS) >= now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min_samples: u32) -> BeaconConfig {
        BeaconConfig {
            threshold_dbm: -70,
            window_ms: 1_000,
            min_samples,
            ..BeaconConfig::default()
        }
    }

    #[test]
    fn even_count_median_is_exact() {
        let mut f = PresenceFilter::new(&config(2));
        // Median of -69 and -72 is -70.5: below -70.
        assert!(f.observe(1, 1, -69, 0).is_none());
        assert!(f.observe(1, 1, -72, 10).is_none());
        // -69, -70, -72 → -70: at the threshold counts.
        let s = f.observe(1, 1, -70, 20);
        assert_eq!(s.map(|s| s.median_rssi), Some(-70));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut f = PresenceFilter::new(&config(3));
        f.observe(1, 1, -50, 0);
        f.observe(1, 1, -50, 100);
        // 1.2 s later the first two are outside the 1 s window.
        assert!(f.observe(1, 1, -50, 1_300).is_none());
    }

    #[test]
    fn forgotten_after_retention() {
        let mut f = PresenceFilter::new(&config(1));
        assert!(f.observe(1, 1, -50, 0).is_some());
        assert!(f.observe(2, 9, -90, RETENTION_MS + 5_000).is_none());
        assert_eq!(f.tracked(), 1);
    }
}
