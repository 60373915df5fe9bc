//! The event lifecycle (docs/lifecycle.md) on the server: only the allowed transitions, closed
//! events refuse new admissions (exits still pass) and imports, archived events are read-only
//! and refuse every scan; gates learn the status with their configuration.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::sync::{create_gate, credential, live_event, new_gate, pull, push};

backend_tests!(
    only_allowed_transitions_and_a_bad_one_names_status,
    closed_refuses_admissions_and_imports_archived_is_read_only,
);

async fn set_status(app: &TestApp, event: &str, status: &str) -> crate::helpers::Resp {
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{event}"),
        json!({"status": status}),
    )
    .await
}

async fn only_allowed_transitions_and_a_bad_one_names_status(app: TestApp) {
    let event = app.create_event("Lifecycle").await;
    assert_eq!(event["status"], "draft");
    let event = event["id"].as_str().unwrap().to_owned();
    for (to, code) in [
        ("live", 200),
        ("draft", 422),
        ("closed", 200),
        ("live", 200),
        ("closed", 200),
        ("archived", 200),
        ("live", 422),
        ("closed", 422),
        ("draft", 422),
        ("archived", 200),
    ] {
        let r = set_status(&app, &event, to).await;
        if code == 200 {
            assert_eq!(r.assert_status(200)["status"], to);
        } else {
            r.assert_problem(code, Some("status"));
        }
    }
    let got = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{event}"))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(got["status"], "archived");
    // Read-only: no other field changes either.
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{event}"),
        json!({"name": "Renamed"}),
    )
    .await
    .assert_problem(409, None);
}

async fn redeem(app: &TestApp, event: &str, gate: &str, cred: &str, dir: &str) -> Value {
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/redeem"),
        json!({"credential": cred, "gate_id": gate, "direction": dir}),
    )
    .await
    .assert_status(200)
    .clone()
}

async fn closed_refuses_admissions_and_imports_archived_is_read_only(app: TestApp) {
    let (event, people) = live_event(&app, 3).await;
    set_status(&app, &event, "live").await.assert_status(200);
    let door = create_gate(&app, &event, "Side door", None).await;
    let enrolled = new_gate(&app, &event, "Main door", None).await;
    let r = redeem(&app, &event, &door, &credential(&people[0]), "in").await;
    assert_eq!(r["decision"], "admit");

    set_status(&app, &event, "closed").await.assert_status(200);
    // New admissions are refused with the lifecycle reason; people still get out.
    let r = redeem(&app, &event, &door, &credential(&people[1]), "in").await;
    assert_eq!(
        (r["decision"].clone(), r["reason"].clone()),
        (json!("reject"), json!("event_closed"))
    );
    let r = redeem(&app, &event, &door, &credential(&people[0]), "out").await;
    assert_eq!(r["decision"], "admit");
    // No imports, no new participants.
    app.post_csv(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants/import"),
        "name,email\nLate Comer,late@example.org\n",
    )
    .await
    .assert_problem(409, None);
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants"),
        json!({"name": "Late Comer"}),
    )
    .await
    .assert_problem(409, None);
    let listed = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/participants"),
        )
        .await
        .assert_status(200)["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, 3);
    // The gates learn the status with their configuration.
    let changes = pull(&app, &enrolled, "after=0&limit=10000")
        .await
        .assert_status(200)
        .clone();
    let last_config = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|c| c["kind"] == "gate_config" && c["data"]["gate_id"] == json!(enrolled.id))
        .cloned()
        .unwrap_or_else(|| panic!("no gate config in {changes}"));
    assert_eq!(last_config["data"]["event_status"], "closed");

    set_status(&app, &event, "archived")
        .await
        .assert_status(200);
    let r = redeem(&app, &event, &door, &credential(&people[0]), "out").await;
    assert_eq!(r["reason"], "event_closed");
    let pid = people[2]["id"].as_str().unwrap();
    app.patch(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants/{pid}"),
        json!({"name": "Changed"}),
    )
    .await
    .assert_problem(409, None);
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{event}/gates/{door}"),
        json!({"name": "Renamed door"}),
    )
    .await
    .assert_problem(409, None);
    let c = crate::sync::checkin(
        enrolled.next_seq,
        crate::sync::serial(&people[2]),
        "in",
        crate::sync::now_ms(),
        0,
    );
    push(&app, &enrolled, vec![c])
        .await
        .assert_problem(409, None);
    // Nothing changed: the name is as it was.
    let p = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{event}/participants/{pid}"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(p["name"], people[2]["name"]);
}
