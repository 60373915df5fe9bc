//! Request extractors whose rejections are problem+json ([`Error`]) instead of axum's plain
//! text, so that a client always gets a machine-readable answer naming the field at fault.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::domain::error::Error;
use crate::domain::text;

/// `axum::Json`, but a body error says which field (serde path) was wrong, and a string
/// holding a NUL character is refused (422 naming the field).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_body(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// Like [`Json`] but lets NUL characters through: for the gate's push, which judges each
/// check-in on its own (a NUL in one makes that one `invalid`, not the batch).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonAnyText<T>(pub T);

impl<T, S> FromRequest<S> for JsonAnyText<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_body(req, state).await?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map_err(|err| {
                let path = err.path().to_string();
                serde_error(&path, err.into_inner(), "")
            })
            .map(JsonAnyText)
    }
}

/// The body of a JSON request (415 for another media type, 413 when over the limit).
async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(Error::UnsupportedMediaType("application/json"));
    }
    Bytes::from_request(req, state)
        .await
        .map_err(body_rejection)
}

/// A body that could not be read: 413 when it is over the size limit, else 400.
pub fn body_rejection(e: axum::extract::rejection::BytesRejection) -> Error {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge
    } else {
        Error::bad_request(None, e.body_text())
    }
}

/// Parses a JSON body; syntax errors are 400, type/shape errors 422 with the field named, a
/// string holding NUL 422 naming it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if text::json_may_hold_nul(bytes)
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(path) = text::nul_path(&value)
    {
        return Err(text::nul_error(&path));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        serde_error(&path, err.into_inner(), "")
    })
}

/// Deserialises one element of an already parsed body; `prefix` (e.g. `[3]`) is put in front
/// of the field name so a client knows which element was wrong.
pub fn from_value_at<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, Error> {
    if let Some(path) = text::nul_path(&value) {
        let field = match (prefix.is_empty(), path.starts_with('[')) {
            (true, _) => path,
            (false, true) => format!("{prefix}{path}"),
            (false, false) => format!("{prefix}.{path}"),
        };
        return Err(text::nul_error(&field));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        serde_error(&path, err.into_inner(), prefix)
    })
}

fn serde_error(path: &str, inner: serde_json::Error, prefix: &str) -> Error {
    let message = inner.to_string();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let field = serde_field(path, &message).map(|f| {
                if prefix.is_empty() {
                    f
                } else {
                    format!("{prefix}.{f}")
                }
            });
            let field = field.or_else(|| (!prefix.is_empty()).then(|| prefix.to_owned()));
            let detail = match &field {
                Some(f) => format!("{f}: {message}"),
                None => message.clone(),
            };
            Error::Validation {
                errors: vec![crate::domain::FieldError::new(
                    field.clone().unwrap_or_default(),
                    message,
                )],
                detail,
                field,
            }
        }
        _ => Error::bad_request(None, format!("request body is not valid JSON: {message}")),
    }
}

impl<T> axum::response::IntoResponse for Json<T>
where
    T: serde::Serialize,
{
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` with a problem+json rejection (a malformed id is a 404).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with a problem+json rejection naming the parameter; a parameter
/// holding a NUL character (`%00`) is refused with 422 naming it.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if let Some(field) = parts.uri.query().and_then(nul_param) {
            return Err(text::nul_error(&field));
        }
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// The name of the first query parameter whose name or value decodes to a NUL character.
fn nul_param(query: &str) -> Option<String> {
    query
        .split('&')
        .find(|pair| pair.contains("%00"))
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            if name.contains("%00") {
                "query".to_owned()
            } else {
                name.replace('+', " ")
            }
        })
}

/// Deserialises a field that may be absent (`None`), `null` (`Some(None)`) or a value, so a
/// PATCH can tell "leave alone" from "clear".
pub fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(de).map(Some)
}

/// The JSON field a serde error is about: the path where it happened, or the field named in
/// "missing field `x`" / "unknown field `x`" messages (those are reported at the parent).
pub fn serde_field(path: &str, message: &str) -> Option<String> {
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| {
            let start = message.find(prefix)? + prefix.len();
            let end = message[start..].find('`')? + start;
            Some(message[start..end].to_owned())
        });
    let parent = if path == "." || path.is_empty() {
        None
    } else {
        Some(path.to_owned())
    };
    match (parent, named) {
        // serde_path_to_error already put an unknown key on the path; a missing one it cannot.
        (Some(p), Some(n)) if p == n || p.ends_with(&format!(".{n}")) => Some(p),
        (Some(p), Some(n)) if message.starts_with("missing") || message.starts_with("unknown") => {
            Some(format!("{p}.{n}"))
        }
        (Some(p), _) => Some(p),
        (None, n) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_their_field() {
        assert_eq!(
            serde_field(".", "missing field `name` at line 1"),
            Some("name".into())
        );
        assert_eq!(
            serde_field("settings.x", "unknown field `x`, expected"),
            Some("settings.x".into())
        );
        assert_eq!(
            serde_field("settings", "missing field `x`"),
            Some("settings.x".into())
        );
        assert_eq!(
            serde_field("starts_at", "invalid type"),
            Some("starts_at".into())
        );
        assert_eq!(
            serde_field("[3].email", "invalid type"),
            Some("[3].email".into())
        );
        assert_eq!(serde_field(".", "expected value"), None);
    }
}
