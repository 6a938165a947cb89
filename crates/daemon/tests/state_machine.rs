//! The daemon's run state machine through the real router and store, with
//! every sandbox on the in-memory fake backend (`husk_runtime::testing`):
//! pending → running → succeeded, cancel (and cancel again), and a
//! caller-chosen run id given twice, while active and once ended. Each
//! test runs in milliseconds; nothing starts a real sandbox.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use husk_daemon::api::{self, AppState};
use husk_daemon::manager::Manager;
use husk_daemon::store::Store;
use husk_runtime::testing::{Exit, FakeBackend, Script, Step};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tower::ServiceExt;

/// Bounds every wait: a state the run never reaches fails the test
/// instead of hanging it. Not a timing assertion.
const LIVENESS: Duration = Duration::from_secs(30);

struct Env {
    dir: PathBuf,
    app: Router,
}

impl Env {
    fn new(name: &str, fake: &FakeBackend) -> Env {
        let dir =
            std::env::temp_dir().join(format!("husk-daemon-sm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).unwrap());
        let manager = Manager::with_backend(store, 8, Some(fake.shared())).unwrap();
        let app = api::router(AppState {
            manager,
            token: None,
        });
        Env { dir, app }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn start(&self, run_id: &str) -> (StatusCode, Value) {
        let body = json!({"spec": WORKFLOW, "run_id": run_id});
        self.call(Method::POST, "/v1/runs", Some(body)).await
    }

    async fn status(&self, run_id: &str) -> String {
        let (code, v) = self
            .call(Method::GET, &format!("/v1/runs/{run_id}"), None)
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        v["status"].as_str().unwrap().to_string()
    }

    /// Waits until the run's status is `want`.
    async fn reach(&self, run_id: &str, want: &str) {
        let wait = async {
            while self.status(run_id).await != want {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        if tokio::time::timeout(LIVENESS, wait).await.is_err() {
            panic!("run {run_id} never became {want}");
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One step; the fake decides what it does.
const WORKFLOW: &str = r#"
api_version: v1
kind: workflow
name: sm
workflow:
  steps:
    - {name: only, run: {program: step, args: [only]}}
"#;

fn result() -> Step {
    Step::Write {
        path: "/workspace/result.json".into(),
        bytes: br#"{"status":"success","summary":"done"}"#.to_vec(),
    }
}

#[tokio::test]
async fn a_run_goes_pending_running_succeeded() {
    let gate = Arc::new(Barrier::new(2));
    let step_gate = gate.clone();
    let fake = FakeBackend::new(move |_| {
        Script::exit(0)
            .then(Step::Meet(step_gate.clone()))
            .then(result())
    });
    let env = Env::new("lifecycle", &fake);
    let (code, created) = env.start("life").await;
    assert_eq!(code, StatusCode::OK, "{created}");
    assert_eq!(created["state"], "pending");
    env.reach("life", "running").await;
    gate.wait().await;
    env.reach("life", "succeeded").await;
    let (_, run) = env.call(Method::GET, "/v1/runs/life", None).await;
    assert_eq!(run["terminal_reason"], "completed");
    let (_, events) = env.call(Method::GET, "/v1/runs/life/events", None).await;
    let events = events.as_array().unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    let at = |t: &str| {
        types
            .iter()
            .position(|x| *x == t)
            .unwrap_or_else(|| panic!("no {t} in {types:?}"))
    };
    assert!(at("run.started") < at("stage.started"));
    assert!(at("stage.started") < at("run.finished"));
    assert_eq!(events.last().unwrap()["event_id"], run["terminal_event_id"]);
    assert_eq!(fake.start_attempts(), 1);
}

#[tokio::test]
async fn cancelling_a_running_run_ends_it_once() {
    let fake = FakeBackend::new(|_| Script::exit(0).ending(Exit::Hang));
    let env = Env::new("cancel", &fake);
    env.start("c1").await;
    env.reach("c1", "running").await;
    let (code, first) = env
        .call(
            Method::POST,
            "/v1/runs/c1/cancel",
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(first["state"], "cancelled");
    assert!(first["terminal_event_id"].is_string(), "{first}");
    let (code, again) = env.call(Method::POST, "/v1/runs/c1/cancel", None).await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(again["terminal_event_id"], first["terminal_event_id"]);
    assert_eq!(env.status("c1").await, "cancelled");
    assert!(fake.sandboxes()[0].is_stopped());
}

#[tokio::test]
async fn a_run_id_given_twice_starts_one_run_and_an_ended_one_is_refused() {
    let fake = FakeBackend::new(|_| Script::exit(0).ending(Exit::Hang));
    let env = Env::new("dup", &fake);
    let (code, _) = env.start("d1").await;
    assert_eq!(code, StatusCode::OK);
    env.reach("d1", "running").await;
    let (code, again) = env.start("d1").await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(again["run_id"], "d1");
    assert_eq!(again["state"], "running");
    assert_eq!(
        fake.start_attempts(),
        1,
        "the second request started nothing"
    );
    env.call(Method::POST, "/v1/runs/d1/cancel", None).await;
    let (code, refused) = env.start("d1").await;
    assert_eq!(code, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["code"], "ALREADY_TERMINAL");
    assert_eq!(fake.start_attempts(), 1);
}

#[tokio::test]
async fn a_failing_step_fails_the_run_with_its_reason() {
    let fake = FakeBackend::new(|_| Script::exit(4).stderr("step broke"));
    let env = Env::new("fail", &fake);
    env.start("f1").await;
    env.reach("f1", "failed").await;
    let (_, run) = env.call(Method::GET, "/v1/runs/f1", None).await;
    assert_eq!(run["terminal_reason"], "failed");
    assert_eq!(run["stage_states"]["only"], "failed");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("exited with 4: step broke"),
        "{}",
        run["error"]
    );
}
