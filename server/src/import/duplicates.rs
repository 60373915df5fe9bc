//! Catching the same participant twice in one upload.
//!
//! This is a separate, opt-in step rather than part of the parser because it is
//! the one thing that must remember every row: [`ParticipantCsv`] itself runs in
//! constant memory, while the tracker holds one key per row. A caller that must
//! stay in constant memory too (the import) keeps the keys elsewhere and feeds
//! the tracker one batch at a time: [`DuplicateTracker::seeded`] with the keys of
//! earlier batches that the batch's rows use, then [`DuplicateTracker::take_added`]
//! for the keys the batch added.
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
    /// Keys remembered by [`Self::check`] since the last [`Self::take_added`].
    added: Vec<(KeyKind, String, u64)>,
}

/// Which key of a row a remembered line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    ExternalId,
    Email,
}

impl KeyKind {
    /// A short stable name, for storing keys outside the tracker.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExternalId => "external_id",
            Self::Email => "email",
        }
    }
}

impl DuplicateTracker {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker that already knows these keys (of rows checked earlier) with the
    /// line of their first occurrence.
    #[must_use]
    pub fn seeded(known: impl IntoIterator<Item = (KeyKind, String, u64)>) -> Self {
        let mut tracker = Self::default();
        for (kind, key, line) in known {
            match kind {
                KeyKind::ExternalId => tracker.external_ids.insert(key, line),
                KeyKind::Email => tracker.emails.insert(key, line),
            };
        }
        tracker
    }

    /// The keys (with their line) that [`Self::check`] remembered since the last call.
    pub fn take_added(&mut self) -> Vec<(KeyKind, String, u64)> {
        std::mem::take(&mut self.added)
    }

    /// The keys of `row` that [`Self::check`] looks up.
    #[must_use]
    pub fn keys_of(row: &ImportRow) -> Vec<(KeyKind, String)> {
        let mut keys = Vec::with_capacity(2);
        if let Some(id) = &row.external_id {
            keys.push((KeyKind::ExternalId, id.clone()));
        }
        if let Some(email) = &row.email {
            keys.push((KeyKind::Email, email.clone()));
        }
        keys
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
                    self.added.push((KeyKind::ExternalId, id.clone(), row.line));
                }
            }
            if let Some(email) = &row.email
                && let Entry::Vacant(slot) = self.emails.entry(email.clone())
            {
                slot.insert(row.line);
                self.added.push((KeyKind::Email, email.clone(), row.line));
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
                    self.added.push((KeyKind::Email, email.clone(), row.line));
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
            barcode: None,
            cancelled: false,
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

    /// Checking batch by batch, each batch's tracker seeded with the keys earlier batches
    /// added (as the import does through its scratch table), flags exactly the rows one
    /// tracker over the whole file flags, naming the same first lines.
    #[test]
    fn batches_seeded_from_earlier_batches_agree_with_one_tracker() {
        let rows: Vec<ImportRow> = (0..60u64)
            .map(|i| {
                let line = i + 2;
                match i % 5 {
                    0 => row(line, Some(&format!("X-{}", i % 7)), Some("group@x.org")),
                    1 => row(line, None, Some(&format!("p{}@x.org", i % 11))),
                    2 => row(line, Some(&format!("Y-{i}")), None),
                    3 => row(line, None, Some("group@x.org")),
                    _ => row(
                        line,
                        Some(&format!("X-{}", i % 3)),
                        Some(&format!("q{i}@x.org")),
                    ),
                }
            })
            .collect();
        let mut whole = DuplicateTracker::new();
        let expected: Vec<Result<u64, String>> = rows
            .iter()
            .cloned()
            .map(|r| whole.check(r).map(|r| r.line).map_err(|e| e.message))
            .collect();

        let mut store: HashMap<(KeyKind, String), u64> = HashMap::new();
        let mut got = Vec::new();
        for batch in rows.chunks(7) {
            let known = batch
                .iter()
                .flat_map(DuplicateTracker::keys_of)
                .filter_map(|k| store.get(&k).map(|line| (k.0, k.1, *line)))
                .collect::<Vec<_>>();
            let mut tracker = DuplicateTracker::seeded(known);
            for r in batch.iter().cloned() {
                got.push(tracker.check(r).map(|r| r.line).map_err(|e| e.message));
            }
            for (kind, key, line) in tracker.take_added() {
                assert!(store.insert((kind, key), line).is_none(), "added twice");
            }
        }
        assert_eq!(got, expected);
        assert!(expected.iter().filter(|r| r.is_err()).count() > 10);
    }
}
