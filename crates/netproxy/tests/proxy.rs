//! The proxy on loopback: a policy proxy on 127.0.0.1, test servers on
//! 127.0.0.1 reached by the name `localhost`, clients speaking HTTP
//! through hyper. Every decision must arrive as an event.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use husk_netproxy::{
    DenyReason, Limits, ModelAuth, ModelRoute, NetEvent, Policy, Proxy, Rule, Via,
};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A proxy listening on 127.0.0.1, with its events.
struct Harness {
    addr: std::net::SocketAddr,
    events: mpsc::UnboundedReceiver<NetEvent>,
}

async fn proxy(policy: Policy, model: Option<ModelRoute>, limits: Limits) -> Harness {
    let (tx, events) = mpsc::unbounded_channel();
    let p = Proxy::new(policy, model, limits, move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            p.spawn(s);
        }
    });
    Harness { addr, events }
}

impl Harness {
    async fn event(&mut self) -> NetEvent {
        tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .expect("an event within 30 s")
            .expect("the proxy is alive")
    }

    fn no_more_events(&mut self) {
        assert!(self.events.try_recv().is_err());
    }
}

fn allow(rules: &[(&str, Option<u16>)]) -> Policy {
    Policy::Allow(
        rules
            .iter()
            .map(|(h, p)| Rule {
                host: h.to_string(),
                wildcard: false,
                port: *p,
            })
            .collect(),
    )
}

/// An HTTP server on 127.0.0.1 answering `name`, the Host header and the
/// x-api-key it got.
async fn origin(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let h = |k: &str| {
                        req.headers()
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    };
                    let body = format!(
                        "{name} {} host={} key={} auth={}",
                        req.uri(),
                        h("host"),
                        h("x-api-key"),
                        h("authorization")
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

/// Sends one request on a fresh connection to the proxy.
async fn send(proxy: std::net::SocketAddr, req: Request<Empty<Bytes>>) -> (StatusCode, String) {
    let s = TcpStream::connect(proxy).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

/// Opens a CONNECT tunnel; `Err(status)` when refused.
async fn tunnel(
    proxy: std::net::SocketAddr,
    target: &str,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, StatusCode> {
    let s = TcpStream::connect(proxy).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::connect(target)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    if resp.status() != StatusCode::OK {
        return Err(resp.status());
    }
    Ok(TokioIo::new(hyper::upgrade::on(resp).await.unwrap()))
}

/// The bytes of a TLS ClientHello for `sni`, made by rustls.
fn client_hello(sni: &str) -> Vec<u8> {
    let roots = rustls::RootCertStore::empty();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut c = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    c.write_tls(&mut out).unwrap();
    out
}

#[tokio::test]
async fn plain_http_reaches_an_allowed_name_and_no_other() {
    let up = origin("allowed").await;
    let mut h = proxy(allow(&[("localhost", None)]), None, Limits::default()).await;
    let (st, body) = send(h.addr, get(&format!("http://localhost:{up}/x?y=1"))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // The origin saw an origin-form request with the checked Host.
    assert_eq!(
        body,
        format!("allowed /x?y=1 host=localhost:{up} key=- auth=-")
    );
    assert_eq!(
        h.event().await,
        NetEvent::Allowed {
            host: "localhost".into(),
            port: up,
            via: Via::Http
        }
    );
    // Same server, by a name not in the list (it is never resolved).
    let (st, body) = send(h.addr, get(&format!("http://other.invalid:{up}/"))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.contains("not in this run's allowlist"), "{body}");
    assert_eq!(
        h.event().await,
        NetEvent::Denied {
            host: Some("other.invalid".into()),
            port: Some(up),
            reason: DenyReason::HostNotAllowed
        }
    );
    // And by address: the list holds names only.
    let (st, _) = send(h.addr, get(&format!("http://127.0.0.1:{up}/"))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(matches!(
        h.event().await,
        NetEvent::Denied {
            reason: DenyReason::HostNotAllowed,
            ..
        }
    ));
    // https is for CONNECT.
    let (st, body) = send(h.addr, get(&format!("https://localhost:{up}/"))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.contains("use CONNECT"), "{body}");
    assert!(matches!(
        h.event().await,
        NetEvent::Denied {
            reason: DenyReason::BadRequest(_),
            ..
        }
    ));
    h.no_more_events();
}

#[tokio::test]
async fn connect_to_a_port_not_allowed_is_refused() {
    let up = origin("x").await;
    let mut h = proxy(allow(&[("localhost", Some(up))]), None, Limits::default()).await;
    let other = up.wrapping_add(1).max(1);
    assert_eq!(
        tunnel(h.addr, &format!("localhost:{other}")).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        h.event().await,
        NetEvent::Denied {
            host: Some("localhost".into()),
            port: Some(other),
            reason: DenyReason::PortNotAllowed
        }
    );
    assert_eq!(
        tunnel(h.addr, "localhost").await.err(),
        Some(StatusCode::BAD_REQUEST)
    );
    assert!(matches!(
        h.event().await,
        NetEvent::Denied {
            reason: DenyReason::BadRequest(_),
            ..
        }
    ));
}

/// A raw TCP server that reports the first bytes of each connection.
async fn sink_server() -> (u16, mpsc::UnboundedReceiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(buf[..n].to_vec());
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn a_tls_session_must_name_the_connected_host() {
    let (up, mut seen) = sink_server().await;
    let mut h = proxy(allow(&[("localhost", None)]), None, Limits::default()).await;

    // Matching SNI: the ClientHello goes through unchanged.
    let hello = client_hello("localhost");
    let mut t = tunnel(h.addr, &format!("localhost:{up}")).await.unwrap();
    t.write_all(&hello).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), hello);
    assert_eq!(
        h.event().await,
        NetEvent::Allowed {
            host: "localhost".into(),
            port: up,
            via: Via::Connect
        }
    );

    // Another name in the ClientHello: closed, nothing reaches the server.
    let mut t = tunnel(h.addr, &format!("localhost:{up}")).await.unwrap();
    t.write_all(&client_hello("evil.example")).await.unwrap();
    let mut rest = Vec::new();
    let _ = t.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    assert_eq!(seen.recv().await.unwrap(), Vec::<u8>::new());
    assert_eq!(
        h.event().await,
        NetEvent::Denied {
            host: Some("localhost".into()),
            port: Some(up),
            reason: DenyReason::SniMismatch {
                sni: "evil.example".into()
            }
        }
    );

    // A handshake record that is not a ClientHello.
    let mut t = tunnel(h.addr, &format!("localhost:{up}")).await.unwrap();
    t.write_all(&[0x16, 3, 1, 0, 4, 9, 9, 9, 9]).await.unwrap();
    let _ = t.read_to_end(&mut rest).await;
    assert_eq!(seen.recv().await.unwrap(), Vec::<u8>::new());
    assert!(matches!(
        h.event().await,
        NetEvent::Denied {
            reason: DenyReason::BadClientHello(_),
            ..
        }
    ));

    // Not TLS at all: passed through (the name was checked).
    let mut t = tunnel(h.addr, &format!("localhost:{up}")).await.unwrap();
    t.write_all(b"SSH-2.0-test\r\n").await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), b"SSH-2.0-test\r\n");
    assert!(matches!(
        h.event().await,
        NetEvent::Allowed {
            via: Via::Connect,
            ..
        }
    ));
}

#[tokio::test]
async fn garbage_is_refused_and_the_proxy_keeps_serving() {
    let up = origin("after").await;
    let mut h = proxy(allow(&[("localhost", None)]), None, Limits::default()).await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"\x00\x01\x02 this is not http\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    match h.event().await {
        NetEvent::Denied {
            host: None,
            port: None,
            reason: DenyReason::BadRequest(why),
        } => {
            assert!(why.contains("not an HTTP/1.1 request"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // An oversized head.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let big = format!(
        "GET http://localhost/ HTTP/1.1\r\nx: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(matches!(
        h.event().await,
        NetEvent::Denied {
            reason: DenyReason::BadRequest(_),
            ..
        }
    ));
    let (st, _) = send(h.addr, get(&format!("http://localhost:{up}/"))).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn a_flood_of_connections_is_refused_over_the_limit() {
    let up = origin("after-flood").await;
    let limits = Limits {
        max_connections: 4,
        header_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    let mut h = proxy(allow(&[("localhost", None)]), None, limits).await;
    // Four idle connections hold every slot.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        // A partial head: the connection is being served, not finished.
        s.write_all(b"GET http://localhost/ HTTP/1.1\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    // Served connections are counted when their task starts; a fifth
    // one is refused once all four are in.
    let (st, body) = loop {
        let r = send(h.addr, get(&format!("http://localhost:{up}/"))).await;
        if r.0 == StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert_eq!(r.0, StatusCode::OK);
        assert!(matches!(h.event().await, NetEvent::Allowed { .. }));
    };
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("too many connections"), "{body}");
    assert_eq!(
        h.event().await,
        NetEvent::Denied {
            host: None,
            port: None,
            reason: DenyReason::ConnectionLimit(4)
        }
    );
    drop(idle);
    // Slots come back when those clients go.
    loop {
        let (st, _) = send(h.addr, get(&format!("http://localhost:{up}/"))).await;
        if st == StatusCode::OK {
            break;
        }
        assert!(matches!(
            h.event().await,
            NetEvent::Denied {
                reason: DenyReason::ConnectionLimit(4),
                ..
            }
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_model_route_adds_the_real_key_and_drops_the_placeholder() {
    let up = origin("model").await;
    let route = ModelRoute::new(
        &format!("http://localhost:{up}/base"),
        ModelAuth::XApiKey,
        "sk-real",
    )
    .unwrap();
    let mut h = proxy(Policy::Deny, Some(route), Limits::default()).await;
    let req = Request::post("/v1/messages?beta=true")
        .header("x-api-key", "placeholder")
        .header("authorization", "Bearer placeholder")
        .body(Empty::new())
        .unwrap();
    let (st, body) = send(h.addr, req).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        format!("model /base/v1/messages?beta=true host=localhost:{up} key=sk-real auth=-")
    );
    assert_eq!(
        h.event().await,
        NetEvent::Allowed {
            host: "localhost".into(),
            port: up,
            via: Via::Model
        }
    );
    // With networking off, nothing else goes out.
    let (st, body) = send(h.addr, get(&format!("http://localhost:{up}/"))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.contains("networking is off"), "{body}");
    assert!(matches!(
        h.event().await,
        NetEvent::Denied {
            reason: DenyReason::NoNetwork,
            ..
        }
    ));
    // Bearer keys for OpenAI-style APIs.
    let route = ModelRoute::new(
        &format!("http://localhost:{up}/v1"),
        ModelAuth::Bearer,
        "sk-o",
    )
    .unwrap();
    let h2 = proxy(Policy::Deny, Some(route), Limits::default()).await;
    let (_, body) = send(
        h2.addr,
        Request::post("/responses").body(Empty::new()).unwrap(),
    )
    .await;
    assert_eq!(
        body,
        format!("model /v1/responses host=localhost:{up} key=- auth=Bearer sk-o")
    );
}

#[tokio::test]
async fn without_a_model_route_origin_form_is_a_bad_request() {
    let mut h = proxy(Policy::Open, None, Limits::default()).await;
    let (st, body) = send(h.addr, get("/v1/messages")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.contains("no model route"), "{body}");
    assert!(matches!(
        h.event().await,
        NetEvent::Denied {
            reason: DenyReason::BadRequest(_),
            ..
        }
    ));
}

#[tokio::test]
async fn open_mode_never_reaches_the_host() {
    let up = origin("host").await;
    let mut h = proxy(Policy::Open, None, Limits::default()).await;
    for url in [
        format!("http://localhost:{up}/"),
        format!("http://127.0.0.1:{up}/"),
        format!("http://[::1]:{up}/"),
    ] {
        let (st, body) = send(h.addr, get(&url)).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{url}");
        assert!(body.contains("machine husk runs on"), "{body}");
        assert!(matches!(
            h.event().await,
            NetEvent::Denied {
                reason: DenyReason::HostAddress,
                ..
            }
        ));
    }
    assert_eq!(
        tunnel(h.addr, &format!("localhost:{up}")).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    assert!(matches!(
        h.event().await,
        NetEvent::Denied {
            reason: DenyReason::HostAddress,
            ..
        }
    ));
}

#[tokio::test]
async fn events_stop_at_the_budget_but_the_policy_does_not() {
    let limits = Limits {
        max_events: 2,
        ..Limits::default()
    };
    let mut h = proxy(Policy::Deny, None, limits).await;
    for _ in 0..4 {
        let (st, _) = send(h.addr, get("http://a.invalid/")).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
    }
    assert!(matches!(h.event().await, NetEvent::Denied { .. }));
    assert!(matches!(h.event().await, NetEvent::Denied { .. }));
    assert_eq!(h.event().await, NetEvent::Suppressed { after: 2 });
    h.no_more_events();
}

/// Sends `head` on a raw connection, closes the write side (as `nc`
/// does when its input ends) and returns everything the proxy answers.
async fn half_closed(proxy: std::net::SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
        .await
        .expect("the proxy answers within 30 s")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_client_that_half_closes_still_gets_its_answer() {
    let up = origin("half").await;
    let mut h = proxy(allow(&[("localhost", None)]), None, Limits::default()).await;
    // Refused: the answer and the event still come.
    let answer = half_closed(h.addr, &format!("CONNECT 127.0.0.1:{up} HTTP/1.1\r\n\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer:?}");
    assert_eq!(
        h.event().await,
        NetEvent::Denied {
            host: Some("127.0.0.1".into()),
            port: Some(up),
            reason: DenyReason::HostNotAllowed
        }
    );
    // Allowed: forwarded, and the origin's answer relayed.
    let answer = half_closed(
        h.addr,
        &format!("GET http://localhost:{up}/h HTTP/1.1\r\nhost: localhost:{up}\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let body = format!("half /h host=localhost:{up} key=- auth=-");
    assert!(answer.ends_with(&body), "{answer:?}");
    assert!(matches!(
        h.event().await,
        NetEvent::Allowed { via: Via::Http, .. }
    ));
    h.no_more_events();
}
