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
