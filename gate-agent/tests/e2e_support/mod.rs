//! Shared fixture of the end-to-end tests (`e2e_*.rs`): the real server in-process on a fixed
//! loopback port over a fresh PostgreSQL database, real `gate-agent` processes talking to it over
//! HTTP, and polling helpers. Nothing is mocked.
//!
//! PostgreSQL comes from `server::testing::admin_url` (`USHER_TEST_DATABASE_URL`, else the local
//! server, else a private cluster; a superuser connection); each test creates its
//! own database named by UUID and drops it on drop, even after a failed assertion. Child
//! processes are killed on drop. Set `TEST_LOG=1` for server logs; each agent's log is in
//! `<its data dir>/agent.log` and is printed in failure messages.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Once;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
pub use server::testing::PgDatabase;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub const ADMIN_EMAIL: &str = "admin@localhost";

static INIT: Once = Once::new();

fn init() {
    INIT.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        server::telemetry::init_for_tests();
    });
}

// ---------------------------------------------------------------- PostgreSQL

// ---------------------------------------------------------------- the server, in-process

/// A loopback port that was free a moment ago (bound to port 0, then released), so that the
/// server can be stopped and started again on the same address.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// The real server (`server::build`) running on this test's runtime.
pub struct Server {
    pub base: String,
    pub db: server::Db,
    pub initial_admin_password: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Builds and starts the server on `127.0.0.1:port` over `db_url`, keeping its master key in
    /// `data_dir` (so a restart on the same directory accepts the same sessions).
    pub async fn start(data_dir: &Path, db_url: &str, port: u16) -> Self {
        Self::start_with(data_dir, db_url, port, |_| {}).await
    }

    /// [`Server::start`] with settings changed by `tweak` (HTTPS with `tls_cert`/`tls_key`: the
    /// base URL is then `https://127.0.0.1:PORT`).
    pub async fn start_with(
        data_dir: &Path,
        db_url: &str,
        port: u16,
        tweak: impl FnOnce(&mut server::Settings),
    ) -> Self {
        init();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // A stopped predecessor released the port, but make sure before building (a failed bind
        // would leave the new instance's background tasks behind).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {port} is still in use 10 s after the previous server stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut settings =
            server::Settings::for_test(data_dir.to_path_buf(), Some(db_url.to_owned()));
        settings.listen = addr;
        tweak(&mut settings);
        let app = server::build(settings).await.expect("server::build");
        let scheme = if app.is_tls() { "https" } else { "http" };
        assert_eq!(app.port(), port);
        let db = app.db().clone();
        let initial_admin_password = app.initial_admin_password.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("{scheme}://127.0.0.1:{port}"),
            db,
            initial_admin_password,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Triggers the graceful shutdown and waits for it; returns how long it took.
    pub async fn stop(mut self) -> Duration {
        let t0 = Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("server task");
        let result = tokio::time::timeout(Duration::from_secs(90), task)
            .await
            .expect("the server did not stop within 90 s of its shutdown signal")
            .expect("server task panicked");
        result.expect("server ended with an error");
        t0.elapsed()
    }

    /// The event's change-log head, read from the store.
    pub async fn head(&self, event: &str) -> u64 {
        let id = Uuid::parse_str(event).expect("event id");
        server::store::changes::head(&self.db, id)
            .await
            .expect("change head")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------- the organizer API

/// A participant with its issued ticket.
#[derive(Debug, Clone)]
pub struct Participant {
    pub id: String,
    pub serial: u64,
    pub credential: String,
}

/// An organizer's HTTP client, logged in.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
}

impl Api {
    pub async fn login(base: &str, email: &str, password: &str) -> Self {
        init();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self::login_with(client, base, email, password).await
    }

    /// [`Api::login`] with the caller's HTTP client (one that trusts a test CA, say).
    pub async fn login_with(
        client: reqwest::Client,
        base: &str,
        email: &str,
        password: &str,
    ) -> Self {
        init();
        let mut api = Self {
            base: base.to_owned(),
            client,
            token: String::new(),
        };
        let body = api
            .call(
                Method::POST,
                "/api/v1/auth/login",
                Some(json!({"email": email, "password": password})),
            )
            .await
            .expect_status(200);
        api.token = body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        api
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: request failed: {e}"));
        let status = resp.status();
        let bytes = resp.bytes().await.expect("response body");
        Reply {
            what: format!("{method} {path}"),
            status,
            body: serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(Method::GET, path, None).await.expect_status(200)
    }

    /// Creates a live event whose window covers now, returns its id.
    pub async fn create_event(&self, name: &str) -> String {
        let now = time::OffsetDateTime::now_utc();
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .expect("rfc3339")
        };
        let body = self
            .call(
                Method::POST,
                "/api/v1/events",
                Some(json!({"name": name, "venue": "Hall A", "status": "live",
                    "starts_at": fmt(now - time::Duration::hours(1)),
                    "ends_at": fmt(now + time::Duration::hours(8))})),
            )
            .await
            .expect_status(201);
        body["id"].as_str().expect("event id").to_owned()
    }

    /// Creates a participant; the server issues the ticket.
    pub async fn create_participant(&self, event: &str, name: &str) -> Participant {
        let email = format!(
            "{}@example.org",
            name.to_ascii_lowercase().replace(' ', ".")
        );
        let body = self
            .call(
                Method::POST,
                &format!("/api/v1/events/{event}/participants"),
                Some(json!({"name": name, "email": email})),
            )
            .await
            .expect_status(201);
        let ticket = &body["ticket"];
        Participant {
            id: body["id"].as_str().expect("participant id").to_owned(),
            serial: ticket["serial"].as_u64().expect("ticket serial"),
            credential: ticket["credential"]
                .as_str()
                .expect("ticket credential")
                .to_owned(),
        }
    }

    /// Creates a two-way gate, returns its id.
    pub async fn create_gate(&self, event: &str, name: &str) -> String {
        let body = self
            .call(
                Method::POST,
                &format!("/api/v1/events/{event}/gates"),
                Some(json!({"name": name, "direction": "both"})),
            )
            .await
            .expect_status(201);
        body["id"].as_str().expect("gate id").to_owned()
    }

    /// A one-time enrollment code for the gate.
    pub async fn enrollment_code(&self, event: &str, gate: &str) -> String {
        let body = self
            .call(
                Method::POST,
                &format!("/api/v1/events/{event}/gates/{gate}/enrollments"),
                None,
            )
            .await
            .expect_status(201);
        body["code"].as_str().expect("enrollment code").to_owned()
    }

    /// Every item of a paged list endpoint (`{items, next_cursor}`).
    pub async fn list_all(&self, path_and_query: &str) -> Vec<Value> {
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("{path_and_query}{sep}limit=1000&cursor={c}"),
                None => format!("{path_and_query}{sep}limit=1000"),
            };
            let page = self.get(&path).await;
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }

    pub async fn checkins(&self, event: &str) -> Vec<Value> {
        self.list_all(&format!("/api/v1/events/{event}/checkins"))
            .await
    }

    pub async fn conflicts(&self, event: &str, kind: &str) -> Vec<Value> {
        self.list_all(&format!(
            "/api/v1/events/{event}/conflicts?kind={kind}&status=all"
        ))
        .await
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub what: String,
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{} answered {}: {}",
            self.what,
            self.status,
            self.body
        );
        self.body
    }
}

// ---------------------------------------------------------------- gate-agent processes

pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gate-agent")
}

/// One gate: its data directory and, once started, its `gate-agent run` process (scanner on
/// piped stdin, decisions read from stdout). The process is killed on drop.
pub struct Agent {
    pub name: String,
    pub gate_id: String,
    pub dir: tempfile::TempDir,
    /// Extra arguments of `gate-agent run`.
    pub run_args: Vec<String>,
    /// Extra environment of `gate-agent run`.
    pub run_env: Vec<(String, String)>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    decisions: Option<mpsc::UnboundedReceiver<Value>>,
}

impl Agent {
    /// `gate-agent enroll --server BASE --code CODE --data-dir DIR`.
    pub async fn enroll(name: &str, server_base: &str, code: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = tokio::process::Command::new(agent_bin())
            .args(["enroll", "--server", server_base, "--code", code])
            .args(["--device-name", name])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .await
            .expect("run gate-agent enroll");
        assert!(
            out.status.success(),
            "gate-agent enroll ({name}) failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let line: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "gate-agent enroll printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        Self {
            name: name.to_owned(),
            gate_id: line["gate_id"].as_str().expect("gate_id").to_owned(),
            dir,
            run_args: Vec::new(),
            run_env: Vec::new(),
            child: None,
            stdin: None,
            decisions: None,
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("agent.log")
    }

    /// The whole log of the agent's `run` process so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines of the agent's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- last lines of {} ({}) ---\n{}",
            self.log_path().display(),
            self.name,
            lines[from..].join("\n")
        )
    }

    /// `gate-agent run --data-dir DIR --no-ui --dedupe-ms 0`.
    pub fn start(&mut self) {
        self.start_with_ui(None);
    }

    /// `gate-agent run`, with the operator screen (and `/metrics`) on `127.0.0.1:ui_port` when
    /// given, else `--no-ui`.
    pub fn start_with_ui(&mut self, ui_port: Option<u16>) {
        let log = std::fs::File::create(self.log_path()).expect("agent log file");
        let mut command = tokio::process::Command::new(agent_bin());
        command.args(["run", "--dedupe-ms", "0"]);
        command.args(&self.run_args);
        command.envs(self.run_env.iter().map(|(k, v)| (k, v)));
        match ui_port {
            Some(port) => command.env("USHER_UI_LISTEN", format!("127.0.0.1:{port}")),
            None => command.arg("--no-ui"),
        };
        let mut child = command
            .arg("--data-dir")
            .arg(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("AGENT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn gate-agent run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Err(_) => eprintln!("[{name}] non-JSON stdout line: {line}"),
                }
            }
        });
        self.stdin = child.stdin.take();
        self.decisions = Some(rx);
        self.child = Some(child);
    }

    /// Types a credential on the scanner (stdin) and returns the decision line it printed.
    pub async fn scan(&mut self, credential: &str) -> Value {
        let stdin = self.stdin.as_mut().expect("agent not started");
        stdin
            .write_all(format!("{credential}\n").as_bytes())
            .await
            .expect("write to the agent's stdin");
        stdin.flush().await.expect("flush the agent's stdin");
        let rx = self.decisions.as_mut().expect("agent not started");
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "agent {} closed stdout without a decision\n{}",
                self.name,
                self.log_tail()
            ),
            Err(_) => panic!(
                "agent {} printed no decision within 20 s of a scan\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// `gate-agent status --data-dir DIR` (a separate process beside the running one).
    pub async fn status(&self) -> Value {
        let out = tokio::process::Command::new(agent_bin())
            .arg("status")
            .arg("--data-dir")
            .arg(self.dir.path())
            .output()
            .await
            .expect("run gate-agent status");
        assert!(
            out.status.success(),
            "gate-agent status ({}) failed with {}: {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "gate-agent status printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Kills the run process (as a power cut would) and waits until it is gone; [`Agent::start`]
    /// runs it again on the same data directory.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        self.stdin = None;
        self.decisions = None;
    }

    /// Panics (with the agent's log) if the run process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "agent {} exited with {status}\n{}",
                self.name,
                self.log_tail()
            );
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

// ---------------------------------------------------------------- polling

/// Calls `probe` every `every` until it returns `Ok`, and returns that value with the time it
/// took. After `timeout`, panics with `what` and the last `Err` (a description of the state).
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> (T, Duration) {
    let t0 = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return (v, t0.elapsed()),
            Err(state) if t0.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last state: {state}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// The `decision` of a decision line, with the whole line in the failure message.
#[track_caller]
pub fn assert_decision(line: &Value, decision: &str, reason: Option<&str>, serial: u64) {
    assert_eq!(line["decision"], decision, "decision line: {line}");
    assert_eq!(
        line["reason"],
        reason.map_or(Value::Null, |r| Value::String(r.to_owned())),
        "decision line: {line}"
    );
    assert_eq!(line["ticket_serial"], serial, "decision line: {line}");
}
