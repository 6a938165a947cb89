//! Errors of setting up a proxy (serving never fails: problems are events).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProxyError {
    /// The model API's base URL cannot be used.
    #[error("model base URL {url:?}: {why}")]
    ModelUrl { url: String, why: String },
    /// The API key cannot be sent in an HTTP header.
    #[error("the model API key is not a valid HTTP header value (control characters?)")]
    BadKey,
    #[error("the proxy's TLS client could not be set up: {0}")]
    Tls(String),
}
