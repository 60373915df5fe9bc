//! The organizer console in a real headless Chromium, against the real server on PostgreSQL and
//! a real gate agent: sign in with the first start's password and change it, create an event,
//! upload a CSV with a bad line through the form (dry run first), create a gate and read its
//! enrollment code as text and as a QR decoded from the page's pixels, enroll a real agent with
//! it, watch the dashboard's counters and chart move without a reload while the agent admits
//! people, resolve a conflict, read the printable report's numbers, check that every control
//! has a label, send and resend a ticket e-mail from the participants page, create, use and
//! revoke an API key, and do a keyboard-only pass (sign in, open an event, send an e-mail with
//! Tab, Enter and Space).
//!
//! Skips (loudly) only when chromium/chromedriver are not installed. Screenshots are written to
//! `$CARGO_TARGET_DIR/tmp/screenshots/console-*.png`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "e2e_support/console_browser.rs"]
mod browser;
mod e2e_support;

use std::time::Duration;

use browser::Browser;
use e2e_support::{ADMIN_EMAIL, Agent, Api, PgDatabase, Server, assert_decision, free_port};
use reqwest::Method;
use serde_json::{Value, json};

const NEW_PASSWORD: &str = "a fresh passphrase for the console";
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizer_runs_an_event_from_the_console() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let pg = PgDatabase::create("usher_console")
        .await
        .expect("a fresh PostgreSQL database");
    let server_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(server_dir.path(), &pg.url, free_port()).await;
    let first_password = server
        .initial_admin_password
        .clone()
        .expect("the first start creates an admin");
    let base = server.base.clone();

    // ------------------------------------------------------------ sign in, change the password
    b.goto(&format!("{base}/")).await;
    b.find("#email").await;
    assert!(b.url().await.ends_with("/login"), "{}", b.url().await);
    b.fill("#email", ADMIN_EMAIL).await;
    b.fill("#password", "not the password").await;
    b.click("#sign-in").await;
    assert!(
        b.text("#login-error")
            .await
            .contains("Wrong e-mail or password"),
        "a wrong password is refused"
    );
    b.fill("#password", &first_password).await;
    b.click("#sign-in").await;
    b.find("#must-change").await;
    assert!(b.url().await.ends_with("/password"), "{}", b.url().await);
    b.screenshot("console-01-change-password").await;
    // Until the password is changed, the console's session may not use the API.
    let blocked = b
        .js("return fetch('/api/v1/events').then(r => r.status)", vec![])
        .await;
    assert_eq!(
        blocked,
        json!(401),
        "the generated password must be changed first"
    );
    b.fill("#current_password", &first_password).await;
    b.fill("#new_password", NEW_PASSWORD).await;
    b.fill("#confirm_password", NEW_PASSWORD).await;
    b.click("#change-password").await;
    b.find("#event-create").await;
    assert!(b.url().await.ends_with("/events"), "{}", b.url().await);
    // The cookie is HttpOnly: the page's script cannot read it.
    assert_eq!(b.js("return document.cookie", vec![]).await, json!(""));
    // The API, signed in with the new password (the generated one no longer works).
    let api = Api::login(&base, ADMIN_EMAIL, NEW_PASSWORD).await;

    // ------------------------------------------------------------ create an event
    b.fill("#ev-name", "Console Conf").await;
    // The window includes now, so the tickets are valid today.
    b.js(
        "const f = d => { const p = n => String(n).padStart(2, '0');
           return `${d.getFullYear()}-${p(d.getMonth()+1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`; };
         document.getElementById('ev-starts').value = f(new Date(Date.now() - 3600e3));
         document.getElementById('ev-ends').value = f(new Date(Date.now() + 8 * 3600e3));
         document.getElementById('ev-status').value = 'live';",
        vec![],
    )
    .await;
    b.click("#event-create button[type=submit]").await;
    b.find("#event-edit").await;
    let url = b.url().await;
    let event = url
        .rsplit('/')
        .next()
        .expect("event id in the URL")
        .to_owned();
    assert_eq!(
        api.get(&format!("/api/v1/events/{event}")).await["name"],
        "Console Conf"
    );
    b.screenshot("console-02-event").await;

    // ------------------------------------------------------------ CSV upload, dry run first
    let csv_dir = tempfile::tempdir().expect("tempdir");
    let csv_path = csv_dir.path().join("guests.csv");
    std::fs::write(
        &csv_path,
        "name,email,ticket_type\n\
         Ada Lovelace,ada@example.org,speaker\n\
         Grace Hopper,grace@example.org,attendee\n\
         Bad Line,not-an-e-mail,attendee\n\
         Alan Turing,alan@example.org,attendee\n\
         Edsger Dijkstra,edsger@example.org,attendee\n",
    )
    .expect("write the CSV");
    b.goto(&format!("{base}/events/{event}/import")).await;
    b.find("#csv-file")
        .await
        .send_keys(csv_path.to_str().expect("utf-8 path"))
        .await
        .expect("choose the file");
    b.click("#dry-run").await;
    let bad = b
        .wait_until(
            "the dry run to name the bad line",
            WAIT,
            "const r = document.querySelector('#import-errors tr.bad-line');
             return r ? r.innerText : null;",
            Value::is_string,
        )
        .await;
    let bad = bad.as_str().unwrap_or_default().to_owned();
    assert!(bad.contains("line 4"), "the error names line 4: {bad}");
    assert!(bad.contains("email"), "the error names the field: {bad}");
    assert!(
        bad.contains("Bad Line,not-an-e-mail"),
        "the uploaded line is shown beside its error: {bad}"
    );
    assert_eq!(
        b.js(
            "return document.getElementById('upload-progress').value",
            vec![]
        )
        .await,
        json!(100),
        "the progress bar reached the end"
    );
    assert_eq!(
        b.js(
            "return document.getElementById('import-now').disabled",
            vec![]
        )
        .await,
        json!(true),
        "nothing can be imported while lines have errors"
    );
    b.screenshot("console-03-import-dry-run").await;
    let none = api
        .list_all(&format!("/api/v1/events/{event}/participants"))
        .await;
    assert!(none.is_empty(), "a dry run writes nothing: {none:?}");
    // Import the valid lines: dry run with "partial", then import.
    b.click("#partial").await;
    b.click("#dry-run").await;
    b.wait_until(
        "the partial dry run",
        WAIT,
        "return document.getElementById('import-result').innerText",
        |v| v.as_str().is_some_and(|s| s.contains("would create 4")),
    )
    .await;
    b.click("#import-now").await;
    b.wait_until(
        "the import",
        WAIT,
        "return document.getElementById('import-result').innerText",
        |v| {
            v.as_str()
                .is_some_and(|s| s.contains("Imported: created 4"))
        },
    )
    .await;
    let people = api
        .list_all(&format!("/api/v1/events/{event}/participants"))
        .await;
    assert_eq!(people.len(), 4, "four valid lines imported: {people:#?}");

    // ------------------------------------------------------------ participants: search
    b.goto(&format!("{base}/events/{event}/participants")).await;
    b.fill("#q", "grace").await;
    b.click("form.search button").await;
    b.wait_until(
        "the search result",
        WAIT,
        "return document.querySelectorAll('#participants tbody tr').length === 1
             && document.querySelector('#participants tbody').innerText",
        |v| v.as_str().is_some_and(|s| s.contains("Grace Hopper")),
    )
    .await;
    let row = b.text("#participants tbody tr").await;
    assert!(row.contains("valid") && row.contains("attendee"), "{row}");
    b.screenshot("console-04-participants").await;

    // ------------------------------------------------------------ a gate and its enrollment code
    b.goto(&format!("{base}/events/{event}/gates")).await;
    b.fill("#g-name", "North").await;
    b.fill("#g-zone", "hall").await;
    b.click("#gate-create button[type=submit]").await;
    b.wait_until(
        "the new gate in the table",
        WAIT,
        "return document.querySelector('#gates tbody').innerText",
        |v| v.as_str().is_some_and(|s| s.contains("North")),
    )
    .await;
    b.click("button[aria-label='Enrollment code for North']")
        .await;
    let code = b.text("#enrollment-code").await;
    assert_eq!(code.len(), 11, "XXXXX-XXXXX: {code}");
    let (_, shot) = b.screenshot("console-05-enrollment").await;
    let from_pixels = hardware::qr::decode_image_file(&shot)
        .expect("read the screenshot")
        .expect("a QR code in the screenshot");
    assert_eq!(from_pixels, code, "the QR on screen says the code in text");
    let mut agent = Agent::enroll("north", &base, &code).await;
    agent.start();

    // ------------------------------------------------------------ the live dashboard
    b.goto(&format!("{base}/events/{event}/dashboard")).await;
    b.wait_until(
        "the first counters",
        WAIT,
        "return document.getElementById('checked-in').innerText",
        |v| v == "0 / 4",
    )
    .await;
    b.wait_until(
        "the event stream to open",
        WAIT,
        "return document.getElementById('live-state').innerText",
        |v| v.as_str().is_some_and(|s| s.starts_with("Live")),
    )
    .await;
    // A mark on this page: if the page reloaded, it would be gone.
    b.js("window.__same_page = 'yes'; return null", vec![])
        .await;
    b.screenshot("console-06-dashboard-before").await;
    let credential = |name: &str| -> (String, u64) {
        let p = people
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} was imported"));
        (
            p["ticket"]["credential"]
                .as_str()
                .expect("credential")
                .to_owned(),
            p["ticket"]["serial"].as_u64().expect("serial"),
        )
    };
    for name in ["Ada Lovelace", "Grace Hopper"] {
        let (cred, serial) = credential(name);
        assert_decision(&agent.scan(&cred).await, "admit", None, serial);
    }
    b.wait_until(
        "the counters to show two check-ins",
        WAIT,
        "return [document.getElementById('checked-in').innerText,
                 document.getElementById('arrivals-chart').dataset.total,
                 document.querySelectorAll('#arrivals-chart rect.bar').length > 0,
                 document.querySelector('#gate-status tbody').innerText]",
        |v| v[0] == "2 / 4" && v[1] == "2" && v[2] == true,
    )
    .await;
    let gates_row = b.text("#gate-status tbody").await;
    assert!(
        gates_row.contains("North") && gates_row.contains("hall"),
        "{gates_row}"
    );
    // Counts by ticket type: Ada is the one speaker, Grace one of three attendees.
    let types = b.text("#ticket-types tbody").await;
    let types = types.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        types.contains("speaker 1 1 1") && types.contains("attendee 3 1 1"),
        "{types:?}"
    );
    assert_eq!(
        b.js("return window.__same_page || null", vec![]).await,
        json!("yes"),
        "the counters changed without a reload"
    );
    b.screenshot("console-07-dashboard-after-checkins").await;

    // ------------------------------------------------------------ a conflict, resolved
    // Ada is inside; revoking her ticket makes a `revoked_while_inside` conflict.
    let ada = people
        .iter()
        .find(|p| p["name"] == "Ada Lovelace")
        .expect("Ada");
    api.call(
        Method::POST,
        &format!(
            "/api/v1/events/{event}/participants/{}/ticket/revoke",
            ada["id"].as_str().expect("id")
        ),
        Some(json!({"reason": "lost ticket"})),
    )
    .await
    .expect_status(200);
    b.wait_until(
        "the conflict on the dashboard",
        WAIT,
        "return [document.getElementById('open-conflicts').innerText,
                 !!document.querySelector('#conflicts button.resolve-acknowledge'),
                 document.querySelector('#conflicts tbody').innerText]",
        |v| v[0] == "1" && v[1] == true,
    )
    .await;
    // The conflict queue is below the counters and the chart: the picture shows it.
    b.js(
        "document.getElementById('conflicts').scrollIntoView({block: 'center'})",
        vec![],
    )
    .await;
    b.screenshot("console-08-conflict").await;
    b.click("#conflicts button.resolve-acknowledge").await;
    b.wait_until(
        "the conflict to be resolved",
        WAIT,
        "return [document.getElementById('open-conflicts').innerText,
                 document.querySelector('#conflicts tbody').innerText]",
        |v| {
            v[0] == "0"
                && v[1]
                    .as_str()
                    .is_some_and(|s| s.contains("No open conflicts"))
        },
    )
    .await;
    let resolved = api
        .list_all(&format!("/api/v1/events/{event}/conflicts?status=resolved"))
        .await;
    assert_eq!(resolved.len(), 1, "{resolved:#?}");
    assert_eq!(resolved[0]["resolution"], "acknowledged");
    assert_eq!(
        b.js("return window.__same_page || null", vec![]).await,
        json!("yes")
    );

    // ------------------------------------------------------------ the printable report
    let report_href = b
        .find("#report-link")
        .await
        .attr("href")
        .await
        .expect("href")
        .expect("the report link");
    assert!(report_href.contains("/report?format=html"), "{report_href}");
    b.click("#report-link").await;
    b.wait_until(
        "the printable report page",
        WAIT,
        "return document.contentType === 'text/html' && !!document.querySelector('td[data-fact]')",
        |v| v == true,
    )
    .await;
    // The page's own cells, as printed (not the JSON): the counts the dashboard showed.
    let facts = b
        .js(
            "const f = {};
             document.querySelectorAll('td[data-fact]').forEach((td) => { f[td.dataset.fact] = td.innerText.trim(); });
             return f;",
            vec![],
        )
        .await;
    for (key, want) in [
        ("event||summary||registered", "4"),
        ("event||summary||attended", "2"),
        ("event||summary||no_shows", "2"),
        ("event||summary||attendance_rate", "0.5"),
        ("event||gates|North|entries", "2"),
        ("event||gates|North|rejected", "0"),
        ("event||conflicts|revoked_while_inside|count", "1"),
        ("ticket_type|speaker|summary||registered", "1"),
        ("ticket_type|attendee|summary||attended", "1"),
    ] {
        assert_eq!(facts[key], json!(want), "{key} in {facts}");
    }
    let page_text = b.text("body").await;
    assert!(page_text.contains("Grace Hopper"), "{page_text}");
    b.screenshot("console-09-report").await;

    // ------------------------------------------------------------ every control has a label
    for path in [
        "/events".to_owned(),
        format!("/events/{event}"),
        format!("/events/{event}/participants"),
        format!("/events/{event}/import"),
        format!("/events/{event}/gates"),
        format!("/events/{event}/dashboard"),
        "/users".to_owned(),
        "/api-keys".to_owned(),
    ] {
        b.goto(&format!("{base}{path}")).await;
        b.find("main h1").await;
        let missing = b.unlabelled_controls().await;
        assert!(
            missing.is_empty(),
            "{path}: controls without a label: {missing:#?}"
        );
    }

    // ------------------------------------------------------------ ticket e-mail: send, resend
    let participants_url = format!("{base}/events/{event}/participants");
    let mail_cell = |name: &str| {
        format!(
            "const b = [...document.querySelectorAll('#participants tbody tr')]
               .find((tr) => tr.cells[0].innerText.startsWith('{name}'));
             return b ? b.querySelector('td.mail').innerText : null;"
        )
    };
    let mails_of = |name: &str| {
        let id = people
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["id"].as_str())
            .unwrap_or_else(|| panic!("{name} was imported"))
            .to_owned();
        let api = &api;
        let event = event.clone();
        async move {
            api.list_all(&format!("/api/v1/events/{event}/mails"))
                .await
                .into_iter()
                .filter(|m| m["participant_id"] == json!(id))
                .collect::<Vec<Value>>()
        }
    };
    b.goto(&participants_url).await;
    assert_eq!(
        b.js(&mail_cell("Alan Turing"), vec![]).await,
        json!("not sent")
    );
    b.click("button[aria-label='Send the ticket e-mail of Alan Turing']")
        .await;
    // The page reloads with the message queued; the worker sends it (to an .eml file here).
    let mut shown = Value::Null;
    for _ in 0..100 {
        b.goto(&participants_url).await;
        shown = b.js(&mail_cell("Alan Turing"), vec![]).await;
        if shown.as_str().is_some_and(|s| s.starts_with("sent")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        shown.as_str().is_some_and(|s| s.starts_with("sent")),
        "Alan's row shows the message as sent: {shown}"
    );
    assert_eq!(mails_of("Alan Turing").await.len(), 1);
    b.click("button[aria-label='Resend the ticket e-mail of Alan Turing']")
        .await;
    let mut resent = 0;
    for _ in 0..100 {
        resent = mails_of("Alan Turing").await.len();
        if resent == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(resent, 2, "the resend button queued a second message");
    b.find("#participants").await;
    b.screenshot("console-10-participants-mail").await;

    // ------------------------------------------------------------ API keys
    b.goto(&format!("{base}/api-keys")).await;
    b.fill("#k-name", "CRM sync").await;
    b.js(
        "document.getElementById('k-role').value = 'staff';
         document.getElementById('k-event').value = arguments[0];
         return null;",
        vec![json!(event)],
    )
    .await;
    b.click("#api-key-create button[type=submit]").await;
    let key = b
        .wait_until(
            "the new key, shown once",
            WAIT,
            "const box = document.getElementById('new-key');
             return box && !box.hidden ? document.getElementById('new-key-value').value : null;",
            Value::is_string,
        )
        .await;
    let key = key.as_str().unwrap_or_default().to_owned();
    assert!(key.len() > 20, "{key}");
    // The list shows the new key at once (by name and prefix, never the secret).
    let listed = b
        .wait_until(
            "the new key in the list",
            WAIT,
            "const t = document.querySelector('#api-keys tbody').innerText;
             return t.includes('CRM sync') ? t : null;",
            Value::is_string,
        )
        .await;
    let listed = listed.as_str().unwrap_or_default();
    assert!(
        listed.contains("staff") && !listed.contains(&key),
        "{listed}"
    );
    b.screenshot("console-11-api-key-created").await;
    let http = reqwest::Client::new();
    let status = |path: String| {
        let http = http.clone();
        let key = key.clone();
        let base = base.clone();
        async move {
            http.get(format!("{base}{path}"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("a request with the API key")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status(format!("/api/v1/events/{event}/participants")).await,
        200,
        "the key works for its event"
    );
    b.goto(&format!("{base}/api-keys")).await;
    assert_eq!(
        b.js(
            "return getComputedStyle(document.getElementById('new-key')).display",
            vec![]
        )
        .await,
        json!("none"),
        "the box of a new key is not shown once the page is reloaded"
    );
    let row = b.text("#api-keys tbody").await;
    assert!(
        row.contains("CRM sync") && row.contains("staff") && row.contains("Console Conf"),
        "{row}"
    );
    assert!(
        !b.client.source().await.expect("page source").contains(&key),
        "the secret is never on the list page"
    );
    let last_used = b.text("#api-keys tbody td.last-used").await;
    assert_ne!(last_used, "never", "the list shows the key's last use");
    b.js("window.confirm = () => true; return null", vec![])
        .await;
    b.click("button[aria-label='Revoke the key CRM sync']")
        .await;
    b.wait_until(
        "the key to be revoked",
        WAIT,
        "const s = document.querySelector('#api-keys tbody td.state'); return s ? s.innerText : null;",
        |v| v == "revoked",
    )
    .await;
    assert_eq!(
        status(format!("/api/v1/events/{event}/participants")).await,
        401,
        "a revoked key is refused at once"
    );
    b.screenshot("console-12-api-key-revoked").await;

    // ------------------------------------------------------------ keyboard only
    // Sign out, sign in, open the event's participants and send a ticket e-mail with Tab,
    // Enter and Space alone.
    use fantoccini::key::Key;
    b.goto(&format!("{base}/events")).await;
    b.find("form.signout").await;
    b.tab_to("form.signout button", 40).await;
    b.press(Key::Enter).await;
    b.find("#email").await;
    b.tab_to("#email", 10).await;
    b.type_keys(ADMIN_EMAIL).await;
    b.tab_to("#password", 5).await;
    b.type_keys(NEW_PASSWORD).await;
    b.press(Key::Enter).await;
    b.find("#event-create").await;
    assert!(b.url().await.ends_with("/events"), "{}", b.url().await);
    b.tab_to(&format!("a[href='/events/{event}/participants']"), 60)
        .await;
    b.press(Key::Enter).await;
    b.find("#participants").await;
    assert!(
        b.url()
            .await
            .ends_with(&format!("/events/{event}/participants")),
        "{}",
        b.url().await
    );
    let presses = b
        .tab_to(
            "button[aria-label='Send the ticket e-mail of Grace Hopper']",
            120,
        )
        .await;
    b.screenshot("console-13-keyboard-focus").await;
    b.press(Key::Space).await;
    let mut sent = 0;
    for _ in 0..100 {
        sent = mails_of("Grace Hopper").await.len();
        if sent == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent, 1, "Space on the focused button sent Grace's ticket");
    eprintln!("keyboard pass: the send button of Grace Hopper after {presses} Tab presses");
    agent.assert_running();
    b.close().await;
}
