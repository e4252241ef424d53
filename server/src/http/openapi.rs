//! `/openapi.json` and `/api/docs`: the API's OpenAPI 3.1 document, generated from the handlers'
//! annotations and the very types they serialise, and a reference page that renders it (Swagger
//! UI, vendored and embedded like the dashboard, so it works offline).
//!
//! [`document`] assembles the endpoint modules' parts the way [`super::routes`] assembles the
//! router (v1 under `/v1` and again unversioned, v2 under `/v2`), then adds what every route shares
//! from the router's own table: each operation's security from its access [`Rule`], the errors any
//! request may meet (401, 403 and 429 behind a credential; 421, 500 and 503 anywhere), the
//! `X-Request-Id` header both ways, and the links that lead from a new site to its readings.

pub(crate) mod schemas;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa::OpenApi;

use super::access::{AccessTable, Routes};
use super::{bulk, changes, dashboard, health, ingest, query, session, sites};
use crate::auth::Rule;
use crate::state::AppState;

/// The document's and the reference page's routes.
pub fn router() -> Routes {
    Routes::new()
        .get("/openapi.json", Rule::Open, document_json)
        .get("/api/docs", Rule::Open, reference_page)
}

/// These routes' part of the API document.
#[derive(Debug, OpenApi)]
#[openapi(paths(document_json, reference_page))]
pub struct Api;

/// The API's OpenAPI 3.1 document (this document).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "reference",
    responses((status = 200, description = "The document.", content_type = "application/json", body = Object))
)]
async fn document_json(State(state): State<AppState>) -> Response {
    static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        let (_, table) = super::routes(&state.settings).into_parts();
        serde_json::to_vec(&document(&table)).expect("the document serialises")
    });
    (
        [(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-cache")],
        body.clone(),
    )
        .into_response()
}

/// The API reference: this document, rendered.
#[utoipa::path(
    get,
    path = "/api/docs",
    tag = "reference",
    responses((status = 200, description = "The reference page.", content_type = "text/html", body = String))
)]
async fn reference_page() -> Response {
    dashboard::page(include_bytes!("../../../dashboard/api-docs/index.html"))
}

/// The v1 routes' part (served under `/v1` and unversioned).
fn v1() -> utoipa::openapi::OpenApi {
    let mut api = sites::Api::openapi();
    api.merge(ingest::Api::openapi());
    api
}

/// The v2 routes' part (served under `/v2`).
fn v2() -> utoipa::openapi::OpenApi {
    let mut api = bulk::Api::openapi();
    api.merge(query::Api::openapi());
    api.merge(changes::Api::openapi());
    api.merge(session::Api::openapi());
    api
}

/// The whole document, for the routes of `table` (the router's).
pub fn document(table: &AccessTable) -> Value {
    let mut api = Api::openapi();
    api.merge(health::Api::openapi());
    api.merge(dashboard::Api::openapi());
    let mut api = api.nest("/v1", v1()).nest("/v2", v2());
    api.merge(v1());
    let mut document = serde_json::to_value(&api).expect("the document serialises");
    document["info"] = json!({
        "title": "plume",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Exact, retry-safe time-series storage for methane emission readings. \
            Every body is JSON in one envelope (`data` and `meta`, or `error` and `meta`); \
            quantities are kilograms as strings with six decimals. See docs/API.md.",
        "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
    });
    name_operations(&mut document);
    for declared in table.declared() {
        let path = declared.path.replace("{*", "{");
        let method = declared.method.as_str().to_ascii_lowercase();
        if let Some(operation) = document["paths"][&path].get_mut(&method) {
            share(operation, declared.rule);
        }
    }
    document["components"]["securitySchemes"] = json!({
        "bearer": { "type": "http", "scheme": "bearer",
                    "description": "A token from `plume tokens create`." },
        "basic": { "type": "http", "scheme": "basic",
                   "description": "The token as the password (any user name), for devices that only speak Basic." },
        "session": { "type": "apiKey", "in": "cookie", "name": super::access::SESSION_COOKIE,
                     "description": "The dashboard's session (`POST /v2/session`); an unsafe request must carry the server's own `Origin`." },
    });
    link(&mut document);
    document
}

/// Every operation of `document` with its method and path.
fn operations(document: &mut Value) -> impl Iterator<Item = (String, &str, &mut Value)> {
    let paths = document["paths"].as_object_mut().expect("paths").iter_mut();
    paths.flat_map(|(path, item)| {
        let methods = item.as_object_mut().expect("a path item").iter_mut();
        methods
            .filter(|(method, _)| ["get", "post", "delete", "put", "patch"].contains(&method.as_str()))
            .map(move |(method, operation)| (path.clone(), method.as_str(), operation))
    })
}

/// Operation ids are the handlers' names, which the same handler under several paths repeats:
/// `v1_` and `v2_` before those under `/v1` and `/v2`, `_unversioned` after v1's other copy.
fn name_operations(document: &mut Value) {
    let paths: Vec<String> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    for (path, _, operation) in operations(document) {
        let handler = operation["operationId"].as_str().unwrap_or_default().to_owned();
        let id = if let Some(version) = ["v1", "v2"]
            .into_iter()
            .find(|v| path.starts_with(&format!("/{v}/")))
        {
            format!("{version}_{handler}")
        } else if paths.contains(&format!("/v1{path}")) {
            format!("{handler}_unversioned")
        } else {
            handler
        };
        operation["operationId"] = Value::String(id);
    }
}

/// Who `rule` lets in, in words.
fn access(rule: Rule) -> &'static str {
    match rule {
        Rule::Open => "open: no credential needed",
        Rule::AnyClient => "any client",
        Rule::Metrics => "`metrics` and `admin` clients",
        Rule::Admin => "`admin` clients",
        Rule::Read => "`read` and `admin` clients, for the sites in their scope",
        Rule::Export => "`read` clients with the export permission, and `admin` clients",
        Rule::Ingest => "`ingest` and `admin` clients, for the sites (and sources) they may write",
        Rule::SiteMetrics => "`read`, `ingest` and `admin` clients, for the sites in their scope",
    }
}

/// An error answer: the envelope, with `headers` beside `X-Request-Id`.
fn error_response(description: &str, headers: Value) -> Value {
    json!({
        "description": description,
        "headers": headers,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorEnvelope" } } },
    })
}

fn header(description: &str, required: bool) -> Value {
    json!({ "description": description, "required": required, "schema": { "type": "string" } })
}

/// Adds to `operation` what its access `rule` and the middleware every request passes make of it.
fn share(operation: &mut Value, rule: Rule) {
    let description = operation["description"].as_str().unwrap_or_default().to_owned();
    let access = format!("**Access:** {}.", access(rule));
    operation["description"] = Value::String(if description.is_empty() {
        access
    } else {
        format!("{description}\n\n{access}")
    });
    let mut common = vec![
        (
            "421",
            error_response(
                "A `Host` this listener does not serve (a loopback listener serves only loopback names).",
                json!({}),
            ),
        ),
        (
            "500",
            error_response("Anything else; opaque, logged with the request id.", json!({})),
        ),
        (
            "503",
            error_response(
                "The database cannot be reached now, or the service is at one of its limits (the request took too long; too many waiting or uploading); retrying later is safe.",
                json!({ "Retry-After": header("Seconds to wait, when the service is at a limit.", false) }),
            ),
        ),
    ];
    if rule != Rule::Open {
        common.extend([
            (
                "401",
                error_response(
                    "No credential, or one that is malformed, unknown, expired or revoked.",
                    json!({ "WWW-Authenticate": header("`Bearer realm=\"plume\"`", true) }),
                ),
            ),
            (
                "403",
                error_response(
                    "The client's kind may not call this route, or a cookie-borne write came from another `Origin`.",
                    json!({}),
                ),
            ),
            (
                "429",
                error_response(
                    "The client is over one of its limits.",
                    json!({ "Retry-After": header("Seconds to wait.", true) }),
                ),
            ),
        ]);
        operation["security"] = json!([{ "bearer": [] }, { "basic": [] }, { "session": [] }]);
    }
    let responses = operation["responses"].as_object_mut().expect("responses");
    for (status, response) in common {
        responses.entry(status).or_insert(response);
    }
    for (status, response) in responses.iter_mut() {
        let headers = response
            .as_object_mut()
            .expect("a response")
            .entry("headers")
            .or_insert_with(|| json!({}));
        // A 421 is answered before the request is given its id.
        let required = status != "421";
        headers["X-Request-Id"] = header("The request's id: the client's own, or a fresh UUID.", required);
    }
    let parameters = operation
        .as_object_mut()
        .expect("an operation")
        .entry("parameters")
        .or_insert_with(|| json!([]));
    parameters.as_array_mut().expect("parameters").push(json!({
        "name": "X-Request-Id",
        "in": "header",
        "required": false,
        "description": "The request's id, echoed back and logged, when 1 to 128 visible ASCII characters.",
        "schema": { "type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[\\x21-\\x7e]+$" },
    }));
}

/// The links that take a stateful client from a new site to writing and reading its data.
fn link(document: &mut Value) {
    let site = "$response.body#/data/id";
    let created_at = "$response.body#/data/created_at";
    let reads = |id: &str| {
        json!({
            "GetSite": { "operationId": "v1_get_site", "parameters": { "id": id } },
            "GetSiteMetrics": { "operationId": "v1_get_metrics", "parameters": { "id": id } },
            "GetLiveMetrics": { "operationId": "v2_get_metrics", "parameters": { "id": id, "wait": "0" } },
            "GetSeries": { "operationId": "v2_get_series", "parameters": {
                "id": id, "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "bucket": "month" } },
            "GetReadings": { "operationId": "v2_get_readings", "parameters": { "id": id } },
        })
    };
    let mut from_site = reads(site);
    let writes = json!({
        "IngestReadings": { "operationId": "v1_ingest", "requestBody": {
            "site_id": site,
            "readings": [{ "timestamp": created_at, "value": "1.5", "source_id": "linked" }],
        } },
        "BulkIngestReadings": { "operationId": "v2_ingest", "requestBody": {
            "readings": [{ "site_id": site, "timestamp": created_at, "value": "2.25", "source_id": "linked-bulk" }],
        } },
    });
    from_site
        .as_object_mut()
        .expect("links")
        .extend(writes.as_object().expect("links").clone());
    let links: [(&str, &str, Value); 5] = [
        ("/v1/sites", "201", from_site.clone()),
        ("/sites", "201", from_site),
        ("/v1/ingest", "201", reads("$response.body#/data/site_id")),
        ("/ingest", "201", reads("$response.body#/data/site_id")),
        ("/v2/ingest", "201", reads("$response.body#/data/sites/0/site_id")),
    ];
    for (path, status, links) in links {
        document["paths"][path]["post"]["responses"][status]["links"] = links;
    }
}

/// The operations of `document`, as `(method, path)` (for the tests).
#[cfg(test)]
fn operation_keys(document: &mut Value) -> Vec<(String, String)> {
    operations(document)
        .map(|(path, method, _)| (method.to_ascii_uppercase(), path))
        .collect()
}
