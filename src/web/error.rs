//! One error type for every API handler: a stable code and a plain message for the client; the
//! real cause (database errors and the like) goes to the log only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in or send a bearer token",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; details are in the storebox log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        match e {
            crate::db::DbError::NotFound => ApiError::not_found("not_found", "not found"),
            e => {
                tracing::error!(error = %e, "api: database error");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError::*;
        match e {
            Invalid(m) => ApiError::bad_request("invalid", m),
            Exists(m) => ApiError::new(
                StatusCode::CONFLICT,
                "exists",
                format!("{m} already exists"),
            ),
            NotFound(m) => ApiError::not_found("not_found", format!("{m} not found")),
            Db(e) => e.into(),
        }
    }
}

impl From<crate::devices::registry::RegistryError> for ApiError {
    fn from(e: crate::devices::registry::RegistryError) -> Self {
        use crate::devices::registry::RegistryError::*;
        match e {
            Invalid(m) => ApiError::bad_request("invalid", m),
            Exists(_) => ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()),
            NotFound(_) => ApiError::not_found("unknown_device", e.to_string()),
            Db(e) => e.into(),
        }
    }
}

/// JSON bodies: a malformed body is a 400 naming what is wrong, in our error shape.
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(ApiError::bad_request("bad_body", rejection.body_text())),
        }
    }
}

/// Query strings: a malformed one is a 400 naming what is wrong, in our error shape (axum's own
/// `Query` rejection is plain text).
pub struct QueryParams<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(rejection) => Err(ApiError::bad_request("bad_query", rejection.body_text())),
        }
    }
}

/// The error body of every API error, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code, e.g. `no_price`, `unknown_sku`, `invalid`, `bad_query`, `unauthorized`.
    pub code: String,
    /// A plain message for people; it names the field or value at fault.
    pub message: String,
}
