//! The sync side over real HTTP: enrollment, pulls, pushes merged with the fold, conflicts,
//! revocations, redeem, live streams — once on SQLite and once on PostgreSQL.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use sync_protocol::Hlc;
use uuid::Uuid;

use crate::backend_tests;
use crate::helpers::{Resp, TestApp};

/// Unix ms now.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

pub(crate) async fn exec(db: &server::Db, sql: &'static str) {
    match db {
        server::Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        server::Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
    }
    .unwrap();
}

pub(crate) async fn count(db: &server::Db, sql: &'static str) -> i64 {
    match db {
        server::Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        server::Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
    }
    .unwrap()
}

pub(crate) struct Gate {
    pub(crate) id: String,
    pub(crate) credential: String,
    pub(crate) next_seq: u64,
}

/// An event whose ticket window covers now, with `n` participants holding tickets.
pub(crate) async fn live_event(app: &TestApp, n: usize) -> (String, Vec<Value>) {
    event_in(app, n, "live").await
}

/// An event with this status running now, with `n` participants holding tickets.
pub(crate) async fn event_in(app: &TestApp, n: usize, status: &str) -> (String, Vec<Value>) {
    let ev = app.create_event_running_now("Live", status).await;
    let id = ev["id"].as_str().unwrap().to_string();
    let people: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("Person {i}"), "email": format!("p{i}@example.org")}))
        .collect();
    let created = app
        .post(
            Some(&app.staff),
            &format!("/api/v1/events/{id}/participants"),
            json!(people),
        )
        .await
        .assert_status(201)
        .clone();
    let items = created
        .as_array()
        .cloned()
        .or_else(|| created["items"].as_array().cloned())
        .expect("created participants");
    (id, items)
}

/// A gate with no device enrolled (what staff redeem on).
async fn plain_gate(app: &TestApp, event: &str, name: &str) -> Gate {
    Gate {
        id: create_gate(app, event, name, None).await,
        credential: String::new(),
        next_seq: 1,
    }
}

/// A one-time enrollment code for the gate.
pub(crate) async fn enrollment_code(app: &TestApp, event: &str, gate_id: &str) -> String {
    app.post_empty(
        Some(&app.admin),
        &format!("/api/v1/events/{event}/gates/{gate_id}/enrollments"),
    )
    .await
    .assert_status(201)["code"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A two-way gate allowing re-entry; its id.
pub(crate) async fn create_gate(
    app: &TestApp,
    event: &str,
    name: &str,
    zone: Option<&str>,
) -> String {
    let g = app
        .post(
            Some(&app.admin),
            &format!("/api/v1/events/{event}/gates"),
            json!({"name": name, "direction": "both", "zone": zone, "allow_reentry": true}),
        )
        .await
        .assert_status(201)
        .clone();
    g["id"].as_str().unwrap().to_string()
}

pub(crate) async fn new_gate(app: &TestApp, event: &str, name: &str, zone: Option<&str>) -> Gate {
    let gid = create_gate(app, event, name, zone).await;
    let code = enrollment_code(app, event, &gid).await;
    let e = app
        .post(
            None,
            "/sync/v1/enroll",
            json!({"code": code, "device_name": name}),
        )
        .await
        .assert_status(201)
        .clone();
    assert_eq!(e["gate_id"], json!(gid));
    assert_eq!(e["event_id"], json!(event));
    Gate {
        id: gid,
        credential: e["credential"].as_str().unwrap().to_string(),
        next_seq: e["next_seq"].as_u64().unwrap(),
    }
}

pub(crate) fn serial(p: &Value) -> u64 {
    p["ticket"]["serial"]
        .as_u64()
        .expect("participant has a ticket")
}

pub(crate) fn credential(p: &Value) -> String {
    p["ticket"]["credential"].as_str().unwrap().to_string()
}

/// A check-in as a gate would push it.
pub(crate) fn checkin(seq: u64, serial: u64, dir: &str, t_ms: u64, cursor: u64) -> Value {
    json!({"id": Uuid::now_v7(), "seq": seq, "ticket_serial": serial, "code": null,
           "method": "qr", "direction": dir, "decision": "admit", "reason": null,
           "hlc": Hlc::new(t_ms, 0).to_string(), "scanned_at": "2026-11-25T10:00:00Z",
           "replica_cursor": cursor, "operator_override": null})
}

pub(crate) async fn push(app: &TestApp, gate: &Gate, checkins: Vec<Value>) -> Resp {
    app.send(
        app.client
            .post(app.url("/sync/v1/checkins"))
            .bearer_auth(&gate.credential)
            .json(&json!({"gate_id": gate.id, "checkins": checkins})),
    )
    .await
}

pub(crate) async fn pull(app: &TestApp, gate: &Gate, query: &str) -> Resp {
    app.send(
        app.client
            .get(app.url(&format!("/sync/v1/changes?{query}")))
            .bearer_auth(&gate.credential),
    )
    .await
}

async fn conflicts(app: &TestApp, event: &str, query: &str) -> Vec<Value> {
    app.get(
        Some(&app.viewer),
        &format!("/api/v1/events/{event}/conflicts?{query}"),
    )
    .await
    .assert_status(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

pub(crate) async fn checkin_count(app: &TestApp, event: &str) -> usize {
    app.get(
        Some(&app.viewer),
        &format!("/api/v1/events/{event}/checkins?limit=1000"),
    )
    .await
    .assert_status(200)["items"]
        .as_array()
        .unwrap()
        .len()
}

backend_tests!(
    enrollment_codes_work_once_for_one_credential,
    pulls_page_the_change_log_without_gaps_or_repeats,
    long_polls_return_when_a_change_commits,
    two_gates_admitting_one_ticket_in_any_interleaving_give_one_conflict,
    every_row_of_the_merge_table,
    revocations_late_known_and_while_inside,
    malformed_checkins_are_acknowledged_as_invalid_without_blocking,
    gate_credentials_are_bound_to_their_event,
    concurrent_redeems_admit_a_ticket_exactly_once,
    conflicts_are_filtered_and_resolved_with_an_audit_trail,
    the_dashboard_stream_shows_admissions,
    a_deactivated_gate_loses_access,
    attendance_counts_per_gate_and_zone,
    deleting_an_event_removes_its_checkins_and_presence,
    report_csv_cells_that_look_like_formulas_stay_text,
    exports_give_each_participants_check_in_facts_and_the_whole_log,
    large_batches_merge_like_small_ones_and_retry_as_duplicates,
    maintained_counters_follow_every_kind_of_write,
    arrivals_count_effective_entries_per_scan_minute,
);

async fn enrollment_codes_work_once_for_one_credential(app: TestApp) {
    let (event, _) = live_event(&app, 1).await;
    let g = app
        .post(
            Some(&app.admin),
            &format!("/api/v1/events/{event}/gates"),
            json!({"name": "N"}),
        )
        .await
        .assert_status(201)
        .clone();
    let gid = g["id"].as_str().unwrap();
    let code = enrollment_code(&app, &event, gid).await;
    app.post(None, "/sync/v1/enroll", json!({"code": code}))
        .await
        .assert_problem(422, Some("device_name"));
    app.post(
        None,
        "/sync/v1/enroll",
        json!({"code": code, "device_name": "  "}),
    )
    .await
    .assert_problem(422, Some("device_name"));
    // Typed in lower case with the dash dropped: still the same code.
    let typed = code.replace('-', "").to_lowercase();
    let first = app
        .post(
            None,
            "/sync/v1/enroll",
            json!({"code": typed, "device_name": "kiosk-1"}),
        )
        .await
        .assert_status(201)
        .clone();
    let cred = first["credential"].as_str().unwrap();
    assert!(cred.starts_with("ugc_") && cred.len() > 40);
    assert_eq!(first["next_seq"], 1);
    assert!(
        first["server_time"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    // One time only.
    app.post(
        None,
        "/sync/v1/enroll",
        json!({"code": code, "device_name": "kiosk-2"}),
    )
    .await
    .assert_problem(401, None);
    // The credential works; a made-up one does not.
    let ok = app
        .send(
            app.client
                .get(app.url("/sync/v1/changes"))
                .bearer_auth(cred),
        )
        .await;
    ok.assert_status(200);
    app.send(
        app.client
            .get(app.url("/sync/v1/changes"))
            .bearer_auth("ugc_nope"),
    )
    .await
    .assert_problem(401, None);
    app.get(None, "/sync/v1/changes")
        .await
        .assert_problem(401, None);
    // An expired code is refused.
    let code2 = app
        .post(
            Some(&app.admin),
            &format!("/api/v1/events/{event}/gates/{gid}/enrollments"),
            json!({"ttl_seconds": 60}),
        )
        .await
        .assert_status(201)["code"]
        .as_str()
        .unwrap()
        .to_string();
    exec(
        &app.db,
        "UPDATE enrollment_codes SET expires_at = 0 WHERE used_at IS NULL",
    )
    .await;
    app.post(
        None,
        "/sync/v1/enroll",
        json!({"code": code2, "device_name": "late"}),
    )
    .await
    .assert_problem(401, None);
    // A second device enrolled for the gate replaces the first and continues its sequence.
    let gate = Gate {
        id: gid.to_string(),
        credential: cred.to_string(),
        next_seq: 1,
    };
    push(
        &app,
        &gate,
        vec![
            checkin(1, 1, "in", now_ms(), 0),
            checkin(2, 1, "out", now_ms() + 1, 0),
        ],
    )
    .await
    .assert_status(200);
    let code3 = enrollment_code(&app, &event, gid).await;
    let second = app
        .post(
            None,
            "/sync/v1/enroll",
            json!({"code": code3, "device_name": "kiosk-2"}),
        )
        .await
        .assert_status(201)
        .clone();
    assert_eq!(second["next_seq"], 3);
    app.send(
        app.client
            .get(app.url("/sync/v1/changes"))
            .bearer_auth(cred),
    )
    .await
    .assert_problem(401, None);
    // Capabilities name the protocol versions; a foreign version is refused, naming them.
    let caps = app
        .get(None, "/sync/v1/capabilities")
        .await
        .assert_status(200)
        .clone();
    assert_eq!(caps["protocol_versions"], json!([1]));
    let r = app
        .send(
            app.client
                .get(app.url("/sync/v1/changes"))
                .bearer_auth(second["credential"].as_str().unwrap())
                .header("usher-protocol", "7"),
        )
        .await;
    r.assert_problem(400, Some("usher-protocol"));
    assert!(
        r.body["detail"].as_str().unwrap().contains("accepts 1"),
        "{}",
        r.body
    );
}

async fn pulls_page_the_change_log_without_gaps_or_repeats(app: TestApp) {
    let (event, people) = live_event(&app, 30).await;
    let gate = new_gate(&app, &event, "North", None).await;
    let mut cursor = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = pull(&app, &gate, &format!("after={cursor}&limit=7")).await;
        let body = r.assert_status(200).clone();
        let changes = body["changes"].as_array().unwrap();
        assert!(changes.len() <= 7);
        for c in changes {
            seen.push(c["change_seq"].as_u64().unwrap());
            // Every change parses as the wire type.
            let _: sync_protocol::wire::Change = serde_json::from_value(c.clone()).unwrap();
        }
        pages += 1;
        cursor = body["next"].as_u64().unwrap();
        if !body["more"].as_bool().unwrap() {
            break;
        }
    }
    assert!(pages >= 5);
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no change twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending");
    // 30 tickets, the signing key and the gate's configuration.
    let all = app.changes(&event, 0).await;
    assert_eq!(seen.len(), all.len());
    assert!(all.len() >= 32);
    let tickets: HashSet<u64> = all
        .iter()
        .filter_map(|c| match &c.data {
            sync_protocol::wire::ChangeData::Ticket(t) => Some(t.serial),
            _ => None,
        })
        .collect();
    for p in &people {
        assert!(tickets.contains(&serial(p)));
    }
    // Caught up: an empty page that keeps the cursor.
    let body = pull(&app, &gate, &format!("after={cursor}"))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(body["changes"], json!([]));
    assert_eq!(body["next"], json!(cursor));
    // Compressed on request.
    // (reqwest decompresses and drops the header unless told not to.)
    let plain = reqwest::Client::builder()
        .no_gzip()
        .no_zstd()
        .build()
        .unwrap();
    let raw = plain
        .get(app.url("/sync/v1/changes?after=0"))
        .bearer_auth(&gate.credential)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-encoding"], "gzip");
    // Bad parameters name themselves.
    pull(&app, &gate, "after=-1")
        .await
        .assert_problem(400, Some("after"));
    // Another event's id is forbidden.
    let (other, _) = live_event(&app, 1).await;
    pull(&app, &gate, &format!("event={other}"))
        .await
        .assert_problem(403, None);
    pull(&app, &gate, &format!("event={event}"))
        .await
        .assert_status(200);
}

async fn long_polls_return_when_a_change_commits(app: TestApp) {
    let (event, _) = live_event(&app, 1).await;
    let gate = new_gate(&app, &event, "North", None).await;
    let head = pull(&app, &gate, "after=0&limit=10000")
        .await
        .assert_status(200)["next"]
        .as_u64()
        .unwrap();
    let started = std::time::Instant::now();
    let query = format!("after={head}&wait=20");
    let waiting = pull(&app, &gate, &query);
    let writer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.create_participant(&event, json!({"name": "Late arrival"}))
            .await
    };
    let (r, _) = tokio::join!(waiting, writer);
    let body = r.assert_status(200).clone();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "long poll woke up"
    );
    assert!(!body["changes"].as_array().unwrap().is_empty());
    // With nothing new, it waits (bounded) and returns empty.
    let next = body["next"].as_u64().unwrap();
    let t = std::time::Instant::now();
    let body = pull(&app, &gate, &format!("after={next}&wait=1"))
        .await
        .assert_status(200)
        .clone();
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(body["changes"], json!([]));
}

async fn two_gates_admitting_one_ticket_in_any_interleaving_give_one_conflict(app: TestApp) {
    let (event, people) = live_event(&app, 8).await;
    let a = new_gate(&app, &event, "A", None).await;
    let b = new_gate(&app, &event, "B", None).await;
    let t0 = now_ms();
    let (mut sa, mut sb) = (a.next_seq, b.next_seq);
    // Each scenario uses its own ticket; A's scan is the earlier one.
    for (i, scenario) in ["ab", "ba", "a-a-b", "b-a-b-a", "concurrent", "batch-retry"]
        .iter()
        .enumerate()
    {
        let s = serial(&people[i]);
        let ca = checkin(sa, s, "in", t0 + 10 * i as u64, 0);
        let cb = checkin(sb, s, "in", t0 + 10 * i as u64 + 5, 0);
        sa += 1;
        sb += 1;
        match *scenario {
            "ab" => {
                push(&app, &a, vec![ca.clone()]).await.assert_status(200);
                push(&app, &b, vec![cb.clone()]).await.assert_status(200);
            }
            "ba" => {
                push(&app, &b, vec![cb.clone()]).await.assert_status(200);
                push(&app, &a, vec![ca.clone()]).await.assert_status(200);
            }
            "a-a-b" => {
                push(&app, &a, vec![ca.clone()]).await.assert_status(200);
                push(&app, &a, vec![ca.clone()]).await.assert_status(200);
                push(&app, &b, vec![cb.clone()]).await.assert_status(200);
            }
            "b-a-b-a" => {
                for _ in 0..2 {
                    push(&app, &b, vec![cb.clone()]).await.assert_status(200);
                    push(&app, &a, vec![ca.clone()]).await.assert_status(200);
                }
            }
            "concurrent" => {
                let (ra, rb) = tokio::join!(
                    push(&app, &a, vec![ca.clone()]),
                    push(&app, &b, vec![cb.clone()])
                );
                ra.assert_status(200);
                rb.assert_status(200);
            }
            _ => {
                // A duplicated batch, retried concurrently with the other gate.
                let (r1, r2, r3) = tokio::join!(
                    push(&app, &b, vec![cb.clone()]),
                    push(&app, &a, vec![ca.clone()]),
                    push(&app, &a, vec![ca.clone()])
                );
                for r in [r1, r2, r3] {
                    r.assert_status(200);
                }
            }
        }
        let again = push(&app, &a, vec![ca.clone()])
            .await
            .assert_status(200)
            .clone();
        assert_eq!(again["results"][0]["status"], "duplicate", "{scenario}");
        assert_eq!(again["results"][0]["outcome"], "inside", "{scenario}");
        let found: Vec<Value> = conflicts(&app, &event, "kind=duplicate_admission")
            .await
            .into_iter()
            .filter(|c| c["ticket_serial"] == json!(s))
            .collect();
        assert_eq!(found.len(), 1, "{scenario}: {found:?}");
        assert_eq!(
            found[0]["checkin_ids"],
            json!([ca["id"], cb["id"]]),
            "{scenario}"
        );
        assert_eq!(found[0]["gate_ids"], json!([a.id, b.id]), "{scenario}");
        let log = app
            .get(
                Some(&app.viewer),
                &format!("/api/v1/events/{event}/checkins?ticket_serial={s}"),
            )
            .await
            .assert_status(200)
            .clone();
        assert_eq!(
            log["items"].as_array().unwrap().len(),
            2,
            "{scenario}: stored once each"
        );
    }
    // The canonical admission is the earliest, whatever arrived first.
    let attendance = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/attendance"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(attendance["inside"], 6);
    assert_eq!(
        conflicts(&app, &event, "").await.len(),
        6,
        "nothing but the six duplicates"
    );
}

async fn every_row_of_the_merge_table(app: TestApp) {
    let (event, people) = live_event(&app, 4).await;
    let a = new_gate(&app, &event, "A", None).await;
    let b = new_gate(&app, &event, "B", None).await;
    let t = now_ms();
    let (s0, s1, s2) = (serial(&people[0]), serial(&people[1]), serial(&people[2]));
    let mut seq = a.next_seq;
    let mut next = || {
        seq += 1;
        seq - 1
    };
    // entry, outside → admitted; exit, inside → outside; entry again (same gate) → admitted.
    let r = push(
        &app,
        &a,
        vec![
            checkin(next(), s0, "in", t, 0),
            checkin(next(), s0, "out", t + 1, 0),
            checkin(next(), s0, "in", t + 2, 0),
        ],
    )
    .await
    .assert_status(200)
    .clone();
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "stored")
    );
    assert_eq!(r["results"][2]["outcome"], "inside");
    assert_eq!(r["acked_through_seq"], json!(a.next_seq + 2));
    // entry, inside, same gate → passback.
    let r = push(&app, &a, vec![checkin(next(), s0, "in", t + 3, 0)])
        .await
        .assert_status(200)
        .clone();
    assert_eq!(r["results"][0]["conflicts"], json!(["passback"]));
    // entry, inside, other gate → duplicate_admission.
    let r = push(&app, &b, vec![checkin(b.next_seq, s0, "in", t + 4, 0)])
        .await
        .assert_status(200)
        .clone();
    assert_eq!(r["results"][0]["conflicts"], json!(["duplicate_admission"]));
    // exit, outside → exit_without_entry.
    let r = push(&app, &a, vec![checkin(next(), s1, "out", t + 5, 0)])
        .await
        .assert_status(200)
        .clone();
    assert_eq!(r["results"][0]["conflicts"], json!(["exit_without_entry"]));
    assert_eq!(r["results"][0]["outcome"], "outside");
    // A rejected scan is logged but moves nobody.
    let mut rej = checkin(next(), s2, "in", t + 6, 0);
    rej["decision"] = json!("reject");
    rej["reason"] = json!("wrong_zone");
    let r = push(&app, &a, vec![rej]).await.assert_status(200).clone();
    assert_eq!(r["results"][0]["outcome"], "outside");
    // An undo takes a mistaken admission back.
    let adm = checkin(next(), s2, "in", t + 7, 0);
    let mut undo = checkin(next(), s2, "in", t + 8, 0);
    undo["undoes"] = adm["id"].clone();
    let r = push(&app, &a, vec![adm, undo])
        .await
        .assert_status(200)
        .clone();
    assert_eq!(r["results"][1]["outcome"], "outside");
    let kinds: Vec<String> = conflicts(&app, &event, "")
        .await
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["duplicate_admission", "exit_without_entry", "passback"]
    );
    // Gates learn presence through the change log.
    let changes = app.changes(&event, 0).await;
    assert!(changes.iter().any(|c| matches!(&c.data,
        sync_protocol::wire::ChangeData::Presence(p) if p.serial == s0 && p.inside && p.entries == 2)));
}

async fn revoke(app: &TestApp, event: &str, p: &Value) -> Value {
    let pid = p["id"].as_str().unwrap();
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants/{pid}/ticket/revoke"),
        json!({"reason": "refund"}),
    )
    .await
    .assert_status(200)
    .clone()
}

async fn revocations_late_known_and_while_inside(app: TestApp) {
    let (event, people) = live_event(&app, 3).await;
    let a = new_gate(&app, &event, "A", None).await;
    // Admitted, then revoked while inside.
    let s0 = serial(&people[0]);
    push(&app, &a, vec![checkin(a.next_seq, s0, "in", now_ms(), 0)])
        .await
        .assert_status(200);
    let before = app.changes(&event, 0).await.last().unwrap().change_seq;
    revoke(&app, &event, &people[0]).await;
    let found = conflicts(&app, &event, "kind=revoked_while_inside").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["ticket_serial"], json!(s0));
    // Revoked; a gate that had not yet pulled the revocation admits: late_revocation.
    let s1 = serial(&people[1]);
    revoke(&app, &event, &people[1]).await;
    let head = app.changes(&event, 0).await.last().unwrap().change_seq;
    let later = now_ms() + 2_000;
    let r = push(
        &app,
        &a,
        vec![checkin(a.next_seq + 1, s1, "in", later, before)],
    )
    .await
    .assert_status(200)
    .clone();
    assert_eq!(r["results"][0]["conflicts"], json!(["late_revocation"]));
    // Revoked; a gate that had it (cursor at the head) admits anyway: known revocation.
    let s2 = serial(&people[2]);
    revoke(&app, &event, &people[2]).await;
    let head2 = app.changes(&event, 0).await.last().unwrap().change_seq;
    assert!(head2 > head);
    let r = push(
        &app,
        &a,
        vec![checkin(a.next_seq + 2, s2, "in", later + 1, head2)],
    )
    .await
    .assert_status(200)
    .clone();
    assert_eq!(
        r["results"][0]["conflicts"],
        json!(["admitted_despite_known_revocation"])
    );
    assert_eq!(
        r["results"][0]["outcome"], "inside",
        "admissions are never taken back"
    );
}

async fn malformed_checkins_are_acknowledged_as_invalid_without_blocking(app: TestApp) {
    let (event, people) = live_event(&app, 2).await;
    let a = new_gate(&app, &event, "A", None).await;
    let s = serial(&people[0]);
    let good1 = checkin(a.next_seq, s, "in", now_ms(), 0);
    let mut bad = checkin(a.next_seq + 1, s, "in", now_ms() + 1, 0);
    bad["decision"] = json!("reject"); // a rejection without a reason
    let mut worse = checkin(a.next_seq + 2, s, "in", now_ms() + 2, 0);
    worse["method"] = json!("telepathy");
    let good2 = checkin(a.next_seq + 3, serial(&people[1]), "in", now_ms() + 3, 0);
    let r = push(&app, &a, vec![good1, bad, worse, good2])
        .await
        .assert_status(200)
        .clone();
    let statuses: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["stored", "invalid", "invalid", "stored"]);
    assert!(
        r["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    assert!(
        r["results"][2]["error"]
            .as_str()
            .unwrap()
            .contains("telepathy")
    );
    assert_eq!(
        r["acked_through_seq"],
        json!(a.next_seq + 3),
        "invalid ones keep their seq"
    );
    // A seq reused by a different check-in is refused, not merged.
    let clash = checkin(a.next_seq, serial(&people[1]), "out", now_ms() + 4, 0);
    let r = push(&app, &a, vec![clash]).await.assert_status(200).clone();
    assert_eq!(r["results"][0]["status"], "invalid");
    assert_eq!(checkin_count(&app, &event).await, 4);
    // Too big a batch is refused as a whole.
    let many: Vec<Value> = (0..5_001)
        .map(|i| checkin(100 + i, s, "in", 1, 0))
        .collect();
    push(&app, &a, many)
        .await
        .assert_problem(422, Some("checkins"));
}

async fn gate_credentials_are_bound_to_their_event(app: TestApp) {
    let (event_a, people_a) = live_event(&app, 1).await;
    let (event_b, people_b) = live_event(&app, 1).await;
    let ga = new_gate(&app, &event_a, "A", None).await;
    let gb = new_gate(&app, &event_b, "B", None).await;
    // Pushing as another gate.
    let r = app
        .send(
            app.client
                .post(app.url("/sync/v1/checkins"))
                .bearer_auth(&ga.credential)
                .json(&json!({"gate_id": gb.id, "checkins": []})),
        )
        .await;
    r.assert_problem(403, None);
    // Pulling another event.
    pull(&app, &ga, &format!("event={event_b}"))
        .await
        .assert_problem(403, None);
    // Redeeming at another event.
    let r = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/events/{event_b}/redeem")))
                .bearer_auth(&ga.credential)
                .json(&json!({"credential": credential(&people_b[0]), "gate_id": gb.id})),
        )
        .await;
    r.assert_problem(403, None);
    // A gate only ever sees its own event's tickets.
    let mine = pull(&app, &ga, "after=0&limit=10000")
        .await
        .assert_status(200)
        .clone();
    let serials: Vec<u64> = mine["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "ticket")
        .map(|c| c["data"]["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(serials, vec![serial(&people_a[0])]);
    // Its own event is fine.
    let r = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/events/{event_a}/redeem")))
                .bearer_auth(&ga.credential)
                .json(&json!({"credential": credential(&people_a[0]), "gate_id": ga.id})),
        )
        .await;
    assert_eq!(r.assert_status(200)["decision"], "admit");
}

async fn concurrent_redeems_admit_a_ticket_exactly_once(app: TestApp) {
    let (event, people) = live_event(&app, 3).await;
    let g = plain_gate(&app, &event, "Side door").await;
    let path = format!("/api/v1/events/{event}/redeem");
    let cred = credential(&people[0]);
    let body = json!({"credential": cred, "gate_id": g.id});
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let req = app
            .client
            .post(app.url(&path))
            .bearer_auth(&app.staff)
            .json(&body);
        tasks.push(async move { req.send().await.unwrap().json::<Value>().await.unwrap() });
    }
    let results = futures_util::future::join_all(tasks).await;
    let admits = results.iter().filter(|r| r["decision"] == "admit").count();
    assert_eq!(admits, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r["decision"] == "reject")
            .all(|r| r["reason"] == "already_inside")
    );
    assert_eq!(
        results.iter().find(|r| r["decision"] == "admit").unwrap()["name"],
        "Person 0"
    );
    // The same reasons as a gate.
    let redeem = |credential: String, direction: &'static str| {
        let req = app
            .client
            .post(app.url(&path))
            .bearer_auth(&app.staff)
            .json(&json!({"credential": credential, "gate_id": g.id, "direction": direction}));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(
        redeem("U1:GARBAGE".into(), "in").await["reason"],
        "malformed"
    );
    let mut tampered = cred.clone();
    tampered.replace_range(20..21, if &cred[20..21] == "A" { "B" } else { "A" });
    let r = redeem(tampered, "in").await;
    assert!(
        matches!(
            r["reason"].as_str(),
            Some("invalid_signature" | "malformed")
        ),
        "{r}"
    );
    let code = people[1]["ticket"]["short_code"]
        .as_str()
        .unwrap()
        .to_lowercase();
    let r = redeem(code.clone(), "in").await;
    assert_eq!(
        (r["decision"].clone(), r["ticket_serial"].clone()),
        (json!("admit"), json!(serial(&people[1])))
    );
    assert_eq!(redeem(code, "in").await["reason"], "already_inside");
    assert_eq!(redeem(cred.clone(), "out").await["decision"], "admit");
    assert_eq!(
        redeem(cred, "in").await["decision"],
        "admit",
        "re-entry after exit"
    );
    // A revoked ticket is refused by its (locked) ticket row, with the holder's name shown.
    revoke(&app, &event, &people[2]).await;
    let r = redeem(credential(&people[2]), "in").await;
    assert_eq!(
        (
            r["decision"].clone(),
            r["reason"].clone(),
            r["name"].clone()
        ),
        (json!("reject"), json!("revoked"), json!("Person 2")),
        "{r}"
    );
    // Stored as check-ins of the gate, dense seq.
    let log = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/checkins?gate_id={}", g.id),
        )
        .await
        .assert_status(200)
        .clone();
    let mut seqs: Vec<i64> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_i64().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    // A gate with an enrolled device numbers its own check-ins: staff may not redeem on it
    // (the seqs would collide with the device's offline scans), the device itself may.
    let kiosk = new_gate(&app, &event, "Kiosk", None).await;
    let kiosk_body = json!({"credential": credential(&people[1]), "gate_id": kiosk.id,
                            "direction": "out"});
    app.post(Some(&app.staff), &path, kiosk_body.clone())
        .await
        .assert_problem(422, Some("gate_id"));
    let r = app
        .send(
            app.client
                .post(app.url(&path))
                .bearer_auth(&kiosk.credential)
                .json(&kiosk_body),
        )
        .await;
    assert_eq!(r.assert_status(200)["decision"], "admit");
    // Viewers may not redeem; bad bodies name the field.
    let r = app
        .send(
            app.client
                .post(app.url(&path))
                .bearer_auth(&app.viewer)
                .json(&body),
        )
        .await;
    r.assert_problem(403, None);
    app.post(Some(&app.staff), &path, json!({"credential": "x"}))
        .await
        .assert_problem(422, Some("gate_id"));
    app.post(
        Some(&app.staff),
        &path,
        json!({"credential": "x", "gate_id": Uuid::now_v7()}),
    )
    .await
    .assert_problem(404, None);
}

async fn resolve(app: &TestApp, event: &str, id: &str, body: Value, token: String) -> Resp {
    let path = format!("/api/v1/events/{event}/conflicts/{id}/resolve");
    app.post(Some(&token), &path, body).await
}

async fn conflicts_are_filtered_and_resolved_with_an_audit_trail(app: TestApp) {
    let (event, people) = live_event(&app, 3).await;
    let a = new_gate(&app, &event, "A", None).await;
    let b = new_gate(&app, &event, "B", None).await;
    let t = now_ms();
    for (i, p) in people.iter().take(2).enumerate() {
        let i = i as u64;
        push(
            &app,
            &a,
            vec![checkin(a.next_seq + i, serial(p), "in", t, 0)],
        )
        .await
        .assert_status(200);
        push(
            &app,
            &b,
            vec![checkin(b.next_seq + i, serial(p), "in", t + 1, 0)],
        )
        .await
        .assert_status(200);
    }
    push(
        &app,
        &a,
        vec![checkin(a.next_seq + 2, serial(&people[2]), "out", t, 0)],
    )
    .await
    .assert_status(200);
    assert_eq!(conflicts(&app, &event, "").await.len(), 3);
    assert_eq!(
        conflicts(&app, &event, "kind=duplicate_admission")
            .await
            .len(),
        2
    );
    assert_eq!(
        conflicts(&app, &event, "kind=exit_without_entry")
            .await
            .len(),
        1
    );
    app.get(
        Some(&app.viewer),
        &format!("/api/v1/events/{event}/conflicts?kind=nonsense"),
    )
    .await
    .assert_problem(400, Some("kind"));
    let page = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/conflicts?limit=2"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/conflicts?limit=2&cursor={cursor}"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);

    let dups = conflicts(&app, &event, "kind=duplicate_admission").await;
    let id0 = dups[0]["id"].as_str().unwrap();
    resolve(
        &app,
        &event,
        id0,
        json!({"action": "acknowledge"}),
        app.viewer.clone(),
    )
    .await
    .assert_problem(403, None);
    resolve(
        &app,
        &event,
        id0,
        json!({"action": "shrug"}),
        app.staff.clone(),
    )
    .await
    .assert_problem(422, Some("action"));
    let ok = resolve(
        &app,
        &event,
        id0,
        json!({"action": "acknowledge", "note": "same person, wristband swap"}),
        app.staff.clone(),
    )
    .await
    .assert_status(200)
    .clone();
    assert_eq!(ok["resolution"], "acknowledged");
    assert!(ok["resolved_at"].is_string());
    resolve(
        &app,
        &event,
        id0,
        json!({"action": "acknowledge"}),
        app.staff.clone(),
    )
    .await
    .assert_problem(409, None);
    let id1 = dups[1]["id"].as_str().unwrap();
    let serial1 = dups[1]["ticket_serial"].as_u64().unwrap();
    let ok = resolve(
        &app,
        &event,
        id1,
        json!({"action": "revoke_ticket"}),
        app.staff.clone(),
    )
    .await
    .assert_status(200)
    .clone();
    assert_eq!(ok["resolution"], "ticket_revoked");
    // The ticket is revoked and gates are told.
    let revoked = app.changes(&event, 0).await.into_iter().any(|c| {
        matches!(&c.data,
        sync_protocol::wire::ChangeData::Revocation(r) if r.serial == serial1)
    });
    assert!(revoked);
    // Open conflicts no longer list them; `all` does.
    assert_eq!(
        conflicts(&app, &event, "").await.len(),
        2,
        "one open + revoked_while_inside"
    );
    assert_eq!(conflicts(&app, &event, "status=resolved").await.len(), 2);
    resolve(
        &app,
        &event,
        &Uuid::now_v7().to_string(),
        json!({"action": "acknowledge"}),
        app.staff.clone(),
    )
    .await
    .assert_problem(404, None);
    // Audited.
    let n = count(
        &app.db,
        "SELECT CAST(count(*) AS BIGINT) FROM audit_log WHERE action = 'conflict.resolve'",
    )
    .await;
    assert_eq!(n, 2);
}

async fn the_dashboard_stream_shows_admissions(app: TestApp) {
    use futures_util::StreamExt;
    let (event, people) = live_event(&app, 2).await;
    let a = new_gate(&app, &event, "A", None).await;
    let resp = app
        .client
        .get(app.url(&format!("/api/v1/events/{event}/stream")))
        .bearer_auth(&app.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let c = checkin(a.next_seq, serial(&people[0]), "in", now_ms(), 0);
    push(&app, &a, vec![c.clone()]).await.assert_status(200);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(text.contains("event: admission") && text.contains(c["id"].as_str().unwrap())) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("admission event within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Gates get a `changes` nudge on their own stream.
    let gresp = app
        .client
        .get(app.url("/sync/v1/stream"))
        .bearer_auth(&a.credential)
        .send()
        .await
        .unwrap();
    let mut gbody = gresp.bytes_stream();
    app.create_participant(&event, json!({"name": "New"})).await;
    let mut text = String::new();
    while !text.contains("event: changes") {
        let chunk = tokio::time::timeout_at(deadline, gbody.next())
            .await
            .expect("changes event within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    app.get(None, &format!("/api/v1/events/{event}/stream"))
        .await
        .assert_problem(401, None);
}

async fn a_deactivated_gate_loses_access(app: TestApp) {
    let (event, _) = live_event(&app, 1).await;
    let a = new_gate(&app, &event, "A", None).await;
    pull(&app, &a, "after=0").await.assert_status(200);
    app.delete(
        Some(&app.admin),
        &format!("/api/v1/events/{event}/gates/{}", a.id),
    )
    .await;
    pull(&app, &a, "after=0").await.assert_problem(401, None);
    // Its configuration change says so, for anyone replicating.
    let inactive = app.changes(&event, 0).await.into_iter().any(|c| matches!(&c.data,
        sync_protocol::wire::ChangeData::GateConfig(g) if g.gate_id.to_string() == a.id && !g.is_active));
    assert!(inactive);
}

async fn attendance_counts_per_gate_and_zone(app: TestApp) {
    let (event, people) = live_event(&app, 4).await;
    let a = new_gate(&app, &event, "A", Some("main")).await;
    let v = new_gate(&app, &event, "V", Some("vip")).await;
    let t = now_ms();
    push(
        &app,
        &a,
        vec![
            checkin(a.next_seq, serial(&people[0]), "in", t, 0),
            checkin(a.next_seq + 1, serial(&people[1]), "in", t, 0),
            checkin(a.next_seq + 2, serial(&people[1]), "out", t + 1, 0),
        ],
    )
    .await
    .assert_status(200);
    push(
        &app,
        &v,
        vec![checkin(v.next_seq, serial(&people[2]), "in", t, 0)],
    )
    .await
    .assert_status(200);
    let att = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/attendance"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(att["inside"], 2);
    assert_eq!(att["admitted_tickets"], 3);
    assert_eq!(att["tickets_issued"], 4);
    let gate = |name: &str| gate_of(&att, name);
    assert_eq!(
        (
            gate("A")["entries"].clone(),
            gate("A")["exits"].clone(),
            gate("A")["inside_via"].clone()
        ),
        (json!(2), json!(1), json!(1))
    );
    assert_eq!(gate("V")["inside_via"], 1);
    let zone = |z: &str| {
        att["zones"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["zone"] == z)
            .unwrap()
            .clone()
    };
    assert_eq!(zone("main")["inside"], 1);
    assert_eq!(zone("vip")["inside"], 1);
    // CSV report for spreadsheets.
    let r = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/report?format=csv"),
        )
        .await;
    assert_eq!(r.status, 200);
    // One fact per row; each of the four participants has a `name` fact.
    let text = String::from_utf8(r.bytes.clone()).unwrap();
    assert!(text.starts_with("scope,ticket_type,section,subject,metric,value\n"));
    let names = text
        .lines()
        .filter(|l| l.starts_with("participant,") && l.contains(",name,"))
        .count();
    assert_eq!(names, 4);
    app.get(
        Some(&app.viewer),
        &format!("/api/v1/events/{event}/report?format=xml"),
    )
    .await
    .assert_problem(400, Some("format"));
    app.get(None, &format!("/api/v1/events/{event}/attendance"))
        .await
        .assert_problem(401, None);
}

async fn exports_give_each_participants_check_in_facts_and_the_whole_log(app: TestApp) {
    let (event, people) = live_event(&app, 3).await;
    let a = new_gate(&app, &event, "East door", None).await;
    let b = new_gate(&app, &event, "West door", None).await;
    let t = now_ms();
    let at = |mut c: Value, time: &str| {
        c["scanned_at"] = json!(time);
        c
    };
    push(
        &app,
        &a,
        vec![
            at(
                checkin(a.next_seq, serial(&people[0]), "in", t, 0),
                "2026-12-01T09:31:00Z",
            ),
            at(
                checkin(a.next_seq + 1, serial(&people[0]), "out", t + 1, 0),
                "2026-12-01T09:32:00Z",
            ),
        ],
    )
    .await
    .assert_status(200);
    let mut rejected = at(
        checkin(b.next_seq + 1, serial(&people[1]), "in", t + 2, 0),
        "2026-12-01T09:31:01Z",
    );
    rejected["decision"] = json!("reject");
    rejected["reason"] = json!("wrong_zone");
    push(
        &app,
        &b,
        vec![
            at(
                checkin(b.next_seq, serial(&people[0]), "in", t + 3, 0),
                "2026-12-01T09:33:00Z",
            ),
            rejected,
        ],
    )
    .await
    .assert_status(200);

    let path = format!("/api/v1/events/{event}/exports/participants?format=json");
    let rows = app
        .get(Some(&app.staff), &path)
        .await
        .assert_status(200)
        .clone();
    let row = |p: &Value| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["participant_id"] == p["id"])
            .unwrap()
            .clone()
    };
    let first = row(&people[0]);
    assert_eq!(first["first_entry"], "2026-12-01T09:31:00Z");
    assert_eq!(first["last_exit"], "2026-12-01T09:32:00Z");
    assert_eq!(
        (first["entries"].clone(), first["exits"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(first["inside"], true);
    assert_eq!(first["gates"], json!(["East door", "West door"]));
    let never = row(&people[2]);
    assert_eq!(
        (never["first_entry"].clone(), never["entries"].clone()),
        (Value::Null, json!(0))
    );
    // A viewer sees no contact details; unknown columns and formats name the field.
    app.get(Some(&app.viewer), &path)
        .await
        .assert_problem(403, None);
    app.get(Some(&app.staff), &format!("{path}&columns=name,shoe_size"))
        .await
        .assert_problem(400, Some("columns"));

    // The columns chosen, in that order, as CSV.
    let r = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{event}/exports/participants?columns=name,first_entry,gates"),
        )
        .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.bytes.clone()).unwrap();
    assert!(text.starts_with("name,first_entry,gates\n"), "{text}");
    assert!(
        text.contains("2026-12-01T09:31:00Z,East door; West door"),
        "{text}"
    );

    // The log holds every check-in, the rejected scan too, with its gate's name.
    let log = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/exports/checkins?format=json"),
        )
        .await
        .assert_status(200)
        .clone();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 4);
    let reject = log.iter().find(|c| c["decision"] == "reject").unwrap();
    assert_eq!(
        (reject["reason"].clone(), reject["gate"].clone()),
        (json!("wrong_zone"), json!("West door"))
    );
    app.get(
        Some(&app.viewer),
        &format!("/api/v1/events/{event}/exports/checkins?format=xml"),
    )
    .await
    .assert_problem(400, Some("format"));
}

async fn report_csv_cells_that_look_like_formulas_stay_text(app: TestApp) {
    let event = app.create_event("Formulas").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.create_participant(
        &event,
        json!({"name": "=HYPERLINK(\"http://evil.example/\",\"click\")",
               "organization": "@SUM(A1:A9)", "email": "plain@example.com"}),
    )
    .await;
    let r = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/report?format=csv"),
        )
        .await;
    assert_eq!(r.status, 200);
    // One fact per row: (scope, ticket_type, section, subject, metric, value).
    let mut reader = csv::Reader::from_reader(&r.bytes[..]);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let cell = |metric: &str| {
        rows.iter()
            .find(|r| &r[2] == "participants" && &r[4] == metric)
            .unwrap()[5]
            .to_owned()
    };
    assert_eq!(
        cell("name"),
        "'=HYPERLINK(\"http://evil.example/\",\"click\")"
    );
    assert_eq!(cell("organization"), "'@SUM(A1:A9)");
    assert_eq!(cell("email"), "plain@example.com");
}

async fn deleting_an_event_removes_its_checkins_and_presence(app: TestApp) {
    let t = now_ms();
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for (name, ids) in [("Kept", &mut kept), ("Gone", &mut gone)] {
        let (event, people) = live_event(&app, 2).await;
        let mut gate = new_gate(&app, &event, name, None).await;
        let batch: Vec<Value> = people
            .iter()
            .map(|p| {
                gate.next_seq += 1;
                checkin(gate.next_seq - 1, serial(p), "in", t, 0)
            })
            .collect();
        let r = push(&app, &gate, batch).await;
        let r = r.assert_status(200);
        assert!(
            r["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["status"] == "stored"),
            "{r}"
        );
        ids.push(event);
    }
    async fn rows(db: &server::Db, table: &str, event: &str) -> i64 {
        let sql = match table {
            "checkins" => "SELECT CAST(count(*) AS BIGINT) FROM checkins WHERE event_id = $1",
            "gate_presence" => {
                "SELECT CAST(count(*) AS BIGINT) FROM gate_presence WHERE event_id = $1"
            }
            "type_presence" => {
                "SELECT CAST(count(*) AS BIGINT) FROM type_presence WHERE event_id = $1"
            }
            _ => "SELECT CAST(count(*) AS BIGINT) FROM presence WHERE event_id = $1",
        };
        let id: Uuid = event.parse().unwrap();
        match db {
            server::Db::Postgres(p) => sqlx::query_scalar(sql).bind(id).fetch_one(p).await,
            server::Db::Sqlite(p) => sqlx::query_scalar(sql).bind(id).fetch_one(p).await,
        }
        .unwrap()
    }
    for event in [&kept[0], &gone[0]] {
        assert_eq!(rows(&app.db, "checkins", event).await, 2);
        assert_eq!(rows(&app.db, "presence", event).await, 2);
    }
    let gone = &gone[0];
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{gone}"),
        json!({"status": "closed"}),
    )
    .await
    .assert_status(200);
    let r = app
        .delete(Some(&app.admin), &format!("/api/v1/events/{gone}"))
        .await;
    assert_eq!(r.status.as_u16(), 204);
    // The maintained presence counters' rows go with their event.
    for table in ["checkins", "presence", "gate_presence", "type_presence"] {
        assert_eq!(rows(&app.db, table, gone).await, 0, "{table}");
        assert!(rows(&app.db, table, &kept[0]).await > 0, "{table}");
    }
    assert_eq!(rows(&app.db, "checkins", &kept[0]).await, 2);
    assert_eq!(rows(&app.db, "presence", &kept[0]).await, 2);
}

/// Batches of hundreds take PostgreSQL's bulk paths (COPY of check-ins, first presence rows and
/// change-log rows, with the upsert as the fallback for retried rows): the outcome must be the
/// one a batch of one gets.
async fn large_batches_merge_like_small_ones_and_retry_as_duplicates(app: TestApp) {
    const N: usize = 1_200;
    let (event, people) = live_event(&app, N).await;
    let serials: Vec<u64> = people.iter().map(serial).collect();
    let a = new_gate(&app, &event, "A", None).await;
    let b = new_gate(&app, &event, "B", None).await;
    let t = now_ms();
    let statuses = |r: &Value, field: &str| -> Vec<String> {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[field].as_str().unwrap_or("-").to_string())
            .collect()
    };
    async fn rows(db: &server::Db, sql: &'static str, event: &str) -> i64 {
        let id: Uuid = event.parse().unwrap();
        match db {
            server::Db::Postgres(p) => sqlx::query_scalar(sql).bind(id).fetch_one(p).await,
            server::Db::Sqlite(p) => sqlx::query_scalar(sql).bind(id).fetch_one(p).await,
        }
        .unwrap()
    }
    const CHECKINS: &str = "SELECT CAST(count(*) AS BIGINT) FROM checkins WHERE event_id = $1";
    const INSIDE: &str =
        "SELECT CAST(count(*) AS BIGINT) FROM presence WHERE event_id = $1 AND inside";
    const DUPLICATES: &str = "SELECT CAST(count(*) AS BIGINT) FROM conflicts
         WHERE event_id = $1 AND kind = 'duplicate_admission'";

    // Gate A: the first 1,000 tickets in one batch.
    let first: Vec<Value> = (0..1_000)
        .map(|i| checkin(a.next_seq + i as u64, serials[i], "in", t, 0))
        .collect();
    let r = push(&app, &a, first.clone())
        .await
        .assert_status(200)
        .clone();
    assert!(statuses(&r, "status").iter().all(|s| s == "stored"));
    assert!(statuses(&r, "outcome").iter().all(|s| s == "inside"));
    assert_eq!(r["acked_through_seq"], json!(a.next_seq + 999));
    assert_eq!(rows(&app.db, CHECKINS, &event).await, 1_000);
    assert_eq!(rows(&app.db, INSIDE, &event).await, 1_000);

    // The same batch again: every check-in a duplicate, nothing stored twice.
    let r = push(&app, &a, first.clone())
        .await
        .assert_status(200)
        .clone();
    assert!(statuses(&r, "status").iter().all(|s| s == "duplicate"));
    assert!(statuses(&r, "outcome").iter().all(|s| s == "inside"));
    assert_eq!(rows(&app.db, CHECKINS, &event).await, 1_000);

    // A retry that overlaps: the last 300 of the first batch plus 200 new ones.
    let mut overlap: Vec<Value> = first[700..].to_vec();
    overlap.extend((1_000..N).map(|i| checkin(a.next_seq + i as u64, serials[i], "in", t, 0)));
    let r = push(&app, &a, overlap).await.assert_status(200).clone();
    let st = statuses(&r, "status");
    assert!(st[..300].iter().all(|s| s == "duplicate"), "{st:?}");
    assert!(st[300..].iter().all(|s| s == "stored"), "{st:?}");
    assert_eq!(r["acked_through_seq"], json!(a.next_seq + N as u64 - 1));
    assert_eq!(rows(&app.db, CHECKINS, &event).await, N as i64);
    assert_eq!(rows(&app.db, INSIDE, &event).await, N as i64);
    assert_eq!(rows(&app.db, DUPLICATES, &event).await, 0);

    // Gate B, offline all along, admitted every one of them a second later: one
    // duplicate_admission per ticket, and the tickets stay inside once.
    let second: Vec<Value> = (0..N)
        .map(|i| checkin(b.next_seq + i as u64, serials[i], "in", t + 1_000, 0))
        .collect();
    let r = push(&app, &b, second).await.assert_status(200).clone();
    assert!(statuses(&r, "status").iter().all(|s| s == "stored"));
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["conflicts"] == json!(["duplicate_admission"]))
    );
    assert_eq!(rows(&app.db, DUPLICATES, &event).await, N as i64);
    assert_eq!(rows(&app.db, INSIDE, &event).await, N as i64);

    // Gates learn all of it through the change log: one presence entry per ticket, the
    // canonical admission being gate A's.
    let changes = app.changes(&event, 0).await;
    let presence: Vec<_> = changes
        .iter()
        .filter_map(|c| match &c.data {
            sync_protocol::wire::ChangeData::Presence(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(presence.len(), N);
    assert!(presence.iter().all(|p| p.inside && p.entries == 1));
}

/// The dashboard's counters are kept by triggers as rows are written (migration
/// `…_counters`): a COPYed batch (PostgreSQL takes `COPY` from 200 check-ins), rejections, an
/// invalid check-in, a test, undos (one undoing an earlier push, one in the same batch as its
/// admission, a second undo of the same scan), a revocation, a re-typed participant and a new
/// one all move them exactly as this test's own tally says.
async fn maintained_counters_follow_every_kind_of_write(app: TestApp) {
    let (event, people) = live_event(&app, 300).await;
    let a = new_gate(&app, &event, "A", Some("main")).await;
    let b = new_gate(&app, &event, "B", Some("main")).await;
    let t = now_ms();
    // 250 scans at A in one batch: every tenth is a rejection, one is invalid (no reason).
    let mut batch = Vec::new();
    for (i, p) in people.iter().take(250).enumerate() {
        let mut c = checkin(a.next_seq + i as u64, serial(p), "in", t + i as u64, 0);
        if i % 10 == 9 {
            c["decision"] = json!("reject");
            c["reason"] = json!("wrong_zone");
        }
        if i == 248 {
            c["decision"] = json!("reject");
        }
        batch.push(c);
    }
    let ids: Vec<Value> = batch.iter().map(|c| c["id"].clone()).collect();
    let r = push(&app, &a, batch).await.assert_status(200).clone();
    assert_eq!(r["results"][248]["status"], "invalid");
    // 250 scans: 25 rejections, one invalid, so 224 entries.
    let (mut a_entries, a_rejected) = (224, 25);
    // Undo five of them (one of them twice, in two pushes).
    let mut seq = a.next_seq + 250;
    let mut undos = Vec::new();
    for i in [0usize, 1, 2, 3, 4] {
        let mut u = checkin(seq, serial(&people[i]), "in", t + 1_000 + i as u64, 0);
        u["undoes"] = ids[i].clone();
        undos.push(u);
        seq += 1;
    }
    push(&app, &a, undos).await.assert_status(200);
    a_entries -= 5;
    let mut again = checkin(seq, serial(&people[0]), "in", t + 2_000, 0);
    again["undoes"] = ids[0].clone();
    push(&app, &a, vec![again]).await.assert_status(200);
    // At B: 50 exits, and an admission undone in its own batch.
    let mut batch: Vec<Value> = (0..50)
        .map(|i| {
            checkin(
                b.next_seq + i as u64,
                serial(&people[10 + i]),
                "out",
                t + 3_000 + i as u64,
                0,
            )
        })
        .collect();
    let adm = checkin(b.next_seq + 50, serial(&people[290]), "in", t + 4_000, 0);
    let mut undo = checkin(b.next_seq + 51, serial(&people[290]), "in", t + 4_001, 0);
    undo["undoes"] = adm["id"].clone();
    batch.push(adm);
    batch.push(undo);
    push(&app, &b, batch).await.assert_status(200);
    let (b_entries, b_exits) = (0, 50);
    // Two tickets revoked: 298 valid. One participant re-typed, one added with a type.
    revoke(&app, &event, &people[298]).await;
    revoke(&app, &event, &people[299]).await;
    set_ticket_type(&app, &event, &people[297], "vip").await;
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants"),
        json!([{"name": "Late", "email": "late@example.org", "ticket_type": "vip"}]),
    )
    .await
    .assert_status(201);

    let att = attendance(&app, &event).await;
    let gate = |name: &str| gate_of(&att, name);
    assert_eq!(
        (
            gate("A")["entries"].clone(),
            gate("A")["exits"].clone(),
            gate("A")["rejected"].clone()
        ),
        (json!(a_entries), json!(0), json!(a_rejected))
    );
    assert_eq!(
        (
            gate("B")["entries"].clone(),
            gate("B")["exits"].clone(),
            gate("B")["rejected"].clone()
        ),
        (json!(b_entries), json!(b_exits), json!(0))
    );
    // 300 + 1 participants; 300 tickets made (the late one gets one too), two revoked.
    assert_eq!(att["registered"], 301);
    assert_eq!(att["tickets_issued"], 299);
    let types: Vec<(Value, Value)> = att["ticket_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["ticket_type"].clone(), t["registered"].clone()))
        .collect();
    assert_eq!(types, [(Value::Null, json!(299)), (json!("vip"), json!(2))]);
    // Inside: the 219 admitted at A, less the 45 of them that went out at B (the other five
    // exits are of tickets rejected at A).
    let exits_of_inside = (10..60usize).filter(|i| i % 10 != 9 && *i >= 5).count();
    let inside = a_entries - exits_of_inside;
    assert_eq!(att["inside"], json!(inside));
    assert_eq!(att["admitted_tickets"], json!(a_entries));
    // Inside per gate of the last movement: everyone who went out at B is outside.
    assert_eq!(gate("A")["inside_via"], json!(inside));
    assert_eq!(gate("B")["inside_via"], json!(0));
    assert_eq!(
        by_type(&att),
        [(Value::Null, a_entries, inside), (json!("vip"), 0, 0)]
    );
    presence_counters_match_a_recount(&app, &event).await;

    // An admitted holder inside is re-typed, another is reissued a ticket: presence counts
    // under the type of the participant holding the ticket; the old ticket's admission stays in
    // the event's totals and its gate's.
    let (typed, reissued) = (&people[100], &people[101]);
    set_ticket_type(&app, &event, typed, "vip").await;
    let pid = reissued["id"].as_str().unwrap();
    app.post_empty(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants/{pid}/ticket"),
    )
    .await
    .assert_status(201);
    let att = attendance(&app, &event).await;
    assert_eq!(
        by_type(&att),
        [
            (Value::Null, a_entries - 2, inside - 2),
            (json!("vip"), 1, 1)
        ]
    );
    assert_eq!(att["attended"], json!(a_entries - 1));
    assert_eq!(
        (att["inside"].clone(), att["admitted_tickets"].clone()),
        (json!(inside), json!(a_entries))
    );
    presence_counters_match_a_recount(&app, &event).await;

    // The reissued ticket goes out at B: it leaves "inside" at A and counts nowhere inside.
    let new_serial = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{event}/participants/{pid}"),
        )
        .await
        .assert_status(200)["ticket"]["serial"]
        .as_u64()
        .unwrap();
    assert_ne!(new_serial, serial(reissued));
    push(
        &app,
        &b,
        vec![checkin(
            b.next_seq + 52,
            serial(reissued),
            "out",
            t + 5_000,
            0,
        )],
    )
    .await
    .assert_status(200);
    let att = attendance(&app, &event).await;
    assert_eq!(att["inside"], json!(inside - 1));
    assert_eq!(gate_of(&att, "A")["inside_via"], json!(inside - 1));
    presence_counters_match_a_recount(&app, &event).await;
}

async fn set_ticket_type(app: &TestApp, event: &str, p: &Value, ticket_type: &str) {
    let pid = p["id"].as_str().unwrap();
    app.patch(
        Some(&app.staff),
        &format!("/api/v1/events/{event}/participants/{pid}"),
        json!({"ticket_type": ticket_type}),
    )
    .await
    .assert_status(200);
}

async fn attendance(app: &TestApp, event: &str) -> Value {
    app.get(
        Some(&app.viewer),
        &format!("/api/v1/events/{event}/attendance"),
    )
    .await
    .assert_status(200)
    .clone()
}

fn gate_of(att: &Value, name: &str) -> Value {
    att["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap()
        .clone()
}

/// `(type, admitted, inside)` per ticket type of an attendance answer.
fn by_type(att: &Value) -> Vec<(Value, usize, usize)> {
    att["ticket_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let n = |k: &str| usize::try_from(t[k].as_u64().unwrap()).unwrap();
            (t["ticket_type"].clone(), n("admitted"), n("inside"))
        })
        .collect()
}

/// The maintained presence counters, summed per gate and per type, equal a recount of the
/// event's presence rows (joined to participants by their current ticket), on either backend.
async fn presence_counters_match_a_recount(app: &TestApp, event: &str) {
    let ev = Uuid::parse_str(event).unwrap();
    const NIL: &str = "00000000-0000-0000-0000-000000000000";
    // (key, inside, admitted), sorted by key.
    let queries = [
        (
            "SELECT CAST(gate_id AS TEXT), CAST(sum(inside) AS BIGINT), CAST(sum(admitted) AS BIGINT)
             FROM gate_presence WHERE event_id = $1 GROUP BY gate_id
             HAVING sum(inside) <> 0 OR sum(admitted) <> 0",
            "SELECT CAST(last_gate AS TEXT),
                CAST(sum(CASE WHEN inside THEN 1 ELSE 0 END) AS BIGINT),
                CAST(sum(CASE WHEN entries > 0 THEN 1 ELSE 0 END) AS BIGINT)
             FROM presence WHERE event_id = $1 AND (inside OR entries > 0) GROUP BY last_gate",
        ),
        (
            "SELECT ticket_type, CAST(sum(inside) AS BIGINT), CAST(sum(admitted) AS BIGINT)
             FROM type_presence WHERE event_id = $1 GROUP BY ticket_type
             HAVING sum(inside) <> 0 OR sum(admitted) <> 0",
            "SELECT COALESCE(p.ticket_type, ''),
                CAST(sum(CASE WHEN pr.inside THEN 1 ELSE 0 END) AS BIGINT),
                CAST(sum(CASE WHEN pr.entries > 0 THEN 1 ELSE 0 END) AS BIGINT)
             FROM presence pr JOIN participants p
               ON p.event_id = pr.event_id AND p.ticket_serial = pr.serial
             WHERE pr.event_id = $1 AND (pr.inside OR pr.entries > 0)
             GROUP BY COALESCE(p.ticket_type, '')",
        ),
    ];
    for (counters, recount) in queries {
        let mut got = Vec::new();
        for sql in [counters, recount] {
            let mut rows: Vec<(String, i64, i64)> = match &app.db {
                server::Db::Postgres(p) => sqlx::query_as(sql).bind(ev).fetch_all(p).await.unwrap(),
                // SQLite keeps UUIDs as 16 bytes; compare them as hex.
                server::Db::Sqlite(p) => {
                    let sql = sql
                        .replace("CAST(gate_id AS TEXT)", "lower(hex(gate_id))")
                        .replace("CAST(last_gate AS TEXT)", "lower(hex(last_gate))");
                    sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(ev)
                        .fetch_all(p)
                        .await
                        .unwrap()
                }
            };
            for r in &mut rows {
                r.0 = r.0.replace('-', "");
            }
            rows.sort();
            got.push(rows);
        }
        assert!(!got[1].is_empty());
        assert!(got[1].iter().all(|r| r.0 != NIL.replace('-', "")));
        assert_eq!(got[0], got[1], "counters against a recount: {counters}");
    }
}

/// A check-in scanned at `t_ms` (its clock and its scan time).
fn checkin_at(seq: u64, serial: u64, dir: &str, t_ms: u64) -> Value {
    let mut c = checkin(seq, serial, dir, t_ms, 0);
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t_ms) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    c["scanned_at"] = json!(at);
    c
}

async fn arrivals_count_effective_entries_per_scan_minute(app: TestApp) {
    let (event, people) = live_event(&app, 8).await;
    let a = new_gate(&app, &event, "A", None).await;
    let s = |i: usize| serial(&people[i]);
    // Three minutes ago and two minutes ago, by scan time.
    let m1 = (now_ms() / 60_000 - 3) * 60_000;
    let m2 = m1 + 60_000;
    let first = checkin_at(a.next_seq, s(0), "in", m1 + 1_000);
    let mut undo = checkin_at(a.next_seq + 5, s(0), "in", m1 + 6_000);
    undo["undoes"] = first["id"].clone();
    let mut rejected = checkin_at(a.next_seq + 3, s(3), "in", m1 + 4_000);
    rejected["decision"] = json!("reject");
    rejected["reason"] = json!("wrong_zone");
    let mut invalid = checkin_at(a.next_seq + 7, s(5), "in", m2 + 2_000);
    invalid["decision"] = json!("reject");
    let batch = vec![
        first,
        checkin_at(a.next_seq + 1, s(1), "in", m1 + 2_000),
        checkin_at(a.next_seq + 2, s(2), "in", m1 + 3_000),
        rejected,
        checkin_at(a.next_seq + 4, s(1), "out", m1 + 5_000),
        undo,
        checkin_at(a.next_seq + 6, s(4), "in", m2 + 1_000),
        invalid,
        checkin_at(a.next_seq + 8, s(6), "in", m2 + 3_000),
    ];
    let later = batch[8]["id"].clone();
    push(&app, &a, batch).await.assert_status(200);
    let arrivals = |minutes: u32| {
        let app = &app;
        let event = &event;
        async move {
            let r = app
                .get(
                    Some(&app.viewer),
                    &format!("/api/v1/events/{event}/arrivals?minutes={minutes}"),
                )
                .await
                .assert_status(200)
                .clone();
            r["minutes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    let at = time::OffsetDateTime::parse(
                        m["minute"].as_str().unwrap(),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .unwrap();
                    let ms = u64::try_from(at.unix_timestamp()).unwrap() * 1000;
                    (ms, m["entries"].as_u64().unwrap())
                })
                .collect::<Vec<_>>()
        }
    };
    // Minute one: three entries, one of them undone; the rejection and the exit are no
    // arrivals. Minute two: two entries and an invalid scan.
    assert_eq!(arrivals(60).await, [(m1, 2), (m2, 2)]);
    // An entry undone in a later push stops counting, once, however often it is undone.
    for seq in [9, 10] {
        let mut u = checkin_at(a.next_seq + seq, s(6), "in", m2 + 4_000 + seq);
        u["undoes"] = later.clone();
        push(&app, &a, vec![u]).await.assert_status(200);
    }
    assert_eq!(arrivals(60).await, [(m1, 2), (m2, 1)]);
    // The window of two minutes (this one and the one before) holds neither.
    assert!(arrivals(2).await.is_empty());
    app.get(
        Some(&app.viewer),
        &format!("/api/v1/events/{event}/arrivals?minutes=0"),
    )
    .await
    .assert_problem(422, Some("minutes"));
}
