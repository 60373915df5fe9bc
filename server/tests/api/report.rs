//! The event report against one hand-computed fixture: six participants of three ticket kinds
//! (VIP, Standard, none), two gates, twelve check-ins at chosen times (a rejection, an unknown
//! code, a re-entry, a duplicate admission, an undone exit). Every number expected below was
//! worked out by hand from that list (the working is in the comments); JSON, CSV and HTML must
//! each hold exactly these facts.

use std::collections::HashMap;

use serde_json::{Value, json};
use sync_protocol::Hlc;
use uuid::Uuid;

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::sync::{Gate, create_gate, enrollment_code, now_ms, push, serial};

backend_tests!(
    report_matches_the_hand_computed_fixture_in_every_format,
    participants_filter_and_attendance_count_by_ticket_type,
);

/// One expected fact: (scope, ticket type, section, subject, metric, value).
type Fact = (String, String, String, String, String, String);

fn fact(scope: &str, tt: &str, section: &str, subject: &str, metric: &str, value: &str) -> Fact {
    (
        scope.into(),
        tt.into(),
        section.into(),
        subject.into(),
        metric.into(),
        value.into(),
    )
}

const KINDS: [&str; 7] = [
    "duplicate_admission",
    "passback",
    "exit_without_entry",
    "late_revocation",
    "admitted_despite_known_revocation",
    "revoked_while_inside",
    "over_capacity",
];

/// A gate's expected line: name, zone, entries, exits, rejected, scans, median seconds.
type GateLine<'a> = (&'a str, &'a str, u32, u32, u32, u32, &'a str);

struct Expect<'a> {
    registered: u32,
    attended: u32,
    no_shows: u32,
    rate: &'a str,
    peak: (&'a str, u32),
    arrivals: &'a [(&'a str, u32)],
    gates: [GateLine<'a>; 2],
    conflicts: &'a [(&'a str, u32)],
}

fn summary_facts(out: &mut Vec<Fact>, scope: &str, tt: &str, e: &Expect) {
    let s =
        |out: &mut Vec<Fact>, m: &str, v: String| out.push(fact(scope, tt, "summary", "", m, &v));
    s(out, "registered", e.registered.to_string());
    s(out, "attended", e.attended.to_string());
    s(out, "no_shows", e.no_shows.to_string());
    s(out, "attendance_rate", e.rate.into());
    s(out, "peak_minute", e.peak.0.into());
    s(out, "peak_minute_arrivals", e.peak.1.to_string());
    for (start, n) in e.arrivals {
        out.push(fact(
            scope,
            tt,
            "arrivals",
            start,
            "arrivals",
            &n.to_string(),
        ));
    }
    for (name, zone, entries, exits, rejected, scans, median) in e.gates {
        for (m, v) in [
            ("zone", zone.to_string()),
            ("entries", entries.to_string()),
            ("exits", exits.to_string()),
            ("rejected", rejected.to_string()),
            ("scans", scans.to_string()),
            ("median_seconds_between_scans", median.to_string()),
        ] {
            out.push(fact(scope, tt, "gates", name, m, &v));
        }
    }
    for k in KINDS {
        let n = e
            .conflicts
            .iter()
            .find(|(kind, _)| *kind == k)
            .map_or(0, |(_, n)| *n);
        out.push(fact(scope, tt, "conflicts", k, "count", &n.to_string()));
    }
}

/// The fixture's expected facts, participants named P1..P6 (replaced by their ids).
fn expected() -> Vec<Fact> {
    let mut out = Vec::new();
    // Arrivals (first effective entry): P1 09:00:00, P3 09:01:30, P2 09:01:50, P4 09:10:40
    // (its 09:10:20 scan was rejected). Buckets 09:00 → 3, 09:05 → 0, 09:10 → 1; minute 09:01
    // has two. East scans 09:00:00, 09:01:30, 09:01:50, 09:03:00, 09:12:00, 09:12:30: gaps 90,
    // 20, 70, 540, 30 → median 70. West scans 09:04:00, 09:07:10, 09:10:20, 09:10:40, 09:13:00
    // (the undo record is not a scan): gaps 190, 190, 20, 140 → median (140 + 190) / 2 = 165.
    summary_facts(
        &mut out,
        "event",
        "",
        &Expect {
            registered: 6,
            attended: 4,
            no_shows: 2,
            rate: "0.6667",
            peak: ("2026-12-01T09:01:00Z", 2),
            arrivals: &[
                ("2026-12-01T09:00:00Z", 3),
                ("2026-12-01T09:05:00Z", 0),
                ("2026-12-01T09:10:00Z", 1),
            ],
            gates: [
                ("East door", "main", 3, 2, 1, 6, "70"),
                ("West door", "", 3, 0, 1, 5, "165"),
            ],
            conflicts: &[("duplicate_admission", 1)],
        },
    );
    // P6 has no ticket type and never came.
    summary_facts(
        &mut out,
        "ticket_type",
        "",
        &Expect {
            registered: 1,
            attended: 0,
            no_shows: 1,
            rate: "0",
            peak: ("", 0),
            arrivals: &[],
            gates: [
                ("East door", "main", 0, 0, 0, 0, ""),
                ("West door", "", 0, 0, 0, 0, ""),
            ],
            conflicts: &[],
        },
    );
    // Standard: P3, P4, P5 (P5 never came). Arrivals P3 09:01:30, P4 09:10:40: one each minute,
    // the earliest wins. East: P3 in 09:01:30, out 09:12:00 → one gap of 630. West: P4
    // rejected 09:10:20, in 09:10:40, out 09:13:00 (undone) → gaps 20, 140 → 80.
    summary_facts(
        &mut out,
        "ticket_type",
        "Standard",
        &Expect {
            registered: 3,
            attended: 2,
            no_shows: 1,
            rate: "0.6667",
            peak: ("2026-12-01T09:01:00Z", 1),
            arrivals: &[
                ("2026-12-01T09:00:00Z", 1),
                ("2026-12-01T09:05:00Z", 0),
                ("2026-12-01T09:10:00Z", 1),
            ],
            gates: [
                ("East door", "main", 1, 1, 0, 2, "630"),
                ("West door", "", 1, 0, 1, 3, "80"),
            ],
            conflicts: &[],
        },
    );
    // VIP: P1, P2. East: P1 in 09:00:00, P2 in 09:01:50, P1 out 09:03:00 → gaps 110, 70 → 90.
    // West: P1 in 09:04:00, P2 in 09:07:10 (P2 was inside: duplicate admission) → 190.
    summary_facts(
        &mut out,
        "ticket_type",
        "VIP",
        &Expect {
            registered: 2,
            attended: 2,
            no_shows: 0,
            rate: "1",
            peak: ("2026-12-01T09:00:00Z", 1),
            arrivals: &[("2026-12-01T09:00:00Z", 2)],
            gates: [
                ("East door", "main", 2, 1, 0, 3, "90"),
                ("West door", "", 2, 0, 0, 2, "190"),
            ],
            conflicts: &[("duplicate_admission", 1)],
        },
    );
    // Per participant: entries, exits, first admission, last exit.
    let people = [
        (
            "P1",
            "VIP",
            "Ana Lima",
            "2",
            "1",
            "2026-12-01T09:00:00Z",
            "2026-12-01T09:03:00Z",
        ),
        (
            "P2",
            "VIP",
            "Ben Okafor",
            "2",
            "0",
            "2026-12-01T09:01:50Z",
            "",
        ),
        (
            "P3",
            "Standard",
            "Cleo Park",
            "1",
            "1",
            "2026-12-01T09:01:30Z",
            "2026-12-01T09:12:00Z",
        ),
        (
            "P4",
            "Standard",
            "Dan Weiss",
            "1",
            "0",
            "2026-12-01T09:10:40Z",
            "",
        ),
        ("P5", "Standard", "Eve <b>O'Hara</b>", "0", "0", "", ""),
        ("P6", "", "Finn Berg", "0", "0", "", ""),
    ];
    for (p, tt, name, entries, exits, first, last) in people {
        let serial = format!("serial:{p}");
        let email = format!("{}@example.org", p.to_lowercase());
        for (m, v) in [
            ("external_id", format!("ext-{p}")),
            ("name", name.to_owned()),
            ("email", email),
            ("organization", String::new()),
            ("ticket_serial", serial),
            ("ticket_status", "valid".to_owned()),
            ("entries", entries.to_owned()),
            ("exits", exits.to_owned()),
            ("first_admission", first.to_owned()),
            ("last_exit", last.to_owned()),
        ] {
            out.push(fact("participant", tt, "participants", p, m, &v));
        }
    }
    out
}

/// Facts are equal when their text is, or when both values read as the same number (JSON
/// writes 70.0 where CSV writes 70).
fn same(a: &Fact, b: &Fact) -> bool {
    let key = |f: &Fact| {
        (
            f.0.clone(),
            f.1.clone(),
            f.2.clone(),
            f.3.clone(),
            f.4.clone(),
        )
    };
    key(a) == key(b)
        && (a.5 == b.5
            || matches!((a.5.parse::<f64>(), b.5.parse::<f64>()), (Ok(x), Ok(y)) if x == y))
}

#[track_caller]
fn assert_facts(format: &str, mut got: Vec<Fact>, want: &[Fact]) {
    let mut missing = Vec::new();
    for w in want {
        match got.iter().position(|g| same(g, w)) {
            Some(i) => {
                got.swap_remove(i);
            }
            None => missing.push(w.clone()),
        }
    }
    assert!(
        missing.is_empty() && got.is_empty(),
        "{format}: missing {missing:#?}\nunexpected {got:#?}"
    );
}

/// The JSON report read back as facts, following the documented mapping.
fn json_facts(r: &Value) -> Vec<Fact> {
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = Vec::new();
    let mut summary = |scope: &str, tt: &str, s: &Value| {
        for m in ["registered", "attended", "no_shows", "attendance_rate"] {
            out.push(fact(scope, tt, "summary", "", m, &text(&s[m])));
        }
        out.push(fact(
            scope,
            tt,
            "summary",
            "",
            "peak_minute",
            &text(&s["peak_minute"]["minute"]),
        ));
        let peak = if s["peak_minute"].is_null() {
            "0".into()
        } else {
            text(&s["peak_minute"]["arrivals"])
        };
        out.push(fact(
            scope,
            tt,
            "summary",
            "",
            "peak_minute_arrivals",
            &peak,
        ));
        for b in s["arrivals"].as_array().unwrap() {
            out.push(fact(
                scope,
                tt,
                "arrivals",
                &text(&b["start"]),
                "arrivals",
                &text(&b["arrivals"]),
            ));
        }
        for g in s["gates"].as_array().unwrap() {
            for m in [
                "zone",
                "entries",
                "exits",
                "rejected",
                "scans",
                "median_seconds_between_scans",
            ] {
                out.push(fact(scope, tt, "gates", &text(&g["name"]), m, &text(&g[m])));
            }
        }
        for c in s["conflicts"].as_array().unwrap() {
            out.push(fact(
                scope,
                tt,
                "conflicts",
                &text(&c["kind"]),
                "count",
                &text(&c["count"]),
            ));
        }
    };
    summary("event", "", &r["totals"]);
    for t in r["by_ticket_type"].as_array().unwrap() {
        summary("ticket_type", &text(&t["ticket_type"]), &t["summary"]);
    }
    for p in r["participants"].as_array().unwrap() {
        for m in [
            "external_id",
            "name",
            "email",
            "organization",
            "ticket_serial",
            "ticket_status",
            "entries",
            "exits",
            "first_admission",
            "last_exit",
        ] {
            out.push(fact(
                "participant",
                &text(&p["ticket_type"]),
                "participants",
                &text(&p["participant_id"]),
                m,
                &text(&p[m]),
            ));
        }
    }
    out
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

/// Every `<td data-fact="scope|type|section|subject|metric">value</td>` of the page.
fn html_facts(page: &str) -> Vec<Fact> {
    let mut out = Vec::new();
    for chunk in page.split("data-fact=\"").skip(1) {
        let (key, rest) = chunk.split_once('"').unwrap();
        let value = rest
            .strip_prefix('>')
            .unwrap()
            .split_once("</td>")
            .unwrap()
            .0;
        let key = html_unescape(key);
        let parts: Vec<&str> = key.split('|').collect();
        assert_eq!(parts.len(), 5, "{key}");
        out.push(fact(
            parts[0],
            parts[1],
            parts[2],
            parts[3],
            parts[4],
            &html_unescape(value),
        ));
    }
    out
}

async fn gate(app: &TestApp, event: &str, name: &str, zone: Option<&str>) -> Gate {
    let id = create_gate(app, event, name, zone).await;
    let code = enrollment_code(app, event, &id).await;
    let e = app
        .post(
            None,
            "/sync/v1/enroll",
            json!({"code": code, "device_name": name}),
        )
        .await
        .assert_status(201)
        .clone();
    Gate {
        id,
        credential: e["credential"].as_str().unwrap().to_string(),
        next_seq: e["next_seq"].as_u64().unwrap(),
    }
}

async fn report_matches_the_hand_computed_fixture_in_every_format(app: TestApp) {
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let event = app
        .post(
            Some(&app.admin),
            "/api/v1/events",
            json!({"name": "Report fixture", "venue": "Hall", "status": "live",
                   "starts_at": fmt(now - time::Duration::hours(1)),
                   "ends_at": fmt(now + time::Duration::hours(8))}),
        )
        .await
        .assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let people = [
        ("P1", Some("VIP"), "Ana Lima"),
        ("P2", Some("VIP"), "Ben Okafor"),
        ("P3", Some("Standard"), "Cleo Park"),
        ("P4", Some("Standard"), "Dan Weiss"),
        ("P5", Some("Standard"), "Eve <b>O'Hara</b>"),
        ("P6", None, "Finn Berg"),
    ];
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut serials: HashMap<&str, u64> = HashMap::new();
    for (label, tt, name) in people {
        let p = app
            .create_participant(
                &event,
                json!({"name": name, "email": format!("{}@example.org", label.to_lowercase()),
                       "external_id": format!("ext-{label}"), "ticket_type": tt}),
            )
            .await;
        ids.insert(label.to_owned(), p["id"].as_str().unwrap().to_owned());
        serials.insert(label, serial(&p));
    }
    let east = gate(&app, &event, "East door", Some("main")).await;
    let west = gate(&app, &event, "West door", None).await;

    // The check-ins, HLC in scan order so the merge sees them as the gates did.
    let t0 = now_ms() - 60_000;
    let scan = |gate: &Gate, seq: u64, who: Option<&str>, dir: &str, at: &str, hlc: u64| {
        json!({"id": Uuid::now_v7(), "seq": gate.next_seq + seq, "ticket_serial": who.map(|w| serials[w]),
               "code": null, "method": "qr", "direction": dir, "decision": "admit", "reason": null,
               "hlc": Hlc::new(t0 + hlc, 0).to_string(), "scanned_at": format!("2026-12-01T{at}Z"),
               "replica_cursor": 0, "operator_override": null})
    };
    let reject = |mut c: Value, reason: &str| {
        c["decision"] = json!("reject");
        c["reason"] = json!(reason);
        c
    };
    let mut unknown = reject(scan(&east, 5, None, "in", "09:12:30", 10), "unknown_code");
    unknown["method"] = json!("code");
    unknown["code"] = json!("ZZZZZZZZ");
    let east_scans = vec![
        scan(&east, 0, Some("P1"), "in", "09:00:00", 1),
        scan(&east, 1, Some("P3"), "in", "09:01:30", 2),
        scan(&east, 2, Some("P2"), "in", "09:01:50", 3),
        scan(&east, 3, Some("P1"), "out", "09:03:00", 4),
        scan(&east, 4, Some("P3"), "out", "09:12:00", 9),
        unknown,
    ];
    let p4_out = scan(&west, 4, Some("P4"), "out", "09:13:00", 11);
    let mut undo = scan(&west, 5, Some("P4"), "out", "09:13:05", 12);
    undo["undoes"] = p4_out["id"].clone();
    let west_scans = vec![
        scan(&west, 0, Some("P1"), "in", "09:04:00", 5),
        scan(&west, 1, Some("P2"), "in", "09:07:10", 6),
        reject(
            scan(&west, 2, Some("P4"), "in", "09:10:20", 7),
            "wrong_zone",
        ),
        scan(&west, 3, Some("P4"), "in", "09:10:40", 8),
        p4_out,
        undo,
    ];
    for (g, scans) in [(&east, east_scans), (&west, west_scans)] {
        let r = push(&app, g, scans).await.assert_status(200).clone();
        assert!(
            r["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["status"] == "stored"),
            "{r}"
        );
    }

    // The expected facts with the participants' real ids and serials.
    let want: Vec<Fact> = expected()
        .into_iter()
        .map(|mut f| {
            if f.2 == "participants" {
                if f.4 == "ticket_serial" {
                    f.5 = serials[&f.5["serial:".len()..]].to_string();
                }
                f.3 = ids[&f.3].clone();
            }
            f
        })
        .collect();

    let path = format!("/api/v1/events/{event}/report");
    let json = app
        .get(Some(&app.viewer), &path)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(json["event_id"], json!(event));
    assert_eq!(json["bucket_minutes"], json!(5));
    assert_eq!(json["totals"]["attendance_rate"], json!(0.6667));
    assert_facts("json", json_facts(&json), &want);

    let r = app
        .get(Some(&app.viewer), &format!("{path}?format=csv"))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/csv"), "{}", r.content_type);
    let mut reader = csv::Reader::from_reader(&r.bytes[..]);
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "scope",
            "ticket_type",
            "section",
            "subject",
            "metric",
            "value"
        ]
    );
    let csv_facts: Vec<Fact> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            fact(&r[0], &r[1], &r[2], &r[3], &r[4], &r[5])
        })
        .collect();
    assert_facts("csv", csv_facts, &want);

    let r = app
        .get(Some(&app.viewer), &format!("{path}?format=html"))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/html"),
        "{}",
        r.content_type
    );
    let page = String::from_utf8(r.bytes.clone()).unwrap();
    assert!(page.contains("@media print"));
    // Auto-escaped: the name's markup is text, not markup.
    assert!(!page.contains("<b>O"), "{page}");
    assert!(
        page.contains("Eve &lt;b&gt;O&#x27;Hara&lt;&#x2f;b&gt;"),
        "{page}"
    );
    assert_facts("html", html_facts(&page), &want);

    app.get(Some(&app.viewer), &format!("{path}?format=pdf"))
        .await
        .assert_problem(400, Some("format"));
    app.get(None, &path).await.assert_problem(401, None);
}

async fn participants_filter_and_attendance_count_by_ticket_type(app: TestApp) {
    let event = app.create_event("Types").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{event}"),
        json!({"status": "live"}),
    )
    .await
    .assert_status(200);
    let mut serials = Vec::new();
    for (name, tt) in [
        ("Ana", Some("VIP")),
        ("Ben", Some("VIP")),
        ("Cleo", Some("Standard")),
        ("Dan", None),
    ] {
        let p = app
            .create_participant(&event, json!({"name": name, "ticket_type": tt}))
            .await;
        serials.push(serial(&p));
    }
    let names = |body: &Value| -> Vec<String> {
        let mut v: Vec<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let list = |q: &'static str| {
        let app = &app;
        let event = event.clone();
        async move {
            app.get(
                Some(&app.viewer),
                &format!("/api/v1/events/{event}/participants?{q}"),
            )
            .await
            .assert_status(200)
            .clone()
        }
    };
    assert_eq!(names(&list("ticket_type=VIP").await), ["Ana", "Ben"]);
    assert_eq!(names(&list("ticket_type=Standard").await), ["Cleo"]);
    assert_eq!(names(&list("ticket_type=vip").await), Vec::<String>::new());
    assert_eq!(names(&list("ticket_type=VIP&q=ben").await), ["Ben"]);
    assert_eq!(names(&list("").await).len(), 4);

    // Ana comes in.
    let g = gate(&app, &event, "Door", None).await;
    let c = json!({"id": Uuid::now_v7(), "seq": g.next_seq, "ticket_serial": serials[0],
                   "code": null, "method": "qr", "direction": "in", "decision": "admit",
                   "reason": null, "hlc": Hlc::new(now_ms(), 0).to_string(),
                   "scanned_at": "2026-12-01T09:00:00Z", "replica_cursor": 0,
                   "operator_override": null});
    push(&app, &g, vec![c]).await.assert_status(200);
    let att = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/attendance"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(
        att["ticket_types"],
        json!([
            {"ticket_type": null, "registered": 1, "admitted": 0, "inside": 0},
            {"ticket_type": "Standard", "registered": 1, "admitted": 0, "inside": 0},
            {"ticket_type": "VIP", "registered": 2, "admitted": 1, "inside": 1},
        ])
    );
}
