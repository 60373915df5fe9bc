//! `server backup` while a gate pushes check-ins, then `server restore` into a new data
//! directory: the restored server has every check-in acknowledged before the backup began, and
//! the gate syncs to it with its old credential. The real binary runs the backup and the restore,
//! as an operator would; the running server is this test's, on a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Running, admission, pull, push, site};
use serde_json::json;
use uuid::Uuid;

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("USHER_MASTER_KEY")
        .output()
        .expect("run the server binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_pushes_restores_every_acknowledged_checkin_and_gates_sync_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Running::start(&data, None).await;
    let admin_password = srv.password.clone().unwrap();
    let c = reqwest::Client::new();
    let s = Arc::new(site(&c, &srv.base, &admin_password).await);

    // A gate pushing batches of 50 check-ins without pause; record what each push acknowledged.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (stop_push, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let pusher = {
        let (c, base, s, acked) = (c.clone(), srv.base.clone(), s.clone(), acked.clone());
        tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                if stopped.try_recv().is_ok() {
                    return seq;
                }
                let batch = (0..50)
                    .map(|_| {
                        seq += 1;
                        admission(seq, seq)
                    })
                    .collect();
                let v = push(&c, &base, &s, batch).await;
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
    srv.stop().await;

    // Restore into a new data directory and serve it.
    let restored = dir.path().join("restored");
    let restore = || {
        cli(&[
            "--data-dir",
            restored.to_str().unwrap(),
            "restore",
            dest.to_str().unwrap(),
        ])
    };
    let out = restore();
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !restore().status.success(),
        "restore over a database is refused"
    );
    let srv = Running::start(&restored, None).await;
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
    let event_id = Uuid::parse_str(&s.event).unwrap();
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
    assert!(
        !pull(&c, &srv.base, &s).await["changes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let next = stored.len() as u64 + 1;
    let r = push(&c, &srv.base, &s, vec![admission(next, 900_000)]).await;
    assert_eq!(r["results"][0]["status"], "stored", "{r}");
    srv.stop().await;
}
