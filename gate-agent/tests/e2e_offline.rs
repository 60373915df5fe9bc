//! End to end, offline: two real `gate-agent` processes keep admitting while the real server is
//! down, and once it is back every check-in reaches it exactly once and the double entry they
//! could not prevent becomes one `duplicate_admission` conflict naming both gates.
//!
//! Real processes, real HTTP over loopback, real PostgreSQL; see `e2e_support` for the fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod e2e_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e_support::*;
use serde_json::Value;

/// The agents' backoff is capped at 30 s with full jitter, so a reconnect can take up to ~30 s
/// plus a round trip; allow a loaded two-core machine some slack on top.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

async fn outbox_and_cursor(agent: &Agent) -> (u64, u64) {
    let s = agent.status().await;
    (
        s["outbox_depth"].as_u64().expect("outbox_depth"),
        s["replica_cursor"].as_u64().expect("replica_cursor"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_admit_offline_and_every_checkin_reaches_the_server_once_after_it_returns() {
    // ------------------------------------------------------------ arrange: server, event, gates
    let pg = PgDatabase::create("usher_e2e")
        .await
        .expect("a fresh PostgreSQL database");
    let server_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Server::start(server_dir.path(), &pg.url, port).await;
    let password = server
        .initial_admin_password
        .clone()
        .expect("the first start creates an admin");
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let event = api.create_event("Offline e2e").await;
    let mut people = Vec::new();
    for i in 0..8 {
        people.push(api.create_participant(&event, &format!("Guest {i}")).await);
    }
    let gate_a = api.create_gate(&event, "North").await;
    let gate_b = api.create_gate(&event, "South").await;
    let mut a = Agent::enroll(
        "north",
        &server.base,
        &api.enrollment_code(&event, &gate_a).await,
    )
    .await;
    let mut b = Agent::enroll(
        "south",
        &server.base,
        &api.enrollment_code(&event, &gate_b).await,
    )
    .await;
    assert_eq!(
        (a.gate_id.as_str(), b.gate_id.as_str()),
        (&*gate_a, &*gate_b)
    );
    a.start();
    b.start();

    // Every decision an agent printed, by check-in id: (gate id, the line).
    let mut printed: BTreeMap<String, (String, Value)> = BTreeMap::new();
    let mut record = |gate: &str, line: &Value| {
        let id = line["id"].as_str().expect("decision id").to_owned();
        assert!(
            printed
                .insert(id, (gate.to_owned(), line.clone()))
                .is_none(),
            "an agent printed the same check-in id twice: {line}"
        );
    };

    // ------------------------------------------------------------ both gates sync while online
    let line = a.scan(&people[0].credential).await;
    assert_decision(&line, "admit", None, people[0].serial);
    record(&gate_a, &line);
    let line = b.scan(&people[1].credential).await;
    assert_decision(&line, "admit", None, people[1].serial);
    record(&gate_b, &line);
    // Pushed (outboxes empty, the server holds both) and pulled (each gate has the presence
    // change of the other's admission: both cursors at the server's head).
    let (_, online_sync) = poll(
        "both gates to push their online scans and pull each other's",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let head = server.head(&event).await;
            let (sa, sb) = (outbox_and_cursor(&a).await, outbox_and_cursor(&b).await);
            let stored = api.checkins(&event).await.len();
            if sa == (0, head) && sb == (0, head) && stored == 2 {
                Ok(())
            } else {
                Err(format!(
                    "head {head}, north (outbox, cursor) {sa:?}, south {sb:?}, server holds {stored} check-ins"
                ))
            }
        },
    )
    .await;
    eprintln!("online: both gates pushed and pulled in {online_sync:?}");
    // Each gate reports its state on its requests: the gate list shows it online, with its agent
    // version, its (empty) outbox and when it last synced.
    poll(
        "the gate list to show both gates' reports",
        Duration::from_secs(60),
        Duration::from_millis(200),
        async || {
            let gates = api.get(&format!("/api/v1/events/{event}/gates")).await;
            let items = gates["items"].as_array().cloned().unwrap_or_default();
            let reported = |g: &Value| {
                g["online"] == true
                    && g["agent_version"] == env!("CARGO_PKG_VERSION")
                    && g["outbox_depth"] == 0
                    && g["last_sync_at"].is_string()
                    && g["last_seen_at"].is_string()
            };
            if items.len() == 2 && items.iter().all(reported) {
                Ok(())
            } else {
                Err(format!("gates: {gates}"))
            }
        },
    )
    .await;

    // ------------------------------------------------------------ the server goes away
    let stop_took = server.stop().await;
    eprintln!("server graceful stop took {stop_took:?}");
    let offline_since = std::time::Instant::now();

    // The same ticket at both gates: neither can know about the other, both admit.
    let shared = &people[2];
    let at_a = a.scan(&shared.credential).await;
    assert_decision(&at_a, "admit", None, shared.serial);
    record(&gate_a, &at_a);
    let at_b = b.scan(&shared.credential).await;
    assert_decision(&at_b, "admit", None, shared.serial);
    record(&gate_b, &at_b);
    // Other tickets at each gate.
    for (at_north, person) in [
        (true, &people[3]),
        (true, &people[4]),
        (false, &people[5]),
        (false, &people[6]),
    ] {
        let (agent, gate) = if at_north {
            (&mut a, &gate_a)
        } else {
            (&mut b, &gate_b)
        };
        let line = agent.scan(&person.credential).await;
        assert_decision(&line, "admit", None, person.serial);
        record(gate, &line);
    }
    // A gate still rejects what it let in itself, and what it learned about while online.
    let line = a.scan(&people[3].credential).await;
    assert_decision(&line, "reject", Some("already_inside"), people[3].serial);
    record(&gate_a, &line);
    let line = b.scan(&people[0].credential).await;
    assert_decision(&line, "reject", Some("already_inside"), people[0].serial);
    record(&gate_b, &line);

    let (depth_a, _) = outbox_and_cursor(&a).await;
    let (depth_b, _) = outbox_and_cursor(&b).await;
    assert_eq!(
        (depth_a, depth_b),
        (4, 4),
        "offline scans wait in the outboxes"
    );
    a.assert_running();
    b.assert_running();
    // Stay offline a little longer, so both agents' backoff has grown past its first steps.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // ------------------------------------------------------------ the server comes back
    eprintln!(
        "server was offline for {:?}; restarting",
        offline_since.elapsed()
    );
    let server = Server::start(server_dir.path(), &pg.url, port).await;
    assert!(server.initial_admin_password.is_none(), "same database");
    let expected = printed.len();
    let (_, catch_up) = poll(
        "both outboxes to drain into the restarted server",
        CATCH_UP_TIMEOUT,
        Duration::from_millis(100),
        async || {
            let (da, _) = outbox_and_cursor(&a).await;
            let (db, _) = outbox_and_cursor(&b).await;
            let stored = api.checkins(&event).await.len();
            if (da, db, stored) == (0, 0, expected) {
                Ok(())
            } else {
                Err(format!(
                    "outbox north {da}, south {db}; server holds {stored} of {expected} check-ins"
                ))
            }
        },
    )
    .await;
    eprintln!("after the restart both outboxes were empty and the server complete in {catch_up:?}");

    // ------------------------------------------------------------ every check-in exactly once
    let stored = api.checkins(&event).await;
    let stored_ids: Vec<&str> = stored
        .iter()
        .map(|c| c["id"].as_str().expect("check-in id"))
        .collect();
    let unique: BTreeSet<&str> = stored_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        stored_ids.len(),
        "the server lists a check-in twice"
    );
    assert_eq!(
        unique,
        printed.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        "the server's check-ins are not exactly the ones the agents printed"
    );
    for c in &stored {
        let (gate, line) = &printed[c["id"].as_str().unwrap()];
        assert_eq!(&c["gate_id"], gate.as_str(), "gate of {c}");
        assert_eq!(c["seq"], line["seq"], "seq of {c} vs {line}");
        assert_eq!(c["decision"], line["decision"], "decision of {c} vs {line}");
        assert_eq!(c["reason"], line["reason"], "reason of {c} vs {line}");
        assert_eq!(c["ticket_serial"], line["ticket_serial"], "serial of {c}");
        assert!(c["invalid"].is_null(), "stored as invalid: {c}");
    }
    // Each gate's seqs are dense from 1 (acknowledgement by contiguous seq).
    for gate in [&gate_a, &gate_b] {
        let mut seqs: Vec<u64> = stored
            .iter()
            .filter(|c| c["gate_id"] == gate.as_str())
            .map(|c| c["seq"].as_u64().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=5).collect::<Vec<_>>(), "seqs of gate {gate}");
    }

    // ------------------------------------------------------------ one conflict naming both gates
    let conflicts = api.conflicts(&event, "duplicate_admission").await;
    assert_eq!(
        conflicts.len(),
        1,
        "expected exactly one duplicate_admission: {conflicts:#?}"
    );
    let c = &conflicts[0];
    assert_eq!(c["ticket_serial"], shared.serial, "{c}");
    let gate_ids: BTreeSet<&str> = c["gate_ids"]
        .as_array()
        .expect("gate_ids")
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(
        gate_ids,
        BTreeSet::from([gate_a.as_str(), gate_b.as_str()]),
        "{c}"
    );
    let checkin_ids: BTreeSet<&str> = c["checkin_ids"]
        .as_array()
        .expect("checkin_ids")
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(
        checkin_ids,
        BTreeSet::from([at_a["id"].as_str().unwrap(), at_b["id"].as_str().unwrap()]),
        "{c}"
    );
    let all_open = api
        .list_all(&format!("/api/v1/events/{event}/conflicts"))
        .await;
    assert_eq!(all_open.len(), 1, "no other conflict: {all_open:#?}");

    // Both gates also pull again: their replicas reach the server's head (the presence changes of
    // the merge, including the other gate's admissions).
    let (_, pull_catch_up) = poll(
        "both replicas to reach the server's change head",
        CATCH_UP_TIMEOUT,
        Duration::from_millis(100),
        async || {
            let head = server.head(&event).await;
            let (ca, cb) = (outbox_and_cursor(&a).await.1, outbox_and_cursor(&b).await.1);
            if ca == head && cb == head {
                Ok(())
            } else {
                Err(format!("head {head}, north cursor {ca}, south cursor {cb}"))
            }
        },
    )
    .await;
    eprintln!("replicas at the server's head {pull_catch_up:?} after the outboxes drained");
    // Online again, the South gate now knows the North gate's offline admissions.
    let line = b.scan(&people[4].credential).await;
    assert_decision(&line, "reject", Some("already_inside"), people[4].serial);

    a.assert_running();
    b.assert_running();
    drop((a, b));
    let stop_took = server.stop().await;
    eprintln!("server graceful stop (agents gone) took {stop_took:?}");
}
