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

async fn start(f: &Fixture) -> (String, CancellationToken) {
    let gate = Gate::new(Replica::open(&f.path()).unwrap()).unwrap();
    let handle = GateHandle::spawn(gate, Arc::new(Notify::new())).unwrap();
    let state = UiState {
        gate: handle,
        replica: Arc::new(Mutex::new(Replica::open(&f.path()).unwrap())),
        sync: Arc::new(SyncStatus::default()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state, shutdown.clone()));
    (base, shutdown)
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
    let f = fixture(5, |_| {});
    let (base, shutdown) = start(&f).await;
    let c = client();

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

    // Supervisor override of that rejection.
    let (s, ov) = post(
        &c,
        format!("{base}/api/scan"),
        json!({"serial": 3, "override": "re-entry approved"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ov["decision"], "admit");
    assert_eq!(ov["operator_override"], "re-entry approved");

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
    let f = fixture(1, |_| {});
    let (base, shutdown) = start(&f).await;
    let c = client();
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
        json!({"credential": "garbage", "override": "x"}),
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
