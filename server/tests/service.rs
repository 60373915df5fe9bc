//! The use cases called directly, over a real SQLite file, with no HTTP in between: the layer
//! below the handlers is usable (and testable) on its own. Setup goes through `store`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use server::domain::gate::GateAuth;
use server::service::AppState;
use server::service::push::merge_push;
use server::store::events::{EventRow, EventSecrets};
use server::store::gates::GateRow;
use server::store::{self, Db, now_ms};
use server::{Settings, domain::crypto::MasterKey};
use sync_protocol::wire::{ConflictKind, Outcome, PushStatus};
use uuid::Uuid;

struct World {
    state: AppState,
    event_id: Uuid,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::for_test(dir.path().to_owned(), None);
    let master = MasterKey::load(&settings).unwrap();
    let db = Db::connect(&settings).await.unwrap();
    let event_id = Uuid::now_v7();
    let now = now_ms();
    let mut tx = db.begin().await.unwrap();
    store::events::insert(
        &mut tx,
        &EventRow {
            id: event_id,
            name: "Service test".into(),
            venue: None,
            starts_at: now - 3_600_000,
            ends_at: now + 3_600_000,
            status: "live".into(),
            settings: "{}".into(),
            event_tag: 7,
            created_at: now,
            updated_at: now,
            retention_days: None,
            archived_at: None,
            purged_at: None,
        },
        &EventSecrets {
            event_tag: 7,
            ble_secret: vec![0; 32],
            mesh_key: vec![0; 32],
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    World {
        state: AppState::new(db, master, Default::default()),
        event_id,
        _dir: dir,
    }
}

async fn gate(w: &World, name: &str) -> GateAuth {
    let now = now_ms();
    let id = Uuid::now_v7();
    let mut tx = w.state.db.begin().await.unwrap();
    store::gates::upsert(
        &mut tx,
        &GateRow {
            id,
            event_id: w.event_id,
            name: name.into(),
            zone: None,
            direction: "both".into(),
            zone_mask: 0,
            allow_reentry: false,
            beacon_config: None,
            mesh_addr: None,
            mesh_public_key: None,
            is_active: true,
            created_at: now,
            updated_at: now,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    GateAuth {
        gate_id: id,
        event_id: w.event_id,
    }
}

fn admission(seq: u64, serial: u64, hlc: u64) -> Value {
    json!({"id": Uuid::now_v7(), "seq": seq, "ticket_serial": serial, "method": "qr",
           "direction": "in", "decision": "admit", "hlc": hlc.to_string(),
           "scanned_at": "2026-12-01T09:31:07Z", "replica_cursor": 0})
}

#[tokio::test]
async fn two_gates_admitting_one_ticket_give_one_duplicate_admission_and_retries_store_nothing_twice()
 {
    let w = world().await;
    let (north, south) = (gate(&w, "North").await, gate(&w, "South").await);
    let first = vec![admission(1, 42, 1_000), admission(2, 43, 1_001)];
    let r = merge_push(&w.state, north, first.clone()).await.unwrap();
    assert_eq!(r.acked_through_seq, 2);
    assert!(r.results.iter().all(|c| c.status == PushStatus::Stored));
    assert!(r.results.iter().all(|c| c.outcome == Some(Outcome::Inside)));

    // The same ticket, later, at the other gate: stored, and flagged.
    let r = merge_push(&w.state, south, vec![admission(1, 42, 2_000)])
        .await
        .unwrap();
    assert_eq!(r.results[0].status, PushStatus::Stored);
    assert_eq!(
        r.results[0].conflicts,
        vec![ConflictKind::DuplicateAdmission]
    );

    // A retried batch: every entry a duplicate, the conflicts unchanged.
    let r = merge_push(&w.state, north, first).await.unwrap();
    assert!(r.results.iter().all(|c| c.status == PushStatus::Duplicate));
    let conflicts =
        store::reports::conflicts(&w.state.db, w.event_id, Uuid::max(), None, "all", 100)
            .await
            .unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].kind, "duplicate_admission");
    let checkins = store::reports::checkins(&w.state.db, w.event_id, Uuid::max(), None, None, 100)
        .await
        .unwrap();
    assert_eq!(checkins.len(), 3);
}

#[tokio::test]
async fn a_malformed_entry_is_invalid_and_the_rest_of_the_batch_is_stored() {
    let w = world().await;
    let g = gate(&w, "North").await;
    let mut bad = admission(2, 7, 1_000);
    bad["direction"] = json!("sideways");
    let r = merge_push(
        &w.state,
        g,
        vec![admission(1, 6, 999), bad, admission(3, 8, 1_001)],
    )
    .await
    .unwrap();
    let statuses: Vec<PushStatus> = r.results.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        vec![PushStatus::Stored, PushStatus::Invalid, PushStatus::Stored]
    );
    // The invalid entry keeps its seq, so the gate's log is acknowledged past it.
    assert_eq!(r.acked_through_seq, 3);
}
