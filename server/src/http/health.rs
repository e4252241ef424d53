//! Operational endpoints: `/health` (the process is up), `/ready` (the database answers and is
//! migrated), `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::envelope::Envelope;
use crate::db::migrate;
use crate::error::ApiError;
use crate::state::AppState;

/// The operational routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn health() -> Envelope<serde_json::Value> {
    Envelope::ok(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Result<Envelope<serde_json::Value>, ApiError> {
    match migrate::is_current(&state.pool).await {
        Ok(true) => Ok(Envelope::ok(
            json!({ "status": "ready", "schema_version": migrate::latest_version() }),
        )),
        Ok(false) => {
            tracing::warn!("database schema is not current");
            Err(ApiError::Unavailable(None))
        }
        Err(error) => Err(ApiError::Unavailable(Some(error))),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
