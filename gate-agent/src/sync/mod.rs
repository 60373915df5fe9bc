//! Background synchronisation with the server.

pub mod client;
pub mod worker;

pub use client::{SyncClient, SyncError};
pub use worker::{SyncEngine, SyncStats, SyncStatus};
