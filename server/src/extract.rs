//! Request extractors whose rejections are problem+json ([`ApiError`]) instead of axum's plain
//! text, so that a client always gets a machine-readable answer naming the field at fault.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, serde_field};

/// `axum::Json`, but a body error says which field (serde path) was wrong.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
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
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(None, e.body_text()))?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON body; syntax errors are 400, type/shape errors 422 with the field named.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        serde_error(&path, err.into_inner(), prefix)
    })
}

fn serde_error(path: &str, inner: serde_json::Error, prefix: &str) -> ApiError {
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
            ApiError::Validation {
                errors: vec![crate::error::FieldError::new(
                    field.clone().unwrap_or_default(),
                    message,
                )],
                detail,
                field,
            }
        }
        _ => ApiError::bad_request(None, format!("request body is not valid JSON: {message}")),
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
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with a problem+json rejection naming the parameter.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Deserialises a field that may be absent (`None`), `null` (`Some(None)`) or a value, so a
/// PATCH can tell "leave alone" from "clear".
pub fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(de).map(Some)
}
