//! Parser tests: the three real exports in `testdata/csv/`, then the edge
//! cases one at a time.

use std::io::{self, Read};

use serde_json::json;

use super::*;

const EVENTBRITE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/csv/eventbrite_attendee_summary.csv"
);
const PRETIX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/csv/pretix_order_positions.csv"
);
const SIMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/csv/simple.csv");

fn open(path: &str) -> ParticipantCsv<std::fs::File> {
    ParticipantCsv::new(std::fs::File::open(path).unwrap()).unwrap()
}

/// Every row of a file that must parse cleanly.
fn rows_of(path: &str) -> Vec<ImportRow> {
    open(path).map(|item| item.unwrap()).collect()
}

fn parse(text: impl AsRef<[u8]>) -> Vec<Result<ImportRow, RowError>> {
    ParticipantCsv::new(text.as_ref()).unwrap().collect()
}

fn ok_rows(text: impl AsRef<[u8]>) -> Vec<ImportRow> {
    parse(text).into_iter().map(Result::unwrap).collect()
}

fn at(rows: &[ImportRow], line: u64) -> &ImportRow {
    rows.iter().find(|row| row.line == line).unwrap()
}

fn lines(rows: &[ImportRow]) -> Vec<u64> {
    rows.iter().map(|row| row.line).collect()
}

fn shown(sources: &[Source]) -> Vec<String> {
    sources.iter().map(ToString::to_string).collect()
}

fn only_error(text: impl AsRef<[u8]>) -> RowError {
    let mut items = parse(text);
    assert_eq!(items.len(), 1, "{items:?}");
    items.remove(0).unwrap_err()
}

// ---- the real exports -------------------------------------------------------------

#[test]
fn eventbrite_attendee_summary_parses_every_row() {
    let csv = open(EVENTBRITE);
    let mapping = csv.mapping();
    assert_eq!(mapping.delimiter, ',');
    assert_eq!(shown(&mapping.name), ["\"First Name\" + \"Last Name\""]);
    assert_eq!(shown(&mapping.email), ["\"Email\""]);
    assert_eq!(shown(&mapping.phone), ["\"Cell Phone\"", "\"Home Phone\""]);
    assert_eq!(
        shown(&mapping.external_id),
        ["\"Attendee #\"", "\"Barcode #\""]
    );
    assert_eq!(shown(&mapping.ticket_type), ["\"Ticket Type\""]);
    // The BOM is gone from the first header; padded headers are trimmed.
    assert_eq!(mapping.metadata[0].header, "Order #");
    assert!(
        mapping
            .metadata
            .iter()
            .any(|c| c.header == "Buyer Last Name")
    );

    let rows: Vec<ImportRow> = csv.map(|item| item.unwrap()).collect();
    assert_eq!(rows.len(), 120);
    assert_eq!(lines(&rows), (2..=121).collect::<Vec<u64>>());

    let first = at(&rows, 2);
    assert_eq!(first.name, "John 박");
    assert_eq!(first.email.as_deref(), Some("john.1.0@example.org"));
    assert_eq!(first.phone.as_deref(), Some("+82-10-2033-5179"));
    assert_eq!(first.organization.as_deref(), Some("Tech Corp"));
    assert_eq!(first.external_id.as_deref(), Some("2000000000"));
    assert_eq!(first.ticket_type.as_deref(), Some("Staff"));
    assert_eq!(first.attention, None);
    assert_eq!(first.metadata["Order #"], json!("1000000000"));
    // The barcode and the status are fields of their own now, not metadata.
    assert_eq!(first.barcode.as_deref(), Some("1000000000000001"));
    assert!(!first.cancelled);
    assert_eq!(first.metadata["Buyer Last Name"], json!("박"));
    for used in [
        "First Name",
        "Last Name",
        "Email",
        "Cell Phone",
        "Company",
        "Attendee #",
        "Barcode #",
        "Attendee Status",
    ] {
        assert!(!first.metadata.contains_key(used), "{used} is in metadata");
    }
    assert!(
        !first.metadata.contains_key("Home Phone"),
        "empty cells are left out"
    );
    assert_eq!(first.metadata.len(), 12);

    assert_eq!(at(&rows, 4).organization, None);
    assert_eq!(at(&rows, 8).organization.as_deref(), Some("Acme, Inc."));
    let globex = at(&rows, 12);
    assert_eq!(globex.name, "지호 Doe");
    assert_eq!(globex.organization.as_deref(), Some("Globex \"Intl\""));
    assert_eq!(at(&rows, 17).name, "지호 박");
    assert_eq!(at(&rows, 21).name, "O'Brien 김");
    assert_eq!(at(&rows, 121).external_id.as_deref(), Some("2000000119"));
}

#[test]
fn pretix_order_positions_parse_every_row() {
    let csv = open(PRETIX);
    let mapping = csv.mapping();
    assert_eq!(
        shown(&mapping.name),
        [
            "\"Attendee name\"",
            "\"Attendee name: Given name\" + \"Attendee name: Family name\""
        ]
    );
    assert_eq!(shown(&mapping.email), ["\"Attendee email\"", "\"Email\""]);
    assert_eq!(shown(&mapping.phone), ["\"Phone number\""]);
    assert_eq!(
        shown(&mapping.external_id),
        ["\"Order code\" - \"Position ID\""]
    );
    assert_eq!(shown(&mapping.ticket_type), ["\"Product\""]);
    // The attendee's company (column 19), not the invoice address's (column 34).
    assert_eq!(
        mapping.organization,
        [Source::Column(Column {
            index: 18,
            header: "Company".to_owned()
        })]
    );
    assert!(mapping.metadata.contains(&Column {
        index: 33,
        header: "Company (2)".to_owned()
    }));

    let rows: Vec<ImportRow> = csv.map(|item| item.unwrap()).collect();
    assert_eq!(rows.len(), 120);
    assert_eq!(lines(&rows), (2..=121).collect::<Vec<u64>>());

    let first = at(&rows, 2);
    assert_eq!(first.external_id.as_deref(), Some("Z7X9K-1"));
    assert_eq!(first.name, "Jisoo Park");
    assert_eq!(first.email.as_deref(), Some("jisoo.park.2.0@example.org"));
    assert_eq!(first.phone.as_deref(), Some("+82-10-2390-6915"));
    assert_eq!(first.organization.as_deref(), Some("Umbrella GmbH"));
    assert_eq!(first.ticket_type.as_deref(), Some("VIP"));
    // The order e-mail was not needed, so it is kept; so are the name parts.
    assert_eq!(first.metadata["Email"], json!("jisoo.park.2.0@example.org"));
    assert_eq!(first.metadata["Attendee name: Family name"], json!("Park"));
    assert_eq!(first.metadata["E-mail address verified"], json!("Yes"));
    assert!(!first.metadata.contains_key("Order code"));
    assert!(!first.metadata.contains_key("Company (2)"));

    let second = at(&rows, 3);
    assert_eq!(second.name, "Søren 최");
    assert_eq!(second.organization.as_deref(), Some("Globex \"Intl\""));
    assert_eq!(second.external_id.as_deref(), Some("PWN7Z-1"));
    assert_eq!(at(&rows, 4).name, "민준 Żak");
    assert_eq!(at(&rows, 5).organization.as_deref(), Some("Acme, Inc."));
    assert_eq!(at(&rows, 42).name, "서연 최");
    assert_eq!(at(&rows, 121).external_id.as_deref(), Some("GUMHM-1"));
}

#[test]
fn simple_csv_parses_every_row() {
    let rows = rows_of(SIMPLE);
    assert_eq!(rows.len(), 120);
    assert_eq!(lines(&rows), (2..=121).collect::<Vec<u64>>());
    assert_eq!(
        at(&rows, 2),
        &ImportRow {
            line: 2,
            external_id: Some("EXT-3-000000".to_owned()),
            name: "Chloé 박".to_owned(),
            email: Some("chlo.3.0@example.org".to_owned()),
            phone: Some("+82-10-9916-3136".to_owned()),
            organization: Some("서울대학교".to_owned()),
            attention: None,
            ticket_type: None,
            barcode: None,
            cancelled: false,
            metadata: serde_json::Map::new(),
        }
    );
    assert_eq!(at(&rows, 4).organization, None);
    assert_eq!(at(&rows, 5).name, "서연 이");
    assert_eq!(at(&rows, 18).organization.as_deref(), Some("Acme, Inc."));
    assert_eq!(
        at(&rows, 31).organization.as_deref(),
        Some("Globex \"Intl\"")
    );
    assert_eq!(at(&rows, 37).name, "Maria O'Neil");
    assert_eq!(at(&rows, 121).external_id.as_deref(), Some("EXT-3-000119"));
    assert!(rows.iter().all(|row| row.metadata.is_empty()));
}

#[test]
fn the_real_exports_have_no_duplicates() {
    for path in [EVENTBRITE, PRETIX, SIMPLE] {
        let mut seen = DuplicateTracker::new();
        for row in rows_of(path) {
            seen.check(row).unwrap();
        }
    }
}

// ---- delimiters, line endings, BOM ------------------------------------------------

#[test]
fn semicolon_delimited_input_parses() {
    let mut csv =
        ParticipantCsv::new(&b"Name;E-Mail;Organisation\nJ\xC3\xBCrgen M\xC3\xBCller;J.M@Example.DE;\"Acme; GmbH, Berlin\"\n"[..])
            .unwrap();
    assert_eq!(csv.mapping().delimiter, ';');
    let row = csv.next().unwrap().unwrap();
    assert_eq!(row.name, "Jürgen Müller");
    assert_eq!(row.email.as_deref(), Some("j.m@example.de"));
    assert_eq!(row.organization.as_deref(), Some("Acme; GmbH, Berlin"));
    assert!(csv.next().is_none());
}

#[test]
fn tab_delimited_input_parses() {
    let mut csv =
        ParticipantCsv::new(&b"Full name\tMail\tMobile\tNotes\nAna, Lu\xC3\xADsa\ta@b.io\t010\tvegan, nut allergy\n"[..])
            .unwrap();
    assert_eq!(csv.mapping().delimiter, '\t');
    let row = csv.next().unwrap().unwrap();
    assert_eq!(row.name, "Ana, Luísa");
    assert_eq!(row.phone.as_deref(), Some("010"));
    assert_eq!(row.attention.as_deref(), Some("vegan, nut allergy"));
}

#[test]
fn line_endings_and_a_bom_do_not_change_the_result() {
    let lf = "name,email,notes\nAda,ada@x.org,\"two\nlines\"\n\nBo,bo@x.org,\n";
    let expected = ok_rows(lf);
    assert_eq!(lines(&expected), [2, 5]);
    for variant in [
        lf.replace('\n', "\r\n"),
        lf.replace('\n', "\r"),
        format!("\u{feff}{lf}"),
        format!("\u{feff}{}", lf.replace('\n', "\r\n")),
        lf.trim_end().to_owned(),
    ] {
        assert_eq!(ok_rows(&variant), expected, "{variant:?}");
    }
    // Line breaks inside a cell come out as `\n` whatever the file used.
    assert_eq!(expected[0].attention.as_deref(), Some("two\nlines"));
}

// ---- line numbers -------------------------------------------------------------------

#[test]
fn a_quoted_newline_keeps_the_following_line_numbers_right() {
    let text = "name,notes\r\n\
                Ada,\"needs\r\nwheelchair\r\naccess\"\r\n\
                Bo,\r\n\
                Cy,\"one \"\"quoted\"\" word\"\r\n";
    let rows = ok_rows(text);
    assert_eq!(lines(&rows), [2, 5, 6]);
    assert_eq!(
        rows[0].attention.as_deref(),
        Some("needs\nwheelchair\naccess")
    );
    assert_eq!(rows[2].attention.as_deref(), Some("one \"quoted\" word"));
}

#[test]
fn blank_lines_count_but_yield_nothing() {
    let text = "\n\nname,email\n\nAda,\n,,\n\n\nBo,\n   \nCy,";
    let rows = ok_rows(text);
    // The header is on line 3 here; rows keep their real line numbers.
    assert_eq!(lines(&rows), [5, 9, 11]);
}

#[test]
fn errors_carry_the_line_of_their_record() {
    let text = "name,email\nAda,ada@x.org\n\"Bo\nBoson\",bo@x.org\n,cy@x.org\nDi,not-an-address\n";
    let items = parse(text);
    assert_eq!(items.len(), 4);
    assert_eq!(items[0].as_ref().unwrap().line, 2);
    assert_eq!(items[1].as_ref().unwrap_err().line, 3);
    assert_eq!(items[2].as_ref().unwrap_err().line, 5);
    assert_eq!(items[3].as_ref().unwrap_err().line, 6);
}

// ---- per-row errors -----------------------------------------------------------------

#[test]
fn an_empty_name_is_a_row_error() {
    let err = only_error("name,email\n  ,x@y.org\n");
    assert_eq!((err.line, err.field.as_str()), (2, "name"));
    assert!(err.message.contains("empty"), "{}", err.message);

    let err = only_error("First Name,Last Name,Email\n,,x@y.org\n");
    assert_eq!(err.field, "name");
    assert!(
        err.message.contains("\"First Name\" + \"Last Name\""),
        "{}",
        err.message
    );
}

#[test]
fn a_bad_email_is_a_row_error_and_parsing_continues() {
    let items = parse("name,email\nAda,ada(at)example.org\nBo,Bo@Example.org\nCy,\n");
    let err = items[0].as_ref().unwrap_err();
    assert_eq!((err.line, err.field.as_str()), (2, "email"));
    assert!(
        err.message.contains("ada(at)example.org"),
        "{}",
        err.message
    );
    assert_eq!(
        items[1].as_ref().unwrap().email.as_deref(),
        Some("bo@example.org")
    );
    assert_eq!(
        items[2].as_ref().unwrap().email,
        None,
        "an empty e-mail is allowed"
    );
}

#[test]
fn non_utf8_bytes_are_an_error_naming_the_line() {
    // Windows-1252 "Müller" on line 3.
    let items = parse(&b"name,organization\nAda,Acme\nM\xFCller,Acme\nBo,Caf\xE9\nCy,\n"[..]);
    assert_eq!(items.len(), 4);
    let err = items[1].as_ref().unwrap_err();
    assert_eq!((err.line, err.field.as_str()), (3, "name"));
    assert!(err.message.contains("line 3"), "{}", err.message);
    assert!(err.message.contains("UTF-8"), "{}", err.message);
    let err = items[2].as_ref().unwrap_err();
    assert_eq!((err.line, err.field.as_str()), (4, "organization"));
    assert_eq!(items[3].as_ref().unwrap().name, "Cy");

    // Unused columns are checked too, and named by their header.
    let err = only_error(&b"name,Dietary\nAda,cr\xE8me\n"[..]);
    assert_eq!(err.field, "Dietary");
}

#[test]
fn a_non_utf8_header_is_an_import_error_naming_line_1() {
    let Err(err) = ParticipantCsv::new(&b"Name,Soci\xE9t\xE9\nAda,Acme\n"[..]) else {
        panic!("accepted a Latin-1 header");
    };
    assert!(
        matches!(err, ImportError::Encoding { line: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn utf16_and_spreadsheets_are_refused_with_a_hint() {
    for (bytes, hint) in [
        (&b"\xFF\xFEn\0a\0m\0e\0\n\0"[..], "UTF-16"),
        (&b"PK\x03\x04\x14\0\x06\0"[..], ".xlsx"),
        (&b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1"[..], ".xls"),
    ] {
        let Err(err) = ParticipantCsv::new(bytes) else {
            panic!("accepted {hint}");
        };
        assert!(
            matches!(err, ImportError::Encoding { line: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(hint), "{err}");
    }
}

#[test]
fn a_header_without_a_name_column_is_an_import_error_naming_name() {
    let Err(err) = ParticipantCsv::new(&b"email,phone,Buyer First Name\na@b.org,1,Ada\n"[..])
    else {
        panic!("accepted a header without a name column");
    };
    let ImportError::MissingColumn { field, found } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*field, "name");
    assert!(found.contains("\"Buyer First Name\""), "{found}");
    assert!(err.to_string().contains("name"), "{err}");
    assert_eq!(err.to_row_error().field, "name");

    // A file without a header at all says the same.
    assert!(matches!(
        ParticipantCsv::new(&b"Ada Lovelace,ada@x.org\n"[..]),
        Err(ImportError::MissingColumn { field: "name", .. })
    ));
}

#[test]
fn empty_uploads_are_an_import_error() {
    for text in ["", "\u{feff}", "\n\r\n  \n", ",,,\n"] {
        let result = ParticipantCsv::new(text.as_bytes());
        assert!(
            matches!(
                result,
                Err(ImportError::Empty | ImportError::MissingColumn { .. })
            ),
            "{text:?}"
        );
    }
    assert!(matches!(
        ParticipantCsv::new(&b""[..]),
        Err(ImportError::Empty)
    ));
    assert!(matches!(
        ParticipantCsv::new(&b"\xEF\xBB\xBF"[..]),
        Err(ImportError::Empty)
    ));
    // A header alone is a valid, empty list.
    assert_eq!(parse("name,email\r\n").len(), 0);
}

#[test]
fn short_rows_are_padded_and_long_rows_must_not_hide_data() {
    let items = parse("name,email,organization\nAda\nBo,bo@x.org,Acme,,\nCy,cy@x.org,Acme, Inc.\n");
    assert_eq!(items[0].as_ref().unwrap().name, "Ada");
    assert_eq!(
        items[1].as_ref().unwrap().organization.as_deref(),
        Some("Acme")
    );
    let err = items[2].as_ref().unwrap_err();
    assert_eq!((err.line, err.field.as_str()), (4, ROW_FIELD));
    assert!(err.message.contains("unquoted ','"), "{}", err.message);
}

#[test]
fn an_unclosed_quote_is_caught_before_it_eats_the_file() {
    // Small file: the runaway record ends at end of file with line breaks inside.
    let items = parse("name,email\n\"Ada,ada@x.org\nBo,bo@x.org\nCy,cy@x.org\n");
    assert_eq!(items.len(), 1);
    let err = items[0].as_ref().unwrap_err();
    assert_eq!((err.line, err.field.as_str()), (2, "name"));
    assert!(err.message.contains("not closed"), "{}", err.message);

    // Large file: reading stops once the record passes the size cap.
    let rows = Generated::new(100_000).with_unclosed_quote_at(10);
    let mut csv = ParticipantCsv::new(rows).unwrap();
    let items: Vec<_> = csv.by_ref().collect();
    assert_eq!(items.len(), 11);
    assert!(items[..10].iter().all(Result::is_ok));
    let err = items[10].as_ref().unwrap_err();
    assert_eq!((err.line, err.field.as_str()), (12, FILE_FIELD));
    assert!(err.message.contains("not closed"), "{}", err.message);
    assert!(csv.aborted());
    assert!(csv.next().is_none());
}

#[test]
fn an_io_error_ends_the_rows_with_a_file_error() {
    struct Failing(&'static [u8]);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "client went away",
                ));
            }
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut csv = ParticipantCsv::new(Failing(b"name\nAda\nBo\n")).unwrap();
    let items: Vec<_> = csv.by_ref().collect();
    assert_eq!(items.len(), 3);
    assert!(items[1].is_ok());
    let err = items[2].as_ref().unwrap_err();
    assert_eq!(err.field, FILE_FIELD);
    assert!(err.message.contains("client went away"), "{}", err.message);
    assert!(csv.aborted());

    assert!(matches!(
        ParticipantCsv::new(Failing(b"")),
        Err(ImportError::Io(_))
    ));
}

// ---- mapping details ----------------------------------------------------------------

#[test]
fn pretix_attendee_email_falls_back_to_the_order_email() {
    let text = "Order code,Position ID,Email,Attendee name,Attendee email,Company,Company\n\
                ABCDE,1,buyer@x.org,Ada,ada@x.org,Acme,Invoice Ltd\n\
                ABCDE,2,buyer@x.org,Bo,,,Invoice Ltd\n\
                ABCDE,,buyer@x.org,Cy,,,\n";
    let rows = ok_rows(text);
    assert_eq!(rows[0].email.as_deref(), Some("ada@x.org"));
    assert_eq!(rows[0].metadata["Email"], json!("buyer@x.org"));
    assert_eq!(rows[0].organization.as_deref(), Some("Acme"));
    assert_eq!(rows[0].metadata["Company (2)"], json!("Invoice Ltd"));
    assert_eq!(rows[1].email.as_deref(), Some("buyer@x.org"));
    assert!(!rows[1].metadata.contains_key("Email"));
    assert_eq!(
        rows[1].organization, None,
        "the invoice company is not the attendee's"
    );
    assert_eq!(rows[1].external_id.as_deref(), Some("ABCDE-2"));
    assert_eq!(
        rows[2].external_id, None,
        "an order code alone identifies no one"
    );
    assert_eq!(rows[2].metadata["Order code"], json!("ABCDE"));
}

#[test]
fn fallbacks_apply_per_row() {
    let text = "Full name,First name,Last name,Home Phone,Cell Phone,Attendee #,Barcode #\n\
                Ada Lovelace,Ada,Lovelace,111,222,A1,B1\n\
                ,Bo,Boson,333,,,B2\n\
                ,,Curie,,,,\n";
    let rows = ok_rows(text);
    assert_eq!(rows[0].name, "Ada Lovelace");
    assert_eq!(rows[0].phone.as_deref(), Some("222"));
    assert_eq!(rows[0].external_id.as_deref(), Some("A1"));
    assert_eq!(rows[0].metadata["Home Phone"], json!("111"));
    assert_eq!(rows[0].barcode.as_deref(), Some("B1"));
    assert_eq!(rows[1].barcode.as_deref(), Some("B2"));
    assert_eq!(rows[1].name, "Bo Boson");
    assert_eq!(rows[1].phone.as_deref(), Some("333"));
    assert_eq!(rows[1].external_id.as_deref(), Some("B2"));
    assert_eq!(rows[2].name, "Curie");
}

#[test]
fn values_are_trimmed_and_spreadsheet_guards_removed() {
    let text = "  External ID , Name ,Phone,Ticket,Attention,Dietary \n\
                =\"00123\",  Ada  ,=\"+82 10 1234\",  VIP ,  Side door ,  vegan  \n";
    let rows = ok_rows(text);
    assert_eq!(rows[0].external_id.as_deref(), Some("00123"));
    assert_eq!(rows[0].name, "Ada");
    assert_eq!(rows[0].phone.as_deref(), Some("+82 10 1234"));
    assert_eq!(rows[0].ticket_type.as_deref(), Some("VIP"));
    assert_eq!(rows[0].attention.as_deref(), Some("Side door"));
    assert_eq!(rows[0].metadata["Dietary"], json!("vegan"));
}

#[test]
fn the_mapping_serializes_for_a_dry_run() {
    let csv = ParticipantCsv::new(&b"Name,Email,Extra\n"[..]).unwrap();
    let value = serde_json::to_value(csv.mapping()).unwrap();
    assert_eq!(value["delimiter"], json!(","));
    assert_eq!(
        value["email"],
        json!([{"kind": "column", "index": 1, "header": "Email"}])
    );
    assert_eq!(value["metadata"], json!([{"index": 2, "header": "Extra"}]));
}

#[test]
fn a_row_error_serializes_as_the_api_shape() {
    let err = only_error("name,email\nAda,nope\n");
    let value = serde_json::to_value(&err).unwrap();
    assert_eq!(value["line"], json!(2));
    assert_eq!(value["field"], json!("email"));
    assert!(value["message"].is_string());
}

// ---- robustness ---------------------------------------------------------------------

#[test]
fn arbitrary_bytes_never_panic() {
    // A small deterministic generator over the bytes that matter to a CSV parser.
    let alphabet = b"ab,;\t\"\r\n @.\xC3\xA9\xFF=#";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2_000 {
        let mut input = b"name,email,Company,Company\n".to_vec();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 200) as usize;
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            input.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        if let Ok(csv) = ParticipantCsv::new(&input[..]) {
            let mut last_line = 0;
            for item in csv {
                let line = item.map_or_else(|err| err.line, |row| row.line);
                assert!(line > last_line, "lines go forward: {input:?}");
                last_line = line;
            }
        }
    }
}

/// A CSV upload of `rows` participants, generated as it is read: nothing is
/// materialized, so parsing it shows whether the parser's memory stays flat.
struct Generated {
    rows: u64,
    next: u64,
    unclosed_quote_at: Option<u64>,
    pending: Vec<u8>,
    offset: usize,
}

impl Generated {
    fn new(rows: u64) -> Self {
        Self {
            rows,
            next: 0,
            unclosed_quote_at: None,
            pending:
                b"Attendee #,First Name,Last Name,Email,Cell Phone,Company,Ticket Type,Notes\r\n"
                    .to_vec(),
            offset: 0,
        }
    }

    fn with_unclosed_quote_at(mut self, row: u64) -> Self {
        self.unclosed_quote_at = Some(row);
        self
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.pending.len() {
            if self.next == self.rows {
                return Ok(0);
            }
            let n = self.next;
            self.next += 1;
            self.pending.clear();
            self.offset = 0;
            // Once a quote is left open, later quotes would close it again.
            let (quote, company) = match self.unclosed_quote_at {
                Some(at) if at == n => ("\"", "Globex Seoul"),
                Some(_) => ("", "Globex Seoul"),
                None => ("", "\"Globex \"\"Intl\"\", Seoul\""),
            };
            let line = format!(
                "{n},{quote}Ada{n},Lovelace 김,ada.{n}@example.org,+82-10-{:04}-{:04},{company},VIP,\r\n",
                n % 10_000,
                (n * 7) % 10_000
            );
            self.pending.extend_from_slice(line.as_bytes());
        }
        let n = (self.pending.len() - self.offset).min(buf.len());
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

#[test]
fn two_hundred_thousand_generated_rows_stream_through() {
    const ROWS: u64 = 200_000;
    let mut count = 0u64;
    let mut last = None;
    for item in ParticipantCsv::new(Generated::new(ROWS)).unwrap() {
        last = Some(item.unwrap());
        count += 1;
    }
    assert_eq!(count, ROWS);
    let last = last.unwrap();
    assert_eq!(last.line, ROWS + 1);
    assert_eq!(last.external_id.as_deref(), Some("199999"));
    assert_eq!(last.organization.as_deref(), Some("Globex \"Intl\", Seoul"));
}

#[test]
fn the_parser_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<ParticipantCsv<std::fs::File>>();
    assert_send::<DuplicateTracker>();
    assert_send::<RowError>();
}
