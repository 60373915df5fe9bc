//! `gate-agent run` stops cleanly on SIGTERM with every background task busy: the pull
//! long-poll and a push hanging on a server that accepts connections and never answers, a mesh
//! peer that does the same, a mesh listener, a real-time BLE replay waiting for its next advert
//! an hour away, a scanner (stdin) that stays open and silent, and the operator screen with an
//! event stream open. The process must exit 0 within a few seconds, and the stream must end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use gate_agent::replica::Replica;
use tokio::io::AsyncWriteExt;

/// A TCP server that accepts every connection and never sends a byte.
struct Blackhole {
    addr: String,
    accepted: Arc<AtomicUsize>,
}

fn blackhole() -> Blackhole {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let held = Arc::new(Mutex::new(Vec::new()));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            held.lock().unwrap().push(stream);
        }
    });
    Blackhole { addr, accepted }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_task_and_the_process_exits_0() {
    // A mesh key, so the puller does call its peer.
    let f = fixture(3, |g| g.mesh_key = Some(hex::encode([7u8; 32])));
    let server = blackhole();
    let peer = blackhole();
    Replica::open(&f.path())
        .unwrap()
        .set_meta("server_url", &format!("http://{}", server.addr))
        .unwrap();
    // A real-time replay: one advert now, the next an hour later.
    let now = gate_agent::decide::wall_ms();
    let replay = f.dir.path().join("adverts.jsonl");
    let mut log = std::fs::File::create(&replay).unwrap();
    for t in [now, now + 3_600_000] {
        writeln!(
            log,
            r#"{{"t_ms": {t}, "addr": "AA:BB:CC:DD:EE:FF", "rssi": -50, "service_uuid": "0xFEAA", "data_hex": "00"}}"#
        )
        .unwrap();
    }
    let ui_port = free_port();
    let base = format!("http://127.0.0.1:{ui_port}");
    let log_path = f.dir.path().join("agent.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gate-agent"))
        .args(["run", "--dedupe-ms", "0", "--mesh-interval-ms", "100"])
        .args(["--ui-listen", &format!("127.0.0.1:{ui_port}")])
        .args(["--mesh-listen", "127.0.0.1:0", "--peer", &peer.addr])
        .arg("--ble-replay")
        .arg(&replay)
        .arg("--data-dir")
        .arg(f.dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start gate-agent run");
    let log_tail = || std::fs::read_to_string(&log_path).unwrap_or_default();

    gate_agent::sync::client::install_tls_provider();
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    while http.get(format!("{base}/api/status")).send().await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the operator screen did not come up\n{}",
            log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The operator screen's API needs a paired session: pair with the code the agent printed.
    let code = loop {
        if let Some(code) = log_tail()
            .lines()
            .filter_map(|l| l.split("pairing code: ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .next_back()
        {
            break code.to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no pairing code in the agent's log\n{}",
            log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pairing = http
        .post(format!("{base}/api/pair"))
        .json(&serde_json::json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert!(
        pairing.status().is_success(),
        "pairing: {}",
        pairing.status()
    );
    let cookie = pairing.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut events = http
        .get(format!("{base}/api/events"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .bytes_stream();

    // A scan on the scanner reaches the decision thread and the open stream, and gives the
    // pusher something to push into the void. Stdin stays open afterwards.
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", f.ticket(1).encode()).as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let mut seen = String::new();
    while !seen.contains("event: decision") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a decision on the stream")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The sync loops and the mesh puller are inside requests that will never be answered.
    let t0 = Instant::now();
    while server.accepted.load(Ordering::SeqCst) < 2 || peer.accepted.load(Ordering::SeqCst) < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the agent never called the server and the peer (server {}, peer {})\n{}",
            server.accepted.load(Ordering::SeqCst),
            peer.accepted.load(Ordering::SeqCst),
            log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let t0 = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(8), child.wait())
        .await
        .unwrap_or_else(|_| panic!("gate-agent still running 8 s after SIGTERM\n{}", log_tail()))
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "exit status\n{}", log_tail());
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} to stop\n{}",
        log_tail()
    );
    eprintln!("stopped {took:?} after SIGTERM");
    assert!(
        log_tail().contains("gate agent stopped"),
        "not a clean stop\n{}",
        log_tail()
    );
    assert!(
        !log_tail().contains("did not stop in time"),
        "a task had to be aborted\n{}",
        log_tail()
    );
    // The event stream ended with the process.
    let end = tokio::time::timeout(Duration::from_secs(3), events.next())
        .await
        .expect("the stream ends");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
    drop(stdin);
}
