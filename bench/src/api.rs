//! The organizer and gate calls the benchmarks set their scene with, over loopback HTTP.

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

/// A running server and an admin session on it.
pub struct Harness {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    password: String,
}

/// Sends a request, fails unless 2xx, and parses the JSON answer.
pub async fn expect_json(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    ensure!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(serde_json::from_slice(&bytes)?)
}

fn rfc3339(t: OffsetDateTime) -> anyhow::Result<String> {
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

/// The nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// How the generated participants are named: `Participant N` (one shared word), or a given
/// and a family name from small lists (searches then find a realistic handful).
#[derive(Clone, Copy)]
pub enum Names {
    Numbered,
    Realistic,
}

const GIVEN: [&str; 40] = [
    "Anna", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira",
    "Luca", "Maya", "Noah", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Victor",
    "Wen", "Ximena", "Yusuf", "Zoe", "Amir", "Bea", "Carlos", "Dana", "Emil", "Fatima", "Gil",
    "Hana", "Ivan", "Jade", "Kenji", "Lea", "Milan", "Nora",
];
const FAMILY: [&str; 50] = [
    "Kowalski",
    "Nguyen",
    "Schmidt",
    "Garcia",
    "Okafor",
    "Rossi",
    "Dubois",
    "Tanaka",
    "Silva",
    "Novak",
    "Larsen",
    "Haddad",
    "Murphy",
    "Ivanova",
    "Moreau",
    "Costa",
    "Fischer",
    "Khan",
    "Lopez",
    "Berg",
    "Horvat",
    "Yilmaz",
    "Jansen",
    "Petrov",
    "Santos",
    "Weber",
    "Ali",
    "Kim",
    "Bauer",
    "Popescu",
    "Fernandes",
    "Lindqvist",
    "Mensah",
    "Romano",
    "Sato",
    "Vargas",
    "Wagner",
    "Zhou",
    "Adeyemi",
    "Brennan",
    "Castillo",
    "Dahl",
    "Eriksen",
    "Fontaine",
    "Gomez",
    "Hoffmann",
    "Ibrahim",
    "Jovanovic",
    "Keller",
    "Lambert",
];

/// A name `Names::Realistic` gives participant `i`; about `rows / 2,000` share it.
pub fn realistic_name(i: usize) -> String {
    format!(
        "{} {} {}",
        GIVEN[i % GIVEN.len()],
        FAMILY[(i / GIVEN.len()) % FAMILY.len()],
        i
    )
}

/// The CSV of `rows` generated participants.
pub fn participants_csv(rows: usize, prefix: &str, names: Names) -> Vec<u8> {
    let mut csv = String::with_capacity(rows * 90 + 64);
    csv.push_str("external_id,name,email,ticket_type\n");
    for i in 0..rows {
        let name = match names {
            Names::Numbered => format!("Participant {i}"),
            Names::Realistic => realistic_name(i),
        };
        let kind = if i % 10 == 0 { "vip" } else { "standard" };
        csv.push_str(&format!(
            "{prefix}-{i:07},{name},p{i}.{prefix}@example.org,{kind}\n"
        ));
    }
    csv.into_bytes()
}

impl Harness {
    pub async fn login(base: &str, password: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?;
        let mut h = Self {
            base: base.to_owned(),
            token: String::new(),
            http,
            password: password.to_owned(),
        };
        h.relogin().await?;
        Ok(h)
    }

    /// A fresh access token (they live for minutes; the suite runs longer).
    pub async fn relogin(&mut self) -> anyhow::Result<()> {
        let login = expect_json(
            self.http
                .post(format!("{}/api/v1/auth/login", self.base))
                .json(&json!({"email": "admin@localhost", "password": self.password})),
        )
        .await?;
        self.token = login["access_token"]
            .as_str()
            .context("no access token")?
            .to_owned();
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A live event open now, so that every ticket is inside its validity window (a draft's
    /// check-ins are tests, which the merge skips).
    pub async fn create_event(&self, name: &str) -> anyhow::Result<String> {
        let now = OffsetDateTime::now_utc();
        let event = expect_json(
            self.http
                .post(self.url("/api/v1/events"))
                .bearer_auth(&self.token)
                .json(&json!({
                    "name": name,
                    "status": "live",
                    "starts_at": rfc3339(now - time::Duration::hours(1))?,
                    "ends_at": rfc3339(now + time::Duration::hours(23))?,
                })),
        )
        .await?;
        Ok(event["id"].as_str().context("event id")?.to_owned())
    }

    /// Imports a CSV of generated participants (tickets issued) through the import route.
    pub async fn import(&self, event: &str, csv: Vec<u8>, rows: usize) -> anyhow::Result<()> {
        let result = expect_json(
            self.http
                .post(self.url(&format!("/api/v1/events/{event}/participants/import")))
                .bearer_auth(&self.token)
                .header("content-type", "text/csv")
                .body(csv),
        )
        .await?;
        ensure!(
            result["created"].as_u64() == Some(rows as u64),
            "unexpected import result {result}"
        );
        Ok(())
    }

    /// The signed credential of every ticket of the event, by pages of 1,000.
    pub async fn credentials(&self, event: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.url(&format!("/api/v1/events/{event}/participants?limit=1000"));
            if let Some(c) = &cursor {
                url.push_str("&cursor=");
                url.push_str(c);
            }
            let page = expect_json(self.http.get(url).bearer_auth(&self.token)).await?;
            for p in page["items"].as_array().context("items")? {
                if let Some(c) = p["ticket"]["credential"].as_str() {
                    out.push(c.to_owned());
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// Creates an entry gate, enrolls it: (gate id, gate credential, next seq).
    pub async fn gate(&self, event: &str, name: &str) -> anyhow::Result<(Uuid, String, u64)> {
        let gate = expect_json(
            self.http
                .post(self.url(&format!("/api/v1/events/{event}/gates")))
                .bearer_auth(&self.token)
                .json(&json!({"name": name, "direction": "in"})),
        )
        .await?;
        let gate_id = gate["id"].as_str().context("gate id")?;
        let code = expect_json(
            self.http
                .post(self.url(&format!(
                    "/api/v1/events/{event}/gates/{gate_id}/enrollments"
                )))
                .bearer_auth(&self.token),
        )
        .await?;
        let enrolled = expect_json(
            self.http
                .post(self.url("/sync/v1/enroll"))
                .json(&json!({"code": code["code"], "device_name": name})),
        )
        .await?;
        Ok((
            Uuid::parse_str(enrolled["gate_id"].as_str().context("gate_id")?)?,
            enrolled["credential"]
                .as_str()
                .context("credential")?
                .to_owned(),
            enrolled["next_seq"].as_u64().unwrap_or(1),
        ))
    }
}
