//! The one error type of the server's use cases and storage: what went wrong, in terms of the
//! domain (not found, conflict, a field that is not acceptable, ...), with no HTTP in it. The
//! `http` layer maps it to RFC 9457 problem+json in one place (`http::error`); the CLI turns it
//! into a message and an exit code.
//!
//! The user-facing message and the log detail are kept apart: `Internal` carries the cause for
//! the log, and clients are told only that something went wrong.

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
pub enum Error {
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
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("too many attempts, retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let field = field.into();
        let detail = detail.into();
        Error::Validation {
            errors: vec![FieldError::new(field.clone(), detail.clone())],
            detail,
            field: Some(field),
        }
    }

    pub fn bad_request(field: Option<&str>, detail: impl Into<String>) -> Self {
        Error::BadRequest {
            detail: detail.into(),
            field: field.map(str::to_owned),
        }
    }
}

/// A copy of an error for each of several requests it hits (a batch-wide failure).
impl Error {
    pub fn each(&self) -> Error {
        match self {
            Error::NotFound(what) => Error::NotFound(what),
            Error::Conflict(why) => Error::Conflict(why.clone()),
            Error::Forbidden => Error::Forbidden,
            other => Error::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
