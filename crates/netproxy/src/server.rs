//! One proxy per run: the policy, the model route, limits, and the hyper
//! server that serves each connection handed to it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use crate::error::ProxyError;
use crate::event::{DenyReason, NetEvent};
use crate::model::ModelRoute;
use crate::policy::Policy;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;
type ModelClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Incoming>;

/// The proxy's bounds (documented in docs/network.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more get `503` and a `net.denied`.
    pub max_connections: usize,
    /// Time to send a request head.
    pub header_timeout: Duration,
    /// Time to connect to an allowed host.
    pub connect_timeout: Duration,
    /// After CONNECT: time to wait for the client's first bytes (and for
    /// the rest of a TLS ClientHello).
    pub hello_wait: Duration,
    /// Largest request head, in bytes.
    pub max_head_bytes: usize,
    /// Events reported per proxy; after that one `net.suppressed`.
    pub max_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            hello_wait: Duration::from_secs(5),
            max_head_bytes: 64 * 1024,
            max_events: 10_000,
        }
    }
}

/// A run's proxy. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Proxy {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub policy: Policy,
    pub model: Option<ModelRoute>,
    pub limits: Limits,
    sink: Box<dyn Fn(NetEvent) + Send + Sync>,
    slots: Arc<Semaphore>,
    events: AtomicUsize,
    pub client: ModelClient,
}

impl Proxy {
    /// A proxy enforcing `policy`, with a model route when `model` is
    /// given; every decision goes to `sink`.
    pub fn new(
        policy: Policy,
        model: Option<ModelRoute>,
        limits: Limits,
        sink: impl Fn(NetEvent) + Send + Sync + 'static,
    ) -> Result<Proxy, ProxyError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Proxy {
            inner: Arc::new(Inner {
                policy,
                model,
                slots: Arc::new(Semaphore::new(limits.max_connections)),
                limits,
                sink: Box::new(sink),
                events: AtomicUsize::new(0),
                client,
            }),
        })
    }

    /// Serves one client connection in a task of its own.
    pub fn spawn<IO>(&self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let p = self.clone();
        tokio::spawn(async move { p.serve(io).await });
    }

    /// Serves one client connection until it ends.
    pub async fn serve<IO>(&self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(_slot) = self.inner.slots.clone().try_acquire_owned() else {
            let n = self.inner.limits.max_connections;
            self.report(NetEvent::Denied {
                host: None,
                port: None,
                reason: DenyReason::ConnectionLimit(n),
            });
            let busy = service_fn(move |_req| async move {
                let mut r = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &DenyReason::ConnectionLimit(n).to_string(),
                );
                r.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                Ok::<_, Infallible>(r)
            });
            let _ = self
                .builder()
                .serve_connection(TokioIo::new(io), busy)
                .await;
            return;
        };
        let p = self.clone();
        let svc = service_fn(move |req| {
            let p = p.clone();
            async move { Ok::<_, Infallible>(p.handle(req).await) }
        });
        let conn = self
            .builder()
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        if let Err(e) = conn.await {
            let why = if e.is_timeout() {
                Some(format!(
                    "no request head within {} s",
                    self.inner.limits.header_timeout.as_secs()
                ))
            } else if e.is_parse_too_large() {
                Some(format!(
                    "the request head is over {} bytes",
                    self.inner.limits.max_head_bytes
                ))
            } else if e.is_parse() || e.is_parse_status() {
                Some(format!("not an HTTP/1.1 request ({e})"))
            } else {
                None
            };
            if let Some(why) = why {
                self.report(NetEvent::Denied {
                    host: None,
                    port: None,
                    reason: DenyReason::BadRequest(why),
                });
            }
        }
    }

    fn builder(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        // A client may close its write side once the request is sent
        // (`nc`, scripts piping a request in): it still gets its answer.
        b.timer(TokioTimer::new())
            .half_close(true)
            .header_read_timeout(self.inner.limits.header_timeout)
            .max_buf_size(self.inner.limits.max_head_bytes.max(8192));
        b
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() == Method::CONNECT {
            return crate::connect::connect(self, req).await;
        }
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            return crate::forward::forward(self, req).await;
        }
        crate::forward::model(self, req).await
    }

    /// Reports an event, unless the budget is spent.
    pub(crate) fn report(&self, ev: NetEvent) {
        let max = self.inner.limits.max_events;
        let n = self.inner.events.fetch_add(1, Ordering::Relaxed);
        if n < max {
            (self.inner.sink)(ev);
        } else if n == max {
            (self.inner.sink)(NetEvent::Suppressed { after: max });
        }
    }

    /// Reports a denial and builds the answer the client gets.
    pub(crate) fn deny(
        &self,
        host: Option<String>,
        port: Option<u16>,
        reason: DenyReason,
    ) -> Response<Body> {
        let status = match reason {
            DenyReason::BadRequest(_) => StatusCode::BAD_REQUEST,
            DenyReason::ConnectionLimit(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        };
        let target = match (&host, port) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.clone(),
            _ => String::new(),
        };
        let msg = format!("husk network policy: {target} refused: {reason}\n");
        self.report(NetEvent::Denied { host, port, reason });
        text(status, &msg)
    }
}

/// A short text response.
pub(crate) fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
