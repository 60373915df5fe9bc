//! A gate that was offline for hours reconnects with 10,000 check-ins in its outbox: how long
//! until the server holds them all (DESIGN §7: ≤ 2 s)? The real server runs in-process on a
//! fresh PostgreSQL database; the gate is a real replica enrolled over HTTP, and its decisions
//! are real (manual admissions of replicated tickets).
//!
//! `cargo bench -p gate-agent --bench backlog` (`BENCH_BACKLOG` changes the size).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/e2e_support/mod.rs"]
mod support;

use std::time::Instant;

use gate_agent::decide::{Gate, ScanRequest, Subject};
use gate_agent::replica::{Enrollment, Replica};
use gate_agent::sync::{SyncClient, SyncEngine};
use reqwest::Method;
use serde_json::json;
use support::{Api, PgDatabase, Server, free_port};

fn main() {
    let n: usize = std::env::var("BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = PgDatabase::create("usher_e2e")
            .await
            .expect("a fresh PostgreSQL database");
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("server"), &db.url, free_port()).await;
        let password = server.initial_admin_password.clone().unwrap();
        let api = Api::login(&server.base, support::ADMIN_EMAIL, &password).await;
        let event = api.create_event("Backlog").await;
        let people: Vec<_> = (0..n)
            .map(|i| json!({"name": format!("Person {i}"), "email": format!("p{i}@example.org")}))
            .collect();
        for chunk in people.chunks(5_000) {
            api.call(
                Method::POST,
                &format!("/api/v1/events/{event}/participants"),
                Some(json!(chunk)),
            )
            .await
            .expect_status(201);
        }
        let gate = api.create_gate(&event, "North").await;
        let code = api.enrollment_code(&event, &gate).await;

        let path = dir.path().join("gate").join("replica.db");
        let mut replica = Replica::open(&path).unwrap();
        let resp = SyncClient::new(&server.base, None)
            .unwrap()
            .enroll(&code, "bench", Some(replica.mesh_public_key_hex()))
            .await
            .unwrap();
        replica
            .store_enrollment(&Enrollment {
                server_url: server.base.clone(),
                gate_id: resp.gate_id,
                event_id: resp.event_id,
                credential: resp.credential,
            })
            .unwrap();
        replica.set_seq_start(resp.next_seq).unwrap();
        drop(replica);
        let engine = SyncEngine::new(Replica::open(&path).unwrap()).unwrap();
        let t = Instant::now();
        let boot = engine.sync_once().await.unwrap();
        println!(
            "bootstrap of {} changes: {:.2} s",
            boot.pulled,
            t.elapsed().as_secs_f64()
        );

        // Offline: n admissions pile up in the outbox.
        let serials: Vec<u64> = {
            let r = Replica::open(&path).unwrap();
            r.search("Person", n + 10)
                .unwrap()
                .into_iter()
                .map(|t| t.serial)
                .collect()
        };
        let mut g = Gate::new(Replica::open(&path).unwrap()).unwrap();
        let reqs: Vec<ScanRequest> = serials
            .iter()
            .map(|s| ScanRequest {
                subject: Subject::Serial(*s),
                method: None,
                direction: None,
                operator_override: None,
            })
            .collect();
        for batch in reqs.chunks(64) {
            for r in g.scan_batch(batch) {
                r.unwrap();
            }
        }
        let depth = Replica::open(&path).unwrap().outbox_depth().unwrap();
        println!("outbox after the outage: {depth} check-ins");

        // Reconnect: push the backlog.
        let t = Instant::now();
        let stats = engine.sync_once().await.unwrap();
        let took = t.elapsed();
        assert_eq!(stats.outbox_depth, 0);
        let stored = api.list_all(&format!("/api/v1/events/{event}/checkins")).await.len();
        println!(
            "backlog of {depth} check-ins synced in {:.2} s ({:.0}/s, {} pushes); server holds {stored}",
            took.as_secs_f64(),
            depth as f64 / took.as_secs_f64(),
            stats.push_batches
        );
        server.stop().await;
    });
}
