//! The self check-in kiosk (`gate-agent run --kiosk`) in headless Chromium, on a real agent
//! synced with the real server (PostgreSQL): an attendee scans a ticket and is welcomed by
//! name, the screen returns to its start by itself, a repeat sends them to staff, and the
//! staff-only parts of the API (search, manual pick, override, undo, reprint, direction) are
//! refused in kiosk mode even with a paired session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "e2e_support/browser.rs"]
mod browser;
mod e2e_support;

use std::time::Duration;

use browser::Browser;
use e2e_support::*;
use fantoccini::key::Key;
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// The pairing code the agent printed last.
async fn pairing_code(a: &Agent) -> String {
    poll(
        "the pairing code in the agent's log",
        WAIT,
        Duration::from_millis(100),
        async || {
            a.log()
                .lines()
                .filter_map(|l| l.split("pairing code: ").nth(1))
                .filter_map(|rest| rest.split_whitespace().next())
                .next_back()
                .map(str::to_owned)
                .ok_or_else(|| a.log_tail())
        },
    )
    .await
    .0
}

/// `fetch` from the paired page (its session cookie included): `[status, body]`.
async fn fetch(b: &Browser, method: &str, path: &str, body: Option<Value>) -> (u64, Value) {
    let init = match body {
        Some(b) => format!(
            "{{method: '{method}', headers: {{'content-type': 'application/json'}}, body: JSON.stringify({b})}}"
        ),
        None => format!("{{method: '{method}'}}"),
    };
    let v = b
        .run_async(&format!(
            "const done = arguments[arguments.length - 1];
             fetch('{path}', {init}).then(r => r.json().then(j => done([r.status, j])),
                                          e => done([0, String(e)]));"
        ))
        .await;
    (v[0].as_u64().unwrap_or(0), v[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attendee_checks_in_at_the_kiosk_and_staff_actions_are_refused() {
    let pg = PgDatabase::create("usher_kiosk").await.expect("PostgreSQL");
    let server_dir = tempfile::tempdir().unwrap();
    let server = Server::start(server_dir.path(), &pg.url, free_port()).await;
    let password = server.initial_admin_password.clone().unwrap();
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let event = api.create_event("Kiosk e2e").await;
    let ada = api.create_participant(&event, "Ada Lovelace").await;
    let gate = api
        .call(
            Method::POST,
            &format!("/api/v1/events/{event}/gates"),
            Some(json!({"name": "Self check-in", "direction": "in"})),
        )
        .await
        .expect_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = api.enrollment_code(&event, &gate).await;
    let mut agent = Agent::enroll(&gate, &server.base, &code).await;
    agent.run_args = vec![
        "--kiosk".into(),
        "--verdict-seconds".into(),
        "1.5".into(),
        "--no-stdin".into(),
    ];
    let port = free_port();
    agent.start_with_ui(Some(port));
    poll(
        "the agent to sync its tickets",
        WAIT,
        Duration::from_millis(100),
        async || {
            let s = agent.status().await;
            if s["replica_tickets"].as_u64() >= Some(1) {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    poll(
        "the kiosk screen to listen",
        WAIT,
        Duration::from_millis(50),
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| format!("{e}\n{}", agent.log_tail()))
        },
    )
    .await;
    let base = format!("http://127.0.0.1:{port}");

    // Staff pair the kiosk once.
    let b = Browser::start().await;
    b.client.goto(&format!("{base}/")).await.unwrap();
    poll(
        "the pairing form",
        WAIT,
        Duration::from_millis(50),
        async || {
            if b.visible("#pairing").await {
                Ok(())
            } else {
                Err("hidden".into())
            }
        },
    )
    .await;
    b.type_into("#pair-code", &pairing_code(&agent).await).await;
    b.type_into("#pair-code", &Key::Enter.to_string()).await;
    b.wait_text("#title", WAIT, "the start screen", |t| t == "Welcome")
        .await;
    assert!(b.text("#message").await.contains("QR code"));
    // The attendee page has no search results, override or undo.
    let missing = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             done(['#override', '#undo', '#results', '#print'].every(s => !document.querySelector(s)));",
        )
        .await;
    assert_eq!(missing, json!(true));
    b.screenshot("kiosk-01-start").await;

    // The attendee scans: welcomed by name, then the start screen comes back by itself.
    b.type_into("#entry", &format!("{}{}", ada.credential, Key::Enter))
        .await;
    b.wait_text("#title", WAIT, "the welcome", |t| {
        t == "Welcome, Ada Lovelace!"
    })
    .await;
    assert_eq!(
        b.text("#message").await,
        "You are checked in. Enjoy the event."
    );
    b.screenshot("kiosk-02-welcome").await;
    b.wait_text("#title", WAIT, "the return to the start screen", |t| {
        t == "Welcome"
    })
    .await;

    // The same ticket again: sent to staff, in attendee words.
    b.type_into("#entry", &format!("{}{}", ada.credential, Key::Enter))
        .await;
    b.wait_text("#title", WAIT, "the refusal", |t| {
        t == "Please see a staff member"
    })
    .await;
    assert_eq!(
        b.text("#message").await,
        "This ticket has already been used."
    );
    b.screenshot("kiosk-03-refused").await;
    b.wait_text("#title", WAIT, "the return after a refusal", |t| {
        t == "Welcome"
    })
    .await;

    // With the kiosk's own session, staff-only requests are refused and name what was refused.
    for (method, path, body, field) in [
        ("GET", "/api/lookup?q=Ada", None, "search"),
        (
            "POST",
            "/api/scan",
            Some(json!({"serial": ada.serial})),
            "serial",
        ),
        (
            "POST",
            "/api/scan",
            Some(json!({"credential": ada.credential, "override": "vip", "pin": "123456"})),
            "override",
        ),
        (
            "POST",
            "/api/scan",
            Some(json!({"credential": ada.credential, "direction": "out"})),
            "direction",
        ),
        (
            "POST",
            "/api/undo",
            Some(json!({"id": "01936d2a-7c1e-7b3a-9f00-2c5d8e1a4b77"})),
            "undo",
        ),
        (
            "POST",
            "/api/print",
            Some(json!({"serial": ada.serial})),
            "print",
        ),
    ] {
        let (status, j) = fetch(&b, method, path, body).await;
        assert_eq!(status, 403, "{method} {path}: {j}");
        assert_eq!(j["error"], "kiosk_mode", "{j}");
        assert_eq!(j["field"], field, "{j}");
    }
    // What was refused recorded nothing: the log holds the two scans only.
    let (status, st) = fetch(&b, "GET", "/api/status", None).await;
    assert_eq!(status, 200);
    assert_eq!(st["kiosk"], true);
    let log: i64 = rusqlite::Connection::open(agent.dir.path().join("replica.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(log, 2);
    b.close().await;
}
