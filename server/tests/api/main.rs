//! Integration tests of the organizer API: the real server over real HTTP, once on SQLite and
//! once on PostgreSQL per test (see `helpers.rs`).

// A test's fixture and assertions may panic: a failing expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod alerts;
mod api_keys;
mod auth;
mod authz;
mod changes;
mod console;
mod events;
mod gate_status;
mod gates;
mod health;
mod import;
mod lifecycle;
mod mail;
mod participants;
mod privacy;
mod report;
mod roles;
mod smtp_sink;
mod sync;
mod ticket_docs;
mod tickets;
mod trust;
mod wallet;
mod webhooks;
mod zones;
