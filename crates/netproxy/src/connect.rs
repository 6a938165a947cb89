//! `CONNECT host:port`: checked by name, dialed by the proxy, then — when
//! the client starts TLS — checked again by the SNI of its ClientHello.

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::event::{DenyReason, NetEvent, Via};
use crate::policy::{Unusable, normalize, resolve};
use crate::server::{Body, Proxy, text};
use crate::sni::{Opening, sniff};

/// Copy buffer of an open tunnel, per direction.
const TUNNEL_BUF: usize = 64 * 1024;

pub(crate) async fn connect(p: &Proxy, req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        let why = "CONNECT needs host:port".to_string();
        return p.deny(None, None, DenyReason::BadRequest(why));
    };
    let host = normalize(authority.host());
    let Some(port) = authority.port_u16() else {
        let why = "CONNECT needs a port (host:port)".to_string();
        return p.deny(Some(host), None, DenyReason::BadRequest(why));
    };
    if let Err(reason) = p.inner.policy.check(&host, port) {
        return p.deny(Some(host), Some(port), reason);
    }
    let upstream = match dial(p, &host, port).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let p2 = p.clone();
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            tunnel(&p2, TokioIo::new(upgraded), upstream, host, port).await;
        }
    });
    let mut ok = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *ok.status_mut() = StatusCode::OK;
    ok
}

/// Resolves (policy-checked in open mode) and connects; on failure, the
/// answer for the client (the event is reported).
pub(crate) async fn dial(p: &Proxy, host: &str, port: u16) -> Result<TcpStream, Response<Body>> {
    let addrs = match resolve(&p.inner.policy, host, port).await {
        Ok(a) => a,
        Err(Unusable::Denied(reason)) => return Err(p.deny(Some(host.into()), Some(port), reason)),
        Err(Unusable::Failed(why)) => return Err(failed(p, host, port, why)),
    };
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(p.inner.limits.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => {
                let secs = p.inner.limits.connect_timeout.as_secs();
                last = format!("{addr}: no answer within {secs} s");
            }
        }
    }
    Err(failed(p, host, port, last))
}

/// Reports an unreachable host; the client gets `502`.
pub(crate) fn failed(p: &Proxy, host: &str, port: u16, why: String) -> Response<Body> {
    let msg = format!("husk network proxy: {host}:{port} could not be reached: {why}\n");
    p.report(NetEvent::Failed {
        host: host.into(),
        port,
        why,
    });
    text(StatusCode::BAD_GATEWAY, &msg)
}

async fn tunnel<C>(p: &Proxy, mut client: C, mut upstream: TcpStream, host: String, port: u16)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (opening, seen) = sniff(&mut client, p.inner.limits.hello_wait).await;
    let denied = match opening {
        Opening::Tls { sni: Some(sni) } if normalize(&sni) != host => {
            Some(DenyReason::SniMismatch { sni })
        }
        Opening::Bad(why) => Some(DenyReason::BadClientHello(why)),
        _ => None,
    };
    if let Some(reason) = denied {
        p.report(NetEvent::Denied {
            host: Some(host),
            port: Some(port),
            reason,
        });
        let _ = client.shutdown().await;
        return;
    }
    p.report(NetEvent::Allowed {
        host,
        port,
        via: Via::Connect,
    });
    if upstream.write_all(&seen).await.is_err() {
        return;
    }
    // 64 KiB a direction instead of tokio's 8 KiB default: fewer wakeups
    // per byte on bulk transfers (docs/network.md, "Measured overhead").
    let _ = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        TUNNEL_BUF,
        TUNNEL_BUF,
    )
    .await;
}
