//! End to end: the event's lifecycle reaches a running `gate-agent` through its sync, and the
//! gate decides by it (`sync_protocol::decide::check_event_open`): closing the event makes the
//! next entry a rejection with `event_closed`, the reason the operator screen shows; reopening
//! it admits again. The server stores the gate's rejection with the same reason.
//!
//! Real processes, real HTTP over loopback, real PostgreSQL; see `e2e_support` for the fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod e2e_support;

use std::time::Duration;

use e2e_support::*;
use reqwest::Method;
use serde_json::json;

/// Waits until the agent has applied every change up to the server's head.
async fn synced(server: &Server, agent: &Agent, event: &str, what: &str) {
    let head = server.head(event).await;
    poll(
        what,
        Duration::from_secs(45),
        Duration::from_millis(50),
        async || {
            let s = agent.status().await;
            match s["replica_cursor"].as_u64() {
                Some(c) if c >= head && s["outbox_depth"] == 0 => Ok(()),
                _ => Err(format!("head {head}, status {s}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_event_is_refused_at_a_running_gate_with_its_reason() {
    let pg = PgDatabase::create("usher_e2e")
        .await
        .expect("a fresh PostgreSQL database");
    let server_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(server_dir.path(), &pg.url, free_port()).await;
    let password = server
        .initial_admin_password
        .clone()
        .expect("the first start creates an admin");
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let event = api.create_event("Lifecycle e2e").await;
    let early = api.create_participant(&event, "Early Bird").await;
    let late = api.create_participant(&event, "Late Comer").await;
    let gate = api.create_gate(&event, "Main").await;
    let mut agent = Agent::enroll(
        "main",
        &server.base,
        &api.enrollment_code(&event, &gate).await,
    )
    .await;
    agent.start();

    let line = agent.scan(&early.credential).await;
    assert_decision(&line, "admit", None, early.serial);
    synced(
        &server,
        &agent,
        &event,
        "the first scan pushed and pulled back",
    )
    .await;

    let status = |s: &'static str| {
        let api = &api;
        let event = event.clone();
        async move {
            api.call(
                Method::PATCH,
                &format!("/api/v1/events/{event}"),
                Some(json!({"status": s})),
            )
            .await
            .expect_status(200)
        }
    };
    status("closed").await;
    synced(
        &server,
        &agent,
        &event,
        "the closed status to reach the gate",
    )
    .await;
    let line = agent.scan(&late.credential).await;
    assert_decision(&line, "reject", Some("event_closed"), late.serial);

    // The server receives the gate's rejection with the gate's reason.
    poll(
        "the rejection to reach the server",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let list = api
                .list_all(&format!(
                    "/api/v1/events/{event}/checkins?ticket_serial={}",
                    late.serial
                ))
                .await;
            match list.as_slice() {
                [c] if c["decision"] == "reject" && c["reason"] == "event_closed" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // Reopened, the same ticket is admitted.
    status("live").await;
    synced(&server, &agent, &event, "the live status to reach the gate").await;
    let line = agent.scan(&late.credential).await;
    assert_decision(&line, "admit", None, late.serial);
    agent.assert_running();
}
