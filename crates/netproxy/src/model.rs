//! The model route: requests in origin form (`POST /v1/messages`) go to
//! the run's model API with the real key added here, on the host. The
//! sandbox holds only a placeholder key; whatever key or authorization the
//! client sent is removed first.

use http::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue};
use http::{Request, Uri};

use crate::error::ProxyError;

/// How the model API takes its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelAuth {
    /// `x-api-key: KEY` (Anthropic).
    XApiKey,
    /// `Authorization: Bearer KEY` (OpenAI and compatible).
    Bearer,
}

/// Where the model route goes, and the key it adds.
#[derive(Clone)]
pub struct ModelRoute {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The base URL's path, without a trailing `/` (`/v1` for OpenAI).
    prefix: String,
    header: HeaderName,
    value: HeaderValue,
}

impl std::fmt::Debug for ModelRoute {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ModelRoute({}://{}{})",
            self.scheme, self.authority, self.prefix
        )
    }
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

impl ModelRoute {
    /// `base_url`: `http(s)://host[:port][/path]`, e.g.
    /// `https://api.anthropic.com` or `https://api.openai.com/v1`.
    pub fn new(base_url: &str, auth: ModelAuth, key: &str) -> Result<ModelRoute, ProxyError> {
        let bad = |why: &str| ProxyError::ModelUrl {
            url: base_url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = base_url.parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a base URL has no query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        let (header, text) = match auth {
            ModelAuth::XApiKey => (X_API_KEY, key.to_string()),
            ModelAuth::Bearer => (AUTHORIZATION, format!("Bearer {key}")),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| ProxyError::BadKey)?;
        value.set_sensitive(true);
        Ok(ModelRoute {
            scheme,
            authority,
            prefix,
            header,
            value,
        })
    }

    /// The model API's host name and port.
    pub fn host_port(&self) -> (String, u16) {
        let default = if self.scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        (
            self.authority.host().to_string(),
            self.authority.port_u16().unwrap_or(default),
        )
    }

    /// The request to send upstream: same method, body and headers, the
    /// path appended to the base URL, the client's credentials replaced.
    pub(crate) fn rewrite<B>(&self, req: Request<B>) -> Result<Request<B>, String> {
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        parts.uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{pq}", self.prefix))
            .build()
            .map_err(|e| format!("the request path cannot be joined to the model URL: {e}"))?;
        crate::forward::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(X_API_KEY);
        parts.headers.remove(AUTHORIZATION);
        parts.headers.remove(HOST);
        parts
            .headers
            .insert(self.header.clone(), self.value.clone());
        Ok(Request::from_parts(parts, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_replaces_the_clients_and_the_path_joins() {
        let r =
            ModelRoute::new("https://api.example.com/v1/", ModelAuth::Bearer, "sk-real").unwrap();
        assert!(!format!("{r:?}").contains("sk-real"));
        let req = Request::post("/responses?x=1")
            .header("authorization", "Bearer placeholder")
            .header("x-api-key", "placeholder")
            .header("proxy-authorization", "x")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let out = r.rewrite(req).unwrap();
        assert_eq!(out.uri(), "https://api.example.com/v1/responses?x=1");
        assert_eq!(out.headers()["authorization"], "Bearer sk-real");
        assert!(out.headers().get("x-api-key").is_none());
        assert!(out.headers().get("proxy-authorization").is_none());
        assert_eq!(out.headers()["content-type"], "application/json");
        let a = ModelRoute::new("http://localhost:9", ModelAuth::XApiKey, "k").unwrap();
        assert_eq!(a.host_port(), ("localhost".into(), 9));
        let out = a
            .rewrite(Request::post("/v1/messages").body(()).unwrap())
            .unwrap();
        assert_eq!(out.uri(), "http://localhost:9/v1/messages");
        assert_eq!(out.headers()["x-api-key"], "k");
        assert!(ModelRoute::new("ftp://h", ModelAuth::XApiKey, "k").is_err());
        assert!(ModelRoute::new("http://h?q", ModelAuth::XApiKey, "k").is_err());
        assert!(matches!(
            ModelRoute::new("http://h", ModelAuth::XApiKey, "a\nb"),
            Err(ProxyError::BadKey)
        ));
    }
}
