//! `server backup` while a gate pushes check-ins, then `server restore` into a new data
//! directory: the restored server has every check-in acknowledged before the backup began, and
//! the gate syncs to it with its old credential. The real binary runs the backup and the restore,
//! as an operator would; the running server is this test's, on a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

struct Running {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    password: Option<String>,
}

async fn start(dir: &std::path::Path) -> Running {
    let app = server::build(server::Settings::for_test(dir.to_owned(), None))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let password = app.initial_admin_password.clone();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    Running {
        base,
        stop,
        task,
        password,
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("USHER_MASTER_KEY")
        .output()
        .expect("run the server binary")
}

async fn json(r: reqwest::Response) -> Value {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {v}");
    v
}

fn admission(seq: u64, serial: u64) -> Value {
    json!({"id": Uuid::now_v7(), "seq": seq, "ticket_serial": serial, "method": "qr",
           "direction": "in", "decision": "admit", "hlc": (1_000 + seq).to_string(),
           "scanned_at": "2026-12-01T09:31:07Z", "replica_cursor": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_pushes_restores_every_acknowledged_checkin_and_gates_sync_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = start(&data).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();
    let admin_password = srv.password.clone().unwrap();
    let token = json(
        c.post(format!("{}/api/v1/auth/login", srv.base))
            .json(&json!({"email": "admin@localhost", "password": admin_password}))
            .send()
            .await
            .unwrap(),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = json(
        c.post(format!("{}/api/v1/events", srv.base))
            .bearer_auth(&token)
            .json(
                &json!({"name": "Backup", "starts_at": "2026-12-01T09:00:00Z",
                          "ends_at": "2026-12-01T18:00:00Z"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gate = json(
        c.post(format!("{}/api/v1/events/{event}/gates", srv.base))
            .bearer_auth(&token)
            .json(&json!({"name": "North", "direction": "both"}))
            .send()
            .await
            .unwrap(),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = json(
        c.post(format!(
            "{}/api/v1/events/{event}/gates/{gate}/enrollments",
            srv.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap(),
    )
    .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let enrolled = json(
        c.post(format!("{}/sync/v1/enroll", srv.base))
            .header("usher-protocol", "1")
            .json(&json!({"code": code, "device_name": "kiosk"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let credential = enrolled["credential"].as_str().unwrap().to_owned();

    // A gate pushing batches of 50 check-ins without pause; record what each push acknowledged.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (stop_push, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let pusher = {
        let (c, base, gate, credential, acked) = (
            c.clone(),
            srv.base.clone(),
            gate.clone(),
            credential.clone(),
            acked.clone(),
        );
        tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                if stopped.try_recv().is_ok() {
                    return seq;
                }
                let batch: Vec<Value> = (0..50)
                    .map(|_| {
                        seq += 1;
                        admission(seq, seq)
                    })
                    .collect();
                let r = c
                    .post(format!("{base}/sync/v1/checkins"))
                    .header("usher-protocol", "1")
                    .bearer_auth(&credential)
                    .json(&json!({"gate_id": gate, "checkins": batch}))
                    .send()
                    .await
                    .unwrap();
                let v = json(r).await;
                let mut a = acked.lock().unwrap();
                for r in v["results"].as_array().unwrap() {
                    assert_eq!(r["status"], "stored", "{r}");
                    a.insert(r["id"].as_str().unwrap().to_owned());
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: BTreeSet<String> = acked.lock().unwrap().clone();
    assert!(
        !before.is_empty(),
        "pushes were acknowledged before the backup"
    );
    let dest = dir.path().join("backup");
    let out = tokio::task::spawn_blocking({
        let (data, dest) = (data.clone(), dest.clone());
        move || {
            cli(&[
                "--data-dir",
                data.to_str().unwrap(),
                "backup",
                dest.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = {
        let _ = stop_push.send(());
        pusher.await.unwrap()
    };
    println!(
        "{}; {} check-ins acknowledged before it began, {pushed} pushed in all",
        String::from_utf8_lossy(&out.stdout).trim(),
        before.len()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["usher.db", "master.key"] {
            let mode = std::fs::metadata(dest.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{f} is private");
        }
    }
    // A second backup into the same (now non-empty) directory is refused.
    let again = cli(&[
        "--data-dir",
        data.to_str().unwrap(),
        "backup",
        dest.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let _ = srv.stop.send(());
    srv.task.await.unwrap().unwrap();

    // Restore into a new data directory and serve it.
    let restored = dir.path().join("restored");
    let out = cli(&[
        "--data-dir",
        restored.to_str().unwrap(),
        "restore",
        dest.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = cli(&[
        "--data-dir",
        restored.to_str().unwrap(),
        "restore",
        dest.to_str().unwrap(),
    ]);
    assert!(
        !refused.status.success(),
        "restore over a database is refused"
    );
    let srv = start(&restored).await;
    assert!(
        srv.password.is_none(),
        "the restored server keeps its users"
    );
    // The same admin signs in on the restored server.
    let r = c
        .post(format!("{}/api/v1/auth/login", srv.base))
        .json(&json!({"email": "admin@localhost", "password": admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let db = server::Db::open_file(&restored.join("usher.db"))
        .await
        .unwrap();
    let event_id = Uuid::parse_str(&event).unwrap();
    let stored: BTreeSet<String> =
        server::store::reports::checkins(&db, event_id, Uuid::max(), None, None, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
    let lost: Vec<&String> = before.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "acknowledged before the backup but not restored: {lost:?}"
    );
    db.close().await;

    // The gate syncs to the restored server with its credential: it pulls, and it pushes on
    // from where the restored server's acknowledgement stands.
    let pull = json(
        c.get(format!("{}/sync/v1/changes?after=0", srv.base))
            .header("usher-protocol", "1")
            .bearer_auth(&credential)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!pull["changes"].as_array().unwrap().is_empty());
    let next = stored.len() as u64 + 1;
    let r = json(
        c.post(format!("{}/sync/v1/checkins", srv.base))
            .header("usher-protocol", "1")
            .bearer_auth(&credential)
            .json(&json!({"gate_id": gate, "checkins": [admission(next, 900_000)]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r["results"][0]["status"], "stored", "{r}");
    let _ = srv.stop.send(());
    srv.task.await.unwrap().unwrap();
}
