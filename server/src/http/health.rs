//! Operational endpoints: `/health` (the process is up), `/ready` (the database answers and is
//! migrated), `/metrics` (Prometheus text).

use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::json;

use super::access::Routes;
use super::envelope::Envelope;
use super::openapi::schemas::{ErrorEnvelope, StatusEnvelope};
use crate::auth::Rule;
use crate::db::citus::Topology;
use crate::db::migrate;
use crate::error::ApiError;
use crate::outbox::{self, admin::OutboxStatus};
use crate::state::AppState;

/// The operational routes: `/health` and `/ready` open, `/metrics` for metrics and admin clients.
pub fn router() -> Routes {
    Routes::new()
        .get("/health", Rule::Open, health)
        .get("/ready", Rule::Open, ready)
        .get("/metrics", Rule::Metrics, metrics)
}

/// The same routes, all open, for a private listener (`--ops-listen`) or `plume relay --listen`.
pub fn open_router() -> Routes {
    Routes::new()
        .get("/health", Rule::Open, health)
        .get("/ready", Rule::Open, ready)
        .get("/metrics", Rule::Open, metrics)
}

/// These routes' part of the API document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(health, ready, metrics))]
pub struct Api;

/// The process is up; touches no database.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = StatusEnvelope))
)]
async fn health() -> Envelope<serde_json::Value> {
    Envelope::ok(json!({ "status": "ok" }))
}

/// How long one answer of `/ready` is reused: probes from many load balancers cost one query a
/// second, whoever sends them (the route is open).
const READY_CACHED_FOR: Duration = Duration::from_secs(1);

/// How long `/ready` waits for the database: one that stops answering (a silent network) makes
/// it answer 503 within this, rather than hang the probe until the pool's acquire timeout or
/// forever on a connection whose peer went quiet.
const READY_CHECK_LIMIT: Duration = Duration::from_secs(2);

/// The latest readiness check and when it ran.
#[derive(Debug, Default)]
pub struct ReadyCache(Mutex<Option<(Instant, bool)>>);

/// Ready when the database answers with the current schema. Says only that (and, loudly, when
/// authentication is off; and on a Citus coordinator, that it is one).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers and has every migration.", body = StatusEnvelope),
        (status = 503, description = "It does not.", body = ErrorEnvelope),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Envelope<serde_json::Value>, ApiError> {
    let cached = *state.ready.0.lock().unwrap_or_else(|p| p.into_inner());
    let ready = match cached {
        Some((at, ready)) if at.elapsed() < READY_CACHED_FOR => ready,
        _ => {
            let ready = match tokio::time::timeout(READY_CHECK_LIMIT, migrate::is_current(&state.pool)).await
            {
                Ok(Ok(current)) => {
                    if !current {
                        tracing::warn!("database schema is not current");
                    }
                    current
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "readiness check: the database does not answer");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        limit_ms = READY_CHECK_LIMIT.as_millis() as u64,
                        "readiness check: the database did not answer in time"
                    );
                    false
                }
            };
            *state.ready.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ready));
            ready
        }
    };
    if !ready {
        return Err(ApiError::Unavailable(None));
    }
    let mut answer = json!({ "status": "ready" });
    if !state.auth.enforced() {
        answer["auth"] = json!("off: every caller acts as an admin; for local experiments only");
    }
    if state.settings.topology == Topology::Citus {
        answer["database"] = json!("citus: tables distributed by site");
    }
    Ok(Envelope::ok(answer))
}

/// How long the database's gauges on `/metrics` are reused: however often it is scraped (by
/// several Prometheus servers, or by a client with a metrics token), they cost a few queries every
/// few seconds.
const GAUGES_CACHED_FOR: Duration = Duration::from_secs(5);

/// The database's gauges as last rendered, and when.
#[derive(Debug, Default)]
pub struct GaugeCache(Mutex<Option<(Instant, String)>>);

/// The process's counters, then the outbox and partition gauges, which are the database's (the
/// same from every instance; read at most every [`GAUGES_CACHED_FOR`]); when the database does not
/// answer, the gauges are left out rather than the page.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics: the process's counters, the outbox and partition gauges.",
    description = "The database's gauges are the same from every instance and read at most every 5 s; \
        when the database does not answer they are left out rather than the page.",
    responses((status = 200, description = "Prometheus text.", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut page = state.metrics.render();
    state.changes.render_metrics(&mut page);
    state.auth.render_metrics(&mut page);
    let cached = state.gauges.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let gauges = match cached {
        Some((at, gauges)) if at.elapsed() < GAUGES_CACHED_FOR => gauges,
        _ => {
            let gauges = database_gauges(&state.pool).await;
            *state.gauges.0.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), gauges.clone()));
            gauges
        }
    };
    page.push_str(&gauges);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], page)
}

/// The outbox and partition gauges, read from the database.
async fn database_gauges(pool: &sqlx::PgPool) -> String {
    let mut page = String::new();
    match outbox::admin::status(pool).await {
        Ok(status) => render_outbox_gauges(&mut page, &status),
        Err(error) => tracing::warn!(%error, "reading the outbox status for /metrics failed"),
    }
    match partition_gauges(pool).await {
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
    page
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
