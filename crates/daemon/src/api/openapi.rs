//! The OpenAPI 3.1 document, built from the route table ([`ROUTES`]) so the
//! router and the document cannot drift apart.
//!
//! Why not utoipa's `#[utoipa::path]` macros: they would make each
//! handler's attribute a second list of routes next to [`ROUTES`] (which
//! the router is built from). Instead each [`Route`] carries a [`Doc`]:
//! its request body, query parameters (`IntoParams` types, the same ones
//! the handler parses), its 200 answer and the error codes it can return.
//! The schemas are utoipa's `ToSchema` derives on the very types the
//! handlers serialize and parse, so a field added to a type is in the
//! document. Errors are grouped by status; each is the [`ApiError`]
//! envelope with `code` narrowed to the codes that status can carry.
//!
//! OpenAPI 3.1, not 3.0: utoipa emits 3.1 schemas (`type: [string, null]`
//! for options), and both openapi-spec-validator and schemathesis, which
//! `scripts/api-check` runs on this document, handle 3.1.

use std::collections::BTreeMap;

use axum::Json;
use utoipa::openapi::path::{
    Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, Content, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder,
    Ref, RefOr, Required, Response, ResponseBuilder, Schema,
};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Code};
use super::{ROUTES, Route};
use crate::manager::CreateRun;

/// Component schemas collected while building (name, schema).
pub type Components = Vec<(String, RefOr<Schema>)>;

/// Adds a type's schema (and those it refers to) to the components and
/// answers a reference to it.
pub type SchemaFn = fn(&mut Components) -> RefOr<Schema>;

/// The query parameters of a route.
pub type QueryFn = fn() -> Vec<Parameter>;

/// Errors any route can answer: 401 on TCP listeners without the bearer
/// token, 413 for a declared body over the limit (checked before routing),
/// 500 for husk's own failures.
const COMMON: &[Code] = &[
    Code::Unauthorized,
    Code::PayloadTooLarge,
    Code::InternalError,
];

/// What the OpenAPI document says about one route.
pub struct Doc {
    pub request: Request,
    pub query: Option<QueryFn>,
    pub ok: Answer,
    /// The codes the route itself can answer (besides [`COMMON`]).
    pub errors: &'static [Code],
}

/// A route's request body.
pub enum Request {
    None,
    /// A JSON body of this schema (`required: false`: an empty body is
    /// accepted too).
    Json {
        schema: SchemaFn,
        required: bool,
    },
    /// Any JSON object (the messaging routes, whose bodies are not
    /// settled yet).
    AnyObject,
}

/// A route's 200 answer.
pub enum Answer {
    /// JSON of this schema.
    Json(SchemaFn),
    /// A JSON array of this schema.
    JsonArray(SchemaFn),
    /// A JSON array of events, or with `Accept: text/event-stream` the
    /// live SSE stream of them.
    EventsOrSse(SchemaFn),
    /// A stage's output file: JSON when it parses, else raw bytes.
    OutputFile,
    /// An artifact's bytes with its media type from the manifest.
    Artifact,
    /// This document.
    OpenApi,
    /// Plain text (`text/plain`).
    Text,
    /// Not served yet (the route answers an error until its feature
    /// lands): no 200 is documented.
    Coming,
}

/// The [`SchemaFn`] of a type that derives `ToSchema`.
pub fn component<T: ToSchema>(out: &mut Components) -> RefOr<Schema> {
    out.push((T::name().into_owned(), T::schema()));
    T::schemas(out);
    Ref::from_schema_name(T::name()).into()
}

/// `POST /v1/runs`'s body: [`CreateRun`], which needs `file` or `spec`
/// (a rule of `Manager::create` that the derive cannot say).
pub fn create_run(out: &mut Components) -> RefOr<Schema> {
    let needs = |field: &str| {
        ObjectBuilder::new()
            .property(field, ObjectBuilder::new().schema_type(Type::String))
            .required(field)
    };
    let file_or_spec = AnyOfBuilder::new().item(needs("file")).item(needs("spec"));
    AllOfBuilder::new()
        .item(component::<CreateRun>(out))
        .item(file_or_spec)
        .description(Some(
            "A spec file on the daemon's host (`file`) or inline (`spec`)",
        ))
        .into()
}

/// The [`QueryFn`] of a type that derives `IntoParams`.
pub fn query<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

pub async fn document() -> Json<OpenApi> {
    Json(build())
}

/// The whole document.
pub fn build() -> OpenApi {
    let mut components: Components = Vec::new();
    component::<ApiError>(&mut components);
    let mut paths = PathsBuilder::new().build();
    for r in ROUTES {
        paths.add_path_operation(
            r.path,
            vec![method(r.method)],
            operation(r, &mut components),
        );
    }
    let bearer = SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
    let components = ComponentsBuilder::new()
        .schemas_from_iter(components)
        .security_scheme("bearer", bearer)
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("husk daemon API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The runs API of the void-box v1 contract, as husk serves it. \
                     Over TCP every route needs `Authorization: Bearer <token>`; \
                     the unix socket needs none.",
                )),
        )
        .paths(paths)
        .components(Some(components))
        .security(Some([SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]))
        .build()
}

fn method(m: &str) -> HttpMethod {
    match m {
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        _ => HttpMethod::Get,
    }
}

fn operation(r: &Route, components: &mut Components) -> Operation {
    let mut op = OperationBuilder::new()
        .summary(Some(r.summary))
        .operation_id(Some(operation_id(r)))
        .parameters(Some(path_params(r.path)));
    if let Some(q) = r.doc.query {
        op = op.parameters(Some(q()));
    }
    op = match &r.doc.request {
        Request::None => op,
        Request::Json { schema, required } => {
            let body = RequestBodyBuilder::new()
                .content("application/json", Content::new(Some(schema(components))))
                .required(Some(if *required {
                    Required::True
                } else {
                    Required::False
                }));
            op.request_body(Some(body.build()))
        }
        Request::AnyObject => {
            let any = ObjectBuilder::new().schema_type(Type::Object);
            let body = RequestBodyBuilder::new()
                .content("application/json", Content::new(Some(any)))
                .required(Some(Required::True));
            op.request_body(Some(body.build()))
        }
    };
    if let Some(ok) = ok_response(&r.doc.ok, components) {
        op = op.response("200", ok);
    }
    for (status, codes) in error_statuses(r.doc.errors) {
        op = op.response(status.to_string(), error_response(status, &codes));
    }
    op.build()
}

/// `get /v1/runs/{id}/events` → `get_v1_runs_id_events`.
fn operation_id(r: &Route) -> String {
    let mut id = r.method.to_string();
    for seg in r.path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(
            seg.chars()
                .filter(|c| !matches!(c, '{' | '}'))
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

fn path_params(path: &str) -> Vec<Parameter> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let mut schema = ObjectBuilder::new().schema_type(Type::String);
            if path.starts_with("/v1/sessions/") && name == "id" {
                // What `sessions::check_session_id` accepts.
                schema = schema.pattern(Some(r"^(?!\.\.?$)[A-Za-z0-9._-]{1,128}$"));
            }
            if matches!(name, "stage" | "name") {
                // What `output::check_artifact_name` accepts (its limit is
                // 255 bytes; maxLength counts characters).
                schema = schema
                    .pattern(Some(r"^(?!\.$)(?!.*\.\.)[^/\\\x00-\x1f\x7f-\x9f]+$"))
                    .max_length(Some(255))
                    .description(Some(
                        "No `/`, `\\`, `..` or control characters, not `.`; at most 255 bytes",
                    ));
            }
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(schema))
                .build()
        })
        .collect()
}

fn json(schema: impl Into<RefOr<Schema>>) -> Content {
    Content::new(Some(schema))
}

fn ok_response(answer: &Answer, components: &mut Components) -> Option<Response> {
    let r = ResponseBuilder::new().description("OK");
    let r = match answer {
        Answer::Json(schema) => r.content("application/json", json(schema(components))),
        Answer::JsonArray(schema) => r.content(
            "application/json",
            json(ArrayBuilder::new().items(schema(components))),
        ),
        Answer::EventsOrSse(schema) => r
            .description(
                "The events as a JSON array; with `Accept: text/event-stream`, \
                 an SSE stream (`id:` event id, `event:` type, `data:` the event as JSON) \
                 that ends with the run's terminal event",
            )
            .content(
                "application/json",
                json(ArrayBuilder::new().items(schema(components))),
            )
            .content(
                "text/event-stream",
                json(ObjectBuilder::new().schema_type(Type::String)),
            ),
        Answer::OutputFile => r
            .description(
                "The stage's output file: `application/json` when it parses as JSON, \
                 else `application/octet-stream`",
            )
            .content("application/json", json(any_value()))
            .content("application/octet-stream", json(bytes())),
        Answer::Artifact => r
            .description(
                "The artifact's bytes, with the media type its manifest entry names \
                 (any value: a JSON artifact is JSON)",
            )
            .content("*/*", json(any_value())),
        Answer::OpenApi => r.content("application/json", json(openapi_schema())),
        Answer::Text => r.content(
            "text/plain",
            json(ObjectBuilder::new().schema_type(Type::String)),
        ),
        Answer::Coming => return None,
    };
    Some(r.build())
}

fn any_value() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
            .description(Some("Any JSON value"))
            .build(),
    )
}

fn bytes() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .build(),
    )
}

fn openapi_schema() -> Schema {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let object = || ObjectBuilder::new().schema_type(Type::Object);
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("An OpenAPI 3.1 document"))
            .property("openapi", string())
            .property("info", object())
            .property("paths", object())
            .property("components", object())
            .required("openapi")
            .required("info")
            .required("paths")
            .build(),
    )
}

/// The route's codes and the common ones, grouped by HTTP status.
fn error_statuses(route: &[Code]) -> BTreeMap<u16, Vec<Code>> {
    let mut by_status: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for &c in route.iter().chain(COMMON) {
        let codes = by_status.entry(c.status().as_u16()).or_default();
        if !codes.contains(&c) {
            codes.push(c);
        }
    }
    by_status
}

/// The error envelope with `code` narrowed to `codes`.
fn error_response(status: u16, codes: &[Code]) -> Response {
    let names: Vec<serde_json::Value> = codes
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let listed = names
        .iter()
        .filter_map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let narrowed = ObjectBuilder::new().property(
        "code",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names)),
    );
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name(ApiError::name()))
        .item(narrowed);
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    ResponseBuilder::new()
        .description(format!("{reason}: {listed}"))
        .content("application/json", json(schema))
        .build()
}
