//! HQ's errors: [`HqError`] is what storage and validation return (a domain error, no HTTP in it);
//! it is mapped once, here, to a status, a stable code and a plain message. The real cause of an
//! internal error goes to HQ's log only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum HqError {
    /// The request is malformed; `code` is stable, the message names the field.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// A bad row of an uploaded CSV; the answer carries the 1-based `line` as a field too.
    #[error("line {line}: {message}")]
    InvalidRow { line: u64, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{0}")]
    Conflict(String),
    /// A feed cursor older than the events HQ keeps.
    #[error("cursor {after} is older than the feed HQ keeps (events up to {pruned_through} were pruned); rebuild from /sync/v1/snapshot")]
    CursorGone { after: i64, pruned_through: i64 },
    /// Signed in, but the role may not do this (or a write without its CSRF token).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooManyAttempts(String),
    #[error("{message}")]
    Unauthorized {
        code: &'static str,
        message: &'static str,
    },
    /// A body past its bound (413).
    #[error("{0}")]
    TooLarge(String),
    /// Storage failed (database down, disk full, a bug): logged, answered as `internal`.
    #[error("storage: {0}")]
    Storage(String),
}

pub type HqResult<T> = Result<T, HqError>;

impl HqError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        HqError::Invalid {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        HqError::NotFound {
            code,
            message: message.into(),
        }
    }
    pub fn storage(e: impl std::fmt::Display) -> Self {
        HqError::Storage(e.to_string())
    }
}

impl From<crate::db::DbError> for HqError {
    fn from(e: crate::db::DbError) -> Self {
        HqError::storage(e)
    }
}

impl From<rusqlite::Error> for HqError {
    fn from(e: rusqlite::Error) -> Self {
        HqError::storage(e)
    }
}

impl IntoResponse for HqError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            HqError::Invalid { code, .. } => (StatusCode::BAD_REQUEST, *code),
            HqError::InvalidRow { .. } => (StatusCode::BAD_REQUEST, "invalid_row"),
            HqError::NotFound { code, .. } => (StatusCode::NOT_FOUND, *code),
            HqError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            HqError::CursorGone { .. } => (StatusCode::GONE, "cursor_gone"),
            HqError::Unauthorized { code, .. } => (StatusCode::UNAUTHORIZED, *code),
            HqError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            HqError::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            HqError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            HqError::Storage(cause) => {
                tracing::error!(cause, "HQ storage error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let message = match &self {
            HqError::Storage(_) => "internal error; details are in the HQ log".to_string(),
            other => other.to_string(),
        };
        let mut error = json!({"code": code, "message": message});
        if let HqError::InvalidRow { line, .. } = &self {
            error["line"] = json!(line);
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}
