//! Sync benchmarks (DESIGN §7), each against the real server on a fresh PostgreSQL database,
//! driven over HTTP like a gate or a thin client would:
//!
//! 1. **Online redeem**: 10 concurrent clients (one keep-alive connection each), one scan per
//!    `POST /api/v1/events/{event}/redeem`, every scan a different valid ticket (so each admits):
//!    redeems/s and p50/p99 latency. Target ≥ 3,500/s, p99 ≤ 20 ms.
//! 2. **Merge**: two gates push batches of 1,000 admitted check-ins of distinct tickets
//!    (`POST /sync/v1/checkins`) at the same time: merged check-ins/s. Target ≥ 50,000/s.
//! 3. **Bootstrap**: a fresh gate pulls an event of 100,000 tickets (`limit=10000`, gzip) and,
//!    separately, pulls and applies it into a real gate replica (`gate_agent::replica`): seconds
//!    to a ready replica. Target ≤ 3 s.
//!
//! Run: `cargo bench -p server --bench sync`. Environment:
//! - `USHER_TEST_DATABASE_URL`: PostgreSQL superuser URL (default: the local server at
//!   `postgres://postgres@127.0.0.1:5432/postgres`, else a private cluster, see `server::testing`;
//!   the `unix` transport needs the local server).
//! - `USHER_BENCH_TRANSPORT`: `tcp`, `unix` or `both` (default `both` when the socket directory
//!   `/var/run/postgresql` exists). `unix` adds `?host=/var/run/postgresql` to the URL: the
//!   server's PostgreSQL connections then avoid TCP (and its delayed-ACK stalls) altogether.
//! - `USHER_BENCH_ONLY`: comma-separated subset of `redeem,merge,bootstrap`.
//! - `USHER_BENCH_AUTH=staff`: redeem with a staff session token instead of the gate credential.
//! - `USHER_BENCH_REDEEMS` (20000), `USHER_BENCH_CLIENTS` (10), `USHER_BENCH_CHECKINS` (100000),
//!   `USHER_BENCH_TICKETS` (100000): sizes. `USHER_BENCH_POOL`: server pool size (default: the
//!   server's own default, 16).
//! - `USHER_BENCH_PG_LOG_MS`: profiling aid, makes PostgreSQL log the benchmark database's
//!   statements slower than this many milliseconds (see the PostgreSQL server log);
//!   `USHER_BENCH_KEEP_DB`: keep the benchmark databases for inspection (drop them yourself).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use sqlx::Connection;
use sync_protocol::Hlc;
use sync_protocol::wire::{
    ChangeData, Checkin, Decision, Direction, Method, PullResponse, PushRequest,
};
use time::OffsetDateTime;
use uuid::Uuid;

const SOCKET_DIR: &str = "/var/run/postgresql";
/// Redeems before the measured run (connections, caches, prepared statements).
const WARMUP_REDEEMS: usize = 300;
const PUSH_BATCH: usize = 1_000;
const PULL_LIMIT: u32 = 10_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The same URL, connecting through the Unix socket directory instead of TCP.
fn unix_url(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}host={SOCKET_DIR}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::var_os("USHER_BENCH_LOG").is_some() {
        server::telemetry::init();
    }
    let admin_url = server::testing::admin_url()?;
    let transport = std::env::var("USHER_BENCH_TRANSPORT").unwrap_or_else(|_| {
        if std::path::Path::new(SOCKET_DIR).is_dir() {
            "both".into()
        } else {
            "tcp".into()
        }
    });
    let transports: Vec<(&str, String)> = match transport.as_str() {
        "tcp" => vec![("TCP", admin_url.clone())],
        "unix" => vec![("Unix socket", unix_url(&admin_url))],
        "both" => vec![
            ("TCP", admin_url.clone()),
            ("Unix socket", unix_url(&admin_url)),
        ],
        other => anyhow::bail!("USHER_BENCH_TRANSPORT={other:?}: use tcp, unix or both"),
    };
    let only =
        std::env::var("USHER_BENCH_ONLY").unwrap_or_else(|_| "redeem,merge,bootstrap".into());
    let cfg = Config {
        redeem: only.contains("redeem"),
        merge: only.contains("merge"),
        bootstrap: only.contains("bootstrap"),
        redeems: env_usize("USHER_BENCH_REDEEMS", 20_000),
        clients: env_usize("USHER_BENCH_CLIENTS", 10).max(1),
        checkins: env_usize("USHER_BENCH_CHECKINS", 100_000),
        tickets: env_usize("USHER_BENCH_TICKETS", 100_000),
        pool: std::env::var("USHER_BENCH_POOL")
            .ok()
            .and_then(|v| v.parse().ok()),
    };

    let mut admin = sqlx::PgConnection::connect(&admin_url).await.map_err(|e| {
        anyhow::anyhow!(
            "PostgreSQL is not reachable at {admin_url} ({e}); start it with \
             `pg_ctlcluster --skip-systemctl-redirect 15 main start`"
        )
    })?;
    for (label, url) in transports {
        let name = format!("usher_bench_{}", Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await?;
        if let Some(ms) = std::env::var("USHER_BENCH_PG_LOG_MS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            // Profiling aid: PostgreSQL logs every statement of the benchmark database slower
            // than this, with its duration.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE \"{name}\" SET log_min_duration_statement = {ms}"
            )))
            .execute(&mut admin)
            .await?;
        }
        println!("== sync benchmarks, PostgreSQL over {label} ==");
        let result = run(&cfg, server::testing::with_database(&url, &name)).await;
        if std::env::var_os("USHER_BENCH_KEEP_DB").is_some() {
            println!("  (kept database {name})");
        } else {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await?;
        }
        result?;
    }
    Ok(())
}

struct Config {
    redeem: bool,
    merge: bool,
    bootstrap: bool,
    redeems: usize,
    clients: usize,
    checkins: usize,
    tickets: usize,
    pool: Option<u32>,
}

/// A running server and an admin session on it.
struct Harness {
    base: String,
    token: String,
    http: reqwest::Client,
}

async fn run(cfg: &Config, db_url: String) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut settings = server::Settings::for_test(dir.path().to_path_buf(), Some(db_url));
    // Benchmark the production default pool, not the small one tests use.
    settings.db_max_connections = cfg.pool.unwrap_or(16);
    let app = server::build(settings).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let password = app.initial_admin_password.clone().unwrap_or_default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let login = expect_json(
        http.post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": "admin@localhost", "password": password})),
    )
    .await?;
    let token = login["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();
    let h = Harness { base, token, http };

    let result = async {
        if cfg.redeem {
            redeem(&h, cfg).await?;
        }
        if cfg.merge || cfg.bootstrap {
            // One event serves both: the bootstrap reads its fresh 100,000 tickets, then the
            // merge admits (distinct) tickets of it.
            let event = h.create_event("Bootstrap and merge").await?;
            let t = Instant::now();
            h.import(&event, cfg.tickets.max(cfg.checkins), "B").await?;
            println!(
                "  (setup: imported {} participants in {:.2} s)",
                cfg.tickets.max(cfg.checkins),
                t.elapsed().as_secs_f64()
            );
            let serials = bootstrap(&h, &event, cfg.bootstrap).await?;
            if cfg.merge {
                merge(&h, &event, &serials, cfg).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = stop.send(());
    let _ = server.await;
    result
}

/// Sends a request, fails unless 2xx, and parses the JSON answer.
async fn expect_json(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    ensure!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(serde_json::from_slice(&bytes)?)
}

fn rfc3339(t: OffsetDateTime) -> anyhow::Result<String> {
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

impl Harness {
    async fn create_event(&self, name: &str) -> anyhow::Result<String> {
        // Open now, so that every ticket is inside its validity window.
        let now = OffsetDateTime::now_utc();
        let event = expect_json(
            self.http
                .post(format!("{}/api/v1/events", self.base))
                .bearer_auth(&self.token)
                .json(&json!({
                    "name": name,
                    // Live: a draft's check-ins are tests, which the merge skips.
                    "status": "live",
                    "starts_at": rfc3339(now - time::Duration::hours(1))?,
                    "ends_at": rfc3339(now + time::Duration::hours(23))?,
                })),
        )
        .await?;
        Ok(event["id"].as_str().context("event id")?.to_owned())
    }

    /// Imports `rows` generated participants (tickets issued) through the CSV route.
    async fn import(&self, event: &str, rows: usize, prefix: &str) -> anyhow::Result<()> {
        let mut csv = String::with_capacity(rows * 80 + 64);
        csv.push_str("external_id,name,email\n");
        for i in 0..rows {
            csv.push_str(&format!(
                "{prefix}-{i:07},Participant {i},p{i}.{prefix}@example.org\n"
            ));
        }
        let result = expect_json(
            self.http
                .post(format!(
                    "{}/api/v1/events/{event}/participants/import",
                    self.base
                ))
                .bearer_auth(&self.token)
                .header("content-type", "text/csv")
                .body(csv),
        )
        .await?;
        ensure!(
            result["created"].as_u64() == Some(rows as u64),
            "unexpected import result {result}"
        );
        Ok(())
    }

    /// The signed `U1:` credential of every ticket of the event.
    async fn credentials(&self, event: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/api/v1/events/{event}/participants?limit=1000",
                self.base
            );
            if let Some(c) = &cursor {
                url.push_str("&cursor=");
                url.push_str(c);
            }
            let page = expect_json(self.http.get(url).bearer_auth(&self.token)).await?;
            for p in page["items"].as_array().context("items")? {
                if let Some(c) = p["ticket"]["credential"].as_str() {
                    out.push(c.to_owned());
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// Creates an entry gate and enrolls it: (gate id, gate credential, next seq).
    /// A gate with no device enrolled (staff redeem on such gates).
    async fn plain_gate(&self, event: &str, name: &str) -> anyhow::Result<Uuid> {
        let gate = expect_json(
            self.http
                .post(format!("{}/api/v1/events/{event}/gates", self.base))
                .bearer_auth(&self.token)
                .json(&json!({"name": name, "direction": "in"})),
        )
        .await?;
        Ok(Uuid::parse_str(gate["id"].as_str().context("gate id")?)?)
    }

    async fn gate(&self, event: &str, name: &str) -> anyhow::Result<(Uuid, String, u64)> {
        let gate_id = self.plain_gate(event, name).await?;
        let code = expect_json(
            self.http
                .post(format!(
                    "{}/api/v1/events/{event}/gates/{gate_id}/enrollments",
                    self.base
                ))
                .bearer_auth(&self.token),
        )
        .await?;
        let enrolled = expect_json(
            self.http
                .post(format!("{}/sync/v1/enroll", self.base))
                .json(&json!({"code": code["code"], "device_name": name})),
        )
        .await?;
        Ok((
            Uuid::parse_str(enrolled["gate_id"].as_str().context("gate_id")?)?,
            enrolled["credential"]
                .as_str()
                .context("credential")?
                .to_owned(),
            enrolled["next_seq"].as_u64().unwrap_or(1),
        ))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn redeem(h: &Harness, cfg: &Config) -> anyhow::Result<()> {
    let event = h.create_event("Redeem").await?;
    let total = WARMUP_REDEEMS + cfg.redeems;
    h.import(&event, total, "R").await?;
    let creds = h.credentials(&event).await?;
    ensure!(creds.len() == total, "expected {total} tickets");
    let creds = Arc::new(creds);
    let url = Arc::new(format!("{}/api/v1/events/{event}/redeem", h.base));
    // The gate's own credential (one lookup per request) or, with `USHER_BENCH_AUTH=staff`, a
    // staff session token (checked without the database) on a gate with no device enrolled.
    let staff = std::env::var("USHER_BENCH_AUTH").is_ok_and(|v| v == "staff");
    let (gate_id, auth) = if staff {
        (
            h.plain_gate(&event, "Box office").await?,
            format!("Bearer {}", h.token),
        )
    } else {
        let (gate_id, credential, _) = h.gate(&event, "Side door").await?;
        (gate_id, format!("Bearer {credential}"))
    };
    let auth = Arc::new(auth);

    // One client (one keep-alive connection) per simulated scanner.
    let clients: Vec<reqwest::Client> = (0..cfg.clients)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .build()
        })
        .collect::<Result<_, _>>()?;

    for (phase, range) in [
        ("warm-up", 0..WARMUP_REDEEMS),
        ("measured", WARMUP_REDEEMS..total),
    ] {
        let next = Arc::new(AtomicUsize::new(range.start));
        let end = range.end;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for client in &clients {
            let (client, next, creds, url, auth) = (
                client.clone(),
                next.clone(),
                creds.clone(),
                url.clone(),
                auth.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut rejected = 0usize;
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
                    if out["decision"] != "admit" {
                        rejected += 1;
                    }
                }
                anyhow::Ok((lat, rejected))
            }));
        }
        let mut lat = Vec::with_capacity(range.len());
        let mut rejected = 0;
        for t in tasks {
            let (l, r) = t.await??;
            lat.extend(l);
            rejected += r;
        }
        let elapsed = start.elapsed();
        ensure!(
            rejected == 0,
            "{rejected} redeems of valid tickets were rejected"
        );
        if phase == "measured" {
            let mut sorted = lat;
            sorted.sort_unstable();
            let n = sorted.len();
            println!(
                "  online redeem:  {n} scans, {} clients{}, {:>6.2} s  {:>7.0} redeems/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.1} ms   (target ≥ 3,500/s, p99 ≤ 20 ms)",
                cfg.clients,
                if staff { " (staff token)" } else { "" },
                elapsed.as_secs_f64(),
                n as f64 / elapsed.as_secs_f64(),
                percentile(&sorted, 0.50).as_secs_f64() * 1e3,
                percentile(&sorted, 0.99).as_secs_f64() * 1e3,
                sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            );
        }
    }
    Ok(())
}

/// Bootstraps a fresh gate of `event`; returns the ticket serials it received.
async fn bootstrap(h: &Harness, event: &str, report: bool) -> anyhow::Result<Vec<u64>> {
    let (_, credential, _) = h.gate(event, "Fresh gate").await?;
    // Gzip only, as the gate agent negotiates it on a slow uplink.
    let client = reqwest::Client::builder().no_zstd().build()?;
    let url = format!("{}/sync/v1/changes", h.base);
    let pull = |after: u64| {
        let req = client
            .get(&url)
            .bearer_auth(&credential)
            .query(&[("after", after), ("limit", u64::from(PULL_LIMIT))]);
        async move {
            let resp = req.send().await?;
            let status = resp.status();
            ensure!(status.is_success(), "pull: {status}");
            ensure!(
                resp.headers()
                    .get("content-encoding")
                    .is_none_or(|v| v == "gzip"),
                "pull not gzip-compressed"
            );
            let bytes = resp.bytes().await?;
            anyhow::Ok(serde_json::from_slice::<PullResponse>(&bytes)?)
        }
    };

    // Pull only (download, decompress, parse).
    let start = Instant::now();
    let (mut after, mut changes, mut pages) = (0u64, 0usize, 0usize);
    let mut serials = Vec::new();
    loop {
        let page = pull(after).await?;
        pages += 1;
        changes += page.changes.len();
        serials.extend(page.changes.iter().filter_map(|c| match &c.data {
            ChangeData::Ticket(t) => Some(t.serial),
            _ => None,
        }));
        after = page.next;
        if !page.more {
            break;
        }
    }
    let pull_only = start.elapsed();
    if !report {
        return Ok(serials);
    }

    // Pull and apply into a real gate replica (durable SQLite), one transaction per page, the
    // way the gate agent's sync worker does it.
    let dir = tempfile::tempdir()?;
    let replica = gate_agent::replica::Replica::open(&dir.path().join("replica.db"))?;
    let replica = Arc::new(std::sync::Mutex::new(replica));
    let start = Instant::now();
    let mut after = 0u64;
    loop {
        let page = pull(after).await?;
        let (more, next) = (page.more, page.next);
        let r = replica.clone();
        tokio::task::spawn_blocking(move || {
            let mut r = r
                .lock()
                .map_err(|_| anyhow::anyhow!("replica lock poisoned"))?;
            r.apply_changes(&page.changes, next)?;
            anyhow::Ok(())
        })
        .await??;
        after = next;
        if !more {
            break;
        }
    }
    let pull_apply = start.elapsed();
    {
        println!(
            "  bootstrap:      {changes} changes in {pages} pages of ≤{PULL_LIMIT}, gzip: pull only {:>5.2} s, pull + apply into a replica {:>5.2} s   (target ≤ 3 s)",
            pull_only.as_secs_f64(),
            pull_apply.as_secs_f64(),
        );
    }
    Ok(serials)
}

async fn merge(h: &Harness, event: &str, serials: &[u64], cfg: &Config) -> anyhow::Result<()> {
    ensure!(
        serials.len() >= cfg.checkins,
        "need {} tickets, the event has {}",
        cfg.checkins,
        serials.len()
    );
    let gates = [h.gate(event, "North").await?, h.gate(event, "South").await?];
    let now = OffsetDateTime::now_utc();
    let wall_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000)?;
    let per_gate = cfg.checkins / gates.len();

    // Serialize every batch up front: the timed part is the server's work.
    let mut plans = Vec::new();
    let mut first_batch = None;
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
            if first_batch.is_none() {
                first_batch = Some((credential.clone(), bodies[0].clone()));
            }
        }
        plans.push((credential.clone(), bodies, seq - 1));
    }

    let url = Arc::new(format!("{}/sync/v1/checkins", h.base));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (credential, bodies, last_seq) in plans {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut stored = 0usize;
            let mut acked = 0;
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
    // A retried push stores nothing twice (and takes the server's upsert path).
    if let Some((credential, body)) = first_batch {
        let resp = expect_json(
            reqwest::Client::new()
                .post(url.as_str())
                .bearer_auth(&credential)
                .header("content-type", "application/json")
                .body(body),
        )
        .await?;
        let results = resp["results"].as_array().context("results")?;
        ensure!(
            !results.is_empty() && results.iter().all(|r| r["status"] == "duplicate"),
            "a re-sent batch was not all duplicate"
        );
    }
    println!(
        "  merge:          {stored} check-ins from {} gates in batches of {PUSH_BATCH}: {:>6.2} s  {:>7.0} check-ins/s   (target ≥ 50,000/s)",
        gates.len(),
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64(),
    );
    Ok(())
}
