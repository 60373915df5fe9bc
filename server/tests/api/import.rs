use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, csv_path};
use crate::participants::sync_head;

backend_tests!(
    shared_exports_import_and_reimport_unchanged,
    dry_run_writes_nothing,
    a_bad_row_fails_the_whole_import_unless_partial,
    reimport_updates_changed_rows_and_replicates_renames,
    import_checks_media_type_header_role_and_event,
    a_large_import_takes_the_bulk_path_and_a_renaming_reimport_upserts_the_log,
    rows_of_later_batches_are_checked_against_every_earlier_row,
    shop_barcodes_become_keyed_credentials_and_void_rows_revoked_tickets,
    a_ticket_types_scopes_are_the_zones_its_new_tickets_open,
);

async fn all_participants(app: &TestApp, ev: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(
                Some(&app.viewer),
                &format!("/api/v1/events/{ev}/participants?limit=1000&cursor={cursor}"),
            )
            .await;
        let page = r.assert_status(200).clone();
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

fn find<'a>(people: &'a [Value], name: &str) -> &'a Value {
    people
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} not imported"))
}

async fn shared_exports_import_and_reimport_unchanged(app: TestApp) {
    for file in [
        "simple.csv",
        "pretix_order_positions.csv",
        "eventbrite_attendee_summary.csv",
    ] {
        let event = app.create_event(file).await;
        let ev = event["id"].as_str().unwrap();
        let path = format!("/api/v1/events/{ev}/participants/import");
        let csv = std::fs::read(csv_path(file)).unwrap();

        let r = app.post_csv(Some(&app.staff), &path, csv.clone()).await;
        let r = r.assert_status(200);
        assert_eq!(r["created"], 120, "{file}: {r}");
        assert_eq!(r["updated"], 0);
        assert_eq!(r["unchanged"], 0);
        assert_eq!(r["errors"], json!([]));
        assert_eq!(r["dry_run"], false);

        let people = all_participants(&app, ev).await;
        assert_eq!(people.len(), 120, "{file}");
        assert!(people.iter().all(|p| p["ticket"]["status"] == "valid"));
        // Every new ticket is in the change log.
        let tickets = app
            .changes(ev, 0)
            .await
            .into_iter()
            .filter(|c| matches!(c.data, sync_protocol::wire::ChangeData::Ticket(_)))
            .count();
        assert_eq!(tickets, 120);

        match file {
            "simple.csv" => {
                let p = find(&people, "Chloé 박");
                assert_eq!(p["email"], "chlo.3.0@example.org");
                assert_eq!(p["organization"], "서울대학교");
                assert_eq!(p["external_id"], "EXT-3-000000");
                assert_eq!(p["phone"], "+82-10-9916-3136");
                let p = find(&people, "Yuki 이");
                assert_eq!(p["organization"], "Acme, Inc.");
            }
            "pretix_order_positions.csv" => {
                let p = find(&people, "Jisoo Park");
                assert_eq!(p["email"], "jisoo.park.2.0@example.org");
                assert_eq!(p["organization"], "Umbrella GmbH");
                assert_eq!(p["ticket_type"], "VIP");
                assert_eq!(p["external_id"], "Z7X9K-1");
                let p = find(&people, "Søren 최");
                assert_eq!(p["organization"], "Globex \"Intl\"");
            }
            _ => {
                let p = find(&people, "John 박");
                assert_eq!(p["email"], "john.1.0@example.org");
                assert_eq!(p["organization"], "Tech Corp");
                assert_eq!(p["ticket_type"], "Staff");
                assert_eq!(p["phone"], "+82-10-2033-5179");
            }
        }

        // Importing the same file again changes nothing.
        let head = sync_head(&app, ev).await;
        let again = app.post_csv(Some(&app.staff), &path, csv).await;
        let again = again.assert_status(200);
        assert_eq!(
            (
                again["created"].as_u64(),
                again["updated"].as_u64(),
                again["unchanged"].as_u64()
            ),
            (Some(0), Some(0), Some(120)),
            "{file}: {again}"
        );
        assert_eq!(all_participants(&app, ev).await.len(), 120);
        assert_eq!(sync_head(&app, ev).await, head, "no new changes");
    }
}

async fn dry_run_writes_nothing(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let csv = std::fs::read(csv_path("simple.csv")).unwrap();
    let head = sync_head(&app, ev).await;
    let r = app
        .post_csv(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/import?dry_run=true"),
            csv.clone(),
        )
        .await;
    let r = r.assert_status(200);
    assert_eq!(r["created"], 120);
    assert_eq!(r["dry_run"], true);
    assert!(all_participants(&app, ev).await.is_empty());
    assert_eq!(sync_head(&app, ev).await, head);

    // After a real import, a dry run of a changed file reports updates without making them.
    app.post_csv(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/import"),
        csv,
    )
    .await
    .assert_status(200);
    let changed = "name,email,external_id\nRenamed Person,chlo.3.0@example.org,EXT-3-000000\nNew Person,new@example.org,NEW-1\n";
    let r = app
        .post_csv(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/import?dry_run=true"),
            changed,
        )
        .await;
    let r = r.assert_status(200);
    assert_eq!(
        (r["created"].as_u64(), r["updated"].as_u64()),
        (Some(1), Some(1))
    );
    let people = all_participants(&app, ev).await;
    assert_eq!(people.len(), 120);
    find(&people, "Chloé 박");
}

async fn a_bad_row_fails_the_whole_import_unless_partial(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants/import");
    let csv = "name,email,external_id\nGood One,one@example.org,G-1\n,nameless@example.org,G-2\nGood Two,two@example.org,G-3\nBad Mail,not-an-address,G-4\n";
    let head = sync_head(&app, ev).await;

    let r = app.post_csv(Some(&app.staff), &path, csv).await;
    r.assert_problem(422, Some("name"));
    let errors = r.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{}", r.body);
    assert_eq!(errors[0]["line"], 3);
    assert_eq!(errors[0]["field"], "name");
    assert_eq!(errors[1]["line"], 5);
    assert_eq!(errors[1]["field"], "email");
    assert!(errors.iter().all(|e| e["message"].is_string()));
    assert!(
        all_participants(&app, ev).await.is_empty(),
        "all or nothing"
    );
    assert_eq!(sync_head(&app, ev).await, head);

    let r = app
        .post_csv(Some(&app.staff), &format!("{path}?partial=true"), csv)
        .await;
    let r = r.assert_status(200);
    assert_eq!(r["created"], 2);
    assert_eq!(r["errors"].as_array().unwrap().len(), 2);
    let people = all_participants(&app, ev).await;
    assert_eq!(people.len(), 2);
    find(&people, "Good One");
    find(&people, "Good Two");

    // Duplicate keys inside one file are row errors too.
    let dup = "name,external_id\nA,X-1\nB,X-1\n";
    let r = app.post_csv(Some(&app.staff), &path, dup).await;
    r.assert_problem(422, Some("external_id"));
    assert_eq!(r.body["errors"][0]["line"], 3);
    assert_eq!(all_participants(&app, ev).await.len(), 2);
}

async fn reimport_updates_changed_rows_and_replicates_renames(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants/import");
    app.post_csv(Some(&app.staff), &path, "name,email,phone,external_id\nA Person,a@example.org,111,X-1\nB Person,b@example.org,222,\n")
        .await
        .assert_status(200);
    let before = all_participants(&app, ev).await;
    let a_serial = find(&before, "A Person")["ticket"]["serial"]
        .as_u64()
        .unwrap();
    let head = sync_head(&app, ev).await;

    // X-1 renamed (matched by external id), B matched by e-mail (any case) gains an
    // organisation; an empty phone cell keeps the stored phone.
    let csv = "name,email,phone,organization,external_id\nA Renamed,a@example.org,,,X-1\nB Person,B@Example.org,222,Acme,\nC Person,c@example.org,,,\n";
    let r = app.post_csv(Some(&app.staff), &path, csv).await;
    let r = r.assert_status(200);
    assert_eq!(
        (
            r["created"].as_u64(),
            r["updated"].as_u64(),
            r["unchanged"].as_u64()
        ),
        (Some(1), Some(2), Some(0)),
        "{r}"
    );
    let people = all_participants(&app, ev).await;
    assert_eq!(people.len(), 3);
    let a = find(&people, "A Renamed");
    assert_eq!(a["phone"], "111");
    assert_eq!(
        a["ticket"]["serial"], a_serial,
        "an update keeps the ticket"
    );
    assert_eq!(find(&people, "B Person")["organization"], "Acme");

    let changes = app.changes(ev, head).await;
    let renamed = changes.iter().find_map(|c| match &c.data {
        sync_protocol::wire::ChangeData::Ticket(t) if t.serial == a_serial => {
            t.display_name.clone()
        }
        _ => None,
    });
    assert_eq!(renamed.as_deref(), Some("A Renamed"));
    // Gates show the holder's organization: B's new one is replicated with B's ticket.
    let b_serial = find(&people, "B Person")["ticket"]["serial"].clone();
    let b_org = changes.iter().find_map(|c| match &c.data {
        sync_protocol::wire::ChangeData::Ticket(t) if json!(t.serial) == b_serial => {
            t.organization.clone()
        }
        _ => None,
    });
    assert_eq!(b_org.as_deref(), Some("Acme"));
    assert_eq!(
        changes.len(),
        3,
        "the rename, B's organization and C's new ticket"
    );

    // Without tickets.
    let r = app
        .post_csv(
            Some(&app.staff),
            &format!("{path}?issue_tickets=false"),
            "name,email\nD Person,d@example.org\n",
        )
        .await;
    assert_eq!(r.assert_status(200)["tickets_issued"], 0);
    let people = all_participants(&app, ev).await;
    assert!(find(&people, "D Person")["ticket"].is_null());
}

async fn import_checks_media_type_header_role_and_event(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants/import");
    let csv = "name,email\nA,a@example.org\n";
    app.post_csv(None, &path, csv)
        .await
        .assert_problem(401, None);
    app.post_csv(Some(&app.viewer), &path, csv)
        .await
        .assert_problem(403, None);
    let missing = uuid::Uuid::now_v7();
    app.post_csv(
        Some(&app.staff),
        &format!("/api/v1/events/{missing}/participants/import"),
        csv,
    )
    .await
    .assert_problem(404, None);
    let r = app
        .send(
            app.client
                .post(app.url(&path))
                .bearer_auth(&app.staff)
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
    r.assert_problem(415, None);
    let r = app
        .post_csv(Some(&app.staff), &path, "email,phone\na@example.org,1\n")
        .await;
    r.assert_problem(422, Some("name"));
    let r = app.post_csv(Some(&app.staff), &path, "").await;
    r.assert_problem(422, Some("file"));
    app.get(None, &format!("/api/v1/events/{ev}/participants"))
        .await
        .assert_problem(401, None);
    assert!(all_participants(&app, ev).await.is_empty());
}

/// 2,500 rows: above the bulk threshold, so PostgreSQL takes the COPY paths, and the renaming
/// re-import takes the change log's upsert fallback.
async fn a_large_import_takes_the_bulk_path_and_a_renaming_reimport_upserts_the_log(app: TestApp) {
    const N: usize = 2_500;
    let event = app.create_event("Big").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants/import");
    let csv = |suffix: &str| {
        let mut out = String::from("external_id,name,email,organization,note\n");
        for i in 0..N {
            out.push_str(&format!(
                "B-{i},Person {i}{suffix},p{i}@example.org,\"Org\tTab, Inc.\",line\\back\n"
            ));
        }
        out
    };
    let r = app.post_csv(Some(&app.staff), &path, csv("")).await;
    let r = r.assert_status(200);
    assert_eq!(r["created"], N);
    assert_eq!(r["tickets_issued"], N);
    let people = all_participants(&app, ev).await;
    assert_eq!(people.len(), N);
    let p = find(&people, "Person 1234");
    assert_eq!(p["organization"], "Org\tTab, Inc.");
    assert_eq!(p["attention"], "line\\back");
    let changes = app.changes(ev, 0).await;
    let tickets: Vec<u64> = changes
        .iter()
        .filter_map(|c| match &c.data {
            sync_protocol::wire::ChangeData::Ticket(t) => Some(t.serial),
            _ => None,
        })
        .collect();
    assert_eq!(tickets.len(), N);
    let seqs: Vec<u64> = changes.iter().map(|c| c.change_seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "dense, in order"
    );

    let head = sync_head(&app, ev).await;
    let r = app.post_csv(Some(&app.staff), &path, csv(" Jr")).await;
    let r = r.assert_status(200);
    assert_eq!(
        (r["created"].as_u64(), r["updated"].as_u64()),
        (Some(0), Some(N as u64))
    );
    let renamed = app.changes(ev, head).await;
    assert_eq!(renamed.len(), N, "one change per renamed ticket");
    assert!(renamed.iter().all(|c| matches!(&c.data,
        sync_protocol::wire::ChangeData::Ticket(t) if t.display_name.as_deref().is_some_and(|n| n.ends_with(" Jr")))));
    // One row per entity: the log did not grow.
    assert_eq!(app.changes(ev, 0).await.len(), changes.len());
}

/// 10,001 rows: three writer batches, so every key a row is checked against comes from an
/// earlier batch through the scratch table, and the changes are spilled to the staging table
/// between batches. A repeat in the last row of a row from the first batch is still caught;
/// the imported tickets reach the change log once each, in order; a re-import that renames
/// everyone updates each participant once.
async fn rows_of_later_batches_are_checked_against_every_earlier_row(app: TestApp) {
    const N: usize = 10_001;
    let event = app.create_event("Batches").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants/import");
    let csv = |suffix: &str, last_repeats_first: bool| {
        let mut out = String::from("external_id,name,email\n");
        for i in 0..N {
            let id = if last_repeats_first && i == N - 1 {
                0
            } else {
                i
            };
            out.push_str(&format!("L-{id},Person {i}{suffix},l{i}@example.org\n"));
        }
        out
    };
    let before = app.changes(ev, 0).await.len();
    let r = app.post_csv(Some(&app.staff), &path, csv("", true)).await;
    r.assert_problem(422, Some("external_id"));
    let r = r.body;
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{r}");
    assert_eq!(errors[0]["line"], N + 1);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("already used on line 2"),
        "{r}"
    );
    assert_eq!(app.changes(ev, 0).await.len(), before, "nothing written");

    let r = app.post_csv(Some(&app.staff), &path, csv("", false)).await;
    let r = r.assert_status(200);
    assert_eq!(
        (r["created"].as_u64(), r["tickets_issued"].as_u64()),
        (Some(N as u64), Some(N as u64))
    );
    let changes = app.changes(ev, 0).await;
    let mut serials: Vec<u64> = changes
        .iter()
        .filter_map(|c| match &c.data {
            sync_protocol::wire::ChangeData::Ticket(t) => Some(t.serial),
            _ => None,
        })
        .collect();
    assert_eq!(serials.len(), N);
    serials.sort_unstable();
    serials.dedup();
    assert_eq!(serials.len(), N, "one change per ticket");
    let seqs: Vec<u64> = changes.iter().map(|c| c.change_seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "dense, in order"
    );

    // Renaming everyone: each row matches its own participant (none matches one created or
    // matched by an earlier batch), so all are updated and none is an error.
    let head = sync_head(&app, ev).await;
    let r = app
        .post_csv(Some(&app.staff), &path, csv(" Jr", false))
        .await;
    let r = r.assert_status(200);
    assert_eq!(
        (r["created"].as_u64(), r["updated"].as_u64()),
        (Some(0), Some(N as u64))
    );
    let renamed = app.changes(ev, head).await;
    assert_eq!(renamed.len(), N, "one change per renamed ticket");
    assert_eq!(app.changes(ev, 0).await.len(), changes.len());

    // The same file again, with one participant's row repeated at the end under its e-mail
    // only: the first batch already used that e-mail.
    let mut again = csv(" Jr", false);
    again.push_str(",Person 3 Again,l3@example.org\n");
    let r = app.post_csv(Some(&app.staff), &path, again).await;
    r.assert_problem(422, Some("email"));
    assert_eq!(r.body["errors"][0]["line"], N + 2, "{}", r.body);
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already used on line 5"),
        "{}",
        r.body
    );
}

/// A barcode column becomes a keyed credential of the ticket (replicated by its lookup key,
/// never as text), a row the shop marks void gets a revoked ticket, and the summary counts both;
/// re-importing the same file changes nothing; a cell that cannot be a barcode names `barcode`.
async fn shop_barcodes_become_keyed_credentials_and_void_rows_revoked_tickets(app: TestApp) {
    let event = app.create_event_running_now("Shop", "draft").await;
    let ev = event["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants/import");
    let csv = "Order code,Position ID,Status,Attendee name,Attendee email,Ticket secret\n\
               Q1,1,Paid,Ana Paid,ana@example.org,sec7rq2mzx41\n\
               Q2,1,Canceled,Ben Cancelled,ben@example.org,sec9kd0wpl22\n\
               Q3,1,Paid,Cy Nobarcode,cy@example.org,\n";
    let before = app.changes(ev, 0).await.len();
    let r = app.post_csv(Some(&app.staff), &path, csv.to_owned()).await;
    let r = r.assert_status(200);
    assert_eq!(r["created"], 3, "{r}");
    assert_eq!(r["cancelled"], 1, "{r}");
    assert_eq!(r["barcodes"], 2, "{r}");
    let people = all_participants(&app, ev).await;
    assert_eq!(find(&people, "Ana Paid")["ticket"]["status"], "valid");
    let ben = find(&people, "Ben Cancelled");
    assert_eq!(ben["ticket"]["status"], "revoked");
    let ben_serial = ben["ticket"]["serial"].as_u64().unwrap();
    let ana_serial = find(&people, "Ana Paid")["ticket"]["serial"]
        .as_u64()
        .unwrap();
    assert!(
        people
            .iter()
            .all(|p| !p.to_string().contains("sec7rq2mzx41")),
        "the barcode is a credential, not metadata"
    );

    let changes = app.changes(ev, 0).await;
    let mut barcodes: Vec<(String, u64)> = changes
        .iter()
        .filter_map(|c| match &c.data {
            sync_protocol::wire::ChangeData::Barcode(b) => Some((b.key.clone(), b.serial)),
            _ => None,
        })
        .collect();
    barcodes.sort_by_key(|b| b.1);
    assert_eq!(barcodes.len(), 2);
    assert_eq!(barcodes.iter().map(|b| b.1).collect::<Vec<_>>(), {
        let mut v = vec![ana_serial, ben_serial];
        v.sort_unstable();
        v
    });
    assert!(
        barcodes
            .iter()
            .all(|(k, _)| k.len() == 32 && !k.contains("sec"))
    );
    assert!(changes.iter().any(|c| matches!(&c.data,
        sync_protocol::wire::ChangeData::Revocation(r) if r.serial == ben_serial)));
    assert!(changes.iter().any(|c| matches!(&c.data,
        sync_protocol::wire::ChangeData::Ticket(t) if t.serial == ben_serial
            && t.status == sync_protocol::wire::TicketStatus::Revoked)));
    assert!(changes.len() > before);

    // The same file again: nothing new to store or replicate.
    let head = changes.iter().map(|c| c.change_seq).max().unwrap();
    let r = app.post_csv(Some(&app.staff), &path, csv.to_owned()).await;
    let r = r.assert_status(200);
    assert_eq!(
        (r["created"].as_u64(), r["barcodes"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert!(app.changes(ev, head).await.is_empty());

    // The online redeem looks a barcode up like the gate does.
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{ev}"),
        json!({"status": "live"}),
    )
    .await
    .assert_status(200);
    let door = crate::sync::create_gate(&app, ev, "Door", None).await;
    let redeem = async |credential: &str| {
        app.post(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/redeem"),
            json!({"credential": credential, "gate_id": door, "direction": "in"}),
        )
        .await
        .assert_status(200)
        .clone()
    };
    let r = redeem(" sec7rq2mzx41 ").await;
    assert_eq!(
        (r["decision"].as_str(), r["name"].as_str()),
        (Some("admit"), Some("Ana Paid")),
        "{r}"
    );
    assert_eq!(r["ticket_serial"], ana_serial, "{r}");
    let r = redeem("sec9kd0wpl22").await;
    assert_eq!(
        (r["decision"].as_str(), r["reason"].as_str()),
        (Some("reject"), Some("revoked")),
        "{r}"
    );
    let r = redeem("secneverissued").await;
    assert_eq!(
        (r["decision"].as_str(), r["reason"].as_str()),
        (Some("reject"), Some("malformed")),
        "{r}"
    );

    let bad = "Attendee name,Barcode\nDee Bad,12 34\n";
    let r = app.post_csv(Some(&app.staff), &path, bad.to_owned()).await;
    r.assert_problem(422, Some("barcode"));
    assert_eq!(r.body["errors"][0]["line"], 2, "{}", r.body);
}

/// A ticket type's `scopes` in the event settings are the zones its new tickets open, through
/// the import and the participants API; an explicit `scopes` wins; a type without a rule (or no
/// type) opens the default zone; a zero bitmask is refused naming the field.
async fn a_ticket_types_scopes_are_the_zones_its_new_tickets_open(app: TestApp) {
    let event = app.create_event("Types").await;
    let ev = event["id"].as_str().unwrap();
    let settings = |types: Value| json!({"settings": {"ticket_types": types}});
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{ev}"),
        settings(json!([{"name": "VIP", "scopes": 0}])),
    )
    .await
    .assert_problem(422, Some("settings.ticket_types[0].scopes"));
    app.patch(
        Some(&app.admin),
        &format!("/api/v1/events/{ev}"),
        settings(json!([{"name": "VIP", "scopes": 3}, {"name": "Crew", "scopes": 4}])),
    )
    .await
    .assert_status(200);

    let path = format!("/api/v1/events/{ev}/participants/import");
    let csv = "name,ticket_type\nVera,vip\nGus,General\nCal, Crew \nNoa,\n";
    app.post_csv(Some(&app.staff), &path, csv.to_owned())
        .await
        .assert_status(200);
    let people = all_participants(&app, ev).await;
    let scopes = |name: &str| find(&people, name)["ticket"]["scopes"].as_u64();
    assert_eq!(
        [scopes("Vera"), scopes("Gus"), scopes("Cal"), scopes("Noa")],
        [Some(3), Some(1), Some(4), Some(1)]
    );

    let create = async |body: Value| {
        app.post(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants"),
            body,
        )
        .await
        .assert_status(201)
        .clone()
    };
    let p = create(json!({"name": "Pia", "ticket_type": "VIP"})).await;
    assert_eq!(p["ticket"]["scopes"], 3, "{p}");
    let p = create(json!({"name": "Ola", "ticket_type": "VIP", "scopes": 8})).await;
    assert_eq!(p["ticket"]["scopes"], 8, "{p}");
}
