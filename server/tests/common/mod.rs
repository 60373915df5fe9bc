//! What the whole-server tests (backup, pg_dump) share: a server on this test's runtime, and an
//! event with an enrolled gate set up over the real HTTP API.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use uuid::Uuid;

/// A server running on this test's runtime until [`Running::stop`].
pub struct Running {
    pub base: String,
    /// The first admin's password, when this start created the admin.
    pub password: Option<String>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// `server::build` on `dir` (and `database_url`, else the SQLite file in `dir`), port 0.
    pub async fn start(dir: &std::path::Path, database_url: Option<&str>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let settings = server::Settings::for_test(dir.to_owned(), database_url.map(str::to_owned));
        let app = server::build(settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let password = app.initial_admin_password.clone();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            base,
            password,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// The body of a successful answer (the status and body in the failure message otherwise).
pub async fn ok(r: reqwest::Response) -> Value {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {v}");
    v
}

/// An event with one gate whose device is enrolled.
pub struct Site {
    pub token: String,
    pub event: String,
    pub gate: String,
    /// The gate's bearer credential.
    pub credential: String,
}

/// Signs in as the first admin and sets up a [`Site`] over the API.
pub async fn site(c: &reqwest::Client, base: &str, admin_password: &str) -> Site {
    let token = ok(c
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": admin_password}))
        .send()
        .await
        .unwrap())
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = |v: Value, field: &str| v[field].as_str().unwrap().to_owned();
    let event = id(
        ok(c.post(format!("{base}/api/v1/events"))
            .bearer_auth(&token)
            .json(
                &json!({"name": "Site", "status": "live", "starts_at": "2026-12-01T09:00:00Z",
                          "ends_at": "2026-12-01T18:00:00Z"}),
            )
            .send()
            .await
            .unwrap())
        .await,
        "id",
    );
    let gate = id(
        ok(c.post(format!("{base}/api/v1/events/{event}/gates"))
            .bearer_auth(&token)
            .json(&json!({"name": "North", "direction": "both"}))
            .send()
            .await
            .unwrap())
        .await,
        "id",
    );
    let code = id(
        ok(c.post(format!(
            "{base}/api/v1/events/{event}/gates/{gate}/enrollments"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap())
        .await,
        "code",
    );
    let credential = id(
        ok(c.post(format!("{base}/sync/v1/enroll"))
            .header("usher-protocol", "1")
            .json(&json!({"code": code, "device_name": "kiosk"}))
            .send()
            .await
            .unwrap())
        .await,
        "credential",
    );
    Site {
        token,
        event,
        gate,
        credential,
    }
}

/// An admission of ticket `serial` as the gate's `seq`th check-in.
pub fn admission(seq: u64, serial: u64) -> Value {
    json!({"id": Uuid::now_v7(), "seq": seq, "ticket_serial": serial, "method": "qr",
           "direction": "in", "decision": "admit", "hlc": (1_000 + seq).to_string(),
           "scanned_at": "2026-12-01T09:31:07Z", "replica_cursor": 0})
}

/// `POST /sync/v1/checkins` as the site's gate.
pub async fn push(c: &reqwest::Client, base: &str, site: &Site, checkins: Vec<Value>) -> Value {
    ok(c.post(format!("{base}/sync/v1/checkins"))
        .header("usher-protocol", "1")
        .bearer_auth(&site.credential)
        .json(&json!({"gate_id": site.gate, "checkins": checkins}))
        .send()
        .await
        .unwrap())
    .await
}

/// `GET /sync/v1/changes?after=0` as the site's gate.
pub async fn pull(c: &reqwest::Client, base: &str, site: &Site) -> Value {
    ok(c.get(format!("{base}/sync/v1/changes?after=0"))
        .header("usher-protocol", "1")
        .bearer_auth(&site.credential)
        .send()
        .await
        .unwrap())
    .await
}
