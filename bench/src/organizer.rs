//! The organizer API: a crowd of clients on list, search and attendance; the cost of one page
//! as the event grows; walking a large event page by page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::Value;

use crate::api::{Harness, expect_json, percentile, realistic_name};

pub struct Crowd {
    pub clients: usize,
    pub requests: usize,
    pub errors: usize,
    /// The first error answers, for the report (status and body).
    pub first_errors: Vec<String>,
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// `clients` organizers (one connection each) for `secs` seconds, each in turn listing a page
/// of 50, searching a name and reading the attendance, as the console does on event day.
/// `rows` is how many participants the event has (the names searched exist).
pub async fn crowd(
    h: &Harness,
    event: &str,
    rows: usize,
    clients: usize,
    secs: u64,
) -> anyhow::Result<Crowd> {
    let token = Arc::new(h.token.clone());
    let base = Arc::new(format!("{}/api/v1/events/{event}", h.base));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (token, base) = (token.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(30))
                .build()?;
            let (mut lat, mut errors, mut first) = (Vec::new(), 0usize, Vec::new());
            let mut i = c;
            while Instant::now() < deadline {
                let url = match i % 3 {
                    0 => format!("{base}/participants?limit=50"),
                    1 => {
                        // A given name and a family name: a realistic handful of people.
                        let name = realistic_name((i * 7919) % rows);
                        let words: Vec<&str> = name.split(' ').take(2).collect();
                        format!("{base}/participants?limit=50&q={}+{}", words[0], words[1])
                    }
                    _ => format!("{base}/attendance"),
                };
                i += 1;
                let t = Instant::now();
                let outcome = client.get(&url).bearer_auth(token.as_str()).send().await;
                let ok = match outcome {
                    Ok(r) => {
                        let status = r.status();
                        let body = r.bytes().await.unwrap_or_default();
                        if !status.is_success() && first.len() < 3 {
                            first.push(format!(
                                "{status} {}",
                                String::from_utf8_lossy(&body[..body.len().min(160)])
                            ));
                        }
                        status.is_success()
                    }
                    Err(e) => {
                        if first.len() < 3 {
                            first.push(e.to_string());
                        }
                        false
                    }
                };
                lat.push(t.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            anyhow::Ok((lat, errors, first))
        }));
    }
    let (mut lat, mut errors, mut first_errors) = (Vec::new(), 0, Vec::new());
    for t in tasks {
        let (l, e, f) = t.await??;
        lat.extend(l);
        errors += e;
        if first_errors.len() < 3 {
            first_errors.extend(f);
        }
    }
    let wall = start.elapsed();
    lat.sort_unstable();
    Ok(Crowd {
        clients,
        requests: lat.len(),
        errors,
        first_errors,
        per_sec: lat.len() as f64 / wall.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
    })
}

/// The median time of one request over `n` tries, after one untimed.
pub async fn median_get(h: &Harness, url: &str, n: usize) -> anyhow::Result<Duration> {
    expect_json(h.http.get(url).bearer_auth(&h.token)).await?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = h.http.get(url).bearer_auth(&h.token).send().await?;
        ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        let _ = resp.bytes().await?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

/// One participants page of 1 and of 100, first and deep in the event (median of 30 each):
/// the slowest of the four medians.
pub async fn page_cost(h: &Harness, event: &str, rows: usize) -> anyhow::Result<Duration> {
    let first = h.url(&format!("/api/v1/events/{event}/participants"));
    // A cursor in the middle of the event: walk there by a few large pages.
    let step = (rows / 4).clamp(1, 1000);
    let mut cursor = String::new();
    for _ in 0..3 {
        let url = if cursor.is_empty() {
            format!("{first}?limit={step}")
        } else {
            format!("{first}?limit={step}&cursor={cursor}")
        };
        let page = expect_json(h.http.get(url).bearer_auth(&h.token)).await?;
        cursor = page["next_cursor"]
            .as_str()
            .context("a next page")?
            .to_owned();
    }
    let mut worst = Duration::ZERO;
    for limit in [1, 100] {
        for url in [
            format!("{first}?limit={limit}"),
            format!("{first}?limit={limit}&cursor={cursor}"),
        ] {
            worst = worst.max(median_get(h, &url, 30).await?);
        }
    }
    Ok(worst)
}

/// Walks `count` participants of the event by pages of 1,000: seconds.
pub async fn walk(h: &Harness, event: &str, count: usize) -> anyhow::Result<f64> {
    let first = h.url(&format!("/api/v1/events/{event}/participants?limit=1000"));
    let start = Instant::now();
    let (mut seen, mut cursor) = (0usize, None::<String>);
    while seen < count {
        let url = match &cursor {
            Some(c) => format!("{first}&cursor={c}"),
            None => first.clone(),
        };
        let page: Value = expect_json(h.http.get(url).bearer_auth(&h.token)).await?;
        seen += page["items"].as_array().context("items")?.len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ensure!(seen >= count, "the event has only {seen} participants");
    Ok(start.elapsed().as_secs_f64())
}
