//! `/v2/changes` and `/v2/sites/{id}/metrics`: long polls over the change feed ([`crate::changes`]).

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;

use super::envelope::Envelope;
use super::query::query;
use super::sites::parse_site_id;
use crate::changes::{Snapshot, WaitError, MAX_WAIT};
use crate::error::{ApiError, FieldError};
use crate::sites::SiteMetrics;
use crate::state::AppState;

/// The long-poll routes, relative to `/v2`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/changes", get(get_changes))
        .route("/sites/{id}/metrics", get(get_metrics))
}

#[derive(Debug, Deserialize)]
struct ChangesParams {
    cursor: Option<String>,
    wait: Option<String>,
}

/// The sites changed since `cursor` (every site without one), each with its metrics; waits up to
/// `wait` seconds for one if none has.
#[tracing::instrument(skip_all)]
async fn get_changes(
    State(state): State<AppState>,
    params: Result<Query<ChangesParams>, QueryRejection>,
) -> Result<Envelope<Vec<SiteMetrics>>, ApiError> {
    let params = query(params)?;
    let mut problems = Vec::new();
    let cursor = match params.cursor.as_deref() {
        None | Some("") => Some(None),
        Some(text) => Snapshot::from_cursor(text).map(Some),
    }
    .unwrap_or_else(|| {
        problems.push(FieldError::new("cursor", "is not a cursor this API issued"));
        None
    });
    let wait = parse_wait(params.wait.as_deref(), &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let since = cursor.clone().unwrap_or_else(Snapshot::origin);
    let head = state.changes.read(&since, None).await?;
    if since.is_ahead_of(head.snapshot()) {
        return Err(ApiError::invalid(
            "cursor",
            "was issued by another database, or by this one before it was restored to an earlier \
             state; start again without a cursor",
        ));
    }
    let changed: Vec<SiteMetrics> = head
        .changed_since(&since)
        .expect("read from the cursor's own horizon")
        .cloned()
        .collect();
    // Without a cursor the answer is every site, at once.
    if !changed.is_empty() || cursor.is_none() {
        return Ok(answer(changed, head.snapshot()));
    }
    if wait.is_zero() {
        return Ok(answer(changed, &since));
    }
    let waited = state
        .changes
        .wait(head.snapshot().clone(), None, |_| true, jitter(wait))
        .await
        .map_err(wait_error)?;
    Ok(match waited {
        Some((changed, snapshot)) => answer(changed, &snapshot),
        // Nothing changed: the same cursor again.
        None => answer(Vec::new(), &since),
    })
}

fn answer(changed: Vec<SiteMetrics>, next: &Snapshot) -> Envelope<Vec<SiteMetrics>> {
    Envelope::ok(changed).meta("cursor", Value::String(next.to_cursor()))
}

#[derive(Debug, Deserialize)]
struct MetricsParams {
    version: Option<String>,
    wait: Option<String>,
}

/// A site's metrics: at once if its version is above `version` (or none is given), else when it
/// changes, or after `wait` seconds as they are.
#[tracing::instrument(skip_all)]
async fn get_metrics(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<MetricsParams>, QueryRejection>,
) -> Result<Envelope<SiteMetrics>, ApiError> {
    let site = parse_site_id(id)?;
    let params = query(params)?;
    let mut problems = Vec::new();
    let version = match params.version.as_deref() {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(version) if version >= 0 => Some(version),
            _ => {
                problems.push(FieldError::new("version", "must be a non-negative integer"));
                None
            }
        },
    };
    let wait = parse_wait(params.wait.as_deref(), &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let head = state.changes.read(&Snapshot::origin(), Some(site)).await?;
    let current = head
        .changed_since(&Snapshot::origin())
        .expect("read from the origin's horizon")
        .next()
        .cloned()
        .ok_or_else(|| ApiError::SiteNotFound(site.get().to_string()))?;
    let Some(known) = version.filter(|known| current.version <= *known && !wait.is_zero()) else {
        return Ok(Envelope::ok(current));
    };
    let waited = state
        .changes
        .wait(
            head.snapshot().clone(),
            Some(site),
            |metrics| metrics.version > known,
            jitter(wait),
        )
        .await
        .map_err(wait_error)?;
    Ok(Envelope::ok(match waited {
        Some((mut changed, _)) => changed.swap_remove(0),
        None => current,
    }))
}

/// `wait`: seconds, 0 when absent, at most [`MAX_WAIT`] (longer asks are shortened to it).
fn parse_wait(text: Option<&str>, problems: &mut Vec<FieldError>) -> Duration {
    let Some(text) = text else {
        return Duration::ZERO;
    };
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Duration::from_secs_f64(seconds).min(MAX_WAIT)
        }
        _ => {
            problems.push(FieldError::new(
                "wait",
                format!("must be a number of seconds from 0 to {}", MAX_WAIT.as_secs()),
            ));
            Duration::ZERO
        }
    }
}

/// Up to 10% shorter, so that clients which started together do not stay in step.
fn jitter(wait: Duration) -> Duration {
    wait.mul_f64(1.0 - rand::thread_rng().gen_range(0.0..0.1))
}

fn wait_error(error: WaitError) -> ApiError {
    match error {
        WaitError::TooManyWaiters(_) => ApiError::Busy(format!("{error}; retry later")),
        WaitError::Database(error) => error.into(),
    }
}
