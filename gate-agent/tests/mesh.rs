//! The venue mesh with no server at all: two real gate-agent processes on loopback, one serving
//! its log, the other reading it. A ticket admitted at one gate is `already_inside` at the other
//! about a second later (DESIGN §8). The serving gate answers only signed, fresh requests of an
//! active peer whose key its replica holds (mesh v2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ed25519_dalek::Signer;
use gate_agent::mesh;
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

/// Two gates of one event that know each other's mesh keys; north serves on `addr`.
fn linked_pair(addr: &str) -> (Fixture, Fixture) {
    let event = uuid::Uuid::now_v7();
    let north = fixture_in(event, 5, |_| {});
    let south = fixture_in(event, 5, |_| {});
    add_peer(
        &north,
        south.gate_id,
        Some(mesh_public_key(&south)),
        None,
        true,
    );
    add_peer(
        &south,
        north.gate_id,
        Some(mesh_public_key(&north)),
        Some(addr.to_string()),
        true,
    );
    (north, south)
}

#[test]
fn a_peer_admission_closes_the_double_entry_window_without_a_server() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (north, south) = linked_pair(&addr);
    let mut n = Agent::start(north.dir.path(), &["--mesh-listen", &addr]);
    // South finds north through the replicated gate configuration (no --peer).
    let mut s = Agent::start(south.dir.path(), &["--mesh-interval-ms", "200"]);

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

    // An unsigned request, a v1 bearer token and the v1 path are refused.
    assert_eq!(raw_get(&addr, "/mesh/v2/log?after=0", &[]).0, 401);
    assert_eq!(
        raw_get(
            &addr,
            "/mesh/v2/log?after=0",
            &[("Authorization", "Mesh nope".into())]
        )
        .0,
        401
    );
    assert_eq!(raw_get(&addr, "/mesh/v1/log?after=0", &[]).0, 404);
}

/// The headers of a signed mesh request by `gate` with `key`.
fn signed(
    gate: uuid::Uuid,
    key: &ed25519_dalek::SigningKey,
    nonce: &str,
    time: u64,
    path: &str,
) -> Vec<(&'static str, String)> {
    let sig = key.sign(&mesh::request_message(gate, nonce, time, path));
    vec![
        (mesh::GATE_HEADER, gate.to_string()),
        (mesh::NONCE_HEADER, nonce.to_string()),
        (mesh::TIME_HEADER, time.to_string()),
        (mesh::SIGNATURE_HEADER, hex::encode(sig.to_bytes())),
    ]
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_gate_serves_its_log_only_to_signed_fresh_requests_of_active_peers() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (north, south) = linked_pair(&addr);
    let mut n = Agent::start(north.dir.path(), &["--mesh-listen", &addr]);
    assert_eq!(n.scan(&north.ticket(1).encode())["decision"], "admit");
    let south_key = Replica::open(&south.path()).unwrap().mesh_signing_key();
    let north_key = Replica::open(&north.path())
        .unwrap()
        .mesh_signing_key()
        .verifying_key();
    let path = "/mesh/v2/log?after=0";
    let nonce = |i: u8| hex::encode([i; 16]);

    // The real peer, signed and fresh: served, and the answer is signed over its nonce and body.
    let (status, headers, body) = raw_get(
        &addr,
        path,
        &signed(south.gate_id, &south_key, &nonce(1), wall_ms(), path),
    );
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["checkins"].as_array().unwrap().len(), 1);
    assert_eq!(
        headers.get(mesh::GATE_HEADER).map(String::as_str),
        Some(north.gate_id.to_string().as_str())
    );
    let sig: [u8; 64] = hex::decode(&headers[mesh::SIGNATURE_HEADER])
        .unwrap()
        .try_into()
        .unwrap();
    north_key
        .verify_strict(
            &mesh::answer_message(south.gate_id, &nonce(1), body.as_bytes()),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .expect("the answer is signed by north over the request's nonce");

    // The same request again (a replay): refused.
    let again = signed(south.gate_id, &south_key, &nonce(1), wall_ms(), path);
    assert_eq!(raw_get(&addr, path, &again).0, 401);
    // Signed by a key that is not south's.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let forged = signed(south.gate_id, &stranger, &nonce(2), wall_ms(), path);
    assert_eq!(raw_get(&addr, path, &forged).0, 401);
    // A gate north does not know, with a key of its own.
    let unknown = signed(uuid::Uuid::now_v7(), &stranger, &nonce(3), wall_ms(), path);
    assert_eq!(raw_get(&addr, path, &unknown).0, 401);
    // A stale time.
    let stale = signed(
        south.gate_id,
        &south_key,
        &nonce(4),
        wall_ms() - mesh::MAX_REQUEST_AGE_MS - 60_000,
        path,
    );
    assert_eq!(raw_get(&addr, path, &stale).0, 401);
    // Signed for another cursor than the one asked.
    let other_path = signed(
        south.gate_id,
        &south_key,
        &nonce(5),
        wall_ms(),
        "/mesh/v2/log?after=7",
    );
    assert_eq!(raw_get(&addr, path, &other_path).0, 401);

    // South deactivated: its configuration arrives without a key, and north refuses it.
    add_peer(&north, south.gate_id, None, None, false);
    let t0 = Instant::now();
    loop {
        let fresh = signed(
            south.gate_id,
            &south_key,
            &hex::encode(rand_nonce()),
            wall_ms(),
            path,
        );
        if raw_get(&addr, path, &fresh).0 == 401 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "still served");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Deactivated with its key still listed (an older server): refused all the same.
    add_peer(
        &north,
        south.gate_id,
        Some(mesh_public_key(&south)),
        None,
        false,
    );
    let fresh = signed(
        south.gate_id,
        &south_key,
        &hex::encode(rand_nonce()),
        wall_ms(),
        path,
    );
    assert_eq!(raw_get(&addr, path, &fresh).0, 401);
}

fn rand_nonce() -> [u8; 16] {
    let mut out = [0u8; 16];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_le_bytes();
    out.copy_from_slice(&t[..16]);
    out
}

/// A minimal HTTP/1.1 GET over a TCP socket: status, headers (lowercase names) and body.
fn raw_get(
    host: &str,
    path: &str,
    headers: &[(&str, String)],
) -> (u16, std::collections::HashMap<String, String>, String) {
    use std::io::Read;
    let mut sock = std::net::TcpStream::connect(host).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    sock.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    sock.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}
