//! The operator screen over real HTTP on loopback: scan, lookup, manual admit, undo, override,
//! the live decision stream, status, and clear errors for bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use futures_util::StreamExt;
use gate_agent::decide::Gate;
use gate_agent::handle::GateHandle;
use gate_agent::replica::Replica;
use gate_agent::sync::SyncStatus;
use gate_agent::ui::{UiState, serve};
use serde_json::{Value, json};
use sync_protocol::wire::Reason;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const PIN: &str = "246810";

/// A fixture whose event has the supervisor PIN [`PIN`].
fn fixture_with_pin(tickets: u64) -> Fixture {
    fixture(tickets, |g| {
        g.supervisor_pin = Some(sync_protocol::pin::hash(PIN).unwrap());
    })
}

/// Serves the screen; returns its base URL, its shutdown, its state (for the pairing code) and
/// a client paired with it (its session cookie on every request).
async fn start(f: &Fixture) -> (String, CancellationToken, UiState, reqwest::Client) {
    let gate = Gate::new(Replica::open(&f.path()).unwrap()).unwrap();
    let handle = GateHandle::spawn(gate, Arc::new(Notify::new())).unwrap();
    let state = UiState::new(
        handle,
        Arc::new(Mutex::new(Replica::open(&f.path()).unwrap())),
        Arc::new(SyncStatus::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state.clone(), shutdown.clone()));
    let c = paired(&base, &state).await;
    (base, shutdown, state, c)
}

/// Pairs a new client with the pairing code and keeps the cookie it got.
async fn paired(base: &str, state: &UiState) -> reqwest::Client {
    let r = client()
        .post(format!("{base}/api/pair"))
        .json(&json!({"code": state.pairing_code()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, session.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

fn client() -> reqwest::Client {
    gate_agent::sync::client::install_tls_provider();
    reqwest::Client::new()
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn scan_lookup_manual_admit_undo_and_override_over_http() {
    let f = fixture_with_pin(5);
    let (base, shutdown, _, c) = start(&f).await;

    // Subscribe to the live stream first.
    let mut events = c
        .get(format!("{base}/api/events"))
        .send()
        .await
        .unwrap()
        .bytes_stream();

    let (s, o) = post(
        &c,
        format!("{base}/api/scan"),
        json!({"credential": f.ticket(3).encode()}),
    )
    .await;
    assert_eq!(s, 200, "{o}");
    assert_eq!(o["decision"], "admit");
    assert_eq!(o["name"], "Attendee 3");
    assert_eq!(o["attention"], "wheelchair access");

    let mut seen = String::new();
    while !seen.contains("event: decision") || !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
            .await
            .expect("a decision event within 5 s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains(&o["id"].as_str().unwrap().to_string()),
        "{seen}"
    );

    let (_, again) = post(
        &c,
        format!("{base}/api/scan"),
        json!({"credential": f.ticket(3).encode()}),
    )
    .await;
    assert_eq!(
        (again["decision"].clone(), again["reason"].clone()),
        (json!("reject"), json!("already_inside"))
    );
    // When and where the entry that refuses it was made.
    assert_eq!(again["last_seen"]["gate"], "North", "{again}");
    assert_eq!(again["last_seen"]["at"], o["scanned_at"], "{again}");

    // Supervisor override of that rejection: refused without the PIN or with a wrong one.
    let (s, e) = post(
        &c,
        format!("{base}/api/scan"),
        json!({"serial": 3, "override": "re-entry approved"}),
    )
    .await;
    assert_eq!(
        (s, e["error"].clone(), e["field"].clone()),
        (403, json!("supervisor_pin_required"), json!("pin"))
    );
    let (s, e) = post(
        &c,
        format!("{base}/api/scan"),
        json!({"serial": 3, "override": "re-entry approved", "pin": "111111"}),
    )
    .await;
    assert_eq!((s, e["error"].clone()), (403, json!("bad_supervisor_pin")));
    let (s, ov) = post(
        &c,
        format!("{base}/api/scan"),
        json!({"serial": 3, "override": "re-entry approved", "pin": PIN, "supervisor": "Dana"}),
    )
    .await;
    assert_eq!(s, 200, "{ov}");
    assert_eq!(ov["decision"], "admit");
    assert_eq!(
        ov["operator_override"],
        "re-entry approved (approved by Dana)"
    );

    // Manual lookup by name, then admit by serial.
    let hits: Value = c
        .get(format!("{base}/api/lookup?q=attendee%202"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hits["items"][0]["serial"], 2);
    assert_eq!(hits["items"][0]["inside"], false);
    let (_, manual) = post(&c, format!("{base}/api/scan"), json!({"serial": 2})).await;
    assert_eq!(
        (manual["decision"].clone(), manual["method"].clone()),
        (json!("admit"), json!("manual"))
    );
    // By short code, as typed.
    let code = Fixture::code(2).to_string();
    let hits: Value = c
        .get(format!("{base}/api/lookup?q={code}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hits["items"][0]["inside"], true);

    // Undo the manual admission, then the ticket admits again.
    let (s, undo) = post(&c, format!("{base}/api/undo"), json!({"id": manual["id"]})).await;
    assert_eq!(s, 200, "{undo}");
    assert_eq!(undo["undoes"], manual["id"]);
    let (s, twice) = post(&c, format!("{base}/api/undo"), json!({"id": manual["id"]})).await;
    assert_eq!((s, twice["error"].clone()), (409, json!("cannot_undo")));
    let (_, again) = post(&c, format!("{base}/api/scan"), json!({"serial": 2})).await;
    assert_eq!(again["decision"], "admit");

    let st: Value = c
        .get(format!("{base}/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["gate_id"], json!(f.gate_id));
    assert_eq!(st["direction"], "both");
    assert_eq!(st["outbox_depth"], 6);
    assert_eq!(st["online"], false);

    let page = c
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("EventSource(\"/api/events\")"));
    // Every reason in the operator's words, from the shared list.
    assert!(!page.contains("__REASONS__"));
    for r in Reason::ALL {
        let entry = format!("{}:{}", json!(r.as_str()), json!(r.describe()));
        assert!(page.contains(&entry), "{entry} missing from the page");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let f = fixture_with_pin(1);
    let (base, shutdown, _, c) = start(&f).await;
    let (s, e) = post(&c, format!("{base}/api/scan"), json!({})).await;
    assert_eq!((s, e["field"].clone()), (422, json!("credential")));
    let (s, _) = post(
        &c,
        format!("{base}/api/scan"),
        json!({"credential": "x", "serial": 1}),
    )
    .await;
    assert_eq!(s, 422);
    let (s, e) = post(&c, format!("{base}/api/scan"), json!({"credential": 5})).await;
    assert_eq!(s, 400, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("credential"), "{e}");
    let (s, e) = post(
        &c,
        format!("{base}/api/scan"),
        json!({"credential": "garbage", "override": "x", "pin": PIN}),
    )
    .await;
    assert_eq!((s, e["field"].clone()), (422, json!("serial")));
    let (s, _) = post(&c, format!("{base}/api/undo"), json!({"id": "not-a-uuid"})).await;
    assert_eq!(s, 400);
    let (s, _) = post(
        &c,
        format!("{base}/api/undo"),
        json!({"id": uuid::Uuid::now_v7()}),
    )
    .await;
    assert_eq!(s, 404);
    let r = Replica::open(&f.path()).unwrap();
    assert_eq!(r.outbox_len().unwrap(), 0, "nothing was recorded");
    shutdown.cancel();
}

#[tokio::test]
async fn without_a_paired_session_or_from_another_host_nothing_answers() {
    let f = fixture_with_pin(2);
    let (base, shutdown, state, paired_client) = start(&f).await;
    let c = client();
    // No session: every operator route is 401, and nothing was decided.
    for path in ["/api/status", "/api/lookup?q=attendee", "/api/events"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let (s, e) = post(
        &c,
        format!("{base}/api/scan"),
        json!({"credential": f.ticket(1).encode()}),
    )
    .await;
    assert_eq!(
        (s, e["error"].clone()),
        (401, json!("operator_session_required"))
    );
    let forged = c
        .post(format!("{base}/api/scan"))
        .header("cookie", "usher_gate=00ff")
        .json(&json!({"serial": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(Replica::open(&f.path()).unwrap().outbox_len().unwrap(), 0);

    // Wrong codes are refused, and a few of them replace the code.
    let code = state.pairing_code();
    let (s, e) = post(&c, format!("{base}/api/pair"), json!({"code": "AAAA-AAAA"})).await;
    assert_eq!((s, e["field"].clone()), (401, json!("code")));
    for _ in 0..4 {
        post(&c, format!("{base}/api/pair"), json!({"code": "AAAA-AAAA"})).await;
    }
    assert_ne!(state.pairing_code(), code);
    let (s, _) = post(&c, format!("{base}/api/pair"), json!({"code": code})).await;
    assert_eq!(s, 401, "the replaced code no longer pairs");

    // A DNS-rebinding page names another host; a cross-site write names another origin.
    let r = paired_client
        .get(format!("{base}/api/status"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = paired_client
        .post(format!("{base}/api/scan"))
        .header("origin", "http://evil.example")
        .json(&json!({"serial": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = paired_client
        .get(format!("{base}/api/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    shutdown.cancel();
}
