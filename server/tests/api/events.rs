use serde_json::json;

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    events_can_be_created_read_listed_updated_and_deleted,
    event_validation_names_the_field,
    event_writes_need_the_admin_role,
);

async fn events_can_be_created_read_listed_updated_and_deleted(app: TestApp) {
    let event = app.create_event("TechConf").await;
    for key in [
        "id",
        "name",
        "starts_at",
        "ends_at",
        "venue",
        "status",
        "settings",
    ] {
        assert!(event.get(key).is_some(), "missing {key}: {event}");
    }
    assert_eq!(event["status"], "draft");
    assert_eq!(event["starts_at"], "2026-12-01T09:00:00Z");
    assert_eq!(event["settings"]["allow_multiple_checkins"], false);
    assert_eq!(event["settings"]["offline_mode"], true);
    let id = event["id"].as_str().unwrap();

    let got = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{id}"))
        .await;
    assert_eq!(got.assert_status(200)["name"], "TechConf");

    // The event has a signing key right away.
    let keys = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{id}/keys"))
        .await;
    let keys = keys.assert_status(200);
    assert_eq!(keys["items"][0]["key_id"], 1);
    assert_eq!(keys["items"][0]["public_key"].as_str().unwrap().len(), 64);

    // Paging.
    app.create_event("Second").await;
    app.create_event("Third").await;
    let page1 = app.get(Some(&app.viewer), "/api/v1/events?limit=2").await;
    let page1 = page1.assert_status(200).clone();
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().expect("a next page");
    let page2 = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events?limit=2&cursor={cursor}"),
        )
        .await;
    let page2 = page2.assert_status(200);
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());

    let patched = app
        .patch(
            Some(&app.admin),
            &format!("/api/v1/events/{id}"),
            json!({"status": "live", "venue": null, "settings": {"allow_multiple_checkins": true}}),
        )
        .await;
    let patched = patched.assert_status(200);
    assert_eq!(patched["status"], "live");
    assert!(patched["venue"].is_null());
    assert_eq!(patched["settings"]["allow_multiple_checkins"], true);

    // A live event cannot be deleted.
    app.delete(Some(&app.admin), &format!("/api/v1/events/{id}"))
        .await
        .assert_problem(409, None);
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{id}"),
        json!({"status": "closed"}),
    )
    .await
    .assert_status(200);
    let r = app
        .delete(Some(&app.admin), &format!("/api/v1/events/{id}"))
        .await;
    assert_eq!(r.status.as_u16(), 204);
    app.get(Some(&app.admin), &format!("/api/v1/events/{id}"))
        .await
        .assert_problem(404, None);
    app.delete(Some(&app.admin), &format!("/api/v1/events/{id}"))
        .await
        .assert_problem(404, None);
}

async fn event_validation_names_the_field(app: TestApp) {
    let cases = [
        (
            json!({"starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-01T18:00:00Z"}),
            "name",
        ),
        (
            json!({"name": " ", "starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-01T18:00:00Z"}),
            "name",
        ),
        (
            json!({"name": "x", "starts_at": "yesterday", "ends_at": "2026-12-01T18:00:00Z"}),
            "starts_at",
        ),
        (
            json!({"name": "x", "starts_at": "2026-12-02T09:00:00Z", "ends_at": "2026-12-01T18:00:00Z"}),
            "ends_at",
        ),
        (
            json!({"name": "x", "starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-01T18:00:00Z", "status": "open"}),
            "status",
        ),
        (
            json!({"name": "x", "starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-01T18:00:00Z", "colour": "red"}),
            "colour",
        ),
        (
            json!({"name": "x", "starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-01T18:00:00Z", "settings": {"allow_multiple_checkins": "yes"}}),
            "settings.allow_multiple_checkins",
        ),
    ];
    for (body, field) in cases {
        app.post(Some(&app.admin), "/api/v1/events", body)
            .await
            .assert_problem(422, Some(field));
    }
    // Bad input changed nothing.
    let list = app.get(Some(&app.admin), "/api/v1/events").await;
    assert!(
        list.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let event = app.create_event("E").await;
    let id = event["id"].as_str().unwrap();
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{id}"),
        json!({"ends_at": "2020-01-01T00:00:00Z"}),
    )
    .await
    .assert_problem(422, Some("ends_at"));
    app.get(Some(&app.admin), "/api/v1/events?limit=0")
        .await
        .assert_problem(400, Some("limit"));
    app.get(Some(&app.admin), "/api/v1/events?cursor=zzz")
        .await
        .assert_problem(400, Some("cursor"));
}

async fn event_writes_need_the_admin_role(app: TestApp) {
    let body = json!({"name": "x", "starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-01T18:00:00Z"});
    app.post(None, "/api/v1/events", body.clone())
        .await
        .assert_problem(401, None);
    app.post(Some(&app.staff), "/api/v1/events", body.clone())
        .await
        .assert_problem(403, None);
    app.post(Some(&app.viewer), "/api/v1/events", body)
        .await
        .assert_problem(403, None);
    let event = app.create_event("E").await;
    let id = event["id"].as_str().unwrap();
    app.patch(
        Some(&app.staff),
        &format!("/api/v1/events/{id}"),
        json!({"name": "y"}),
    )
    .await
    .assert_problem(403, None);
    app.delete(Some(&app.staff), &format!("/api/v1/events/{id}"))
        .await
        .assert_problem(403, None);
    app.get(None, &format!("/api/v1/events/{id}"))
        .await
        .assert_problem(401, None);
    app.get(None, &format!("/api/v1/events/{id}/keys"))
        .await
        .assert_problem(401, None);
    // Unknown events are 404 for every route.
    let other = uuid::Uuid::now_v7();
    app.get(Some(&app.viewer), &format!("/api/v1/events/{other}"))
        .await
        .assert_problem(404, None);
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{other}"),
        json!({"name": "y"}),
    )
    .await
    .assert_problem(404, None);
    app.get(Some(&app.viewer), &format!("/api/v1/events/{other}/keys"))
        .await
        .assert_problem(404, None);
}
