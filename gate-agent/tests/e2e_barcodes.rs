//! End to end: an Eventbrite attendee export imported through the organizer API, then the shop's
//! own barcodes scanned at a real `gate-agent`: an attending row's barcode admits its holder, a
//! "Not Attending" row's barcode is `revoked`, and neither barcode is stored in plain text in the
//! server's database or the gate's replica.
//!
//! Real processes, real HTTP over loopback, real PostgreSQL; see `e2e_support` for the fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod e2e_support;

use std::time::Duration;

use e2e_support::*;

/// Three rows in Eventbrite's attendee summary layout (header copied from the fixture in
/// `testdata/csv/`): two attending, one not attending.
fn eventbrite_export() -> String {
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/csv/eventbrite_attendee_summary.csv"
    ))
    .unwrap();
    let header = fixture.lines().next().unwrap();
    let row = |order: u64, first: &str, attendee: u64, barcode: &str, status: &str| {
        format!(
            "{order},2026-03-01 10:00:00,,{first},Shop,,{mail}@example.org,1,General,{attendee},\
             {barcode},Shop,{first},{mail}@example.org,,,,,,Eventbrite Completed,USD,25.00,1.99,\
             1.99,0.99,{status},,,,\r\n",
            mail = first.to_lowercase()
        )
    };
    let mut csv = format!("{header}\r\n");
    csv.push_str(&row(
        1000000101,
        "Amara",
        2000000101,
        "3000000000000101",
        "Attending",
    ));
    csv.push_str(&row(
        1000000102,
        "Bruno",
        2000000102,
        "3000000000000102",
        "Attending",
    ));
    csv.push_str(&row(
        1000000103,
        "Chiara",
        2000000103,
        "3000000000000103",
        "Not Attending",
    ));
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_barcode_admits_at_a_real_gate_and_a_cancelled_ones_is_revoked() {
    let pg = PgDatabase::create("usher_e2e_barcodes")
        .await
        .expect("a fresh PostgreSQL database");
    let server_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(server_dir.path(), &pg.url, free_port()).await;
    let password = server.initial_admin_password.clone().expect("admin");
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let event = api.create_event("Barcodes e2e").await;

    let resp = api
        .client
        .post(format!(
            "{}/api/v1/events/{event}/participants/import",
            server.base
        ))
        .bearer_auth(&api.token)
        .header("content-type", "text/csv")
        .body(eventbrite_export())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let summary: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(summary["created"], 3, "{summary}");
    assert_eq!(summary["cancelled"], 1, "{summary}");
    assert_eq!(summary["barcodes"], 3, "{summary}");
    let people = api
        .list_all(&format!("/api/v1/events/{event}/participants"))
        .await;
    let serial_of = |name: &str| {
        let p = people
            .iter()
            .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(name)))
            .unwrap_or_else(|| panic!("{name} in {people:?}"));
        (
            p["ticket"]["serial"].as_u64().unwrap(),
            p["ticket"]["status"].clone(),
        )
    };
    let (amara, amara_status) = serial_of("Amara");
    let (chiara, chiara_status) = serial_of("Chiara");
    assert_eq!(amara_status, "valid");
    assert_eq!(chiara_status, "revoked");

    let gate = api.create_gate(&event, "Main").await;
    let mut agent = Agent::enroll(
        "main",
        &server.base,
        &api.enrollment_code(&event, &gate).await,
    )
    .await;
    agent.start();
    let head = server.head(&event).await;
    poll(
        "the agent's replica to reach the server's head",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let s = agent.status().await;
            match s["replica_cursor"].as_u64() {
                Some(c) if c >= head => Ok(()),
                _ => Err(format!("head {head}, status {s}")),
            }
        },
    )
    .await;

    let line = agent.scan("3000000000000101").await;
    assert_decision(&line, "admit", None, amara);
    let line = agent.scan(" 3000000000000103 ").await;
    assert_decision(&line, "reject", Some("revoked"), chiara);
    // A barcode the shop never issued stays what it was: not a credential of this event.
    let line = agent.scan("3000000000000999").await;
    assert_eq!(line["decision"], "reject", "{line}");
    assert_eq!(line["reason"], "malformed", "{line}");
    agent.assert_running();

    // Neither the replica nor the server's tables hold a barcode as text.
    let replica = std::fs::read(agent.dir.path().join("replica.db")).unwrap();
    let needle = b"3000000000000101";
    assert!(
        !replica.windows(needle.len()).any(|w| w == needle),
        "the replica holds the barcode in plain text"
    );
    let dump = std::process::Command::new("pg_dump")
        .arg(&pg.url)
        .arg("--data-only")
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("ticket_barcodes"),
        "the dump has the barcode table"
    );
    assert!(
        !dump.contains("3000000000000101"),
        "the server's database holds the barcode in plain text"
    );
    drop(agent);
    server.stop().await;
}
