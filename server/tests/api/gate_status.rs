//! Gates report their agent version, outbox depth and last sync on every pull and push; the
//! gate list shows them with when the gate was last heard from and whether it is online.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::sync::{Gate, checkin, new_gate};

backend_tests!(
    gates_report_their_state_on_pull_and_push,
    a_malformed_report_is_refused_naming_the_header,
);

async fn gate_json(app: &TestApp, event: &str, gate: &Gate) -> Value {
    let list = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{event}/gates"))
        .await
        .assert_status(200)
        .clone();
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == json!(gate.id))
        .unwrap()
        .clone();
    let one = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/gates/{}", gate.id),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(listed, one, "the list and the gate agree");
    listed
}

async fn gates_report_their_state_on_pull_and_push(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let gate = new_gate(&app, ev, "North", None).await;

    let g = gate_json(&app, ev, &gate).await;
    assert_eq!(g["online"], false, "{g}");
    for key in [
        "last_seen_at",
        "agent_version",
        "outbox_depth",
        "last_sync_at",
    ] {
        assert_eq!(g[key], Value::Null, "{key}: {g}");
    }

    let r = app
        .send(
            app.client
                .get(app.url("/sync/v1/changes?after=0"))
                .bearer_auth(&gate.credential)
                .header("usher-agent-version", "9.9.9")
                .header("usher-outbox-depth", "7")
                .header("usher-last-sync-at", "1796000000000"),
        )
        .await;
    r.assert_status(200);
    let g = gate_json(&app, ev, &gate).await;
    assert_eq!(g["online"], true, "{g}");
    assert_eq!(g["agent_version"], "9.9.9");
    assert_eq!(g["outbox_depth"], 7);
    assert_eq!(g["last_sync_at"], "2026-11-30T00:53:20Z");
    assert!(g["last_seen_at"].is_string(), "{g}");

    // A push right after: the changed depth is recorded at once (no waiting out the interval).
    let participant = app
        .create_participant(ev, json!({"name": "Minji Kim"}))
        .await;
    let serial = participant["ticket"]["serial"].as_u64().unwrap();
    let r = app
        .send(
            app.client
                .post(app.url("/sync/v1/checkins"))
                .bearer_auth(&gate.credential)
                .header("usher-agent-version", "9.9.9")
                .header("usher-outbox-depth", "1")
                .json(&json!({"gate_id": gate.id,
                              "checkins": [checkin(gate.next_seq, serial, "in", 1_796_000_000_000, 0)]})),
        )
        .await;
    r.assert_status(200);
    let g = gate_json(&app, ev, &gate).await;
    assert_eq!(g["outbox_depth"], 1, "{g}");
    assert_eq!(
        g["last_sync_at"], "2026-11-30T00:53:20Z",
        "absent keeps: {g}"
    );

    // A new version is recorded at once too; a request without the headers keeps what is known.
    let r = app
        .send(
            app.client
                .get(app.url("/sync/v1/changes?after=0"))
                .bearer_auth(&gate.credential)
                .header("usher-agent-version", "10.0.0")
                .header("usher-outbox-depth", "0"),
        )
        .await;
    r.assert_status(200);
    let r = app
        .send(
            app.client
                .get(app.url("/sync/v1/changes?after=0"))
                .bearer_auth(&gate.credential),
        )
        .await;
    r.assert_status(200);
    let g = gate_json(&app, ev, &gate).await;
    assert_eq!(g["agent_version"], "10.0.0", "{g}");
    assert_eq!(g["outbox_depth"], 0, "{g}");
    assert_eq!(g["online"], true, "{g}");
}

async fn a_malformed_report_is_refused_naming_the_header(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let gate = new_gate(&app, ev, "North", None).await;
    for (name, value) in [
        ("usher-outbox-depth", "-1"),
        ("usher-outbox-depth", "many"),
        ("usher-last-sync-at", "yesterday"),
        ("usher-agent-version", ""),
    ] {
        let r = app
            .send(
                app.client
                    .get(app.url("/sync/v1/changes?after=0"))
                    .bearer_auth(&gate.credential)
                    .header(name, value),
            )
            .await;
        r.assert_problem(400, Some(name));
    }
    let g = gate_json(&app, ev, &gate).await;
    assert_eq!(g["online"], false, "a refused request is not recorded: {g}");
    assert_eq!(g["outbox_depth"], Value::Null, "{g}");
}
