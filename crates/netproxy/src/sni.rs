//! The first bytes a client sends through a CONNECT tunnel: when they are
//! a TLS handshake, the server name of its ClientHello, read by rustls
//! (never by hand).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// A ClientHello larger than this is refused (a real one is a few KiB;
/// post-quantum key shares bring it to about 2 KiB more).
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// What the client opened the tunnel with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A TLS ClientHello, with its SNI when it has one.
    Tls { sni: Option<String> },
    /// Something else (or nothing within the wait): not checked further.
    Other,
    /// A TLS record that is not a usable ClientHello.
    Bad(String),
}

/// Reads until the client's first message is known; returns it with
/// every byte read (to be sent on unchanged).
pub(crate) async fn sniff<R: AsyncRead + Unpin>(rd: &mut R, wait: Duration) -> (Opening, Vec<u8>) {
    let mut seen = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let first = match tokio::time::timeout(wait, rd.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => n,
        // Nothing (a server-speaks-first protocol, or a closed client).
        _ => return (Opening::Other, seen),
    };
    seen.extend_from_slice(&chunk[..first]);
    // 0x16: a TLS handshake record.
    if seen[0] != 0x16 {
        return (Opening::Other, seen);
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    loop {
        while fed < seen.len() {
            let mut rest = &seen[fed..];
            match acceptor.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(n) => fed += n,
                Err(e) => return (Opening::Bad(e.to_string()), seen),
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_string);
                return (Opening::Tls { sni }, seen);
            }
            Ok(None) => {}
            Err((e, _alert)) => return (Opening::Bad(e.to_string()), seen),
        }
        if seen.len() >= MAX_HELLO_BYTES {
            return (
                Opening::Bad(format!(
                    "no complete ClientHello in {MAX_HELLO_BYTES} bytes"
                )),
                seen,
            );
        }
        match tokio::time::timeout(wait, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                return (
                    Opening::Bad("the client closed mid-ClientHello".into()),
                    seen,
                );
            }
            Err(_) => {
                return (
                    Opening::Bad(format!(
                        "no complete ClientHello within {} s",
                        wait.as_secs()
                    )),
                    seen,
                );
            }
        }
    }
}
