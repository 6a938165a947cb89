//! Plain HTTP through the proxy (`GET http://host/…`), and the model route
//! (origin-form requests, see [`crate::ModelRoute`]).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::connect::{dial, failed};
use crate::event::{DenyReason, NetEvent, Via};
use crate::policy::normalize;
use crate::server::{Body, Proxy, text};

/// Headers that concern one hop only, never forwarded either way.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those `Connection` names.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

pub(crate) async fn forward(p: &Proxy, req: Request<Incoming>) -> Response<Body> {
    let uri = req.uri().clone();
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            let why = format!("`{other}://` URLs are not proxied as plain requests; use CONNECT");
            return p.deny(None, None, DenyReason::BadRequest(why));
        }
        None => {
            let why = "an absolute URL needs a scheme".to_string();
            return p.deny(None, None, DenyReason::BadRequest(why));
        }
    }
    let Some(authority) = uri.authority().cloned() else {
        let why = "the URL has no host".to_string();
        return p.deny(None, None, DenyReason::BadRequest(why));
    };
    let host = normalize(authority.host());
    let port = authority.port_u16().unwrap_or(80);
    if let Err(reason) = p.inner.policy.check(&host, port) {
        return p.deny(Some(host), Some(port), reason);
    }
    let stream = match dial(p, &host, port).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return failed(p, &host, port, e.to_string()),
    };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    parts.uri = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    strip_hop_by_hop(&mut parts.headers);
    // The Host the server sees is the one that was checked.
    match HeaderValue::from_str(authority.as_str()) {
        Ok(v) => {
            parts.headers.insert(header::HOST, v);
        }
        Err(_) => {
            let why = "the host cannot be sent in a Host header".to_string();
            return p.deny(Some(host), Some(port), DenyReason::BadRequest(why));
        }
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            p.report(NetEvent::Allowed {
                host,
                port,
                via: Via::Http,
            });
            relay(resp)
        }
        Err(e) => failed(p, &host, port, e.to_string()),
    }
}

pub(crate) async fn model(p: &Proxy, req: Request<Incoming>) -> Response<Body> {
    let Some(route) = &p.inner.model else {
        let why = "this is the run's network proxy: ask for http://host/… or CONNECT host:port \
                   (this run has no model route)"
            .to_string();
        return p.deny(None, None, DenyReason::BadRequest(why));
    };
    let (host, port) = route.host_port();
    let req = match route.rewrite(req) {
        Ok(r) => r,
        Err(why) => return p.deny(Some(host), Some(port), DenyReason::BadRequest(why)),
    };
    match p.inner.client.request(req).await {
        Ok(resp) => {
            p.report(NetEvent::Allowed {
                host,
                port,
                via: Via::Model,
            });
            relay(resp)
        }
        Err(e) => {
            let why = error_chain(&e);
            let msg = format!("husk model route: {host}:{port} could not be reached: {why}\n");
            p.report(NetEvent::Failed { host, port, why });
            text(StatusCode::BAD_GATEWAY, &msg)
        }
    }
}

/// The upstream's response, streamed back without its hop-by-hop headers.
fn relay(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

/// An error and its causes, `: `-joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}
