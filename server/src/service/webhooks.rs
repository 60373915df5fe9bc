//! Webhooks: endpoints (secrets sealed with the master key), the outbox a unit of work writes
//! at commit, and the delivery worker.
//!
//! A fact's unit of work records messages with [`UnitOfWork::webhook`]; at commit
//! ([`write_outbox`]) one indexed query finds the event's enabled endpoints and, when some
//! subscribe, one set-based insert writes a pending delivery per message and endpoint — in the
//! fact's own transaction, so a message exists exactly when its fact does.
//!
//! The worker ([`run`], one per process) claims due deliveries (several processes on one
//! PostgreSQL share the work, each row going to one of them: see `store::webhooks`), POSTs them
//! signed as the Standard Webhooks specification says, and on failure schedules the next
//! attempt from [`webhook::RETRY_SCHEDULE`] (a little over 24 hours, then the delivery is
//! `failed`). An endpoint whose every attempt failed for [`DISABLE_AFTER`] is disabled, with an
//! audit line and a `disabled_reason` the organizer sees.
//!
//! [`UnitOfWork::webhook`]: super::uow::UnitOfWork::webhook

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use uuid::Uuid;

use sync_protocol::wire::{ChangeData, Checkin, RevocationChange};

use super::AppState;
use super::outbox::WAKE;
pub use super::outbox::{Message, Subscribers, follow_changes, forget, wake};
use super::uow::UnitOfWork;
use crate::domain::Error;
use crate::domain::auth::Actor;
use crate::domain::crypto::{MasterKey, random_below, random_bytes};
use crate::domain::webhook::{self, SECRET_LEN};
use crate::settings::Settings;
use crate::store::webhooks::{Claimed, EndpointRow, NewDelivery};
use crate::store::{self, Db, now_ms};

/// How often a worker looks for due deliveries when nothing woke it (new rows written by other
/// processes, retries coming due).
const POLL: Duration = Duration::from_secs(1);
/// Deliveries claimed at once, and attempts in flight at once, per process.
const CLAIM: i64 = 64;
const IN_FLIGHT: usize = 16;
/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);
/// An endpoint whose every attempt failed for this long (scaled like the retry schedule) is
/// disabled: longer than any message's schedule (at most 32 hours with jitter), so each
/// message had all its attempts first.
pub const DISABLE_AFTER: Duration = Duration::from_secs(36 * 3600);
/// Most bytes of an error kept on a delivery.
const ERROR_LEN: usize = 300;

#[derive(Debug, Clone)]
pub struct Config {
    /// Multiplies the retry schedule and with it the time until an endpoint is disabled.
    pub retry_scale: f64,
    /// Time a receiver has to answer.
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            retry_scale: 1.0,
            timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    pub fn from_settings(s: &Settings) -> Self {
        let scale = if s.webhook_retry_scale.is_finite() && s.webhook_retry_scale > 0.0 {
            s.webhook_retry_scale
        } else {
            1.0
        };
        Self {
            retry_scale: scale,
            timeout: Duration::from_secs(s.webhook_timeout_secs.clamp(1, 300)),
        }
    }

    /// A claimed delivery stays with its worker this long: well past the request timeout.
    fn lease(&self) -> Duration {
        self.timeout * 3 + Duration::from_secs(5)
    }
}

// ---------------------------------------------------------------- the outbox

/// Records `checkin.created` (or `checkin.reverted`, for an undo) for check-ins a unit of work
/// stores; `source` is `push` or `redeem`. Nothing is built when nobody subscribes.
pub async fn record_checkins<'a>(
    uow: &mut UnitOfWork,
    event_id: Uuid,
    gate_id: Uuid,
    checkins: impl IntoIterator<Item = &'a Checkin>,
    source: &'static str,
) -> Result<(), Error> {
    let created = uow
        .wants_webhook(event_id, webhook::CHECKIN_CREATED)
        .await?;
    let reverted = uow
        .wants_webhook(event_id, webhook::CHECKIN_REVERTED)
        .await?;
    if !created && !reverted {
        return Ok(());
    }
    let checkins: Vec<&Checkin> = checkins
        .into_iter()
        .filter(|c| {
            if c.undoes.is_some() {
                reverted
            } else {
                created
            }
        })
        .collect();
    let serials: Vec<i64> = checkins
        .iter()
        .filter_map(|c| c.ticket_serial)
        .filter_map(|s| i64::try_from(s).ok())
        .collect();
    let holders = store::webhooks::holders(uow.tx(), event_id, &serials).await?;
    for c in checkins {
        let participant = c
            .ticket_serial
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|s| holders.get(&s));
        let event_type = if c.undoes.is_some() {
            webhook::CHECKIN_REVERTED
        } else {
            webhook::CHECKIN_CREATED
        };
        uow.webhook(
            event_id,
            event_type,
            serde_json::json!({
                "event_id": event_id,
                "checkin_id": c.id,
                "gate_id": gate_id,
                "seq": c.seq,
                "ticket_serial": c.ticket_serial,
                "participant_id": participant,
                "direction": c.direction.as_str(),
                "decision": c.decision.as_str(),
                "reason": c.reason.map(|r| r.as_str()),
                "method": c.method.as_str(),
                "scanned_at": c.scanned_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                "undoes": c.undoes,
                "source": source,
            }),
        );
    }
    Ok(())
}

/// Records `ticket.revoked` for the revocations among `changes`.
pub async fn record_revocations(
    uow: &mut UnitOfWork,
    event_id: Uuid,
    changes: &[(ChangeData, bool)],
) -> Result<(), Error> {
    let revoked: Vec<&RevocationChange> = changes
        .iter()
        .filter_map(|(c, deleted)| match c {
            ChangeData::Revocation(r) if !deleted => Some(r),
            _ => None,
        })
        .collect();
    if revoked.is_empty() || !uow.wants_webhook(event_id, webhook::TICKET_REVOKED).await? {
        return Ok(());
    }
    let serials: Vec<i64> = revoked
        .iter()
        .filter_map(|r| i64::try_from(r.serial).ok())
        .collect();
    let holders = store::webhooks::holders(uow.tx(), event_id, &serials).await?;
    for r in revoked {
        let participant = i64::try_from(r.serial).ok().and_then(|s| holders.get(&s));
        uow.webhook(
            event_id,
            webhook::TICKET_REVOKED,
            serde_json::json!({"event_id": event_id, "ticket_serial": r.serial,
                "participant_id": participant, "reason": r.reason}),
        );
    }
    Ok(())
}

/// The payload of `participant.created` / `participant.updated`: who, not how to get in (no
/// ticket credential, no metadata).
pub fn participant_data(
    event_id: Uuid,
    id: Uuid,
    fields: &crate::store::participants::ParticipantFields,
    ticket_serial: Option<i64>,
) -> serde_json::Value {
    serde_json::json!({
        "event_id": event_id,
        "participant_id": id,
        "external_id": fields.external_id,
        "name": fields.name,
        "email": fields.email,
        "organization": fields.organization,
        "ticket_type": fields.ticket_type,
        "ticket_serial": ticket_serial,
    })
}

// ---------------------------------------------------------------- endpoints

fn secret_aad(endpoint_id: Uuid) -> Vec<u8> {
    let mut aad = endpoint_id.as_bytes().to_vec();
    aad.extend_from_slice(b"webhook");
    aad
}

/// A fresh signing secret for an endpoint: (sealed, as shown once).
pub fn new_secret(master: &MasterKey, endpoint_id: Uuid) -> Result<(Vec<u8>, String), Error> {
    let key = random_bytes::<SECRET_LEN>()?;
    let sealed = master.seal(&secret_aad(endpoint_id), &key)?;
    Ok((sealed, webhook::display_secret(&key)))
}

/// The keys that sign a delivery now: the current secret, and the previous one during its
/// grace window.
fn signing_keys(master: &MasterKey, e: &EndpointRow, now: i64) -> anyhow::Result<Vec<Vec<u8>>> {
    let aad = secret_aad(e.id);
    let mut keys = vec![master.open(&aad, &e.secret)?];
    if let (Some(prev), Some(until)) = (&e.previous_secret, e.previous_until)
        && until > now
    {
        keys.push(master.open(&aad, prev)?);
    }
    Ok(keys)
}

/// Queues a `webhook.test` message to one endpoint (whatever it subscribes to); returns the
/// delivery id and message id.
pub async fn send_test(
    db: &Db,
    personal: &crate::domain::crypto::PersonalKeys,
    e: &EndpointRow,
) -> Result<(Uuid, Uuid), Error> {
    let now = now_ms();
    let id = Uuid::now_v7();
    let row = NewDelivery {
        id,
        event_id: e.event_id,
        endpoint_id: e.id,
        message_id: Uuid::now_v7(),
        event_type: webhook::WEBHOOK_TEST,
        payload: super::outbox::seal_payload(
            personal,
            id,
            &webhook::body(
                webhook::WEBHOOK_TEST,
                store::ms_to_time(now),
                serde_json::json!({"event_id": e.event_id, "endpoint_id": e.id}),
            ),
        )?,
    };
    let mut tx = db.begin().await?;
    store::webhooks::insert_deliveries(&mut tx, std::slice::from_ref(&row), now).await?;
    tx.commit().await?;
    wake();
    Ok((row.id, row.message_id))
}

// ---------------------------------------------------------------- the worker

/// The HTTP client of deliveries: time limits, no redirects (a receiver that moved must be
/// updated by the organizer, not followed to wherever it points).
pub fn client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .connect_timeout(config.timeout.min(Duration::from_secs(5)))
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Usher-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Delivers until `state.stopping` is cancelled; attempts in flight then finish.
pub async fn run(state: AppState) {
    let config = state.webhooks.clone();
    let http = match client(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    let mut gauge_at: Option<Instant> = None;
    loop {
        let notified = WAKE.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if state.stopping.is_cancelled() {
            return;
        }
        if gauge_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            gauge_at = Some(Instant::now());
            if let Ok(depth) = store::webhooks::queue_depth(&state.db).await {
                metrics::gauge!("usher_webhook_queue_depth").set(depth as f64);
            }
        }
        let worked = match deliver_due(&state, &config, &http).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = ?e, "webhook delivery pass failed");
                0
            }
        };
        if worked > 0 {
            continue;
        }
        let wait = match store::webhooks::next_due(&state.db).await {
            Ok(Some(due)) => {
                Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0)).min(POLL)
            }
            _ => POLL,
        }
        .max(Duration::from_millis(2));
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(wait) => {}
            () = state.stopping.cancelled() => return,
        }
    }
}

/// One pass: claims due deliveries and attempts them; returns how many were claimed.
async fn deliver_due(
    state: &AppState,
    config: &Config,
    http: &reqwest::Client,
) -> anyhow::Result<usize> {
    let now = now_ms();
    let lease = now + i64::try_from(config.lease().as_millis())?;
    let claimed = store::webhooks::claim(&state.db, now, lease, CLAIM).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = claimed
        .iter()
        .map(|c| c.endpoint_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let endpoints: HashMap<Uuid, EndpointRow> = store::webhooks::endpoints_by_id(&state.db, &ids)
        .await?
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    let n = claimed.len();
    futures_util::stream::iter(claimed)
        .map(|c| {
            let endpoint = endpoints.get(&c.endpoint_id);
            async move {
                if let Err(e) = attempt(state, config, http, endpoint, &c, lease).await {
                    tracing::warn!(error = ?e, delivery = %c.id, "webhook attempt not recorded");
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    Ok(n)
}

/// One attempt of one delivery, and its bookkeeping.
async fn attempt(
    state: &AppState,
    config: &Config,
    http: &reqwest::Client,
    endpoint: Option<&EndpointRow>,
    c: &Claimed,
    lease: i64,
) -> anyhow::Result<()> {
    // Deleted: its deliveries went with it.
    let Some(endpoint) = endpoint else {
        return Ok(());
    };
    if !endpoint.enabled {
        // Disabling failed the endpoint's pending deliveries; this one was committed by a
        // transaction that still saw the endpoint enabled. It fails the same way, so no
        // delivery stays pending behind a disabled endpoint.
        let reason = format!(
            "endpoint disabled: {}",
            endpoint
                .disabled_reason
                .as_deref()
                .unwrap_or("by the organizer")
        );
        let mut tx = state.db.begin().await?;
        if store::webhooks::attempt_failed(&mut tx, c.id, lease, None, &reason, None).await? {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        return Ok(());
    }
    let now = now_ms();
    let keys = signing_keys(&state.master, endpoint, now)?;
    let msg_id = webhook::message_id(c.message_id);
    let timestamp = now / 1000;
    let body = super::outbox::open_payload(state.master.personal(), c.id, &c.payload)
        .map_err(|e| anyhow::anyhow!("delivery {}: {e}", c.id))?
        .into_bytes();
    let signature = webhook::signature_header(&keys, &msg_id, timestamp, &body);
    let result = http
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let (code, error) = match result {
        Ok(resp) if resp.status().is_success() => {
            let code = i64::from(resp.status().as_u16());
            let done = now_ms();
            if store::webhooks::delivered(&state.db, c.id, lease, code, done).await? {
                store::webhooks::endpoint_succeeded(&state.db, endpoint.id).await?;
            }
            metrics::counter!("usher_webhook_deliveries_total", "result" => "delivered")
                .increment(1);
            return Ok(());
        }
        Ok(resp) => {
            let status = resp.status();
            (
                Some(i64::from(status.as_u16())),
                format!("the receiver answered HTTP {status}"),
            )
        }
        Err(e) => (None, describe(&e)),
    };
    let failed_attempts = u64::try_from(c.attempts).unwrap_or(0) + 1;
    let jitter = random_below(1000).unwrap_or(500);
    let next = webhook::retry_delay(failed_attempts, config.retry_scale, jitter)
        .map(|d| now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)));
    let done = now_ms();
    let mut tx = state.db.begin().await?;
    if !store::webhooks::attempt_failed(&mut tx, c.id, lease, code, &error, next).await? {
        tx.rollback().await?;
        return Ok(());
    }
    let streak = store::webhooks::endpoint_failed(&mut tx, endpoint.id, done).await?;
    let mut disabled = false;
    let disable_after =
        i64::try_from(DISABLE_AFTER.mul_f64(config.retry_scale).as_millis()).unwrap_or(i64::MAX);
    if let Some((failing_since, true)) = streak
        && done - failing_since >= disable_after
    {
        let reason = format!(
            "every attempt since {} failed (last: {error})",
            store::ms_to_time(failing_since)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
        disabled = store::webhooks::disable(&mut tx, endpoint.id, &reason, done).await?;
        if disabled {
            store::audit::record(
                &mut tx,
                &Actor::system(),
                "webhook.disable",
                Some(endpoint.event_id),
                Some(format!("webhook:{}", endpoint.id)),
                serde_json::json!({"url": endpoint.url, "reason": reason}),
            )
            .await?;
        }
    }
    tx.commit().await?;
    if disabled {
        forget(endpoint.event_id);
    }
    let result = if next.is_some() { "retrying" } else { "failed" };
    metrics::counter!("usher_webhook_deliveries_total", "result" => result).increment(1);
    if disabled {
        tracing::warn!(endpoint = %endpoint.id, event.id = %endpoint.event_id, "webhook endpoint disabled after failing continuously");
    }
    Ok(())
}

/// A short, secret-free description of a transport error.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "the receiver did not answer in time"
    } else if e.is_connect() {
        "cannot connect to the receiver"
    } else {
        "the request failed"
    };
    let mut text = format!("{what}: {e}");
    if let Some(source) = std::error::Error::source(e) {
        text.push_str(&format!(" ({source})"));
    }
    if text.len() > ERROR_LEN {
        let mut cut = ERROR_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
