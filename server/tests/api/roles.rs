//! Roles per event, what a viewer may never read, and sessions that end the moment their user
//! changes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::console::{location, page, sign_in};
use crate::helpers::{PASSWORD, STAFF_EMAIL, TestApp};

backend_tests!(
    a_viewer_never_receives_a_ticket_credential,
    a_grant_gives_a_role_on_one_event_only,
    a_changed_user_s_token_is_refused_on_the_next_request,
    a_grant_change_ends_console_sessions,
    an_event_s_api_key_holds_its_role_on_that_event_only,
);

/// Creates a user with `role` on all events (`none`: none) and returns their id.
async fn create_user(app: &TestApp, email: &str, role: &str) -> String {
    let r = app
        .post(
            Some(&app.admin),
            "/api/v1/users",
            json!({"email": email, "password": PASSWORD, "role": role}),
        )
        .await;
    let body = r.assert_status(201);
    assert_eq!(body["role"], role);
    body["id"].as_str().expect("id").to_owned()
}

async fn grant(app: &TestApp, user: &str, event: &str, role: &str) -> Value {
    app.send(
        app.client
            .put(app.url(&format!("/api/v1/users/{user}/events/{event}")))
            .bearer_auth(&app.admin)
            .json(&json!({"role": role})),
    )
    .await
    .assert_status(200)
    .clone()
}

/// Whether `token` still reads the event list.
async fn works(app: &TestApp, token: &str) -> bool {
    app.get(Some(token), "/api/v1/events").await.status == StatusCode::OK
}

/// Two events, A with a ticketed participant; returns (A, B, the participant's id).
async fn two_events(app: &TestApp) -> (String, String, String) {
    let a = app.create_event("Event A").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let b = app.create_event("Event B").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let p = app
        .create_participant(&a, json!({"name": "Ada", "email": "ada@example.org"}))
        .await;
    assert!(p["ticket"]["credential"].as_str().is_some(), "{p}");
    (a, b, p["id"].as_str().expect("id").to_owned())
}

async fn a_viewer_never_receives_a_ticket_credential(app: TestApp) {
    let (a, _b, pid) = two_events(&app).await;
    let user = create_user(&app, "a-viewer@example.org", "none").await;
    grant(&app, &user, &a, "viewer").await;
    let event_viewer = app.login("a-viewer@example.org", PASSWORD).await;
    // A viewer on all events and a viewer of A alike read names but no bearer secret.
    for token in [&app.viewer, &event_viewer] {
        let list = app
            .get(Some(token), &format!("/api/v1/events/{a}/participants"))
            .await;
        let item = &list.assert_status(200)["items"][0];
        assert_eq!(item["name"], "Ada");
        assert_eq!(item["ticket"]["status"], "valid", "{item}");
        assert!(item["ticket"].get("credential").is_none(), "{item}");
        assert!(item["ticket"].get("short_code").is_none(), "{item}");
        let one = app
            .get(
                Some(token),
                &format!("/api/v1/events/{a}/participants/{pid}"),
            )
            .await;
        let one = one.assert_status(200);
        assert!(one["ticket"].get("credential").is_none(), "{one}");
        assert!(one["ticket"].get("short_code").is_none(), "{one}");
        for doc in [
            "ticket.png",
            "ticket.png?layout=qr",
            "ticket.svg",
            "ticket.pdf",
            "ticket.pkpass",
            "wallet/google",
        ] {
            app.get(
                Some(token),
                &format!("/api/v1/events/{a}/participants/{pid}/{doc}"),
            )
            .await
            .assert_problem(403, None);
        }
        app.get(Some(token), &format!("/api/v1/events/{a}/tickets.pdf"))
            .await
            .assert_problem(403, None);
        app.post(
            Some(token),
            &format!("/api/v1/events/{a}/tickets/send"),
            json!({"participant_ids": [pid]}),
        )
        .await
        .assert_problem(403, None);
        // Attendance and the check-in export stay readable.
        app.get(Some(token), &format!("/api/v1/events/{a}/attendance"))
            .await
            .assert_status(200);
        app.get(Some(token), &format!("/api/v1/events/{a}/exports/checkins"))
            .await
            .assert_status(200);
    }
    // Staff see the credential and the ticket image.
    let got = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{a}/participants/{pid}"),
        )
        .await;
    assert!(
        got.assert_status(200)["ticket"]["credential"]
            .as_str()
            .is_some_and(|c| c.starts_with("U1:"))
    );
    let png = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{a}/participants/{pid}/ticket.png"),
        )
        .await;
    assert_eq!(png.status, StatusCode::OK);
}

async fn a_grant_gives_a_role_on_one_event_only(app: TestApp) {
    let (a, b, pid) = two_events(&app).await;
    let user = create_user(&app, "a-staff@example.org", "none").await;
    let shown = grant(&app, &user, &a, "staff").await;
    assert_eq!(shown["role"], "none");
    assert_eq!(shown["grants"], json!([{"event_id": a, "role": "staff"}]));
    let token = app.login("a-staff@example.org", PASSWORD).await;
    let me = app.get(Some(&token), "/api/v1/auth/me").await;
    assert_eq!(
        me.assert_status(200)["grants"],
        json!([{"event_id": a, "role": "staff"}])
    );

    // The event list holds A alone.
    let list = app.get(Some(&token), "/api/v1/events").await;
    let ids: Vec<&str> = list.assert_status(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, vec![a.as_str()]);

    // Staff on A: writes participants there, with their credentials.
    let made = app
        .post(
            Some(&token),
            &format!("/api/v1/events/{a}/participants"),
            json!({"name": "Grace"}),
        )
        .await;
    assert!(made.assert_status(201)["ticket"]["credential"].is_string());
    app.get(
        Some(&token),
        &format!("/api/v1/events/{a}/participants/{pid}/ticket.png"),
    )
    .await
    .assert_status(200);
    // ... but not what an admin of A does, and nothing on B, whatever the body.
    app.patch(
        Some(&token),
        &format!("/api/v1/events/{a}"),
        json!({"name": "Renamed"}),
    )
    .await
    .assert_problem(403, None);
    app.post(
        Some(&token),
        &format!("/api/v1/events/{a}/gates"),
        json!({}),
    )
    .await
    .assert_problem(403, None);
    for (status, resp) in [
        (
            404,
            app.post(
                Some(&token),
                &format!("/api/v1/events/{b}/participants"),
                json!({"name": "Eve"}),
            )
            .await,
        ),
        (
            404,
            app.post(
                Some(&token),
                &format!("/api/v1/events/{b}/participants"),
                json!({}),
            )
            .await,
        ),
        (
            404,
            app.get(Some(&token), &format!("/api/v1/events/{b}/participants"))
                .await,
        ),
        (
            404,
            app.get(Some(&token), &format!("/api/v1/events/{b}")).await,
        ),
        (
            403,
            app.post(Some(&token), "/api/v1/events", json!({"name": "Mine"}))
                .await,
        ),
        (403, app.get(Some(&token), "/api/v1/users").await),
    ] {
        resp.assert_problem(status, None);
    }
    let b_people = app
        .get(
            Some(&app.admin),
            &format!("/api/v1/events/{b}/participants"),
        )
        .await;
    assert_eq!(b_people.assert_status(200)["items"], json!([]));

    // Admin on A: the event's gates; a staff grant on all events does not reach further.
    grant(&app, &user, &a, "admin").await;
    let token = app.login("a-staff@example.org", PASSWORD).await;
    app.post(
        Some(&token),
        &format!("/api/v1/events/{a}/gates"),
        json!({"name": "North door"}),
    )
    .await
    .assert_status(201);
    app.get(Some(&token), "/api/v1/users")
        .await
        .assert_problem(403, None);

    // Taking the grant away leaves nothing.
    let r = app
        .delete(
            Some(&app.admin),
            &format!("/api/v1/users/{user}/events/{a}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.delete(
        Some(&app.admin),
        &format!("/api/v1/users/{user}/events/{a}"),
    )
    .await
    .assert_problem(404, None);
    let token = app.login("a-staff@example.org", PASSWORD).await;
    let list = app.get(Some(&token), "/api/v1/events").await;
    assert_eq!(list.assert_status(200)["items"], json!([]));
    app.get(Some(&token), &format!("/api/v1/events/{a}"))
        .await
        .assert_problem(404, None);

    // A grant names a real user, event and role.
    for (path, body, status) in [
        (
            format!("/api/v1/users/{user}/events/{a}"),
            json!({"role": "owner"}),
            422,
        ),
        (
            format!("/api/v1/users/{user}/events/{}", uuid::Uuid::now_v7()),
            json!({"role": "staff"}),
            404,
        ),
        (
            format!("/api/v1/users/{}/events/{a}", uuid::Uuid::now_v7()),
            json!({"role": "staff"}),
            404,
        ),
    ] {
        let r = app
            .send(
                app.client
                    .put(app.url(&path))
                    .bearer_auth(&app.admin)
                    .json(&body),
            )
            .await;
        r.assert_problem(status, (status == 422).then_some("role"));
    }
}

async fn a_changed_user_s_token_is_refused_on_the_next_request(app: TestApp) {
    let (a, _b, _pid) = two_events(&app).await;
    let user = create_user(&app, "changing@example.org", "staff").await;
    let fresh = || app.login("changing@example.org", PASSWORD);

    // Demoted: the token issued before is refused at once, a new one carries the new role.
    let token = fresh().await;
    assert!(works(&app, &token).await);
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/users/{user}"),
        json!({"role": "viewer"}),
    )
    .await
    .assert_status(200);
    app.get(Some(&token), "/api/v1/events")
        .await
        .assert_problem(401, None);
    let token = fresh().await;
    let me = app.get(Some(&token), "/api/v1/auth/me").await;
    assert_eq!(me.assert_status(200)["role"], "viewer");

    // A grant changed.
    grant(&app, &user, &a, "staff").await;
    app.get(Some(&token), "/api/v1/events")
        .await
        .assert_problem(401, None);

    // Disabled.
    let token = fresh().await;
    assert!(works(&app, &token).await);
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/users/{user}"),
        json!({"disabled": true}),
    )
    .await
    .assert_status(200);
    app.get(Some(&token), "/api/v1/events")
        .await
        .assert_problem(401, None);
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/users/{user}"),
        json!({"disabled": false}),
    )
    .await
    .assert_status(200);

    // Their own password changed: the old token ends with the old password.
    let token = fresh().await;
    let r = app
        .post(
            Some(&token),
            "/api/v1/auth/password",
            json!({"current_password": PASSWORD, "new_password": "another long password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    app.get(Some(&token), "/api/v1/events")
        .await
        .assert_problem(401, None);

    // Removed.
    let token = app
        .login("changing@example.org", "another long password")
        .await;
    assert!(works(&app, &token).await);
    let r = app
        .delete(Some(&app.admin), &format!("/api/v1/users/{user}"))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.get(Some(&token), "/api/v1/events")
        .await
        .assert_problem(401, None);
    let users = app.get(Some(&app.admin), "/api/v1/users").await;
    assert!(
        !users.assert_status(200)["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|u| u["id"] == user.as_str())
    );
    app.delete(Some(&app.admin), &format!("/api/v1/users/{user}"))
        .await
        .assert_problem(404, None);
    // Untouched users keep their tokens.
    assert!(works(&app, &app.staff).await);
}

async fn a_grant_change_ends_console_sessions(app: TestApp) {
    let (a, _b, _pid) = two_events(&app).await;
    let staff = server::store::users::by_email(&app.db, STAFF_EMAIL)
        .await
        .expect("staff")
        .expect("staff exists");
    let (cookie, _) = sign_in(&app, STAFF_EMAIL, PASSWORD).await;
    let gates = page(&cookie, &app.url(&format!("/events/{a}/gates")))
        .await
        .text()
        .await
        .expect("body");
    assert!(!gates.contains("id=\"gate-create\""), "{gates}");
    grant(&app, &staff.id.to_string(), &a, "admin").await;
    assert_eq!(
        location(&page(&cookie, &app.url("/events")).await),
        "/login"
    );
    // Signed in again, the grant counts on A's pages: its gates can be changed.
    let (cookie, _) = sign_in(&app, STAFF_EMAIL, PASSWORD).await;
    let gates = page(&cookie, &app.url(&format!("/events/{a}/gates")))
        .await
        .text()
        .await
        .expect("body");
    assert!(gates.contains("id=\"gate-create\""), "{gates}");
    // The users page shows the grant with its event's name, and a way to take it away.
    create_user(&app, "second-admin@example.org", "admin").await;
    let (cookie, _) = sign_in(&app, "second-admin@example.org", PASSWORD).await;
    let users = page(&cookie, &app.url("/users"))
        .await
        .text()
        .await
        .expect("body");
    assert!(users.contains("Event A: admin"), "{users}");
    assert!(
        users.contains(&format!("/api/v1/users/{}/events/{a}", staff.id)),
        "{users}"
    );
}

async fn an_event_s_api_key_holds_its_role_on_that_event_only(app: TestApp) {
    let (a, b, pid) = two_events(&app).await;
    let key = |role: &'static str| {
        let app = &app;
        let a = a.clone();
        async move {
            let r = app
                .post(
                    Some(&app.admin),
                    "/api/v1/api-keys",
                    json!({"name": format!("{role} key"), "role": role, "event_id": a}),
                )
                .await;
            r.assert_status(201)["key"]
                .as_str()
                .expect("key")
                .to_owned()
        }
    };
    let viewer = key("viewer").await;
    let staff = key("staff").await;
    let one = format!("/api/v1/events/{a}/participants/{pid}");
    let got = app.get(Some(&viewer), &one).await;
    assert!(got.assert_status(200)["ticket"].get("credential").is_none());
    app.get(Some(&viewer), &format!("{one}/ticket.png"))
        .await
        .assert_problem(403, None);
    let got = app.get(Some(&staff), &one).await;
    assert!(got.assert_status(200)["ticket"]["credential"].is_string());
    app.get(Some(&staff), &format!("/api/v1/events/{b}/participants"))
        .await
        .assert_problem(403, None);
}
