//! `server import` and `server export` on the data directory of a running server (real SQLite
//! file, the real binary): the import follows the API's rules and prints each row error as
//! `line N, field F: message`; the export writes the same bytes as the API's export; bad input
//! exits non-zero with a message that names the problem and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{Running, ok, site};
use serde_json::Value;

fn cli(data: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("USHER_MASTER_KEY")
        .output()
        .expect("run the server binary")
}

async fn run(data: &Path, args: &[&str]) -> Output {
    let data = data.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&data, &args)
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn participant_names(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    event: &str,
) -> Vec<String> {
    let v = ok(c
        .get(format!(
            "{base}/api/v1/events/{event}/participants?limit=1000"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap())
    .await;
    let mut names: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_follows_the_api_rules_and_export_writes_what_the_api_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Running::start(&data, None).await;
    let c = reqwest::Client::new();
    let s = site(&c, &srv.base, srv.password.as_deref().unwrap()).await;
    let event = s.event.as_str();

    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "name,email,company\n\
         Minji Kim,minji@example.com,Acme\n\
         \"=HYPERLINK(\"\"http://x/\"\")\",formula@example.com,@Corp\n\
         Bad Mail,not-an-address,Acme\n\
         Joon Park,joon@example.com,-Dash\n",
    )
    .unwrap();
    let file = csv.to_str().unwrap();

    // One bad row: all-or-nothing refuses, prints the row error, writes nothing.
    let o = run(&data, &["import", "--event", event, file]).await;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("line 4, field email: "),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("nothing was imported"),
        "{}",
        stderr(&o)
    );
    assert!(
        participant_names(&c, &srv.base, &s.token, event)
            .await
            .is_empty()
    );

    // A dry run with --partial counts what would happen and still writes nothing.
    let o = run(
        &data,
        &["import", "--event", event, file, "--partial", "--dry-run"],
    )
    .await;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("dry run"), "{}", stdout(&o));
    assert!(stdout(&o).contains("3 created"), "{}", stdout(&o));
    assert!(
        participant_names(&c, &srv.base, &s.token, event)
            .await
            .is_empty()
    );

    // --partial writes the valid rows while the server runs, and still prints the bad one.
    let o = run(&data, &["import", "--event", event, file, "--partial"]).await;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("3 created"), "{}", stdout(&o));
    assert!(stdout(&o).contains("3 ticket(s) issued"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("line 4, field email: "),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        participant_names(&c, &srv.base, &s.token, event).await,
        ["=HYPERLINK(\"http://x/\")", "Joon Park", "Minji Kim"]
    );

    // Importing the same file again matches by e-mail: nothing new.
    let o = run(&data, &["import", "--event", event, file, "--partial"]).await;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("0 created"), "{}", stdout(&o));
    assert!(stdout(&o).contains("3 unchanged"), "{}", stdout(&o));

    // Bad input: each exits non-zero, names the problem, and changes nothing.
    let missing = dir.path().join("missing.csv");
    let o = run(
        &data,
        &["import", "--event", event, missing.to_str().unwrap()],
    )
    .await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot open"), "{}", stderr(&o));
    let unknown = uuid::Uuid::now_v7().to_string();
    let o = run(&data, &["import", "--event", &unknown, file]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("no event with id {unknown}")),
        "{}",
        stderr(&o)
    );
    let nameless = dir.path().join("nameless.csv");
    std::fs::write(&nameless, "email,phone\na@example.com,1\n").unwrap();
    let o = run(
        &data,
        &["import", "--event", event, nameless.to_str().unwrap()],
    )
    .await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("line 1, field name: "),
        "{}",
        stderr(&o)
    );
    let o = run(&data, &["import", "--event", "not-a-uuid", file]).await;
    assert!(!o.status.success());
    assert_eq!(
        participant_names(&c, &srv.base, &s.token, event)
            .await
            .len(),
        3
    );

    // Export: the same bytes as the API's CSV, formula cells escaped; the same JSON.
    let out = dir.path().join("out.csv");
    let o = run(
        &data,
        &[
            "export",
            "--event",
            event,
            "--columns",
            "name,email,organization",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let written = std::fs::read_to_string(&out).unwrap();
    let api = c
        .get(format!(
            "{}/api/v1/events/{event}/exports/participants?columns=name,email,organization",
            srv.base
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(written, api);
    assert!(
        written.starts_with("name,email,organization\n"),
        "{written}"
    );
    assert!(
        written.contains("\"'=HYPERLINK(\"\"http://x/\"\")\",formula@example.com,'@Corp\n"),
        "{written}"
    );
    assert!(
        written.contains("Joon Park,joon@example.com,'-Dash\n"),
        "{written}"
    );

    let o = run(&data, &["export", "--event", event, "--format", "json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let cli_json: Value = serde_json::from_slice(&o.stdout).unwrap();
    let api_json: Value = ok(c
        .get(format!(
            "{}/api/v1/events/{event}/exports/participants?format=json",
            srv.base
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(cli_json, api_json);
    assert_eq!(cli_json.as_array().unwrap().len(), 3);

    let o = run(
        &data,
        &["export", "--event", event, "--checkins", "--format", "json"],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        Value::Array(vec![])
    );

    let o = run(
        &data,
        &["export", "--event", event, "--columns", "name,shoe_size"],
    )
    .await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("columns: unknown column \"shoe_size\""),
        "{}",
        stderr(&o)
    );
    let o = run(&data, &["export", "--event", event, "--format", "xlsx"]).await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("format"), "{}", stderr(&o));
    let o = run(&data, &["export", "--event", &unknown]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("no event with id {unknown}")),
        "{}",
        stderr(&o)
    );

    srv.stop().await;
}

/// Peak resident memory (`VmHWM`, kB) of a finished child, read from `/proc` while it runs.
fn run_measuring_peak(data: &Path, args: &[&str]) -> (Output, u64) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("USHER_MASTER_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the server binary");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), peak)
}

fn people_csv(path: &Path, rows: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "external_id,name,email,company,note").unwrap();
    for i in 0..rows {
        writeln!(
            out,
            "M-{i},Person Number {i},person.{i}@example.org,Company {},Needs a seat near the door",
            i % 97
        )
        .unwrap();
    }
    out.flush().unwrap();
}

/// A file five times longer peaks at about the same memory: the keys every row is checked against
/// and the replication changes stay in the database's temporary store, not in the process, and
/// rows are written in groups of at most 25,000 (both files are past that plateau). The import
/// used to keep every row's changes and keys until its commit: +148 MB of peak RSS for the
/// 120,000 extra rows; now +11 to +20 MB (allocator slack); the bound is 40 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_times_longer_import_peaks_at_about_the_same_memory() {
    const SMALL: usize = 30_000;
    const LARGE: usize = 150_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Running::start(&data, None).await;
    let c = reqwest::Client::new();
    let s = site(&c, &srv.base, srv.password.as_deref().unwrap()).await;
    let second = ok(c
        .post(format!("{}/api/v1/events", srv.base))
        .bearer_auth(&s.token)
        .json(
            &serde_json::json!({"name": "Second", "starts_at": "2026-12-02T09:00:00Z",
                                  "ends_at": "2026-12-02T18:00:00Z"}),
        )
        .send()
        .await
        .unwrap())
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut peaks = Vec::new();
    for (event, rows) in [(s.event.clone(), SMALL), (second, LARGE)] {
        let file = dir.path().join(format!("people-{rows}.csv"));
        people_csv(&file, rows);
        let (data, file) = (data.clone(), file.to_str().unwrap().to_owned());
        let (o, peak_kb) = tokio::task::spawn_blocking(move || {
            run_measuring_peak(&data, &["import", "--event", &event, &file])
        })
        .await
        .unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains(&format!("{rows} created")),
            "{}",
            stdout(&o)
        );
        assert!(
            stdout(&o).contains(&format!("{rows} ticket(s) issued")),
            "{}",
            stdout(&o)
        );
        eprintln!("import of {rows} rows: peak RSS {} MB", peak_kb / 1024);
        peaks.push(peak_kb);
    }
    assert!(
        peaks[1] < peaks[0] + 40 * 1024,
        "peak RSS {} kB for {LARGE} rows against {} kB for {SMALL}",
        peaks[1],
        peaks[0]
    );
    srv.stop().await;
}
