//! What an attacker, a broken input and a failing machine cannot do: bad text, poisoned clocks,
//! out-of-range numbers, oversized bodies, lost enrollment answers, a wrong master key — on
//! SQLite and PostgreSQL.

use serde_json::{Value, json};
use sync_protocol::Hlc;
use uuid::Uuid;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};
use crate::sync::{
    checkin, checkin_count, create_gate, enrollment_code, live_event, new_gate, now_ms, pull, push,
    serial,
};

backend_tests!(
    a_nul_in_a_pushed_checkin_makes_only_that_one_invalid,
    nul_and_control_characters_in_text_inputs_are_refused_naming_the_field,
    a_gate_clock_far_ahead_is_refused_and_moves_no_clock,
    cursors_and_serials_beyond_2_pow_63_are_refused_naming_the_field,
    a_body_over_the_limit_is_413,
    a_lost_enrollment_answer_can_be_retried_once_by_the_same_device,
);

fn statuses(r: &Value) -> Vec<String> {
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_str().unwrap().to_owned())
        .collect()
}

fn error_of(r: &Value, i: usize) -> String {
    r["results"][i]["error"].as_str().unwrap_or("").to_owned()
}

async fn a_nul_in_a_pushed_checkin_makes_only_that_one_invalid(app: TestApp) {
    let (event, people) = live_event(&app, 2).await;
    let a = new_gate(&app, &event, "A", None).await;
    let t = now_ms();
    let good1 = checkin(a.next_seq, serial(&people[0]), "in", t, 0);
    let bad_code = json!({"id": Uuid::now_v7(), "seq": a.next_seq + 1, "ticket_serial": null,
        "code": "AB\u{0}CD", "method": "code", "direction": "in", "decision": "reject",
        "reason": "unknown_code", "hlc": Hlc::new(t + 1, 0).to_string(),
        "scanned_at": "2026-11-25T10:00:00Z", "replica_cursor": 0, "operator_override": null});
    let mut bad_override = checkin(a.next_seq + 2, serial(&people[1]), "in", t + 2, 0);
    bad_override["reason"] = json!("already_inside");
    bad_override["operator_override"] = json!("vip\u{0}");
    let good2 = checkin(a.next_seq + 3, serial(&people[1]), "in", t + 3, 0);
    let batch = vec![good1, bad_code, bad_override, good2];
    let r = push(&app, &a, batch.clone())
        .await
        .assert_status(200)
        .clone();
    assert_eq!(statuses(&r), ["stored", "invalid", "invalid", "stored"]);
    assert!(error_of(&r, 1).starts_with("code"), "{r}");
    assert!(error_of(&r, 2).starts_with("operator_override"), "{r}");
    assert_eq!(r["acked_through_seq"], json!(a.next_seq + 3), "{r}");
    // The gate's retry goes through as well: nothing is stuck.
    let again = push(&app, &a, batch).await.assert_status(200).clone();
    assert_eq!(statuses(&again)[0], "duplicate");
    assert_eq!(statuses(&again)[3], "duplicate");
    assert_eq!(checkin_count(&app, &event).await, 4);
}

async fn nul_and_control_characters_in_text_inputs_are_refused_naming_the_field(app: TestApp) {
    // Login: before any lookup.
    app.post(
        None,
        "/api/v1/auth/login",
        json!({"email": "ad\u{0}min@localhost", "password": "whatever it is"}),
    )
    .await
    .assert_problem(422, Some("email"));
    app.post(
        Some(&app.admin),
        "/api/v1/users",
        json!({"email": "new\u{7}@example.org", "password": "a long password", "role": "staff"}),
    )
    .await
    .assert_problem(422, Some("email"));

    let (event, people) = live_event(&app, 1).await;
    let ev = event.as_str();
    // Events and gates.
    app.post(
        Some(&app.admin),
        "/api/v1/events",
        json!({"name": "Bell\u{7}", "starts_at": "2026-12-01T09:00:00Z",
               "ends_at": "2026-12-01T18:00:00Z"}),
    )
    .await
    .assert_problem(422, Some("name"));
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{ev}"),
        json!({"venue": "Hall\u{0}"}),
    )
    .await
    .assert_problem(422, Some("venue"));
    app.post(
        Some(&app.admin),
        &format!("/api/v1/events/{ev}/gates"),
        json!({"name": "North", "direction": "both", "zone": "z\u{0}"}),
    )
    .await
    .assert_problem(422, Some("zone"));

    // Participants: names, e-mails, phones, metadata, one of a list.
    let path = format!("/api/v1/events/{ev}/participants");
    for (body, field) in [
        (json!({"name": "Ann\u{0}"}), "name"),
        (json!({"name": "Ann\nLee"}), "name"),
        (
            json!({"name": "Ann", "email": "ann\u{0}@example.org"}),
            "email",
        ),
        (json!({"name": "Ann", "phone": "+49\u{0}"}), "phone"),
        (
            json!({"name": "Ann", "metadata": {"seat": "12\u{0}"}}),
            "metadata.seat",
        ),
        (json!([{"name": "Ann"}, {"name": "Bob\u{0}"}]), "[1].name"),
    ] {
        app.post(Some(&app.staff), &path, body)
            .await
            .assert_problem(422, Some(field));
    }
    let pid = people[0]["id"].as_str().unwrap();
    app.patch(
        Some(&app.staff),
        &format!("{path}/{pid}"),
        json!({"name": "B\u{0}"}),
    )
    .await
    .assert_problem(422, Some("name"));
    app.post(
        Some(&app.staff),
        &format!("{path}/{pid}/ticket/revoke"),
        json!({"reason": "refund\u{0}"}),
    )
    .await
    .assert_problem(422, Some("reason"));
    // Search.
    app.get(Some(&app.viewer), &format!("{path}?q=Ann%00"))
        .await
        .assert_problem(422, Some("q"));
    // A CSV cell (refused as the whole file's problem: NUL bytes mean binary or UTF-16).
    let r = app
        .post_csv(
            Some(&app.staff),
            &format!("{path}/import"),
            "name,email\nAnn\0Lee,ann@example.org\n",
        )
        .await;
    r.assert_problem(422, None);

    // Enrollment: the device name.
    let gate = create_gate(&app, ev, "South", None).await;
    for name in ["kiosk\u{0}", "kiosk\u{1b}[2J"] {
        let code = enrollment_code(&app, ev, &gate).await;
        app.post(
            None,
            "/sync/v1/enroll",
            json!({"code": code, "device_name": name}),
        )
        .await
        .assert_problem(422, Some("device_name"));
    }
    // Nothing of it reached the database: the server still answers and stores.
    app.create_participant(ev, json!({"name": "Clean"})).await;
}

async fn a_gate_clock_far_ahead_is_refused_and_moves_no_clock(app: TestApp) {
    let (event, people) = live_event(&app, 4).await;
    let a = new_gate(&app, &event, "A", None).await;
    let t = now_ms();
    let mut max_hlc = checkin(a.next_seq, serial(&people[0]), "in", t, 0);
    max_hlc["hlc"] = json!((i64::MAX as u64).to_string());
    let mut beyond_i64 = checkin(a.next_seq + 1, serial(&people[1]), "in", t, 0);
    beyond_i64["hlc"] = json!(u64::MAX.to_string());
    let hour_ahead = checkin(a.next_seq + 2, serial(&people[2]), "in", t + 3_600_000, 0);
    // A minute ahead is within the allowed skew: stored, and the server follows it.
    let minute_ahead = checkin(a.next_seq + 3, serial(&people[3]), "in", t + 60_000, 0);
    let r = push(
        &app,
        &a,
        vec![max_hlc, beyond_i64, hour_ahead, minute_ahead],
    )
    .await
    .assert_status(200)
    .clone();
    assert_eq!(
        statuses(&r),
        ["invalid", "invalid", "invalid", "stored"],
        "{r}"
    );
    for i in 0..3 {
        assert!(error_of(&r, i).starts_with("hlc"), "{r}");
    }
    assert_eq!(r["acked_through_seq"], json!(a.next_seq + 3));
    let server_time = |v: &Value| {
        Hlc::from_u64(v["server_time"].as_str().unwrap().parse::<u64>().unwrap()).wall_ms()
    };
    let st = server_time(&r);
    assert!(
        st >= t + 60_000 && st < now_ms() + 61_000,
        "server_time {st} vs now {t}"
    );
    // The clock stays where it is for every gate: the next pull's server_time too.
    let p = pull(&app, &a, "after=0").await.assert_status(200).clone();
    let st = server_time(&p);
    assert!(st < now_ms() + 61_000, "server_time {st} jumped");
    assert_eq!(checkin_count(&app, &event).await, 4);
}

async fn cursors_and_serials_beyond_2_pow_63_are_refused_naming_the_field(app: TestApp) {
    let (event, _) = live_event(&app, 1).await;
    let a = new_gate(&app, &event, "A", None).await;
    for after in ["18446744073709551615", "9223372036854775808"] {
        pull(&app, &a, &format!("after={after}"))
            .await
            .assert_problem(422, Some("after"));
    }
    pull(&app, &a, "after=9223372036854775807")
        .await
        .assert_status(200);
    let r = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/checkins?ticket_serial=9223372036854775808"),
        )
        .await;
    assert!(r.status.is_client_error(), "{:?}", r.status);
    let mut c = checkin(a.next_seq, 1, "in", now_ms(), 0);
    c["replica_cursor"] = json!(u64::MAX);
    let r = push(&app, &a, vec![c]).await.assert_status(200).clone();
    assert_eq!(statuses(&r), ["invalid"], "{r}");
}

async fn a_body_over_the_limit_is_413(app: TestApp) {
    // A 100 MB body on a raw connection, written by one task while this one reads: the server
    // answers 413 once it has read past its limit and closes, and the writer's remaining
    // megabytes then meet a reset connection (which a client library reports as a failed
    // request instead of the answer).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = app.url("/api/v1/events");
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let conn = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut reader, mut writer) = conn.into_split();
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nhost: {authority}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        app.admin,
        100 * 1024 * 1024
    );
    let write = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 1024 * 1024];
        for _ in 0..100 {
            writer.write_all(&chunk).await?;
        }
        std::io::Result::Ok(())
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), reader.read(&mut answer))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    write.abort();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "the first line is 413: {answer}"
    );
    assert!(answer.contains("application/problem+json"), "{answer}");
}

async fn a_lost_enrollment_answer_can_be_retried_once_by_the_same_device(app: TestApp) {
    let (event, _) = live_event(&app, 1).await;
    let gate = create_gate(&app, &event, "North", None).await;
    let code = enrollment_code(&app, &event, &gate).await;
    let enroll = |device: &'static str| {
        let code = code.clone();
        let app = &app;
        async move {
            app.post(
                None,
                "/sync/v1/enroll",
                json!({"code": code, "device_name": device}),
            )
            .await
        }
    };
    let can_pull = |credential: String| {
        let app = &app;
        async move {
            app.send(
                app.client
                    .get(app.url("/sync/v1/changes?after=0"))
                    .bearer_auth(credential),
            )
            .await
            .status
            .as_u16()
        }
    };
    let first = enroll("kiosk-1").await.assert_status(201).clone();
    let first_cred = first["credential"].as_str().unwrap().to_owned();
    // The answer was lost; the device retries with the same code.
    let second = enroll("kiosk-1").await.assert_status(201).clone();
    let second_cred = second["credential"].as_str().unwrap().to_owned();
    assert_ne!(first_cred, second_cred);
    assert_eq!(second["gate_id"], json!(gate));
    assert_eq!(can_pull(second_cred).await, 200);
    assert_eq!(can_pull(first_cred).await, 401, "the first is revoked");
    // Once more only, and never for another device.
    enroll("kiosk-1").await.assert_problem(401, None);
    enroll("kiosk-2").await.assert_problem(401, None);
    let code2 = enrollment_code(&app, &event, &gate).await;
    app.post(
        None,
        "/sync/v1/enroll",
        json!({"code": code2, "device_name": "kiosk-2"}),
    )
    .await
    .assert_status(201);
}

/// Starts a server on `dir` (and `db_url`) with `key` as its master key.
async fn build_with_key(
    dir: &std::path::Path,
    db_url: Option<String>,
    key: &str,
) -> anyhow::Result<server::App> {
    let mut settings = server::Settings::for_test(dir.to_path_buf(), db_url);
    settings.master_key = Some(server::settings::Secret::new(key.to_owned()));
    server::build(settings).await
}

async fn a_different_master_key_refuses_to_start(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            server::testing::PgDatabase::create("usher_test")
                .await
                .unwrap(),
        ),
    };
    let url = pg.as_ref().map(|p| p.url.clone());
    let first = build_with_key(dir.path(), url.clone(), &"11".repeat(32))
        .await
        .expect("first start");
    first.db().close().await;
    drop(first);
    let err = match build_with_key(dir.path(), url.clone(), &"22".repeat(32)).await {
        Ok(_) => panic!("a server with another master key started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("master key does not match"), "{err}");
    // The original key still starts.
    let again = build_with_key(dir.path(), url, &"11".repeat(32))
        .await
        .expect("restart with the original key");
    again.db().close().await;
}

mod a_different_master_key_refuses_to_start {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_different_master_key_refuses_to_start(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_different_master_key_refuses_to_start(Backend::Postgres).await;
    }
}
