//! The agent-facing API through the real router (`oneshot`), one test per
//! rule: routes, envelopes, acceptance order, batches, limits.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::router;
use crate::identity::Identity;
use crate::limits::{
    MAX_BUFFERED_INTENTS, MAX_IDEMPOTENCY_KEY_BYTES, MAX_INTENT_PAYLOAD_BYTES,
    MAX_INTENTS_PER_ITERATION, MAX_REQUEST_BYTES,
};
use crate::types::{InboxEntry, InboxLoad, Kind};
use crate::{SIDECAR_VERSION, Sidecar};

fn sidecar() -> Sidecar {
    let input = json!({"execution_id": "exec-1", "candidate_id": "cand-1",
                       "role": "leader", "peers": ["cand-2"], "iteration": 2});
    Sidecar::new(Identity::from_input("run-1", Some(&input)).unwrap())
}

async fn call(s: &Sidecar, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router(s.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp.headers().get("content-type").cloned();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        ct.as_ref().map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{status} {}",
        String::from_utf8_lossy(&bytes)
    );
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn get(s: &Sidecar, uri: &str) -> (StatusCode, Value) {
    call(s, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(s: &Sidecar, body: impl Into<Body>, key: Option<&str>) -> (StatusCode, Value) {
    let mut b = Request::post("/v1/intents").header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    call(s, b.body(body.into()).unwrap()).await
}

fn intent(summary: &str) -> Value {
    json!({"kind": "signal", "audience": "broadcast", "payload": {"summary_text": summary}})
}

fn assert_envelope(v: &Value, code: &str, retryable: bool) {
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["retryable"], retryable, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[tokio::test]
async fn health_reports_run_and_counters() {
    let s = sidecar();
    let (st, v) = get(&s, "/v1/health").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["run_id"], "run-1");
    assert_eq!(v["sidecar_version"], SIDECAR_VERSION);
    assert_eq!(
        (v["buffer_depth"].as_u64(), v["inbox_version"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(v["uptime_ms"].is_u64());
    post(&s, intent("a").to_string(), None).await;
    s.push_message(InboxEntry {
        message_id: "m".into(),
        from_candidate_id: "cand-2".into(),
        kind: Kind::Signal,
        payload: json!(1),
    })
    .unwrap();
    let (_, v) = get(&s, "/v1/health").await;
    assert_eq!(
        (v["buffer_depth"].as_u64(), v["inbox_version"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn context_comes_from_the_identity_and_inbox_iteration() {
    let s = sidecar();
    let (st, v) = get(&s, "/v1/context").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v,
        json!({"execution_id": "exec-1", "candidate_id": "cand-1", "iteration": 2,
               "role": "leader", "peers": ["cand-2"], "sidecar_version": SIDECAR_VERSION})
    );
    s.load_inbox(InboxLoad {
        version: None,
        execution_id: None,
        candidate_id: None,
        iteration: Some(5),
        entries: vec![],
    })
    .unwrap();
    assert_eq!(get(&s, "/v1/context").await.1["iteration"], 5);
}

#[tokio::test]
async fn inbox_since_over_http() {
    let s = sidecar();
    let (st, v) = get(&s, "/v1/inbox").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v,
        json!({"version": 0, "execution_id": "exec-1", "candidate_id": "cand-1",
               "iteration": 2, "entries": []})
    );
    let load: InboxLoad = serde_json::from_value(json!({"version": 3, "iteration": 2, "entries": [
        {"message_id": "m1", "from_candidate_id": "cand-2", "kind": "proposal", "payload": {"x": 1}}
    ]}))
    .unwrap();
    s.load_inbox(load).unwrap();
    let (_, full) = get(&s, "/v1/inbox").await;
    assert_eq!(full["version"], 3);
    assert_eq!(full["entries"][0]["message_id"], "m1");
    assert_eq!(get(&s, "/v1/inbox?since=2").await.1, full);
    let (_, meta) = get(&s, "/v1/inbox?since=3").await;
    assert_eq!(meta["version"], 3);
    assert_eq!(meta["entries"], json!([]));
    assert_eq!(get(&s, "/v1/inbox?since=99").await.1["entries"], json!([]));
}

#[tokio::test]
async fn bad_queries_are_400_naming_the_problem() {
    let s = sidecar();
    for uri in [
        "/v1/inbox?since=abc",
        "/v1/inbox?since=-1",
        "/v1/inbox?sicne=1",
    ] {
        let (st, v) = get(&s, uri).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
        assert_envelope(&v, "INVALID_PARAMS", false);
        let m = v["message"].as_str().unwrap();
        assert!(m.contains("since") || m.contains("sicne"), "{uri}: {m}");
    }
}

#[tokio::test]
async fn signals_is_501_and_everything_else_404() {
    let s = sidecar();
    let (st, v) = get(&s, "/v1/signals").await;
    assert_eq!(st, StatusCode::NOT_IMPLEMENTED);
    assert_envelope(&v, "NOT_IMPLEMENTED", false);
    for (method, uri) in [
        (Method::GET, "/v1/nope"),
        (Method::GET, "/"),
        (Method::POST, "/v1/health"),
        (Method::GET, "/v1/intents"),
        (Method::DELETE, "/v1/inbox"),
        (Method::POST, "/v1/signals"),
        (Method::PUT, "/v1/runs/run-1/inbox"),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let (st, v) = call(&s, req).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_envelope(&v, "NOT_FOUND", false);
        assert!(v["message"].as_str().unwrap().contains(uri), "{v}");
    }
}

#[tokio::test]
async fn single_intent_is_stamped_with_defaults() {
    let s = sidecar();
    let (st, v) = post(&s, intent("hello").to_string(), None).await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(v["intent_id"].as_str().unwrap().starts_with("int-"));
    assert_eq!(v["from_candidate_id"], "cand-1");
    assert_eq!(v["iteration"], 2);
    assert_eq!(v["kind"], "signal");
    assert_eq!(v["audience"], "broadcast");
    assert_eq!(v["priority"], "normal");
    assert_eq!(v["ttl_iterations"], 1);
    assert_eq!(v["payload"], json!({"summary_text": "hello"}));
    assert_eq!(s.drain_intents().len(), 1);
}

#[tokio::test]
async fn enum_and_ttl_errors_name_the_field() {
    let s = sidecar();
    let cases = [
        ("kind", json!("gossip")),
        ("audience", json!("all")),
        ("priority", json!("urgent")),
        ("ttl_iterations", json!(0)),
        ("ttl_iterations", json!(5)),
    ];
    for (field, value) in cases {
        let mut body = intent("x");
        body[field] = value;
        let (st, v) = post(&s, body.to_string(), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{field}");
        assert_envelope(&v, "INVALID_PARAMS", false);
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
    for ttl in 2..=4 {
        let mut body = intent(&format!("ttl {ttl}"));
        body["ttl_iterations"] = json!(ttl);
        body["priority"] = json!("low");
        let (st, v) = post(&s, body.to_string(), None).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert_eq!(
            (v["ttl_iterations"].as_u64(), v["priority"].as_str()),
            (Some(ttl), Some("low"))
        );
    }
    assert_eq!(s.drain_intents().len(), 3);
}

#[tokio::test]
async fn malformed_bodies_are_400_json() {
    let s = sidecar();
    for (body, needle) in [
        ("", "needs a JSON body"),
        ("{\"kind\":", "invalid JSON body"),
        ("\"text\"", "not a string"),
        ("[]", "empty"),
        (
            "{\"audience\": \"leader\", \"payload\": 1}",
            "missing field `kind`",
        ),
    ] {
        let (st, v) = post(&s, body, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
        assert_envelope(&v, "INVALID_PARAMS", false);
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    assert_eq!(s.health().buffer_depth, 0);
}

#[tokio::test]
async fn idempotency_key_then_dedup_then_size_then_count() {
    let s = sidecar();
    let (_, first) = post(&s, intent("one").to_string(), Some("key-1")).await;
    // (1) same key, other body: the original.
    let (st, v) = post(&s, intent("other").to_string(), Some("key-1")).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(v, first);
    // (2) same payload and audience, no key: the original.
    let (st, v) = post(&s, intent("one").to_string(), None).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(v, first);
    // (3) over 4096 bytes serialized: 413.
    let big = "x".repeat(MAX_INTENT_PAYLOAD_BYTES);
    let (st, v) = post(&s, intent(&big).to_string(), None).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_envelope(&v, "PAYLOAD_TOO_LARGE", false);
    // (4) the fourth distinct intent of the iteration: 429, retryable.
    for n in 1..MAX_INTENTS_PER_ITERATION {
        let (st, _) = post(&s, intent(&format!("n{n}")).to_string(), None).await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let (st, v) = post(&s, intent("too many").to_string(), None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_envelope(&v, "TOO_MANY_REQUESTS", true);
    // Replays still answer 201 after the limit.
    let (st, v) = post(&s, intent("x").to_string(), Some("key-1")).await;
    assert_eq!((st, v), (StatusCode::CREATED, first));
    assert_eq!(s.drain_intents().len(), MAX_INTENTS_PER_ITERATION);
}

#[tokio::test]
async fn bad_idempotency_keys_are_400() {
    let s = sidecar();
    let long = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
    for key in [" ", long.as_str()] {
        let (st, v) = post(&s, intent("a").to_string(), Some(key)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(
            v["message"].as_str().unwrap().contains("Idempotency-Key"),
            "{v}"
        );
    }
    let key = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES);
    assert_eq!(
        post(&s, intent("a").to_string(), Some(&key)).await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn batch_accepts_all_and_answers_an_array() {
    let s = sidecar();
    let body = json!([intent("a"), intent("b")]).to_string();
    let (st, v) = post(&s, body.clone(), Some("batch")).await;
    assert_eq!(st, StatusCode::CREATED);
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["payload"]["summary_text"], "b");
    // The same batch again with its key: the same two intents.
    let (st, again) = post(&s, body, Some("batch")).await;
    assert_eq!((st, &again), (StatusCode::CREATED, &v));
    assert_eq!(s.drain_intents().len(), 2);
}

#[tokio::test]
async fn batch_stops_at_first_rejection_and_keeps_earlier_ones() {
    let s = sidecar();
    let mut bad = intent("c");
    bad["kind"] = json!("nope");
    let body = json!([intent("a"), intent("b"), bad, intent("d")]).to_string();
    let (st, v) = post(&s, body, None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_envelope(&v, "INVALID_PARAMS", false);
    assert!(v["message"].as_str().unwrap().contains("[2]"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("kind"), "{v}");
    assert_eq!(v["rejected_index"], 2);
    let accepted = v["accepted"].as_array().unwrap();
    assert_eq!(accepted.len(), 2);
    let buffered = s.drain_intents();
    assert_eq!(buffered.len(), 2);
    assert_eq!(accepted[0]["intent_id"], buffered[0].intent_id.as_str());
    // A batch passing the per-iteration limit: 429 at the fourth.
    let s = sidecar();
    let body = json!([
        intent("1"),
        intent("2"),
        intent("3"),
        intent("4"),
        intent("5")
    ]);
    let (st, v) = post(&s, body.to_string(), None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_envelope(&v, "TOO_MANY_REQUESTS", true);
    assert_eq!(v["rejected_index"], 3);
    assert_eq!(v["accepted"].as_array().unwrap().len(), 3);
    assert_eq!(s.health().buffer_depth, 3);
    // A first item that fails: nothing accepted.
    let s = sidecar();
    let (st, v) = post(&s, json!([{"kind": "signal"}]).to_string(), None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["accepted"], json!([]));
    assert_eq!(v["rejected_index"], 0);
}

#[tokio::test]
async fn requests_over_64_kib_are_413_json() {
    let s = sidecar();
    // Declared length over the limit: refused before reading.
    let body = format!(
        "{{\"kind\":\"signal\",\"audience\":\"leader\",\"payload\":\"{}\"}}",
        "x".repeat(MAX_REQUEST_BYTES)
    );
    let (st, v) = post(&s, body.clone(), None).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_envelope(&v, "PAYLOAD_TOO_LARGE", false);
    assert!(v["message"].as_str().unwrap().contains("64 KiB"), "{v}");
    // No declared length (streamed): the body limit catches it.
    let stream = futures_stream(body.into_bytes());
    let (st, v) = post(&s, stream, None).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_envelope(&v, "PAYLOAD_TOO_LARGE", false);
    // Just under the limit is parsed (and then judged on its payload).
    let payload = "x".repeat(MAX_REQUEST_BYTES - 200);
    let (st, v) = post(&s, intent(&payload).to_string(), None).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["message"].as_str().unwrap().contains("payload"), "{v}");
    assert_eq!(s.health().buffer_depth, 0);
}

/// A body of unknown length, so only the streaming limit can refuse it.
fn futures_stream(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = bytes
        .chunks(8192)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn full_buffer_is_429_retryable_until_a_drain() {
    let s = sidecar();
    let mut iteration = 2;
    for n in 0..MAX_BUFFERED_INTENTS {
        if n % MAX_INTENTS_PER_ITERATION == 0 {
            iteration += 1;
            let load = InboxLoad {
                version: None,
                execution_id: None,
                candidate_id: None,
                iteration: Some(iteration),
                entries: vec![],
            };
            s.load_inbox(load).unwrap();
        }
        let i = serde_json::from_value(intent(&n.to_string())).unwrap();
        s.submit_intent(i, None).unwrap();
    }
    let load = InboxLoad {
        version: None,
        execution_id: None,
        candidate_id: None,
        iteration: Some(iteration + 1),
        entries: vec![],
    };
    s.load_inbox(load).unwrap();
    let (st, v) = post(&s, intent("one more").to_string(), None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_envelope(&v, "TOO_MANY_REQUESTS", true);
    assert!(v["message"].as_str().unwrap().contains("1000"), "{v}");
    assert_eq!(s.drain_intents().len(), MAX_BUFFERED_INTENTS);
    assert_eq!(
        post(&s, intent("one more").to_string(), None).await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn closed_sidecar_refuses_intents_but_answers_reads() {
    let s = sidecar();
    post(&s, intent("kept").to_string(), None).await;
    let left = s.close();
    assert_eq!(left.len(), 1);
    let (st, v) = post(&s, intent("late").to_string(), None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_envelope(&v, "SIDECAR_CLOSED", false);
    let (st, v) = get(&s, "/v1/health").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "closed");
    assert_eq!(s.status().status, crate::Status::Closed);
}

#[tokio::test]
async fn serve_connection_speaks_http1_keep_alive() {
    use hyper_util::rt::TokioIo;
    let s = sidecar();
    let (client, server) = tokio::io::duplex(64 * 1024);
    let app = router(s.clone());
    let served = tokio::spawn(super::serve_connection(server, app));
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    for path in ["/v1/health", "/v1/context", "/v1/inbox"] {
        let req = Request::get(path)
            .header("host", "sidecar")
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.into_body().collect().await.unwrap();
    }
    drop(tx);
    driver.await.unwrap().unwrap();
    served.await.unwrap().unwrap();
}
