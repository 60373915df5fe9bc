//! The gate's decision: credential in, durable outbox row out (parse, ed25519 verify, replica
//! lookups, a commit with `synchronous=FULL`), on a replica of 100,000 tickets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use gate_agent::decide::{Gate, ScanRequest};
use gate_agent::replica::{Enrollment, Replica};
use sync_protocol::TicketFields;
use sync_protocol::wire::{
    Change, ChangeData, Decision, GateConfig, SigningKeyChange, TicketChange,
};
use uuid::Uuid;

use crate::api::percentile;

pub struct Decisions {
    pub inputs: usize,
    pub n: usize,
    pub per_sec: f64,
    pub p99: Duration,
}

fn credential(key: &SigningKey, serial: u64) -> String {
    TicketFields {
        key_id: 1,
        event_tag: 7,
        serial,
        valid_from: 1_700_000_000,
        valid_until: 2_000_000_000,
        scopes: 1,
    }
    .sign(key)
    .encode()
}

/// One input scanning alone (a commit per decision), then 16 inputs at once (the decision
/// thread group-commits what is queued).
pub async fn decisions(tickets: u64) -> anyhow::Result<Vec<Decisions>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("replica.db");
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let (gate_id, event_id) = (Uuid::now_v7(), Uuid::now_v7());
    let mut r = Replica::open(&path)?;
    r.store_enrollment(&Enrollment {
        server_url: "http://127.0.0.1:9".into(),
        gate_id,
        event_id,
        credential: "x".into(),
    })?;
    let mut changes = vec![
        Change {
            change_seq: 1,
            deleted: false,
            data: ChangeData::SigningKey(SigningKeyChange {
                key_id: 1,
                public_key: hex::encode(key.verifying_key().to_bytes()),
                retired: false,
            }),
        },
        Change {
            change_seq: 2,
            deleted: false,
            data: ChangeData::GateConfig(GateConfig {
                gate_id,
                event_id,
                event_tag: 7,
                name: "bench".into(),
                is_active: true,
                ..Default::default()
            }),
        },
    ];
    for serial in 1..=tickets {
        changes.push(Change {
            change_seq: serial + 2,
            deleted: false,
            data: ChangeData::Ticket(TicketChange {
                serial,
                display_name: Some(format!("Attendee number {serial}")),
                scopes: 1,
                valid_from: 1_700_000_000,
                valid_until: 2_000_000_000,
                ..Default::default()
            }),
        });
    }
    for page in changes.chunks(5_000) {
        let next = page.last().map_or(0, |c| c.change_seq);
        r.apply_changes(page, next)?;
    }
    drop(r);

    let mut out = Vec::new();
    let per_run = (tickets / 4).min(10_000);
    for (run, inputs) in [1usize, 16].into_iter().enumerate() {
        let first = 1 + run as u64 * per_run;
        let texts: Vec<String> = (first..first + per_run)
            .map(|s| credential(&key, s))
            .collect();
        let handle = gate_agent::handle::GateHandle::spawn(
            Gate::new(Replica::open(&path)?)?,
            Arc::new(tokio::sync::Notify::new()),
        )?;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for part in texts.chunks(texts.len().div_ceil(inputs)) {
            let (part, h) = (part.to_vec(), handle.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(part.len());
                for t in part {
                    let s = Instant::now();
                    let o = h.scan(ScanRequest::text(t)).await?;
                    lat.push(s.elapsed());
                    anyhow::ensure!(
                        o.decision == Decision::Admit,
                        "not admitted: {:?}",
                        o.reason
                    );
                }
                anyhow::Ok(lat)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await??);
        }
        let wall = start.elapsed();
        lat.sort_unstable();
        out.push(Decisions {
            inputs,
            n: lat.len(),
            per_sec: lat.len() as f64 / wall.as_secs_f64(),
            p99: percentile(&lat, 0.99),
        });
    }
    Ok(out)
}
