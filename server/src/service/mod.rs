//! Use cases: what the organizer API and the sync endpoints do, in terms of the domain, over
//! `store` (SQL) and `live` (fan-out). No HTTP here: handlers in `http` parse and authorize,
//! then call these.
//!
//! # Layout
//! - [`state`]: [`AppState`], the composition root.
//! - [`uow`]: the unit of work every gate-visible write goes through: changes appended, live
//!   items staged, commit, publish.
//! - [`merge`]: storing check-ins and re-folding tickets (push, online redeem, revocations).
//! - [`push`], [`redeem`], [`enroll`]: what gates and thin clients do.
//! - [`tickets`]: event key material and ticket issuing.
//! - [`users`], [`login`]: accounts and login throttling.
//! - [`webhooks`]: webhook endpoints, the outbox written at commit, the delivery worker.
//! - [`mail`], [`mail_outbox`]: ticket e-mail: queued at commit, sent by a worker.
//! - [`alerts`]: alert rules and the evaluator that fires and clears alerts.
//! - [`retention`]: the purge of archived events' personal data after their retention.
//! - [`ticket_doc`]: the readable ticket (PNG, SVG, PDF); [`wallet`]: Apple and Google wallet passes.

pub mod alerts;
pub mod api_keys;
pub mod backup;
pub mod enroll;
pub mod exports;
pub mod gate_status;
pub mod import;
pub mod login;
pub mod mail;
pub mod mail_outbox;
pub mod merge;
pub mod outbox;
pub mod push;
pub mod redeem;
pub mod reports;
pub mod retention;
pub mod state;
pub mod ticket_doc;
pub mod tickets;
pub mod uow;
pub mod users;
pub mod wallet;
pub mod webhooks;

pub use state::AppState;
