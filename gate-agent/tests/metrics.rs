//! `/metrics` on the operator-screen listener, over real HTTP on loopback: credentials scanned
//! through the screen's API move the decision counters and the latency histogram by exactly
//! what was decided, and every gate metric is exposed with its help text.
//!
//! One test in this binary: the recorder is process-wide, so nothing else may decide here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use common::*;
use gate_agent::decide::Gate;
use gate_agent::handle::GateHandle;
use gate_agent::replica::Replica;
use gate_agent::sync::SyncStatus;
use gate_agent::telemetry;
use gate_agent::ui::{UiState, serve};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

type Samples = HashMap<(String, BTreeMap<String, String>), f64>;

/// Parses the text exposition: `name{k="v",...} value` lines (comments skipped).
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").expect("k=\"v\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse().expect("a number"));
    }
    out
}

fn get(s: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    s.get(&key).copied().unwrap_or(0.0)
}

async fn scrape(c: &reqwest::Client, base: &str) -> (String, Samples) {
    let r = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4"
    );
    let text = r.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> Value {
    let r = c.post(url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn scans_move_the_counters_by_exactly_what_was_decided() {
    let f = fixture(5, |g| {
        g.allow_reentry = false;
        g.supervisor_pin = Some(sync_protocol::pin::hash("135790").unwrap());
    });
    let gate = Gate::new(Replica::open(&f.path()).unwrap()).unwrap();
    let handle = GateHandle::spawn(gate, Arc::new(Notify::new())).unwrap();
    let state = UiState::new(
        handle,
        Arc::new(Mutex::new(Replica::open(&f.path()).unwrap())),
        Arc::new(SyncStatus::default()),
    );
    let code = state.pairing_code();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, state, shutdown.clone()));
    gate_agent::sync::client::install_tls_provider();
    // The operator screen's API needs a paired session (`/metrics` does not).
    let pairing = reqwest::Client::new()
        .post(format!("{base}/api/pair"))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    let cookie = pairing.headers()["set-cookie"].to_str().unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::COOKIE,
        cookie.split(';').next().unwrap().parse().unwrap(),
    );
    let c = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();

    let (_, before) = scrape(&c, &base).await;
    let scan = |body: Value| post(&c, format!("{base}/api/scan"), body);
    let t1 = f.ticket(1).encode();
    assert_eq!(scan(json!({"credential": t1})).await["decision"], "admit");
    let second = scan(json!({"credential": f.ticket(2).encode()})).await;
    assert_eq!(second["decision"], "admit");
    assert_eq!(
        scan(json!({"credential": t1})).await["reason"],
        "already_inside"
    );
    assert_eq!(
        scan(json!({"credential": "hello world"})).await["reason"],
        "malformed"
    );
    let by_code = scan(json!({"credential": Fixture::code(3).to_string()})).await;
    assert_eq!(by_code["decision"], "admit");
    let overridden =
        scan(json!({"serial": 1, "override": "wristband checked", "pin": "135790"})).await;
    assert_eq!(
        (overridden["decision"].clone(), overridden["reason"].clone()),
        (json!("admit"), json!("already_inside"))
    );
    let undo = post(&c, format!("{base}/api/undo"), json!({"id": second["id"]})).await;
    assert_eq!(undo["undoes"], second["id"]);

    let (text, after) = scrape(&c, &base).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        get(&after, name, labels) - get(&before, name, labels)
    };
    let decisions = telemetry::DECISIONS;
    let cases: [(&[(&str, &str)], f64); 4] = [
        (&[("result", "admit"), ("reason", "none")], 3.0),
        (&[("result", "reject"), ("reason", "already_inside")], 1.0),
        (&[("result", "reject"), ("reason", "malformed")], 1.0),
        (&[("result", "admit"), ("reason", "already_inside")], 1.0),
    ];
    for (labels, expected) in cases {
        assert_eq!(delta(decisions, labels), expected, "{labels:?}\n{text}");
    }
    // Nothing else moved: the six decisions are all accounted for above.
    let total = |s: &Samples| -> f64 {
        s.iter()
            .filter(|((n, _), _)| n == decisions)
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(total(&after) - total(&before), 6.0, "{text}");
    assert_eq!(
        delta(&format!("{}_count", telemetry::DECISION_SECONDS), &[]),
        6.0,
        "one latency sample per decision\n{text}"
    );
    assert!(get(&after, &format!("{}_sum", telemetry::DECISION_SECONDS), &[]) > 0.0);
    assert_eq!(delta(telemetry::UNDOS, &[]), 1.0);
    assert_eq!(delta(telemetry::DECISION_ERRORS, &[]), 0.0);
    // Six decisions and one undo wait in the outbox; this gate never synced.
    assert_eq!(get(&after, telemetry::OUTBOX_DEPTH, &[]), 7.0, "{text}");
    assert_eq!(get(&after, telemetry::ONLINE, &[]), 0.0);

    for name in [
        "usher_gate_decisions_total",
        "usher_gate_decision_seconds",
        "usher_gate_outbox_depth",
        "usher_gate_last_sync_age_seconds",
        telemetry::DECISION_ERRORS,
        telemetry::UNDOS,
        telemetry::ONLINE,
        telemetry::REPLICA_CURSOR,
        telemetry::SYNC_ERRORS,
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no help text for {name}\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name)),
            "no sample of {name}\n{text}"
        );
    }
    assert!(text.contains("# TYPE usher_gate_decision_seconds histogram"));
    assert!(text.contains("# TYPE usher_gate_decisions_total counter"));
    assert!(text.contains("# TYPE usher_gate_outbox_depth gauge"));

    // A second install in the same process (another gate) reuses the recorder.
    let first = telemetry::install().map(|h| h as *const _);
    assert!(first.is_some());
    assert_eq!(telemetry::install().map(|h| h as *const _), first);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
