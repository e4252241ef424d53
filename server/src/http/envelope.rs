//! The one JSON envelope every response body uses, and the request id it carries.
//!
//! Success: `{"data": ..., "meta": {"request_id": "..."}}`; error: `{"error": ..., "meta": {...}}`.
//! The request id is the client's `X-Request-Id` when it sent a usable one, else a fresh UUID; the
//! [`request_id`] middleware makes it available to the whole request as a task-local.

use axum::extract::Request;
use axum::http::header::{HeaderValue, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::Instrument;

/// The header carrying the request id, both ways.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id ("" outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Middleware: adopts or assigns the request id, runs the request in a span carrying it, and echoes
/// it in `X-Request-Id`.
pub async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        // Filled in once the caller is authenticated (see `access::authorize`).
        client_id = tracing::field::Empty,
        token_id = tracing::field::Empty,
    );
    let header = HeaderValue::from_str(&id).expect("request ids are visible ASCII");
    let started = std::time::Instant::now();
    let mut response = REQUEST_ID
        .scope(id, next.run(request))
        .instrument(span.clone())
        .await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "request done"
        )
    });
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER.clone(), header);
    // No response is to be sniffed into another type or framed by another site.
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers
        .entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
    response
}

/// A success envelope: `data` plus `meta` (request id and any `extra_meta`).
#[derive(Debug)]
pub struct Envelope<T> {
    /// The HTTP status to answer with.
    pub status: StatusCode,
    /// The `data` member.
    pub data: T,
    /// Members added to `meta` beside `request_id` (e.g. `next_cursor`).
    pub extra_meta: Map<String, Value>,
}

impl<T: Serialize> Envelope<T> {
    /// `200 OK` with `data`.
    pub fn ok(data: T) -> Self {
        Self::with_status(StatusCode::OK, data)
    }

    /// `status` with `data`.
    pub fn with_status(status: StatusCode, data: T) -> Self {
        Self {
            status,
            data,
            extra_meta: Map::new(),
        }
    }

    /// Adds a member to `meta`.
    pub fn meta(mut self, key: &str, value: Value) -> Self {
        self.extra_meta.insert(key.to_string(), value);
        self
    }
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        let mut meta = self.extra_meta;
        meta.insert("request_id".into(), Value::String(current_request_id()));
        #[derive(Serialize)]
        struct Body<T> {
            data: T,
            meta: Map<String, Value>,
        }
        json_response(
            self.status,
            &Body {
                data: self.data,
                meta,
            },
        )
    }
}

/// An error envelope with `error` as its `error` member.
pub fn error(status: StatusCode, error: &impl Serialize) -> Response {
    #[derive(Serialize)]
    struct Body<'a, E> {
        error: &'a E,
        meta: Meta,
    }
    #[derive(Serialize)]
    struct Meta {
        request_id: String,
    }
    let meta = Meta {
        request_id: current_request_id(),
    };
    json_response(status, &Body { error, meta })
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "could not serialise a response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                r#"{"error":{"code":"INTERNAL","message":"internal error","details":[]},"meta":{}}"#,
            )
                .into_response()
        }
    }
}
