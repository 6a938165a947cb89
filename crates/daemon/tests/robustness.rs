//! The API under garbage: thousands of deterministic pseudo-random
//! requests (bodies, paths, methods, headers) against the real router,
//! in-process. Every answer must be a JSON error envelope or a success,
//! never a 5xx for a client's mistake, never a panic.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const SEEDS: &[&str] = &[
    r#"{"file":"/no/such.yaml"}"#,
    r#"{"spec":"kind: agent\nname: x\nagent: {prompt: ''}"}"#,
    r#"{"spec":"kind: workflow\nname: w\nworkflow:\n  steps: []"}"#,
    r#"{"file":"/etc/passwd","policy":{"max_parallel_microvms_per_run":0}}"#,
    r#"{"run_id":"a/b","file":"/x"}"#,
    r#"{"reason": 5}"#,
    r#"[1,2,3]"#,
    r#"null"#,
    r#"{"role":"user","content":"hi"}"#,
    "",
];

fn mutate(rng: &mut Rng, seed: &str) -> Vec<u8> {
    let mut b = seed.as_bytes().to_vec();
    for _ in 0..(rng.next() % 4) {
        if b.is_empty() {
            b.push(rng.next() as u8);
            continue;
        }
        let i = (rng.next() % b.len() as u64) as usize;
        match rng.next() % 4 {
            0 => b[i] = rng.next() as u8,
            1 => {
                b.remove(i);
            }
            2 => b.insert(
                i,
                *b"{}[]\":,\\\0"
                    .get((rng.next() % 10) as usize)
                    .unwrap_or(&b'x'),
            ),
            _ => b.truncate(i),
        }
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_typed_errors_out() {
    let dir = std::env::temp_dir().join(format!("husk-daemon-robust-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(husk_daemon::store::Store::open(&dir).unwrap());
    let manager = husk_daemon::manager::Manager::new(store, 4).unwrap();
    let app = husk_daemon::api::router(husk_daemon::api::AppState {
        manager,
        token: None,
    });
    let paths = [
        "/v1/runs",
        "/v1/runs/x",
        "/v1/runs/../../etc/passwd",
        "/v1/runs/x/events?from_event_id=%ff",
        "/v1/runs/x/cancel",
        "/v1/runs/x/stages/%2e%2e/output-file",
        "/v1/runs/x/stages/a/artifacts/..%2f..",
        "/v1/runs?state=%00",
        "/v1/health",
        "/v1/openapi.json",
        "/",
        "/v1/runs/x/inbox",
        "/v1/runs/%ff%fe",
        "/v1/runs/%c3/stages/%ff/output-file",
        "/v1/sessions/s/messages",
        "/v1/sessions/%ff/messages",
        "/v1/sessions/..%2f/messages",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..3000 {
        let seed = rng_seed(&mut rng);
        let body = mutate(&mut rng, seed);
        let method = Method::from_bytes(rng.pick(&methods).as_bytes()).unwrap();
        let path = rng.pick(&paths);
        let mut req = Request::builder().method(method.clone()).uri(path);
        if rng.next().is_multiple_of(3) {
            req = req.header("content-type", "application/json");
        }
        if rng.next().is_multiple_of(5) {
            req = req.header("accept", "text/event-stream");
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::from(body.clone())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        assert!(
            !status.is_server_error(),
            "request {i}: {method} {path} {:?} → {status}",
            String::from_utf8_lossy(&body)
        );
        if !status.is_success() {
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("request {i}: {method} {path}: not a JSON envelope ({e}): {bytes:?}")
            });
            assert!(
                v["code"].is_string() && v["message"].is_string(),
                "request {i}: {v}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn rng_seed(rng: &mut Rng) -> &'static str {
    SEEDS[(rng.next() % SEEDS.len() as u64) as usize]
}
