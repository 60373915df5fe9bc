//! Zones with a capacity over real HTTP, on SQLite and on PostgreSQL: the CRUD API, zones in
//! every gate's replicated configuration, and the merge's `over_capacity` conflict when gates
//! that could not see each other overshot.

use serde_json::{Value, json};
use sync_protocol::wire::{ChangeData, GateConfig};

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::sync::{Gate, checkin, live_event, new_gate, now_ms, push, serial};

backend_tests!(
    zones_are_created_checked_changed_and_replicated_to_every_gate,
    two_offline_gates_overshooting_a_zone_give_one_over_capacity_conflict,
    concurrent_pushes_into_one_zone_still_see_each_other,
    multi_day_settings_are_checked_and_replicated,
    after_the_daily_check_out_a_new_days_entry_is_no_conflict_and_nobody_counts_inside,
);

async fn zone_gate(app: &TestApp, event: &str, name: &str, mask: u16) -> Gate {
    let g = new_gate(app, event, name, None).await;
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{event}/gates/{}", g.id),
        json!({"zone_mask": mask}),
    )
    .await
    .assert_status(200);
    g
}

async fn over_capacity(app: &TestApp, event: &str) -> Vec<Value> {
    app.get(
        Some(&app.viewer),
        &format!("/api/v1/events/{event}/conflicts?kind=over_capacity"),
    )
    .await
    .assert_status(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The newest replicated configuration of `gate`.
async fn config_of(app: &TestApp, event: &str, gate: &str) -> GateConfig {
    app.changes(event, 0)
        .await
        .into_iter()
        .filter_map(|c| match c.data {
            ChangeData::GateConfig(g) if g.gate_id.to_string() == gate => Some(g),
            _ => None,
        })
        .next_back()
        .expect("the gate's configuration is replicated")
}

async fn zones_are_created_checked_changed_and_replicated_to_every_gate(app: TestApp) {
    let (event, _) = live_event(&app, 1).await;
    let gate = zone_gate(&app, &event, "Door", 0b10).await;
    let path = format!("/api/v1/events/{event}/zones");
    let hall = app
        .post(
            Some(&app.admin),
            &path,
            json!({"name": "Hall", "capacity": 500, "soft_capacity": 450}),
        )
        .await
        .assert_status(201)
        .clone();
    assert_eq!(hall["bit"], 0, "the lowest free bit");
    let room = app
        .post(
            Some(&app.admin),
            &path,
            json!({"name": "Room 1", "bit": 1, "capacity": 2, "transfer": true}),
        )
        .await
        .assert_status(201)
        .clone();
    assert_eq!(
        (
            &room["bit"],
            &room["capacity"],
            &room["soft_capacity"],
            &room["transfer"]
        ),
        (&json!(1), &json!(2), &Value::Null, &json!(true))
    );
    // Bad input names its field and changes nothing.
    app.post(
        Some(&app.admin),
        &path,
        json!({"name": "X", "capacity": 5, "soft_capacity": 6}),
    )
    .await
    .assert_problem(422, Some("soft_capacity"));
    app.post(Some(&app.admin), &path, json!({"name": "X", "bit": 16}))
        .await
        .assert_problem(422, Some("bit"));
    app.post(Some(&app.admin), &path, json!({"name": " "}))
        .await
        .assert_problem(422, Some("name"));
    app.post(Some(&app.admin), &path, json!({"name": "Hall"}))
        .await
        .assert_status(409);
    app.post(Some(&app.admin), &path, json!({"name": "Y", "bit": 1}))
        .await
        .assert_status(409);
    app.post(Some(&app.staff), &path, json!({"name": "Z"}))
        .await
        .assert_status(403);
    let listed = app.get(Some(&app.viewer), &path).await.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed.len(), 2);

    // Every gate's configuration carries the zones.
    let cfg = config_of(&app, &event, &gate.id).await;
    assert_eq!(cfg.zones.len(), 2);
    assert_eq!(cfg.zones[1].name, "Room 1");
    assert_eq!(cfg.zones[1].capacity, Some(2));
    assert!(cfg.zones[1].transfer);

    let room_path = format!("{path}/{}", room["id"].as_str().unwrap());
    let changed = app
        .patch(
            Some(&app.admin),
            &room_path,
            json!({"capacity": 3, "soft_capacity": 2}),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(
        (&changed["capacity"], &changed["soft_capacity"]),
        (&json!(3), &json!(2))
    );
    app.patch(Some(&app.admin), &room_path, json!({"soft_capacity": 4}))
        .await
        .assert_problem(422, Some("soft_capacity"));
    let cfg = config_of(&app, &event, &gate.id).await;
    assert_eq!(cfg.zones[1].capacity, Some(3));
    app.delete(Some(&app.admin), &room_path)
        .await
        .assert_status(204);
    app.get(Some(&app.viewer), &room_path)
        .await
        .assert_status(404);
    let cfg = config_of(&app, &event, &gate.id).await;
    assert_eq!(cfg.zones.len(), 1);
}

async fn two_offline_gates_overshooting_a_zone_give_one_over_capacity_conflict(app: TestApp) {
    let (event, people) = live_event(&app, 5).await;
    app.post(
        Some(&app.admin),
        &format!("/api/v1/events/{event}/zones"),
        json!({"name": "Room", "bit": 0, "capacity": 2}),
    )
    .await
    .assert_status(201);
    let a = zone_gate(&app, &event, "A", 0b1).await;
    let b = zone_gate(&app, &event, "B", 0b1).await;
    let lobby = zone_gate(&app, &event, "Lobby", 0b10).await;
    let t0 = now_ms() - 60_000;
    // Online: one inside, which both gates learnt.
    let r = push(
        &app,
        &a,
        vec![checkin(a.next_seq, serial(&people[0]), "in", t0, 0)],
    )
    .await;
    r.assert_status(200);
    // Entries into another zone do not count.
    push(
        &app,
        &lobby,
        vec![checkin(lobby.next_seq, serial(&people[4]), "in", t0 + 1, 0)],
    )
    .await
    .assert_status(200);
    assert!(over_capacity(&app, &event).await.is_empty());
    // Offline and out of each other's sight, each gate lets one more in: each saw 2 of 2.
    let ca = checkin(a.next_seq + 1, serial(&people[1]), "in", t0 + 10, 0);
    let cb = checkin(b.next_seq, serial(&people[2]), "in", t0 + 20, 0);
    let ra = push(&app, &a, vec![ca.clone()])
        .await
        .assert_status(200)
        .clone();
    assert_eq!(ra["results"][0]["conflicts"], json!([]));
    let rb = push(&app, &b, vec![cb.clone()])
        .await
        .assert_status(200)
        .clone();
    assert_eq!(rb["results"][0]["conflicts"], json!(["over_capacity"]));
    let found = over_capacity(&app, &event).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["checkin_ids"], json!([cb["id"]]));
    assert_eq!(found[0]["gate_ids"], json!([b.id]));
    assert_eq!(found[0]["ticket_serial"], json!(serial(&people[2])));
    // Retries and the other gate's later pushes do not raise it again.
    push(&app, &b, vec![cb.clone()]).await.assert_status(200);
    push(&app, &a, vec![ca.clone()]).await.assert_status(200);
    assert_eq!(over_capacity(&app, &event).await.len(), 1);
    // Two leave, one comes in: back within the capacity, no new conflict.
    push(
        &app,
        &a,
        vec![
            checkin(a.next_seq + 2, serial(&people[0]), "out", t0 + 30, 0),
            checkin(a.next_seq + 3, serial(&people[1]), "out", t0 + 31, 0),
        ],
    )
    .await
    .assert_status(200);
    push(
        &app,
        &b,
        vec![checkin(
            b.next_seq + 1,
            serial(&people[3]),
            "in",
            t0 + 40,
            0,
        )],
    )
    .await
    .assert_status(200);
    assert_eq!(over_capacity(&app, &event).await.len(), 1);
}

async fn concurrent_pushes_into_one_zone_still_see_each_other(app: TestApp) {
    let (event, people) = live_event(&app, 2).await;
    app.post(
        Some(&app.admin),
        &format!("/api/v1/events/{event}/zones"),
        json!({"name": "Room", "capacity": 1}),
    )
    .await
    .assert_status(201);
    let a = zone_gate(&app, &event, "A", 0b1).await;
    let b = zone_gate(&app, &event, "B", 0b1).await;
    let t0 = now_ms() - 60_000;
    let ca = checkin(a.next_seq, serial(&people[0]), "in", t0, 0);
    let cb = checkin(b.next_seq, serial(&people[1]), "in", t0 + 5, 0);
    // Pushed at the same moment: the second replay waits for the first and sees its entry.
    let (ra, rb) = tokio::join!(push(&app, &a, vec![ca]), push(&app, &b, vec![cb.clone()]));
    ra.assert_status(200);
    rb.assert_status(200);
    let found = over_capacity(&app, &event).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["checkin_ids"], json!([cb["id"]]));
}

async fn patch_settings(app: &TestApp, event: &str, settings: Value) -> crate::helpers::Resp {
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{event}"),
        json!({ "settings": settings }),
    )
    .await
}

async fn multi_day_settings_are_checked_and_replicated(app: TestApp) {
    let (event, _) = live_event(&app, 1).await;
    let gate = zone_gate(&app, &event, "Door", 0).await;
    patch_settings(&app, &event, json!({"auto_checkout_at": "25:00"}))
        .await
        .assert_problem(422, Some("settings.auto_checkout_at"));
    patch_settings(&app, &event, json!({"utc_offset_minutes": 900}))
        .await
        .assert_problem(422, Some("settings.utc_offset_minutes"));
    patch_settings(
        &app,
        &event,
        json!({"ticket_types": [{"name": "Day 1", "valid_days": ["2026-02-30"]}]}),
    )
    .await
    .assert_problem(422, Some("settings.ticket_types[0].valid_days"));
    patch_settings(
        &app,
        &event,
        json!({"ticket_types": [{"name": "Day 1", "entries_per_day": 0}]}),
    )
    .await
    .assert_problem(422, Some("settings.ticket_types[0].entries_per_day"));
    patch_settings(
        &app,
        &event,
        json!({"auto_checkout_at": "03:00", "utc_offset_minutes": 60,
               "ticket_types": [{"name": "Day 1", "valid_days": ["2026-12-01"], "entries_per_day": 2}]}),
    )
    .await
    .assert_status(200);
    let cfg = config_of(&app, &event, &gate.id).await;
    assert_eq!(cfg.utc_offset_minutes, 60);
    let checkout = cfg
        .auto_checkout
        .expect("the daily check-out is replicated");
    assert_eq!(
        (checkout.minute_of_day, checkout.utc_offset_minutes),
        (180, 60)
    );
    assert_eq!(cfg.ticket_types.len(), 1);
    assert_eq!(cfg.ticket_types[0].entries_per_day, Some(2));
}

async fn after_the_daily_check_out_a_new_days_entry_is_no_conflict_and_nobody_counts_inside(
    app: TestApp,
) {
    let (event, people) = live_event(&app, 2).await;
    // The check-out was 02:00 UTC (03:00 at UTC+1) today; the entries below were yesterday.
    let now = now_ms();
    let day = 86_400_000;
    let checkout_ms = now / day * day + 2 * 3_600_000;
    let checkout_ms = if checkout_ms > now {
        checkout_ms - day
    } else {
        checkout_ms
    };
    patch_settings(
        &app,
        &event,
        json!({"auto_checkout_at": "03:00", "utc_offset_minutes": 60}),
    )
    .await
    .assert_status(200);
    let a = zone_gate(&app, &event, "A", 0).await;
    let b = zone_gate(&app, &event, "B", 0).await;
    // 23:00 local the evening before (checked out at 03:00 local).
    let before = checkout_ms - 4 * 3_600_000;
    let (p0, p1) = (serial(&people[0]), serial(&people[1]));
    push(
        &app,
        &a,
        vec![
            checkin(a.next_seq, p0, "in", before - 60_000, 0),
            checkin(a.next_seq + 1, p1, "in", before - 50_000, 0),
        ],
    )
    .await
    .assert_status(200);
    // Nobody scanned out; after the check-out both count as outside.
    let att = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/attendance"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(att["inside"], 0, "{att}");
    assert_eq!(att["admitted_tickets"], 2, "{att}");
    // The next morning one comes back through another gate: an entry, not a duplicate.
    let again = checkin(b.next_seq, p0, "in", checkout_ms + 60_000, 0);
    let r = push(&app, &b, vec![again]).await.assert_status(200).clone();
    assert_eq!(r["results"][0]["conflicts"], json!([]), "{r}");
    assert_eq!(r["results"][0]["outcome"], "inside");
    let conflicts = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/conflicts"),
        )
        .await
        .assert_status(200)["items"]
        .as_array()
        .unwrap()
        .clone();
    assert!(conflicts.is_empty(), "{conflicts:?}");
    let att = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{event}/attendance"),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(att["inside"], 1, "{att}");
    // The gates learn that entry as the new day's first.
    let presence = app
        .changes(&event, 0)
        .await
        .into_iter()
        .filter_map(|c| match c.data {
            ChangeData::Presence(p) if p.serial == p0 => Some(p),
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!((presence.entries, presence.day_entries), (2, 1));
    assert_eq!(
        presence.day,
        sync_protocol::days::local_day(checkout_ms + 60_000, 60)
    );
}
