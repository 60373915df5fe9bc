//! What a forged ticket, a hostile peer, a server clock gone wrong and a second agent cannot do
//! to a gate: real gate-agent processes, with a fake peer and a fake server on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gate_agent::replica::{Enrollment, Replica};
use serde_json::{Value, json};
use sync_protocol::{Hlc, MAX_CLOCK_AHEAD_MS};
use uuid::Uuid;

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &Path, extra: &[&str]) -> Agent {
    Agent(
        Command::new(env!("CARGO_BIN_EXE_gate-agent"))
            .args(["run", "--no-sync", "--no-ui", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gate-agent"),
    )
}

fn scan(dir: &Path, credential: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_gate-agent"))
        .args(["scan", credential, "--data-dir"])
        .arg(dir)
        .output()
        .expect("run gate-agent scan");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().expect("a JSON line")).expect("JSON")
}

/// The replica's clock (its last stamp), as wall-clock ms.
fn replica_clock_ms(r: &Replica) -> u64 {
    r.meta("hlc")
        .unwrap()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |raw| Hlc::from_u64(raw).wall_ms())
}

#[test]
fn a_forged_qr_does_not_show_the_holders_name() {
    let f = fixture(3, |_| {});
    // Ticket 3 carries an attention note; its real QR shows it and the name.
    let mut forged = f.ticket(3);
    forged.signature[7] ^= 0x40;
    let out = scan(f.dir.path(), &forged.encode());
    assert_eq!(out["decision"], "reject");
    assert_eq!(out["reason"], "invalid_signature");
    assert_eq!(out["ticket_serial"], 3);
    assert!(out["name"].is_null(), "forged QR shows {}", out["name"]);
    assert!(
        out["attention"].is_null(),
        "forged QR shows {}",
        out["attention"]
    );
    // Signed by another key, under the event's key id.
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let mut fields = f.ticket(3).fields;
    fields.serial = 2;
    let out = scan(f.dir.path(), &fields.sign(&other).encode());
    assert_eq!(out["reason"], "invalid_signature");
    assert!(out["name"].is_null());
    // The real one.
    let out = scan(f.dir.path(), &f.ticket(3).encode());
    assert_eq!(out["decision"], "admit");
    assert_eq!(out["name"], "Attendee 3");
    assert_eq!(out["attention"], "wheelchair access");
    // A short code found in the replica is the operator's own lookup: shown.
    let out = scan(f.dir.path(), &Fixture::code(1).to_string());
    assert_eq!(out["name"], "Attendee 1");
}

#[test]
fn a_second_agent_on_one_data_dir_exits_at_once() {
    let f = fixture(1, |_| {});
    let mut first = start_agent(f.dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first agent runs"
    );
    let mut second = start_agent(f.dir.path(), &[]);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = second.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the second agent is still running on the same data dir"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    second
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("already running"), "{err}");
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first keeps running"
    );
    // Once the first is gone, an agent starts again (the lock goes with the process).
    drop(first);
    let mut third = start_agent(f.dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        third.0.try_wait().unwrap().is_none(),
        "the lock was released"
    );
}

/// Serves `answer(request_line)` as JSON to every request, on a thread, until the test ends.
fn fake_http(answer: impl Fn(&str) -> String + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut content_length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; content_length];
            let _ = reader.read_exact(&mut body);
            let json = answer(&request_line);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
        }
    });
    addr
}

fn peer_checkin(seq: u64, serial: u64, hlc: u64) -> Value {
    json!({"id": Uuid::now_v7(), "seq": seq, "ticket_serial": serial, "code": null,
           "method": "qr", "direction": "in", "decision": "admit", "reason": null,
           "hlc": hlc.to_string(), "scanned_at": "2026-11-25T10:00:00Z",
           "replica_cursor": 0, "operator_override": null})
}

/// What a fake mesh peer does with a request.
#[derive(Clone, Copy)]
enum PeerBehaviour {
    /// Signs its answer over the request's nonce with its key (an honest peer).
    Honest,
    /// Sends no signature.
    Unsigned,
    /// Signs with a key that is not the one the gate's replica holds for it.
    WrongKey,
    /// Replays an answer that was signed for an earlier request (another nonce).
    Replay,
}

/// A fake mesh peer on loopback: gate `gate_id`, signing with `key`, serving `checkins` as its
/// log page (`next` = the last seq). Counts the requests it answered.
fn fake_peer(
    gate_id: Uuid,
    key: ed25519_dalek::SigningKey,
    checkins: Vec<Value>,
    behaviour: PeerBehaviour,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use ed25519_dalek::Signer;
    let next = checkins
        .iter()
        .filter_map(|c| c["seq"].as_u64())
        .max()
        .unwrap_or(0);
    let body =
        json!({"gate_id": gate_id, "next": next, "more": false, "checkins": checkins}).to_string();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let other = ed25519_dalek::SigningKey::from_bytes(&[0xEE; 32]);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut headers = std::collections::HashMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let caller = headers
                .get(gate_agent::mesh::GATE_HEADER)
                .and_then(|v| Uuid::parse_str(v).ok())
                .unwrap_or_default();
            let nonce = headers
                .get(gate_agent::mesh::NONCE_HEADER)
                .cloned()
                .unwrap_or_default();
            let signature = match behaviour {
                PeerBehaviour::Honest => Some(key.sign(&gate_agent::mesh::answer_message(
                    caller,
                    &nonce,
                    body.as_bytes(),
                ))),
                PeerBehaviour::Unsigned => None,
                PeerBehaviour::WrongKey => Some(other.sign(&gate_agent::mesh::answer_message(
                    caller,
                    &nonce,
                    body.as_bytes(),
                ))),
                PeerBehaviour::Replay => Some(key.sign(&gate_agent::mesh::answer_message(
                    caller,
                    &hex::encode([0u8; 16]),
                    body.as_bytes(),
                ))),
            };
            let mut extra = format!("{}: {gate_id}\r\n", gate_agent::mesh::GATE_HEADER);
            if let Some(sig) = signature {
                extra.push_str(&format!(
                    "{}: {}\r\n",
                    gate_agent::mesh::SIGNATURE_HEADER,
                    hex::encode(sig.to_bytes())
                ));
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, hits)
}

#[test]
fn only_answers_signed_for_the_request_by_an_active_peer_enter_presence() {
    let f = fixture(6, |_| {});
    let now = wall_ms();
    // Every hostile answer stamps its admission a minute ahead: adopted, it would move the clock.
    let ahead = Hlc::new(now + 60_000, 0).as_u64();
    let key = |b: u8| ed25519_dalek::SigningKey::from_bytes(&[b; 32]);
    let public = |b: u8| Some(hex::encode(key(b).verifying_key().to_bytes()));
    let mut peers = Vec::new();
    let mut spawn = |serial: u64, b: u8, behaviour, hlc: u64, listed: Option<bool>| {
        let gate = Uuid::now_v7();
        if let Some(active) = listed {
            add_peer(&f, gate, public(b), None, active);
        }
        let (addr, hits) = fake_peer(gate, key(b), vec![peer_checkin(1, serial, hlc)], behaviour);
        peers.push((serial, gate, addr, hits));
    };
    // The control: an honest, active peer's admission of ticket 1 applies.
    spawn(
        1,
        1,
        PeerBehaviour::Honest,
        Hlc::new(now, 0).as_u64(),
        Some(true),
    );
    spawn(2, 2, PeerBehaviour::Unsigned, ahead, Some(true));
    spawn(3, 3, PeerBehaviour::WrongKey, ahead, Some(true));
    spawn(4, 4, PeerBehaviour::Replay, ahead, Some(true));
    // Deactivated (the server still listing its key): its signed answers are ignored.
    spawn(5, 5, PeerBehaviour::Honest, ahead, Some(false));
    // A peer the gate has no key for at all.
    spawn(6, 6, PeerBehaviour::Honest, ahead, None);
    let mut args = vec!["--mesh-interval-ms".to_string(), "100".to_string()];
    for (_, _, addr, _) in &peers {
        args.push("--peer".into());
        args.push(addr.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _agent = start_agent(f.dir.path(), &args);
    let r = Replica::open(&f.path()).unwrap();
    let t0 = Instant::now();
    // Every fake peer has been asked at least three times.
    while peers
        .iter()
        .any(|(_, _, _, hits)| hits.load(std::sync::atomic::Ordering::Acquire) < 3)
        || !r.presence(1).unwrap().inside
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the peers were not read: {:?}",
            peers
                .iter()
                .map(|(s, _, _, h)| (s, h.load(std::sync::atomic::Ordering::Acquire)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(r.mesh_cursor(peers[0].1).unwrap(), 1);
    for (serial, gate, _, _) in &peers[1..] {
        assert!(
            !r.presence(*serial).unwrap().inside,
            "ticket {serial} entered presence from a peer that must be ignored"
        );
        assert_eq!(r.mesh_cursor(*gate).unwrap(), 0, "ticket {serial}");
    }
    let clock = replica_clock_ms(&r);
    assert!(
        clock < now + 60_000,
        "the clock moved to {} ms ahead",
        clock.saturating_sub(now)
    );
}

#[test]
fn a_peer_clock_far_ahead_is_not_adopted() {
    let f = fixture(3, |_| {});
    let peer = Uuid::now_v7();
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    add_peer(
        &f,
        peer,
        Some(hex::encode(key.verifying_key().to_bytes())),
        None,
        true,
    );
    let now = wall_ms();
    let poisoned = i64::MAX as u64;
    let honest = Hlc::new(now + 30_000, 0).as_u64();
    let (addr, _) = fake_peer(
        peer,
        key,
        vec![peer_checkin(1, 1, poisoned), peer_checkin(2, 2, honest)],
        PeerBehaviour::Honest,
    );
    let _agent = start_agent(
        f.dir.path(),
        &["--peer", &addr, "--mesh-interval-ms", "200"],
    );
    let r = Replica::open(&f.path()).unwrap();
    let t0 = Instant::now();
    while r.mesh_cursor(peer).unwrap() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the peer's log was not read"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        r.presence(2).unwrap().inside,
        "the honest admission applies"
    );
    assert!(
        !r.presence(1).unwrap().inside,
        "the admission with a poisoned clock is not applied"
    );
    let clock = replica_clock_ms(&r);
    assert!(
        clock >= now + 30_000 && clock <= wall_ms() + MAX_CLOCK_AHEAD_MS,
        "clock {clock}, wall {now}"
    );
}

#[test]
fn a_server_time_far_ahead_is_not_adopted() {
    let f = fixture(1, |_| {});
    let now = wall_ms();
    let ahead = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(i64::MAX as u64));
    let answer = {
        let ahead = ahead.clone();
        move |request_line: &str| {
            // Echo the cursor: nothing new.
            let after: u64 = request_line
                .split(['?', '&', ' '])
                .find_map(|p| p.strip_prefix("after="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let server_time = ahead.load(std::sync::atomic::Ordering::Acquire);
            json!({"changes": [], "next": after, "more": false,
                   "server_time": server_time.to_string()})
            .to_string()
        }
    };
    let addr = fake_http(answer);
    {
        let mut r = Replica::open(&f.path()).unwrap();
        r.store_enrollment(&Enrollment {
            server_url: format!("http://{addr}"),
            gate_id: f.gate_id,
            event_id: f.event_id,
            credential: "secret".into(),
        })
        .unwrap();
    }
    let sync = || {
        let out = Command::new(env!("CARGO_BIN_EXE_gate-agent"))
            .args(["sync", "--data-dir"])
            .arg(f.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sync();
    let clock = replica_clock_ms(&Replica::open(&f.path()).unwrap());
    assert!(
        clock <= wall_ms() + MAX_CLOCK_AHEAD_MS,
        "the gate adopted a server_time {} ms ahead",
        clock.saturating_sub(now)
    );
    // A server clock a minute ahead is taken in (that is what keeps gates in causal order).
    let minute = Hlc::new(wall_ms() + 60_000, 0);
    ahead.store(minute.as_u64(), std::sync::atomic::Ordering::Release);
    sync();
    let clock = replica_clock_ms(&Replica::open(&f.path()).unwrap());
    assert!(
        clock >= minute.wall_ms(),
        "clock {clock} vs {}",
        minute.wall_ms()
    );
}
