//! The API's error envelope: `{code, message, retryable}` with the status
//! codes of the runtime contract (§3). Every client mistake is a 4xx with
//! a code that names it; 5xx only for husk's own failures.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What went wrong, one code per kind of problem (the envelope's `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    InvalidSpec,
    InvalidPolicy,
    NotFound,
    AlreadyTerminal,
    ResourceLimitExceeded,
    InvalidParams,
    InternalError,
    StructuredOutputMissing,
    StructuredOutputMalformed,
    ArtifactNotFound,
    ArtifactPublicationIncomplete,
    ArtifactStoreUnavailable,
    RetrievalTimeout,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    MethodNotAllowed,
}

impl Code {
    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidSpec | Code::InvalidPolicy | Code::InvalidParams => {
                StatusCode::BAD_REQUEST
            }
            Code::NotFound | Code::StructuredOutputMissing | Code::ArtifactNotFound => {
                StatusCode::NOT_FOUND
            }
            Code::AlreadyTerminal | Code::ArtifactPublicationIncomplete => StatusCode::CONFLICT,
            Code::ResourceLimitExceeded | Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::StructuredOutputMalformed => StatusCode::UNPROCESSABLE_ENTITY,
            Code::ArtifactStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::RetrievalTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the same request may succeed later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Code::ResourceLimitExceeded
                | Code::InternalError
                | Code::ArtifactPublicationIncomplete
                | Code::ArtifactStoreUnavailable
                | Code::RetrievalTimeout
                | Code::TooManyRequests
        )
    }
}

/// An API error: a code and a message that says what to change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ApiError {
    pub code: Code,
    /// What is wrong, naming the field, value or limit.
    pub message: String,
    /// Whether the same request may succeed later.
    pub retryable: bool,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retryable: code.retryable(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(Code::NotFound, what)
    }

    pub fn params(message: impl Into<String>) -> Self {
        ApiError::new(Code::InvalidParams, message)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(Code::InternalError, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code.status(), Json(self)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
