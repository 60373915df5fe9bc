//! From a header line to a [`ColumnMapping`]: the alias table and how it is applied.
//!
//! A header is *normalized* before lookup: lower-cased, every character that is not
//! a letter or digit dropped, and `#` read as `number`. So `"E-mail"`, `"Email "`
//! and `"EMAIL"` are all `email`; `"Attendee #"` is `attendeenumber`; pretix's
//! `"Attendee name: Given name"` is `attendeenamegivenname`. Exact normalized
//! matches only: no substring or fuzzy matching, because export headers such as
//! `"E-mail address verified"`, `"Buyer Email"` or `"Invoice address name"` look
//! like the fields we want and must stay out of them.
//!
//! Each field has an ordered list of aliases. Attendee-level names come before
//! generic ones (pretix's `"Attendee email"` before its order `"Email"`), mobile
//! before other phones, and Eventbrite's `"Attendee #"` before `"Barcode #"`. Every
//! alias present in the header becomes a [`Source`], in that order, and a row takes
//! its value from the first source that is non-empty *on that row*: an attendee
//! without an attendee e-mail falls back to the order e-mail. When a header repeats
//! (pretix has two `"Company"` columns; the second is the invoice address), only its
//! first occurrence is a source.

use serde::Serialize;

/// One column of the upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// 0-based position in the header.
    pub index: usize,
    /// The header as shown to people and used as the metadata key: trimmed; a
    /// repeated header gets a ` (2)`, ` (3)`... suffix; an empty one is called
    /// `column N` (1-based).
    pub header: String,
}

/// Where a field's value comes from. A field has a list of these, tried in order
/// on each row; the first that yields a non-empty value wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// The trimmed value of one column.
    Column(Column),
    /// Given and family name joined by a space (either may be absent or empty on a
    /// row; the other is then the whole name).
    GivenFamily {
        given: Option<Column>,
        family: Option<Column>,
    },
    /// pretix: `ORDERCODE-POSITIONID`, only when both are non-empty (an order code
    /// alone is shared by every ticket of the order, so it identifies no one).
    OrderPosition {
        order_code: Column,
        position_id: Column,
    },
}

impl Source {
    /// The columns this source reads.
    pub fn columns(&self) -> impl Iterator<Item = &Column> {
        let (a, b) = match self {
            Source::Column(column) => (Some(column), None),
            Source::GivenFamily { given, family } => (given.as_ref(), family.as_ref()),
            Source::OrderPosition {
                order_code,
                position_id,
            } => (Some(order_code), Some(position_id)),
        };
        a.into_iter().chain(b)
    }
}

impl std::fmt::Display for Source {
    /// `"Email"`, `"First Name" + "Last Name"`, `"Order code" - "Position ID"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Column(column) => write!(f, "{:?}", column.header),
            Source::GivenFamily { given, family } => {
                let mut parts = given.iter().chain(family).map(|c| &c.header);
                if let Some(first) = parts.next() {
                    write!(f, "{first:?}")?;
                }
                parts.try_for_each(|part| write!(f, " + {part:?}"))
            }
            Source::OrderPosition {
                order_code,
                position_id,
            } => write!(f, "{:?} - {:?}", order_code.header, position_id.header),
        }
    }
}

/// Which columns feed which field, as decided from the header. A dry run shows this
/// so the organizer can see, before anything is written, that "Cell Phone" became
/// the phone and "Buyer Email" did not become the e-mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnMapping {
    /// The detected delimiter: `,`, `;` or a tab.
    pub delimiter: char,
    /// Sources for each field, in the order they are tried on every row.
    pub external_id: Vec<Source>,
    pub name: Vec<Source>,
    pub email: Vec<Source>,
    pub phone: Vec<Source>,
    pub organization: Vec<Source>,
    pub attention: Vec<Source>,
    pub ticket_type: Vec<Source>,
    /// The ticket shop's barcode (also an `external_id` fallback).
    pub barcode: Vec<Source>,
    /// The order's or attendee's status in the shop (cancelled, refunded, not attending).
    pub status: Vec<Source>,
    /// Columns that feed no field; their non-empty values go to `metadata`. (A
    /// fallback source whose value a row did not use, say `"Barcode #"` when
    /// `"Attendee #"` was filled, also lands in that row's metadata.)
    pub metadata: Vec<Column>,
}

impl ColumnMapping {
    /// Each field's name (as used in `RowError::field`) with its sources.
    pub fn fields(&self) -> [(&'static str, &[Source]); 9] {
        [
            ("external_id", &self.external_id),
            ("name", &self.name),
            ("email", &self.email),
            ("phone", &self.phone),
            ("organization", &self.organization),
            ("attention", &self.attention),
            ("ticket_type", &self.ticket_type),
            ("barcode", &self.barcode),
            ("status", &self.status),
        ]
    }

    /// The field a column feeds, if any.
    pub fn field_of(&self, index: usize) -> Option<&'static str> {
        self.fields().into_iter().find_map(|(field, sources)| {
            sources
                .iter()
                .flat_map(Source::columns)
                .any(|c| c.index == index)
                .then_some(field)
        })
    }
}

/// The alias table: normalized header names (see [`normalize`]) by role, each list
/// in order of preference. An alias appears in one list only (a test checks).
mod aliases {
    pub(super) const FULL_NAME: &[&str] = &[
        "attendeename",
        "attendeefullname",
        "participantname",
        "guestname",
        "name",
        "fullname",
        "성명",
    ];
    pub(super) const GIVEN_NAME: &[&str] = &[
        "attendeenamegivenname",
        "attendeegivenname",
        "attendeefirstname",
        "firstname",
        "givenname",
        "forename",
    ];
    pub(super) const FAMILY_NAME: &[&str] = &[
        "attendeenamefamilyname",
        "attendeefamilyname",
        "attendeelastname",
        "lastname",
        "familyname",
        "surname",
    ];
    pub(super) const EMAIL: &[&str] = &[
        "attendeeemail",
        "attendeeemailaddress",
        "email",
        "emailaddress",
        "mail",
        "mailaddress",
        "emailadresse",
        "이메일",
    ];
    /// Mobile first: it is the number that reaches someone at the door.
    pub(super) const PHONE: &[&str] = &[
        "mobile",
        "mobilephone",
        "mobilenumber",
        "mobilephonenumber",
        "cell",
        "cellphone",
        "cellnumber",
        "cellphonenumber",
        "휴대폰",
        "휴대전화",
        "attendeephone",
        "attendeephonenumber",
        "phone",
        "phonenumber",
        "telephone",
        "telephonenumber",
        "tel",
        "전화번호",
        "연락처",
        "homephone",
        "workphone",
        "businessphone",
    ];
    pub(super) const ORGANIZATION: &[&str] = &[
        "company",
        "organization",
        "organisation",
        "org",
        "companyname",
        "organizationname",
        "organisationname",
        "affiliation",
        "institution",
        "소속",
        "회사",
    ];
    /// Before the pretix order code + position ID pair.
    pub(super) const EXTERNAL_ID: &[&str] = &[
        "externalid",
        "attendeenumber",
        "attendeeno",
        "attendeeid",
        "participantid",
        "registrationid",
        "ticketid",
        "barcodenumber",
        "barcode",
    ];
    /// After the pretix pair: a bare "ID" column is a weaker signal.
    pub(super) const EXTERNAL_ID_LAST: &[&str] = &["id"];
    pub(super) const ORDER_CODE: &[&str] = &["ordercode"];
    pub(super) const POSITION_ID: &[&str] = &["positionid"];
    pub(super) const TICKET_TYPE: &[&str] = &[
        "tickettype",
        "ticket",
        "ticketname",
        "tickettypename",
        "ticketclass",
        "ticketcategory",
        "product",
        "productname",
        "registrationtype",
        "attendeetype",
    ];
    pub(super) const ATTENTION: &[&str] = &["attention", "attn", "note", "notes", "remarks"];
    /// Eventbrite's `Barcode #`, pretix's ticket secret.
    pub(super) const BARCODE: &[&str] = &[
        "barcodenumber",
        "barcode",
        "ticketsecret",
        "secret",
        "ticketbarcode",
    ];
    /// Eventbrite's `Attendee Status`, pretix's order `Status`.
    pub(super) const STATUS: &[&str] = &[
        "attendeestatus",
        "ticketstatus",
        "registrationstatus",
        "orderstatus",
        "status",
    ];

    #[cfg(test)]
    pub(super) const ALL: &[&[&str]] = &[
        FULL_NAME,
        GIVEN_NAME,
        FAMILY_NAME,
        EMAIL,
        PHONE,
        ORGANIZATION,
        EXTERNAL_ID,
        EXTERNAL_ID_LAST,
        ORDER_CODE,
        POSITION_ID,
        TICKET_TYPE,
        ATTENTION,
        BARCODE,
        STATUS,
    ];
}

/// Lower-case, keep letters and digits only, read `#` as `number`.
pub(super) fn normalize(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    for c in header.chars() {
        if c == '#' {
            out.push_str("number");
        } else if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Display names for the header cells: trimmed, repeats suffixed, blanks named.
pub(super) fn display_headers(raw: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (index, header) in raw.iter().enumerate() {
        let trimmed = header.trim();
        let base = if trimmed.is_empty() {
            format!("column {}", index + 1)
        } else {
            trimmed.to_owned()
        };
        let mut name = base.clone();
        let mut n = 1;
        while out.contains(&name) {
            n += 1;
            name = format!("{base} ({n})");
        }
        out.push(name);
    }
    out
}

/// Build the mapping for a header. `None` when no column can give a name.
pub(super) fn build(raw_headers: &[String], delimiter: u8) -> Option<ColumnMapping> {
    let normalized: Vec<String> = raw_headers.iter().map(|h| normalize(h)).collect();
    let display = display_headers(raw_headers);
    let column = |index: usize| Column {
        index,
        header: display[index].clone(),
    };
    // First occurrence of an alias; a repeated header only counts once.
    let find = |alias: &str| normalized.iter().position(|h| h == alias).map(column);
    let find_first = |aliases: &[&str]| aliases.iter().find_map(|a| find(a));
    let all = |aliases: &[&str]| -> Vec<Source> {
        aliases
            .iter()
            .filter_map(|a| find(a))
            .map(Source::Column)
            .collect()
    };

    let mut name = all(aliases::FULL_NAME);
    let given = find_first(aliases::GIVEN_NAME);
    let family = find_first(aliases::FAMILY_NAME);
    if given.is_some() || family.is_some() {
        name.push(Source::GivenFamily { given, family });
    }
    if name.is_empty() {
        return None;
    }

    let mut external_id = all(aliases::EXTERNAL_ID);
    if let (Some(order_code), Some(position_id)) = (
        find_first(aliases::ORDER_CODE),
        find_first(aliases::POSITION_ID),
    ) {
        external_id.push(Source::OrderPosition {
            order_code,
            position_id,
        });
    }
    external_id.extend(all(aliases::EXTERNAL_ID_LAST));

    let mut mapping = ColumnMapping {
        delimiter: char::from(delimiter),
        external_id,
        name,
        email: all(aliases::EMAIL),
        phone: all(aliases::PHONE),
        organization: all(aliases::ORGANIZATION),
        attention: all(aliases::ATTENTION),
        ticket_type: all(aliases::TICKET_TYPE),
        barcode: all(aliases::BARCODE),
        status: all(aliases::STATUS),
        metadata: Vec::new(),
    };
    mapping.metadata = (0..raw_headers.len())
        .filter(|&i| mapping.field_of(i).is_none())
        .map(column)
        .collect();
    Some(mapping)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(line: &str) -> Vec<String> {
        line.split(',').map(str::to_owned).collect()
    }

    /// One exception: a barcode column is also an external ID fallback (the shop's barcode
    /// identifies the attendee when nothing better does).
    #[test]
    fn every_alias_is_normalized_and_belongs_to_one_field() {
        let mut seen = std::collections::HashSet::new();
        for list in aliases::ALL {
            for alias in *list {
                assert_eq!(
                    normalize(alias),
                    *alias,
                    "alias {alias:?} is not normalized"
                );
                let shared =
                    std::ptr::eq(*list, aliases::BARCODE) && aliases::EXTERNAL_ID.contains(alias);
                assert!(
                    seen.insert(*alias) || shared,
                    "alias {alias:?} appears twice"
                );
            }
        }
    }

    #[test]
    fn headers_match_whatever_their_case_spacing_and_punctuation() {
        for header in [
            "E-mail",
            "Email address",
            "Attendee email",
            "Mail",
            " EMAIL ",
        ] {
            let mapping = build(&headers(&format!("Name,{header}")), b',').unwrap();
            assert_eq!(mapping.email.len(), 1, "{header}");
        }
        for header in ["Name", "Full name", "Attendee name", "full_name"] {
            let mapping = build(&headers(header), b',').unwrap();
            assert_eq!(mapping.name.len(), 1, "{header}");
        }
        assert_eq!(normalize("Attendee #"), "attendeenumber");
        assert_eq!(
            normalize("Attendee name: Given name"),
            "attendeenamegivenname"
        );
    }

    #[test]
    fn look_alike_headers_stay_in_metadata() {
        let mapping = build(
            &headers("Name,E-mail address verified,Buyer Email,Invoice address name,Order #"),
            b',',
        )
        .unwrap();
        assert!(mapping.email.is_empty());
        assert!(mapping.external_id.is_empty());
        assert_eq!(mapping.metadata.len(), 4);
    }

    #[test]
    fn a_full_name_column_is_tried_before_first_plus_last() {
        let mapping = build(&headers("Last Name,Name,First Name"), b',').unwrap();
        assert_eq!(mapping.name[0].to_string(), "\"Name\"");
        assert_eq!(
            mapping.name[1].to_string(),
            "\"First Name\" + \"Last Name\""
        );
    }

    #[test]
    fn phones_prefer_mobile_and_ids_prefer_attendee_number() {
        let mapping = build(
            &headers("Name,Home Phone,Phone,Cell Phone,Barcode #,Attendee #"),
            b',',
        )
        .unwrap();
        let phone: Vec<String> = mapping.phone.iter().map(ToString::to_string).collect();
        assert_eq!(phone, ["\"Cell Phone\"", "\"Phone\"", "\"Home Phone\""]);
        let ids: Vec<String> = mapping
            .external_id
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["\"Attendee #\"", "\"Barcode #\""]);
    }

    #[test]
    fn repeated_and_blank_headers_get_distinct_display_names() {
        let shown = display_headers(&headers("Company,,Company ,City,Company"));
        assert_eq!(
            shown,
            ["Company", "column 2", "Company (2)", "City", "Company (3)"]
        );
    }

    #[test]
    fn no_name_column_means_no_mapping() {
        assert_eq!(build(&headers("email,phone,Buyer First Name"), b','), None);
    }
}
