//! End to end, alerts: a real `gate-agent` process that stops past the event's `gate_offline`
//! threshold makes the real server send `gate.offline` once, and `gate.online` once when the
//! agent runs again, to a webhook receiver on loopback that checks every signature.
//!
//! Real processes, real HTTP over loopback, real PostgreSQL; see `e2e_support` for the fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod e2e_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use e2e_support::*;
use reqwest::Method;
use serde_json::{Value, json};

type Got = Arc<Mutex<Vec<Value>>>;

/// Records the body of every delivery whose Standard Webhooks signature verifies with `key`;
/// answers 400 (and records nothing) otherwise.
async fn receive(
    State((key, got)): State<(Arc<Vec<u8>>, Got)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, ts) = (h("webhook-id"), h("webhook-timestamp"));
    let Ok(ts) = ts.parse::<i64>() else {
        return StatusCode::BAD_REQUEST;
    };
    let expected = server::domain::webhook::sign(&key, &id, ts, &body);
    if !h("webhook-signature").split(' ').any(|s| s == expected) {
        return StatusCode::BAD_REQUEST;
    }
    let mut v: Value = serde_json::from_slice(&body).expect("JSON body");
    v["webhook_id"] = json!(id);
    got.lock().unwrap().push(v);
    StatusCode::NO_CONTENT
}

fn of_type(got: &Got, ty: &str) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == ty)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_fires_gate_offline_once_and_gate_online_once_it_runs_again() {
    let pg = PgDatabase::create("usher_e2e_alerts")
        .await
        .expect("a fresh PostgreSQL database");
    let server_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(server_dir.path(), &pg.url, free_port()).await;
    let password = server.initial_admin_password.clone().expect("admin");
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let event = api.create_event("Alerts e2e").await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let receiver_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let hook = api
        .call(
            Method::POST,
            &format!("/api/v1/events/{event}/webhooks"),
            Some(json!({"url": receiver_url,
                "events": ["gate.offline", "gate.online", "alert.fired", "alert.cleared"]})),
        )
        .await
        .expect_status(201);
    let key =
        server::domain::webhook::decode_secret(hook["secret"].as_str().unwrap()).expect("secret");
    let got: Got = Arc::default();
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state((Arc::new(key), got.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The shortest threshold: an idle agent long-polls every 20 s.
    api.call(
        Method::PUT,
        &format!("/api/v1/events/{event}/alert-rules"),
        Some(json!({"gate_offline": {"after_seconds": 30}})),
    )
    .await
    .expect_status(200);
    let gate = api.create_gate(&event, "North").await;
    let mut agent = Agent::enroll(
        "north",
        &server.base,
        &api.enrollment_code(&event, &gate).await,
    )
    .await;
    agent.start();
    let gate_json = async || {
        api.get(&format!("/api/v1/events/{event}/gates/{gate}"))
            .await
    };
    poll(
        "the agent to be heard from",
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || {
            let g = gate_json().await;
            if g["online"] == true {
                Ok(())
            } else {
                Err(g.to_string())
            }
        },
    )
    .await;

    // Running and idle for longer than the threshold: nothing fires.
    tokio::time::sleep(Duration::from_secs(40)).await;
    agent.assert_running();
    assert!(
        got.lock().unwrap().is_empty(),
        "an idle running agent raised {:#?}",
        got.lock().unwrap()
    );

    // Stopped (as a power cut would): gate.offline once, some 30 s after it was last heard from.
    agent.kill().await;
    let stopped = Instant::now();
    let (_, took) = poll(
        "gate.offline",
        Duration::from_secs(90),
        Duration::from_millis(200),
        async || {
            if of_type(&got, "gate.offline").is_empty() {
                Err(format!("{:?}", got.lock().unwrap()))
            } else {
                Ok(())
            }
        },
    )
    .await;
    eprintln!("gate.offline {took:?} after the agent stopped (threshold 30 s)");
    assert!(stopped.elapsed() >= Duration::from_secs(10), "{took:?}");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let offline = of_type(&got, "gate.offline");
    assert_eq!(offline.len(), 1, "{offline:#?}");
    assert_eq!(offline[0]["data"]["gate_id"], json!(gate));
    assert_eq!(offline[0]["data"]["gate_name"], "North");
    assert_eq!(of_type(&got, "alert.fired").len(), 1);
    let firing = api
        .get(&format!("/api/v1/events/{event}/alerts?state=firing"))
        .await;
    assert_eq!(firing["items"][0]["kind"], "gate_offline", "{firing}");

    // Running again: gate.online once.
    agent.start();
    poll(
        "gate.online",
        Duration::from_secs(60),
        Duration::from_millis(200),
        async || {
            if of_type(&got, "gate.online").is_empty() {
                Err(format!("{:?}", got.lock().unwrap()))
            } else {
                Ok(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let online = of_type(&got, "gate.online");
    assert_eq!(online.len(), 1, "{online:#?}");
    assert_eq!(online[0]["data"]["gate_id"], json!(gate));
    assert_eq!(
        online[0]["data"]["alert_id"],
        offline[0]["data"]["alert_id"]
    );
    assert_eq!(of_type(&got, "alert.cleared").len(), 1);
    assert_eq!(of_type(&got, "gate.offline").len(), 1, "no second offline");
    let all = got.lock().unwrap().clone();
    assert_eq!(all.len(), 4, "{all:#?}");
    let mut ids: Vec<&str> = all
        .iter()
        .map(|b| b["webhook_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each message delivered once");
    let none = api
        .get(&format!("/api/v1/events/{event}/alerts?state=firing"))
        .await;
    assert_eq!(none["items"], json!([]), "{none}");
    agent.assert_running();
}
