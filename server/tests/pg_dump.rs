//! The PostgreSQL backup the operations guide documents (`deploy/README.md`): `pg_dump
//! --format=custom` of a live server's database, `pg_restore` into an empty one, and a server on
//! the restored database has every check-in and account and accepts the gate's credential.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use server::testing::PgDatabase;
use uuid::Uuid;

async fn start(
    dir: &std::path::Path,
    url: &str,
) -> (
    String,
    Option<String>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let app = server::build(server::Settings::for_test(
        dir.to_owned(),
        Some(url.to_owned()),
    ))
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let password = app.initial_admin_password.clone();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    (base, password, stop, task)
}

async fn ok(r: reqwest::Response) -> Value {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {v}");
    v
}

fn tool(name: &str, args: &[&str]) {
    let out = std::process::Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} ({e}): apt-get install postgresql-client"));
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_and_pg_restore_carry_a_live_server_over() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let source = PgDatabase::create("usher_dump_src").await.unwrap();
    let target = PgDatabase::create("usher_dump_dst").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (base, password, stop, task) = start(dir.path(), &source.url).await;
    let password = password.unwrap();
    let c = reqwest::Client::new();
    let token = ok(c
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": password}))
        .send()
        .await
        .unwrap())
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = ok(c
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(&token)
        .json(&json!({"name": "Dump", "starts_at": "2026-12-01T09:00:00Z",
                      "ends_at": "2026-12-01T18:00:00Z"}))
        .send()
        .await
        .unwrap())
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gate = ok(c
        .post(format!("{base}/api/v1/events/{event}/gates"))
        .bearer_auth(&token)
        .json(&json!({"name": "North"}))
        .send()
        .await
        .unwrap())
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = ok(c
        .post(format!(
            "{base}/api/v1/events/{event}/gates/{gate}/enrollments"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap())
    .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let credential = ok(c
        .post(format!("{base}/sync/v1/enroll"))
        .header("usher-protocol", "1")
        .json(&json!({"code": code, "device_name": "kiosk"}))
        .send()
        .await
        .unwrap())
    .await["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let checkins: Vec<Value> = (1..=200u64)
        .map(|seq| {
            json!({"id": Uuid::now_v7(), "seq": seq, "ticket_serial": seq, "method": "qr",
                   "direction": "in", "decision": "admit", "hlc": (1_000 + seq).to_string(),
                   "scanned_at": "2026-12-01T09:31:07Z", "replica_cursor": 0})
        })
        .collect();
    ok(c.post(format!("{base}/sync/v1/checkins"))
        .header("usher-protocol", "1")
        .bearer_auth(&credential)
        .json(&json!({"gate_id": gate, "checkins": checkins}))
        .send()
        .await
        .unwrap())
    .await;

    // The documented commands, while the server runs.
    let dump = dir.path().join("usher.dump");
    tool(
        "pg_dump",
        &[
            "--format=custom",
            "--file",
            dump.to_str().unwrap(),
            &source.url,
        ],
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    tool(
        "pg_restore",
        &[
            "--no-owner",
            "--dbname",
            &target.url,
            dump.to_str().unwrap(),
        ],
    );

    // A server on the restored database, with the same master key (the same data dir).
    let (base, password, stop, task) = start(dir.path(), &target.url).await;
    assert!(password.is_none(), "the accounts came along");
    let event_id = Uuid::parse_str(&event).unwrap();
    let db = server::Db::connect(&server::Settings::for_test(
        dir.path().to_owned(),
        Some(target.url.clone()),
    ))
    .await
    .unwrap();
    let stored = server::store::reports::checkins(&db, event_id, Uuid::max(), None, None, 10_000)
        .await
        .unwrap();
    assert_eq!(stored.len(), 200);
    db.close().await;
    let pull = ok(c
        .get(format!("{base}/sync/v1/changes?after=0"))
        .header("usher-protocol", "1")
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap())
    .await;
    assert!(!pull["changes"].as_array().unwrap().is_empty());
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
