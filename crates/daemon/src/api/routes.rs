//! The route table: every route of the API once, with what the OpenAPI
//! document says about it (request body, query parameters, the 200 answer
//! and the error codes it can return). The router and the document are
//! both built from [`ROUTES`], so a route cannot be served undocumented or
//! documented unserved.

use axum::routing::{MethodRouter, get, post, put};

use super::error::Code::{self, *};
use super::openapi::{Answer, Doc, Request, component};
use super::{AppState, events, files, messaging, openapi, runs, sessions};
use crate::manager::{Cancelled, Created};
use crate::store::SessionMessage;

/// One route: method, path (axum syntax), summary and documentation.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub doc: Doc,
}

/// A route with no request body or query parameters.
const fn plain(ok: Answer, errors: &'static [Code]) -> Doc {
    Doc {
        request: Request::None,
        query: None,
        ok,
        errors,
    }
}

/// The messaging sidecar's routes: until messaging exists every run
/// answers 404 "has no messaging sidecar", so no 200 body is documented.
const SIDECAR: &[Code] = &[InvalidParams, NotFound, AlreadyTerminal];

pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/v1/health",
        summary: "Daemon health",
        doc: plain(Answer::Json(component::<runs::Health>), &[]),
    },
    Route {
        method: "get",
        path: "/v1/metrics",
        summary: "Gauges and counters (active runs, warm pools) in Prometheus text format",
        doc: plain(Answer::Text, &[]),
    },
    Route {
        method: "post",
        path: "/v1/runs",
        summary: "Start a run",
        doc: Doc {
            request: Request::Json {
                schema: openapi::create_run,
                required: true,
            },
            query: None,
            ok: Answer::Json(component::<Created>),
            errors: &[
                InvalidParams,
                InvalidSpec,
                InvalidPolicy,
                AlreadyTerminal,
                ResourceLimitExceeded,
            ],
        },
    },
    Route {
        method: "get",
        path: "/v1/runs",
        summary: "List runs (state=active|terminal)",
        doc: Doc {
            request: Request::None,
            query: Some(openapi::query::<runs::ListQuery>),
            ok: Answer::Json(component::<runs::RunList>),
            errors: &[InvalidParams],
        },
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}",
        summary: "A run record",
        doc: plain(
            Answer::Json(component::<husk_runtime::RunRecord>),
            &[InvalidParams, NotFound],
        ),
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/events",
        summary: "Events after from_event_id; SSE with Accept: text/event-stream",
        doc: Doc {
            request: Request::None,
            query: Some(openapi::query::<events::EventsQuery>),
            ok: Answer::EventsOrSse(component::<husk_runtime::Event>),
            errors: &[InvalidParams, NotFound],
        },
    },
    Route {
        method: "post",
        path: "/v1/runs/{id}/cancel",
        summary: "Cancel a run (idempotent)",
        doc: Doc {
            request: Request::Json {
                schema: component::<runs::CancelBody>,
                required: false,
            },
            query: None,
            ok: Answer::Json(component::<Cancelled>),
            errors: &[InvalidParams, NotFound],
        },
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/stages",
        summary: "Per-stage status",
        doc: plain(
            Answer::Json(component::<runs::Stages>),
            &[InvalidParams, NotFound],
        ),
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/stages/{stage}/output-file",
        summary: "A stage's output file",
        doc: plain(
            Answer::OutputFile,
            &[
                InvalidParams,
                NotFound,
                StructuredOutputMissing,
                StructuredOutputMalformed,
            ],
        ),
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/stages/{stage}/artifacts/{name}",
        summary: "A stage artifact",
        doc: plain(
            Answer::Artifact,
            &[
                InvalidParams,
                NotFound,
                ArtifactNotFound,
                ArtifactPublicationIncomplete,
            ],
        ),
    },
    Route {
        method: "put",
        path: "/v1/runs/{id}/inbox",
        summary: "Load an inbox snapshot into the run's sidecar",
        doc: Doc {
            request: Request::Json {
                schema: component::<husk_sidecar::InboxLoad>,
                required: true,
            },
            query: None,
            ok: Answer::Json(component::<messaging::InboxLoaded>),
            errors: SIDECAR,
        },
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/intents",
        summary: "Drain buffered intents",
        doc: plain(
            Answer::JsonArray(component::<husk_sidecar::StampedIntent>),
            SIDECAR,
        ),
    },
    Route {
        method: "post",
        path: "/v1/runs/{id}/messages",
        summary: "Push one inbox entry",
        doc: Doc {
            request: Request::Json {
                schema: component::<husk_sidecar::InboxEntry>,
                required: true,
            },
            query: None,
            ok: Answer::Json(component::<messaging::MessagePushed>),
            errors: SIDECAR,
        },
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/telemetry",
        summary: "Per-stage resource samples (from_seq, stage_name)",
        doc: Doc {
            request: Request::None,
            query: Some(openapi::query::<runs::TelemetryQuery>),
            ok: Answer::Json(component::<runs::TelemetryPage>),
            errors: &[InvalidParams, NotFound],
        },
    },
    Route {
        method: "get",
        path: "/v1/sessions/{id}/messages",
        summary: "A session's chat log (JSON array, oldest first)",
        doc: plain(
            Answer::JsonArray(component::<SessionMessage>),
            &[InvalidParams],
        ),
    },
    Route {
        method: "post",
        path: "/v1/sessions/{id}/messages",
        summary: "Append {role, content} to a session's chat log",
        doc: Doc {
            request: Request::Json {
                schema: component::<sessions::NewMessage>,
                required: true,
            },
            query: None,
            ok: Answer::Json(component::<SessionMessage>),
            errors: &[InvalidParams, PayloadTooLarge],
        },
    },
    Route {
        method: "get",
        path: "/v1/openapi.json",
        summary: "This API's OpenAPI document",
        doc: plain(Answer::OpenApi, &[]),
    },
];

pub(super) fn handler(r: &Route) -> MethodRouter<AppState> {
    match (r.method, r.path) {
        ("get", "/v1/health") => get(runs::health),
        ("get", "/v1/metrics") => get(runs::metrics),
        ("post", "/v1/runs") => post(runs::create),
        ("get", "/v1/runs") => get(runs::list),
        ("get", "/v1/runs/{id}") => get(runs::show),
        ("get", "/v1/runs/{id}/events") => get(events::events),
        ("post", "/v1/runs/{id}/cancel") => post(runs::cancel),
        ("get", "/v1/runs/{id}/stages") => get(runs::stages),
        ("get", "/v1/runs/{id}/stages/{stage}/output-file") => get(files::output_file),
        ("get", "/v1/runs/{id}/stages/{stage}/artifacts/{name}") => get(files::artifact),
        ("put", "/v1/runs/{id}/inbox") => put(messaging::put_inbox),
        ("get", "/v1/runs/{id}/intents") => get(messaging::intents),
        ("post", "/v1/runs/{id}/messages") => post(messaging::push_message),
        ("get", "/v1/runs/{id}/telemetry") => get(runs::telemetry),
        ("get", "/v1/sessions/{id}/messages") => get(sessions::list),
        ("post", "/v1/sessions/{id}/messages") => post(sessions::append),
        ("get", "/v1/openapi.json") => get(openapi::document),
        _ => super::unreachable_route(),
    }
}
