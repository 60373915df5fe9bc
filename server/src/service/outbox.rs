//! The webhook outbox as the unit of work writes it: the messages a fact produces, the
//! subscribers of each event (cached per process), the delivery rows written at commit, and the
//! worker's wake-up. Below `uow` and `webhooks`; the worker and the use cases that build
//! messages are `service::webhooks`.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::crypto::PersonalKeys;
use crate::domain::webhook;
use crate::store::webhooks::NewDelivery;
use crate::store::{self, Tx, now_ms};

/// Wakes this process's worker when a unit of work wrote deliveries.
pub(super) static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Tells the worker there is new work.
pub fn wake() {
    WAKE.notify_waiters();
}

/// The delivery settings.
/// A message recorded by a unit of work.
#[derive(Debug, Clone)]
pub struct Message {
    pub event_id: Uuid,
    pub event_type: &'static str,
    /// When the fact happened (unix ms).
    pub at: i64,
    pub data: serde_json::Value,
}

/// The enabled endpoints of an event and what they subscribe to.
pub type Subscribers = Vec<(Uuid, HashSet<String>)>;

/// How long a process trusts what it read of an event's endpoints. Every change of them is
/// announced to every process (`Live::WebhooksChanged`, see [`forget`]); this bounds the
/// staleness should an announcement be missed (a LISTEN connection being re-established).
const SUBSCRIBERS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The subscribers of the events this process wrote facts for: a unit of work (a push, a
/// redeem batch) would otherwise spend one more round trip on them every time.
static SUBSCRIBERS: std::sync::LazyLock<moka::sync::Cache<Uuid, std::sync::Arc<Subscribers>>> =
    std::sync::LazyLock::new(|| {
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(SUBSCRIBERS_TTL)
            .build()
    });

/// Drops what this process cached of the event's endpoints (after they changed here, or when
/// another process announces a change).
pub fn forget(event_id: Uuid) {
    SUBSCRIBERS.invalidate(&event_id);
}

/// Forgets cached endpoints whenever any server process announces a change, until `stop`.
pub fn follow_changes(notifier: &crate::live::Notifier, stop: tokio_util::sync::CancellationToken) {
    let mut live = notifier.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                item = live.recv() => match item {
                    Ok(crate::domain::live::Live::WebhooksChanged { event_id }) => forget(event_id),
                    Ok(_) => {}
                    // Missed announcements: forget everything rather than trust it.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        SUBSCRIBERS.invalidate_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
}

/// The subscribers of an event: from this process's cache, else one indexed query.
pub async fn subscribers(tx: &mut Tx, event_id: Uuid) -> Result<Subscribers, Error> {
    if let Some(s) = SUBSCRIBERS.get(&event_id) {
        return Ok((*s).clone());
    }
    let subs: Subscribers = store::webhooks::subscribers(tx, event_id)
        .await?
        .into_iter()
        .map(|(id, types)| {
            let types: Vec<String> = serde_json::from_str(&types).unwrap_or_default();
            (id, types.into_iter().collect())
        })
        .collect();
    SUBSCRIBERS.insert(event_id, std::sync::Arc::new(subs.clone()));
    Ok(subs)
}

/// A delivery's body as stored: sealed like personal data (it may name a participant), bound
/// to the delivery's id.
pub fn seal_payload(keys: &PersonalKeys, delivery: Uuid, payload: &str) -> Result<String, Error> {
    keys.seal_field(delivery.as_bytes(), payload)
        .map_err(Error::Internal)
}

/// The body [`seal_payload`] stored. A delivery queued before bodies were sealed is JSON text
/// and is sent as it is.
pub fn open_payload(keys: &PersonalKeys, delivery: Uuid, stored: &str) -> Result<String, Error> {
    if stored.starts_with('{') {
        return Ok(stored.to_owned());
    }
    keys.open_field(delivery.as_bytes(), stored)
        .map_err(Error::Internal)
}

/// Writes one pending delivery per message and subscribed endpoint; returns how many.
/// `known` holds the subscribers already read in this transaction, by event.
pub async fn write_outbox(
    tx: &mut Tx,
    keys: &PersonalKeys,
    known: &mut HashMap<Uuid, Subscribers>,
    messages: Vec<Message>,
) -> Result<usize, Error> {
    if messages.is_empty() {
        return Ok(0);
    }
    let mut rows = Vec::new();
    for m in messages {
        let subs = match known.entry(m.event_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(subscribers(tx, m.event_id).await?)
            }
        };
        let targets: Vec<Uuid> = subs
            .iter()
            .filter(|(_, types)| types.contains(m.event_type))
            .map(|(id, _)| *id)
            .collect();
        if targets.is_empty() {
            continue;
        }
        let payload = webhook::body(m.event_type, store::ms_to_time(m.at), m.data);
        let message_id = Uuid::now_v7();
        for endpoint_id in targets {
            let id = Uuid::now_v7();
            rows.push(NewDelivery {
                id,
                event_id: m.event_id,
                endpoint_id,
                message_id,
                event_type: m.event_type,
                payload: seal_payload(keys, id, &payload)?,
            });
        }
    }
    store::webhooks::insert_deliveries(tx, &rows, now_ms()).await?;
    if !rows.is_empty() {
        metrics::counter!("usher_webhook_messages_total").increment(rows.len() as u64);
    }
    Ok(rows.len())
}
