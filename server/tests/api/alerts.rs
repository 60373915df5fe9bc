//! Alerts over real loopback HTTP, on SQLite and PostgreSQL: rules and their checks, and each
//! rule firing once when its condition starts and clearing once when it ends, as signed webhook
//! deliveries to a receiver on loopback, rows of `GET …/alerts`, and e-mails to the staff.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::smtp_sink::SmtpSink;
use crate::sync::{Gate, checkin, new_gate, push};
use crate::webhooks::receiver::{Receiver, once_each};

/// Runs `async fn NAME(app)` on each backend with the evaluator ticking every 100 ms.
macro_rules! alert_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(super::fast(super::Backend::Sqlite).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(super::fast(super::Backend::Postgres).await).await;
                }
            }
        )*
    };
}

alert_tests!(
    rules_have_defaults_and_bad_thresholds_are_refused_by_name,
    a_silent_gate_fires_gate_offline_once_and_gate_online_once_when_it_pulls_again,
    a_deep_outbox_fires_and_clears,
    an_unresolved_conflict_fires_until_it_is_resolved,
    attendance_and_the_rejected_share_fire_past_their_thresholds,
);

async fn fast(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| s.alert_tick_ms = 100).await
}

const ALL_TYPES: [&str; 4] = [
    "gate.offline",
    "gate.online",
    "alert.fired",
    "alert.cleared",
];

async fn hook(app: &TestApp, event: &str, rx: &Receiver) -> String {
    let h = app
        .post(
            Some(&app.admin),
            &format!("/api/v1/events/{event}/webhooks"),
            json!({"url": rx.url(), "events": ALL_TYPES}),
        )
        .await
        .assert_status(201)
        .clone();
    h["secret"].as_str().unwrap().to_owned()
}

async fn put_rules(app: &TestApp, event: &str, rules: Value) -> Value {
    app.send(
        app.client
            .put(app.url(&format!("/api/v1/events/{event}/alert-rules")))
            .bearer_auth(&app.staff)
            .json(&rules),
    )
    .await
    .assert_status(200)
    .clone()
}

/// Every rule off but the ones named in `on` (with their thresholds).
fn only(on: Value) -> Value {
    let mut rules = json!({
        "gate_offline": {"enabled": false}, "outbox_depth": {"enabled": false},
        "conflict_created": {"enabled": false}, "attendance": {"enabled": false},
        "error_rate": {"enabled": false},
    });
    for (k, v) in on.as_object().unwrap() {
        rules[k] = v.clone();
    }
    rules
}

async fn pull(app: &TestApp, gate: &Gate, depth: Option<u64>) {
    let mut req = app
        .client
        .get(app.url("/sync/v1/changes?after=0"))
        .bearer_auth(&gate.credential);
    if let Some(d) = depth {
        req = req.header("usher-outbox-depth", d.to_string());
    }
    app.send(req).await.assert_status(200);
}

async fn alerts(app: &TestApp, event: &str, query: &str) -> Vec<Value> {
    app.get(
        Some(&app.viewer),
        &format!("/api/v1/events/{event}/alerts{query}"),
    )
    .await
    .assert_status(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The deliveries' bodies (each verified, none twice), in arrival order.
fn bodies(secret: &str, rx: &Receiver) -> Vec<Value> {
    let got = rx.received();
    once_each(secret, &got);
    got.iter().map(|r| r.json()).collect()
}

fn count(bodies: &[Value], ty: &str, kind: Option<&str>) -> usize {
    bodies
        .iter()
        .filter(|b| b["type"] == ty && kind.is_none_or(|k| b["data"]["kind"] == k))
        .count()
}

/// Waits until `n` deliveries of `ty` (for `kind`) arrived, then a few more ticks, and returns
/// every body so far.
async fn wait_for(
    secret: &str,
    rx: &Receiver,
    ty: &str,
    kind: Option<&str>,
    n: usize,
    within: Duration,
) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let got = bodies(secret, rx);
        if count(&got, ty, kind) >= n {
            // More ticks pass: a transition decided twice would show now.
            tokio::time::sleep(Duration::from_millis(800)).await;
            return bodies(secret, rx);
        }
        assert!(
            t0.elapsed() < within,
            "no {n} {ty} ({kind:?}) within {within:?}: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn types(bodies: &[Value]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for b in bodies {
        let key = match b["data"]["kind"].as_str() {
            Some(k) => format!("{}:{k}", b["type"].as_str().unwrap()),
            None => b["type"].as_str().unwrap().to_owned(),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

// ---------------------------------------------------------------- rules

async fn rules_have_defaults_and_bad_thresholds_are_refused_by_name(app: TestApp) {
    let event = app.create_event("Rules").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/alert-rules");
    let defaults = app
        .get(Some(&app.viewer), &path)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(
        defaults["gate_offline"],
        json!({"enabled": true, "after_seconds": 120})
    );
    assert_eq!(
        defaults["outbox_depth"],
        json!({"enabled": true, "above": 500})
    );
    assert_eq!(defaults["conflict_created"], json!({"enabled": true}));
    assert_eq!(
        defaults["attendance"],
        json!({"enabled": false, "percent": 90})
    );
    assert_eq!(
        defaults["error_rate"],
        json!({"enabled": true, "percent": 20, "window_seconds": 300, "min_scans": 20})
    );

    // A partial document: what is left out takes its default.
    let saved = put_rules(
        &app,
        ev,
        json!({"gate_offline": {"after_seconds": 30}, "attendance": {"enabled": true}}),
    )
    .await;
    assert_eq!(
        saved["gate_offline"],
        json!({"enabled": true, "after_seconds": 30})
    );
    assert_eq!(saved["attendance"], json!({"enabled": true, "percent": 90}));
    let read = app
        .get(Some(&app.viewer), &path)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(read, saved);

    for (body, field) in [
        (
            json!({"gate_offline": {"after_seconds": 5}}),
            "gate_offline.after_seconds",
        ),
        (json!({"outbox_depth": {"above": 0}}), "outbox_depth.above"),
        (
            json!({"attendance": {"percent": 101}}),
            "attendance.percent",
        ),
        (json!({"error_rate": {"percent": 0}}), "error_rate.percent"),
        (
            json!({"error_rate": {"window_seconds": 1}}),
            "error_rate.window_seconds",
        ),
        (
            json!({"error_rate": {"min_scans": 0}}),
            "error_rate.min_scans",
        ),
    ] {
        let r = app
            .send(
                app.client
                    .put(app.url(&path))
                    .bearer_auth(&app.staff)
                    .json(&body),
            )
            .await;
        r.assert_problem(422, Some(field));
    }
    // Unknown kinds and wrong types are refused too, naming where.
    let r = app
        .send(
            app.client
                .put(app.url(&path))
                .bearer_auth(&app.staff)
                .json(&json!({"zone_occupancy": {"enabled": true}})),
        )
        .await;
    assert!(r.status.is_client_error(), "{:?}", r.body);
    let r = app
        .send(
            app.client
                .put(app.url(&path))
                .bearer_auth(&app.staff)
                .json(&json!({"outbox_depth": {"above": "many"}})),
        )
        .await;
    assert!(r.status.is_client_error(), "{:?}", r.body);
    assert_eq!(r.body["field"], "outbox_depth.above", "{}", r.body);
    assert_eq!(
        app.get(Some(&app.viewer), &path).await.assert_status(200),
        &saved,
        "refused documents changed nothing"
    );

    // Viewers read, staff write; an unknown event is a 404.
    let r = app
        .send(
            app.client
                .put(app.url(&path))
                .bearer_auth(&app.viewer)
                .json(&json!({})),
        )
        .await;
    r.assert_problem(403, None);
    let missing = format!("/api/v1/events/{}/alert-rules", uuid::Uuid::now_v7());
    app.get(Some(&app.viewer), &missing)
        .await
        .assert_problem(404, None);
    let r = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/alerts?state=maybe"),
        )
        .await;
    r.assert_problem(400, Some("state"));
}

// ---------------------------------------------------------------- gate offline / online

async fn a_silent_gate_fires_gate_offline_once_and_gate_online_once_when_it_pulls_again(
    app: TestApp,
) {
    let rx = Receiver::start().await;
    let event = app.create_event("Offline").await;
    let ev = event["id"].as_str().unwrap();
    go_live(&app, ev).await;
    let secret = hook(&app, ev, &rx).await;
    put_rules(
        &app,
        ev,
        only(json!({"gate_offline": {"after_seconds": 30}})),
    )
    .await;
    let gate = new_gate(&app, ev, "North", None).await;
    // Enrolled but never heard from: raises nothing.
    let _quiet = new_gate(&app, ev, "Never seen", None).await;

    // Heard from once, then silent.
    pull(&app, &gate, None).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        rx.received().is_empty(),
        "nothing fires before the threshold"
    );
    let got = wait_for(
        &secret,
        &rx,
        "gate.offline",
        None,
        1,
        Duration::from_secs(20),
    )
    .await;
    let silent = t0.elapsed();
    assert!(silent >= Duration::from_secs(30), "fired after {silent:?}");
    eprintln!("gate.offline after {silent:?} of silence (threshold 30 s)");
    assert_eq!(
        types(&got),
        HashMap::from([
            ("gate.offline".to_owned(), 1),
            ("alert.fired:gate_offline".to_owned(), 1)
        ]),
        "the gate never heard from raises nothing: {got:#?}"
    );
    let offline = got.iter().find(|b| b["type"] == "gate.offline").unwrap();
    assert_eq!(offline["data"]["gate_id"], json!(gate.id));
    assert_eq!(offline["data"]["gate_name"], "North");
    assert_eq!(offline["data"]["event_id"], json!(ev));
    assert!(offline["data"]["last_seen_at"].is_string(), "{offline}");
    let fired = got.iter().find(|b| b["type"] == "alert.fired").unwrap();
    assert_eq!(fired["data"]["subject"], json!(gate.id));
    assert_eq!(fired["data"]["state"], "firing");
    assert_eq!(fired["data"]["detail"]["after_seconds"], 30);

    let firing = alerts(&app, ev, "?state=firing").await;
    assert_eq!(firing.len(), 1, "{firing:#?}");
    assert_eq!(firing[0]["kind"], "gate_offline");
    assert_eq!(firing[0]["state"], "firing");
    assert_eq!(firing[0]["id"], fired["data"]["alert_id"]);

    // It pulls again: back online, once.
    pull(&app, &gate, None).await;
    let got = wait_for(
        &secret,
        &rx,
        "gate.online",
        None,
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        types(&got),
        HashMap::from([
            ("gate.offline".to_owned(), 1),
            ("alert.fired:gate_offline".to_owned(), 1),
            ("gate.online".to_owned(), 1),
            ("alert.cleared:gate_offline".to_owned(), 1),
        ]),
        "{got:#?}"
    );
    let online = got.iter().find(|b| b["type"] == "gate.online").unwrap();
    assert_eq!(online["data"]["gate_id"], json!(gate.id));
    assert_eq!(online["data"]["alert_id"], fired["data"]["alert_id"]);
    let cleared = got.iter().find(|b| b["type"] == "alert.cleared").unwrap();
    assert_eq!(cleared["data"]["state"], "cleared");
    assert!(cleared["data"]["cleared_at"].is_string(), "{cleared}");
    assert_eq!(cleared["data"]["detail"]["online"], true);

    assert!(alerts(&app, ev, "?state=firing").await.is_empty());
    let all = alerts(&app, ev, "").await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["state"], "cleared");
    assert!(all[0]["cleared_at"].is_string());
}

// ---------------------------------------------------------------- outbox depth

async fn a_deep_outbox_fires_and_clears(app: TestApp) {
    let rx = Receiver::start().await;
    let event = app.create_event("Outbox").await;
    let ev = event["id"].as_str().unwrap();
    go_live(&app, ev).await;
    let secret = hook(&app, ev, &rx).await;
    put_rules(&app, ev, only(json!({"outbox_depth": {"above": 5}}))).await;
    let gate = new_gate(&app, ev, "North", None).await;

    pull(&app, &gate, Some(5)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(rx.received().is_empty(), "5 is not deeper than 5");
    pull(&app, &gate, Some(9)).await;
    let got = wait_for(
        &secret,
        &rx,
        "alert.fired",
        Some("outbox_depth"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["data"]["detail"]["outbox_depth"], 9);
    assert_eq!(got[0]["data"]["detail"]["gate_name"], "North");
    // Deeper still: the same alert goes on firing, nothing new is sent.
    pull(&app, &gate, Some(50)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(bodies(&secret, &rx).len(), 1);

    pull(&app, &gate, Some(0)).await;
    let got = wait_for(
        &secret,
        &rx,
        "alert.cleared",
        Some("outbox_depth"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[1]["data"]["detail"]["outbox_depth"], 0);
    assert_eq!(got[1]["data"]["alert_id"], got[0]["data"]["alert_id"]);
}

// ---------------------------------------------------------------- conflicts

async fn an_unresolved_conflict_fires_until_it_is_resolved(app: TestApp) {
    let rx = Receiver::start().await;
    let event = app.create_event("Conflicts").await;
    let ev = event["id"].as_str().unwrap();
    go_live(&app, ev).await;
    let secret = hook(&app, ev, &rx).await;
    put_rules(
        &app,
        ev,
        only(json!({"conflict_created": {"enabled": true}})),
    )
    .await;
    let gate = new_gate(&app, ev, "North", None).await;
    let p = app
        .create_participant(ev, json!({"name": "Ines Duarte"}))
        .await;
    let serial = p["ticket"]["serial"].as_u64().unwrap();
    let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp() * 1000).unwrap();
    push(
        &app,
        &gate,
        vec![checkin(gate.next_seq, serial, "in", now, 0)],
    )
    .await
    .assert_status(200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(rx.received().is_empty(), "an admission is no conflict");

    // Revoking the ticket of someone inside is a conflict.
    app.post(
        Some(&app.staff),
        &format!(
            "/api/v1/events/{ev}/participants/{}/ticket/revoke",
            p["id"].as_str().unwrap()
        ),
        json!({"reason": "lost"}),
    )
    .await
    .assert_status(200);
    let got = wait_for(
        &secret,
        &rx,
        "alert.fired",
        Some("conflict_created"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["data"]["subject"], "event");
    assert_eq!(got[0]["data"]["detail"]["open_conflicts"], 1);

    let conflicts = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/conflicts?status=open"),
        )
        .await
        .assert_status(200)
        .clone();
    let id = conflicts["items"][0]["id"].as_str().unwrap();
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/conflicts/{id}/resolve"),
        json!({"action": "acknowledge"}),
    )
    .await
    .assert_status(200);
    let got = wait_for(
        &secret,
        &rx,
        "alert.cleared",
        Some("conflict_created"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[1]["data"]["detail"]["open_conflicts"], 0);
}

// ---------------------------------------------------------------- attendance, error rate

async fn attendance_and_the_rejected_share_fire_past_their_thresholds(app: TestApp) {
    let rx = Receiver::start().await;
    let event = app.create_event("Counts").await;
    let ev = event["id"].as_str().unwrap();
    go_live(&app, ev).await;
    let secret = hook(&app, ev, &rx).await;
    put_rules(
        &app,
        ev,
        only(json!({
            "attendance": {"enabled": true, "percent": 50},
            "error_rate": {"enabled": true, "percent": 50, "window_seconds": 60, "min_scans": 4},
        })),
    )
    .await;
    let gate = new_gate(&app, ev, "North", None).await;
    let mut serials = Vec::new();
    for name in ["A", "B", "C", "D"] {
        let p = app.create_participant(ev, json!({"name": name})).await;
        serials.push(p["ticket"]["serial"].as_u64().unwrap());
    }
    let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp() * 1000).unwrap();
    let reject = |seq: u64, serial: u64| {
        let mut c = checkin(seq, serial, "in", now, 0);
        c["decision"] = json!("reject");
        c["reason"] = json!("wrong_zone");
        c
    };
    // One of four admitted (25 %), one of two scans rejected but below the minimum count.
    push(
        &app,
        &gate,
        vec![
            checkin(gate.next_seq, serials[0], "in", now, 0),
            reject(gate.next_seq + 1, serials[1]),
        ],
    )
    .await
    .assert_status(200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(rx.received().is_empty(), "{:#?}", bodies(&secret, &rx));

    // Two of four admitted (50 %), two of four scans rejected (50 %).
    push(
        &app,
        &gate,
        vec![
            checkin(gate.next_seq + 2, serials[2], "in", now, 0),
            reject(gate.next_seq + 3, serials[3]),
        ],
    )
    .await
    .assert_status(200);
    wait_for(
        &secret,
        &rx,
        "alert.fired",
        Some("attendance"),
        1,
        Duration::from_secs(10),
    )
    .await;
    let got = wait_for(
        &secret,
        &rx,
        "alert.fired",
        Some("error_rate"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        types(&got),
        HashMap::from([
            ("alert.fired:attendance".to_owned(), 1),
            ("alert.fired:error_rate".to_owned(), 1)
        ]),
        "{got:#?}"
    );
    let rate = got
        .iter()
        .find(|b| b["data"]["kind"] == "error_rate")
        .unwrap();
    assert_eq!(rate["data"]["detail"]["scans"], 4);
    assert_eq!(rate["data"]["detail"]["rejected"], 2);
    assert_eq!(alerts(&app, ev, "?state=firing").await.len(), 2);

    // Turning a rule off clears what it raised.
    put_rules(
        &app,
        ev,
        only(json!({"attendance": {"enabled": true, "percent": 50}})),
    )
    .await;
    let got = wait_for(
        &secret,
        &rx,
        "alert.cleared",
        Some("error_rate"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(got.len(), 3, "{got:#?}");
    let firing = alerts(&app, ev, "?state=firing").await;
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0]["kind"], "attendance");
}

// ---------------------------------------------------------------- e-mail

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transition_mails_the_staff_once_when_smtp_is_configured() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = spawn_app_with(Backend::Sqlite, move |s| {
        s.alert_tick_ms = 100;
        s.smtp_url = Some(server::settings::Secret::new(url));
    })
    .await;
    let event = app.create_event("Mailed").await;
    let ev = event["id"].as_str().unwrap();
    go_live(&app, ev).await;
    put_rules(&app, ev, only(json!({"outbox_depth": {"above": 5}}))).await;
    let gate = new_gate(&app, ev, "North", None).await;
    pull(&app, &gate, Some(6)).await;
    let t0 = Instant::now();
    // The admin and the staff member: two messages; the viewer gets none.
    while sink.messages().len() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{:?}",
            sink.messages().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pull(&app, &gate, Some(0)).await;
    while sink.messages().len() < 4 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{:?}",
            sink.messages().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 4);
    let mut to: Vec<String> = messages
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .map(|r| {
            r.trim_start_matches("TO:")
                .trim_matches(|c| c == '<' || c == '>')
                .to_owned()
        })
        .collect();
    to.sort();
    assert_eq!(
        to,
        vec![
            "admin@localhost",
            "admin@localhost",
            "staff@example.org",
            "staff@example.org"
        ]
    );
    let texts: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect();
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("Subject: [Usher] Gate outbox deep (North): Mailed"))
            .count(),
        2,
        "{texts:#?}"
    );
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("Subject: [Usher] Cleared: Gate outbox deep (North): Mailed"))
            .count(),
        2,
        "{texts:#?}"
    );
    assert!(
        texts.iter().all(|t| t.contains("outbox_depth: ")),
        "{texts:#?}"
    );
    // Alert messages are not ticket messages: the event's mail list stays empty.
    let mails = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{ev}/mails"))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(mails["items"], json!([]), "{mails}");
}

/// Check-ins of a draft event are tests that count for nothing (docs/lifecycle.md): the rules
/// are tried on live events.
async fn go_live(app: &TestApp, ev: &str) {
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{ev}"),
        json!({"status": "live"}),
    )
    .await
    .assert_status(200);
}
