use serde_json::json;
use sync_protocol::wire::ChangeData;

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::participants::sync_head;

backend_tests!(
    gates_can_be_created_listed_changed_and_deactivated,
    enrollment_codes_are_one_time_and_expire,
    gate_validation_names_the_field,
    gate_routes_check_role_token_and_event,
);

async fn gates_can_be_created_listed_changed_and_deactivated(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/gates");
    let cursor = sync_head(&app, ev).await;
    let r = app
        .post(
            Some(&app.admin),
            &path,
            json!({"name": "North door", "zone": "main", "direction": "in", "zone_mask": 1,
                   "allow_reentry": true,
                   "beacon_config": {"service_uuid": 65194, "threshold_dbm": -70, "window_ms": 1500, "min_samples": 3}}),
        )
        .await;
    let gate = r.assert_status(201).clone();
    for key in [
        "id",
        "name",
        "zone",
        "direction",
        "beacon_config",
        "is_active",
    ] {
        assert!(gate.get(key).is_some(), "missing {key}: {gate}");
    }
    assert_eq!(gate["direction"], "in");
    assert_eq!(gate["is_active"], true);
    assert_eq!(gate["beacon_config"]["threshold_dbm"], -70);
    let id = gate["id"].as_str().unwrap();

    let changes = app.changes(ev, cursor).await;
    assert_eq!(changes.len(), 1);
    let ChangeData::GateConfig(cfg) = &changes[0].data else {
        panic!("expected gate_config")
    };
    assert_eq!(cfg.gate_id.to_string(), id);
    assert_eq!(
        u64::from(cfg.event_tag),
        event["event_tag"].as_u64().unwrap()
    );
    assert!(cfg.allow_reentry && cfg.is_active);
    // No shared mesh key is handed out; a gate's own mesh key comes with its enrollment.
    assert_eq!(cfg.mesh_key, None);
    assert_eq!(cfg.mesh_public_key, None);

    let second = app
        .post(Some(&app.admin), &path, json!({"name": "Side"}))
        .await;
    assert_eq!(second.assert_status(201)["direction"], "both");
    let list = app.get(Some(&app.viewer), &path).await;
    assert_eq!(
        list.assert_status(200)["items"].as_array().unwrap().len(),
        2
    );

    let one = format!("{path}/{id}");
    let r = app
        .patch(
            Some(&app.admin),
            &one,
            json!({"name": "North", "zone": null, "direction": "out"}),
        )
        .await;
    let r = r.assert_status(200);
    assert_eq!(r["name"], "North");
    assert!(r["zone"].is_null());
    assert_eq!(r["direction"], "out");

    // Event settings reach the gates.
    let cursor = sync_head(&app, ev).await;
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{ev}"),
        json!({"settings": {"allow_multiple_checkins": true}}),
    )
    .await
    .assert_status(200);
    let changes = app.changes(ev, cursor).await;
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .all(|c| matches!(&c.data, ChangeData::GateConfig(g) if g.allow_multiple_checkins))
    );

    let cursor = sync_head(&app, ev).await;
    let r = app.delete(Some(&app.admin), &one).await;
    assert_eq!(r.status.as_u16(), 204);
    let got = app.get(Some(&app.viewer), &one).await;
    assert_eq!(got.assert_status(200)["is_active"], false);
    let changes = app.changes(ev, cursor).await;
    assert!(matches!(&changes[0].data, ChangeData::GateConfig(g) if !g.is_active));
    // One row per gate in the log: the latest state.
    let all = app.changes(ev, 0).await;
    assert_eq!(
        all.iter()
            .filter(|c| matches!(&c.data, ChangeData::GateConfig(_)))
            .count(),
        2
    );
}

async fn enrollment_codes_are_one_time_and_expire(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let gate = app
        .post(
            Some(&app.admin),
            &format!("/api/v1/events/{ev}/gates"),
            json!({"name": "G"}),
        )
        .await;
    let gate = gate.assert_status(201).clone();
    let id = gate["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/gates/{id}/enrollments");

    let before = time::OffsetDateTime::now_utc();
    let r = app.post_empty(Some(&app.admin), &path).await;
    let r = r.assert_status(201).clone();
    let code = r["code"].as_str().unwrap();
    assert_eq!(code.len(), 11);
    assert_eq!(&code[5..6], "-");
    let expires = time::OffsetDateTime::parse(
        r["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ttl = (expires - before).whole_seconds();
    assert!((890..=910).contains(&ttl), "default ttl 15 min, got {ttl}");

    let r2 = app
        .post(Some(&app.admin), &path, json!({"ttl_seconds": 120}))
        .await;
    let r2 = r2.assert_status(201).clone();
    assert_ne!(r2["code"], r["code"]);

    // Only the hash is stored.
    let stored: Vec<Vec<u8>> = match &app.db {
        server::Db::Postgres(p) => sqlx::query_scalar("SELECT code_hash FROM enrollment_codes")
            .fetch_all(p)
            .await
            .unwrap(),
        server::Db::Sqlite(p) => sqlx::query_scalar("SELECT code_hash FROM enrollment_codes")
            .fetch_all(p)
            .await
            .unwrap(),
    };
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && !h.windows(5).any(|w| w == &code.as_bytes()[..5]))
    );

    app.post(Some(&app.admin), &path, json!({"ttl_seconds": 5}))
        .await
        .assert_problem(422, Some("ttl_seconds"));
    app.post(Some(&app.admin), &path, json!({"ttl": 5}))
        .await
        .assert_problem(422, Some("ttl"));

    // A deactivated gate gets no codes, and its open codes are voided.
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{ev}/gates/{id}"),
        json!({"is_active": false}),
    )
    .await
    .assert_status(200);
    app.post_empty(Some(&app.admin), &path)
        .await
        .assert_problem(409, None);
    let left: i64 = match &app.db {
        server::Db::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM enrollment_codes")
            .fetch_one(p)
            .await
            .unwrap(),
        server::Db::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM enrollment_codes")
            .fetch_one(p)
            .await
            .unwrap(),
    };
    assert_eq!(left, 0);
}

async fn gate_validation_names_the_field(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/gates");
    let cases = [
        (json!({}), "name"),
        (json!({"name": "  "}), "name"),
        (json!({"name": "G", "direction": "sideways"}), "direction"),
        (json!({"name": "G", "zone_mask": 65536}), "zone_mask"),
        (
            json!({"name": "G", "beacon_config": {"service_uuid": 1}}),
            "beacon_config.threshold_dbm",
        ),
        (
            json!({"name": "G", "beacon_config": {"service_uuid": 1, "threshold_dbm": -300, "window_ms": 1, "min_samples": 1}}),
            "beacon_config.threshold_dbm",
        ),
        (json!({"name": "G", "is_active": true}), "is_active"),
    ];
    for (body, field) in cases {
        app.post(Some(&app.admin), &path, body)
            .await
            .assert_problem(422, Some(field));
    }
    let list = app.get(Some(&app.admin), &path).await;
    assert!(
        list.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(app.changes(ev, 1).await.is_empty());
}

async fn gate_routes_check_role_token_and_event(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let other = app.create_event("Other").await;
    let other = other["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/gates");
    app.post(None, &path, json!({"name": "G"}))
        .await
        .assert_problem(401, None);
    app.post(Some(&app.staff), &path, json!({"name": "G"}))
        .await
        .assert_problem(403, None);
    app.get(None, &path).await.assert_problem(401, None);
    let gate = app
        .post(Some(&app.admin), &path, json!({"name": "G"}))
        .await;
    let gate = gate.assert_status(201).clone();
    let id = gate["id"].as_str().unwrap();
    let one = format!("{path}/{id}");
    app.patch(Some(&app.staff), &one, json!({"name": "H"}))
        .await
        .assert_problem(403, None);
    app.delete(Some(&app.viewer), &one)
        .await
        .assert_problem(403, None);
    app.post_empty(Some(&app.staff), &format!("{one}/enrollments"))
        .await
        .assert_problem(403, None);
    app.post_empty(None, &format!("{one}/enrollments"))
        .await
        .assert_problem(401, None);

    let wrong = format!("/api/v1/events/{other}/gates/{id}");
    app.get(Some(&app.admin), &wrong)
        .await
        .assert_problem(404, None);
    app.patch(Some(&app.admin), &wrong, json!({"name": "H"}))
        .await
        .assert_problem(404, None);
    app.delete(Some(&app.admin), &wrong)
        .await
        .assert_problem(404, None);
    app.post_empty(Some(&app.admin), &format!("{wrong}/enrollments"))
        .await
        .assert_problem(404, None);
    let missing = uuid::Uuid::now_v7();
    app.post(
        Some(&app.admin),
        &format!("/api/v1/events/{missing}/gates"),
        json!({"name": "G"}),
    )
    .await
    .assert_problem(404, None);
    let got = app.get(Some(&app.viewer), &one).await;
    let got = got.assert_status(200);
    assert_eq!(got["name"], "G");
    assert_eq!(got["is_active"], true);
}
