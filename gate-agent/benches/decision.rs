//! Scan-to-durable-decision latency and throughput on a 100,000-ticket replica (DESIGN §7:
//! p99 ≤ 1 ms, ≥ 5,000 decisions/s). Every decision here is the full path: parse, verify the
//! ed25519 signature, replica lookups, and an outbox row committed with `synchronous=FULL`.
//!
//! Run with `cargo bench -p gate-agent --bench decision`. `BENCH_TICKETS` / `BENCH_SCANS`
//! override the sizes, `BENCH_DIR` the directory of the replica.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use gate_agent::decide::{Gate, ScanRequest};
use gate_agent::replica::{Enrollment, Replica};
use sync_protocol::wire::{
    Change, ChangeData, Decision, GateConfig, SigningKeyChange, TicketChange,
};
use sync_protocol::{ShortCode, TicketFields};
use uuid::Uuid;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<34} n={:<6} {:>8.0}/s  p50 {:>6.0} µs  p90 {:>6.0} µs  p99 {:>6.0} µs  max {:>7.0} µs",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        us(pct(&lat, 0.50)),
        us(pct(&lat, 0.90)),
        us(pct(&lat, 0.99)),
        us(*lat.last().unwrap_or(&Duration::ZERO)),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tickets = env("BENCH_TICKETS", 100_000);
    let scans = env("BENCH_SCANS", 20_000).min(tickets);
    // BENCH_DIR puts the replica elsewhere (e.g. /dev/shm, to separate the CPU cost of a
    // decision from the device's fsync latency).
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let path = dir.path().join("replica.db");
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let gate_id = Uuid::now_v7();
    let event_id = Uuid::now_v7();

    let t0 = Instant::now();
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
                short_code: Some(ShortCode::from_value(serial * 7919)?.compact()),
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
    println!(
        "replica: {} tickets loaded in {:.2} s ({})",
        r.ticket_count()?,
        t0.elapsed().as_secs_f64(),
        path.display()
    );
    drop(r);

    let texts: Vec<String> = (1..=scans)
        .map(|serial| {
            TicketFields {
                key_id: 1,
                event_tag: 7,
                serial,
                valid_from: 1_700_000_000,
                valid_until: 2_000_000_000,
                scopes: 1,
            }
            .sign(&key)
            .encode()
        })
        .collect();

    let mut gate = Gate::new(Replica::open(&path)?)?;
    // As in `gate-agent run`: a side connection checkpoints the WAL off the decision path.
    let side = Replica::open(&path)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let checkpointer = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            let _ = side.checkpoint();
        }
    });
    // Warm-up: caches and the first WAL growth.
    let _ = gate.scan(&ScanRequest::text("warm-up"))?;

    let mut lat = Vec::with_capacity(texts.len());
    let start = Instant::now();
    for t in &texts {
        let s = Instant::now();
        let o = gate.scan(&ScanRequest::text(t.as_str()))?;
        lat.push(s.elapsed());
        if o.decision != Decision::Admit {
            return Err(format!("expected admit, got {:?}", o.reason).into());
        }
    }
    report("admit (QR, durable commit)", lat, start.elapsed());

    let mut lat = Vec::with_capacity(texts.len());
    let start = Instant::now();
    for t in texts.iter().take(5_000) {
        let s = Instant::now();
        let o = gate.scan(&ScanRequest::text(t.as_str()))?;
        lat.push(s.elapsed());
        if o.decision != Decision::Reject {
            return Err("expected already_inside".into());
        }
    }
    report("reject already_inside (logged)", lat, start.elapsed());

    let codes: Vec<String> = (scans + 1..=tickets.min(scans + 5_000))
        .map(|s| ShortCode::from_value(s * 7919).map(|c| c.to_string()))
        .collect::<Result<_, _>>()?;
    let mut lat = Vec::with_capacity(codes.len());
    let start = Instant::now();
    for c in &codes {
        let s = Instant::now();
        gate.scan(&ScanRequest::text(c.as_str()))?;
        lat.push(s.elapsed());
    }
    report("admit (typed short code)", lat, start.elapsed());
    drop(gate);

    // Several inputs at once (camera, scanner, BLE, screen): the decision thread group-commits
    // what is queued, so throughput is no longer one fsync per decision.
    let concurrent_serials: Vec<u64> = (scans.min(tickets / 2) + 5_001..=tickets)
        .take(20_000)
        .collect();
    let texts: Vec<String> = concurrent_serials
        .iter()
        .map(|&serial| {
            TicketFields {
                key_id: 1,
                event_tag: 7,
                serial,
                valid_from: 1_700_000_000,
                valid_until: 2_000_000_000,
                scopes: 1,
            }
            .sign(&key)
            .encode()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for inputs in [4usize, 16] {
        let gate = Gate::new(Replica::open(&path)?)?;
        let handle = gate_agent::handle::GateHandle::spawn(
            gate,
            std::sync::Arc::new(tokio::sync::Notify::new()),
        )?;
        let chunk: Vec<String> = texts
            .iter()
            .skip(if inputs == 4 { 0 } else { 10_000 })
            .take(10_000)
            .cloned()
            .collect();
        let (lat, wall) = rt.block_on(async {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for part in chunk.chunks(chunk.len().div_ceil(inputs)) {
                let part = part.to_vec();
                let h = handle.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(part.len());
                    for t in part {
                        let s = Instant::now();
                        let _ = h.scan(ScanRequest::text(t)).await;
                        lat.push(s.elapsed());
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap_or_default());
            }
            (all, start.elapsed())
        });
        report(&format!("admit, {inputs} inputs at once"), lat, wall);
    }
    println!("outbox rows: {}", Replica::open(&path)?.outbox_len()?);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = checkpointer.join();
    Ok(())
}
