//! The OpenAPI document: the served one parses and is the built one, every
//! route of the table is in it with its path and query parameters, and
//! every answer has a real schema (not a bare `object`), so a client can
//! be generated from it and a regression cannot hide. (The document is
//! also checked by openapi-spec-validator and fuzzed against a live
//! daemon by `scripts/api-check`.)

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use husk_daemon::api::openapi::{Answer, Request as BodyDoc};
use husk_daemon::api::{self, AppState, ROUTES, Route};
use husk_daemon::manager::Manager;
use husk_daemon::store::Store;
use serde_json::Value;
use tower::ServiceExt;

fn built() -> Value {
    serde_json::to_value(api::openapi::build()).unwrap()
}

fn op<'a>(doc: &'a Value, r: &Route) -> &'a Value {
    let op = &doc["paths"][r.path][r.method];
    assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
    op
}

/// Follows `$ref`s into `components.schemas`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            let s = &doc["components"]["schemas"][name];
            assert!(s.is_object(), "dangling {r}");
            resolve(doc, s)
        }
        None => schema,
    }
}

/// An object schema that names its fields (or a choice of such).
fn assert_real_object(doc: &Value, schema: &Value, what: &str) {
    let s = resolve(doc, schema);
    if let Some(alts) = s["oneOf"].as_array() {
        assert!(!alts.is_empty(), "{what}: empty oneOf");
        for a in alts {
            assert_real_object(doc, a, what);
        }
        return;
    }
    let props = s["properties"].as_object();
    assert!(
        props.is_some_and(|p| !p.is_empty()),
        "{what}: a bare object schema: {s}"
    );
}

fn json_schema<'a>(content: &'a Value, what: &str) -> &'a Value {
    let s = &content["application/json"]["schema"];
    assert!(
        s.is_object(),
        "{what}: no application/json schema in {content}"
    );
    s
}

/// The properties of a schema (of the first part of an `allOf`).
fn props_of<'a>(doc: &'a Value, schema: &'a Value) -> Vec<&'a str> {
    let s = resolve(doc, schema);
    let s = s["allOf"].get(0).map_or(s, |first| resolve(doc, first));
    s["properties"]
        .as_object()
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_served_document_parses_and_is_the_built_one() {
    let dir = std::env::temp_dir().join(format!("husk-openapi-doc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let manager = Manager::new(Arc::new(Store::open(&dir).unwrap()), 4).unwrap();
    let app = api::router(AppState {
        manager,
        token: None,
    });
    let req = Request::get("/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(served, built());
    assert_eq!(served["openapi"], "3.1.0");
}

#[test]
fn every_route_is_documented_with_its_path_parameters() {
    let doc = built();
    let mut documented = 0;
    for r in ROUTES {
        let op = op(&doc, r);
        let params = op["parameters"].as_array().unwrap();
        for seg in r.path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                "{} {}: no path parameter {name}",
                r.method,
                r.path
            );
        }
        documented += 1;
    }
    let in_doc: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert_eq!(
        in_doc, documented,
        "the document has routes the table lacks"
    );
}

#[test]
fn every_answer_has_a_real_schema() {
    let doc = built();
    for r in ROUTES {
        let what = format!("{} {}", r.method, r.path);
        let responses = op(&doc, r)["responses"].as_object().unwrap();
        let ok = &responses.get("200").map(|o| &o["content"]);
        match (&r.doc.ok, ok) {
            (Answer::Json(_) | Answer::OpenApi, Some(c)) => {
                assert_real_object(&doc, json_schema(c, &what), &what)
            }
            (Answer::JsonArray(_), Some(c)) => {
                let s = json_schema(c, &what);
                assert_eq!(s["type"], "array", "{what}");
                assert_real_object(&doc, &s["items"], &what);
            }
            (Answer::EventsOrSse(_), Some(c)) => {
                let s = json_schema(c, &what);
                assert_eq!(s["type"], "array", "{what}");
                assert_real_object(&doc, &s["items"], &what);
                assert!(c["text/event-stream"].is_object(), "{what}: no SSE");
            }
            (Answer::OutputFile, Some(c)) => {
                assert!(c["application/json"].is_object(), "{what}");
                assert!(c["application/octet-stream"].is_object(), "{what}");
            }
            (Answer::Artifact, Some(c)) => assert!(c["*/*"].is_object(), "{what}"),
            (Answer::Text, Some(c)) => {
                assert_eq!(c["text/plain"]["schema"]["type"], "string", "{what}")
            }
            (Answer::Coming, None) => {}
            (_, ok) => panic!("{what}: unexpected 200 answer {ok:?}"),
        }
        // Every other answer is the error envelope, code narrowed.
        for (status, resp) in responses.iter().filter(|(s, _)| *s != "200") {
            let s = json_schema(&resp["content"], &what);
            let parts = s["allOf"].as_array().unwrap();
            assert_eq!(parts[0]["$ref"], "#/components/schemas/Error", "{what}");
            let codes = parts[1]["properties"]["code"]["enum"].as_array().unwrap();
            assert!(!codes.is_empty(), "{what} {status}: no codes");
            let all = doc["components"]["schemas"]["Code"]["enum"]
                .as_array()
                .unwrap();
            for c in codes {
                assert!(all.contains(c), "{what} {status}: {c} is not a Code");
            }
        }
        assert!(
            responses.contains_key("401") && responses.contains_key("500"),
            "{what}: common errors missing"
        );
    }
    let envelope = &doc["components"]["schemas"]["Error"];
    assert_eq!(
        envelope["required"],
        serde_json::json!(["code", "message", "retryable"])
    );
    assert!(
        doc["components"]["schemas"]["Code"]["enum"]
            .as_array()
            .unwrap()
            .contains(&Value::from("STRUCTURED_OUTPUT_MALFORMED"))
    );
}

#[test]
fn request_bodies_and_query_parameters_are_described() {
    let doc = built();
    let find = |method: &str, path: &str| {
        ROUTES
            .iter()
            .find(|r| r.method == method && r.path == path)
            .unwrap()
    };
    let body_props = |r: &Route| {
        assert!(matches!(r.doc.request, BodyDoc::Json { .. }));
        let body = &op(&doc, r)["requestBody"]["content"];
        let mut p = props_of(&doc, json_schema(body, r.path));
        p.sort_unstable();
        p
    };
    assert_eq!(
        body_props(find("post", "/v1/runs")),
        ["file", "input", "policy", "run_id", "spec"]
    );
    assert_eq!(body_props(find("post", "/v1/runs/{id}/cancel")), ["reason"]);
    assert_eq!(
        body_props(find("post", "/v1/sessions/{id}/messages")),
        ["content", "role"]
    );
    for (path, names) in [
        ("/v1/runs", &["state"][..]),
        ("/v1/runs/{id}/events", &["from_event_id"][..]),
        ("/v1/runs/{id}/telemetry", &["from_seq", "stage_name"][..]),
    ] {
        let params = op(&doc, find("get", path))["parameters"]
            .as_array()
            .unwrap();
        for n in names {
            let p = params
                .iter()
                .find(|p| p["name"] == *n && p["in"] == "query")
                .unwrap_or_else(|| panic!("{path}: no query parameter {n}"));
            assert_eq!(p["required"], false, "{path} {n}");
            // Query values are never JSON null.
            assert!(!p["schema"].to_string().contains("null"), "{path} {n}: {p}");
        }
    }
    let state = &op(&doc, find("get", "/v1/runs"))["parameters"][0]["schema"];
    assert_eq!(state["enum"], serde_json::json!(["active", "terminal"]));
}
