//! The Usher gate agent: runs on a venue kiosk, verifies tickets offline against a local SQLite
//! replica, writes every decision durably before showing it, and syncs in the background.
//!
//! # Layout
//! - [`inspect`]: decode and verify one credential (`gate-agent inspect`).

pub mod inspect;
