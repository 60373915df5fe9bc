//! CSV the server writes for spreadsheets. Every cell that a spreadsheet would read as a formula
//! (it starts with `=`, `+`, `-`, `@`, a tab or a carriage return) is prefixed with `'`, the
//! OWASP recommendation against CSV (formula) injection: a participant named
//! `=HYPERLINK("http://evil/",...)` stays text in the organizer's spreadsheet.

use std::borrow::Cow;

use crate::domain::Error;

/// A cell as written: formula-looking text is prefixed with `'`.
pub fn safe_cell(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// A CSV document written row by row, every cell through [`safe_cell`].
pub struct SafeCsv(csv::Writer<Vec<u8>>);

impl Default for SafeCsv {
    fn default() -> Self {
        Self(csv::Writer::from_writer(Vec::new()))
    }
}

impl SafeCsv {
    pub fn row<I, S>(&mut self, cells: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let cells: Vec<String> = cells
            .into_iter()
            .map(|c| safe_cell(c.as_ref()).into_owned())
            .collect();
        self.0.write_record(&cells).map_err(anyhow::Error::from)?;
        Ok(())
    }

    pub fn finish(self) -> Result<Vec<u8>, Error> {
        self.0
            .into_inner()
            .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_become_text_and_others_stay_as_they_are() {
        for c in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(safe_cell(c), format!("'{c}"));
        }
        for c in ["", "Minji Kim", "1-2", "a=b", "O'Brien"] {
            assert_eq!(safe_cell(c), c);
        }
        let mut w = SafeCsv::default();
        w.row(["=HYPERLINK(\"http://x\")", "plain"]).unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(text, "\"'=HYPERLINK(\"\"http://x\"\")\",plain\n");
    }
}
