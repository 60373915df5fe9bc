//! The gate-facing paths (DESIGN §7): the online redeem, the merge of pushed check-ins and a
//! fresh gate's bootstrap into a real replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use sync_protocol::Hlc;
use sync_protocol::wire::{
    ChangeData, Checkin, Decision, Direction, Method, PullResponse, PushRequest,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::api::{Harness, expect_json, percentile};
use crate::proc::{self, ServerProcess};

const PUSH_BATCH: usize = 1_000;
const PULL_LIMIT: u64 = 10_000;

pub struct Redeem {
    pub scans: usize,
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Server and PostgreSQL CPU seconds over the run.
    pub server_cpu: f64,
    pub pg_cpu: f64,
}

/// `clients` scanners (one keep-alive connection each), one scan per request, each scan a
/// different valid ticket of `creds` (so each admits).
pub async fn redeem(
    h: &Harness,
    server: &ServerProcess,
    event: &str,
    gate: (Uuid, String),
    creds: Arc<Vec<String>>,
    clients: usize,
) -> anyhow::Result<Redeem> {
    let (gate_id, credential) = gate;
    let url = Arc::new(h.url(&format!("/api/v1/events/{event}/redeem")));
    let auth = Arc::new(format!("Bearer {credential}"));
    let conns: Vec<reqwest::Client> = (0..clients)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(60))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let next = Arc::new(AtomicUsize::new(0));
    let end = creds.len();
    let (cpu0, pg0) = (server.cpu_secs()?, proc::postgres_cpu_secs());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in conns {
        let (next, creds, url, auth) = (next.clone(), creds.clone(), url.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let body = serde_json::to_vec(&json!({
                    "credential": creds[i],
                    "gate_id": gate_id,
                    "direction": "in",
                }))?;
                let t = Instant::now();
                let resp = client
                    .post(url.as_str())
                    .header("authorization", auth.as_str())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                lat.push(t.elapsed());
                ensure!(
                    status.is_success(),
                    "redeem {status}: {}",
                    String::from_utf8_lossy(&bytes)
                );
                let out: Value = serde_json::from_slice(&bytes)?;
                ensure!(
                    out["decision"] == "admit",
                    "a valid ticket was rejected: {out}"
                );
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::with_capacity(end);
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let (cpu1, pg1) = (server.cpu_secs()?, proc::postgres_cpu_secs());
    lat.sort_unstable();
    Ok(Redeem {
        scans: lat.len(),
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        server_cpu: cpu1 - cpu0,
        pg_cpu: pg1 - pg0,
    })
}

/// Pulls a whole event as a fresh gate does (gzip) and returns every ticket serial.
pub async fn serials(h: &Harness, credential: &str) -> anyhow::Result<Vec<u64>> {
    let client = reqwest::Client::builder().no_zstd().build()?;
    let mut after = 0u64;
    let mut serials = Vec::new();
    loop {
        let page = pull(&client, &h.base, credential, after).await?;
        serials.extend(page.changes.iter().filter_map(|c| match &c.data {
            ChangeData::Ticket(t) => Some(t.serial),
            _ => None,
        }));
        after = page.next;
        if !page.more {
            return Ok(serials);
        }
    }
}

async fn pull(
    client: &reqwest::Client,
    base: &str,
    credential: &str,
    after: u64,
) -> anyhow::Result<PullResponse> {
    let resp = client
        .get(format!("{base}/sync/v1/changes"))
        .bearer_auth(credential)
        .query(&[("after", after), ("limit", PULL_LIMIT)])
        .send()
        .await?;
    let status = resp.status();
    ensure!(status.is_success(), "pull: {status}");
    let bytes = resp.bytes().await?;
    Ok(serde_json::from_slice::<PullResponse>(&bytes)?)
}

pub struct Merge {
    pub stored: usize,
    pub per_sec: f64,
}

/// Two gates push batches of 1,000 admitted check-ins of distinct tickets at the same time.
pub async fn merge(h: &Harness, event: &str, serials: &[u64]) -> anyhow::Result<Merge> {
    let gates = [h.gate(event, "North").await?, h.gate(event, "South").await?];
    let now = OffsetDateTime::now_utc();
    let wall_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000)?;
    let per_gate = serials.len() / gates.len();
    // Every batch is serialized up front: the timed part is the server's work.
    let mut plans = Vec::new();
    for (g, (gate_id, credential, next_seq)) in gates.iter().enumerate() {
        let mine = &serials[g * per_gate..(g + 1) * per_gate];
        let mut bodies = Vec::new();
        let mut seq = *next_seq;
        for chunk in mine.chunks(PUSH_BATCH) {
            let checkins = chunk
                .iter()
                .map(|&serial| {
                    let c = Checkin {
                        id: Uuid::now_v7(),
                        seq,
                        ticket_serial: Some(serial),
                        code: None,
                        method: Method::Qr,
                        direction: Direction::In,
                        decision: Decision::Admit,
                        reason: None,
                        hlc: Hlc::new(wall_ms, 0),
                        scanned_at: now,
                        replica_cursor: 0,
                        operator_override: None,
                        undoes: None,
                    };
                    seq += 1;
                    c
                })
                .collect();
            bodies.push(serde_json::to_vec(&PushRequest {
                gate_id: *gate_id,
                checkins,
            })?);
        }
        plans.push((credential.clone(), bodies, seq - 1));
    }
    let url = Arc::new(h.url("/sync/v1/checkins"));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (credential, bodies, last_seq) in plans {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut stored, mut acked) = (0usize, 0);
            for body in bodies {
                let resp = expect_json(
                    client
                        .post(url.as_str())
                        .bearer_auth(&credential)
                        .header("content-type", "application/json")
                        .body(body),
                )
                .await?;
                acked = resp["acked_through_seq"].as_u64().unwrap_or(0);
                stored += resp["results"]
                    .as_array()
                    .context("results")?
                    .iter()
                    .filter(|r| r["status"] == "stored" && r["outcome"] == "inside")
                    .count();
            }
            ensure!(acked == last_seq, "acked {acked}, expected {last_seq}");
            anyhow::Ok(stored)
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await??;
    }
    let elapsed = start.elapsed();
    ensure!(
        stored == per_gate * gates.len(),
        "{stored} check-ins stored and inside, expected {}",
        per_gate * gates.len()
    );
    Ok(Merge {
        stored,
        per_sec: stored as f64 / elapsed.as_secs_f64(),
    })
}

pub struct Bootstrap {
    pub changes: u64,
    pub secs: f64,
    pub peak_rss_mb: f64,
}

/// A fresh gate's bootstrap in its own process (`bench __bootstrap`), so that its peak memory
/// is the gate's alone.
pub fn bootstrap(base: &str, credential: &str) -> anyhow::Result<Bootstrap> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["__bootstrap", base, credential])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [changes, secs, peak] = f[..] else {
        bail!("bootstrap process failed ({}): {text}", out.status);
    };
    Ok(Bootstrap {
        changes: changes as u64,
        secs,
        peak_rss_mb: peak,
    })
}

/// `bench __bootstrap BASE CREDENTIAL`: pulls the gate's event and applies it into a new
/// durable replica, one transaction per page, as the gate agent's sync worker does; prints
/// `changes seconds peak-RSS-MB`.
pub async fn bootstrap_child(args: &[String]) -> anyhow::Result<()> {
    let [base, credential] = args else {
        bail!("usage: bench __bootstrap BASE CREDENTIAL");
    };
    let dir = tempfile::tempdir()?;
    let replica = gate_agent::replica::Replica::open(&dir.path().join("replica.db"))?;
    let replica = Arc::new(std::sync::Mutex::new(replica));
    let client = reqwest::Client::builder().no_zstd().build()?;
    let start = Instant::now();
    let (mut after, mut changes) = (0u64, 0u64);
    loop {
        let page = pull(&client, base, credential, after).await?;
        let (more, next) = (page.more, page.next);
        changes += page.changes.len() as u64;
        let r = replica.clone();
        tokio::task::spawn_blocking(move || {
            let mut r = r.lock().map_err(|_| anyhow::anyhow!("replica lock"))?;
            r.apply_changes(&page.changes, next)?;
            anyhow::Ok(())
        })
        .await??;
        after = next;
        if !more {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let peak = proc::status_kb(std::process::id(), "VmHWM:")? / 1024.0;
    println!("{changes} {secs:.3} {peak:.1}");
    Ok(())
}
