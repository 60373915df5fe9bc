//! Fault tests: two real `gate-agent` processes push a storm of scans while the server is
//! killed with SIGKILL, its PostgreSQL restarted and stopped, or the network between them drops,
//! delays and truncates; and a gate whose clock is ten minutes off. At the end the counts are
//! exact: every scan a gate reported is stored on the server once, nothing is stored twice, and
//! no ticket is admitted twice except where two gates that could not see each other both let
//! the same person in, each such case being one `duplicate_admission` conflict.
//!
//! Real processes, real HTTP over loopback, real PostgreSQL (see `e2e_support`). The "random"
//! moments come from a fixed seed, so a failure replays; figures are printed, never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod e2e_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e_support::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;

/// Scans per gate in a storm.
const SCANS_PER_GATE: usize = 1_000;
/// Tickets only gate A scans, then as many only gate B scans, then [`SHARED`] both scan.
const OWN_TICKETS: usize = 120;
const SHARED: usize = 10;
/// Outboxes drain within the agents' backoff cap (30 s) plus a round trip; slack on top.
const CATCH_UP: Duration = Duration::from_secs(90);

/// xorshift64: reproducible "random" moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------- the server as a process

const SERVE_DIR: &str = "USHER_FAULTS_SERVE_DIR";
const SERVE_DB: &str = "USHER_FAULTS_SERVE_DB";
const SERVE_PORT: &str = "USHER_FAULTS_SERVE_PORT";

/// Not a test: the server process of [`server_killed_mid_storm`]. This test binary runs itself
/// with only this function selected and the `USHER_FAULTS_SERVE_*` environment, so the server
/// (`server::build`, as the `server` binary runs it) is a process of its own that can be killed
/// with SIGKILL. Without that environment it returns at once.
#[test]
#[ignore = "the server process of the fault tests; they start it"]
fn server_process() {
    let (Ok(dir), Ok(db), Ok(port)) = (
        std::env::var(SERVE_DIR),
        std::env::var(SERVE_DB),
        std::env::var(SERVE_PORT),
    ) else {
        return;
    };
    let port: u16 = port.parse().expect("port");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        server::telemetry::init_for_tests();
        let mut settings = server::Settings::for_test(dir.clone().into(), Some(db));
        settings.listen = SocketAddr::from(([127, 0, 0, 1], port));
        let app = server::build(settings).await.expect("server::build");
        if let Some(password) = &app.initial_admin_password {
            // Written whole, then renamed: the test never reads half a password.
            let tmp = Path::new(&dir).join("admin-password.tmp");
            std::fs::write(&tmp, password).expect("write the password");
            std::fs::rename(&tmp, Path::new(&dir).join("admin-password")).expect("rename");
        }
        app.run_until_stopped(std::future::pending::<()>())
            .await
            .expect("server run");
    });
}

/// One server process on `port` over `db_url`, its master key in `dir`; killed on drop.
struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    async fn start(dir: &Path, db_url: &str, port: u16) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The killed predecessor's port must be free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "port {port} still in use");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("server log");
        let child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "server_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SERVE_DIR, dir)
            .env(SERVE_DB, db_url)
            .env(SERVE_PORT, port.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the server process");
        let mut me = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!(
                    "the server process exited with {status}:\n{}",
                    tail(&dir.join("server.log"))
                );
            }
            let ready = client
                .get(format!("{}/readyz", me.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return me;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "server not ready in 60 s:\n{}",
                tail(&dir.join("server.log"))
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reap.
    async fn kill9(mut self) {
        self.child.kill().await.expect("SIGKILL the server");
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

// ---------------------------------------------------------------- the event and the storm

/// An event with `OWN_TICKETS * 2 + SHARED` participants and two enrolled gates `a` and `b`
/// (not started), enrolled against `gate_server` (the server, or a proxy in front of it).
struct World {
    api: Api,
    event: String,
    people: Vec<Participant>,
    a: Agent,
    b: Agent,
}

async fn world(api: Api, gate_server: &str, gate_body: Value) -> World {
    let event = api.create_event("Fault storm").await;
    let total = OWN_TICKETS * 2 + SHARED;
    let mut people = Vec::with_capacity(total);
    // A few at a time: the storm needs hundreds.
    for chunk in (0..total).collect::<Vec<_>>().chunks(16) {
        let batch = chunk.iter().map(|i| {
            let name = format!("Guest {i}");
            let (api, event) = (&api, &event);
            async move { api.create_participant(event, &name).await }
        });
        people.extend(futures_util::future::join_all(batch).await);
    }
    let mut agents = Vec::new();
    for name in ["north", "south"] {
        let mut body = gate_body.clone();
        body["name"] = json!(name);
        let gate = api
            .call(
                Method::POST,
                &format!("/api/v1/events/{event}/gates"),
                Some(body),
            )
            .await
            .expect_status(201)["id"]
            .as_str()
            .expect("gate id")
            .to_owned();
        let code = api.enrollment_code(&event, &gate).await;
        agents.push(Agent::enroll(name, gate_server, &code).await);
    }
    let b = agents.pop().expect("south");
    let a = agents.pop().expect("north");
    World {
        api,
        event,
        people,
        a,
        b,
    }
}

/// What one gate scans: each of its own tickets, then the shared ones, then its own again (now
/// `already_inside`), shuffled, [`SCANS_PER_GATE`] in all.
fn feed(people: &[Participant], own: std::ops::Range<usize>, rng: &mut Rng) -> Vec<String> {
    let shared = OWN_TICKETS * 2..OWN_TICKETS * 2 + SHARED;
    let mut first: Vec<usize> = own.clone().chain(shared).collect();
    rng.shuffle(&mut first);
    let mut out: Vec<usize> = first;
    while out.len() < SCANS_PER_GATE {
        out.push(own.start + rng.below(own.len() as u64) as usize);
    }
    out.into_iter()
        .map(|i| people[i].credential.clone())
        .collect()
}

/// Scans `feed` one after the other, counting each reported decision in `progress`; returns
/// the agent and the decision lines.
async fn storm(
    mut agent: Agent,
    feed: Vec<String>,
    progress: Arc<AtomicUsize>,
) -> (Agent, Vec<Value>) {
    let mut lines = Vec::with_capacity(feed.len());
    for credential in &feed {
        let line = agent.scan(credential).await;
        lines.push(line);
        progress.fetch_add(1, Ordering::Relaxed);
    }
    (agent, lines)
}

/// One gate's storm: the agent and its decision lines once done.
type Storm = tokio::task::JoinHandle<(Agent, Vec<Value>)>;

/// Starts both gates and their storms; returns the shared progress counter and the storms.
fn start_storms(
    people: &[Participant],
    mut a: Agent,
    mut b: Agent,
    seed: u64,
) -> (Arc<AtomicUsize>, Storm, Storm) {
    let mut rng = Rng(seed);
    let fa = feed(people, 0..OWN_TICKETS, &mut rng);
    let fb = feed(people, OWN_TICKETS..OWN_TICKETS * 2, &mut rng);
    let progress = Arc::new(AtomicUsize::new(0));
    a.start();
    b.start();
    let ta = tokio::spawn(storm(a, fa, progress.clone()));
    let tb = tokio::spawn(storm(b, fb, progress.clone()));
    (progress, ta, tb)
}

/// Waits until both outboxes are empty and the server lists `expected` check-ins.
async fn wait_drained(api: &Api, event: &str, a: &Agent, b: &Agent, expected: usize) -> Duration {
    let (_, took) = poll(
        "both outboxes to drain into the server",
        CATCH_UP,
        Duration::from_millis(250),
        async || {
            let da = a.status().await["outbox_depth"]
                .as_u64()
                .unwrap_or(u64::MAX);
            let db = b.status().await["outbox_depth"]
                .as_u64()
                .unwrap_or(u64::MAX);
            let stored = api.checkins(event).await.len();
            if (da, db, stored) == (0, 0, expected) {
                Ok(())
            } else {
                Err(format!(
                    "outboxes {da} and {db}; the server holds {stored} of {expected} check-ins"
                ))
            }
        },
    )
    .await;
    took
}

/// The exact counts at the end of a storm: the server's check-ins are exactly the reported
/// decisions (by id, once each, same gate, seq and decision), each gate's seqs are dense, a
/// ticket only one gate scanned is admitted exactly once, a shared one once or twice, and the
/// tickets admitted twice are exactly the `duplicate_admission` conflicts. Returns the number
/// of double admissions.
async fn assert_exact(
    w_api: &Api,
    event: &str,
    people: &[Participant],
    reported: &[(&Agent, &[Value])],
) -> usize {
    let stored = w_api.checkins(event).await;
    let mut by_id: BTreeMap<String, &Value> = BTreeMap::new();
    for c in &stored {
        let id = c["id"].as_str().expect("id").to_owned();
        assert!(by_id.insert(id, c).is_none(), "stored twice: {c}");
    }
    let mut reported_ids = BTreeSet::new();
    for (agent, lines) in reported {
        let mut seqs = Vec::new();
        for line in *lines {
            let id = line["id"].as_str().expect("decision id");
            assert!(reported_ids.insert(id.to_owned()), "reported twice: {line}");
            let c = by_id
                .get(id)
                .unwrap_or_else(|| panic!("reported but not stored: {line}"));
            assert_eq!(c["gate_id"], agent.gate_id.as_str(), "{c}");
            assert_eq!(c["seq"], line["seq"], "{c} vs {line}");
            assert_eq!(c["decision"], line["decision"], "{c} vs {line}");
            assert_eq!(c["ticket_serial"], line["ticket_serial"], "{c} vs {line}");
            assert!(c["invalid"].is_null(), "stored as invalid: {c}");
            seqs.push(line["seq"].as_u64().expect("seq"));
        }
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=lines.len() as u64).collect::<Vec<_>>(),
            "seqs of {}",
            agent.name
        );
    }
    assert_eq!(
        reported_ids.len(),
        by_id.len(),
        "the server holds check-ins no gate reported"
    );
    let mut admits: BTreeMap<u64, usize> = BTreeMap::new();
    for c in &stored {
        if c["decision"] == "admit" && c["direction"] == "in" && c["undoes"].is_null() {
            *admits
                .entry(c["ticket_serial"].as_u64().expect("serial"))
                .or_default() += 1;
        }
    }
    let shared: BTreeSet<u64> = people[OWN_TICKETS * 2..].iter().map(|p| p.serial).collect();
    let mut twice = BTreeSet::new();
    for p in people {
        let n = admits.get(&p.serial).copied().unwrap_or(0);
        if shared.contains(&p.serial) {
            assert!(
                (1..=2).contains(&n),
                "shared ticket {} admitted {n} times",
                p.serial
            );
            if n == 2 {
                twice.insert(p.serial);
            }
        } else {
            assert_eq!(n, 1, "ticket {} admitted {n} times", p.serial);
        }
    }
    let conflicts = w_api.conflicts(event, "duplicate_admission").await;
    let conflicted: BTreeSet<u64> = conflicts
        .iter()
        .map(|c| c["ticket_serial"].as_u64().expect("serial"))
        .collect();
    assert_eq!(
        conflicts.len(),
        conflicted.len(),
        "one conflict per ticket: {conflicts:#?}"
    );
    assert_eq!(
        conflicted, twice,
        "the duplicate_admission conflicts are not exactly the tickets admitted twice"
    );
    twice.len()
}

// ---------------------------------------------------------------- (a) kill -9 of the server

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_storm() {
    let pg = PgDatabase::create("usher_faults")
        .await
        .expect("a fresh PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = ServerProcess::start(dir.path(), &pg.url, port).await;
    let password = std::fs::read_to_string(dir.path().join("admin-password"))
        .expect("the first start writes the admin password");
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let base = server.base.clone();
    let w = world(api, &base, json!({"direction": "both"})).await;
    let t0 = Instant::now();
    let (progress, ta, tb) = start_storms(&w.people, w.a, w.b, 0x5EED_0001);

    // Kill the server when the gates have reported a seeded number of scans, three times.
    let mut rng = Rng(0xC0FF_EE00_0000_0001);
    let total = 2 * SCANS_PER_GATE;
    let mut at: Vec<usize> = (0..3)
        .map(|_| rng.between(total as u64 / 10, total as u64 * 8 / 10) as usize)
        .collect();
    at.sort_unstable();
    let mut kills = Vec::new();
    for threshold in at {
        while progress.load(Ordering::Relaxed) < threshold {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stored_before = w.api.checkins(&w.event).await.len();
        server.kill9().await;
        let down = Duration::from_millis(rng.between(200, 1_500));
        tokio::time::sleep(down).await;
        server = ServerProcess::start(dir.path(), &pg.url, port).await;
        kills.push((threshold, stored_before, down));
    }
    let (a, la) = ta.await.expect("storm north");
    let (b, lb) = tb.await.expect("storm south");
    let scanned = t0.elapsed();
    let expected = la.len() + lb.len();
    let took = wait_drained(&w.api, &w.event, &a, &b, expected).await;
    let twice = assert_exact(&w.api, &w.event, &w.people, &[(&a, &la), (&b, &lb)]).await;
    eprintln!(
        "{expected} scans in {scanned:?}; kills at (reported, stored, down): {kills:?}; \
         drained {took:?} after the storm; {twice} double admissions of {SHARED} shared tickets"
    );
    drop((a, b));
    server.kill9().await;
}

// ---------------------------------------------------------------- (b) PostgreSQL restarted and stopped

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_stopped_mid_storm() {
    // A cluster of this test's own: stopping it must not disturb other tests.
    let cluster = Arc::new(
        tokio::task::spawn_blocking(server::testing::PrivateCluster::start)
            .await
            .expect("join")
            .expect("a private PostgreSQL cluster (initdb, pg_ctl)"),
    );
    let pg = PgDatabase::create_on(cluster.url(), "usher_faults_pg")
        .await
        .expect("a database on the private cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &pg.url, free_port()).await;
    let password = server.initial_admin_password.clone().expect("admin");
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let w = world(api, &server.base, json!({"direction": "both"})).await;
    let t0 = Instant::now();
    let (progress, ta, tb) = start_storms(&w.people, w.a, w.b, 0x5EED_0002);

    let mut rng = Rng(0xC0FF_EE00_0000_0002);
    let total = 2 * SCANS_PER_GATE as u64;
    let restart_at = rng.between(total / 10, total * 4 / 10) as usize;
    let stop_at = rng.between(total * 5 / 10, total * 8 / 10) as usize;
    let down = Duration::from_millis(rng.between(1_000, 3_000));
    let wait_for = async |n: usize| {
        while progress.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    wait_for(restart_at).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart_immediate())
        .await
        .expect("join")
        .expect("pg_ctl stop -m immediate, then start");
    wait_for(stop_at).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop_immediate())
        .await
        .expect("join")
        .expect("pg_ctl stop -m immediate");
    tokio::time::sleep(down).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start_again())
        .await
        .expect("join")
        .expect("pg_ctl start");

    let (a, la) = ta.await.expect("storm north");
    let (b, lb) = tb.await.expect("storm south");
    let scanned = t0.elapsed();
    let expected = la.len() + lb.len();
    let took = wait_drained(&w.api, &w.event, &a, &b, expected).await;
    let twice = assert_exact(&w.api, &w.event, &w.people, &[(&a, &la), (&b, &lb)]).await;
    eprintln!(
        "{expected} scans in {scanned:?}; PostgreSQL restarted at {restart_at} reported scans, \
         stopped for {down:?} at {stop_at}; drained {took:?} after the storm; {twice} double \
         admissions of {SHARED} shared tickets"
    );
    drop((a, b));
    server.stop().await;
}

// ---------------------------------------------------------------- (c) a faulty network

/// What the proxy does with one connection.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Forward both ways, then cut the connection after this many ms.
    CutAfter(u64),
    /// Hold the connection this many ms before forwarding anything, then as `CutAfter`.
    Delay(u64, u64),
    /// Forward the request, but only this many bytes of the answer, then close.
    Truncate(u64),
}

#[derive(Debug, Default)]
struct ProxyStats {
    connections: AtomicUsize,
    cut: AtomicUsize,
    delayed: AtomicUsize,
    truncated: AtomicUsize,
}

/// A loopback TCP proxy in front of `upstream`. While `faulty`, each new connection gets a
/// seeded [`Fault`]; afterwards connections pass untouched.
struct Proxy {
    addr: SocketAddr,
    faulty: Arc<AtomicBool>,
    stats: Arc<ProxyStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let faulty = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(ProxyStats::default());
        let (f, st) = (faulty.clone(), stats.clone());
        let task = tokio::spawn(async move {
            let mut rng = Rng(seed);
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::Relaxed);
                let fault = f.load(Ordering::Relaxed).then(|| match rng.below(3) {
                    0 => Fault::CutAfter(rng.between(0, 2_000)),
                    1 => Fault::Delay(rng.between(50, 1_500), rng.between(100, 3_000)),
                    _ => Fault::Truncate(rng.between(1, 1_500)),
                });
                tokio::spawn(relay(client, upstream, fault, st.clone()));
            }
        });
        Self {
            addr,
            faulty,
            stats,
            task,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Option<Fault>,
    st: Arc<ProxyStats>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    match fault {
        None => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Some(Fault::CutAfter(ms)) => {
            st.cut.fetch_add(1, Ordering::Relaxed);
            let both = tokio::io::copy_bidirectional(&mut client, &mut server);
            let _ = tokio::time::timeout(Duration::from_millis(ms), both).await;
        }
        Some(Fault::Delay(hold, cut)) => {
            st.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(hold)).await;
            let both = tokio::io::copy_bidirectional(&mut client, &mut server);
            let _ = tokio::time::timeout(Duration::from_millis(cut), both).await;
        }
        Some(Fault::Truncate(bytes)) => {
            st.truncated.fetch_add(1, Ordering::Relaxed);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            let mut limited = tokio::io::AsyncReadExt::take(&mut sr, bytes);
            let _ = tokio::io::copy(&mut limited, &mut cw).await;
            let _ = cw.shutdown().await;
            up.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_push_through_a_network_that_drops_delays_and_truncates() {
    let pg = PgDatabase::create("usher_faults_net")
        .await
        .expect("a fresh PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Server::start(dir.path(), &pg.url, port).await;
    let password = server.initial_admin_password.clone().expect("admin");
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let upstream = SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = Proxy::start(upstream, 0x5EED_0003).await;
    // Enrollment itself goes through the proxy, which behaves until the storm starts.
    proxy.faulty.store(false, Ordering::Relaxed);
    let w = world(
        api,
        &format!("http://{}", proxy.addr),
        json!({"direction": "both"}),
    )
    .await;
    proxy.faulty.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let (_, ta, tb) = start_storms(&w.people, w.a, w.b, 0x5EED_0004);
    let (a, la) = ta.await.expect("storm north");
    let (b, lb) = tb.await.expect("storm south");
    // Keep the network bad a little longer, so pushes of the storm's end meet it too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.faulty.store(false, Ordering::Relaxed);
    let scanned = t0.elapsed();
    let expected = la.len() + lb.len();
    let took = wait_drained(&w.api, &w.event, &a, &b, expected).await;
    let twice = assert_exact(&w.api, &w.event, &w.people, &[(&a, &la), (&b, &lb)]).await;
    let s = &proxy.stats;
    eprintln!(
        "{expected} scans in {scanned:?}; proxy: {} connections, {} cut, {} delayed, {} \
         truncated; drained {took:?} after the network healed; {twice} double admissions of \
         {SHARED} shared tickets",
        s.connections.load(Ordering::Relaxed),
        s.cut.load(Ordering::Relaxed),
        s.delayed.load(Ordering::Relaxed),
        s.truncated.load(Ordering::Relaxed),
    );
    assert!(
        s.truncated.load(Ordering::Relaxed) > 0 && s.cut.load(Ordering::Relaxed) > 0,
        "the storm met no faults"
    );
    drop((a, b));
    server.stop().await;
}

// ---------------------------------------------------------------- (e) a gate clock ten minutes off

const TEN_MINUTES_MS: i64 = 10 * 60 * 1_000;

fn real_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

fn hlc_of(c: &Value) -> sync_protocol::Hlc {
    sync_protocol::Hlc::from_u64(c["hlc"].as_str().expect("hlc").parse().expect("u64"))
}

async fn gate(api: &Api, event: &str, server: &str, name: &str, body: Value) -> Agent {
    let mut body = body;
    body["name"] = json!(name);
    let id = api
        .call(
            Method::POST,
            &format!("/api/v1/events/{event}/gates"),
            Some(body),
        )
        .await
        .expect_status(201)["id"]
        .as_str()
        .expect("gate id")
        .to_owned();
    Agent::enroll(name, server, &api.enrollment_code(event, &id).await).await
}

/// Waits until `agent` has pulled to the server's head.
async fn wait_pulled(server: &Server, event: &str, agent: &Agent) {
    poll(
        &format!("{} to pull to the head", agent.name),
        CATCH_UP,
        Duration::from_millis(100),
        async || {
            let head = server.head(event).await;
            let s = agent.status().await;
            if s["replica_cursor"] == head && s["outbox_depth"] == 0 {
                Ok(())
            } else {
                Err(format!("head {head}, status {s}"))
            }
        },
    )
    .await;
}

/// The server's clock as a gate reads it (`server_time` of a pull with the gate's credential).
async fn server_clock(base: &str, agent: &Agent) -> sync_protocol::Hlc {
    let replica = gate_agent::replica::Replica::open(&agent.dir.path().join("replica.db"))
        .expect("open the replica");
    let credential = replica.require_enrollment().expect("enrolled").credential;
    let client = gate_agent::sync::client::SyncClient::new(base, Some(credential)).expect("client");
    client.pull(0, 1, None).await.expect("pull").server_time
}

/// North (ten minutes slow) lets ten people in, South (on time) five of them out, East (ten
/// minutes fast) five others in: every scan is stored once, East's as invalid placeholders
/// (beyond the bound, counted nowhere), entry then exit on the server, five inside, and the
/// server's clock not dragged ahead by East.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_clock_ten_minutes_off_counts_once_and_leaves_the_server_clock_alone() {
    skewed_clocks(false).await;
}

/// As above, then the five who left come back in at the slow North gate. Their re-entry must
/// sort after their exit. It does not: North refuses the server's clock as "too far ahead" of
/// its own wall clock (more than `MAX_CLOCK_AHEAD_MS`), so it stamps the re-entry ten minutes
/// before the exit it already knew about; the fold then sees entry, entry, exit: a passback
/// and nobody inside. Fixing it means deciding how far a gate may trust the server's clock
/// beyond the bound (DESIGN: clocks); until then this test documents the fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known fault: a gate clock more than MAX_CLOCK_AHEAD_MS slow orders its re-entries before the exits it saw"]
async fn a_slow_gate_re_entry_sorts_after_the_exit_it_saw() {
    skewed_clocks(true).await;
}

async fn skewed_clocks(reenter: bool) {
    let pg = PgDatabase::create("usher_faults_clock")
        .await
        .expect("a fresh PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &pg.url, free_port()).await;
    let password = server.initial_admin_password.clone().expect("admin");
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let event = api.create_event("Skewed clocks").await;
    let mut people = Vec::new();
    for i in 0..15 {
        people.push(
            api.create_participant(&event, &format!("Visitor {i}"))
                .await,
        );
    }
    let body = json!({"direction": "both", "allow_reentry": true});
    // North lets people in with a clock ten minutes slow, South lets them out on time, East
    // lets people in with a clock ten minutes fast.
    let mut north = gate(&api, &event, &server.base, "north", body.clone()).await;
    let mut south = gate(&api, &event, &server.base, "south", body.clone()).await;
    let mut east = gate(&api, &event, &server.base, "east", body).await;
    north.run_args = vec!["--direction".into(), "in".into()];
    south.run_args = vec!["--direction".into(), "out".into()];
    east.run_args = vec!["--direction".into(), "in".into()];
    let offset = gate_agent::decide::CLOCK_OFFSET_ENV.to_owned();
    north.run_env = vec![(offset.clone(), (-TEN_MINUTES_MS).to_string())];
    east.run_env = vec![(offset, TEN_MINUTES_MS.to_string())];
    north.start();
    south.start();
    east.start();

    let mut reported: Vec<(String, Value)> = Vec::new();
    // 1. Ten people come in at North.
    for p in &people[..10] {
        let line = north.scan(&p.credential).await;
        assert_decision(&line, "admit", None, p.serial);
        reported.push((north.gate_id.clone(), line));
    }
    wait_pulled(&server, &event, &north).await;
    wait_pulled(&server, &event, &south).await;
    // 2. Five of them leave at South, ten minutes "later" than North's clock says.
    for p in &people[..5] {
        let line = south.scan(&p.credential).await;
        assert_decision(&line, "admit", None, p.serial);
        assert_eq!(line["direction"], "out", "{line}");
        reported.push((south.gate_id.clone(), line));
    }
    wait_pulled(&server, &event, &south).await;
    wait_pulled(&server, &event, &north).await;
    // 3. They come back in at North.
    for p in people[..5].iter().filter(|_| reenter) {
        let line = north.scan(&p.credential).await;
        assert_decision(&line, "admit", None, p.serial);
        reported.push((north.gate_id.clone(), line));
    }
    // 4. East, ten minutes fast, lets five others in.
    for p in &people[10..15] {
        let line = east.scan(&p.credential).await;
        assert_decision(&line, "admit", None, p.serial);
        reported.push((east.gate_id.clone(), line));
    }
    for agent in [&north, &south, &east] {
        poll(
            &format!("{} to push everything", agent.name),
            CATCH_UP,
            Duration::from_millis(100),
            async || match agent.status().await["outbox_depth"].as_u64() {
                Some(0) => Ok(()),
                other => Err(format!("outbox {other:?}")),
            },
        )
        .await;
    }

    // Every reported scan is stored once.
    let stored = api.checkins(&event).await;
    let by_id: BTreeMap<&str, &Value> = stored
        .iter()
        .map(|c| (c["id"].as_str().expect("id"), c))
        .collect();
    assert_eq!(by_id.len(), stored.len(), "a check-in stored twice");
    assert_eq!(stored.len(), reported.len(), "stored {stored:#?}");
    for (gate, line) in &reported {
        let c = by_id[line["id"].as_str().expect("id")];
        assert_eq!(&c["gate_id"], gate.as_str(), "{c}");
        assert_eq!(c["seq"], line["seq"], "{c}");
        if *gate == east.gate_id {
            // Beyond the bound: kept as an invalid placeholder (its seq, no ticket), counted
            // nowhere.
            let why = c["invalid"]
                .as_str()
                .unwrap_or_else(|| panic!("valid: {c}"));
            assert!(why.contains("clock"), "{why}");
            assert!(c["ticket_serial"].is_null(), "{c}");
        } else {
            assert!(c["invalid"].is_null(), "invalid: {c}");
            assert_eq!(c["decision"], "admit", "{c}");
            assert_eq!(c["direction"], line["direction"], "{c}");
            assert_eq!(c["ticket_serial"], line["ticket_serial"], "{c}");
        }
    }

    // Entry, exit (and entry again): the server orders them as they happened, although North's
    // stamps come from a clock ten minutes behind South's.
    for p in &people[..5] {
        let mut moves: Vec<&Value> = stored
            .iter()
            .filter(|c| c["ticket_serial"] == p.serial)
            .collect();
        moves.sort_by_key(|c| hlc_of(c));
        let seen: Vec<&str> = moves
            .iter()
            .map(|c| c["direction"].as_str().expect("direction"))
            .collect();
        let expected: &[&str] = if reenter {
            &["in", "out", "in"]
        } else {
            &["in", "out"]
        };
        assert_eq!(seen, expected, "ticket {}: {moves:#?}", p.serial);
    }
    let attendance = api.get(&format!("/api/v1/events/{event}/attendance")).await;
    let inside = if reenter { 10 } else { 5 };
    assert_eq!(attendance["inside"], inside, "{attendance}");
    assert_eq!(attendance["admitted_tickets"], 10, "{attendance}");
    let conflicts = api
        .list_all(&format!("/api/v1/events/{event}/conflicts?status=all"))
        .await;
    assert!(conflicts.is_empty(), "{conflicts:#?}");

    // East's clock did not drag the server's along: the server's clock is within its bound of
    // the real time (and, as nothing pulled it, close to it).
    let server_now = server_clock(&server.base, &south).await.wall_ms();
    let real = real_now_ms();
    let ahead = server_now.saturating_sub(real);
    assert!(
        ahead < sync_protocol::MAX_CLOCK_AHEAD_MS,
        "the server's clock runs {ahead} ms ahead"
    );
    let south_offset = south.status().await["clock_offset_ms"]
        .as_i64()
        .expect("offset");
    assert!(
        south_offset < sync_protocol::MAX_CLOCK_AHEAD_MS as i64,
        "South's clock was pulled {south_offset} ms ahead"
    );
    eprintln!(
        "server clock {ahead} ms ahead of real time; South offset {south_offset} ms; North \
         offset {}; East offset {}",
        north.status().await["clock_offset_ms"],
        east.status().await["clock_offset_ms"]
    );
    for a in [&mut north, &mut south, &mut east] {
        a.assert_running();
    }
    drop((north, south, east));
    server.stop().await;
}

// ---------------------------------------------------------------- (d) the gate's disk fills up

#[path = "common/mod.rs"]
mod common;

/// A small tmpfs mounted for this test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where this process may not mount (not root, no CAP_SYS_ADMIN, no tmpfs), or
    /// when `USHER_TEST_NO_MOUNT` is set (to run the fallback where mounting works).
    fn mount(bytes: u64) -> Option<Self> {
        if std::env::var_os("USHER_TEST_NO_MOUNT").is_some() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `dir` with `dir/filler` until a write fails for lack of space.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).expect("filler");
    let chunk = vec![0xA5u8; 16 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
                break;
            }
        }
    }
    // Whatever is left is smaller than a chunk: take it too, byte by byte.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
}

/// A `gate-agent run --no-sync` with a piped scanner; one output line per scanned line.
struct Gate {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Gate {
    fn start(dir: &Path, env: &[(&str, String)]) -> Self {
        let mut child = std::process::Command::new(agent_bin())
            .args([
                "run",
                "--no-sync",
                "--no-ui",
                "--dedupe-ms",
                "0",
                "--data-dir",
            ])
            .arg(dir)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gate-agent run");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn scan(&mut self, credential: &str) -> Value {
        use std::io::Write;
        writeln!(self.stdin, "{credential}").expect("write to the scanner pipe");
        self.stdin.flush().expect("flush");
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| match self.child.try_wait() {
                Ok(Some(status)) => panic!("the gate exited with {status}"),
                _ => panic!("no answer to a scan within 20 s"),
            })
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("open the replica");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .expect("integrity_check")
}

#[test]
fn a_full_disk_records_nothing_says_so_and_scanning_resumes() {
    const TICKETS: u64 = 3_000;
    let f = common::fixture(TICKETS, |g| g.allow_reentry = false);
    let tickets: Vec<String> = (1..=TICKETS).map(|s| f.ticket(s).encode()).collect();
    // A real full file system where this process may mount one; else SQLite's page limit,
    // which takes the same SQLITE_FULL path through the gate.
    let disk = SmallDisk::mount(8 * 1024 * 1024);
    let (data_dir, mut env, how): (std::path::PathBuf, Vec<(&str, String)>, &str) = match &disk {
        Some(d) => {
            // The replica and everything beside it (its key file too).
            for entry in std::fs::read_dir(f.dir.path()).expect("read the data dir") {
                let entry = entry.expect("a data dir entry");
                if entry.file_type().expect("file type").is_file() {
                    std::fs::copy(entry.path(), d.path().join(entry.file_name()))
                        .expect("copy the replica");
                }
            }
            (
                d.path().to_path_buf(),
                Vec::new(),
                "an 8 MiB tmpfs filled up",
            )
        }
        None => {
            let conn = rusqlite::Connection::open(f.path()).expect("open");
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .expect("page_count");
            (
                f.dir.path().to_path_buf(),
                vec![(gate_agent::replica::MAX_PAGES_ENV, (pages + 4).to_string())],
                "PRAGMA max_page_count (no tmpfs mounted)",
            )
        }
    };
    let replica_path = data_dir.join("replica.db");
    let mut gate = Gate::start(&data_dir, &env);
    let mut reported: Vec<Value> = Vec::new();
    let mut next = 0usize;
    // A few scans while there is space.
    for _ in 0..5 {
        let line = gate.scan(&tickets[next]);
        assert_eq!(line["decision"], "admit", "{line}");
        reported.push(line);
        next += 1;
    }
    if let Some(d) = &disk {
        fill(d.path());
    }
    // Scan until the disk has refused three decisions.
    let mut refused: Vec<usize> = Vec::new();
    let mut message = String::new();
    while refused.len() < 3 {
        assert!(next < tickets.len(), "the disk never filled ({how})");
        let line = gate.scan(&tickets[next]);
        if let Some(e) = line["error"].as_str() {
            message = e.to_owned();
            refused.push(next);
        } else {
            // A checkpoint that truncates the WAL frees a little space now and then.
            assert_eq!(line["decision"], "admit", "{line}");
            reported.push(line);
        }
        next += 1;
    }
    assert!(
        message.contains("disk is full") && message.contains("nobody was admitted"),
        "the operator is told: {message}"
    );
    // The gate still answers status while full.
    let out = std::process::Command::new(agent_bin())
        .args(["status", "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("gate-agent status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["checkins_total"], reported.len(), "{status}");

    // Space comes back.
    match &disk {
        Some(d) => std::fs::remove_file(d.path().join("filler")).expect("free the space"),
        None => {
            // The page limit is fixed per process: the gate starts again without it.
            gate.stop();
            env.clear();
            gate = Gate::start(&data_dir, &env);
        }
    }
    // The refused tickets were not recorded: they are admitted now; an admitted one is not.
    for &i in &refused {
        let line = gate.scan(&tickets[i]);
        assert_eq!(line["decision"], "admit", "after space came back: {line}");
        reported.push(line);
    }
    let line = gate.scan(&tickets[0]);
    assert_eq!(line["reason"], "already_inside", "{line}");
    reported.push(line);
    gate.stop();

    assert_eq!(integrity(&replica_path), "ok");
    let replica = gate_agent::replica::Replica::open(&replica_path).expect("open");
    let log = replica.all_checkins().expect("outbox");
    let stored: BTreeMap<String, &gate_agent::replica::OutboxRow> =
        log.iter().map(|r| (r.checkin.id.to_string(), r)).collect();
    assert_eq!(stored.len(), log.len(), "a check-in id stored twice");
    let reported_ids: BTreeSet<String> = reported
        .iter()
        .map(|l| l["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        stored.keys().cloned().collect::<BTreeSet<_>>(),
        reported_ids,
        "the replica holds exactly the reported decisions"
    );
    let mut admits: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &log {
        if r.checkin.decision == sync_protocol::Decision::Admit {
            *admits
                .entry(r.checkin.ticket_serial.expect("serial"))
                .or_default() += 1;
        }
    }
    assert!(admits.values().all(|&n| n == 1), "a ticket admitted twice");
    let seqs: Vec<u64> = log.iter().map(|r| r.checkin.seq).collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "dense seq"
    );
    eprintln!(
        "{how}: {} decisions recorded, {} refused while full, then admitted; integrity ok",
        log.len(),
        refused.len()
    );
}
