//! Text fields as every entry point takes them (API bodies, imports, the CLI).
//!
//! No text the server takes in may hold a NUL character: PostgreSQL cannot store one (and
//! refuses the whole statement). The JSON and query-string extractors refuse NUL in any string
//! ([`nul_path`]); the single-line fields (names, e-mails, zones, reasons) also refuse the other
//! control characters ([`required_text`], [`optional_line`]).

use super::error::Error;

/// Trims a text field; empty means absent.
pub fn clean(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Checks a required text field: trimmed, non-empty, at most `max` characters, one line.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String, Error> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::validation(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if v.chars().count() > max {
        return Err(Error::validation(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    single_line(field, v)?;
    Ok(v.to_owned())
}

/// Checks an optional one-line text field: trimmed (empty means absent), no control characters.
pub fn optional_line(field: &str, value: Option<String>) -> Result<Option<String>, Error> {
    let v = clean(value);
    if let Some(v) = &v {
        single_line(field, v)?;
    }
    Ok(v)
}

/// Refuses control characters (NUL, line breaks, escapes) in a field a person types on one line.
pub fn single_line(field: &str, value: &str) -> Result<(), Error> {
    if value.chars().any(char::is_control) {
        return Err(Error::validation(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// Refuses NUL in a field that may span lines (notes, CSV cells); other text is accepted.
pub fn no_nul(field: &str, value: &str) -> Result<(), Error> {
    if value.contains('\0') {
        return Err(nul_error(field));
    }
    Ok(())
}

/// The error for a NUL character in `field`.
pub fn nul_error(field: &str) -> Error {
    Error::validation(field, format!("{field} must not contain a NUL character"))
}

/// The path (`name`, `[3].email`, `metadata.x`) of the first string or key of a JSON value
/// that holds a NUL character, if any.
pub fn nul_path(value: &serde_json::Value) -> Option<String> {
    fn walk(v: &serde_json::Value, path: &mut String) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            serde_json::Value::Object(map) => map.iter().any(|(k, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                if k.contains('\0') {
                    path.push_str(&k.replace('\0', "\\u0000"));
                    return true;
                }
                path.push_str(k);
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then_some(path)
}

/// Whether a JSON text may hold a NUL character (the escape `\u0000`; a raw NUL is not JSON).
pub fn json_may_hold_nul(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"\\u0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_found_with_its_path() {
        let v = serde_json::json!({"a": [1, {"b": "x\u{0}"}], "c": "ok"});
        assert_eq!(nul_path(&v).as_deref(), Some("a[1].b"));
        let v = serde_json::json!([{"email": "ok"}, {"email": "\u{0}"}]);
        assert_eq!(nul_path(&v).as_deref(), Some("[1].email"));
        assert_eq!(nul_path(&serde_json::json!({"a": "fine\n"})), None);
        assert!(required_text("name", "a\u{1b}b", 10).is_err());
        assert!(required_text("name", " Ann ", 10).is_ok());
    }
}
