//! problem+json (RFC 9457) for every error a handler returns: the one place where a domain
//! [`Error`] becomes an HTTP status, a `type` slug and a body naming the field at fault.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::error::{Error, FieldError};

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

/// The HTTP status of an error.
pub fn status(e: &Error) -> StatusCode {
    match e {
        Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
        Error::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn slug(e: &Error) -> &'static str {
    match e {
        Error::BadRequest { .. } => "bad-request",
        Error::Validation { .. } => "validation",
        Error::Unauthorized(_) => "unauthorized",
        Error::Forbidden => "forbidden",
        Error::NotFound(_) => "not-found",
        Error::Conflict(_) => "conflict",
        Error::UnsupportedMediaType(_) => "unsupported-media-type",
        Error::PayloadTooLarge => "payload-too-large",
        Error::TooManyRequests { .. } => "rate-limited",
        Error::Internal(_) => "internal",
    }
}

/// The problem document a client sees.
pub fn problem(e: &Error) -> Problem {
    let status = status(e);
    let (field, errors) = match e {
        Error::BadRequest { field, .. } => (field.clone(), Vec::new()),
        Error::Validation { field, errors, .. } => (field.clone(), errors.clone()),
        _ => (None, Vec::new()),
    };
    let detail = match e {
        Error::Unauthorized(why) => (*why).to_owned(),
        Error::Internal(_) => {
            "The server failed to handle this request; it has been logged. Retry, and quote \
             the x-request-id header if it keeps failing."
                .to_owned()
        }
        other => other.to_string(),
    };
    Problem {
        type_: format!("urn:usher:problem:{}", slug(e)),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        field,
        errors,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Internal(e) = &self {
            tracing::error!(error = ?e, "internal error");
        }
        let problem = problem(&self);
        let mut response = (status(&self), problem_json(&problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Error::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::TooManyRequests { retry_after } => {
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

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        // A malformed id in the path cannot name anything that exists.
        tracing::debug!(%rejection, "path rejected");
        Error::NotFound("resource")
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        let field = text
            .split('`')
            .nth(1)
            .map(str::to_owned)
            .or_else(|| text.split(": ").nth(1).map(|s| s.trim().to_owned()));
        Error::BadRequest {
            detail: text,
            field,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_status() {
        let cases: Vec<(Error, u16)> = vec![
            (Error::bad_request(Some("q"), "bad"), 400),
            (Error::validation("name", "required"), 422),
            (Error::Unauthorized("no token"), 401),
            (Error::Forbidden, 403),
            (Error::NotFound("event"), 404),
            (Error::Conflict("taken".into()), 409),
            (Error::UnsupportedMediaType("text/csv"), 415),
            (Error::TooManyRequests { retry_after: 30 }, 429),
            (Error::Internal(anyhow::anyhow!("secret cause")), 500),
        ];
        for (error, expected) in cases {
            assert_eq!(status(&error).as_u16(), expected, "{error:?}");
            assert_eq!(problem(&error).status, expected);
            assert!(problem(&error).type_.starts_with("urn:usher:problem:"));
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let p = problem(&Error::Internal(anyhow::anyhow!("password=hunter2")));
        assert!(!p.detail.contains("hunter2"));
        assert_eq!(p.title, "Internal Server Error");
    }

    #[test]
    fn validation_names_the_field() {
        let p = problem(&Error::validation("email", "not an e-mail address"));
        assert_eq!(p.field.as_deref(), Some("email"));
        assert_eq!(p.errors.len(), 1);
        let v = serde_json::to_value(&p).unwrap_or_default();
        assert_eq!(v["type"], "urn:usher:problem:validation");
        assert_eq!(v["field"], "email");
    }

    #[tokio::test]
    async fn responses_are_problem_json() {
        let response = Error::TooManyRequests { retry_after: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
