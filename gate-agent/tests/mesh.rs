//! The venue mesh with no server at all: two real gate-agent processes on loopback, one serving
//! its log, the other reading it. A ticket admitted at one gate is `already_inside` at the other
//! about a second later (DESIGN §8).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use gate_agent::replica::Replica;
use serde_json::Value;

struct Agent {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(dir: &std::path::Path, extra: &[&str]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gate-agent"))
            .args([
                "run",
                "--no-sync",
                "--no-ui",
                "--dedupe-ms",
                "0",
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gate-agent");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Agent {
            child,
            stdin,
            lines,
        }
    }

    fn scan(&mut self, credential: &str) -> Value {
        writeln!(self.stdin, "{credential}").unwrap();
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a decision within 20 s")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_peer_admission_closes_the_double_entry_window_without_a_server() {
    let mesh_key = hex::encode([9u8; 32]);
    let north = fixture(5, |g| g.mesh_key = Some(mesh_key.clone()));
    let south = fixture(5, |g| g.mesh_key = Some(mesh_key.clone()));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut n = Agent::start(north.dir.path(), &["--mesh-listen", &addr]);
    let mut s = Agent::start(
        south.dir.path(),
        &["--peer", &addr, "--mesh-interval-ms", "200"],
    );

    let ticket = north.ticket(1).encode();
    let admitted = n.scan(&ticket);
    assert_eq!(admitted["decision"], "admit");
    let t0 = Instant::now();

    // Wait until south's presence view has the peer's admission (never by scanning: a scan
    // before the mesh delivered would admit).
    let south_replica = Replica::open(&south.path()).unwrap();
    while !south_replica.presence(1).unwrap().inside {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the peer's admission did not arrive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let propagation = t0.elapsed();
    let second = s.scan(&ticket);
    assert_eq!(second["decision"], "reject");
    assert_eq!(second["reason"], "already_inside");
    // Other tickets are unaffected, and south's own admissions travel nowhere it does not serve.
    assert_eq!(s.scan(&north.ticket(2).encode())["decision"], "admit");
    // The peer's log is not copied into south's own log: it pushes only its own scans.
    let log = south_replica.all_checkins().unwrap();
    assert_eq!(log.len(), 2);
    eprintln!("mesh propagation: {} ms", propagation.as_millis());

    // A wrong mesh token is refused.
    let wrong = reqwest_blocking_get(&format!("http://{addr}/mesh/v1/log?after=0"), "Mesh nope");
    assert_eq!(wrong, 401);
}

/// A minimal HTTP/1.1 GET over a TCP socket (the test needs only the status line).
fn reqwest_blocking_get(url: &str, auth: &str) -> u16 {
    use std::io::Read;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut sock = std::net::TcpStream::connect(host).unwrap();
    write!(
        sock,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    sock.read_to_string(&mut buf).unwrap();
    buf.split_whitespace().nth(1).unwrap().parse().unwrap()
}
