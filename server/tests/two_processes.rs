//! Two `server` processes on one PostgreSQL database behave as one service (DESIGN §1: server
//! replicas are stateless, live fan-out crosses processes through LISTEN/NOTIFY): an admission
//! pushed to process A shows up on an organizer's live stream opened on process B.
//!
//! Real processes (`CARGO_BIN_EXE_server`), real HTTP over loopback, real PostgreSQL
//! (`server::testing::admin_url`: `USHER_TEST_DATABASE_URL`, else the local server, else a
//! private cluster; never skipped). Processes are killed and the database dropped on drop, even after a failure; each
//! process's log is printed in failure messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use server::testing::PgDatabase;
use sync_protocol::Hlc;
use sync_protocol::wire::{Checkin, Decision, Direction, Method as ScanMethod, PushRequest};
use tokio::io::AsyncWriteExt;
use tokio::process::Child;
use tokio::sync::mpsc;
use uuid::Uuid;

#[path = "common/webhook_receiver.rs"]
mod receiver;

const ADMIN_EMAIL: &str = "ops@example.org";
const ADMIN_PASSWORD: &str = "two processes, one database";

// ---------------------------------------------------------------- PostgreSQL

// ---------------------------------------------------------------- server processes

/// What every process of the deployment shares.
struct Deployment {
    database_url: String,
    master_key: String,
    /// More environment of every process.
    env: Vec<(&'static str, String)>,
}

impl Deployment {
    fn command(&self, data_dir: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_server"));
        cmd.arg("--data-dir")
            .arg(data_dir)
            .env("DATABASE_URL", &self.database_url)
            .env("USHER_MASTER_KEY", &self.master_key)
            .env_remove("USHER_LISTEN")
            .env_remove("USHER_DATA_DIR")
            .env_remove("USHER_ADMIN_EMAIL")
            .env("RUST_LOG", "info,sqlx=warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// One `server` process, killed on drop.
struct ServerProcess {
    name: &'static str,
    base: String,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    async fn start(name: &'static str, deployment: &Deployment) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // A port that was free a moment ago.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind port 0")
            .port();
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = deployment
            .command(dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn server");
        let mut me = Self {
            name,
            base: format!("http://127.0.0.1:{port}"),
            log,
            child,
            _dir: dir,
        };
        me.wait_ready().await;
        me
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- last lines of server {} log ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// Polls `/readyz` until the process answers 200 (database connected, migrations run).
    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "server {} exited during start-up with {status}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let ready = client
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "server {} not ready within 60 s\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process and reaps it.
    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

// ---------------------------------------------------------------- HTTP

struct Client {
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    async fn call(&self, method: Method, url: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), url)
            .timeout(Duration::from_secs(30));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body)
    }

    async fn expect(&self, method: Method, url: &str, body: Option<Value>, status: u16) -> Value {
        let (got, body) = self.call(method.clone(), url, body).await;
        assert_eq!(got, status, "{method} {url} answered {got}: {body}");
        body
    }
}

/// Reads a `text/event-stream` response and forwards `(event name, data as JSON)` pairs.
fn sse_events(resp: reqwest::Response) -> mpsc::UnboundedReceiver<(String, Value)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                if tx.send((name, value)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("rfc3339")
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_pushed_to_one_process_reaches_a_live_stream_on_another() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pg = PgDatabase::create("usher_2proc")
        .await
        .expect("a fresh PostgreSQL database");
    let deployment = Deployment {
        database_url: pg.url.clone(),
        master_key: format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()),
        env: Vec::new(),
    };
    assert_eq!(deployment.master_key.len(), 64);

    // `server admin create` once (it also migrates the fresh database).
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let mut create = deployment
        .command(admin_dir.path())
        .args([
            "admin",
            "create",
            "--email",
            ADMIN_EMAIL,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn server admin create");
    let mut stdin = create.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .await
        .expect("write the password");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), create.wait_with_output())
        .await
        .expect("server admin create did not finish within 60 s")
        .expect("server admin create");
    assert!(
        out.status.success(),
        "server admin create failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let a = ServerProcess::start("A", &deployment).await;
    let b = ServerProcess::start("B", &deployment).await;

    // ------------------------------------------------------------ set up through A
    let http = reqwest::Client::builder().build().expect("client");
    let anon = Client {
        http: http.clone(),
        token: None,
    };
    let login = anon
        .expect(
            Method::POST,
            &format!("{}/api/v1/auth/login", a.base),
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
            200,
        )
        .await;
    let org = Client {
        http: http.clone(),
        token: Some(login["access_token"].as_str().expect("token").to_owned()),
    };
    let now = time::OffsetDateTime::now_utc();
    let event = org
        .expect(
            Method::POST,
            &format!("{}/api/v1/events", a.base),
            Some(json!({"name": "Two processes", "status": "live",
                "starts_at": rfc3339(now - time::Duration::hours(1)),
                "ends_at": rfc3339(now + time::Duration::hours(8))})),
            201,
        )
        .await;
    let event_id = event["id"].as_str().expect("event id").to_owned();
    let person = org
        .expect(
            Method::POST,
            &format!("{}/api/v1/events/{event_id}/participants", a.base),
            Some(json!({"name": "Ada Lovelace", "email": "ada@example.org"})),
            201,
        )
        .await;
    let serial = person["ticket"]["serial"].as_u64().expect("ticket serial");
    let gate = org
        .expect(
            Method::POST,
            &format!("{}/api/v1/events/{event_id}/gates", a.base),
            Some(json!({"name": "North", "direction": "both"})),
            201,
        )
        .await;
    let gate_id = gate["id"].as_str().expect("gate id").to_owned();
    let enrollment = org
        .expect(
            Method::POST,
            &format!(
                "{}/api/v1/events/{event_id}/gates/{gate_id}/enrollments",
                a.base
            ),
            None,
            201,
        )
        .await;
    let enrolled = anon
        .expect(
            Method::POST,
            &format!("{}/sync/v1/enroll", a.base),
            Some(json!({"code": enrollment["code"], "device_name": "e2e kiosk"})),
            201,
        )
        .await;
    assert_eq!(enrolled["gate_id"], gate_id.as_str(), "{enrolled}");
    let credential = enrolled["credential"].as_str().expect("credential");
    let next_seq = enrolled["next_seq"].as_u64().expect("next_seq");

    // ------------------------------------------------------------ the live stream on B
    // The session token A issued is valid on B (shared master key): the processes are
    // interchangeable behind a load balancer.
    let resp = http
        .get(format!("{}/api/v1/events/{event_id}/stream", b.base))
        .bearer_auth(org.token.as_deref().unwrap())
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("open the stream on B");
    assert_eq!(resp.status(), 200, "stream on B: {:?}", resp.status());
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    // The handler subscribed before it answered: nothing published from now on is missed.
    let mut events = sse_events(resp);

    // ------------------------------------------------------------ push an admission to A
    let scanned_at = time::OffsetDateTime::now_utc();
    let wall_ms = u64::try_from(scanned_at.unix_timestamp_nanos() / 1_000_000).unwrap();
    let checkin = Checkin {
        id: Uuid::now_v7(),
        seq: next_seq,
        ticket_serial: Some(serial),
        code: None,
        method: ScanMethod::Qr,
        direction: Direction::In,
        decision: Decision::Admit,
        reason: None,
        hlc: Hlc::new(wall_ms, 0),
        scanned_at,
        replica_cursor: 0,
        operator_override: None,
        undoes: None,
    };
    let gate_uuid = Uuid::parse_str(&gate_id).expect("gate uuid");
    let body = serde_json::to_value(PushRequest {
        gate_id: gate_uuid,
        checkins: vec![checkin.clone()],
    })
    .expect("encode the push");
    let pushed_at = Instant::now();
    let resp = http
        .post(format!("{}/sync/v1/checkins", a.base))
        .bearer_auth(credential)
        .header(sync_protocol::wire::PROTOCOL_HEADER, "1")
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("push to A");
    let status = resp.status();
    let answer: Value = resp.json().await.expect("push answer");
    assert_eq!(status, 200, "push to A: {answer}");
    assert_eq!(answer["acked_through_seq"], next_seq, "{answer}");
    assert_eq!(answer["results"][0]["status"], "stored", "{answer}");

    // ------------------------------------------------------------ B's stream shows it
    let deadline = Duration::from_secs(10);
    let admission = loop {
        let remaining = deadline.saturating_sub(pushed_at.elapsed());
        match tokio::time::timeout(remaining, events.recv()).await {
            Ok(Some((name, data))) if name == "admission" => break data,
            Ok(Some(_other)) => {}
            Ok(None) => panic!(
                "B's stream ended before the admission arrived\n{}",
                b.log_tail()
            ),
            Err(_) => panic!(
                "no `admission` event on B's stream within {deadline:?} of the push to A\n{}\n{}",
                a.log_tail(),
                b.log_tail()
            ),
        }
    };
    let latency = pushed_at.elapsed();
    eprintln!("admission pushed to A arrived on B's stream after {latency:?}");
    assert_eq!(admission["type"], "admission", "{admission}");
    assert_eq!(admission["event_id"], event_id.as_str(), "{admission}");
    assert_eq!(admission["gate_id"], gate_id.as_str(), "{admission}");
    assert_eq!(
        admission["checkin_id"],
        checkin.id.to_string().as_str(),
        "{admission}"
    );
    assert_eq!(admission["ticket_serial"], serial, "{admission}");
    assert_eq!(admission["direction"], "in", "{admission}");
    assert_eq!(admission["inside"], true, "{admission}");

    // And B serves the merged state A wrote.
    let attendance = org
        .expect(
            Method::GET,
            &format!("{}/api/v1/events/{event_id}/attendance", b.base),
            None,
            200,
        )
        .await;
    assert_eq!(attendance["inside"], 1, "{attendance}");

    a.kill().await;
    b.kill().await;
}

// ---------------------------------------------------------------- webhooks from two processes

/// `server admin create` against the deployment's database (which also migrates it).
async fn create_admin(deployment: &Deployment) {
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let mut create = deployment
        .command(admin_dir.path())
        .args([
            "admin",
            "create",
            "--email",
            ADMIN_EMAIL,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn server admin create");
    let mut stdin = create.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .await
        .expect("write the password");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), create.wait_with_output())
        .await
        .expect("server admin create did not finish within 60 s")
        .expect("server admin create");
    assert!(out.status.success(), "server admin create failed: {out:?}");
}

/// The `usher_webhook_deliveries_total{result="delivered"}` counter of a process.
async fn delivered_by(http: &reqwest::Client, base: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| {
            l.starts_with("usher_webhook_deliveries_total{") && l.contains("result=\"delivered\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deliver_each_webhook_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pg = PgDatabase::create("usher_2proc_hooks")
        .await
        .expect("a fresh PostgreSQL database");
    let deployment = Deployment {
        database_url: pg.url.clone(),
        master_key: format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()),
        env: vec![("USHER_WEBHOOK_RETRY_SCALE", "0.001".into())],
    };
    create_admin(&deployment).await;
    let a = ServerProcess::start("A", &deployment).await;
    let b = ServerProcess::start("B", &deployment).await;

    let http = reqwest::Client::builder().build().expect("client");
    let anon = Client {
        http: http.clone(),
        token: None,
    };
    let login = anon
        .expect(
            Method::POST,
            &format!("{}/api/v1/auth/login", a.base),
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
            200,
        )
        .await;
    let org = Client {
        http: http.clone(),
        token: Some(login["access_token"].as_str().expect("token").to_owned()),
    };
    let now = time::OffsetDateTime::now_utc();
    let event = org
        .expect(
            Method::POST,
            &format!("{}/api/v1/events", a.base),
            Some(json!({"name": "Two processes, webhooks", "status": "live",
                "starts_at": rfc3339(now - time::Duration::hours(1)),
                "ends_at": rfc3339(now + time::Duration::hours(8))})),
            201,
        )
        .await;
    let event_id = event["id"].as_str().expect("event id").to_owned();

    // A slow receiver that refuses everything for the first 1.5 s: the first attempts and the
    // retries are spread over both processes.
    let rx = receiver::Receiver::start().await;
    rx.set_delay(20);
    rx.set_failing(true);
    let hook = org
        .expect(
            Method::POST,
            &format!("{}/api/v1/events/{event_id}/webhooks", a.base),
            Some(json!({"url": rx.url(), "events": ["checkin.created", "participant.created"]})),
            201,
        )
        .await;
    let secret = hook["secret"].as_str().expect("secret").to_owned();

    const N: usize = 200;
    let people: Vec<Value> = (0..N)
        .map(|i| json!({"name": format!("Guest {i}"), "email": format!("g{i}@example.org")}))
        .collect();
    let created = org
        .expect(
            Method::POST,
            &format!("{}/api/v1/events/{event_id}/participants", b.base),
            Some(json!(people)),
            201,
        )
        .await;
    let serials: Vec<u64> = created["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["ticket"]["serial"].as_u64().expect("serial"))
        .collect();

    // One gate pushing to A, one to B, half of the tickets each.
    let mut checkin_ids = Vec::new();
    for (k, server) in [&a, &b].into_iter().enumerate() {
        let gate = org
            .expect(
                Method::POST,
                &format!("{}/api/v1/events/{event_id}/gates", server.base),
                Some(json!({"name": format!("Gate {k}"), "direction": "both"})),
                201,
            )
            .await;
        let gate_id = gate["id"].as_str().expect("gate id").to_owned();
        let code = org
            .expect(
                Method::POST,
                &format!(
                    "{}/api/v1/events/{event_id}/gates/{gate_id}/enrollments",
                    server.base
                ),
                None,
                201,
            )
            .await;
        let enrolled = anon
            .expect(
                Method::POST,
                &format!("{}/sync/v1/enroll", server.base),
                Some(json!({"code": code["code"], "device_name": "kiosk"})),
                201,
            )
            .await;
        let credential = enrolled["credential"]
            .as_str()
            .expect("credential")
            .to_owned();
        let next_seq = enrolled["next_seq"].as_u64().expect("next_seq");
        let mine: Vec<u64> = serials.iter().copied().skip(k).step_by(2).collect();
        for (c, chunk) in mine.chunks(25).enumerate() {
            let checkins: Vec<Checkin> = chunk
                .iter()
                .enumerate()
                .map(|(i, serial)| {
                    let scanned_at = time::OffsetDateTime::now_utc();
                    let wall = u64::try_from(scanned_at.unix_timestamp_nanos() / 1_000_000)
                        .expect("wall clock");
                    Checkin {
                        id: Uuid::now_v7(),
                        seq: next_seq + (c * 25 + i) as u64,
                        ticket_serial: Some(*serial),
                        code: None,
                        method: ScanMethod::Qr,
                        direction: Direction::In,
                        decision: Decision::Admit,
                        reason: None,
                        hlc: Hlc::new(wall, 0),
                        scanned_at,
                        replica_cursor: 0,
                        operator_override: None,
                        undoes: None,
                    }
                })
                .collect();
            checkin_ids.extend(checkins.iter().map(|c| c.id.to_string()));
            let body = serde_json::to_value(PushRequest {
                gate_id: Uuid::parse_str(&gate_id).expect("gate uuid"),
                checkins,
            })
            .expect("encode the push");
            let resp = http
                .post(format!("{}/sync/v1/checkins", server.base))
                .bearer_auth(&credential)
                .header(sync_protocol::wire::PROTOCOL_HEADER, "1")
                .json(&body)
                .send()
                .await
                .expect("push");
            assert_eq!(resp.status(), 200);
        }
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = rx.refused();
    rx.set_failing(false);
    let t0 = Instant::now();
    let expected = 2 * N;
    let got = rx.wait_for(expected, Duration::from_secs(60)).await;
    eprintln!(
        "{expected} deliveries after the receiver came back in {:?} ({refused} refused before)",
        t0.elapsed()
    );
    // Nothing more arrives later (no second delivery of any message).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_all = rx.received();
    assert_eq!(got_all.len(), got.len().max(expected), "late duplicates");
    let by_id = receiver::once_each(&secret, &got_all);
    assert_eq!(by_id.len(), expected);
    let announced: std::collections::HashSet<String> = by_id
        .values()
        .map(|r| r.json())
        .filter(|b| b["type"] == "checkin.created")
        .map(|b| {
            b["data"]["checkin_id"]
                .as_str()
                .expect("checkin id")
                .to_owned()
        })
        .collect();
    assert_eq!(announced.len(), N);
    assert!(checkin_ids.iter().all(|id| announced.contains(id)));

    let (from_a, from_b) = (
        delivered_by(&http, &a.base).await,
        delivered_by(&http, &b.base).await,
    );
    eprintln!("delivered by A: {from_a}, by B: {from_b}");
    assert_eq!(
        from_a + from_b,
        expected as u64,
        "each message delivered by one process"
    );
    rx.stop();
    a.kill().await;
    b.kill().await;
}

// ---------------------------------------------------------------- alerts from two processes

/// The `usher_alert_transitions_total` counter of a process (fired and cleared).
async fn transitions_by(http: &reqwest::Client, base: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("usher_alert_transitions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Both processes evaluate every 50 ms and see the same conditions start and end; each
/// transition is decided by one of them and goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_fire_each_alert_transition_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pg = PgDatabase::create("usher_2proc_alerts")
        .await
        .expect("a fresh PostgreSQL database");
    let deployment = Deployment {
        database_url: pg.url.clone(),
        master_key: format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()),
        env: vec![("USHER_ALERT_TICK_MS", "50".into())],
    };
    create_admin(&deployment).await;
    let a = ServerProcess::start("A", &deployment).await;
    let b = ServerProcess::start("B", &deployment).await;
    let http = reqwest::Client::builder().build().expect("client");
    let anon = Client {
        http: http.clone(),
        token: None,
    };
    let login = anon
        .expect(
            Method::POST,
            &format!("{}/api/v1/auth/login", a.base),
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
            200,
        )
        .await;
    let org = Client {
        http: http.clone(),
        token: Some(login["access_token"].as_str().expect("token").to_owned()),
    };
    let now = time::OffsetDateTime::now_utc();
    let event = org
        .expect(
            Method::POST,
            &format!("{}/api/v1/events", a.base),
            Some(json!({"name": "Two processes, alerts", "status": "live",
                "starts_at": rfc3339(now - time::Duration::hours(1)),
                "ends_at": rfc3339(now + time::Duration::hours(8))})),
            201,
        )
        .await;
    let event_id = event["id"].as_str().expect("event id").to_owned();
    let rx = receiver::Receiver::start().await;
    let hook = org
        .expect(
            Method::POST,
            &format!("{}/api/v1/events/{event_id}/webhooks", a.base),
            Some(json!({"url": rx.url(),
                "events": ["gate.offline", "gate.online", "alert.fired", "alert.cleared"]})),
            201,
        )
        .await;
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    org.expect(
        Method::PUT,
        &format!("{}/api/v1/events/{event_id}/alert-rules", b.base),
        Some(
            json!({"gate_offline": {"after_seconds": 30}, "outbox_depth": {"above": 5},
            "conflict_created": {"enabled": false}, "error_rate": {"enabled": false}}),
        ),
        200,
    )
    .await;

    // Gates report through both processes, alternately.
    const GATES: usize = 12;
    let mut gates = Vec::new();
    for k in 0..GATES {
        let server = if k.is_multiple_of(2) { &a } else { &b };
        let gate = org
            .expect(
                Method::POST,
                &format!("{}/api/v1/events/{event_id}/gates", server.base),
                Some(json!({"name": format!("Gate {k}"), "direction": "both"})),
                201,
            )
            .await;
        let gate_id = gate["id"].as_str().expect("gate id").to_owned();
        let code = org
            .expect(
                Method::POST,
                &format!(
                    "{}/api/v1/events/{event_id}/gates/{gate_id}/enrollments",
                    server.base
                ),
                None,
                201,
            )
            .await;
        let enrolled = anon
            .expect(
                Method::POST,
                &format!("{}/sync/v1/enroll", server.base),
                Some(json!({"code": code["code"], "device_name": "kiosk"})),
                201,
            )
            .await;
        gates.push((
            gate_id,
            enrolled["credential"]
                .as_str()
                .expect("credential")
                .to_owned(),
        ));
    }
    let report = |k: usize, depth: u64| {
        let server = if k.is_multiple_of(2) { &a } else { &b };
        http.get(format!("{}/sync/v1/changes?after=0", server.base))
            .bearer_auth(&gates[k].1)
            .header("usher-outbox-depth", depth.to_string())
            .send()
    };
    let bodies = |rx: &receiver::Receiver| -> Vec<Value> {
        let got = rx.received();
        receiver::once_each(&secret, &got);
        got.iter().map(|r| r.json()).collect()
    };
    let count = |b: &[Value], ty: &str, kind: &str| {
        b.iter()
            .filter(|b| b["type"] == ty && (kind.is_empty() || b["data"]["kind"] == kind))
            .count()
    };
    let wait = |ty: &'static str, kind: &'static str, n: usize| {
        let rx = &rx;
        async move {
            let t0 = Instant::now();
            loop {
                let got = bodies(rx);
                if count(&got, ty, kind) >= n {
                    // Many more ticks of both processes: a transition decided twice shows now.
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    return bodies(rx);
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "{} of {n} {ty} {kind} within 30 s",
                    count(&got, ty, kind)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // Every gate's outbox gets deep, then drains.
    for k in 0..GATES {
        assert_eq!(report(k, 9).await.expect("pull").status(), 200);
    }
    let got = wait("alert.fired", "outbox_depth", GATES).await;
    assert_eq!(got.len(), GATES, "one alert.fired per gate: {got:#?}");
    for k in 0..GATES {
        assert_eq!(report(k, 0).await.expect("pull").status(), 200);
    }
    let got = wait("alert.cleared", "outbox_depth", GATES).await;
    assert_eq!(got.len(), 2 * GATES, "one alert.cleared per gate: {got:#?}");

    // Gate 0 falls silent past the threshold (the others keep reporting), then returns.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(31) {
        for k in 1..GATES {
            // Only recorded every few seconds per gate; cheap to repeat.
            assert_eq!(report(k, 0).await.expect("pull").status(), 200);
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let got = wait("gate.offline", "", 1).await;
    assert_eq!(count(&got, "gate.offline", ""), 1, "{got:#?}");
    assert_eq!(count(&got, "alert.fired", "gate_offline"), 1, "{got:#?}");
    let offline = got
        .iter()
        .find(|b| b["type"] == "gate.offline")
        .expect("offline");
    assert_eq!(offline["data"]["gate_id"], json!(gates[0].0));
    assert_eq!(report(0, 0).await.expect("pull").status(), 200);
    let got = wait("gate.online", "", 1).await;
    assert_eq!(count(&got, "gate.online", ""), 1, "{got:#?}");
    assert_eq!(count(&got, "alert.cleared", "gate_offline"), 1, "{got:#?}");
    assert_eq!(got.len(), 2 * GATES + 4, "{got:#?}");

    let (from_a, from_b) = (
        transitions_by(&http, &a.base).await,
        transitions_by(&http, &b.base).await,
    );
    eprintln!("alert transitions decided by A: {from_a}, by B: {from_b}");
    assert_eq!(
        from_a + from_b,
        (2 * GATES + 2) as u64,
        "each transition decided by one process"
    );
    rx.stop();
    a.kill().await;
    b.kill().await;
}
