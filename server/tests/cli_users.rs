//! `server users …` on a real data directory: each command does what it says, and bad input
//! exits non-zero with a message that names the problem and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn server(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("USHER_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn line_of(list: &Output, email: &str) -> String {
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .find(|l| l.starts_with(email))
        .unwrap_or_else(|| panic!("{email} not listed: {}", text(list)))
        .to_owned()
}

#[test]
fn users_are_created_listed_changed_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = server(
        d,
        &[
            "users",
            "create",
            "--email",
            "Gate.Lead@Example.com",
            "--password-stdin",
        ],
        Some("a long enough password\n"),
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let list = server(d, &["users", "list"], None);
    assert!(line_of(&list, "gate.lead@example.com").contains("staff"));
    assert!(line_of(&list, "gate.lead@example.com").contains("active"));

    let ok = server(
        d,
        &["users", "set-role", "gate.lead@example.com", "admin"],
        None,
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let ok = server(d, &["users", "disable", "gate.lead@example.com"], None);
    assert!(ok.status.success(), "{}", text(&ok));
    let list = server(d, &["users", "list"], None);
    let line = line_of(&list, "gate.lead@example.com");
    assert!(
        line.contains("admin") && line.contains("disabled"),
        "{line}"
    );
    let ok = server(d, &["users", "enable", "gate.lead@example.com"], None);
    assert!(ok.status.success());
    assert!(
        line_of(
            &server(d, &["users", "list"], None),
            "gate.lead@example.com"
        )
        .contains("active")
    );

    let reset = server(
        d,
        &["users", "reset-password", "gate.lead@example.com"],
        None,
    );
    assert!(reset.status.success(), "{}", text(&reset));
    let out = String::from_utf8_lossy(&reset.stdout);
    let password = out
        .split("new password for gate.lead@example.com: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the new password is printed");
    assert_eq!(password.len(), 20);

    // Bad input: non-zero, a message naming the problem, nothing changed.
    for (args, stdin, says) in [
        (
            vec!["users", "set-role", "nobody@example.com", "staff"],
            None,
            "no user with e-mail nobody@example.com",
        ),
        (
            vec!["users", "set-role", "gate.lead@example.com", "owner"],
            None,
            "owner",
        ),
        (
            vec![
                "users",
                "create",
                "--email",
                "short@example.com",
                "--password-stdin",
            ],
            Some("short\n"),
            "at least 12 characters",
        ),
        (
            vec![
                "users",
                "create",
                "--email",
                "not-an-email",
                "--password-stdin",
            ],
            Some("a long enough password\n"),
            "not an e-mail address",
        ),
        (
            vec![
                "users",
                "create",
                "--email",
                "gate.lead@example.com",
                "--password-stdin",
            ],
            Some("a long enough password\n"),
            "already exists",
        ),
        (
            vec!["users", "disable", "nobody@example.com"],
            None,
            "no user",
        ),
    ] {
        let o = server(d, &args, stdin);
        assert!(!o.status.success(), "{args:?} should fail: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let list = server(d, &["users", "list"], None);
    let rows = String::from_utf8_lossy(&list.stdout).lines().count();
    assert_eq!(rows, 2, "a header and the one user: {}", text(&list));
    assert!(line_of(&list, "gate.lead@example.com").contains("admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_on_one_event_is_granted_and_taken_away() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    // A server on the same data directory makes the event the grant names.
    let app = server::build(server::Settings::for_test(d.clone(), None))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let db = app.db().clone();
    let password = app.initial_admin_password.clone().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "admin@localhost", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap();
    let event: serde_json::Value = http
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(token)
        .json(
            &serde_json::json!({"name": "Expo", "starts_at": "2026-12-01T09:00:00Z",
                                  "ends_at": "2026-12-01T18:00:00Z"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = event["id"].as_str().unwrap().to_owned();

    let run = |args: Vec<String>, stdin: Option<&'static str>| {
        let d = d.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                server(&d, &args, stdin)
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let ok = run(
        args(&[
            "users",
            "create",
            "--email",
            "door@example.com",
            "--password-stdin",
        ]),
        Some("a long enough password\n"),
    )
    .await;
    assert!(ok.status.success(), "{}", text(&ok));
    let ok = run(
        args(&["users", "set-role", "door@example.com", "none"]),
        None,
    )
    .await;
    assert!(ok.status.success(), "{}", text(&ok));
    let ok = run(
        args(&[
            "users",
            "grant",
            "door@example.com",
            "--event",
            &event,
            "--role",
            "staff",
        ]),
        None,
    )
    .await;
    assert!(ok.status.success(), "{}", text(&ok));
    let list = run(args(&["users", "list"]), None).await;
    assert!(
        line_of(&list, "door@example.com").contains("none"),
        "{}",
        text(&list)
    );
    let user = server::store::users::by_email(&db, "door@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(user.events_only);
    let grants = server::store::users::grants(&db, user.id).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].event_id.to_string(), event);
    assert_eq!(grants[0].role, "staff");

    // Bad input names the problem and changes nothing.
    let unknown = uuid::Uuid::now_v7().to_string();
    for (a, says) in [
        (
            args(&[
                "users",
                "grant",
                "door@example.com",
                "--event",
                &unknown,
                "--role",
                "staff",
            ]),
            "no such event",
        ),
        (
            args(&[
                "users",
                "grant",
                "nobody@example.com",
                "--event",
                &event,
                "--role",
                "staff",
            ]),
            "no user with e-mail nobody@example.com",
        ),
        (
            args(&[
                "users",
                "grant",
                "door@example.com",
                "--event",
                &event,
                "--role",
                "owner",
            ]),
            "owner",
        ),
        (
            args(&["users", "revoke", "door@example.com", "--event", &unknown]),
            "no such grant",
        ),
    ] {
        let o = run(a.clone(), None).await;
        assert!(!o.status.success(), "{a:?} should fail: {}", text(&o));
        assert!(text(&o).contains(says), "{a:?}: {}", text(&o));
    }
    assert_eq!(
        server::store::users::grants(&db, user.id)
            .await
            .unwrap()
            .len(),
        1
    );

    let ok = run(
        args(&["users", "revoke", "door@example.com", "--event", &event]),
        None,
    )
    .await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        server::store::users::grants(&db, user.id)
            .await
            .unwrap()
            .is_empty()
    );

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
