//! Operational endpoints: `/health` (the process is up), `/ready` (the database answers and is
//! migrated), `/metrics` (Prometheus text).

use std::fmt::Write;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::envelope::Envelope;
use crate::db::migrate;
use crate::error::ApiError;
use crate::outbox::{self, admin::OutboxStatus};
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

/// The process's counters, then the outbox gauges, which are the database's (the same from every
/// instance); when the database does not answer, the gauges are left out rather than the page.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut page = state.metrics.render();
    state.changes.render_metrics(&mut page);
    match outbox::admin::status(&state.pool).await {
        Ok(status) => render_outbox_gauges(&mut page, &status),
        Err(error) => tracing::warn!(%error, "reading the outbox status for /metrics failed"),
    }
    match partition_gauges(&state.pool).await {
        Ok((months_ahead, default_rows)) => {
            let gauges = [
                (
                    "plume_partitions_months_ahead",
                    "Whole months after the current one with a measurements partition.",
                    months_ahead,
                ),
                (
                    "plume_partition_default_rows",
                    "Rows in the measurements default partition (should be 0).",
                    default_rows,
                ),
            ];
            for (name, help, value) in gauges {
                let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
            }
        }
        Err(error) => tracing::warn!(%error, "reading the partitions for /metrics failed"),
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], page)
}

/// Months premade ahead and rows in the default partition, read from the catalog and the (empty,
/// so cheap to count) default partition.
async fn partition_gauges(pool: &sqlx::PgPool) -> Result<(i64, i64), sqlx::Error> {
    let report = partitioning::partition_report(pool).await?;
    Ok((
        partitioning::months_ahead(&report, chrono::Utc::now()),
        report.default_rows,
    ))
}

fn render_outbox_gauges(page: &mut String, status: &OutboxStatus) {
    let gauges = [
        (
            "plume_outbox_pending",
            "Events not yet delivered.",
            status.pending as f64,
        ),
        (
            "plume_outbox_in_flight",
            "Pending events being delivered now.",
            status.in_flight as f64,
        ),
        ("plume_outbox_dead", "Dead-lettered events.", status.dead as f64),
        (
            "plume_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered event (0 when none).",
            status.oldest_pending_age_seconds.unwrap_or(0.0),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
}
