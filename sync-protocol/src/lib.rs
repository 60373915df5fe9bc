//! Usher's sync protocol: the shared, I/O-free heart of the system.
//!
//! Everything here is a pure function or a plain data type, so that the server, the gate agent
//! and outside implementations agree on bytes and rules, and so that every rule is tested
//! exhaustively without a database or a network.
//!
//! # Layout
//! - [`ticket`]: the signed `U1:` QR ticket (DESIGN §2.1), its key ring.
//! - [`barcode`]: the ticket shop's own barcodes, looked up by a keyed hash.
//! - [`short_code`]: `XXXX-XXXX-XXXX` codes with a check character (§2.2).
//! - [`ble`]: the rotating BLE badge credential (§2.3).
//! - [`hlc`]: the hybrid logical clock (§5).
//! - [`wire`]: JSON messages of the sync protocol (§4), reasons and conflict kinds.
//! - [`decide`]: the storage-free checks of a gate decision (§3).
//! - [`merge`]: the deterministic fold of one ticket's events into state and conflicts (§5).
//! - [`zones`]: zones with a capacity, zone transfers, and the merge's `over_capacity` fold.
//! - [`days`]: event-local days and the automatic daily check-out of multi-day events.

pub mod barcode;
pub mod ble;
pub mod days;
pub mod decide;
pub mod hlc;
pub mod merge;
pub mod pin;
pub mod short_code;
pub mod ticket;
pub mod wire;
pub mod zones;

pub use hlc::{Hlc, HlcClock, MAX_CLOCK_AHEAD_MS, too_far_ahead};
pub use short_code::ShortCode;
pub use ticket::{KeyRing, SignedTicket, TicketFields};
pub use wire::{ConflictKind, Decision, Direction, Reason};
