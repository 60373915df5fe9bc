//! One table of admission cases — ticket state × presence × policy × direction × clock — run
//! through both places that decide: the gate agent (its `Gate`, in-process, against a replica
//! enrolled with the real `gate-agent enroll` and synced from the real server) and the server's
//! online redeem (`POST /api/v1/events/{event}/redeem` over loopback HTTP with a staff token).
//! Both must give every row the decision, reason and direction the shared rule
//! (`sync_protocol::decide`) prescribes.
//!
//! Everything is real: tickets are issued by the server (so signatures, key rings and windows
//! are the server's), event windows and ticket validity are set relative to the current time
//! for the clock rows, and presence is built by earlier movements through the same side (the
//! gate's own earlier scans; the server's earlier redeems). Each row has its own ticket and its
//! own pair of gates of the same configuration: one with the enrolled device (the gate side),
//! one without (the server side: staff may not redeem on a gate with an enrolled device). The
//! devices sync once, before any row runs, and never push: the two sides never see each other's
//! movements.
//!
//! On failure the whole table is printed, gate and server answers side by side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod e2e_support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e_support::*;
use gate_agent::decide::{Gate, ScanRequest};
use gate_agent::replica::Replica;
use gate_agent::sync::SyncEngine;
use reqwest::Method;
use serde_json::{Value, json};
use sync_protocol::decide::GRACE_SECONDS;
use sync_protocol::wire::Direction;
use sync_protocol::{ShortCode, SignedTicket};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

// ---------------------------------------------------------------- the table

/// Which event the row's gates belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    /// One check-in per ticket (the default settings).
    Main,
    /// `allow_multiple_checkins: true`.
    Multi,
}

/// A gate configuration (both gates of a row get the same).
#[derive(Debug, Clone, Copy)]
struct GateSpec {
    direction: &'static str,
    zone_mask: u16,
    allow_reentry: bool,
}

const TWO_WAY: GateSpec = GateSpec {
    direction: "both",
    zone_mask: 0,
    allow_reentry: false,
};
const REENTRY: GateSpec = GateSpec {
    allow_reentry: true,
    ..TWO_WAY
};
/// A VIP door: checks scope bit 2; the server issues tickets with scope 1.
const VIP: GateSpec = GateSpec {
    zone_mask: 0b10,
    ..TWO_WAY
};
const EXIT_ONLY: GateSpec = GateSpec {
    direction: "out",
    ..TWO_WAY
};
const ENTRY_ONLY: GateSpec = GateSpec {
    direction: "in",
    ..TWO_WAY
};

/// The row's ticket.
#[derive(Debug, Clone, Copy)]
enum TicketState {
    Valid,
    Revoked,
    /// Validity ended this many seconds before the rows run.
    EndedAgo(u32),
    /// Validity starts an hour after the rows run.
    NotYetValid,
    /// A valid ticket of another event.
    OtherEvent,
}

/// What is presented at the probe.
#[derive(Debug, Clone, Copy)]
enum Shown {
    /// The signed `U1:` text.
    Qr,
    /// The `U1:` text with one signed field changed.
    Forged,
    /// The ticket's short code, as printed.
    Code,
    /// The ticket's short code with one character mistyped.
    MistypedCode,
    /// A well-formed short code of no ticket.
    UnknownCode,
    /// Text that is no credential.
    Text(&'static str),
}

struct Row {
    name: &'static str,
    event: Ev,
    gate: GateSpec,
    ticket: TicketState,
    /// Movements before the probe, through the same side, with the same ticket's QR; each must
    /// be admitted. `None` is the gate's own direction.
    before: &'static [Option<Direction>],
    shown: Shown,
    /// The direction asked for at the probe.
    direction: Option<Direction>,
    /// (decision, reason, direction recorded).
    expect: (&'static str, Option<&'static str>, &'static str),
}

const IN: Option<Direction> = Some(Direction::In);
const OUT: Option<Direction> = Some(Direction::Out);
const GATES_WAY: Option<Direction> = None;

/// Admitted, moving `dir`.
const fn admit(dir: &'static str) -> (&'static str, Option<&'static str>, &'static str) {
    ("admit", None, dir)
}

/// Rejected for `reason`, moving `dir`.
const fn reject(
    reason: &'static str,
    dir: &'static str,
) -> (&'static str, Option<&'static str>, &'static str) {
    ("reject", Some(reason), dir)
}

/// The table: one line per row.
#[rustfmt::skip]
fn table() -> Vec<Row> {
    use Shown::*;
    use TicketState::*;
    let row = |name, event, gate, ticket, before, shown, direction, expect| Row {
        name, event, gate, ticket, before, shown, direction, expect,
    };
    let (main, multi) = (Ev::Main, Ev::Multi);
    vec![
        // The clock rows first: they hold only while the time since their tickets were issued
        // stays well inside the grace.
        row("ended 90 s ago (inside the 120 s grace)",        main,  TWO_WAY,    EndedAgo(90),     &[],                 Qr,                      GATES_WAY, admit("in")),
        row("ended 130 s ago (past the grace)",               main,  TWO_WAY,    EndedAgo(130),    &[],                 Qr,                      GATES_WAY, reject("expired", "in")),
        row("by code, ended 90 s ago",                        main,  TWO_WAY,    EndedAgo(90),     &[],                 Code,                    GATES_WAY, admit("in")),
        row("by code, ended 130 s ago",                       main,  TWO_WAY,    EndedAgo(130),    &[],                 Code,                    GATES_WAY, reject("expired", "in")),
        row("leaving with a ticket that ended a day ago",     main,  TWO_WAY,    EndedAgo(86_400), &[],                 Qr,                      OUT,       admit("out")),
        row("not yet valid (starts in an hour)",              main,  TWO_WAY,    NotYetValid,      &[],                 Qr,                      GATES_WAY, reject("not_yet_valid", "in")),
        row("valid ticket",                                   main,  TWO_WAY,    Valid,            &[],                 Qr,                      GATES_WAY, admit("in")),
        row("short code of a valid ticket",                   main,  TWO_WAY,    Valid,            &[],                 Code,                    GATES_WAY, admit("in")),
        row("revoked ticket",                                 main,  TWO_WAY,    Revoked,          &[],                 Qr,                      GATES_WAY, reject("revoked", "in")),
        row("short code of a revoked ticket",                 main,  TWO_WAY,    Revoked,          &[],                 Code,                    GATES_WAY, reject("revoked", "in")),
        row("leaving with a revoked ticket",                  main,  TWO_WAY,    Revoked,          &[],                 Qr,                      OUT,       admit("out")),
        row("wrong zone (VIP gate, general ticket)",          main,  VIP,        Valid,            &[],                 Qr,                      GATES_WAY, reject("wrong_zone", "in")),
        row("wrong zone, by short code",                      main,  VIP,        Valid,            &[],                 Code,                    GATES_WAY, reject("wrong_zone", "in")),
        row("another event's ticket",                         main,  TWO_WAY,    OtherEvent,       &[],                 Qr,                      GATES_WAY, reject("wrong_event", "in")),
        row("forged signature",                               main,  TWO_WAY,    Valid,            &[],                 Forged,                  GATES_WAY, reject("invalid_signature", "in")),
        row("mistyped short code",                            main,  TWO_WAY,    Valid,            &[],                 MistypedCode,            GATES_WAY, reject("unknown_code", "in")),
        row("unknown short code",                             main,  TWO_WAY,    Valid,            &[],                 UnknownCode,             GATES_WAY, reject("unknown_code", "in")),
        row("malformed text",                                 main,  TWO_WAY,    Valid,            &[],                 Text("hello world"),     GATES_WAY, reject("malformed", "in")),
        row("malformed U1: text",                             main,  TWO_WAY,    Valid,            &[],                 Text("U1:NOT-A-TICKET"), GATES_WAY, reject("malformed", "in")),
        row("already inside (entered here before)",           main,  TWO_WAY,    Valid,            &[GATES_WAY],        Qr,                      GATES_WAY, reject("already_inside", "in")),
        row("back after an exit, single-entry gate",          main,  TWO_WAY,    Valid,            &[GATES_WAY, OUT],   Qr,                      GATES_WAY, reject("reentry_not_allowed", "in")),
        row("back after an exit, re-entry gate",              main,  REENTRY,    Valid,            &[GATES_WAY, OUT],   Qr,                      GATES_WAY, admit("in")),
        row("inside, re-entry gate",                          main,  REENTRY,    Valid,            &[GATES_WAY],        Qr,                      GATES_WAY, reject("already_inside", "in")),
        row("inside, event allows multiple check-ins",        multi, TWO_WAY,    Valid,            &[GATES_WAY],        Qr,                      GATES_WAY, admit("in")),
        row("exit-only gate, no direction given",             main,  EXIT_ONLY,  Valid,            &[],                 Qr,                      GATES_WAY, admit("out")),
        row("exit-only gate, `in` requested",                 main,  EXIT_ONLY,  Valid,            &[],                 Qr,                      IN,        reject("wrong_direction", "in")),
        row("entry-only gate, `out` requested",               main,  ENTRY_ONLY, Valid,            &[],                 Qr,                      OUT,       reject("wrong_direction", "out")),
        row("exit-only gate, `in` requested, expired ticket", main,  EXIT_ONLY,  EndedAgo(86_400), &[],                 Qr,                      IN,        reject("expired", "in")),
    ]
}

// ---------------------------------------------------------------- setting the rows up

/// An answer: (decision, reason, direction), or why the row could not be run on that side.
type Answer = Result<(String, Option<String>, String), String>;

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("rfc3339")
}

/// A ticket as issued: its credential and short code.
#[derive(Debug, Clone)]
struct Issued {
    credential: String,
    short_code: String,
}

impl Issued {
    fn from_ticket(t: &Value) -> Self {
        Self {
            credential: t["credential"].as_str().expect("credential").to_owned(),
            short_code: t["short_code"].as_str().expect("short_code").to_owned(),
        }
    }
}

/// What a row needs on both sides.
struct Prepared {
    event: String,
    participant_event: String,
    participant: String,
    ticket: Issued,
    /// The server-side gate (no device).
    server_gate: String,
    /// The gate-side device's replica.
    device: Agent,
}

impl Prepared {
    fn replica(&self) -> PathBuf {
        self.device.dir.path().join("replica.db")
    }
}

async fn create_event(api: &Api, name: &str, settings: Value) -> String {
    let now = OffsetDateTime::now_utc();
    let body = api
        .call(
            Method::POST,
            "/api/v1/events",
            Some(json!({"name": name, "venue": "Hall A", "status": "live",
                "starts_at": rfc3339(now - time::Duration::hours(1)),
                "ends_at": rfc3339(now + time::Duration::hours(8)),
                "settings": settings})),
        )
        .await
        .expect_status(201);
    body["id"].as_str().expect("event id").to_owned()
}

async fn create_gate(api: &Api, event: &str, name: &str, spec: GateSpec) -> String {
    let body = api
        .call(
            Method::POST,
            &format!("/api/v1/events/{event}/gates"),
            Some(json!({"name": name, "direction": spec.direction,
                "zone": (spec.zone_mask != 0).then_some("VIP"),
                "zone_mask": spec.zone_mask, "allow_reentry": spec.allow_reentry})),
        )
        .await
        .expect_status(201);
    body["id"].as_str().expect("gate id").to_owned()
}

/// Reissues the participant's ticket with the given window (the old ticket is revoked).
async fn reissue(
    api: &Api,
    event: &str,
    participant: &str,
    from: OffsetDateTime,
    until: OffsetDateTime,
) -> Issued {
    let body = api
        .call(
            Method::POST,
            &format!("/api/v1/events/{event}/participants/{participant}/ticket"),
            Some(json!({"valid_from": rfc3339(from), "valid_until": rfc3339(until)})),
        )
        .await
        .expect_status(201);
    Issued::from_ticket(&body)
}

/// What is presented for `shown`, given the row's ticket.
fn presented(shown: Shown, ticket: &Issued) -> String {
    match shown {
        Shown::Qr => ticket.credential.clone(),
        Shown::Forged => {
            let mut t = SignedTicket::decode(&ticket.credential).expect("a U1: ticket");
            t.fields.scopes ^= 0x0100;
            t.encode()
        }
        Shown::Code => ticket.short_code.clone(),
        Shown::MistypedCode => {
            let mut chars: Vec<char> = ticket.short_code.chars().collect();
            chars[0] = if chars[0] == '0' { '1' } else { '0' };
            let typo: String = chars.into_iter().collect();
            assert!(
                ShortCode::parse(&typo).is_err(),
                "{typo} still passes its check character"
            );
            typo
        }
        Shown::UnknownCode => ShortCode::from_value(sync_protocol::short_code::MAX_VALUE - 4_242)
            .expect("a short code")
            .to_string(),
        Shown::Text(t) => t.to_owned(),
    }
}

fn dir_name(d: Option<Direction>) -> &'static str {
    d.map_or("gate's", Direction::as_str)
}

// ---------------------------------------------------------------- the two sides

/// The gate side: the row's device decides every movement and then the probe.
fn through_the_gate(p: &Prepared, row: &Row) -> Answer {
    let mut gate = Gate::new(Replica::open(&p.replica()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut scan = |text: &str, direction| {
        gate.scan(&ScanRequest {
            direction,
            ..ScanRequest::text(text)
        })
        .map_err(|e| format!("no decision: {e}"))
    };
    for &d in row.before {
        let o = scan(&p.ticket.credential, d)?;
        if o.decision.as_str() != "admit" {
            return Err(format!(
                "setup: movement {} was {} ({:?})",
                dir_name(d),
                o.decision,
                o.reason
            ));
        }
    }
    let o = scan(&presented(row.shown, &p.ticket), row.direction)?;
    Ok((
        o.decision.as_str().to_owned(),
        o.reason.map(|r| r.as_str().to_owned()),
        o.direction.as_str().to_owned(),
    ))
}

async fn redeem(api: &Api, p: &Prepared, credential: &str, direction: Option<Direction>) -> Answer {
    let mut body = json!({"credential": credential, "gate_id": p.server_gate});
    if let Some(d) = direction {
        body["direction"] = json!(d.as_str());
    }
    let r = api
        .call(
            Method::POST,
            &format!("/api/v1/events/{}/redeem", p.event),
            Some(body),
        )
        .await;
    if r.status != 200 {
        return Err(format!("redeem answered {}: {}", r.status, r.body));
    }
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Ok((
        text(&r.body["decision"]).unwrap_or_default(),
        text(&r.body["reason"]),
        text(&r.body["direction"]).unwrap_or_default(),
    ))
}

/// The server side: the row's device-less gate redeems every movement and then the probe.
async fn through_the_server(api: &Api, p: &Prepared, row: &Row) -> Answer {
    for &d in row.before {
        let (decision, reason, _) = redeem(api, p, &p.ticket.credential, d).await?;
        if decision != "admit" {
            return Err(format!(
                "setup: movement {} was {decision} ({reason:?})",
                dir_name(d)
            ));
        }
    }
    redeem(api, p, &presented(row.shown, &p.ticket), row.direction).await
}

// ---------------------------------------------------------------- the run

fn show(a: &Answer) -> String {
    match a {
        Ok((d, r, dir)) => match r {
            Some(r) => format!("{d} {r} ({dir})"),
            None => format!("{d} ({dir})"),
        },
        Err(e) => format!("ERROR {e}"),
    }
}

async fn run_table(backend: &str, db_url: &str, server_dir: &std::path::Path) {
    let server = Server::start(server_dir, db_url, free_port()).await;
    let password = server
        .initial_admin_password
        .clone()
        .expect("the first start creates an admin");
    let api = Api::login(&server.base, ADMIN_EMAIL, &password).await;
    let main = create_event(&api, "Decision table", json!({})).await;
    let multi = create_event(
        &api,
        "Decision table, multiple check-ins",
        json!({"allow_multiple_checkins": true}),
    )
    .await;
    let other = create_event(&api, "Decision table, another event", json!({})).await;

    // Every row's ticket and gates, then the devices' enrollment (each syncs its replica).
    let rows = table();
    let mut prepared = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let event = match row.event {
            Ev::Main => &main,
            Ev::Multi => &multi,
        };
        let participant_event = match row.ticket {
            TicketState::OtherEvent => &other,
            _ => event,
        };
        let person = api
            .create_participant(participant_event, &format!("Row {i} Guest"))
            .await;
        if let TicketState::Revoked = row.ticket {
            api.call(
                Method::POST,
                &format!(
                    "/api/v1/events/{participant_event}/participants/{}/ticket/revoke",
                    person.id
                ),
                Some(json!({"reason": "decision table"})),
            )
            .await
            .expect_status(200);
        }
        let ticket = api
            .get(&format!(
                "/api/v1/events/{participant_event}/participants/{}",
                person.id
            ))
            .await;
        let ticket = Issued::from_ticket(&ticket["ticket"]);
        assert_eq!(ticket.credential, person.credential);
        let device_gate = create_gate(&api, event, &format!("row {i} device"), row.gate).await;
        let server_gate = create_gate(&api, event, &format!("row {i} staff"), row.gate).await;
        let code = api.enrollment_code(event, &device_gate).await;
        let device = Agent::enroll(&format!("row-{i}"), &server.base, &code).await;
        assert_eq!(device.gate_id, device_gate);
        prepared.push(Prepared {
            event: event.clone(),
            participant_event: participant_event.clone(),
            participant: person.id,
            ticket,
            server_gate,
            device,
        });
    }

    // The clock rows' tickets, issued as late as possible, then one last sync of every device
    // (before any row runs: the devices never push what they decide below).
    let issued_at = Instant::now();
    let now = OffsetDateTime::now_utc();
    for (row, p) in rows.iter().zip(prepared.iter_mut()) {
        let window = match row.ticket {
            TicketState::EndedAgo(s) => Some((
                now - time::Duration::hours(30),
                now - time::Duration::seconds(i64::from(s)),
            )),
            TicketState::NotYetValid => Some((
                now + time::Duration::hours(1),
                now + time::Duration::hours(2),
            )),
            _ => None,
        };
        if let Some((from, until)) = window {
            p.ticket = reissue(&api, &p.participant_event, &p.participant, from, until).await;
        }
    }
    for p in &prepared {
        let engine = SyncEngine::new(Replica::open(&p.replica()).unwrap()).unwrap();
        engine.sync_once().await.expect("the device syncs");
    }

    // Both sides, row by row.
    let mut results: Vec<(Answer, Answer)> = Vec::with_capacity(rows.len());
    let mut clock_rows_done = None;
    for (row, p) in rows.iter().zip(&prepared) {
        let gate = through_the_gate(p, row);
        let server_side = through_the_server(&api, p, row).await;
        results.push((gate, server_side));
        if matches!(row.ticket, TicketState::EndedAgo(s) if s < GRACE_SECONDS + 60) {
            clock_rows_done = Some(issued_at.elapsed());
        }
    }
    // The 90 s rows test the grace only if they ran well inside it (30 s of margin).
    let clock_took = clock_rows_done.unwrap_or_default();
    assert!(
        clock_took < Duration::from_secs(25),
        "the clock rows ran {clock_took:?} after their tickets were issued: too late to test a \
         90 s-old end against the {GRACE_SECONDS} s grace"
    );

    // The table, and every row that is not what the rule prescribes.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "decision table on {backend}: gate agent vs server online redeem\n{:<48} | {:<32} | {:<34} | {:<34}",
        "row", "expected", "gate", "server"
    );
    let mut wrong = Vec::new();
    for (row, (gate, server_side)) in rows.iter().zip(&results) {
        let expected: Answer = Ok((
            row.expect.0.to_owned(),
            row.expect.1.map(str::to_owned),
            row.expect.2.to_owned(),
        ));
        let mark = match (gate == &expected, server_side == &expected) {
            (true, true) => "",
            (false, true) => "  <- gate",
            (true, false) => "  <- server",
            (false, false) => "  <- both",
        };
        if !mark.is_empty() {
            wrong.push(row.name);
        }
        let _ = writeln!(
            out,
            "{:<48} | {:<32} | {:<34} | {:<34}{mark}",
            row.name,
            show(&expected),
            show(gate),
            show(server_side)
        );
    }
    if wrong.is_empty() {
        eprintln!("{out}");
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows are not decided as the shared rule prescribes on both sides: {wrong:?}\n{out}",
        wrong.len(),
        rows.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_and_server_decide_every_row_alike_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("usher.db").display());
    run_table("SQLite", &url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_and_server_decide_every_row_alike_on_postgres() {
    let pg = PgDatabase::create("usher_table")
        .await
        .expect("a fresh PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    run_table("PostgreSQL", &pg.url, dir.path()).await;
}
