//! Badge printing over real TCP on loopback: a listener stands in for the label printer and
//! receives the ZPL of an admitted person's badge (name, and a `^BQ` QR field holding the
//! credential); a reprint from the screen is refused without the supervisor PIN and printed
//! with it; prints are counted per ticket and are never admissions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gate_agent::decide::Gate;
use gate_agent::handle::GateHandle;
use gate_agent::printer::{Badges, PrinterTarget, print_on_admit};
use gate_agent::replica::Replica;
use gate_agent::sync::SyncStatus;
use gate_agent::ui::{UiState, serve};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

const PIN: &str = "975310";

/// A "label printer": every connection's bytes, as one label.
async fn label_printer() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut label = Vec::new();
            if s.read_to_end(&mut label).await.is_ok() {
                let _ = tx.send(String::from_utf8_lossy(&label).into_owned());
            }
        }
    });
    (addr, rx)
}

async fn next_label(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a label within 10 s")
        .expect("printer open")
}

#[tokio::test]
async fn an_admitted_persons_badge_reaches_the_label_printer_and_a_reprint_needs_the_pin() {
    let f = fixture(3, |g| {
        g.supervisor_pin = Some(sync_protocol::pin::hash(PIN).unwrap());
    });
    // The holder's organization and ticket type, as the server replicates them.
    let sync_protocol::wire::ChangeData::Ticket(t) = ticket_change(100, 2).data else {
        unreachable!()
    };
    Replica::open(&f.path())
        .unwrap()
        .apply_changes(
            &[sync_protocol::wire::Change {
                change_seq: 100,
                deleted: false,
                data: sync_protocol::wire::ChangeData::Ticket(sync_protocol::wire::TicketChange {
                    organization: Some("Acme Ltd".into()),
                    ticket_type: Some("Speaker".into()),
                    ..t
                }),
            }],
            100,
        )
        .unwrap();
    let (addr, mut labels) = label_printer().await;
    let gate = Gate::new(Replica::open(&f.path()).unwrap()).unwrap();
    let handle = GateHandle::spawn(gate, Arc::new(Notify::new())).unwrap();
    let target: PrinterTarget = format!("zpl://{addr}").parse().unwrap();
    let badges = Arc::new(Badges::new(
        target,
        None,
        Arc::new(Mutex::new(Replica::open(&f.path()).unwrap())),
    ));
    let shutdown = CancellationToken::new();
    tokio::spawn(print_on_admit(
        badges.clone(),
        handle.subscribe(),
        shutdown.clone(),
    ));
    let state = UiState::new(
        handle,
        Arc::new(Mutex::new(Replica::open(&f.path()).unwrap())),
        Arc::new(SyncStatus::default()),
    )
    .with_badges(badges);
    let code = state.pairing_code();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state, shutdown.clone()));
    gate_agent::sync::client::install_tls_provider();
    let pairing = reqwest::Client::new()
        .post(format!("{base}/api/pair"))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    let cookie = pairing.headers()["set-cookie"].to_str().unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::COOKIE,
        cookie.split(';').next().unwrap().parse().unwrap(),
    );
    let c = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let post = async |path: &str, body: Value| {
        let r = c
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };

    // Admitted: the badge prints by itself, with the name and the credential in a QR field.
    let credential = f.ticket(2).encode();
    let (s, o) = post("/api/scan", json!({"credential": credential})).await;
    assert_eq!((s, o["decision"].clone()), (200, json!("admit")), "{o}");
    let zpl = next_label(&mut labels).await;
    assert!(
        zpl.starts_with("^XA") && zpl.trim_end().ends_with("^XZ"),
        "{zpl}"
    );
    assert!(zpl.contains("^FDAttendee 2^FS"), "{zpl}");
    assert!(zpl.contains("^FDAcme Ltd^FS"), "{zpl}");
    assert!(zpl.contains("^FDSpeaker^FS"), "{zpl}");
    assert!(
        zpl.contains(&format!("^BQN,2,5^FH^FDQA,{credential}^FS")),
        "{zpl}"
    );

    // A reprint without the PIN is refused and nothing is printed; with it, it prints and is
    // logged with who approved it.
    let (s, e) = post("/api/print", json!({"serial": 2})).await;
    assert_eq!(
        (s, e["error"].clone(), e["field"].clone()),
        (403, json!("supervisor_pin_required"), json!("pin"))
    );
    let (s, e) = post("/api/print", json!({"serial": 2, "pin": "000000"})).await;
    assert_eq!((s, e["error"].clone()), (403, json!("bad_supervisor_pin")));
    let (s, p) = post(
        "/api/print",
        json!({"serial": 2, "pin": PIN, "supervisor": "Sam"}),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (
            p["count"].clone(),
            p["reprint"].clone(),
            p["approved_by"].clone()
        ),
        (json!(2), json!(true), json!("Sam"))
    );
    let reprint = next_label(&mut labels).await;
    assert!(reprint.contains("^FDAttendee 2^FS"), "{reprint}");
    assert!(
        labels.try_recv().is_err(),
        "the refused reprints printed nothing"
    );

    // A first print from the screen (a person not admitted here) needs no PIN.
    let (s, p) = post("/api/print", json!({"serial": 3})).await;
    assert_eq!((s, p["count"].clone()), (200, json!(1)), "{p}");
    assert!(next_label(&mut labels).await.contains("Attendee 3"));

    // Counted per ticket; prints are not admissions (one check-in in the log).
    let r = Replica::open(&f.path()).unwrap();
    assert_eq!(
        (
            r.print_count(2).unwrap(),
            r.print_count(3).unwrap(),
            r.print_count(1).unwrap()
        ),
        (2, 1, 0)
    );
    assert_eq!(r.outbox_len().unwrap(), 1);
    shutdown.cancel();
}
