//! Live fan-out: what happened, to every subscriber of every server process.
//!
//! Writers stage [`Live`] items inside their transaction. On PostgreSQL they go out with
//! `pg_notify` in that same transaction, so they are delivered exactly when (and only if) it
//! commits, to the LISTEN connection of every server process on the database — several server
//! replicas behind a load balancer all see every admission. Each process rebroadcasts what its
//! listener receives to its local subscribers (SSE clients, long-polling gates). On SQLite there
//! is a single process, so items are broadcast locally right after the commit.

use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use crate::domain::live::Live;
use crate::store::{self, Db, Tx};

/// Items staged in a transaction; hand them back to [`Notifier::committed`] after the commit.
#[must_use = "call Notifier::committed after the transaction commits"]
#[derive(Debug, Default)]
pub struct Staged(Vec<Live>);

#[derive(Debug, Clone)]
pub struct Notifier {
    tx: broadcast::Sender<Live>,
    postgres: bool,
}

impl Notifier {
    /// Creates the notifier and starts the task that feeds it (PostgreSQL: LISTEN; SQLite: the
    /// change-counter watch). The task ends when `stop` is cancelled or the pool is closed.
    pub fn start(db: &Db, stop: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(4096);
        let postgres = matches!(db, Db::Postgres(_));
        let (db, out) = (db.clone(), tx.clone());
        tokio::spawn(async move {
            let feed = async {
                if postgres {
                    listen(&db, &out).await
                } else {
                    watch_heads(&db, &out).await
                }
            };
            tokio::select! {
                () = feed => {}
                () = stop.cancelled() => tracing::debug!("live feed stopped"),
            }
        });
        Self { tx, postgres }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.tx.subscribe()
    }

    /// Live subscribers in this process.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Stages items in the writing transaction (PostgreSQL: `pg_notify`, delivered at commit).
    pub async fn stage(&self, tx: &mut Tx, items: Vec<Live>) -> anyhow::Result<Staged> {
        if items.is_empty() {
            return Ok(Staged::default());
        }
        if matches!(tx, Tx::Postgres(_)) {
            store::live::notify(tx, pack(&items)?).await?;
            return Ok(Staged::default());
        }
        Ok(Staged(items))
    }

    /// Publishes locally what was staged (SQLite); PostgreSQL items arrive via the listener.
    pub fn committed(&self, staged: Staged) {
        if self.postgres {
            return;
        }
        for item in staged.0 {
            let _ = self.tx.send(item);
        }
    }
}

/// Most bytes of one notification payload: PostgreSQL refuses 8,000 and more.
const MAX_PAYLOAD: usize = 7_000;

/// Packs items into as few notification payloads as fit: a JSON array of items each. A push of
/// a thousand admissions then sends a few dozen notifications rather than a thousand, which
/// every listening server process would have to receive and parse one by one.
fn pack(items: &[Live]) -> serde_json::Result<Vec<String>> {
    let mut payloads = Vec::new();
    let mut current = String::from("[");
    for item in items {
        let json = serde_json::to_string(item)?;
        if current.len() > 1 && current.len() + json.len() + 2 > MAX_PAYLOAD {
            current.push(']');
            payloads.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(&json);
    }
    if current.len() > 1 {
        current.push(']');
        payloads.push(current);
    }
    Ok(payloads)
}

/// A notification payload: one item (what other writers may send, e.g. the change log's
/// append) or a packed array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Payload {
    One(Live),
    Many(Vec<Live>),
}

impl Payload {
    fn into_items(self) -> Vec<Live> {
        match self {
            Payload::One(item) => vec![item],
            Payload::Many(items) => items,
        }
    }
}

/// SQLite: one process, but many writers (every organizer route that touches what gates
/// replicate). Rather than hooking each of them, watch the per-event change counters — a table of
/// one row per event — ten times a second and announce every head that moved. Changes are only
/// announced once committed, because only committed counters are visible here.
async fn watch_heads(db: &Db, out: &broadcast::Sender<Live>) {
    let mut heads: std::collections::HashMap<Uuid, u64> = std::collections::HashMap::new();
    let mut first = true;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if db.is_closed() {
            return;
        }
        let rows = match store::changes::heads(db).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "change counter watch failed");
                continue;
            }
        };
        for (event_id, head) in rows {
            let prev = heads.insert(event_id, head);
            if !first && prev != Some(head) {
                let _ = out.send(Live::Changes { event_id, head });
            }
        }
        first = false;
    }
}

/// The LISTEN loop: reconnects after errors, never gives up (until the pool closes).
async fn listen(db: &Db, out: &broadcast::Sender<Live>) {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let result: anyhow::Result<()> = async {
            let mut listener = store::live::Listener::connect(db).await?;
            tracing::debug!("listening for live events");
            delay = std::time::Duration::from_millis(100);
            loop {
                let payload = listener.recv().await?;
                match serde_json::from_str::<Payload>(&payload) {
                    Ok(payload) => {
                        for item in payload.into_items() {
                            let _ = out.send(item);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable live notification"),
                }
            }
        }
        .await;
        if db.is_closed() {
            return;
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, "live listener lost its connection");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_protocol::wire::Direction;

    fn admission(serial: u64) -> Live {
        Live::Admission {
            event_id: Uuid::now_v7(),
            ticket_serial: serial,
            gate_id: Uuid::now_v7(),
            checkin_id: Uuid::now_v7(),
            direction: Direction::In,
            inside: true,
        }
    }

    #[test]
    fn packed_payloads_stay_under_the_limit_and_unpack_in_order() {
        let items: Vec<Live> = (0..1_000).map(admission).collect();
        let payloads = pack(&items).unwrap();
        assert!(
            payloads.len() > 1 && payloads.len() < 100,
            "{}",
            payloads.len()
        );
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let back: Vec<Live> = payloads
            .iter()
            .flat_map(|p| serde_json::from_str::<Payload>(p).unwrap().into_items())
            .collect();
        assert_eq!(back, items);
        assert!(pack(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_single_item_payload_still_reads() {
        let item = Live::Changes {
            event_id: Uuid::now_v7(),
            head: 7,
        };
        let json = serde_json::to_string(&item).unwrap();
        let back = serde_json::from_str::<Payload>(&json).unwrap().into_items();
        assert_eq!(back, vec![item]);
    }
}
