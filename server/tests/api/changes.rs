//! The replication change log: rows for every gate-visible write, and no gaps under concurrency.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use sync_protocol::wire::ChangeData;

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    change_log_records_keys_tickets_revocations_and_gates,
    concurrent_writers_never_leave_a_gap_a_reader_can_skip
);

async fn change_log_records_keys_tickets_revocations_and_gates(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let changes = app.changes(ev, 0).await;
    assert_eq!(changes.len(), 1);
    let ChangeData::SigningKey(k) = &changes[0].data else {
        panic!("expected signing_key")
    };
    assert_eq!(k.key_id, 1);
    assert_eq!(k.public_key.len(), 64, "public key only");
    let json_text = serde_json::to_string(&changes[0]).unwrap();
    assert!(!json_text.contains("secret"), "{json_text}");

    let p = app
        .create_participant(ev, json!({"name": "Minji Kim", "attention": "VIP"}))
        .await;
    let id = p["id"].as_str().unwrap();
    let serial = p["ticket"]["serial"].as_u64().unwrap();
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{id}/ticket/revoke"),
        json!({}),
    )
    .await
    .assert_status(200);
    app.post(
        Some(&app.admin),
        &format!("/api/v1/events/{ev}/gates"),
        json!({"name": "G"}),
    )
    .await
    .assert_status(201);

    let changes = app.changes(ev, 0).await;
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| server::store::changes::entity_of(&c.data).0)
        .collect();
    assert_eq!(
        kinds,
        ["signing_key", "revocation", "ticket", "gate_config"],
        "{changes:?}"
    );
    let seqs: Vec<u64> = changes.iter().map(|c| c.change_seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let ticket = changes.iter().find_map(|c| match &c.data {
        ChangeData::Ticket(t) => Some(t.clone()),
        _ => None,
    });
    let ticket = ticket.unwrap();
    assert_eq!(ticket.serial, serial);
    assert_eq!(ticket.display_name.as_deref(), Some("Minji Kim"));
    assert_eq!(ticket.attention.as_deref(), Some("VIP"));
    assert_eq!(ticket.short_code.as_deref().map(str::len), Some(12));
    assert_eq!(ticket.ble_key.as_deref().map(str::len), Some(64));
    assert!(ticket.valid_until > ticket.valid_from);
    // The documented JSON shape.
    let v = serde_json::to_value(&changes[2]).unwrap();
    assert_eq!(v["kind"], "ticket");
    assert_eq!(v["deleted"], false);
    assert_eq!(v["data"]["status"], "revoked");
}

/// N concurrent ticket issues while a reader polls `after = cursor`: every sequence number is
/// eventually seen, and none is ever skipped (seen only after the reader moved past it).
async fn concurrent_writers_never_leave_a_gap_a_reader_can_skip(app: TestApp) {
    const N: usize = 40;
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap().to_owned();
    let people: Vec<serde_json::Value> = (0..N)
        .map(|i| json!({"name": format!("P{i}"), "issue_ticket": false}))
        .collect();
    let r = app
        .post(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants"),
            json!(people),
        )
        .await;
    let ids: Vec<String> = r.assert_status(201)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    let start = crate::participants::sync_head(&app, &ev).await;

    let reader = {
        let db = app.db.clone();
        let master = app.master.clone();
        let event_id = uuid::Uuid::parse_str(&ev).unwrap();
        tokio::spawn(async move {
            let mut cursor = start;
            let mut seen = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.len() < N && Instant::now() < deadline {
                let batch = server::store::changes::list_after(
                    &db,
                    master.personal(),
                    event_id,
                    cursor,
                    1000,
                )
                .await
                .unwrap();
                for c in batch {
                    // Contiguous: the next row after the cursor is always cursor + 1.
                    assert_eq!(
                        c.change_seq,
                        cursor + 1,
                        "gap: saw {} right after {cursor}",
                        c.change_seq
                    );
                    cursor = c.change_seq;
                    seen.insert(c.change_seq);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };

    let mut writers = Vec::new();
    for id in ids {
        let client = app.client.clone();
        let url = app.url(&format!("/api/v1/events/{ev}/participants/{id}/ticket"));
        let token = app.staff.clone();
        writers.push(tokio::spawn(async move {
            let r = client.post(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 201);
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    assert_eq!(seen.len(), N, "every change was seen");
    assert_eq!(
        seen.iter().copied().collect::<Vec<_>>(),
        ((start + 1)..=(start + N as u64)).collect::<Vec<_>>()
    );
}
