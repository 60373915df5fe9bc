//! Streaming parser for participant lists uploaded as CSV (`POST
//! .../participants/import`, DESIGN.md §6).
//!
//! Organizers upload whatever their ticketing system exported: Eventbrite's attendee
//! summary, pretix's order positions, or a hand-made sheet. [`ParticipantCsv`] turns
//! any of them into [`ImportRow`]s, one per data line, without a database, without
//! async, and in constant memory, so the HTTP handler can stream the request body
//! through it and a dry run costs the same as the real thing.
//!
//! # Finding the columns: aliases, not configuration
//!
//! Exports name the same thing differently (`Email`, `E-mail`, `Attendee email`),
//! split names (`First Name` + `Last Name`), pad headers (`"Buyer Last Name "`) and
//! repeat them (pretix's two `Company` columns). Asking organizers to map columns by
//! hand at the door is slow and error-prone, so the header is matched against an
//! alias table instead: names are compared case-, space- and punctuation-insensitively
//! but otherwise *exactly*, because look-alikes such as `Buyer Email` or
//! `E-mail address verified` must not be taken for the attendee's e-mail. Each field
//! has an ordered list of candidate columns and each row uses the first non-empty
//! one, which is how pretix's attendee e-mail falls back to the order e-mail. The
//! full table and its order are in [`mapping`]; the result is a [`ColumnMapping`]
//! that a dry run can show before anything is written.
//!
//! | field          | headers (normalized), most preferred first                                   |
//! |----------------|------------------------------------------------------------------------------|
//! | `name`         | Attendee name, Participant name, Guest name, Name, Full name, 성명; else Given/First + Family/Last name (incl. pretix `Attendee name: Given name`) |
//! | `email`        | Attendee email, Email, Email address, Mail, 이메일                           |
//! | `phone`        | Mobile, Cell Phone, 휴대폰, Attendee phone, Phone, Phone number, Telephone, 전화번호, 연락처, Home Phone, Work Phone |
//! | `organization` | Company, Organization, Organisation, Org, Affiliation, Institution, 소속, 회사 |
//! | `external_id`  | External ID, Attendee #, Attendee ID, Participant ID, Registration ID, Ticket ID, Barcode #, Barcode; pretix Order code + Position ID as `CODE-ID`; ID |
//! | `ticket_type`  | Ticket Type, Ticket, Ticket name, Product, Registration type, Attendee type |
//! | `attention`    | Attention, Attn, Note, Notes, Remarks                                        |
//! | `barcode`      | Barcode #, Barcode, Ticket secret, Secret (the shop's own credential)        |
//! | `status`       | Attendee status, Ticket status, Registration status, Order status, Status    |
//!
//! A row whose status says the ticket is void (cancelled, canceled, refunded, not attending,
//! deleted, declined, void, expired) is [`ImportRow::cancelled`]: it is imported with a revoked
//! ticket.
//!
//! Every other non-empty cell is kept in `metadata` under its trimmed header, so
//! nothing the organizer uploaded is silently dropped.
//!
//! # Lines, errors and memory
//!
//! [`ImportRow::line`] and [`RowError::line`] are the line where the record starts
//! in the file, counting the header as line 1, whatever the line endings and even
//! after blank lines or a quoted cell that spans lines. A row that cannot be used
//! yields a [`RowError`] naming the field, and parsing goes on with the next row;
//! only a problem with the file as a whole (empty, not UTF-8 text, no name column)
//! is an [`ImportError`]. No row is held after it is returned, and a single record
//! may not exceed 1 MiB, so an unclosed quote cannot pull the whole upload into
//! memory. Duplicate detection needs memory per row and is therefore a separate,
//! opt-in [`DuplicateTracker`].
//!
//! # Layout
//!
//! - `mod.rs`: the public types and the row iterator.
//! - [`mapping`]: header normalization, the alias table, [`ColumnMapping`].
//! - `input`: BOM, delimiter sniffing, line-ending normalization, the record size cap.
//! - `email`: e-mail normalization and validation.
//! - `duplicates`: [`DuplicateTracker`].

mod duplicates;
mod email;
mod input;
pub mod mapping;

#[cfg(test)]
mod tests;

use std::io::Read;

use serde::Serialize;
use serde_json::{Map, Value};

pub use duplicates::{DuplicateTracker, KeyKind};
pub use mapping::{Column, ColumnMapping, Source};

/// `RowError::field` for problems with the row as a whole (misaligned cells).
pub const ROW_FIELD: &str = "row";
/// `RowError::field` for problems with the file that end parsing early.
pub const FILE_FIELD: &str = "file";

/// One participant as read from the upload. Text fields are trimmed; `None` means
/// the cell was empty or the column absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportRow {
    /// The line where this record starts, counting the header as line 1.
    pub line: u64,
    pub external_id: Option<String>,
    /// Never empty.
    pub name: String,
    /// Lower-cased and checked to look like one address.
    pub email: Option<String>,
    pub phone: Option<String>,
    pub organization: Option<String>,
    /// A note for the door staff ("attention", "note(s)" column).
    pub attention: Option<String>,
    pub ticket_type: Option<String>,
    /// The ticket shop's barcode ([`sync_protocol::barcode::normalize`]d).
    pub barcode: Option<String>,
    /// The shop's status marks the ticket void.
    pub cancelled: bool,
    /// Every other non-empty cell, keyed by its header (see [`Column::header`]).
    pub metadata: Map<String, Value>,
}

/// Why one row could not be imported. Serialized as-is into the import response's
/// `errors` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("line {line}, {field}: {message}")]
pub struct RowError {
    /// The line where the record starts, counting the header as line 1.
    pub line: u64,
    /// The participant field (`name`, `email`, ...), the header of a metadata
    /// column, [`ROW_FIELD`] or [`FILE_FIELD`].
    pub field: String,
    /// What is wrong and, where it helps, what to do about it.
    pub message: String,
}

/// Why the upload as a whole cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file is empty; the first line must be a header such as `name,email`")]
    Empty,
    #[error("line {line} is not UTF-8 text: {detail}")]
    Encoding { line: u64, detail: String },
    #[error(
        "no {field} column in the header (found: {found}); add a column named \"name\", \
         or \"First Name\" and \"Last Name\""
    )]
    MissingColumn { field: &'static str, found: String },
    #[error("could not read the upload: {0}")]
    Io(#[from] std::io::Error),
}

impl ImportError {
    /// The same problem in the shape of a per-row error, for responses that report
    /// everything as `{line, field, message}`.
    #[must_use]
    pub fn to_row_error(&self) -> RowError {
        let (line, field) = match self {
            ImportError::Empty | ImportError::Io(_) => (1, FILE_FIELD),
            ImportError::Encoding { line, .. } => (*line, FILE_FIELD),
            ImportError::MissingColumn { field, .. } => (1, *field),
        };
        RowError {
            line,
            field: field.to_owned(),
            message: self.to_string(),
        }
    }
}

/// Reads participants from CSV, one [`ImportRow`] (or [`RowError`]) per data line.
pub struct ParticipantCsv<R: Read> {
    csv: csv::Reader<input::Upload<R>>,
    mapping: ColumnMapping,
    /// Number of header cells; cells beyond it belong to no column.
    width: usize,
    /// Metadata key (display header) per column.
    headers: Vec<String>,
    /// Reused for every record, so reading allocates only what a row keeps.
    record: csv::ByteRecord,
    /// Per row: which columns supplied a field (the rest go to metadata).
    used: Vec<bool>,
    done: bool,
    aborted: bool,
}

impl<R: Read> ParticipantCsv<R> {
    /// Read the header and work out the [`ColumnMapping`]. Reads only the header
    /// line (and a little buffered beyond it).
    ///
    /// # Errors
    ///
    /// [`ImportError::Empty`] when there is no header line,
    /// [`ImportError::Encoding`] when the upload is not UTF-8 text (UTF-16, an Excel
    /// workbook, a Latin-1 header), [`ImportError::MissingColumn`] (field `name`)
    /// when no column can give a name, [`ImportError::Io`] when reading fails.
    pub fn new(reader: R) -> Result<Self, ImportError> {
        let (source, delimiter) = input::sniff(reader)?;
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(source);

        let mut record = csv::ByteRecord::new();
        let line = loop {
            let before = csv.position().line();
            match csv.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => return Err(ImportError::Empty),
                Err(err) => return Err(header_read_error(err)),
            }
            let line = record_line(&csv, &record, before);
            let next_start = csv.position().byte();
            csv.get_mut().start_record(next_start);
            if !is_blank(&record) {
                break line;
            }
        };

        let raw: Vec<String> = record
            .iter()
            .map(|cell| {
                std::str::from_utf8(cell)
                    .map(str::to_owned)
                    .map_err(|_| ImportError::Encoding {
                        line,
                        detail: "export the file again as \"CSV UTF-8\"".to_owned(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let mapping =
            mapping::build(&raw, delimiter).ok_or_else(|| ImportError::MissingColumn {
                field: "name",
                found: summarize(&raw),
            })?;

        Ok(Self {
            csv,
            width: raw.len(),
            headers: mapping::display_headers(&raw),
            mapping,
            record,
            used: vec![false; raw.len()],
            done: false,
            aborted: false,
        })
    }

    /// Which source columns feed which field.
    pub fn mapping(&self) -> &ColumnMapping {
        &self.mapping
    }

    /// True once reading stopped early because the upload could not be read to the
    /// end (an I/O error or a runaway record). The last item was then a
    /// [`RowError`] with field [`FILE_FIELD`], and the rows seen are not the whole
    /// file: do not commit them.
    pub fn aborted(&self) -> bool {
        self.aborted
    }

    /// Turn the current record into a row.
    fn row(&mut self, line: u64) -> Result<ImportRow, RowError> {
        let error = |field: &str, message: String| RowError {
            line,
            field: field.to_owned(),
            message,
        };

        let mut extra = self.record.iter().skip(self.width);
        if let Some(first) = extra.position(|cell| !is_blank_cell(cell)) {
            return Err(error(
                ROW_FIELD,
                format!(
                    "the row has {} cells but the header has {}, and cell {} is not empty; \
                     a value probably contains an unquoted {:?} (put it in double quotes) \
                     or a column has no header",
                    self.record.len(),
                    self.width,
                    self.width + first + 1,
                    self.mapping.delimiter,
                ),
            ));
        }

        let mut cells: Vec<&str> = Vec::with_capacity(self.width);
        for index in 0..self.width {
            let raw = self.record.get(index).unwrap_or_default();
            match std::str::from_utf8(raw) {
                // PostgreSQL cannot store a NUL character (and no person's data holds one).
                Ok(text) if text.contains('\0') => {
                    let field = self
                        .mapping
                        .field_of(index)
                        .unwrap_or(self.headers[index].as_str());
                    return Err(error(
                        field,
                        format!(
                            "line {line} holds a NUL character (column {:?})",
                            self.headers[index]
                        ),
                    ));
                }
                Ok(text) => cells.push(clean(text)),
                Err(_) => {
                    let field = self
                        .mapping
                        .field_of(index)
                        .unwrap_or(self.headers[index].as_str());
                    return Err(error(
                        field,
                        format!(
                            "line {line} is not UTF-8 text (column {:?}); export the file \
                             again as \"CSV UTF-8\"",
                            self.headers[index]
                        ),
                    ));
                }
            }
        }

        self.used.fill(false);
        let used = &mut self.used;
        let mapping = &self.mapping;
        let mut take = |sources: &[Source]| resolve(sources, &cells, used);
        let external_id = take(&mapping.external_id);
        let name = take(&mapping.name);
        let email = take(&mapping.email);
        let phone = take(&mapping.phone);
        let organization = take(&mapping.organization);
        let attention = take(&mapping.attention);
        let ticket_type = take(&mapping.ticket_type);
        let barcode = take(&mapping.barcode);
        let status = take(&mapping.status);

        let Some(name) = name else {
            let from: Vec<String> = mapping.name.iter().map(ToString::to_string).collect();
            return Err(error(
                "name",
                format!("the name is empty (read from {})", from.join(" or ")),
            ));
        };
        for (field, value) in [
            ("name", Some(&name)),
            ("external_id", external_id.as_ref()),
            ("email", email.as_ref()),
            ("phone", phone.as_ref()),
            ("ticket_type", ticket_type.as_ref()),
        ] {
            if value.is_some_and(|v| v.contains('\n')) {
                return Err(error(
                    field,
                    format!(
                        "the {field} contains a line break; if this row swallowed the lines \
                         after it, a double quote opened on line {line} is not closed"
                    ),
                ));
            }
        }
        let email = match email {
            Some(raw) => Some(email::normalize(&raw).map_err(|why| error("email", why))?),
            None => None,
        };
        let barcode = match barcode {
            Some(raw) => Some(
                sync_protocol::barcode::normalize(&raw)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        error(
                            "barcode",
                            format!(
                                "{raw:?} is not a barcode: 2 to 128 letters, digits or signs, \
                                 without spaces"
                            ),
                        )
                    })?,
            ),
            None => None,
        };
        let cancelled = status.as_deref().is_some_and(is_void_status);

        let metadata = cells
            .iter()
            .zip(&self.headers)
            .zip(self.used.iter())
            .filter(|((cell, _), used)| !cell.is_empty() && !**used)
            .map(|((cell, header), _)| (header.clone(), Value::String((*cell).to_owned())))
            .collect();

        Ok(ImportRow {
            line,
            external_id,
            name,
            email,
            phone,
            organization,
            attention,
            ticket_type,
            barcode,
            cancelled,
            metadata,
        })
    }

    /// The item for a failed read; reading stops after it.
    fn read_error(&mut self, err: csv::Error, line: u64) -> RowError {
        self.done = true;
        self.aborted = true;
        let message = match err.into_kind() {
            csv::ErrorKind::Io(io) if is_record_too_long(&io) => format!(
                "the record starting around line {line} is longer than {} KiB; a double \
                 quote is probably not closed",
                input::MAX_RECORD_BYTES / 1024
            ),
            csv::ErrorKind::Io(io) => format!("reading stopped after line {line}: {io}"),
            other => format!("reading stopped after line {line}: {other:?}"),
        };
        RowError {
            line,
            field: FILE_FIELD.to_owned(),
            message,
        }
    }
}

impl<R: Read> Iterator for ParticipantCsv<R> {
    type Item = Result<ImportRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let before = self.csv.position().line();
            match self.csv.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(err) => return Some(Err(self.read_error(err, before))),
            }
            if self.done {
                break;
            }
            let line = record_line(&self.csv, &self.record, before);
            let next_start = self.csv.position().byte();
            self.csv.get_mut().start_record(next_start);
            if !is_blank(&self.record) {
                return Some(self.row(line));
            }
        }
        None
    }
}

/// The line where the record just read starts.
///
/// `before` is the parser's line count before the read. The `csv` crate positions a
/// record where the previous one ended, which is too early when blank lines came in
/// between (it skips them silently). Line endings are all `\n` by now (see
/// `input`), so the lines consumed by the read are exactly: skipped blank lines,
/// line breaks inside quoted cells, and the record's own terminator (absent only for
/// a last line without one). Whatever is not accounted for by the last two were
/// blank lines before the record.
fn record_line<R: Read>(
    csv: &csv::Reader<input::Upload<R>>,
    record: &csv::ByteRecord,
    before: u64,
) -> u64 {
    let source = csv.get_ref();
    let at_end = csv.position().byte() == source.produced();
    let terminated = !(at_end && source.last_byte() != Some(b'\n'));
    let consumed = csv
        .position()
        .line()
        .saturating_sub(before)
        .saturating_sub(u64::from(terminated));
    if consumed == 0 {
        // The common case: one line, no blank lines before it.
        return before;
    }
    let inside: u64 = record
        .iter()
        .map(|cell| cell.iter().filter(|&&b| b == b'\n').count() as u64)
        .sum();
    before + consumed.saturating_sub(inside)
}

/// The first non-empty source wins; the columns it read are marked used.
fn resolve(sources: &[Source], cells: &[&str], used: &mut [bool]) -> Option<String> {
    let cell = |column: &Column| cells.get(column.index).copied().unwrap_or_default();
    for source in sources {
        let value = match source {
            Source::Column(column) => cell(column).to_owned(),
            Source::GivenFamily { given, family } => {
                let parts: Vec<&str> = [given, family]
                    .into_iter()
                    .flatten()
                    .map(cell)
                    .filter(|part| !part.is_empty())
                    .collect();
                parts.join(" ")
            }
            Source::OrderPosition {
                order_code,
                position_id,
            } => {
                let (code, position) = (cell(order_code), cell(position_id));
                if code.is_empty() || position.is_empty() {
                    continue;
                }
                format!("{code}-{position}")
            }
        };
        if value.is_empty() {
            continue;
        }
        for column in source.columns() {
            if let Some(flag) = used.get_mut(column.index) {
                *flag = true;
            }
        }
        return Some(value);
    }
    None
}

/// Trim, and unwrap the `="..."` that some exports use to stop spreadsheets from
/// turning IDs and phone numbers into numbers.
fn clean(cell: &str) -> &str {
    let cell = cell.trim();
    cell.strip_prefix("=\"")
        .and_then(|rest| rest.strip_suffix('"'))
        .map_or(cell, str::trim)
}

fn is_blank_cell(cell: &[u8]) -> bool {
    cell.iter().all(u8::is_ascii_whitespace)
}

/// A line of nothing but delimiters and spaces (spreadsheets like to end with some).
fn is_blank(record: &csv::ByteRecord) -> bool {
    record.iter().all(is_blank_cell)
}

fn is_record_too_long(err: &std::io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.is::<input::RecordTooLong>())
}

fn header_read_error(err: csv::Error) -> ImportError {
    match err.into_kind() {
        csv::ErrorKind::Io(io) => ImportError::Io(io),
        other => ImportError::Io(std::io::Error::other(format!("{other:?}"))),
    }
}

/// The first few headers, for an error message.
fn summarize(headers: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut out: Vec<String> = headers
        .iter()
        .take(SHOWN)
        .map(|h| format!("{:?}", h.trim()))
        .collect();
    if headers.len() > SHOWN {
        out.push(format!("and {} more", headers.len() - SHOWN));
    }
    if out.is_empty() {
        "nothing".to_owned()
    } else {
        out.join(", ")
    }
}

/// Whether a shop's status value means the ticket is void (see the module documentation).
fn is_void_status(status: &str) -> bool {
    let norm: String = status
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    matches!(
        norm.as_str(),
        "cancelled"
            | "canceled"
            | "refunded"
            | "notattending"
            | "deleted"
            | "declined"
            | "void"
            | "voided"
            | "expired"
    )
}
