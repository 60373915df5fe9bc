//! Ticket e-mail end to end: queued by `POST …/tickets/send`, sent by the worker to a real SMTP
//! server on loopback (the test's sink), parsed as a mail client would, and its inline QR code
//! decoded with the gate's decoder.

use std::collections::HashMap;
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{Value, json};
use server::settings::Secret;

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::smtp_sink::{SmtpSink, free_port};

/// Polls the event's messages until `done` holds for the list, or fails after a generous bound
/// (a liveness guard, not a timing assertion).
async fn wait_mails(
    app: &TestApp,
    ev: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..600 {
        let r = app
            .get(
                Some(&app.viewer),
                &format!("/api/v1/events/{ev}/mails?limit=1000"),
            )
            .await;
        let items = r.assert_status(200)["items"].as_array().unwrap().clone();
        if done(&items) {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: never happened");
}

fn all_sent(n: usize) -> impl Fn(&[Value]) -> bool {
    move |items| items.len() == n && items.iter().all(|m| m["status"] == "sent")
}

/// A received message, parsed: (to, subject, text, html, the inline QR PNG's decoded text).
struct Parsed {
    to: String,
    subject: String,
    message_id: String,
    text: String,
    html: String,
    qr: Option<String>,
}

fn parse(data: &[u8]) -> Parsed {
    let msg = MessageParser::default()
        .parse(data)
        .expect("a parseable message");
    let qr_part = msg
        .parts
        .iter()
        .find(|p| p.content_id() == Some("ticket-qr"))
        .expect("an inline part with Content-ID ticket-qr");
    let ct = qr_part.content_type().expect("content type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("image", Some("png")),
        "the QR is a PNG"
    );
    let png = image::load_from_memory(qr_part.contents()).expect("a PNG");
    let qr = hardware::QrDecoder::for_files().decode(&hardware::LumaFrame::from_image(&png));
    Parsed {
        to: msg
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or("")
            .to_owned(),
        subject: msg.subject().unwrap_or("").to_owned(),
        message_id: msg.message_id().unwrap_or("").to_owned(),
        text: msg.body_text(0).unwrap_or_default().into_owned(),
        html: msg.body_html(0).unwrap_or_default().into_owned(),
        qr,
    }
}

async fn people(app: &TestApp, ev: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (name, email) in [
        ("Ada Lovelace", Some("ada@example.org")),
        ("Grace Hopper", Some("grace@example.org")),
        ("Katherine Johnson", Some("katherine@example.org")),
        ("No Mail", None),
    ] {
        let mut body = json!({"name": name, "ticket_type": "Standard"});
        if let Some(e) = email {
            body["email"] = json!(e);
        }
        out.push(app.create_participant(ev, body).await);
    }
    out
}

async fn ticket_mails_reach_a_real_smtp_server_with_a_decodable_qr(backend: Backend) {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = spawn_app_with(backend, |s| {
        s.smtp_url = Some(Secret::new(url));
        s.mail_from = "Tickets <tickets@usher.test>".into();
    })
    .await;
    let event = app.create_event("Winter Summit").await;
    let ev = event["id"].as_str().unwrap();
    let people = people(&app, ev).await;
    let by_email: HashMap<String, &Value> = people
        .iter()
        .filter_map(|p| Some((p["email"].as_str()?.to_owned(), p)))
        .collect();

    // Viewers may not send.
    app.post(
        Some(&app.viewer),
        &format!("/api/v1/events/{ev}/tickets/send"),
        json!({}),
    )
    .await
    .assert_problem(403, None);
    let r = app
        .post_empty(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/tickets/send"),
        )
        .await;
    let summary = r.assert_status(202);
    assert_eq!(summary["queued"], 3, "{summary}");
    assert_eq!(summary["no_email"], 1, "{summary}");
    let mails = wait_mails(&app, ev, "three messages sent", all_sent(3)).await;
    assert!(
        mails
            .iter()
            .all(|m| m["transport"] == "smtp" && m["attempts"] == 1)
    );

    let received = sink.messages();
    assert_eq!(received.len(), 3, "each message once");
    for m in &received {
        assert_eq!(m.mail_from, "FROM:<tickets@usher.test>");
        let parsed = parse(&m.data);
        let p = by_email
            .get(&parsed.to)
            .expect("addressed to a participant");
        assert_eq!(m.rcpt_to, vec![format!("TO:<{}>", parsed.to)]);
        assert_eq!(parsed.subject, "Your ticket for Winter Summit");
        assert_eq!(
            parsed.qr.as_deref(),
            p["ticket"]["credential"].as_str(),
            "the inline QR decodes to the participant's credential"
        );
        let short = p["ticket"]["short_code"].as_str().unwrap();
        assert!(parsed.text.contains(short), "{}", parsed.text);
        assert!(parsed.text.contains("Hall A"), "the venue: {}", parsed.text);
        assert!(
            parsed.text.contains("Tue 1 Dec 2026, 09:00 UTC"),
            "{}",
            parsed.text
        );
        assert!(parsed.html.contains("cid:ticket-qr"), "{}", parsed.html);
        assert!(parsed.html.contains(short));
        assert!(parsed.html.contains(p["name"].as_str().unwrap()));
    }

    // The participant JSON carries the status.
    let id0 = people[0]["id"].as_str().unwrap();
    let p = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/participants/{id0}"),
        )
        .await;
    let p = p.assert_status(200);
    assert_eq!(p["ticket_mail"]["status"], "sent", "{p}");
    assert!(p["ticket_mail"]["sent_at"].is_string());
    let list = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/participants"),
        )
        .await;
    let list = list.assert_status(200);
    let statuses: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["ticket_mail"]["status"])
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "sent").count(), 3);
    assert_eq!(statuses.iter().filter(|s| s.is_null()).count(), 1);

    // Sending again sends nothing new, unless asked to resend.
    let r = app
        .post(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/tickets/send"),
            json!({}),
        )
        .await;
    let again = r.assert_status(202);
    assert_eq!(again["queued"], 0);
    assert_eq!(again["already_sent"], 3);
    let r = app
        .post(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/tickets/send"),
            json!({"participant_ids": [id0], "resend": true}),
        )
        .await;
    assert_eq!(r.assert_status(202)["queued"], 1);
    wait_mails(&app, ev, "the resent message", all_sent(4)).await;
    let received = sink.messages();
    assert_eq!(received.len(), 4);
    assert_eq!(parse(&received[3].data).to, "ada@example.org");

    // Bad requests name the field and queue nothing.
    let bogus = uuid::Uuid::now_v7();
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/tickets/send"),
        json!({"participant_ids": [id0, bogus], "resend": true}),
    )
    .await
    .assert_problem(422, Some("participant_ids[1]"));
    app.post(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/tickets/send"),
        json!({"participant_ids": "all"}),
    )
    .await
    .assert_problem(422, Some("participant_ids"));
    let mails = app
        .get(Some(&app.viewer), &format!("/api/v1/events/{ev}/mails"))
        .await;
    assert_eq!(
        mails.assert_status(200)["items"].as_array().unwrap().len(),
        4
    );
}

async fn while_the_mail_server_is_down_messages_wait_and_then_go_once(backend: Backend) {
    let port = free_port();
    let app = spawn_app_with(backend, |s| {
        s.smtp_url = Some(Secret::new(format!("smtp://127.0.0.1:{port}")));
        s.mail_retry_scale = 0.02;
    })
    .await;
    let event = app.create_event("Outage").await;
    let ev = event["id"].as_str().unwrap();
    let people = people(&app, ev).await;
    let r = app
        .post_empty(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/tickets/send"),
        )
        .await;
    assert_eq!(r.assert_status(202)["queued"], 3);
    // Every message was attempted at least twice and is still queued, with the reason.
    let failing = wait_mails(
        &app,
        ev,
        "failed attempts while the server is down",
        |items| {
            items.len() == 3
                && items.iter().all(|m| {
                    m["status"] == "queued"
                        && m["attempts"].as_i64().unwrap_or(0) >= 2
                        && m["last_error"].as_str().is_some_and(|e| !e.is_empty())
                })
        },
    )
    .await;
    assert!(
        failing[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("mail server"),
        "{}",
        failing[0]
    );
    let id0 = people[0]["id"].as_str().unwrap();
    let p = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/participants/{id0}"),
        )
        .await;
    assert_eq!(p.assert_status(200)["ticket_mail"]["status"], "queued");

    let sink = SmtpSink::start_on(port).await;
    wait_mails(&app, ev, "delivery once the server is up", all_sent(3)).await;
    // Give a duplicate the chance to arrive: further passes of the worker find nothing due.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = sink.messages();
    assert_eq!(received.len(), 3, "each message exactly once");
    let mut ids: Vec<String> = received.iter().map(|m| parse(&m.data).message_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct messages");
    let mut to: Vec<String> = received.iter().map(|m| parse(&m.data).to).collect();
    to.sort();
    assert_eq!(
        to,
        [
            "ada@example.org",
            "grace@example.org",
            "katherine@example.org"
        ]
    );
}

async fn without_smtp_the_organizers_template_goes_to_a_private_eml_file(backend: Backend) {
    let mut data_dir = std::path::PathBuf::new();
    let app = spawn_app_with(backend, |s| data_dir = s.data_dir.clone()).await;
    let event = app.create_event("Files").await;
    let ev = event["id"].as_str().unwrap();
    let p = app
        .create_participant(
            ev,
            json!({"name": "Eve <Admin>", "email": "eve@example.org", "ticket_type": "VIP"}),
        )
        .await;
    let put = |body: Value| {
        app.send(
            app.client
                .put(app.url(&format!("/api/v1/events/{ev}/mail-template")))
                .bearer_auth(&app.staff)
                .json(&body),
        )
    };
    let r = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/mail-template"),
        )
        .await;
    let default = r.assert_status(200).clone();
    assert_eq!(default["custom"], false);
    // A template that does not render is refused, naming its part; nothing is saved.
    put(json!({"subject": "Hi", "html": "<p>{{ event.nmae }}</p>", "text": "x"}))
        .await
        .assert_problem(422, Some("html"));
    put(json!({"subject": "Hi", "html": "<p>x</p>", "text": "{% for %}"}))
        .await
        .assert_problem(422, Some("text"));
    let r = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/mail-template"),
        )
        .await;
    assert_eq!(r.assert_status(200)["custom"], false);

    let r = put(json!({
        "subject": "Entry pass {{ participant.ticket_type }}: {{ event.name }}",
        "html": "<h1>{{ participant.name }}</h1><img src=\"{{ qr_src }}\"><p>{{ ticket.short_code }}</p>",
        "text": "{{ participant.name }} / {{ ticket.short_code }} / {{ event.venue }}"
    }))
    .await;
    assert_eq!(r.assert_status(200)["custom"], true);
    let r = app
        .post_empty(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/tickets/send"),
        )
        .await;
    assert_eq!(r.assert_status(202)["queued"], 1);
    let mails = wait_mails(&app, ev, "the file written", all_sent(1)).await;
    assert_eq!(mails[0]["transport"], "file");
    let path = data_dir
        .join("mail")
        .join(format!("{}.eml", mails[0]["id"].as_str().unwrap()));
    let bytes = std::fs::read(&path).expect("the .eml file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let parsed = parse(&bytes);
    assert_eq!(parsed.subject, "Entry pass VIP: Files");
    assert_eq!(parsed.qr.as_deref(), p["ticket"]["credential"].as_str());
    let short = p["ticket"]["short_code"].as_str().unwrap();
    assert!(
        parsed.html.contains("<h1>Eve &lt;Admin&gt;</h1>"),
        "HTML is escaped: {}",
        parsed.html
    );
    assert_eq!(
        parsed.text.trim(),
        format!("Eve <Admin> / {short} / Hall A")
    );

    // Back to the built-in templates.
    let r = app
        .send(
            app.client
                .delete(app.url(&format!("/api/v1/events/{ev}/mail-template")))
                .bearer_auth(&app.staff),
        )
        .await;
    assert_eq!(r.status.as_u16(), 204);
    let r = app
        .get(
            Some(&app.viewer),
            &format!("/api/v1/events/{ev}/mail-template"),
        )
        .await;
    assert_eq!(r.assert_status(200)["subject"], default["subject"]);
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::helpers::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

both_backends!(
    ticket_mails_reach_a_real_smtp_server_with_a_decodable_qr,
    while_the_mail_server_is_down_messages_wait_and_then_go_once,
    without_smtp_the_organizers_template_goes_to_a_private_eml_file,
);
