//! The PostgreSQL backup the operations guide documents (`deploy/README.md`): `pg_dump
//! --format=custom` of a live server's database, `pg_restore` into an empty one, and a server on
//! the restored database has every check-in and account and accepts the gate's credential.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Running, admission, pull, push, site};
use server::testing::PgDatabase;
use uuid::Uuid;

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
    let source = PgDatabase::create("usher_dump_src").await.unwrap();
    let target = PgDatabase::create("usher_dump_dst").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(dir.path(), Some(&source.url)).await;
    let c = reqwest::Client::new();
    let s = site(&c, &srv.base, srv.password.as_deref().unwrap()).await;
    push(
        &c,
        &srv.base,
        &s,
        (1..=200).map(|n| admission(n, n)).collect(),
    )
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
    srv.stop().await;
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
    let srv = Running::start(dir.path(), Some(&target.url)).await;
    assert!(srv.password.is_none(), "the accounts came along");
    let db = server::Db::connect(&server::Settings::for_test(
        dir.path().to_owned(),
        Some(target.url.clone()),
    ))
    .await
    .unwrap();
    let event_id = Uuid::parse_str(&s.event).unwrap();
    let stored = server::store::reports::checkins(&db, event_id, Uuid::max(), None, None, 10_000)
        .await
        .unwrap();
    assert_eq!(stored.len(), 200);
    db.close().await;
    assert!(
        !pull(&c, &srv.base, &s).await["changes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    srv.stop().await;
}
