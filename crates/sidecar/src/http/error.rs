//! The error envelope `{code, message, retryable}` (the daemon's shape),
//! plus `accepted` and `rejected_index` when a batch stopped part way.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::state::Rejection;
use crate::types::StampedIntent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    InvalidParams,
    PayloadTooLarge,
    TooManyRequests,
    NotFound,
    NotImplemented,
    SidecarClosed,
    InternalError,
}

impl Code {
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidParams => StatusCode::BAD_REQUEST,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Code::SidecarClosed => StatusCode::SERVICE_UNAVAILABLE,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn retryable(self) -> bool {
        matches!(self, Code::TooManyRequests | Code::InternalError)
    }
}

/// An error answer. `accepted`/`rejected_index` only for batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Vec<StampedIntent>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_index: Option<usize>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retryable: code.retryable(),
            accepted: None,
            rejected_index: None,
        }
    }

    pub fn params(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidParams, message)
    }

    /// The batch's outcome so far: what was accepted before item `index`.
    pub fn in_batch(mut self, accepted: Vec<StampedIntent>, index: usize) -> ApiError {
        self.accepted = Some(accepted);
        self.rejected_index = Some(index);
        self
    }
}

impl From<&Rejection> for ApiError {
    fn from(r: &Rejection) -> ApiError {
        let code = match r {
            Rejection::PayloadTooLarge { .. } => Code::PayloadTooLarge,
            Rejection::IterationLimit { .. } | Rejection::BufferFull => Code::TooManyRequests,
            Rejection::Closed => Code::SidecarClosed,
        };
        ApiError::new(code, r.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code.status(), Json(self)).into_response()
    }
}
