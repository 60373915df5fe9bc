//! CSV import benchmark (DESIGN §7: 100,000 rows into PostgreSQL in ≤ 3 s).
//!
//! Starts the real server on a fresh PostgreSQL database (admin URL from
//! `server::testing::admin_url`: `USHER_TEST_DATABASE_URL`, else the local server, else a private
//! cluster), logs in, creates an event and POSTs a generated 100,000-row CSV through the HTTP
//! route, then re-imports the same file (all unchanged). Prints rows/s. Run: `cargo bench -p server --bench import`
//! (`USHER_BENCH_ROWS` changes the row count).

use std::time::Instant;

use serde_json::{Value, json};

fn csv(rows: usize) -> Vec<u8> {
    let mut out = String::with_capacity(rows * 110);
    out.push_str("external_id,name,email,phone,organization,ticket type\n");
    let orgs = [
        "Acme, Inc.",
        "Umbrella GmbH",
        "서울대학교",
        "",
        "Globex \"Intl\"",
    ];
    for i in 0..rows {
        let org = orgs[i % orgs.len()];
        let org = if org.contains([',', '"']) {
            format!("\"{}\"", org.replace('"', "\"\""))
        } else {
            org.to_owned()
        };
        out.push_str(&format!(
            "BENCH-{i:07},Participant {i} 김,participant.{i}@example.org,+82-10-{:04}-{:04},{org},{}\n",
            i % 10_000,
            (i * 7) % 10_000,
            if i % 10 == 0 { "VIP" } else { "General" }
        ));
    }
    out.into_bytes()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: usize = std::env::var("USHER_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // Dropped (with the database) when the run ends, whatever its result.
    let db = server::testing::PgDatabase::create("usher_bench").await?;
    run(rows, db.url.clone()).await
}

async fn run(rows: usize, db_url: String) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let settings = server::Settings::for_test(dir.path().to_path_buf(), Some(db_url));
    let app = server::build(settings).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let password = app.initial_admin_password.clone().unwrap_or_default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::var_os("USHER_BENCH_LOG").is_some() {
        server::telemetry::init();
    }
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let event: Value = client
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(&token)
        .json(&json!({"name": "Bench", "starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-01T18:00:00Z"}))
        .send()
        .await?
        .json()
        .await?;
    let event_id = event["id"].as_str().unwrap_or_default().to_owned();
    let body = csv(rows);
    println!(
        "import benchmark: {rows} rows, {:.1} MB of CSV, PostgreSQL",
        body.len() as f64 / 1e6
    );

    for (label, expect_created) in [("first import", rows), ("re-import (all unchanged)", 0)] {
        let start = Instant::now();
        let resp = client
            .post(format!(
                "{base}/api/v1/events/{event_id}/participants/import"
            ))
            .bearer_auth(&token)
            .header("content-type", "text/csv")
            .body(body.clone())
            .send()
            .await?;
        let status = resp.status();
        let result: Value = resp.json().await?;
        let elapsed = start.elapsed();
        anyhow::ensure!(status.is_success(), "import failed: {status} {result}");
        anyhow::ensure!(
            result["created"].as_u64() == Some(expect_created as u64),
            "unexpected result {result}"
        );
        println!(
            "{label:>28}: {:>7.3} s  {:>9.0} rows/s  (created {}, updated {}, unchanged {}, tickets {})",
            elapsed.as_secs_f64(),
            rows as f64 / elapsed.as_secs_f64(),
            result["created"],
            result["updated"],
            result["unchanged"],
            result["tickets_issued"],
        );
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}
