use serde_json::json;

use crate::backend_tests;
use crate::helpers::{PASSWORD, STAFF_EMAIL, TestApp};

backend_tests!(
    login_returns_a_bearer_token_and_rejects_bad_credentials,
    login_is_rate_limited,
    tokens_are_required_and_checked,
    only_admins_manage_users,
);

async fn login_returns_a_bearer_token_and_rejects_bad_credentials(app: TestApp) {
    // Happy path (the fixture logged in already); case and spaces in the e-mail do not matter.
    let token = app.login(" Staff@Example.org ", PASSWORD).await;
    let me = app.get(Some(&token), "/api/v1/auth/me").await;
    assert_eq!(me.assert_status(200)["role"], "staff");

    let r = app
        .post(
            None,
            "/api/v1/auth/login",
            json!({"email": STAFF_EMAIL, "password": "wrong password"}),
        )
        .await;
    r.assert_problem(401, None);
    let r = app
        .post(
            None,
            "/api/v1/auth/login",
            json!({"email": "nobody@example.org", "password": PASSWORD}),
        )
        .await;
    r.assert_problem(401, None);
    let r = app
        .post(None, "/api/v1/auth/login", json!({"email": STAFF_EMAIL}))
        .await;
    r.assert_problem(422, Some("password"));
    let r = app
        .send(
            app.client
                .post(app.url("/api/v1/auth/login"))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    r.assert_problem(400, None);
    let r = app
        .send(
            app.client
                .post(app.url("/api/v1/auth/login"))
                .header("content-type", "text/plain")
                .body("x"),
        )
        .await;
    r.assert_problem(415, None);
}

async fn login_is_rate_limited(app: TestApp) {
    for _ in 0..10 {
        let r = app
            .post(
                None,
                "/api/v1/auth/login",
                json!({"email": "victim@example.org", "password": "guess guess guess"}),
            )
            .await;
        r.assert_problem(401, None);
    }
    let r = app
        .post(
            None,
            "/api/v1/auth/login",
            json!({"email": "victim@example.org", "password": "guess guess guess"}),
        )
        .await;
    r.assert_problem(429, None);
    // Other accounts are unaffected.
    app.login(STAFF_EMAIL, PASSWORD).await;
}

async fn tokens_are_required_and_checked(app: TestApp) {
    app.get(None, "/api/v1/events")
        .await
        .assert_problem(401, None);
    app.get(Some("not.a.token"), "/api/v1/events")
        .await
        .assert_problem(401, None);
    let forged = format!("{}x", app.admin);
    app.get(Some(&forged), "/api/v1/events")
        .await
        .assert_problem(401, None);
    let r = app
        .send(
            app.client
                .get(app.url("/api/v1/events"))
                .header("authorization", "Basic YTpi"),
        )
        .await;
    r.assert_problem(401, None);
}

async fn only_admins_manage_users(app: TestApp) {
    let body = json!({"email": "new@example.org", "password": "a long password", "role": "viewer"});
    app.post(None, "/api/v1/users", body.clone())
        .await
        .assert_problem(401, None);
    app.post(Some(&app.staff), "/api/v1/users", body.clone())
        .await
        .assert_problem(403, None);
    app.get(Some(&app.viewer), "/api/v1/users")
        .await
        .assert_problem(403, None);

    let r = app
        .post(Some(&app.admin), "/api/v1/users", body.clone())
        .await;
    let user = r.assert_status(201);
    assert_eq!(user["role"], "viewer");
    assert!(user.get("password_hash").is_none());
    app.post(Some(&app.admin), "/api/v1/users", body)
        .await
        .assert_problem(409, None);
    let r = app
        .post(
            Some(&app.admin),
            "/api/v1/users",
            json!({"email": "x@example.org", "password": "short", "role": "staff"}),
        )
        .await;
    r.assert_problem(422, Some("password"));
    let r = app
        .post(
            Some(&app.admin),
            "/api/v1/users",
            json!({"email": "y@example.org", "password": "a long password", "role": "root"}),
        )
        .await;
    r.assert_problem(422, Some("role"));

    let list = app.get(Some(&app.admin), "/api/v1/users").await;
    assert_eq!(
        list.assert_status(200)["items"].as_array().unwrap().len(),
        4
    );
    app.login("new@example.org", "a long password").await;
}
