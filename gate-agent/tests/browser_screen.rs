//! The operator screen in headless Chromium, on real `gate-agent run` processes synced with the
//! real server (PostgreSQL): pair with the code the agent printed, scan, see ADMIT and the
//! return to READY, the repeat refused with when and where, undo, an override refused without
//! the supervisor PIN (set by the organizer, checked by the gate) and accepted with it, an
//! exit-only gate recording an exit, and the API refusing a request without a session.
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

const PIN: &str = "482916";
const WAIT: Duration = Duration::from_secs(20);

async fn create_gate(api: &Api, event: &str, name: &str, direction: &str) -> String {
    let body = api
        .call(
            Method::POST,
            &format!("/api/v1/events/{event}/gates"),
            Some(json!({"name": name, "direction": direction})),
        )
        .await
        .expect_status(201);
    body["id"].as_str().unwrap().to_owned()
}

/// Enrolls and starts an agent with its screen on `ui_port` and a short verdict time, and waits
/// until it holds the event's tickets and the supervisor PIN.
async fn agent(api: &Api, server: &Server, event: &str, gate: &str, ui_port: u16) -> Agent {
    let code = api.enrollment_code(event, gate).await;
    let mut a = Agent::enroll(gate, &server.base, &code).await;
    a.run_args = vec![
        "--verdict-seconds".into(),
        "1.5".into(),
        "--no-stdin".into(),
    ];
    a.start_with_ui(Some(ui_port));
    let gate_id = a.gate_id.clone();
    poll(
        "the agent to sync tickets and the PIN",
        WAIT,
        Duration::from_millis(100),
        async || {
            let s = a.status().await;
            let db = a.dir.path().join("replica.db");
            let config: Option<String> = rusqlite::Connection::open(&db).ok().and_then(|c| {
                c.query_row(
                    "SELECT config FROM gates WHERE gate_id = ?1",
                    [&gate_id],
                    |r| r.get(0),
                )
                .ok()
            });
            let has_pin = config.is_some_and(|c| c.contains("supervisor_pin"));
            if s["replica_tickets"].as_u64() >= Some(2) && has_pin {
                Ok(())
            } else {
                Err(format!("{s} pin={has_pin}"))
            }
        },
    )
    .await;
    poll(
        "the operator screen to listen",
        WAIT,
        Duration::from_millis(50),
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", ui_port))
                .await
                .map(drop)
                .map_err(|e| format!("{e}\n{}", a.log_tail()))
        },
    )
    .await;
    a
}

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

async fn pair(b: &Browser, base: &str, a: &Agent) {
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
    b.type_into("#pair-code", &pairing_code(a).await).await;
    b.click("#pair-submit").await;
    poll(
        "the pairing form to close",
        WAIT,
        Duration::from_millis(50),
        async || {
            if b.visible("#pairing").await {
                Err(b.text("#pair-error").await)
            } else {
                Ok(())
            }
        },
    )
    .await;
}

async fn scan(b: &Browser, credential: &str) {
    b.type_into("#entry", &format!("{credential}{}", Key::Enter))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pairs_scans_sees_the_verdict_undoes_and_overrides_in_chromium() {
    let pg = PgDatabase::create("usher_browser")
        .await
        .expect("PostgreSQL");
    let server_dir = tempfile::tempdir().unwrap();
    let server = Server::start(server_dir.path(), &pg.url, free_port()).await;
    let password = server.initial_admin_password.clone().unwrap();
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let event = api.create_event("Browser e2e").await;
    // A PIN that is not 6-12 digits is refused, naming the field.
    let bad = api
        .call(
            Method::PUT,
            &format!("/api/v1/events/{event}/supervisor-pin"),
            Some(json!({"pin": "12"})),
        )
        .await
        .expect_status(422);
    assert_eq!(bad["field"], "pin", "{bad}");
    api.call(
        Method::PUT,
        &format!("/api/v1/events/{event}/supervisor-pin"),
        Some(json!({"pin": PIN})),
    )
    .await
    .expect_status(204);
    let ada = api.create_participant(&event, "Ada Lovelace").await;
    let bob = api.create_participant(&event, "Bob Hopper").await;
    let east = create_gate(&api, &event, "East door", "in").await;
    let exit = create_gate(&api, &event, "Exit", "out").await;
    let (east_port, exit_port) = (free_port(), free_port());
    let east_agent = agent(&api, &server, &event, &east, east_port).await;
    let east_base = format!("http://127.0.0.1:{east_port}");

    // Without a session the API answers 401, and the page asks for the pairing code.
    let r = reqwest::Client::new()
        .post(format!("{east_base}/api/scan"))
        .json(&json!({"credential": ada.credential}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let b = Browser::start().await;
    pair(&b, &east_base, &east_agent).await;
    b.wait_text("#gate", WAIT, "the gate's name", |t| t == "East door")
        .await;
    assert_eq!(
        b.text("#dir").await,
        "IN only",
        "the gate's configured direction is shown"
    );
    b.screenshot("01-ready").await;

    // The browser itself, with its cookie left out, is refused too.
    let unpaired = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/status', {credentials: 'omit'}).then(r => done(r.status), e => done(String(e)));",
        )
        .await;
    assert_eq!(unpaired, json!(401));

    // Scan: ADMIT with the name, then back to READY by itself.
    scan(&b, &ada.credential).await;
    b.wait_text("#word", WAIT, "ADMIT", |t| t == "ADMIT").await;
    assert_eq!(b.text("#name").await, "Ada Lovelace");
    b.screenshot("02-admit").await;
    b.wait_text("#word", WAIT, "the return to READY", |t| t == "READY")
        .await;

    // The same ticket again: refused, saying when and where it was checked in.
    scan(&b, &ada.credential).await;
    let reason = b
        .wait_text("#reason", WAIT, "already checked in", |t| {
            t.starts_with("Already checked in at")
        })
        .await;
    assert_eq!(b.text("#word").await, "REJECT");
    let (time, gate) = reason
        .strip_prefix("Already checked in at ")
        .and_then(|r| r.split_once(" at "))
        .unwrap_or_else(|| panic!("{reason:?}"));
    assert!(time.len() == 5 && time.as_bytes()[2] == b':', "{reason:?}");
    assert_eq!(gate, "East door", "{reason:?}");
    b.screenshot("03-already-checked-in").await;

    // An override without the PIN is refused; a wrong PIN too; the right one admits.
    b.type_into("#entry", &Key::F8.to_string()).await;
    poll(
        "the supervisor form",
        WAIT,
        Duration::from_millis(50),
        async || {
            if b.visible("#supervisor").await {
                Ok(())
            } else {
                Err("hidden".into())
            }
        },
    )
    .await;
    b.type_into("#sup-reason", "wristband re-issued").await;
    b.type_into("#sup-name", "Dana").await;
    b.click("#sup-submit").await;
    b.wait_text("#sup-error", WAIT, "the PIN refusal", |t| t.contains("PIN"))
        .await;
    b.screenshot("04-override-needs-pin").await;
    b.type_into("#sup-pin", "000000").await;
    b.click("#sup-submit").await;
    b.wait_text("#sup-error", WAIT, "the wrong-PIN refusal", |t| {
        t == "wrong supervisor PIN"
    })
    .await;
    b.client
        .find(fantoccini::Locator::Css("#sup-pin"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    b.type_into("#sup-pin", PIN).await;
    b.click("#sup-submit").await;
    let why = b
        .wait_text("#reason", WAIT, "the override", |t| {
            t.starts_with("Override:")
        })
        .await;
    assert_eq!(why, "Override: wristband re-issued (approved by Dana)");
    assert_eq!(b.text("#word").await, "ADMIT");

    // Undo (F7) of a fresh admission: UNDONE in its own words.
    scan(&b, &bob.credential).await;
    b.wait_text("#name", WAIT, "Bob admitted", |t| t == "Bob Hopper")
        .await;
    b.type_into("#entry", &Key::F7.to_string()).await;
    b.wait_text("#word", WAIT, "UNDONE", |t| t == "UNDONE")
        .await;
    let class = b
        .client
        .find(fantoccini::Locator::Css("#verdict"))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap();
    assert!(
        class.as_deref().unwrap_or("").contains("undone"),
        "{class:?}"
    );
    b.screenshot("05-undone").await;

    // An exit-only gate (another host name, so its own cookie): the page says OUT and a scan
    // records an exit.
    let exit_agent = agent(&api, &server, &event, &exit, exit_port).await;
    let exit_base = format!("http://localhost:{exit_port}");
    pair(&b, &exit_base, &exit_agent).await;
    b.wait_text("#dir", WAIT, "OUT only", |t| t == "OUT only")
        .await;
    scan(&b, &ada.credential).await;
    b.wait_text("#word", WAIT, "EXIT", |t| t == "EXIT").await;
    b.screenshot("06-exit").await;
    b.close().await;

    // The server got the exit from the exit gate, and the approved override with its approver.
    let (checkins, _) = poll(
        "the check-ins on the server",
        WAIT,
        Duration::from_millis(200),
        async || {
            let all: Vec<Value> = api.checkins(&event).await;
            let exits = all
                .iter()
                .filter(|c| c["direction"] == "out" && c["gate_id"] == json!(exit))
                .count();
            if exits == 1 {
                Ok(all)
            } else {
                Err(format!("{all:?}"))
            }
        },
    )
    .await;
    assert!(
        checkins
            .iter()
            .any(|c| c["operator_override"] == "wristband re-issued (approved by Dana)"),
        "{checkins:?}"
    );
    drop(exit_agent);
    drop(east_agent);
    server.stop().await;
}
