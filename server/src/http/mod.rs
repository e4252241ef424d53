//! The HTTP API: one module per endpoint group, each with its own `router()`.
//!
//! [`app`] assembles them with the middleware every request goes through; [`serve`] runs it until
//! the shutdown token fires. The v1 routes are also served unversioned, for older sensors.

pub mod envelope;
pub mod health;
pub mod ingest;
pub mod json;
pub mod sites;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::state::AppState;

/// The v1 API: frozen; later versions are added beside it.
fn v1() -> Router<AppState> {
    Router::new().merge(sites::router()).merge(ingest::router())
}

/// The whole service as a router, ready to serve or to test.
pub fn app(state: AppState) -> Router {
    let body_limit = state.settings.max_body_bytes;
    Router::new()
        .merge(health::router())
        .nest("/v1", v1())
        .merge(v1())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(envelope::request_id))
        .with_state(state)
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
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
