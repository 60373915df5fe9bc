//! One error type for every handler, rendered as RFC 9457 `application/problem+json`.
//!
//! The user-facing message and the log detail are kept apart: a 500 tells the client only that
//! something went wrong (plus the request id it can quote), while the cause goes to
//! `tracing::error!`. Validation problems name the offending JSON field in `field`, and
//! multi-field or per-row problems list them in `errors`.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One problem with one field (or one CSV row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// 1-based CSV line for import problems; absent for JSON bodies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line: None,
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is unreadable (malformed JSON, bad query string).
    #[error("{detail}")]
    BadRequest {
        detail: String,
        field: Option<String>,
    },
    /// The request is readable but its content is not acceptable.
    #[error("{detail}")]
    Validation {
        detail: String,
        field: Option<String>,
        errors: Vec<FieldError>,
    },
    #[error("authentication required")]
    Unauthorized(&'static str),
    #[error("your role may not do this")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("unsupported media type: send {0}")]
    UnsupportedMediaType(&'static str),
    #[error("too many attempts, retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// The RFC 9457 body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let field = field.into();
        let detail = detail.into();
        ApiError::Validation {
            errors: vec![FieldError::new(field.clone(), detail.clone())],
            detail,
            field: Some(field),
        }
    }

    pub fn bad_request(field: Option<&str>, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            detail: detail.into(),
            field: field.map(str::to_owned),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Database(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad-request",
            ApiError::Validation { .. } => "validation",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::TooManyRequests { .. } => "rate-limited",
            ApiError::Database(_) | ApiError::Internal(_) => "internal",
        }
    }

    /// The problem document a client sees.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (field, errors) = match self {
            ApiError::BadRequest { field, .. } => (field.clone(), Vec::new()),
            ApiError::Validation { field, errors, .. } => (field.clone(), errors.clone()),
            _ => (None, Vec::new()),
        };
        let detail = match self {
            ApiError::Unauthorized(why) => (*why).to_owned(),
            ApiError::Database(_) | ApiError::Internal(_) => {
                "The server failed to handle this request; it has been logged. Retry, and quote \
                 the x-request-id header if it keeps failing."
                    .to_owned()
            }
            other => other.to_string(),
        };
        Problem {
            type_: format!("urn:usher:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            field,
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Database(e) => tracing::error!(error = %e, "database error"),
            ApiError::Internal(e) => tracing::error!(error = ?e, "internal error"),
            _ => {}
        }
        let problem = self.problem();
        let mut response = (self.status(), problem_json(&problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        response
    }
}

fn problem_json(problem: &Problem) -> String {
    // Serialising this plain struct cannot fail; keep a valid document anyway.
    serde_json::to_string(problem).unwrap_or_else(|_| {
        r#"{"type":"urn:usher:problem:internal","title":"Internal Server Error","status":500,"detail":"error"}"#.to_owned()
    })
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // A malformed id in the path cannot name anything that exists.
        tracing::debug!(%rejection, "path rejected");
        ApiError::NotFound("resource")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        let field = text
            .split('`')
            .nth(1)
            .map(str::to_owned)
            .or_else(|| text.split(": ").nth(1).map(|s| s.trim().to_owned()));
        ApiError::BadRequest {
            detail: text,
            field,
        }
    }
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
    fn every_variant_maps_to_its_status() {
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::bad_request(Some("q"), "bad"), 400),
            (ApiError::validation("name", "required"), 422),
            (ApiError::Unauthorized("no token"), 401),
            (ApiError::Forbidden, 403),
            (ApiError::NotFound("event"), 404),
            (ApiError::Conflict("taken".into()), 409),
            (ApiError::UnsupportedMediaType("text/csv"), 415),
            (ApiError::TooManyRequests { retry_after: 30 }, 429),
            (ApiError::Database(sqlx::Error::PoolTimedOut), 500),
            (ApiError::Internal(anyhow::anyhow!("secret cause")), 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.problem().status, status);
            assert!(error.problem().type_.starts_with("urn:usher:problem:"));
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let p = ApiError::Internal(anyhow::anyhow!("password=hunter2")).problem();
        assert!(!p.detail.contains("hunter2"));
        assert_eq!(p.title, "Internal Server Error");
    }

    #[test]
    fn validation_names_the_field() {
        let p = ApiError::validation("email", "not an e-mail address").problem();
        assert_eq!(p.field.as_deref(), Some("email"));
        assert_eq!(p.errors.len(), 1);
        let v = serde_json::to_value(&p).unwrap_or_default();
        assert_eq!(v["type"], "urn:usher:problem:validation");
        assert_eq!(v["field"], "email");
    }

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

    #[tokio::test]
    async fn responses_are_problem_json() {
        let response = ApiError::TooManyRequests { retry_after: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
