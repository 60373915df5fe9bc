//! Catching the same participant twice in one upload.
//!
//! This is a separate, opt-in step rather than part of the parser because it is
//! the one thing that must remember every row: [`ParticipantCsv`] itself runs in
//! constant memory, while the tracker holds one key per row (a few megabytes for
//! 100,000 rows).
//!
//! The rule follows how an import is applied (upsert by external ID, else by
//! e-mail), so it flags exactly the rows that would overwrite an earlier row of the
//! same file:
//!
//! - a row whose external ID was already used fails on `external_id`;
//! - a row *without* an external ID whose e-mail was already used (by any earlier
//!   row) fails on `email`.
//!
//! Two rows with different external IDs may share an e-mail: one person buying
//! tickets for a group is common, and pretix fills the order e-mail into every
//! position that has no attendee e-mail of its own.
//!
//! [`ParticipantCsv`]: super::ParticipantCsv

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{ImportRow, RowError};

/// Remembers the keys of the rows seen so far. Feed it rows in file order:
///
/// ```ignore
/// let mut seen = DuplicateTracker::new();
/// for item in csv.by_ref() {
///     match item.and_then(|row| seen.check(row)) { /* ... */ }
/// }
/// ```
#[derive(Debug, Default)]
pub struct DuplicateTracker {
    external_ids: HashMap<String, u64>,
    emails: HashMap<String, u64>,
}

impl DuplicateTracker {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Pass `row` through, or fail it if it repeats an earlier row's key. A failed
    /// row is not remembered.
    ///
    /// # Errors
    ///
    /// A [`RowError`] on `external_id` or `email` naming the line of the first
    /// occurrence, by the rule in the module docs.
    pub fn check(&mut self, row: ImportRow) -> Result<ImportRow, RowError> {
        if let Some(id) = &row.external_id {
            match self.external_ids.entry(id.clone()) {
                Entry::Occupied(first) => {
                    return Err(RowError {
                        line: row.line,
                        field: "external_id".to_owned(),
                        message: format!(
                            "external ID {id:?} is already used on line {}",
                            first.get()
                        ),
                    });
                }
                Entry::Vacant(slot) => {
                    slot.insert(row.line);
                }
            }
            if let Some(email) = &row.email {
                self.emails.entry(email.clone()).or_insert(row.line);
            }
        } else if let Some(email) = &row.email {
            match self.emails.entry(email.clone()) {
                Entry::Occupied(first) => {
                    return Err(RowError {
                        line: row.line,
                        field: "email".to_owned(),
                        message: format!(
                            "{email} is already used on line {}; without an external ID, \
                             rows are matched by e-mail, so this row would overwrite that one",
                            first.get()
                        ),
                    });
                }
                Entry::Vacant(slot) => {
                    slot.insert(row.line);
                }
            }
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: u64, external_id: Option<&str>, email: Option<&str>) -> ImportRow {
        ImportRow {
            line,
            external_id: external_id.map(str::to_owned),
            name: format!("Person {line}"),
            email: email.map(str::to_owned),
            phone: None,
            organization: None,
            attention: None,
            ticket_type: None,
            metadata: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_repeated_external_id_fails_on_the_second_row() {
        let mut seen = DuplicateTracker::new();
        assert!(seen.check(row(2, Some("A-1"), Some("a@x.org"))).is_ok());
        assert!(seen.check(row(3, Some("A-2"), Some("b@x.org"))).is_ok());
        let err = seen
            .check(row(7, Some("A-1"), Some("c@x.org")))
            .unwrap_err();
        assert_eq!(err.line, 7);
        assert_eq!(err.field, "external_id");
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[test]
    fn a_shared_email_is_fine_when_external_ids_differ() {
        let mut seen = DuplicateTracker::new();
        assert!(
            seen.check(row(2, Some("Z7X9K-1"), Some("buyer@x.org")))
                .is_ok()
        );
        assert!(
            seen.check(row(3, Some("Z7X9K-2"), Some("buyer@x.org")))
                .is_ok()
        );
    }

    #[test]
    fn a_repeated_email_fails_when_it_is_the_only_key() {
        let mut seen = DuplicateTracker::new();
        assert!(seen.check(row(2, Some("A-1"), Some("a@x.org"))).is_ok());
        assert!(seen.check(row(3, None, Some("b@x.org"))).is_ok());
        let err = seen.check(row(4, None, Some("b@x.org"))).unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (4, "email"));
        assert!(err.message.contains("line 3"), "{}", err.message);
        let err = seen.check(row(5, None, Some("a@x.org"))).unwrap_err();
        assert!(err.message.contains("line 2"), "{}", err.message);
        // Rows with no key at all are never duplicates of each other.
        assert!(seen.check(row(6, None, None)).is_ok());
        assert!(seen.check(row(7, None, None)).is_ok());
    }
}
