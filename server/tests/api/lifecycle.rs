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
    draft_checkins_are_tests_and_counting_starts_when_live,
    archived_events_lose_personal_data_after_their_retention,
    the_dashboard_and_the_report_agree_on_registered_and_attended,
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

async fn list(app: &TestApp, path: &str) -> Vec<Value> {
    app.get(Some(&app.viewer), path).await.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn draft_checkins_are_tests_and_counting_starts_when_live(app: TestApp) {
    let (event, people) = crate::sync::event_in(&app, 2, "draft").await;
    let mut gate = new_gate(&app, &event, "Main door", None).await;
    let door = create_gate(&app, &event, "Side door", None).await;
    let s0 = crate::sync::serial(&people[0]);
    let t = crate::sync::now_ms();

    // While a draft: the gate pushes an entry and a second entry of the same ticket (a
    // passback, if it counted), the side door redeems the other ticket twice.
    let batch = vec![
        crate::sync::checkin(gate.next_seq, s0, "in", t, 0),
        crate::sync::checkin(gate.next_seq + 1, s0, "in", t + 1, 0),
    ];
    gate.next_seq += 2;
    let r = push(&app, &gate, batch).await.assert_status(200).clone();
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "stored"),
        "{r}"
    );
    for _ in 0..2 {
        let r = redeem(&app, &event, &door, &credential(&people[1]), "in").await;
        // Nothing is folded in a draft: the second scan is not `already_inside`.
        assert_eq!(r["decision"], "admit", "{r}");
    }

    let log = list(&app, &format!("/api/v1/events/{event}/checkins")).await;
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|c| c["test"] == true), "{log:?}");
    let csv = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/exports/checkins"),
        )
        .await;
    let text = String::from_utf8(csv.bytes.clone()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "test")
        .expect("a test column");
    let flags: Vec<String> = lines
        .map(|l| l.split(',').nth(col).unwrap_or("").to_owned())
        .collect();
    assert_eq!(flags, vec!["true"; 4], "{text}");

    let zero = |a: &Value| {
        assert_eq!(a["inside"], 0, "{a}");
        assert_eq!(a["admitted_tickets"], 0, "{a}");
        for g in a["gates"].as_array().unwrap() {
            assert_eq!(
                (g["entries"].clone(), g["rejected"].clone()),
                (json!(0), json!(0)),
                "{a}"
            );
        }
    };
    let attendance = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/attendance"),
        )
        .await
        .assert_status(200)
        .clone();
    zero(&attendance);
    assert!(
        list(
            &app,
            &format!("/api/v1/events/{event}/conflicts?status=all")
        )
        .await
        .is_empty()
    );
    let report = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{event}/report"))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(report["totals"]["attended"], 0, "{report}");

    // Live: counting starts from zero, and the same tickets enter for real.
    set_status(&app, &event, "live").await.assert_status(200);
    let attendance = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/attendance"),
        )
        .await
        .assert_status(200)
        .clone();
    zero(&attendance);
    let r = push(
        &app,
        &gate,
        vec![crate::sync::checkin(
            gate.next_seq,
            s0,
            "in",
            crate::sync::now_ms(),
            0,
        )],
    )
    .await
    .assert_status(200)
    .clone();
    assert_eq!(r["results"][0]["outcome"], "inside", "{r}");
    let r = redeem(&app, &event, &door, &credential(&people[1]), "in").await;
    assert_eq!(r["decision"], "admit", "{r}");
    let r = redeem(&app, &event, &door, &credential(&people[1]), "in").await;
    assert_eq!(r["reason"], "already_inside", "{r}");

    let attendance = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/attendance"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(attendance["inside"], 2, "{attendance}");
    assert_eq!(attendance["admitted_tickets"], 2, "{attendance}");
    let log = list(&app, &format!("/api/v1/events/{event}/checkins")).await;
    assert_eq!(log.len(), 7);
    assert_eq!(
        log.iter().filter(|c| c["test"] == false).count(),
        3,
        "{log:?}"
    );
    let report = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{event}/report"))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(report["totals"]["attended"], 2, "{report}");
}

async fn report(app: &TestApp, event: &str) -> Value {
    app.get(Some(&app.viewer), &format!("/api/v1/events/{event}/report"))
        .await
        .assert_status(200)
        .clone()
}

async fn purge_at(app: &TestApp, now_ms: u64) -> Vec<server::service::retention::Purged> {
    server::service::retention::purge_due(&app.db, i64::try_from(now_ms).unwrap())
        .await
        .expect("a purge pass")
}

async fn archived_events_lose_personal_data_after_their_retention(app: TestApp) {
    let (event, people) = live_event(&app, 3).await;
    let path = format!("/api/v1/events/{event}");
    // A bad retention names its field and changes nothing.
    for bad in [json!(-1), json!(3651), json!("30"), json!(1.5)] {
        app.patch(Some(&app.admin), &path, json!({"retention_days": bad}))
            .await
            .assert_problem(422, Some("retention_days"));
    }
    let got = app
        .get(Some(&app.viewer), &path)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(got["retention_days"], Value::Null, "{got}");
    let r = app
        .patch(Some(&app.admin), &path, json!({"retention_days": 0}))
        .await;
    assert_eq!(r.assert_status(200)["retention_days"], 0);

    let door = create_gate(&app, &event, "Side door", None).await;
    let r = redeem(&app, &event, &door, &credential(&people[0]), "in").await;
    assert_eq!(r["decision"], "admit");
    // Another event keeps a longer retention.
    let (other, _) = live_event(&app, 1).await;
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{other}"),
        json!({"retention_days": 5}),
    )
    .await
    .assert_status(200);

    // Not archived yet: nothing is due, whatever the retention.
    let now = crate::sync::now_ms();
    assert!(purge_at(&app, now).await.is_empty());
    let before = report(&app, &event).await;
    for e in [&event, &other] {
        set_status(&app, e, "closed").await.assert_status(200);
        let r = set_status(&app, e, "archived").await;
        assert!(r.assert_status(200)["archived_at"].is_string());
    }

    let now = crate::sync::now_ms();
    let purged = purge_at(&app, now).await;
    assert_eq!(
        purged,
        vec![server::service::retention::Purged {
            event_id: event.parse().unwrap(),
            participants: 3
        }]
    );
    // Safe to run again (and in another process): nothing more is purged, one audit line.
    assert!(purge_at(&app, now).await.is_empty());
    let audits = crate::sync::count(
        &app.db,
        "SELECT CAST(count(*) AS BIGINT) FROM audit_log WHERE action = 'event.purge'",
    )
    .await;
    assert_eq!(audits, 1);

    let after = report(&app, &event).await;
    assert_eq!(
        after["totals"]["registered"],
        before["totals"]["registered"]
    );
    assert_eq!(after["totals"]["attended"], before["totals"]["attended"]);
    assert_eq!(after["totals"]["attended"], 1);
    assert_eq!(after["totals"]["gates"], before["totals"]["gates"]);
    for p in after["participants"].as_array().unwrap() {
        for field in ["name", "email", "external_id", "organization"] {
            assert_eq!(p[field], Value::Null, "{field}: {p}");
        }
    }
    let attended: Vec<&Value> = after["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["entries"] == 1)
        .collect();
    assert_eq!(attended.len(), 1, "{after}");
    let got = app
        .get(Some(&app.viewer), &path)
        .await
        .assert_status(200)
        .clone();
    assert!(got["purged_at"].is_string(), "{got}");
    // No personal data left in the event's rows; the other event still has its own.
    let named = crate::sync::count(
        &app.db,
        "SELECT CAST(count(*) AS BIGINT) FROM participants
         WHERE name IS NOT NULL OR email IS NOT NULL OR phone IS NOT NULL",
    )
    .await;
    assert_eq!(named, 1, "only the other event's participant keeps a name");
    let replicated = crate::sync::count(
        &app.db,
        "SELECT CAST(count(*) AS BIGINT) FROM changes WHERE kind = 'ticket' AND data LIKE '%Person%'",
    )
    .await;
    assert_eq!(
        replicated, 0,
        "the change log never stores holder names (they are read from the sealed row)"
    );
    // The other event's gates still receive their holder's name; the purged event's do not.
    let display = |changes: Vec<sync_protocol::wire::Change>| {
        changes
            .into_iter()
            .filter_map(|c| match c.data {
                sync_protocol::wire::ChangeData::Ticket(t) => Some(t.display_name),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        display(app.changes(&other, 0).await),
        [Some("Person 0".to_owned())]
    );
    assert!(
        display(app.changes(&event, 0).await)
            .iter()
            .all(Option::is_none)
    );
    let other_report = report(&app, &other).await;
    assert_eq!(other_report["participants"][0]["name"], "Person 0");

    // The other event's five days.
    let day = 86_400_000;
    assert!(purge_at(&app, now + 4 * day).await.is_empty());
    let purged = purge_at(&app, now + 5 * day + 1_000).await;
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].event_id.to_string(), other);
}

/// One definition of "registered" (docs/lifecycle.md): the dashboard's counters (the attendance
/// API) and the report count the same participants, erased ones and those without a valid
/// ticket included, and the same attended.
async fn the_dashboard_and_the_report_agree_on_registered_and_attended(app: TestApp) {
    let (event, people) = live_event(&app, 4).await;
    let door = create_gate(&app, &event, "Door", None).await;
    for p in &people[..2] {
        let r = redeem(&app, &event, &door, &credential(p), "in").await;
        assert_eq!(r["decision"], "admit");
    }
    // One without a ticket, one revoked, one erased after entering.
    app.create_participant(&event, json!({"name": "Walk-in", "issue_ticket": false}))
        .await;
    let revoked = people[2]["id"].as_str().unwrap();
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants/{revoked}/ticket/revoke"),
        json!({}),
    )
    .await
    .assert_status(200);
    let erased = people[1]["id"].as_str().unwrap();
    app.delete(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants/{erased}"),
    )
    .await
    .assert_status(204);

    let att = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/attendance"),
        )
        .await
        .assert_status(200)
        .clone();
    let report = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{event}/report"))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(att["registered"], 5, "{att}");
    assert_eq!(
        report["totals"]["registered"], att["registered"],
        "{report}"
    );
    assert_eq!(
        report["totals"]["attended"], att["attended"],
        "{report} {att}"
    );
    assert_eq!(att["attended"], 2, "{att}");
    // Valid tickets are another number (the revoked and erased ones and the walk-in have none).
    assert_eq!(att["tickets_issued"], 2, "{att}");
    let per_type: u64 = att["ticket_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["registered"].as_u64().unwrap())
        .sum();
    assert_eq!(per_type, 5);
}
