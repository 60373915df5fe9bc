//! 1,000 parallel logins with distinct e-mails from many client addresses against the real
//! server binary: its memory stays bounded (argon2 runs under a limit, logins have budgets)
//! and it keeps answering `/healthz` within a second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LOGINS: usize = 1_000;
const IN_FLIGHT: usize = 200;
const CLIENT_ADDRESSES: u8 = 50;
const RSS_LIMIT_KB: u64 = 300 * 1024;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `VmRSS` and `VmHWM` (peak) of a process, in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_parallel_logins_keep_the_server_small_and_answering() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("USHER_MASTER_KEY")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server binary");
    let stdout = child.stdout.take().unwrap();
    let pid = child.id();
    let server = Server(child);
    // The first start prints the admin's password: the server is built once it has.
    let started = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.trim_start().starts_with("password:"))
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(60), started)
            .await
            .expect("the server started within 60 s")
            .unwrap(),
        "the server printed no admin password"
    );
    let base = format!("http://127.0.0.1:{port}");
    let health = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if health.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "no /healthz answer");
    let (rss_idle, _) = rss_kb(pid);

    // Watch memory and health while the logins run; stop the server if it runs away, so a
    // regression fails the test instead of exhausting the machine.
    let done = Arc::new(AtomicBool::new(false));
    let slowest_health_ms = Arc::new(AtomicU64::new(0));
    let over_limit = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, slowest, over) = (done.clone(), slowest_health_ms.clone(), over_limit.clone());
        let (health, base) = (health.clone(), base.clone());
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(Ordering::Acquire) {
                let (rss, hwm) = rss_kb(pid);
                peak = peak.max(rss).max(hwm);
                if peak > RSS_LIMIT_KB {
                    over.store(true, Ordering::Release);
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                    return peak;
                }
                let t = Instant::now();
                let ok = health
                    .get(format!("{base}/healthz"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let ms = if ok {
                    t.elapsed().as_millis() as u64
                } else {
                    u64::MAX
                };
                slowest.fetch_max(ms, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };

    let clients: Vec<reqwest::Client> = (1..=CLIENT_ADDRESSES)
        .map(|i| {
            reqwest::Client::builder()
                .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap()
        })
        .collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..LOGINS {
        let client = clients[i % clients.len()].clone();
        let permit = limit.clone().acquire_owned().await.unwrap();
        let url = format!("{base}/api/v1/auth/login");
        tasks.spawn(async move {
            let status = client
                .post(url)
                .json(&serde_json::json!({
                    "email": format!("user{i}@example.org"),
                    "password": "not the right password",
                }))
                .send()
                .await
                .map(|r| r.status().as_u16());
            drop(permit);
            status
        });
    }
    let (mut refused, mut throttled, mut failed) = (0, 0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(401) => refused += 1,
            Ok(429) => throttled += 1,
            _ => failed += 1,
        }
    }
    let took = t0.elapsed();
    // And after: still answering at once.
    let t = Instant::now();
    let after = health
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let after_ms = t.elapsed().as_millis();
    done.store(true, Ordering::Release);
    let peak_watched = watcher.await.unwrap();
    let (_, hwm) = rss_kb(pid);
    let peak = peak_watched.max(hwm);
    eprintln!(
        "{LOGINS} logins in {took:?}: {refused} refused (401), {throttled} throttled (429), \
         {failed} failed; RSS idle {} MB, peak {} MB; slowest /healthz {} ms, after {after_ms} ms",
        rss_idle / 1024,
        peak / 1024,
        slowest_health_ms.load(Ordering::Acquire),
    );
    assert!(
        !over_limit.load(Ordering::Acquire) && peak < RSS_LIMIT_KB,
        "peak RSS {} MB is over 300 MB",
        peak / 1024
    );
    assert_eq!(failed, 0, "every login is answered with 401 or 429");
    assert!(throttled > 0, "the budgets refused nothing");
    assert!(
        slowest_health_ms.load(Ordering::Acquire) < 1_000,
        "/healthz took over a second during the logins"
    );
    assert!(after.is_ok_and(|r| r.status().is_success()) && after_ms < 1_000);
    drop(server);
}
