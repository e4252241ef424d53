//! The HTTP API: one module per endpoint group, each with its own `router()`.
//!
//! [`app`] assembles them with the middleware every request goes through; [`serve`] runs it until
//! the shutdown token fires. The v1 routes are also served unversioned, for older sensors; v2 adds
//! bulk ingestion, the data teams' read side and long polls beside them.

pub mod access;
pub mod bulk;
pub mod changes;
pub mod dashboard;
pub mod encoding;
pub mod envelope;
pub mod health;
pub mod ingest;
pub mod json;
pub mod openapi;
pub mod query;
pub mod server;
pub mod session;
pub mod sites;
pub mod typescript;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use crate::state::{AppState, Settings};
use access::Routes;

/// The v1 API: frozen; later versions are added beside it.
fn v1() -> Routes {
    Routes::new().merge(sites::router()).merge(ingest::router())
}

/// The v2 API: bulk ingestion, the read side for data teams, long polls and dashboard sessions.
fn v2(settings: &Settings) -> Routes {
    Routes::new()
        .merge(bulk::router(settings.max_bulk_body_bytes))
        .merge(query::router())
        .merge(changes::router())
        .merge(session::router())
}

/// Every route of the service with its access rule.
pub fn routes(settings: &Settings) -> Routes {
    Routes::new()
        .merge(health::router())
        .merge(dashboard::router())
        .merge(openapi::router())
        .nest("/v1", v1())
        .nest("/v2", v2(settings))
        .merge(v1())
}

/// The whole service as a router, ready to serve or to test.
pub fn app(state: AppState) -> Router {
    let (router, table) = routes(&state.settings).into_parts();
    with_middleware(router, table, state)
}

/// Only the operational endpoints (`/health`, `/ready`, `/metrics`), open, for a listener that only
/// operators reach (`plume serve --ops-listen`, `plume relay --listen`).
pub fn operations_app(state: AppState) -> Router {
    let (router, table) = health::open_router().into_parts();
    with_middleware(router, table, state)
}

fn with_middleware(router: Router<AppState>, table: access::AccessTable, state: AppState) -> Router {
    let body_limit = state.settings.max_body_bytes;
    let request_timeout = state.settings.limits.request_timeout;
    let guard = access::Guard {
        state: state.clone(),
        table: Arc::new(table),
    };
    let allowed_hosts: Option<Arc<[String]>> = state.settings.allowed_hosts.as_deref().map(Arc::from);
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // After routing (so it knows the route's rule) and before any body is read.
        .layer(axum::middleware::from_fn(move |request, next| {
            server::request_timeout(request_timeout, request, next)
        }))
        .layer(axum::middleware::from_fn_with_state(guard, access::authorize))
        .layer(DefaultBodyLimit::max(body_limit))
        // Inside the request-id layer, so even a panic answers in the envelope with its request id.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(envelope::request_id))
        .with_state(state);
    match allowed_hosts {
        // Outermost: a request for another host is refused before anything else looks at it.
        Some(allowed) => router.layer(axum::middleware::from_fn(move |request, next| {
            server::check_host(allowed.clone(), request, next)
        })),
        None => router,
    }
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves `app(state)` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Long polls would hold a graceful shutdown for up to a minute: they are answered at once.
    let (changes, auth) = (state.changes.clone(), state.auth.clone());
    let closing = shutdown.clone();
    tokio::spawn(async move {
        closing.cancelled().await;
        changes.close();
        auth.close();
    });
    let limits = state.settings.limits;
    server::serve(listener, app(state), shutdown, limits).await
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    server::serve(listener, router, shutdown, server::ServeLimits::default()).await
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[tokio::test]
    async fn a_panic_is_answered_in_the_envelope() {
        let response = panic_response(Box::new("boom"));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "INTERNAL");
        assert_eq!(body["error"]["message"], "internal error");
    }
}
