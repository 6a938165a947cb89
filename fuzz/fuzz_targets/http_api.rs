//! Sends arbitrary requests through the daemon's real router (auth, body
//! limits, error middleware, every handler, the SQLite store), with every
//! run's sandboxes on the in-memory fake backend: no real sandbox starts.
//! The router must never panic or hang, and every answer outside 2xx must
//! be the JSON error envelope `{code, message, retryable}`.
//!
//! An input is a request in a simple text form (so seeds are readable):
//!
//! ```text
//! METHOD
//! /path?query
//! header-name: value
//! …
//! <empty line>
//! body bytes
//! ```
//!
//! A method, URI or header the `http` crate refuses to build is skipped:
//! such requests cannot reach the router from the wire either (hyper
//! refuses them first). The daemon lives across inputs, as a server does
//! (runs started by one input are there for the next); it is replaced
//! with a fresh one every `RESET_EVERY` inputs so its store stays small.

#![no_main]

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use husk_daemon::api::{self, AppState};
use husk_daemon::manager::Manager;
use husk_daemon::store::Store;
use husk_runtime::testing::{FakeBackend, Script, Step};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// Inputs served by one daemon before it is replaced.
const RESET_EVERY: u32 = 5_000;
/// Longest a request may take; longer is reported as a hang. Generous:
/// the slowest legitimate route (cancel) waits for a fake run, which ends
/// at its first signal.
const HANG: Duration = Duration::from_secs(20);

struct Daemon {
    dir: PathBuf,
    app: Router,
    served: u32,
}

impl Daemon {
    fn new(generation: u64) -> Daemon {
        let dir = std::env::temp_dir().join(format!(
            "husk-fuzz-http-{}-{generation}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).expect("a store in the temporary directory"));
        // Steps print, write the workflow result and exit: runs end at once.
        let fake = FakeBackend::new(|req| {
            Script::exit(0)
                .stdout(&req.argv.join(" "))
                .then(Step::Write {
                    path: "/workspace/result.json".into(),
                    bytes: br#"{"status":"success","summary":"fuzz"}"#.to_vec(),
                })
        });
        let manager = Manager::with_backend(store, 8, Some(fake.shared())).expect("a manager");
        let app = api::router(AppState {
            manager,
            token: None,
        });
        Daemon {
            dir,
            app,
            served: 0,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    static DAEMON: RefCell<(u64, Option<Daemon>)> = const { RefCell::new((0, None)) };
}

/// The request an input describes, or `None` when `http` cannot build it.
fn request(data: &[u8]) -> Option<Request<Body>> {
    let mut rest = data;
    let mut line = || {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let l = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or(&[]);
        l.strip_suffix(b"\r").unwrap_or(l)
    };
    let method = Method::from_bytes(line()).ok()?;
    let uri = std::str::from_utf8(line()).ok()?.to_string();
    let mut builder = Request::builder().method(method).uri(uri);
    loop {
        let l = line();
        if l.is_empty() {
            break;
        }
        let colon = l.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&l[..colon]).ok()?;
        let value = HeaderValue::from_bytes(l[colon + 1..].trim_ascii_start()).ok()?;
        builder = builder.header(name, value);
    }
    builder.body(Body::from(rest.to_vec())).ok()
}

fn app() -> Router {
    DAEMON.with(|d| {
        let mut d = d.borrow_mut();
        let (generation, daemon) = &mut *d;
        if daemon.as_ref().is_none_or(|x| x.served >= RESET_EVERY) {
            *daemon = None;
            *generation += 1;
            *daemon = Some(Daemon::new(*generation));
        }
        let daemon = daemon.as_mut().expect("a daemon");
        daemon.served += 1;
        daemon.app.clone()
    })
}

/// Panics unless `body` is the error envelope.
fn check_envelope(status: u16, body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{status} answer is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let ok = v["code"].as_str().is_some_and(|c| !c.is_empty())
        && v["message"].as_str().is_some_and(|m| !m.is_empty())
        && v["retryable"].is_boolean()
        && v.as_object().is_some_and(|o| o.len() == 3);
    assert!(ok, "{status} answer is not the error envelope: {v}");
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = request(data) else { return };
    let head = req.method() == Method::HEAD;
    let app = app();
    RT.with(|rt| {
        rt.block_on(async {
            let served = tokio::time::timeout(HANG, async {
                let resp = app.oneshot(req).await.expect("the router is infallible");
                let status = resp.status();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .expect("the body is readable")
                    .to_bytes();
                (status, body)
            })
            .await;
            let (status, body) = served.expect("a request hung");
            // HEAD answers carry no body; their status is all there is.
            if !status.is_success() && !head {
                check_envelope(status.as_u16(), &body);
            }
        })
    });
});
