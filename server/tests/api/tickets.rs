use serde_json::json;
use sync_protocol::wire::{ChangeData, TicketStatus};
use sync_protocol::{KeyRing, SignedTicket};

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::participants::sync_head;

backend_tests!(
    reissue_gets_a_new_serial_and_revokes_the_old_one,
    revoking_is_idempotent_and_blocks_the_qr_code,
    ticket_png_decodes_to_a_credential_that_verifies,
    the_camera_decoder_reads_the_ticket_png_at_gate_scales_and_angles,
    ticket_routes_check_role_token_and_event,
);

async fn reissue_gets_a_new_serial_and_revokes_the_old_one(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let p = app
        .create_participant(ev, json!({"name": "A", "issue_ticket": false}))
        .await;
    assert!(p["ticket"].is_null());
    let id = p["id"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants/{id}/ticket");

    let first = app.post_empty(Some(&app.staff), &path).await;
    let first = first.assert_status(201).clone();
    let s1 = first["serial"].as_u64().unwrap();
    let cursor = sync_head(&app, ev).await;

    let second = app
        .post(Some(&app.staff), &path, json!({"scopes": 5}))
        .await;
    let second = second.assert_status(201).clone();
    let s2 = second["serial"].as_u64().unwrap();
    assert_ne!(s1, s2);
    assert_eq!(second["scopes"], 5);
    assert_ne!(first["credential"], second["credential"]);
    assert_ne!(first["short_code"], second["short_code"]);

    let changes = app.changes(ev, cursor).await;
    let status_of = |serial: u64| {
        changes.iter().find_map(|c| match &c.data {
            ChangeData::Ticket(t) if t.serial == serial => Some(t.status),
            _ => None,
        })
    };
    assert_eq!(status_of(s1), Some(TicketStatus::Revoked));
    assert_eq!(status_of(s2), Some(TicketStatus::Valid));
    assert!(changes.iter().any(
        |c| matches!(&c.data, ChangeData::Revocation(r) if r.serial == s1 && r.hlc.as_u64() > 0)
    ));

    let got = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/participants/{id}"),
        )
        .await;
    assert_eq!(got.assert_status(200)["ticket"]["serial"], s2);

    // Custom validity; validation names the field.
    let r = app
        .post(
            Some(&app.staff),
            &path,
            json!({"valid_from": "2026-12-01T00:00:00Z", "valid_until": "2026-12-03T00:00:00Z"}),
        )
        .await;
    let r = r.assert_status(201);
    assert_eq!(r["valid_until"], "2026-12-03T00:00:00Z");
    app.post(
        Some(&app.staff),
        &path,
        json!({"valid_from": "2026-12-05T00:00:00Z", "valid_until": "2026-12-03T00:00:00Z"}),
    )
    .await
    .assert_problem(422, Some("valid_until"));
    app.post(Some(&app.staff), &path, json!({"scopes": -1}))
        .await
        .assert_problem(422, Some("scopes"));
    app.post(Some(&app.staff), &path, json!({"colour": 1}))
        .await
        .assert_problem(422, Some("colour"));
}

async fn revoking_is_idempotent_and_blocks_the_qr_code(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let p = app.create_participant(ev, json!({"name": "A"})).await;
    let id = p["id"].as_str().unwrap();
    let serial = p["ticket"]["serial"].as_u64().unwrap();
    let revoke = format!("/api/v1/events/{ev}/participants/{id}/ticket/revoke");
    let cursor = sync_head(&app, ev).await;

    let r = app
        .post(Some(&app.staff), &revoke, json!({"reason": "lost"}))
        .await;
    let r = r.assert_status(200);
    assert_eq!(r["status"], "revoked");
    assert!(r["revoked_at"].is_string());
    let after_first = sync_head(&app, ev).await;
    assert!(after_first > cursor);
    let again = app.post_empty(Some(&app.staff), &revoke).await;
    assert_eq!(again.assert_status(200)["status"], "revoked");
    assert_eq!(
        sync_head(&app, ev).await,
        after_first,
        "a repeated revoke changes nothing"
    );
    let changes = app.changes(ev, cursor).await;
    assert!(changes.iter().any(|c| matches!(&c.data, ChangeData::Revocation(r) if r.serial == serial && r.reason.as_deref() == Some("lost"))));

    app.get(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{id}/ticket.png"),
    )
    .await
    .assert_problem(409, None);
    let without = app
        .create_participant(ev, json!({"name": "B", "issue_ticket": false}))
        .await;
    let wid = without["id"].as_str().unwrap();
    app.post_empty(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{wid}/ticket/revoke"),
    )
    .await
    .assert_problem(404, None);
    app.get(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{wid}/ticket.svg"),
    )
    .await
    .assert_problem(404, None);
}

async fn ticket_png_decodes_to_a_credential_that_verifies(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let p = app.create_participant(ev, json!({"name": "Scan Me"})).await;
    let id = p["id"].as_str().unwrap();
    let credential = p["ticket"]["credential"].as_str().unwrap().to_owned();

    let r = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}/ticket.png"),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.content_type, "image/png");
    let image = image::load_from_memory(&r.bytes).expect("a PNG").to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    let (meta, text) = grids[0].decode().expect("decodes");
    assert_eq!(text, credential);
    assert_eq!(
        meta.version.0, 6,
        "140 alphanumeric characters at ECC M fit version 6"
    );

    let keys = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{ev}/keys"))
        .await;
    let keys = keys.assert_status(200);
    let mut ring = KeyRing::new();
    for k in keys["items"].as_array().unwrap() {
        let bytes: [u8; 32] = hex::decode(k["public_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        ring.insert_bytes(
            u32::try_from(k["key_id"].as_u64().unwrap()).unwrap(),
            &bytes,
        )
        .unwrap();
    }
    let ticket = SignedTicket::decode(&text).expect("a U1 ticket");
    ring.verify(&ticket)
        .expect("signature verifies with the event's public key");
    assert_eq!(
        ticket.fields.serial,
        p["ticket"]["serial"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(ticket.fields.event_tag),
        event["event_tag"].as_u64().unwrap()
    );

    let svg = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}/ticket.svg"),
        )
        .await;
    assert_eq!(svg.content_type, "image/svg+xml");
    assert!(String::from_utf8(svg.bytes).unwrap().contains("<svg"));
}

async fn ticket_routes_check_role_token_and_event(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let other = app.create_event("Other").await;
    let other = other["id"].as_str().unwrap();
    let p = app.create_participant(ev, json!({"name": "A"})).await;
    let id = p["id"].as_str().unwrap();
    let serial = p["ticket"]["serial"].clone();
    for suffix in ["ticket", "ticket/revoke"] {
        let path = format!("/api/v1/events/{ev}/participants/{id}/{suffix}");
        app.post_empty(None, &path).await.assert_problem(401, None);
        app.post_empty(Some(&app.viewer), &path)
            .await
            .assert_problem(403, None);
        let wrong = format!("/api/v1/events/{other}/participants/{id}/{suffix}");
        app.post_empty(Some(&app.admin), &wrong)
            .await
            .assert_problem(404, None);
    }
    for suffix in ["ticket.png", "ticket.svg"] {
        app.get(
            None,
            &format!("/api/v1/events/{ev}/participants/{id}/{suffix}"),
        )
        .await
        .assert_problem(401, None);
        app.get(
            Some(&app.admin),
            &format!("/api/v1/events/{other}/participants/{id}/{suffix}"),
        )
        .await
        .assert_problem(404, None);
    }
    let got = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/participants/{id}"),
        )
        .await;
    let got = got.assert_status(200);
    assert_eq!(got["ticket"]["serial"], serial);
    assert_eq!(
        got["ticket"]["status"], "valid",
        "rejected requests changed nothing"
    );
}

/// The gate's camera decoder (the `hardware` crate) reads the server's own ticket PNG as a camera
/// would see it: scaled down or up, turned, small inside a 1280×720 frame.
async fn the_camera_decoder_reads_the_ticket_png_at_gate_scales_and_angles(app: TestApp) {
    use hardware::{LumaFrame, QrDecoder};
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let p = app.create_participant(ev, json!({"name": "Camera"})).await;
    let id = p["id"].as_str().unwrap();
    let credential = p["ticket"]["credential"].as_str().unwrap().to_owned();
    let r = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}/ticket.png?layout=qr"),
        )
        .await;
    let png = LumaFrame::from_image(&image::load_from_memory(&r.bytes).expect("a PNG"));
    let decoder = QrDecoder::for_files();
    let side = png.width();
    // From about 3 px per module (a badge far from the lens) to full size, at angles a hand-held
    // phone screen shows up with.
    for target in [140u32, 200, 300, side] {
        let scaled = png.resize(target, target);
        for degrees in [0.0f32, 90.0, 180.0, 270.0, 12.0, 33.0] {
            let turned = scaled.rotate(degrees, 255);
            let mut frame = LumaFrame::filled(1280, 720, 200).unwrap();
            frame.paste(&turned, 500, 100);
            assert_eq!(
                decoder.decode(&frame).as_deref(),
                Some(credential.as_str()),
                "{target} px at {degrees}°"
            );
        }
    }
}
