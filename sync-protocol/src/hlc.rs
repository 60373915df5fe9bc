//! Hybrid logical clock (DESIGN §5): 48 bits of wall-clock milliseconds and a 16-bit counter in
//! one `u64`, so that stamps sort by plain integer comparison.
//!
//! Every gate stamps its scans with its clock and advances the clock from every `server_time` (and
//! every peer stamp) it sees. That keeps causality across gates with skewed wall clocks: a scan
//! made after a gate learned of an event always sorts after that event.
//!
//! The clock is pure: callers pass the wall time in, which keeps it deterministic under test.
//! On the wire an HLC is a decimal string, so JavaScript clients keep all 64 bits.

use std::fmt;
use std::str::FromStr;

const COUNTER_BITS: u32 = 16;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;
/// Largest wall time representable (48 bits of ms: the year 10889).
pub const MAX_WALL_MS: u64 = (1 << 48) - 1;

/// How far ahead of the receiver's wall clock a remote clock (a gate's scan at the server, a
/// peer's scan or the server's `server_time` at a gate) may run and still be taken in. A clock
/// further ahead is a broken or hostile one: adopting it would drag every clock of the event
/// along and put later scans in the wrong order, so [`HlcClock::update`] ignores it and the
/// server stores such a scan as invalid. Wall clocks of a venue set by NTP are within seconds.
pub const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1_000;

/// Whether `remote` runs more than [`MAX_CLOCK_AHEAD_MS`] ahead of the wall time `wall_ms`.
pub fn too_far_ahead(remote: Hlc, wall_ms: u64) -> bool {
    remote.wall_ms() > wall_ms.saturating_add(MAX_CLOCK_AHEAD_MS)
}

/// One timestamp. Total order = integer order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(u64);

impl Hlc {
    pub const ZERO: Hlc = Hlc(0);

    pub fn new(wall_ms: u64, counter: u16) -> Self {
        Self((wall_ms.min(MAX_WALL_MS) << COUNTER_BITS) | u64::from(counter))
    }

    pub fn from_u64(raw: u64) -> Self {
        Self(raw)
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn wall_ms(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    pub fn counter(self) -> u16 {
        (self.0 & COUNTER_MASK) as u16
    }

    /// The next stamp after this one (counter overflow carries into the wall part, which stays
    /// monotonic and only runs ahead by a millisecond per 65,536 events).
    fn successor(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Hlc {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl serde::Serialize for Hlc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Hlc {
    /// Accepts the decimal string of the wire format, and a JSON number for lenient clients.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Hlc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hybrid logical clock as a decimal string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Hlc, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Hlc, E> {
                Ok(Hlc(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The clock state of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes from the last stamp issued (persisted by the caller), so a restart never goes back.
    pub fn resume(last: Hlc) -> Self {
        Self { last }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A stamp for a local event at wall time `wall_ms`: strictly greater than every stamp this
    /// clock issued or saw.
    pub fn now(&mut self, wall_ms: u64) -> Hlc {
        let candidate = Hlc::new(wall_ms, 0);
        self.last = if candidate > self.last {
            candidate
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Takes in a stamp from elsewhere (a `server_time`, a peer's scan) and returns a stamp
    /// greater than both it and everything issued before. A stamp [`too_far_ahead`] of the wall
    /// clock is not taken in (the result is then a local stamp, as from [`HlcClock::now`]).
    pub fn update(&mut self, remote: Hlc, wall_ms: u64) -> Hlc {
        let candidate = Hlc::new(wall_ms, 0);
        let remote = if too_far_ahead(remote, wall_ms) {
            Hlc::ZERO
        } else {
            remote
        };
        let max = self.last.max(remote);
        self.last = if candidate > max {
            candidate
        } else {
            max.successor()
        };
        self.last
    }

    /// How far the clock runs ahead of the local wall clock, in ms (positive when a remote clock
    /// pulled it forward): the `clock_offset_ms` a gate reports.
    pub fn offset_ms(&self, wall_ms: u64) -> i64 {
        let wall = i64::try_from(wall_ms.min(MAX_WALL_MS)).unwrap_or(i64::MAX);
        let ours = i64::try_from(self.last.wall_ms()).unwrap_or(i64::MAX);
        (ours - wall).max(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stamps_follow_wall_time_and_never_go_back() {
        let mut c = HlcClock::new();
        let a = c.now(1_000);
        assert_eq!((a.wall_ms(), a.counter()), (1_000, 0));
        let b = c.now(1_000);
        assert_eq!((b.wall_ms(), b.counter()), (1_000, 1));
        let d = c.now(500); // wall clock stepped back (NTP)
        assert!(d > b);
        assert_eq!(d.wall_ms(), 1_000);
        let e = c.now(2_000);
        assert_eq!((e.wall_ms(), e.counter()), (2_000, 0));
    }

    #[test]
    fn update_from_a_clock_ahead_pulls_this_clock_forward() {
        let mut gate = HlcClock::new();
        gate.now(1_000);
        let server = Hlc::new(60_000, 3);
        let u = gate.update(server, 1_001);
        assert!(u > server);
        assert_eq!(gate.offset_ms(1_001), 58_999);
        // A scan right after is still after the server's event, although the gate's wall clock lags.
        assert!(gate.now(1_002) > server);
    }

    #[test]
    fn a_clock_too_far_ahead_is_not_taken_in() {
        let mut c = HlcClock::new();
        let wall = 1_800_000_000_000;
        let poisoned = Hlc::from_u64(i64::MAX as u64);
        let u = c.update(poisoned, wall);
        assert_eq!(u.wall_ms(), wall);
        let near = Hlc::new(wall + MAX_CLOCK_AHEAD_MS, 0);
        assert!(c.update(near, wall) > near);
        let beyond = Hlc::new(wall + MAX_CLOCK_AHEAD_MS + 1, 0);
        assert!(c.update(beyond, wall) < beyond);
    }

    #[test]
    fn counter_overflow_carries_into_the_wall_part() {
        let mut c = HlcClock::resume(Hlc::new(10, u16::MAX));
        let n = c.now(10);
        assert_eq!((n.wall_ms(), n.counter()), (11, 0));
    }

    #[test]
    fn wire_form_is_a_decimal_string() {
        let h = Hlc::new(1_733_045_467_412, 5);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", h.as_u64()));
        assert_eq!(serde_json::from_str::<Hlc>(&json).unwrap(), h);
        assert_eq!(
            serde_json::from_str::<Hlc>(&h.as_u64().to_string()).unwrap(),
            h
        );
        assert!(serde_json::from_str::<Hlc>("\"12x\"").is_err());
        assert!(serde_json::from_str::<Hlc>("-1").is_err());
    }

    proptest! {
        #[test]
        fn any_interleaving_of_now_and_update_is_strictly_increasing(
            ops in proptest::collection::vec((any::<bool>(), 0u64..1u64 << 40, any::<u64>()), 1..200)
        ) {
            let mut c = HlcClock::new();
            let mut prev = Hlc::ZERO;
            for (is_update, wall, remote) in ops {
                let remote = Hlc::from_u64(remote >> 1);
                let s = if is_update { c.update(remote, wall) } else { c.now(wall) };
                prop_assert!(s > prev);
                if is_update && !too_far_ahead(remote, wall) { prop_assert!(s > remote); }
                prev = s;
            }
        }
    }
}
