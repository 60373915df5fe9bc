use serde_json::{Value, json};
use sync_protocol::wire::{ChangeData, TicketStatus};

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    participants_can_be_created_one_or_many_and_read,
    participant_validation_names_the_field,
    participants_are_searchable_and_paged,
    patching_a_name_replicates_the_new_display_name,
    deleting_a_participant_erases_personal_data,
    participant_routes_check_role_token_and_event,
);

async fn participants_can_be_created_one_or_many_and_read(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let p = app
        .create_participant(
            ev,
            json!({"name": "Minji Kim", "email": "minji@example.org", "external_id": "A-1",
                   "organization": "Acme", "phone": "+82 10", "attention": "VIP",
                   "metadata": {"seat": "12B"}}),
        )
        .await;
    for key in [
        "id",
        "external_id",
        "name",
        "email",
        "phone",
        "organization",
        "metadata",
        "ticket",
    ] {
        assert!(p.get(key).is_some(), "missing {key}: {p}");
    }
    assert_eq!(p["metadata"]["seat"], "12B");
    let ticket = &p["ticket"];
    for key in [
        "serial",
        "credential",
        "short_code",
        "status",
        "valid_from",
        "valid_until",
    ] {
        assert!(ticket.get(key).is_some(), "missing ticket.{key}: {ticket}");
    }
    assert_eq!(ticket["status"], "valid");
    assert!(ticket["credential"].as_str().unwrap().starts_with("U1:"));
    let code = ticket["short_code"].as_str().unwrap();
    assert_eq!(code.len(), 14);
    assert!(sync_protocol::ShortCode::parse(code).is_ok());
    // Validity: the event window widened by the default 6 hours.
    assert_eq!(ticket["valid_from"], "2026-12-01T03:00:00Z");
    assert_eq!(ticket["valid_until"], "2026-12-02T00:00:00Z");

    let id = p["id"].as_str().unwrap();
    let got = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}"),
        )
        .await;
    let got = got.assert_status(200);
    assert_eq!(got["name"], "Minji Kim");
    assert_eq!(
        got["ticket"]["credential"], p["ticket"]["credential"],
        "credentials are stable"
    );

    // Many at once; one without a ticket.
    let r = app
        .post(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants"),
            json!([{"name": "A"}, {"name": "B", "issue_ticket": false}, {"name": "C", "scopes": 3}]),
        )
        .await;
    let many = r.assert_status(201);
    let items = many["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items[1]["ticket"].is_null());
    assert_eq!(items[2]["ticket"]["scopes"], 3);
    let serials: Vec<u64> = [&p, &items[0], &items[2]]
        .iter()
        .map(|p| p["ticket"]["serial"].as_u64().unwrap())
        .collect();
    assert!(
        serials[0] < serials[1] && serials[1] < serials[2],
        "{serials:?}"
    );
}

async fn participant_validation_names_the_field(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants");
    let cases = [
        (json!({"email": "a@b.c"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "A", "email": "not-an-email"}), "email"),
        (json!({"name": "A", "scopes": 70000}), "scopes"),
        (json!({"name": "A", "metadata": [1, 2]}), "metadata"),
        (json!({"name": "A", "nickname": "x"}), "nickname"),
        (json!([{"name": "A"}, {"email": "x@y.z"}]), "[1].name"),
        (
            json!([{"name": "A", "external_id": "X"}, {"name": "B", "external_id": "X"}]),
            "[1].external_id",
        ),
        (json!([]), ""),
    ];
    for (body, field) in cases {
        app.post(Some(&app.staff), &path, body)
            .await
            .assert_problem(422, Some(field));
    }
    // Nothing was written by the failed requests (the valid first elements included).
    let list = app.get(Some(&app.staff), &path).await;
    assert!(
        list.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        app.changes(ev, 1).await.is_empty(),
        "only the signing key change"
    );

    app.create_participant(ev, json!({"name": "A", "external_id": "X"}))
        .await;
    app.post(
        Some(&app.staff),
        &path,
        json!({"name": "B", "external_id": "X"}),
    )
    .await
    .assert_problem(422, Some("external_id"));
}

async fn participants_are_searchable_and_paged(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants");
    let people: Vec<Value> = (0..25)
        .map(|i| json!({"name": format!("Person {i:02}"), "email": format!("p{i}@example.org"), "organization": if i % 5 == 0 { "Umbrella" } else { "Acme" }}))
        .collect();
    app.post(Some(&app.staff), &path, Value::Array(people))
        .await
        .assert_status(201);
    app.create_participant(
        ev,
        json!({"name": "서연 이", "email": "Seoyeon@Example.org"}),
    )
    .await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=10&cursor={c}"),
            None => format!("{path}?limit=10"),
        };
        let page = app
            .get(Some(&app.viewer), &url)
            .await
            .assert_status(200)
            .clone();
        for p in page["items"].as_array().unwrap() {
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 26);
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), 26);

    let count = |v: &Value| v["items"].as_array().unwrap().len();
    let r = app
        .get(Some(&app.viewer), &format!("{path}?q=umbrella"))
        .await;
    assert_eq!(count(r.assert_status(200)), 5);
    let r = app
        .get(Some(&app.viewer), &format!("{path}?q=person%2007"))
        .await;
    assert_eq!(count(r.assert_status(200)), 1);
    let r = app.get(Some(&app.viewer), &format!("{path}?q=서연")).await;
    assert_eq!(count(r.assert_status(200)), 1);
    // An e-mail matches whole (any case): the server keeps only its blind index.
    let r = app
        .get(Some(&app.viewer), &format!("{path}?q=SEOYEON@example.org"))
        .await;
    assert_eq!(count(r.assert_status(200)), 1);
    let r = app
        .get(Some(&app.viewer), &format!("{path}?q=seoyeon@example"))
        .await;
    assert_eq!(count(r.assert_status(200)), 0, "no e-mail substrings");
    // Words match by prefix, every word must match, and not inside a word.
    let r = app.get(Some(&app.viewer), &format!("{path}?q=Pers")).await;
    assert_eq!(count(r.assert_status(200)), 25);
    let r = app
        .get(Some(&app.viewer), &format!("{path}?q=umb%20pers"))
        .await;
    assert_eq!(count(r.assert_status(200)), 5);
    let r = app.get(Some(&app.viewer), &format!("{path}?q=erson")).await;
    assert_eq!(count(r.assert_status(200)), 0);
    app.get(Some(&app.viewer), &format!("{path}?limit=5000"))
        .await
        .assert_problem(400, Some("limit"));
    app.get(Some(&app.viewer), &format!("{path}?cursor=nope"))
        .await
        .assert_problem(400, Some("cursor"));
    let r = app.get(Some(&app.viewer), &format!("{path}?q=%25")).await;
    assert_eq!(count(r.assert_status(200)), 0, "LIKE wildcards are escaped");
    // By short code, typed sloppily.
    let one = app
        .get(Some(&app.staff), &format!("{path}?q=Person%2003"))
        .await
        .assert_status(200)
        .clone();
    let code = one["items"][0]["ticket"]["short_code"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .replace('-', " ");
    let r = app
        .get(
            Some(&app.viewer),
            &format!("{path}?q={}", code.replace(' ', "%20")),
        )
        .await;
    let r = r.assert_status(200);
    assert_eq!(count(r), 1);
    assert_eq!(r["items"][0]["name"], "Person 03");
}

async fn patching_a_name_replicates_the_new_display_name(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let p = app
        .create_participant(ev, json!({"name": "Old Name", "email": "a@example.org"}))
        .await;
    let id = p["id"].as_str().unwrap();
    let serial = p["ticket"]["serial"].as_u64().unwrap();
    let cursor = sync_head(&app, ev).await;

    let r = app
        .patch(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}"),
            json!({"name": "New Name", "phone": "+1 555", "email": null, "metadata": {"k": "v"}}),
        )
        .await;
    let r = r.assert_status(200);
    assert_eq!(r["name"], "New Name");
    assert!(r["email"].is_null());
    assert_eq!(r["metadata"]["k"], "v");
    assert_eq!(r["ticket"]["serial"], serial, "a rename keeps the ticket");

    let changes = app.changes(ev, cursor).await;
    assert_eq!(changes.len(), 1);
    match &changes[0].data {
        ChangeData::Ticket(t) => {
            assert_eq!(t.serial, serial);
            assert_eq!(t.display_name.as_deref(), Some("New Name"));
        }
        other => panic!("unexpected change {other:?}"),
    }
    app.patch(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{id}"),
        json!({"name": ""}),
    )
    .await
    .assert_problem(422, Some("name"));
    app.patch(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{id}"),
        json!({"email": "nope"}),
    )
    .await
    .assert_problem(422, Some("email"));
}

pub async fn sync_head(app: &TestApp, ev: &str) -> u64 {
    server::store::changes::head(&app.db, uuid::Uuid::parse_str(ev).unwrap())
        .await
        .unwrap()
}

async fn deleting_a_participant_erases_personal_data(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let p = app
        .create_participant(ev, json!({"name": "Erase Me", "email": "erase@example.org", "external_id": "E-1", "attention": "VIP"}))
        .await;
    let id = p["id"].as_str().unwrap();
    let serial = p["ticket"]["serial"].as_u64().unwrap();
    let cursor = sync_head(&app, ev).await;

    let r = app
        .delete(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}"),
        )
        .await;
    assert_eq!(r.status.as_u16(), 204);
    app.get(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{id}"),
    )
    .await
    .assert_problem(404, None);
    let list = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants?q=erase"),
        )
        .await;
    assert!(
        list.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The gates learn of the revocation, and their replica forgets the name.
    let changes = app.changes(ev, cursor).await;
    let ticket = changes.iter().find_map(|c| match &c.data {
        ChangeData::Ticket(t) => Some(t.clone()),
        _ => None,
    });
    let ticket = ticket.expect("a ticket change");
    assert_eq!(ticket.serial, serial);
    assert_eq!(ticket.status, TicketStatus::Revoked);
    assert!(ticket.display_name.is_none() && ticket.attention.is_none());
    assert!(
        changes
            .iter()
            .any(|c| matches!(&c.data, ChangeData::Revocation(r) if r.serial == serial))
    );

    // Personal fields are gone from the database row; the ticket row (check-in facts) stays.
    let row: (Option<String>, Option<String>, Option<String>, String) = match &app.db {
        server::Db::Postgres(p) => sqlx::query_as(
            "SELECT name, email, external_id, metadata FROM participants WHERE id = $1",
        )
        .bind(uuid::Uuid::parse_str(id).unwrap())
        .fetch_one(p)
        .await
        .unwrap(),
        server::Db::Sqlite(p) => sqlx::query_as(
            "SELECT name, email, external_id, metadata FROM participants WHERE id = $1",
        )
        .bind(uuid::Uuid::parse_str(id).unwrap())
        .fetch_one(p)
        .await
        .unwrap(),
    };
    assert_eq!(row, (None, None, None, "{}".to_owned()));
    // The external id is free again.
    app.create_participant(ev, json!({"name": "Someone", "external_id": "E-1"}))
        .await;
    app.delete(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{id}"),
    )
    .await
    .assert_problem(404, None);
}

async fn participant_routes_check_role_token_and_event(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let other = app.create_event("Other").await;
    let other = other["id"].as_str().unwrap();
    let p = app.create_participant(ev, json!({"name": "A"})).await;
    let id = p["id"].as_str().unwrap();

    let list = format!("/api/v1/events/{ev}/participants");
    let one = format!("/api/v1/events/{ev}/participants/{id}");
    app.get(None, &list).await.assert_problem(401, None);
    app.get(None, &one).await.assert_problem(401, None);
    app.post(Some(&app.viewer), &list, json!({"name": "B"}))
        .await
        .assert_problem(403, None);
    app.patch(Some(&app.viewer), &one, json!({"name": "B"}))
        .await
        .assert_problem(403, None);
    app.delete(Some(&app.viewer), &one)
        .await
        .assert_problem(403, None);
    app.post(None, &list, json!({"name": "B"}))
        .await
        .assert_problem(401, None);

    // The participant does not exist in another event.
    let wrong = format!("/api/v1/events/{other}/participants/{id}");
    app.get(Some(&app.admin), &wrong)
        .await
        .assert_problem(404, None);
    app.patch(Some(&app.admin), &wrong, json!({"name": "B"}))
        .await
        .assert_problem(404, None);
    app.delete(Some(&app.admin), &wrong)
        .await
        .assert_problem(404, None);
    let missing = uuid::Uuid::now_v7();
    app.get(
        Some(&app.admin),
        &format!("/api/v1/events/{missing}/participants"),
    )
    .await
    .assert_problem(404, None);
    app.post(
        Some(&app.admin),
        &format!("/api/v1/events/{missing}/participants"),
        json!({"name": "B"}),
    )
    .await
    .assert_problem(404, None);
    // Still there, untouched.
    let got = app.get(Some(&app.viewer), &one).await;
    assert_eq!(got.assert_status(200)["name"], "A");
}
