//! Webhooks over real loopback HTTP: endpoints, signed deliveries verified as the Standard
//! Webhooks specification says, retries while the receiver is down, rotation, test deliveries,
//! validation and roles — on SQLite and PostgreSQL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sync_protocol::Hlc;
use uuid::Uuid;

#[path = "../common/webhook_receiver.rs"]
pub(crate) mod receiver;

use crate::helpers::{Backend, TestApp, spawn_app_with};
use receiver::{Receiver, once_each, verify};

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

async fn live_event(app: &TestApp) -> String {
    let now = time::OffsetDateTime::now_utc();
    let ev = app
        .post(
            Some(&app.admin),
            "/api/v1/events",
            json!({"name": "Hooks", "status": "live", "starts_at": rfc3339(now - time::Duration::hours(1)),
                   "ends_at": rfc3339(now + time::Duration::hours(8)), "venue": "Hall"}),
        )
        .await
        .assert_status(201)
        .clone();
    ev["id"].as_str().unwrap().to_owned()
}

async fn create_hook(app: &TestApp, event: &str, url: &str, events: &[&str]) -> Value {
    app.post(
        Some(&app.admin),
        &format!("/api/v1/events/{event}/webhooks"),
        json!({"url": url, "events": events, "description": "CRM"}),
    )
    .await
    .assert_status(201)
    .clone()
}

struct Gate {
    id: String,
    credential: String,
    next_seq: u64,
}

async fn enrolled_gate(app: &TestApp, event: &str) -> Gate {
    let g = app
        .post(
            Some(&app.admin),
            &format!("/api/v1/events/{event}/gates"),
            json!({"name": "North", "direction": "both", "allow_reentry": true}),
        )
        .await
        .assert_status(201)
        .clone();
    let id = g["id"].as_str().unwrap().to_owned();
    let code = app
        .post_empty(
            Some(&app.admin),
            &format!("/api/v1/events/{event}/gates/{id}/enrollments"),
        )
        .await
        .assert_status(201)["code"]
        .clone();
    let e = app
        .post(
            None,
            "/sync/v1/enroll",
            json!({"code": code, "device_name": "kiosk"}),
        )
        .await
        .assert_status(201)
        .clone();
    Gate {
        id,
        credential: e["credential"].as_str().unwrap().to_owned(),
        next_seq: e["next_seq"].as_u64().unwrap(),
    }
}

/// Participants with tickets: (participant id, serial).
async fn people(app: &TestApp, event: &str, n: usize) -> Vec<(String, u64)> {
    let body: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("Guest {i}"), "email": format!("g{i}@example.org")}))
        .collect();
    let created = app
        .post(
            Some(&app.staff),
            &format!("/api/v1/events/{event}/participants"),
            json!(body),
        )
        .await
        .assert_status(201)
        .clone();
    created["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["ticket"]["serial"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn checkin(seq: u64, serial: u64, dir: &str) -> Value {
    json!({"id": Uuid::now_v7(), "seq": seq, "ticket_serial": serial, "code": null,
           "method": "qr", "direction": dir, "decision": "admit", "reason": null,
           "hlc": Hlc::new(now_ms(), 0).to_string(), "scanned_at": "2026-11-25T10:00:00Z",
           "replica_cursor": 0, "operator_override": null})
}

async fn push(app: &TestApp, gate: &Gate, checkins: &[Value]) -> Value {
    app.send(
        app.client
            .post(app.url("/sync/v1/checkins"))
            .bearer_auth(&gate.credential)
            .header(sync_protocol::wire::PROTOCOL_HEADER, "1")
            .json(&json!({"gate_id": gate.id, "checkins": checkins})),
    )
    .await
    .assert_status(200)
    .clone()
}

/// Types of the received messages, counted.
fn types(got: &HashMap<String, receiver::Received>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in got.values() {
        *out.entry(r.json()["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    out
}

async fn deliveries(app: &TestApp, event: &str, hook: &str) -> Vec<Value> {
    app.get(
        Some(&app.admin),
        &format!("/api/v1/events/{event}/webhooks/{hook}/deliveries?limit=1000"),
    )
    .await
    .assert_status(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

// ---------------------------------------------------------------- facts arrive signed, once

async fn facts_arrive_signed_once(app: TestApp) {
    let rx = Receiver::start().await;
    let event = live_event(&app).await;
    let hook = create_hook(
        &app,
        &event,
        &rx.url(),
        &[
            "checkin.created",
            "checkin.reverted",
            "participant.created",
            "participant.updated",
            "ticket.revoked",
            "conflict.created",
            "conflict.resolved",
        ],
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{hook}");
    let t0 = Instant::now();
    let guests = people(&app, &event, 3).await;
    let first = rx.wait_for(1, Duration::from_secs(10)).await;
    eprintln!("time to first delivery: {:?}", t0.elapsed());
    assert_eq!(first[0].json()["type"], "participant.created");

    // Three admissions through a real gate push, then the same batch again (a retry: stored
    // nothing, announces nothing), then an undo of the first.
    let gate = enrolled_gate(&app, &event).await;
    let batch: Vec<Value> = guests
        .iter()
        .enumerate()
        .map(|(i, (_, serial))| checkin(gate.next_seq + i as u64, *serial, "in"))
        .collect();
    let answer = push(&app, &gate, &batch).await;
    assert_eq!(answer["results"][0]["status"], "stored", "{answer}");
    let again = push(&app, &gate, &batch).await;
    assert_eq!(again["results"][0]["status"], "duplicate", "{again}");
    let mut undo = checkin(gate.next_seq + 3, guests[0].1, "in");
    undo["undoes"] = batch[0]["id"].clone();
    push(&app, &gate, &[undo.clone()]).await;
    // A participant changed, a ticket revoked.
    app.patch(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants/{}", guests[1].0),
        json!({"organization": "ACME"}),
    )
    .await
    .assert_status(200);
    app.post(
        Some(&app.staff),
        &format!(
            "/api/v1/events/{event}/participants/{}/ticket/revoke",
            guests[2].0
        ),
        json!({"reason": "lost"}),
    )
    .await
    .assert_status(200);

    // 3 participants + 3 check-ins + 1 undo + 1 update + 1 revocation (guest 2 is inside:
    // the revocation while inside is also a conflict).
    let expected = 3 + 3 + 1 + 1 + 1 + 1;
    rx.wait_for(expected, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = once_each(&secret, &rx.received());
    let counts = types(&got);
    assert_eq!(got.len(), expected, "{counts:?}");
    assert_eq!(counts.get("participant.created"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("checkin.created"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("checkin.reverted"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("participant.updated"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("ticket.revoked"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("conflict.created"), Some(&1), "{counts:?}");

    // Stable payload fields, no credentials.
    let bodies: Vec<Value> = got.values().map(|r| r.json()).collect();
    let admission = bodies
        .iter()
        .find(|b| b["type"] == "checkin.created" && b["data"]["checkin_id"] == batch[1]["id"])
        .expect("the second admission");
    assert!(admission["timestamp"].as_str().unwrap().ends_with('Z'));
    let d = &admission["data"];
    assert_eq!(d["event_id"], event.as_str());
    assert_eq!(d["gate_id"], gate.id.as_str());
    assert_eq!(d["ticket_serial"], guests[1].1);
    assert_eq!(d["participant_id"], guests[1].0.as_str());
    assert_eq!(d["direction"], "in");
    assert_eq!(d["decision"], "admit");
    assert_eq!(d["source"], "push");
    let reverted = bodies
        .iter()
        .find(|b| b["type"] == "checkin.reverted")
        .unwrap();
    assert_eq!(reverted["data"]["undoes"], batch[0]["id"]);
    let revoked = bodies
        .iter()
        .find(|b| b["type"] == "ticket.revoked")
        .unwrap();
    assert_eq!(revoked["data"]["ticket_serial"], guests[2].1);
    assert_eq!(revoked["data"]["participant_id"], guests[2].0.as_str());
    let conflict = bodies
        .iter()
        .find(|b| b["type"] == "conflict.created")
        .unwrap();
    assert_eq!(
        conflict["data"]["kind"], "revoked_while_inside",
        "{conflict}"
    );
    for b in &bodies {
        let text = b.to_string();
        assert!(!text.contains("credential"), "{text}");
        assert!(!text.contains("whsec_"), "{text}");
    }

    // Resolving the conflict announces it.
    let conflict_id = conflict["data"]["conflict_id"].as_str().unwrap();
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/conflicts/{conflict_id}/resolve"),
        json!({"action": "acknowledge"}),
    )
    .await
    .assert_status(200);
    let all = rx.wait_for(expected + 1, Duration::from_secs(10)).await;
    let got = once_each(&secret, &all);
    let resolved = got
        .values()
        .map(|r| r.json())
        .find(|b| b["type"] == "conflict.resolved")
        .unwrap();
    assert_eq!(resolved["data"]["conflict_id"], conflict_id);
    assert_eq!(resolved["data"]["resolution"], "acknowledged");

    // The organizer sees every delivery, delivered at the first attempt.
    let hook_id = hook["id"].as_str().unwrap();
    let list = deliveries(&app, &event, hook_id).await;
    assert_eq!(list.len(), expected + 1);
    for d in &list {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_response_code"], 204, "{d}");
        assert!(d["next_attempt_at"].is_null(), "{d}");
        assert!(got.contains_key(d["webhook_id"].as_str().unwrap()), "{d}");
    }
}

// ---------------------------------------------------------------- receiver down, then up

async fn a_receiver_down_for_a_while_gets_everything_once(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.webhook_retry_scale = 0.001).await;
    // Nothing listens at first: connections are refused.
    let port = Receiver::reserve_port();
    let event = live_event(&app).await;
    let url = format!("http://127.0.0.1:{port}/hooks");
    let hook = create_hook(&app, &event, &url, &["checkin.created"]).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let guests = people(&app, &event, 40).await;
    let gate = enrolled_gate(&app, &event).await;
    for (k, chunk) in guests.chunks(10).enumerate() {
        let batch: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, (_, s))| checkin(gate.next_seq + (k * 10 + i) as u64, *s, "in"))
            .collect();
        push(&app, &gate, &batch).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Up, but answering 503 for a while.
    let rx = Receiver::start_on(port).await;
    rx.set_failing(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rx.refused() > 0, "retries reached the failing receiver");
    let pending = deliveries(&app, &event, hook["id"].as_str().unwrap()).await;
    assert!(
        pending
            .iter()
            .all(|d| d["status"] == "pending" && d["attempts"].as_u64().unwrap() >= 1),
        "{pending:?}"
    );
    assert!(pending.iter().any(|d| d["last_response_code"] == 503));
    let up = Instant::now();
    rx.set_failing(false);
    rx.wait_for(40, Duration::from_secs(30)).await;
    eprintln!(
        "all 40 deliveries arrived {:?} after the receiver came back",
        up.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = once_each(&secret, &rx.received());
    assert_eq!(got.len(), 40);
    let ids: std::collections::HashSet<String> = got
        .values()
        .map(|r| r.json()["data"]["checkin_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 40, "every check-in announced once");
    let list = deliveries(&app, &event, hook["id"].as_str().unwrap()).await;
    assert!(list.iter().all(|d| d["status"] == "delivered"), "{list:?}");
    assert!(
        list.iter().all(|d| d["attempts"].as_u64().unwrap() > 1),
        "{list:?}"
    );
    let hook_now = app
        .get(
            Some(&app.admin),
            &format!(
                "/api/v1/events/{event}/webhooks/{}",
                hook["id"].as_str().unwrap()
            ),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(hook_now["enabled"], true);
    assert_eq!(hook_now["consecutive_failures"], 0, "{hook_now}");
    drop(got);
    rx.stop();
}

// ---------------------------------------------------------------- an endpoint failing for good

async fn an_endpoint_failing_continuously_is_disabled(backend: Backend) {
    // The whole schedule in about 2 s, disabled after about 2.6 s of failures.
    let app = spawn_app_with(backend, |s| s.webhook_retry_scale = 0.00002).await;
    let event = live_event(&app).await;
    let url = format!("http://127.0.0.1:{}/gone", Receiver::reserve_port());
    let hook = create_hook(&app, &event, &url, &["participant.created"]).await;
    let id = hook["id"].as_str().unwrap();
    // Messages over 3.5 s: some are still being retried when the endpoint has failed for 2.6 s.
    let t0 = Instant::now();
    for _ in 0..7 {
        people(&app, &event, 1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let disabled = loop {
        let h = app
            .get(
                Some(&app.admin),
                &format!("/api/v1/events/{event}/webhooks/{id}"),
            )
            .await
            .assert_status(200)
            .clone();
        if h["enabled"] == false {
            break h;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "still enabled: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("failed"), "{reason}");
    assert!(disabled["consecutive_failures"].as_u64().unwrap() > 3);
    // A message committed while the endpoint was being disabled fails on its next claim.
    let list = loop {
        let list = deliveries(&app, &event, id).await;
        if !list.is_empty() && list.iter().all(|d| d["status"] == "failed") {
            break list;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        list.iter()
            .all(|d| d["last_error"].as_str().is_some_and(|e| !e.is_empty())),
        "{list:?}"
    );
    // The organizer is told: an audit line.
    let audits: i64 = match &app.db {
        server::Db::Postgres(p) => {
            sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'webhook.disable'")
                .fetch_one(p)
                .await
                .unwrap()
        }
        server::Db::Sqlite(p) => {
            sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'webhook.disable'")
                .fetch_one(p)
                .await
                .unwrap()
        }
    };
    assert_eq!(audits, 1);
    // Nothing more is queued for it, and a test is refused until it is enabled again.
    people(&app, &event, 1).await;
    assert_eq!(deliveries(&app, &event, id).await.len(), list.len());
    app.post_empty(
        Some(&app.admin),
        &format!("/api/v1/events/{event}/webhooks/{id}/test"),
    )
    .await
    .assert_problem(409, None);
    let enabled = app
        .patch(
            Some(&app.admin),
            &format!("/api/v1/events/{event}/webhooks/{id}"),
            json!({"enabled": true}),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(enabled["enabled"], true);
    assert!(enabled["disabled_reason"].is_null());
    assert_eq!(enabled["consecutive_failures"], 0);
}

// ---------------------------------------------------------------- rotation, tests, API

async fn rotation_tests_validation_and_roles(app: TestApp) {
    let rx = Receiver::start().await;
    let event = live_event(&app).await;
    let base = format!("/api/v1/events/{event}/webhooks");

    // Validation.
    for (body, field) in [
        (
            json!({"url": "ftp://x.example/", "events": ["checkin.created"]}),
            "url",
        ),
        (
            json!({"url": "not a url", "events": ["checkin.created"]}),
            "url",
        ),
        (
            json!({"url": "http://", "events": ["checkin.created"]}),
            "url",
        ),
        (json!({"url": rx.url(), "events": []}), "events"),
        (
            json!({"url": rx.url(), "events": ["checkin.deleted"]}),
            "events",
        ),
        (
            json!({"url": rx.url(), "events": ["webhook.test"]}),
            "events",
        ),
    ] {
        app.post(Some(&app.admin), &base, body.clone())
            .await
            .assert_problem(422, Some(field));
    }

    let hook = create_hook(&app, &event, &rx.url(), &["checkin.created"]).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let one = format!("{base}/{id}");
    let old_secret = hook["secret"].as_str().unwrap().to_owned();
    assert_eq!(hook["events"], json!(["checkin.created"]));
    assert_eq!(hook["enabled"], true);
    assert_eq!(hook["description"], "CRM");

    // Roles: staff and viewers see nothing of webhooks.
    for token in [&app.staff, &app.viewer] {
        app.get(Some(token), &base).await.assert_problem(403, None);
        app.get(Some(token), &one).await.assert_problem(403, None);
        app.post(
            Some(token),
            &base,
            json!({"url": rx.url(), "events": ["checkin.created"]}),
        )
        .await
        .assert_problem(403, None);
        app.patch(Some(token), &one, json!({"enabled": false}))
            .await
            .assert_problem(403, None);
        app.post_empty(Some(token), &format!("{one}/rotate"))
            .await
            .assert_problem(403, None);
        app.post_empty(Some(token), &format!("{one}/test"))
            .await
            .assert_problem(403, None);
        app.get(Some(token), &format!("{one}/deliveries"))
            .await
            .assert_problem(403, None);
        app.delete(Some(token), &one)
            .await
            .assert_problem(403, None);
    }
    app.get(None, &base).await.assert_problem(401, None);

    // The secret is shown once.
    let listed = app
        .get(Some(&app.admin), &base)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(listed["items"][0].get("secret").is_none(), "{listed}");
    let fetched = app
        .get(Some(&app.admin), &one)
        .await
        .assert_status(200)
        .clone();
    assert!(fetched.get("secret").is_none(), "{fetched}");

    // A test delivery, signed with the secret.
    let queued = app
        .post_empty(Some(&app.admin), &format!("{one}/test"))
        .await
        .assert_status(202)
        .clone();
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].id, queued["webhook_id"].as_str().unwrap());
    assert!(verify(&old_secret, &got[0]));
    assert_eq!(got[0].json()["type"], "webhook.test");
    assert_eq!(got[0].json()["data"]["endpoint_id"], id.as_str());

    // Rotation: a new secret; during the grace window both sign.
    let rotated = app
        .post_empty(Some(&app.admin), &format!("{one}/rotate"))
        .await
        .assert_status(200)
        .clone();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_"));
    assert_ne!(new_secret, old_secret);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    app.post_empty(Some(&app.admin), &format!("{one}/test"))
        .await
        .assert_status(202);
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    let second = &got[1];
    assert_eq!(
        second.signature.split(' ').count(),
        2,
        "{}",
        second.signature
    );
    assert!(verify(&new_secret, second));
    assert!(verify(&old_secret, second));
    assert!(!verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", second));

    // The deliveries list. The receiver has the request before the server has recorded its
    // answer: wait (bounded) until both are recorded.
    let mut list = deliveries(&app, &event, &id).await;
    for _ in 0..100 {
        if list.len() == 2 && list.iter().all(|d| d["status"] == "delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        list = deliveries(&app, &event, &id).await;
    }
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["webhook_id"], second.id.as_str(), "newest first");
    for d in &list {
        assert_eq!(d["event_type"], "webhook.test");
        assert_eq!(d["status"], "delivered");
        assert_eq!(d["attempts"], 1);
        assert!(d["delivered_at"].is_string());
    }
    let page = app
        .get(Some(&app.admin), &format!("{one}/deliveries?limit=1"))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            Some(&app.admin),
            &format!("{one}/deliveries?limit=1&cursor={cursor}"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(rest["items"][0]["webhook_id"], got[0].id.as_str());

    // Updates.
    app.patch(Some(&app.admin), &one, json!({"url": "gopher://x/"}))
        .await
        .assert_problem(422, Some("url"));
    app.patch(Some(&app.admin), &one, json!({"events": ["nope"]}))
        .await
        .assert_problem(422, Some("events"));
    let patched = app
        .patch(
            Some(&app.admin),
            &one,
            json!({"events": ["ticket.revoked", "checkin.created", "ticket.revoked"],
                   "enabled": false}),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(
        patched["events"],
        json!(["checkin.created", "ticket.revoked"])
    );
    assert_eq!(patched["enabled"], false);
    assert!(
        patched["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("admin")
    );
    app.post_empty(Some(&app.admin), &format!("{one}/test"))
        .await
        .assert_problem(409, None);

    // Delete.
    app.delete(Some(&app.admin), &one).await.assert_status(204);
    app.get(Some(&app.admin), &one)
        .await
        .assert_problem(404, None);
    app.get(Some(&app.admin), &format!("{one}/deliveries"))
        .await
        .assert_problem(404, None);
    app.delete(Some(&app.admin), &one)
        .await
        .assert_problem(404, None);
    rx.stop();
}

// ---------------------------------------------------------------- a big push

async fn a_large_push_queues_its_messages_in_bulk(app: TestApp) {
    let rx = Receiver::start().await;
    let event = live_event(&app).await;
    let hook = create_hook(&app, &event, &rx.url(), &["checkin.created"]).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let guests = people(&app, &event, 1000).await;
    let gate = enrolled_gate(&app, &event).await;
    let batch: Vec<Value> = guests
        .iter()
        .enumerate()
        .map(|(i, (_, s))| checkin(gate.next_seq + i as u64, *s, "in"))
        .collect();
    let t0 = Instant::now();
    push(&app, &gate, &batch).await;
    let pushed = t0.elapsed();
    let got = rx.wait_for(1000, Duration::from_secs(60)).await;
    let all = t0.elapsed();
    eprintln!(
        "push of 1,000 check-ins answered in {pushed:?}; 1,000 deliveries in {all:?} ({:.0}/s)",
        1000.0 / all.as_secs_f64()
    );
    assert_eq!(once_each(&secret, &got).len(), 1000);
}

crate::backend_tests!(
    facts_arrive_signed_once,
    rotation_tests_validation_and_roles,
    a_large_push_queues_its_messages_in_bulk,
);

mod receiver_down {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        a_receiver_down_for_a_while_gets_everything_once(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        a_receiver_down_for_a_while_gets_everything_once(Backend::Postgres).await;
    }
}

mod disabled_endpoint {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        an_endpoint_failing_continuously_is_disabled(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        an_endpoint_failing_continuously_is_disabled(Backend::Postgres).await;
    }
}
