//! The operations kit in `deploy/` against the real thing: Debian's `prometheus` scrapes a
//! running server and a running gate agent and its API returns their series; every metric the
//! Grafana dashboard and the alert rules query is on one of the two `/metrics`; `promtool` accepts
//! the rules; `systemd-analyze verify` accepts the gate agent's unit (the server's is checked in
//! `server/tests/ops_kit.rs`).
//!
//! Needs `prometheus` (with `promtool`) and `systemd-analyze` installed (`.ci/run` installs them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod e2e_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e_support::*;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Metric names a PromQL expression uses (ours only: `usher_*`, `http_*`).
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if (word.starts_with("usher_") || word.starts_with("http_")) && !word.is_empty() {
                out.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
}

/// The names of the series in a Prometheus text exposition.
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd} ({e}): install it (apt-get install prometheus systemd)")
        })
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let rules = deploy().join("prometheus/usher-rules.yml");
    let out = run("promtool", &["check", "rules", rules.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_accepts_the_gate_agent_unit() {
    // The unit names /usr/local/bin/gate-agent; verify it with that path pointing at the binary
    // this build produced (systemd-analyze checks that the command exists).
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(agent_bin(), bin.join("gate-agent")).unwrap();
    let unit = std::fs::read_to_string(deploy().join("systemd/usher-gate-agent.service")).unwrap();
    assert!(unit.contains("Restart=on-failure") && unit.contains("StateDirectoryMode=0700"));
    assert!(unit.contains("User=usher-gate"), "runs as its own user");
    let path = dir.path().join("usher-gate-agent.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/", &format!("{}/", bin.display())),
    )
    .unwrap();
    let out = run("systemd-analyze", &["verify", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_server_and_a_gate_and_the_dashboard_queries_real_series() {
    // A server, an event with a gate, a running gate agent with its screen (and /metrics).
    let pg = PgDatabase::create("usher_ops").await.expect("database");
    let server_dir = tempfile::tempdir().unwrap();
    let server = Server::start(server_dir.path(), &pg.url, free_port()).await;
    let password = server.initial_admin_password.clone().unwrap();
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let event = api.create_event("Ops kit").await;
    let guest = api.create_participant(&event, "Guest").await;
    let gate = api.create_gate(&event, "North").await;
    let mut agent = Agent::enroll(
        "north",
        &server.base,
        &api.enrollment_code(&event, &gate).await,
    )
    .await;
    let ui_port = free_port();
    agent.start_with_ui(Some(ui_port));
    assert_decision(
        &agent.scan(&guest.credential).await,
        "admit",
        None,
        guest.serial,
    );
    poll(
        "the admission reaches the server",
        Duration::from_secs(60),
        Duration::from_millis(100),
        async || {
            let n = api.checkins(&event).await.len();
            if n == 1 {
                Ok(())
            } else {
                Err(format!("{n} check-ins"))
            }
        },
    )
    .await;

    // Prometheus, scraping both every second.
    let prom_dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: ['{rules}']\n\
         scrape_configs:\n\
         - job_name: usher-server\n  static_configs: [{{targets: ['{server}']}}]\n\
         - job_name: usher-gate\n  static_configs: [{{targets: ['127.0.0.1:{ui_port}']}}]\n",
        rules = deploy().join("prometheus/usher-rules.yml").display(),
        server = server.base.trim_start_matches("http://"),
    );
    let config_path = prom_dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus (apt-get install prometheus)");
    let prom = format!("http://127.0.0.1:{prom_port}");
    let client = reqwest::Client::new();
    let query = |q: String| {
        let client = client.clone();
        let prom = prom.clone();
        async move {
            let r = client
                .get(format!("{prom}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            v["data"]["result"].as_array().cloned()
        }
    };
    // Both targets up, and the series of both in Prometheus's own storage.
    let t0 = Instant::now();
    poll(
        "prometheus scrapes both targets",
        Duration::from_secs(90),
        Duration::from_millis(250),
        async || {
            let up = query("up == 1".into()).await;
            match up {
                Some(up) if up.len() == 2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    for (expr, what) in [
        (
            "usher_gate_decisions_total{result=\"admit\"}".to_owned(),
            "the gate's admission",
        ),
        (
            format!("usher_movements_total{{gate=\"{gate}\",direction=\"in\"}}"),
            "the merged admission by gate",
        ),
        ("usher_event_inside".to_owned(), "the server's occupancy"),
        ("http_requests_total".to_owned(), "the server's requests"),
    ] {
        let (series, _) = poll(
            what,
            Duration::from_secs(60),
            Duration::from_millis(250),
            async || match query(expr.clone()).await {
                Some(r) if !r.is_empty() => Ok(r),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
        let value: f64 = series[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{expr} = {value}");
    }
    println!(
        "prometheus scraped both targets and returned their series {:.1} s after it started",
        t0.elapsed().as_secs_f64()
    );

    // Every series the dashboard and the rules query is exposed by the server or the gate.
    let server_text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gate_text = client
        .get(format!("http://127.0.0.1:{ui_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let available: BTreeSet<String> = exposed(&server_text)
        .into_iter()
        .chain(exposed(&gate_text))
        .collect();
    let mut wanted = BTreeSet::new();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/usher-event-day.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            metric_names(target["expr"].as_str().unwrap(), &mut wanted);
        }
    }
    let rules = std::fs::read_to_string(deploy().join("prometheus/usher-rules.yml")).unwrap();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        metric_names(line, &mut wanted);
    }
    assert!(wanted.len() >= 12, "{wanted:?}");
    let missing: Vec<&String> = wanted.iter().filter(|n| !available.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried by the dashboard or the rules but on no /metrics: {missing:?}"
    );
    prometheus.kill().await.ok();
    server.stop().await;
}
