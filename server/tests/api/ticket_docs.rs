//! The readable ticket: the PNG's QR decoded from its pixels by the gate's own decoder, the
//! SVG's texts read and its QR rebuilt from its rectangles and decoded, the PDF's structure
//! (every cross-reference offset), texts and QR (rebuilt from the page's rectangles) checked,
//! and the whole-event PDF's page count.

use image::{GrayImage, Luma};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    the_png_ticket_shows_the_holder_and_its_qr_decodes_to_the_credential,
    the_svg_ticket_holds_the_texts_and_a_qr_that_decodes,
    the_pdf_ticket_parses_and_holds_the_texts_and_the_qr,
    the_event_pdf_has_one_page_per_valid_ticket,
);

async fn holder(app: &TestApp, name: &str) -> (String, Value) {
    let event = app.create_event("Rust Conf").await;
    let ev = event["id"].as_str().unwrap().to_owned();
    let p = app
        .create_participant(
            &ev,
            json!({"name": name, "organization": "Ferris Ltd", "ticket_type": "Speaker"}),
        )
        .await;
    (ev, p)
}

/// Decodes every QR code in an image with the gate's decoder (`hardware`) and with rqrr.
fn decode(image: &image::DynamicImage) -> (Option<String>, Vec<String>) {
    let gate = hardware::QrDecoder::for_files().decode(&hardware::LumaFrame::from_image(image));
    let mut prepared = rqrr::PreparedImage::prepare(image.to_luma8());
    let texts = prepared
        .detect_grids()
        .iter()
        .filter_map(|g| g.decode().ok().map(|(_, t)| t))
        .collect();
    (gate, texts)
}

/// A module matrix drawn as an image: 8 px per module, 4 modules of quiet zone.
fn draw_modules(dark: &[(usize, usize)]) -> image::DynamicImage {
    let size = dark.iter().map(|&(r, c)| r.max(c)).max().unwrap() + 1;
    let side = u32::try_from((size + 8) * 8).unwrap();
    let mut img = GrayImage::from_pixel(side, side, Luma([255]));
    for &(r, c) in dark {
        for dy in 0..8 {
            for dx in 0..8 {
                img.put_pixel(
                    u32::try_from((c + 4) * 8).unwrap() + dx,
                    u32::try_from((r + 4) * 8).unwrap() + dy,
                    Luma([0]),
                );
            }
        }
    }
    image::DynamicImage::ImageLuma8(img)
}

fn attr(tag: &str, name: &str) -> f64 {
    let key = format!(" {name}=\"");
    let start = tag.find(&key).unwrap() + key.len();
    let end = start + tag[start..].find('"').unwrap();
    tag[start..end].parse().unwrap()
}

async fn the_png_ticket_shows_the_holder_and_its_qr_decodes_to_the_credential(app: TestApp) {
    let (ev, p) = holder(&app, "Minji Kim").await;
    let id = p["id"].as_str().unwrap();
    let credential = p["ticket"]["credential"].as_str().unwrap();
    let path = format!("/api/v1/events/{ev}/participants/{id}/ticket.png");
    let r = app.get(Some(&app.staff), &path).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.content_type, "image/png");
    let png = image::load_from_memory(&r.bytes).expect("a PNG");
    let (gate, texts) = decode(&png);
    assert_eq!(
        gate.as_deref(),
        Some(credential),
        "the gate's decoder reads it"
    );
    assert_eq!(
        texts,
        vec![credential.to_owned()],
        "one QR code, the credential"
    );
    assert!(
        png.height() > png.width(),
        "text above the QR: {}x{}",
        png.width(),
        png.height()
    );

    // The text is drawn: a ticket for another name differs above the QR, and only there
    // (the QR depends on the credential, so compare the top band).
    let other = app
        .create_participant(
            &ev,
            json!({"name": "Grace Hopper", "organization": "Ferris Ltd", "ticket_type": "Speaker"}),
        )
        .await;
    let oid = other["id"].as_str().unwrap();
    let r2 = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{oid}/ticket.png"),
        )
        .await;
    let png2 = image::load_from_memory(&r2.bytes).unwrap().to_luma8();
    let band = |img: &GrayImage, y0: u32, y1: u32| -> Vec<u8> {
        (y0..y1)
            .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .map(|(x, y)| img.get_pixel(x, y).0[0])
            .collect()
    };
    let one = png.to_luma8();
    // Event name and time (same for both), then the holder's name (differs).
    assert_eq!(band(&one, 0, 110), band(&png2, 0, 110), "same event header");
    assert_ne!(
        band(&one, 110, 220),
        band(&png2, 110, 220),
        "the name is drawn"
    );
    assert!(
        band(&one, 0, 110).iter().filter(|&&v| v < 128).count() > 500,
        "the header has ink"
    );

    // The QR alone, as before.
    let qr = app
        .get(Some(&app.staff), &format!("{path}?layout=qr"))
        .await;
    let qr = image::load_from_memory(&qr.bytes).unwrap();
    assert_eq!(qr.width(), qr.height());
    assert_eq!(decode(&qr).0.as_deref(), Some(credential));
    app.get(Some(&app.staff), &format!("{path}?layout=poster"))
        .await
        .assert_problem(422, Some("layout"));
}

async fn the_svg_ticket_holds_the_texts_and_a_qr_that_decodes(app: TestApp) {
    let (ev, p) = holder(&app, "Ada & Bob <Lovelace>").await;
    let id = p["id"].as_str().unwrap();
    let credential = p["ticket"]["credential"].as_str().unwrap();
    let short_code = p["ticket"]["short_code"].as_str().unwrap();
    let r = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}/ticket.svg"),
        )
        .await;
    assert_eq!(r.content_type, "image/svg+xml");
    let svg = String::from_utf8(r.bytes).unwrap();
    assert!(!svg.contains("<Lovelace>"), "markup in a name is escaped");
    let texts: Vec<String> = svg
        .split("<text ")
        .skip(1)
        .map(|t| {
            let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            body.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .collect();
    for want in [
        "Rust Conf",
        "Ada & Bob <Lovelace>",
        "Ferris Ltd",
        "Ticket: Speaker",
        short_code,
    ] {
        assert!(texts.iter().any(|t| t == want), "{want:?} in {texts:?}");
    }
    assert!(short_code.len() == 14 && short_code.matches('-').count() == 2);

    // Rebuild the module matrix from the QR group's rectangles (one unit = one module).
    let group = &svg[svg.find("<g class=\"qr\"").unwrap()..];
    let group = &group[..group.find("</g>").unwrap()];
    let mut dark = Vec::new();
    for rect in group.split("<rect").skip(1) {
        let (x, y, w) = (attr(rect, "x"), attr(rect, "y"), attr(rect, "width"));
        assert_eq!(attr(rect, "height"), 1.0);
        for c in 0..w as usize {
            dark.push((y as usize, x as usize + c));
        }
    }
    let (gate, texts) = decode(&draw_modules(&dark));
    assert_eq!(gate.as_deref(), Some(credential));
    assert_eq!(texts, vec![credential.to_owned()]);
}

/// A PDF checked as a reader would: header, trailer, `startxref` pointing at the table, and
/// every in-use entry pointing at its `N 0 obj`. Returns the number of page objects.
fn check_pdf(pdf: &[u8]) -> usize {
    assert!(pdf.starts_with(b"%PDF-1."), "a PDF header");
    let text = String::from_utf8_lossy(pdf);
    assert!(text.trim_end().ends_with("%%EOF"));
    let sx = text.rfind("startxref").expect("startxref");
    let xref_at: usize = text[sx + 9..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Offsets count bytes: read the table from the bytes (the header's binary marker is not
    // UTF-8).
    let table = String::from_utf8_lossy(&pdf[xref_at..]);
    assert!(table.starts_with("xref"), "startxref points at the table");
    let mut lines = table.lines().skip(1);
    let header: Vec<usize> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(header[0], 0);
    let size = header[1];
    let mut in_use = 0;
    for i in 0..size {
        let entry = lines.next().unwrap();
        let parts: Vec<&str> = entry.split_whitespace().collect();
        if parts[2] == "n" {
            let offset: usize = parts[0].parse().unwrap();
            assert!(
                pdf[offset..].starts_with(format!("{i} 0 obj").as_bytes()),
                "object {i} at {offset}"
            );
            in_use += 1;
        }
    }
    assert!(in_use >= 5);
    let trailer = &text[text.rfind("trailer").unwrap()..];
    assert!(trailer.contains(&format!("/Size {size}")), "{trailer}");
    let pages = text.matches("/Type /Page\n").count()
        + text.matches("/Type /Page ").count()
        + text.matches("/Type /Page/").count()
        + text.matches("/Type /Page>").count();
    let count_at = text.find("/Type /Pages").expect("a page tree");
    let count = &text[count_at..];
    let count: usize = count[count.find("/Count").unwrap() + 6..]
        .split(|c: char| !c.is_ascii_digit() && c != ' ')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count, pages, "the page tree counts every page");
    pages
}

/// The strings the PDF's text operators show (`(...) Tj` literals and `<...> Tj` hex strings),
/// read as WinAnsi (Latin-1 for the characters tested).
fn pdf_texts(pdf: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(pdf);
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(s) = line.strip_suffix(" Tj") else {
            continue;
        };
        if let Some(lit) = s.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
            out.push(
                lit.replace("\\(", "(")
                    .replace("\\)", ")")
                    .replace("\\\\", "\\"),
            );
        } else if let Some(hex) = s.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
            let bytes = hex::decode(hex).expect("a hex string");
            out.push(bytes.iter().map(|&b| char::from(b)).collect());
        }
    }
    out
}

async fn the_pdf_ticket_parses_and_holds_the_texts_and_the_qr(app: TestApp) {
    let (ev, p) = holder(&app, "Zoë Müller").await;
    let id = p["id"].as_str().unwrap();
    let credential = p["ticket"]["credential"].as_str().unwrap();
    let short_code = p["ticket"]["short_code"].as_str().unwrap();
    let r = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}/ticket.pdf"),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.content_type, "application/pdf");
    assert_eq!(check_pdf(&r.bytes), 1);
    let shown = pdf_texts(&r.bytes);
    for want in [
        "Rust Conf",
        "Zoë Müller",
        "Ferris Ltd",
        "Ticket: Speaker",
        short_code,
        "Hall A",
    ] {
        assert!(shown.iter().any(|t| t == want), "{want:?} in {shown:?}");
    }

    // The QR, rebuilt from the page's `x y w h re` rectangles (4 pt per module).
    let text = String::from_utf8_lossy(&r.bytes);
    let rects: Vec<[f64; 4]> = text
        .lines()
        .filter(|l| l.ends_with(" re"))
        .map(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .take(4)
                .map(|n| n.parse().unwrap())
                .collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect();
    assert!(rects.len() > 100, "{} rectangles", rects.len());
    let min_x = rects.iter().map(|r| r[0]).fold(f64::MAX, f64::min);
    let max_y = rects.iter().map(|r| r[1]).fold(f64::MIN, f64::max);
    let mut dark = Vec::new();
    for [x, y, w, h] in rects {
        assert!((h - 4.0).abs() < 1e-3);
        let row = ((max_y - y) / 4.0).round() as usize;
        let col = ((x - min_x) / 4.0).round() as usize;
        for c in 0..(w / 4.0).round() as usize {
            dark.push((row, col + c));
        }
    }
    let (gate, _) = decode(&draw_modules(&dark));
    assert_eq!(
        gate.as_deref(),
        Some(credential),
        "the PDF's QR is the credential"
    );
}

async fn the_event_pdf_has_one_page_per_valid_ticket(app: TestApp) {
    let event = app.create_event("Big Night").await;
    let ev = event["id"].as_str().unwrap();
    // More than one read batch (200) of participants.
    let people: Vec<Value> = (0..230)
        .map(|i| json!({"name": format!("Guest {i:03}")}))
        .collect();
    let created = app
        .post(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants"),
            Value::Array(people),
        )
        .await;
    let created = created.assert_status(201)["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(created.len(), 230);
    let revoked = created[7]["id"].as_str().unwrap().to_owned();
    app.post_empty(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{revoked}/ticket/revoke"),
    )
    .await
    .assert_status(200);
    let no_ticket = app
        .create_participant(ev, json!({"name": "No Ticket", "issue_ticket": false}))
        .await;

    let path = format!("/api/v1/events/{ev}/tickets.pdf");
    app.get(None, &path).await.assert_problem(401, None);
    // Every page carries a credential: not for viewers.
    app.get(Some(&app.viewer), &path)
        .await
        .assert_problem(403, None);
    let r = app.get(Some(&app.staff), &path).await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "{}",
        String::from_utf8_lossy(&r.bytes[..200.min(r.bytes.len())])
    );
    assert_eq!(r.content_type, "application/pdf");
    assert_eq!(check_pdf(&r.bytes), 229, "every valid ticket, once");
    let shown = pdf_texts(&r.bytes);
    let has = |s: &str| shown.iter().any(|t| t == s);
    assert!(has("Guest 229") && has("Guest 000"));
    assert!(!has("Guest 007"), "the revoked ticket is left out");
    assert!(!has("No Ticket"));

    let (a, b) = (
        created[3]["id"].as_str().unwrap(),
        created[1]["id"].as_str().unwrap(),
    );
    let r = app
        .get(Some(&app.staff), &format!("{path}?participant_ids={a},{b}"))
        .await;
    assert_eq!(check_pdf(&r.bytes), 2);
    let shown = pdf_texts(&r.bytes);
    let at = |s: &str| shown.iter().position(|t| t == s).unwrap();
    assert!(
        at("Guest 003") < at("Guest 001"),
        "pages in the order named"
    );
    app.get(
        Some(&app.staff),
        &format!("{path}?participant_ids={a},nope"),
    )
    .await
    .assert_problem(422, Some("participant_ids"));
    let stranger = uuid::Uuid::now_v7();
    app.get(
        Some(&app.staff),
        &format!("{path}?participant_ids={stranger}"),
    )
    .await
    .assert_problem(422, Some("participant_ids[0]"));
    app.get(
        Some(&app.staff),
        &format!("{path}?participant_ids={a},{revoked}"),
    )
    .await
    .assert_problem(422, Some("participant_ids[1]"));
    let nid = no_ticket["id"].as_str().unwrap();
    app.get(Some(&app.staff), &format!("{path}?participant_ids={nid}"))
        .await
        .assert_problem(422, Some("participant_ids[0]"));
    let empty = app.create_event("Empty").await;
    app.get(
        Some(&app.staff),
        &format!(
            "/api/v1/events/{}/tickets.pdf",
            empty["id"].as_str().unwrap()
        ),
    )
    .await
    .assert_problem(409, None);
}
