//! Service API keys: created by an admin, shown once, accepted as bearer tokens with their role
//! and event scope, their use recorded, revoked at once.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    service_keys_act_with_their_role_and_scope_until_revoked,
    only_admins_manage_keys_and_bad_input_names_the_field,
);

async fn key(app: &TestApp, body: Value) -> (String, String) {
    let r = app.post(Some(&app.admin), "/api/v1/api-keys", body).await;
    let v = r.assert_status(201).clone();
    let key = v["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("usk_") && key.len() > 40, "{key}");
    assert!(key.starts_with(v["prefix"].as_str().unwrap()));
    (v["id"].as_str().unwrap().to_owned(), key)
}

async fn service_keys_act_with_their_role_and_scope_until_revoked(app: TestApp) {
    let a = app.create_event("A").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.create_event("B").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (id, crm) = key(&app, json!({"name": "CRM sync", "role": "staff"})).await;
    let (_, bi) = key(&app, json!({"name": "BI", "role": "viewer"})).await;
    let (_, badge) = key(
        &app,
        json!({"name": "Badge station", "role": "staff", "event_id": a}),
    )
    .await;

    // A staff key writes participants; a viewer key reads but may not write.
    app.post(
        Some(&crm),
        &format!("/api/v1/events/{a}/participants"),
        json!({"name": "Minji Kim", "email": "minji@example.com"}),
    )
    .await
    .assert_status(201);
    app.get(Some(&bi), &format!("/api/v1/events/{a}/participants"))
        .await
        .assert_status(200);
    app.post(
        Some(&bi),
        &format!("/api/v1/events/{a}/participants"),
        json!({"name": "Nope"}),
    )
    .await
    .assert_problem(403, None);
    // An event-scoped key works inside its event only.
    app.get(Some(&badge), &format!("/api/v1/events/{a}/participants"))
        .await
        .assert_status(200);
    app.get(Some(&badge), &format!("/api/v1/events/{b}/participants"))
        .await
        .assert_problem(403, None);
    app.get(Some(&badge), "/api/v1/events")
        .await
        .assert_problem(403, None);
    // No key manages keys unless it is an admin's: a staff key is refused.
    app.get(Some(&crm), "/api/v1/api-keys")
        .await
        .assert_problem(403, None);

    // The list shows the last use and never a secret.
    let list = app
        .get(Some(&app.admin), "/api/v1/api-keys")
        .await
        .assert_status(200)
        .clone();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(
        !list.to_string().contains(&crm),
        "secrets are shown once only"
    );
    let listed = items.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(listed["revoked_at"].is_null());

    // Revoked: refused at once.
    app.delete(Some(&app.admin), &format!("/api/v1/api-keys/{id}"))
        .await
        .assert_status(204);
    app.get(Some(&crm), &format!("/api/v1/events/{a}/participants"))
        .await
        .assert_problem(401, None);
    app.delete(Some(&app.admin), &format!("/api/v1/api-keys/{id}"))
        .await
        .assert_problem(404, None);
    app.get(Some("usk_not-a-key"), "/api/v1/events")
        .await
        .assert_problem(401, None);
}

async fn only_admins_manage_keys_and_bad_input_names_the_field(app: TestApp) {
    app.post(
        Some(&app.staff),
        "/api/v1/api-keys",
        json!({"name": "x", "role": "staff"}),
    )
    .await
    .assert_problem(403, None);
    app.post(
        Some(&app.admin),
        "/api/v1/api-keys",
        json!({"name": " ", "role": "staff"}),
    )
    .await
    .assert_problem(422, Some("name"));
    app.post(
        Some(&app.admin),
        "/api/v1/api-keys",
        json!({"name": "x", "role": "owner"}),
    )
    .await
    .assert_problem(422, Some("role"));
    app.post(
        Some(&app.admin),
        "/api/v1/api-keys",
        json!({"name": "x", "role": "viewer", "event_id": "01936d2a-7c1e-7b3a-9f00-2c5d8e1a4b77"}),
    )
    .await
    .assert_problem(404, None);
}
