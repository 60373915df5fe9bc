//! Who may call what, for every operation of the served OpenAPI document.
//!
//! The fixture holds two events, A and B, each with a participant, gates, a zone and a
//! webhook, and these callers: nobody, a viewer, a staff member and an admin of A (roles granted
//! on A alone), an admin on all events, and a gate of A. [`TABLE`] states, per
//! `(method, path)`, which of them may call it; every operation is called by each of them with
//! A's ids, and by A's callers with B's ids as well (always refused). Allowed means anything
//! but 401 and 403 (a 422 for a dummy body is fine); refused means 401, 403, or 404 for an
//! event the caller has no role on. Bodies are `{}`: the authorization is decided before the
//! body is read.
//!
//! The test fails when the document has an operation the table has no row for, and when the
//! table has a row for an operation the document no longer has. Routes outside the document
//! (console pages, `/metrics`, the document itself) are in [`OUTSIDE`].
//!
//! One backend is enough here (SQLite): the decision is made in code, the same on both; the
//! per-event rules are exercised on both backends by `roles.rs`.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::console::sign_in;
use crate::helpers::{Backend, PASSWORD, TestApp, spawn_app};
use crate::sync::new_gate;

/// The callers, in the order of each row's expectation string.
const CALLERS: [&str; 6] = [
    "nobody",
    "viewer of A",
    "staff of A",
    "admin of A",
    "admin",
    "gate of A",
];

/// `(method, path, expectation)`: one character per caller of [`CALLERS`], `y` allowed, `n`
/// refused.
const TABLE: &[(&str, &str, &str)] = &[
    // Public.
    ("GET", "/healthz", "yyyyyy"),
    ("GET", "/readyz", "yyyyyy"),
    ("POST", "/api/v1/auth/login", "yyyyyy"),
    ("GET", "/wallet/v1/apple/{token}", "yyyyyy"),
    ("GET", "/sync/v1/capabilities", "yyyyyy"),
    ("POST", "/sync/v1/enroll", "yyyyyy"),
    // A gate's own.
    ("GET", "/sync/v1/changes", "nnnnny"),
    ("POST", "/sync/v1/checkins", "nnnnny"),
    ("GET", "/sync/v1/stream", "nnnnny"),
    // Any organizer.
    ("GET", "/api/v1/auth/me", "nyyyyn"),
    ("POST", "/api/v1/auth/password", "nyyyyn"),
    ("GET", "/api/v1/events", "nyyyyn"),
    // An admin on all events.
    ("POST", "/api/v1/events", "nnnnyn"),
    ("GET", "/api/v1/users", "nnnnyn"),
    ("POST", "/api/v1/users", "nnnnyn"),
    ("PATCH", "/api/v1/users/{id}", "nnnnyn"),
    ("DELETE", "/api/v1/users/{id}", "nnnnyn"),
    ("PUT", "/api/v1/users/{id}/events/{event}", "nnnnyn"),
    ("DELETE", "/api/v1/users/{id}/events/{event}", "nnnnyn"),
    ("GET", "/api/v1/api-keys", "nnnnyn"),
    ("POST", "/api/v1/api-keys", "nnnnyn"),
    ("DELETE", "/api/v1/api-keys/{id}", "nnnnyn"),
    // A viewer of the event: what happens, never a credential.
    ("GET", "/api/v1/events/{event}", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/keys", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/participants", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/participants/{id}", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/gates", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/gates/{gate}", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/zones", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/zones/{zone}", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/attendance", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/stream", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/checkins", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/conflicts", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/report", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/exports/checkins", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/mails", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/mail-template", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/arrivals", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/alert-rules", "nyyyyn"),
    ("GET", "/api/v1/events/{event}/alerts", "nyyyyn"),
    // Staff of the event: participants, tickets and everything that carries a credential.
    ("POST", "/api/v1/events/{event}/participants", "nnyyyn"),
    (
        "POST",
        "/api/v1/events/{event}/participants/import",
        "nnyyyn",
    ),
    (
        "PATCH",
        "/api/v1/events/{event}/participants/{id}",
        "nnyyyn",
    ),
    (
        "DELETE",
        "/api/v1/events/{event}/participants/{id}",
        "nnyyyn",
    ),
    (
        "POST",
        "/api/v1/events/{event}/participants/{id}/ticket",
        "nnyyyn",
    ),
    (
        "POST",
        "/api/v1/events/{event}/participants/{id}/ticket/revoke",
        "nnyyyn",
    ),
    (
        "GET",
        "/api/v1/events/{event}/participants/{id}/export",
        "nnyyyn",
    ),
    (
        "GET",
        "/api/v1/events/{event}/participants/{id}/ticket.png",
        "nnyyyn",
    ),
    (
        "GET",
        "/api/v1/events/{event}/participants/{id}/ticket.svg",
        "nnyyyn",
    ),
    (
        "GET",
        "/api/v1/events/{event}/participants/{id}/ticket.pdf",
        "nnyyyn",
    ),
    (
        "GET",
        "/api/v1/events/{event}/participants/{id}/ticket.pkpass",
        "nnyyyn",
    ),
    (
        "GET",
        "/api/v1/events/{event}/participants/{id}/wallet/google",
        "nnyyyn",
    ),
    ("GET", "/api/v1/events/{event}/tickets.pdf", "nnyyyn"),
    ("POST", "/api/v1/events/{event}/tickets/send", "nnyyyn"),
    (
        "GET",
        "/api/v1/events/{event}/exports/participants",
        "nnyyyn",
    ),
    (
        "POST",
        "/api/v1/events/{event}/conflicts/{id}/resolve",
        "nnyyyn",
    ),
    ("PUT", "/api/v1/events/{event}/mail-template", "nnyyyn"),
    ("DELETE", "/api/v1/events/{event}/mail-template", "nnyyyn"),
    ("PUT", "/api/v1/events/{event}/alert-rules", "nnyyyn"),
    // The online redeem: staff of the event, or a gate of it.
    ("POST", "/api/v1/events/{event}/redeem", "nnyyyy"),
    // An admin of the event: its settings, gates, zones, webhooks.
    ("PATCH", "/api/v1/events/{event}", "nnnyyn"),
    ("DELETE", "/api/v1/events/{event}", "nnnyyn"),
    ("PUT", "/api/v1/events/{event}/supervisor-pin", "nnnyyn"),
    ("POST", "/api/v1/events/{event}/gates", "nnnyyn"),
    ("PATCH", "/api/v1/events/{event}/gates/{gate}", "nnnyyn"),
    ("DELETE", "/api/v1/events/{event}/gates/{gate}", "nnnyyn"),
    (
        "POST",
        "/api/v1/events/{event}/gates/{gate}/enrollments",
        "nnnyyn",
    ),
    ("POST", "/api/v1/events/{event}/zones", "nnnyyn"),
    ("PATCH", "/api/v1/events/{event}/zones/{zone}", "nnnyyn"),
    ("DELETE", "/api/v1/events/{event}/zones/{zone}", "nnnyyn"),
    ("GET", "/api/v1/events/{event}/webhooks", "nnnyyn"),
    ("POST", "/api/v1/events/{event}/webhooks", "nnnyyn"),
    ("GET", "/api/v1/events/{event}/webhooks/{id}", "nnnyyn"),
    ("PATCH", "/api/v1/events/{event}/webhooks/{id}", "nnnyyn"),
    ("DELETE", "/api/v1/events/{event}/webhooks/{id}", "nnnyyn"),
    (
        "POST",
        "/api/v1/events/{event}/webhooks/{id}/rotate",
        "nnnyyn",
    ),
    (
        "POST",
        "/api/v1/events/{event}/webhooks/{id}/test",
        "nnnyyn",
    ),
    (
        "GET",
        "/api/v1/events/{event}/webhooks/{id}/deliveries",
        "nnnyyn",
    ),
];

/// Routes the document does not describe, called as the console's browser does (a session
/// cookie for organizers; the gate's credential as a bearer token): `(method, path,
/// expectation)`. A page refused to nobody redirects to the sign-in page.
const OUTSIDE: &[(&str, &str, &str)] = &[
    ("GET", "/metrics", "yyyyyy"),
    ("GET", "/api/openapi.json", "yyyyyy"),
    ("GET", "/login", "yyyyyy"),
    ("GET", "/events", "nyyyyn"),
    ("GET", "/events/{event}", "nyyyyn"),
    ("GET", "/events/{event}/participants", "nyyyyn"),
    ("GET", "/events/{event}/import", "nyyyyn"),
    ("GET", "/events/{event}/gates", "nyyyyn"),
    ("GET", "/events/{event}/dashboard", "nyyyyn"),
    ("GET", "/users", "nnnnyn"),
    ("GET", "/api-keys", "nnnnyn"),
];

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

/// One event's ids.
struct Ids {
    event: String,
    participant: String,
    gate: String,
    zone: String,
    webhook: String,
}

struct Fixture {
    a: Ids,
    b: Ids,
    /// A user and an API key only the admin's calls touch.
    user: String,
    api_key: String,
    /// Per caller: how to authenticate (a bearer token, or none).
    bearer: [Option<String>; 6],
    /// Per caller: the console session cookie (organizers only).
    cookie: [Option<String>; 6],
}

async fn id_of(r: crate::helpers::Resp) -> String {
    assert!(r.status.is_success(), "{}: {}", r.status, r.body);
    r.body["id"].as_str().expect("id").to_owned()
}

async fn event_ids(app: &TestApp, name: &str) -> Ids {
    let event = app.create_event(name).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let participant = app
        .create_participant(&event, json!({"name": "Ada", "email": "ada@example.org"}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let admin = Some(app.admin.as_str());
    let gate = id_of(
        app.post(
            admin,
            &format!("/api/v1/events/{event}/gates"),
            json!({"name": "Side door"}),
        )
        .await,
    )
    .await;
    let zone = id_of(
        app.post(
            admin,
            &format!("/api/v1/events/{event}/zones"),
            json!({"name": "Hall", "capacity": 100}),
        )
        .await,
    )
    .await;
    let webhook = id_of(
        app.post(
            admin,
            &format!("/api/v1/events/{event}/webhooks"),
            json!({"url": "http://127.0.0.1:9/hook", "events": ["checkin.created"]}),
        )
        .await,
    )
    .await;
    Ids {
        event,
        participant,
        gate,
        zone,
        webhook,
    }
}

async fn fixture(app: &TestApp) -> Fixture {
    let a = event_ids(app, "Event A").await;
    let b = event_ids(app, "Event B").await;
    let mut bearer: [Option<String>; 6] = Default::default();
    let mut cookie: [Option<String>; 6] = Default::default();
    for (i, role) in [(1, "viewer"), (2, "staff"), (3, "admin")] {
        let email = format!("{role}-of-a@example.org");
        let user = id_of(
            app.post(
                Some(&app.admin),
                "/api/v1/users",
                json!({"email": email, "password": PASSWORD, "role": "none"}),
            )
            .await,
        )
        .await;
        let r = app
            .send(
                app.client
                    .put(app.url(&format!("/api/v1/users/{user}/events/{}", a.event)))
                    .bearer_auth(&app.admin)
                    .json(&json!({"role": role})),
            )
            .await;
        r.assert_status(200);
        bearer[i] = Some(app.login(&email, PASSWORD).await);
        cookie[i] = Some(sign_in(app, &email, PASSWORD).await.0);
    }
    bearer[4] = Some(app.admin.clone());
    // The first admin's generated password must be changed before the console opens; a second
    // admin on all events stands in for it there.
    id_of(
        app.post(
            Some(&app.admin),
            "/api/v1/users",
            json!({"email": "second-admin@example.org", "password": PASSWORD, "role": "admin"}),
        )
        .await,
    )
    .await;
    cookie[4] = Some(sign_in(app, "second-admin@example.org", PASSWORD).await.0);
    bearer[5] = Some(new_gate(app, &a.event, "Main door", None).await.credential);
    let user = id_of(
        app.post(
            Some(&app.admin),
            "/api/v1/users",
            json!({"email": "someone@example.org", "password": PASSWORD, "role": "viewer"}),
        )
        .await,
    )
    .await;
    let key = app
        .post(
            Some(&app.admin),
            "/api/v1/api-keys",
            json!({"name": "CRM", "role": "viewer"}),
        )
        .await;
    let api_key = key.assert_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    Fixture {
        a,
        b,
        user,
        api_key,
        bearer,
        cookie,
    }
}

/// `path` with its parameters filled from `ids`.
fn fill(path: &str, ids: &Ids, f: &Fixture) -> String {
    let id = if path.starts_with("/api/v1/users/") {
        f.user.as_str()
    } else if path.starts_with("/api/v1/api-keys/") {
        f.api_key.as_str()
    } else if path.contains("/participants/{id}") {
        ids.participant.as_str()
    } else if path.contains("/webhooks/{id}") {
        ids.webhook.as_str()
    } else {
        // A conflict: no such one exists, which only the callers allowed learn (404).
        "0190a8b0-0000-7000-8000-000000000000"
    };
    path.replace("{event}", &ids.event)
        .replace("{gate}", &ids.gate)
        .replace("{zone}", &ids.zone)
        .replace("{token}", "no-such-pass")
        .replace("{id}", id)
}

/// Calls `method url` as caller `who` and returns the status (the body is never read: some
/// answers are endless event streams).
async fn call(
    app: &TestApp,
    f: &Fixture,
    who: usize,
    method: &str,
    url: &str,
    page: bool,
) -> StatusCode {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let write = !matches!(method, reqwest::Method::GET);
    let mut req = client.request(method, app.url(url));
    match (&f.cookie[who], &f.bearer[who]) {
        (Some(c), _) if page => req = req.header(reqwest::header::COOKIE, c),
        (_, Some(t)) if !page => req = req.bearer_auth(t),
        _ => {}
    }
    if write {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.expect("request");
    resp.status()
}

fn allowed(status: StatusCode) -> bool {
    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
}

fn refused(status: StatusCode, page: bool) -> bool {
    matches!(status.as_u16(), 401 | 403 | 404) || (page && status == StatusCode::SEE_OTHER)
}

/// Checks one row; returns what went wrong.
async fn check(
    app: &TestApp,
    f: &Fixture,
    (method, path, expect): (&str, &str, &str),
    page: bool,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let expect: Vec<bool> = expect.chars().map(|c| c == 'y').collect();
    assert_eq!(
        expect.len(),
        CALLERS.len(),
        "{method} {path}: one mark per caller"
    );
    // Refusals first, then A's callers against B, then the allowed calls (which may change or
    // remove what they are called on).
    for (who, _) in expect.iter().enumerate().filter(|(_, ok)| !**ok) {
        let status = call(app, f, who, method, &fill(path, &f.a, f), page).await;
        if !refused(status, page) {
            wrong.push(format!(
                "{method} {path} as {}: {status}, expected a refusal",
                CALLERS[who]
            ));
        }
    }
    if path.contains("{event}") {
        for who in [1, 2, 3, 5] {
            let status = call(app, f, who, method, &fill(path, &f.b, f), page).await;
            if !refused(status, page) {
                wrong.push(format!(
                    "{method} {path} as {} with event B's ids: {status}, expected a refusal",
                    CALLERS[who]
                ));
            }
        }
    }
    for (who, _) in expect.iter().enumerate().filter(|(_, ok)| **ok) {
        let status = call(app, f, who, method, &fill(path, &f.a, f), page).await;
        if !allowed(status) {
            wrong.push(format!(
                "{method} {path} as {}: {status}, expected it allowed",
                CALLERS[who]
            ));
        }
    }
    wrong
}

/// Every `(METHOD, path)` of the served document.
async fn documented(app: &TestApp) -> BTreeSet<(String, String)> {
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .expect("GET /api/openapi.json")
        .json()
        .await
        .expect("the document is JSON");
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
        for other in ["options", "head", "trace"] {
            assert!(
                item.get(other).is_none(),
                "{path}: an operation `{other}` this test does not call"
            );
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_refuses_the_callers_its_row_refuses() {
    let app = spawn_app(Backend::Sqlite).await;

    let in_doc = documented(&app).await;
    let in_table: BTreeSet<(String, String)> = TABLE
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(in_table.len(), TABLE.len(), "a row appears twice");
    let missing: Vec<_> = in_doc.difference(&in_table).collect();
    assert!(
        missing.is_empty(),
        "operations without a row in TABLE (say who may call them): {missing:?}"
    );
    let stale: Vec<_> = in_table.difference(&in_doc).collect();
    assert!(
        stale.is_empty(),
        "rows of TABLE for operations the document no longer has: {stale:?}"
    );

    let f = fixture(&app).await;
    // What removes the fixture goes last: every other row first, then the deletions, the
    // event's own deletion at the very end.
    let mut rows: Vec<_> = TABLE.to_vec();
    rows.sort_by_key(|(m, p, _)| (*m == "DELETE", *p == "/api/v1/events/{event}"));
    let mut wrong = Vec::new();
    for row in OUTSIDE {
        wrong.extend(
            check(
                &app,
                &f,
                *row,
                row.1 != "/metrics" && row.1 != "/api/openapi.json",
            )
            .await,
        );
    }
    for row in rows {
        wrong.extend(check(&app, &f, row, false).await);
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
