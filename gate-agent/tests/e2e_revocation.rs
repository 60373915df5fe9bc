//! End to end, online: a ticket revoked through the organizer API reaches a running
//! `gate-agent` without restarting anything, and its next scan is rejected as `revoked`.
//!
//! Real processes, real HTTP over loopback, real PostgreSQL; see `e2e_support` for the fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use reqwest::Method;
use serde_json::json;

/// DESIGN §4: the puller long-polls, so "another gate's admission or a revocation arrives within
/// a second". Allow a loaded two-core machine (and the `gate-agent status` process we poll with)
/// a few seconds; a revocation that waits for the long-poll to expire (20 s) fails this.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_a_running_gate_and_its_next_scan_is_rejected() {
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
    let event = api.create_event("Revocation e2e").await;
    let warm_up = api.create_participant(&event, "Early Bird").await;
    let revoked = api.create_participant(&event, "Lost Ticket").await;
    let control = api.create_participant(&event, "Late Comer").await;
    let gate = api.create_gate(&event, "Main").await;
    let mut agent = Agent::enroll(
        "main",
        &server.base,
        &api.enrollment_code(&event, &gate).await,
    )
    .await;
    agent.start();

    // The agent is online and its puller live: an admission it pushes comes back to it as a
    // presence change (outbox empty, replica at the server's head).
    let line = agent.scan(&warm_up.credential).await;
    assert_decision(&line, "admit", None, warm_up.serial);
    let (_, took) = poll(
        "the agent to push its first scan and pull the resulting change",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let head = server.head(&event).await;
            let s = agent.status().await;
            if s["outbox_depth"] == 0 && s["replica_cursor"] == head {
                Ok(())
            } else {
                Err(format!("head {head}, status {s}"))
            }
        },
    )
    .await;
    eprintln!("agent online: first scan pushed and pulled back in {took:?}");
    // Let the agent settle into its next long-poll before revoking.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Revoke through the organizer API; nothing is restarted.
    let t0 = Instant::now();
    let ticket = api
        .call(
            Method::POST,
            &format!(
                "/api/v1/events/{event}/participants/{}/ticket/revoke",
                revoked.id
            ),
            Some(json!({"reason": "reported lost"})),
        )
        .await
        .expect_status(200);
    assert_eq!(ticket["status"], "revoked", "{ticket}");
    let head = server.head(&event).await;
    let (_, propagation) = poll(
        "the revocation to reach the agent's replica",
        Duration::from_secs(45),
        Duration::from_millis(50),
        async || {
            let s = agent.status().await;
            match s["replica_cursor"].as_u64() {
                Some(c) if c >= head => Ok(()),
                _ => Err(format!("head {head}, status {s}")),
            }
        },
    )
    .await;
    let since_request = t0.elapsed();
    eprintln!(
        "revocation reached the gate {propagation:?} after the revoke answered \
         ({since_request:?} after it was sent)"
    );

    // Only now scan it (a scan before the change arrived would rightly admit it).
    let line = agent.scan(&revoked.credential).await;
    assert_decision(&line, "reject", Some("revoked"), revoked.serial);
    let line = agent.scan(&control.credential).await;
    assert_decision(&line, "admit", None, control.serial);

    // The server receives the rejection; the gate knew about the revocation, so there is no
    // conflict about that ticket.
    let (_, _) = poll(
        "the rejection to reach the server",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let list = api
                .list_all(&format!(
                    "/api/v1/events/{event}/checkins?ticket_serial={}",
                    revoked.serial
                ))
                .await;
            match list.as_slice() {
                [c] if c["decision"] == "reject" && c["reason"] == "revoked" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let conflicts = api
        .list_all(&format!("/api/v1/events/{event}/conflicts?status=all"))
        .await;
    assert!(conflicts.is_empty(), "no conflict expected: {conflicts:#?}");

    assert!(
        propagation <= REVOCATION_DEADLINE,
        "the revocation took {propagation:?} to reach a running, online gate (expected within \
         {REVOCATION_DEADLINE:?}: the long-poll should be woken by the change)\n{}",
        agent.log_tail()
    );
    agent.assert_running();
    drop(agent);
    server.stop().await;
}
