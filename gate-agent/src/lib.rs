//! The Usher gate agent: runs on a venue kiosk, verifies tickets offline against a local SQLite
//! replica, writes every decision durably before showing it, and syncs in the background.
//!
//! # Layout
//! - [`replica`]: the SQLite replica (rusqlite, WAL, `synchronous=FULL`) and the outbox.
//! - [`decide`]: the decision engine: credential in, durable ADMIT/REJECT out.
//! - [`handle`]: the decision thread and the handle every input uses.
//! - [`sync`]: the sync client and the background push/pull loops.
//! - [`run`]: the kiosk process (`gate-agent run`), [`ui`]: its operator screen.
//! - [`status`]: `gate-agent status`.
//! - [`mesh`]: the venue mesh — gates read each other's logs on the LAN (DESIGN §8).
//! - [`inspect`]: decode and verify one credential (`gate-agent inspect`).
//! - [`telemetry`]: Prometheus metrics, served at `/metrics` beside the operator screen.

pub mod decide;
pub mod handle;
pub mod inspect;
pub mod mesh;
pub mod printer;
pub mod replica;
pub mod run;
pub mod status;
pub mod sync;
pub mod telemetry;
pub mod ui;
