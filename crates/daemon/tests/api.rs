//! The API in-process (the real router over a real store in a temporary
//! directory): concurrent starts of one run id, the error envelope on
//! every kind of rejection, session chat logs and their limits, and the
//! store's file modes and schema migration.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use husk_daemon::api::{self, AppState};
use husk_daemon::manager::Manager;
use husk_daemon::store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Env {
    dir: PathBuf,
    manager: Arc<Manager>,
    app: Router,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir =
            std::env::temp_dir().join(format!("husk-daemon-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).unwrap());
        let manager = Manager::new(store, 64).unwrap();
        let app = api::router(AppState {
            manager: manager.clone(),
            token: None,
        });
        Env { dir, manager, app }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
        ctype: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri);
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        let body = Body::from(body.unwrap_or("").to_string());
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {uri}: not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v)
    }

    async fn json(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        self.call(method, uri, body, Some("application/json")).await
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A workflow that ends at once (or fails at once without bubblewrap:
/// either way one run).
const QUICK: &str = "kind: workflow\nname: quick\nsandbox:\n  mode: namespace\nworkflow:\n  steps:\n    - name: a\n      run:\n        program: \"true\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_of_one_run_id_start_it_once() {
    let env = Arc::new(Env::new("race"));
    let body = json!({"spec": QUICK, "run_id": "same-id"}).to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (env, body) = (env.clone(), body.clone());
        tasks.spawn(async move { env.json("POST", "/v1/runs", Some(&body)).await });
    }
    let mut answers = Vec::new();
    while let Some(r) = tasks.join_next().await {
        answers.push(r.unwrap());
    }
    assert_eq!(env.manager.runs_started(), 1, "{answers:?}");
    for (status, v) in &answers {
        // The others get the run's state (or, once it ended, 409).
        match *status {
            StatusCode::OK => assert_eq!(v["run_id"], "same-id", "{v}"),
            StatusCode::CONFLICT => assert_eq!(v["code"], "ALREADY_TERMINAL", "{v}"),
            s => panic!("{s}: {v}"),
        }
    }
    // Let the run end before the directory goes.
    for _ in 0..600 {
        if env.manager.active_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// method, uri, body, content type, status, code.
type Case<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    u16,
    &'a str,
);

#[tokio::test]
async fn every_error_is_the_json_envelope() {
    let env = Env::new("envelope");
    let cases: &[Case] = &[
        ("GET", "/v1/runs/%ff%fe", None, None, 400, "INVALID_PARAMS"),
        (
            "GET",
            "/v1/runs/%ff/events",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "GET",
            "/v1/runs/%c3/stages",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/runs/%fe/cancel",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "GET",
            "/v1/runs/x/stages/%ff/output-file",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "GET",
            "/v1/runs/x/stages/a/artifacts/%80",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "GET",
            "/v1/sessions/%ff/messages",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "GET",
            "/v1/runs/x/events?from_event_id=%ff",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "GET",
            "/v1/runs/x/events?bogus=1",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "GET",
            "/v1/runs?state=%ff%fe",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "GET",
            "/v1/runs?state=a&state=b",
            None,
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/runs",
            Some("file=/x"),
            Some("application/x-www-form-urlencoded"),
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/runs",
            Some("hello"),
            Some("text/plain"),
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/sessions/s/messages",
            Some("<xml/>"),
            Some("application/xml"),
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/sessions/s/messages",
            Some(r#"{"role":"user"}"#),
            Some("application/json"),
            400,
            "INVALID_PARAMS",
        ),
        ("BREW", "/v1/health", None, None, 405, "METHOD_NOT_ALLOWED"),
        (
            "DELETE",
            "/v1/sessions/s/messages",
            None,
            None,
            405,
            "METHOD_NOT_ALLOWED",
        ),
        ("GET", "/v1/nope/%ff", None, None, 404, "NOT_FOUND"),
    ];
    for (method, uri, body, ctype, want, code) in cases {
        let (status, v) = env.call(method, uri, *body, *ctype).await;
        assert_eq!(
            (status.as_u16(), v["code"].as_str()),
            (*want, Some(*code)),
            "{method} {uri}: {v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["retryable"].is_boolean(), "{v}");
    }
    // The message names the problem.
    let (_, v) = env.call("GET", "/v1/runs/%ff%fe", None, None).await;
    assert!(
        v["message"].as_str().unwrap().contains("/v1/runs/%ff%fe"),
        "{v}"
    );
}

#[tokio::test]
async fn session_chat_logs_keep_order_and_limits() {
    let env = Env::new("sessions");
    let (status, v) = env.json("GET", "/v1/sessions/chat-1/messages", None).await;
    assert_eq!((status, v), (StatusCode::OK, json!([])));
    let mut sent = Vec::new();
    for (role, content) in [
        ("user", "hi"),
        ("assistant", "hello, how can I help?"),
        ("user", "é ✓"),
    ] {
        let body = json!({"role": role, "content": content}).to_string();
        let (status, v) = env
            .json("POST", "/v1/sessions/chat-1/messages", Some(&body))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            (v["role"].as_str(), v["content"].as_str()),
            (Some(role), Some(content))
        );
        assert!(
            v["ts_ms"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
            "{v}"
        );
        sent.push(v);
    }
    let (_, log) = env.json("GET", "/v1/sessions/chat-1/messages", None).await;
    assert_eq!(log, Value::Array(sent));
    let (_, other) = env.json("GET", "/v1/sessions/chat-2/messages", None).await;
    assert_eq!(other, json!([]));

    let big = json!({"role": "user", "content": "x".repeat(64 * 1024 + 1)}).to_string();
    let at_limit = json!({"role": "user", "content": "x".repeat(64 * 1024)}).to_string();
    let cases = [
        (
            "/v1/sessions/chat-1/messages",
            big.clone(),
            413,
            "PAYLOAD_TOO_LARGE",
            "64 KiB",
        ),
        (
            "/v1/sessions/a%2Fb/messages",
            r#"{"role":"u","content":""}"#.to_string(),
            400,
            "INVALID_PARAMS",
            "contains `/`",
        ),
        (
            "/v1/sessions/../messages",
            r#"{"role":"u","content":""}"#.to_string(),
            400,
            "INVALID_PARAMS",
            "`.` and `..`",
        ),
        (
            "/v1/sessions/%2E%2E/messages",
            r#"{"role":"u","content":""}"#.to_string(),
            400,
            "INVALID_PARAMS",
            "`.` and `..`",
        ),
        (
            &format!("/v1/sessions/{}/messages", "s".repeat(129)),
            r#"{"role":"u","content":""}"#.to_string(),
            400,
            "INVALID_PARAMS",
            "at most 128",
        ),
        (
            "/v1/sessions/ok/messages",
            r#"{"role":"","content":"x"}"#.to_string(),
            400,
            "INVALID_PARAMS",
            "role",
        ),
        (
            "/v1/sessions/ok/messages",
            json!({"role": "r".repeat(65), "content": "x"}).to_string(),
            400,
            "INVALID_PARAMS",
            "role",
        ),
        (
            "/v1/sessions/ok/messages",
            r#"{"role":"u","content":"x","extra":1}"#.to_string(),
            400,
            "INVALID_PARAMS",
            "extra",
        ),
        (
            "/v1/sessions/ok/messages",
            r#"{"role":"u","content":7}"#.to_string(),
            400,
            "INVALID_PARAMS",
            "invalid type",
        ),
    ];
    for (uri, body, want, code, says) in cases {
        let (status, v) = env.json("POST", uri, Some(&body)).await;
        assert_eq!(
            (status.as_u16(), v["code"].as_str()),
            (want, Some(code)),
            "{uri}: {v}"
        );
        assert!(v["message"].as_str().unwrap().contains(says), "{uri}: {v}");
    }
    let (status, v) = env
        .json("POST", "/v1/sessions/chat-1/messages", Some(&at_limit))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, log) = env.json("GET", "/v1/sessions/chat-1/messages", None).await;
    assert_eq!(log.as_array().unwrap().len(), 4);

    // A full session refuses more (and says so); other sessions go on.
    let limit = api::sessions::MAX_MESSAGES_PER_SESSION;
    let store = env.manager.store();
    for i in 0..limit {
        store
            .append_message("full", "user", &i.to_string(), limit)
            .unwrap();
    }
    let one = r#"{"role":"user","content":"one more"}"#;
    let (status, v) = env
        .json("POST", "/v1/sessions/full/messages", Some(one))
        .await;
    assert_eq!(
        (status.as_u16(), v["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("10000"), "{v}");
    assert_eq!(v["retryable"], false);
    let (_, log) = env.json("GET", "/v1/sessions/full/messages", None).await;
    assert_eq!(log.as_array().unwrap().len(), limit);
    assert_eq!(log[limit - 1]["content"], (limit - 1).to_string());
    let (status, _) = env
        .json("POST", "/v1/sessions/chat-2/messages", Some(one))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_are_in_the_route_table_and_openapi() {
    let env = Env::new("openapi");
    let (_, doc) = env.json("GET", "/v1/openapi.json", None).await;
    let ops = &doc["paths"]["/v1/sessions/{id}/messages"];
    assert!(ops["get"].is_object() && ops["post"].is_object(), "{ops}");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_store_is_private_whatever_it_was_before() {
    let base = std::env::temp_dir().join(format!("husk-daemon-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let data = base.join("data");
    std::fs::create_dir_all(data.join("runs")).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(data.join("runs"), std::fs::Permissions::from_mode(0o777)).unwrap();
    // A database left world-readable by an older daemon.
    drop(Store::open(&data).unwrap());
    for f in ["husk.db", "husk.db-wal", "husk.db-shm"] {
        if data.join(f).exists() {
            std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&data).unwrap();
    store.append_message("s", "user", "hello", 10).unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("runs")), 0o700);
    for f in ["husk.db", "husk.db-wal", "husk.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    // A fresh store is private from the start.
    let fresh = base.join("fresh");
    let s2 = Store::open(&fresh).unwrap();
    s2.append_message("s", "user", "hello", 10).unwrap();
    assert_eq!(mode(&fresh), 0o700);
    for f in ["husk.db", "husk.db-wal", "husk.db-shm"] {
        assert_eq!(mode(&fresh.join(f)), 0o600, "{f}");
    }
    // Not a directory: refused, naming the path.
    std::fs::write(base.join("file"), "").unwrap();
    let e = Store::open(&base.join("file"))
        .err()
        .expect("a file is not a store")
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
    drop((store, s2));
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn an_older_database_gets_the_session_table() {
    let dir = std::env::temp_dir().join(format!("husk-daemon-migrate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    {
        // The schema as the first daemon made it (no user_version).
        let c = rusqlite::Connection::open(dir.join("husk.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL, terminal INTEGER NOT NULL,
                                created_seq INTEGER NOT NULL, record TEXT NOT NULL);
             CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
                                  PRIMARY KEY (run_id, seq));
             INSERT INTO events VALUES ('r1', 1, '{}');",
        )
        .unwrap();
    }
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.last_seq("r1").unwrap(), 1, "old data is kept");
    store.append_message("s", "user", "hi", 10).unwrap();
    assert_eq!(store.messages("s").unwrap().len(), 1);
    drop(store);
    // Reopening applies nothing twice.
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.messages("s").unwrap().len(), 1);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
