//! `/v2/changes` and `/v2/sites/{id}/metrics`: long polls over the change feed ([`crate::changes`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::access::Routes;
use super::envelope::Envelope;
use super::openapi::schemas::{ChangesEnvelope, ErrorEnvelope, SiteMetricsEnvelope};
use super::query::query;
use super::sites::readable_site;
use crate::auth::{Principal, Rule};
use crate::changes::{listing, Answer, Head, Snapshot, WaitError, Watch, MAX_WAIT};
use crate::error::{ApiError, FieldError};
use crate::state::AppState;

/// The long-poll routes, relative to `/v2`.
pub fn router() -> Routes {
    // Metrics only, of the sites in scope: what an ingest client may read as well.
    Routes::new().get("/changes", Rule::SiteMetrics, get_changes).get(
        "/sites/{id}/metrics",
        Rule::SiteMetrics,
        get_metrics,
    )
}

/// These routes' part of the API document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(get_changes, get_metrics))]
pub struct Api;

#[derive(Debug, Deserialize)]
struct ChangesParams {
    cursor: Option<String>,
    wait: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// The sites changed since `cursor` (every site without one), each with its metrics; waits up to
/// `wait` seconds for one if none has.
#[utoipa::path(
    get,
    path = "/changes",
    tag = "live",
    params(
        ("cursor" = Option<String>, Query,
         description = "The last answer's `meta.cursor`; without it, every site in scope, a page at a time."),
        ("wait" = Option<f64>, Query, minimum = 0,
         description = "Seconds to wait for a change (0, the default: answer at once; at most 60, longer is shortened)."),
        ("after" = Option<i64>, Query, minimum = 0, description = "The listing's next page: the last answer's `meta.next_after`."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Sites per listing page (default 1,000)."),
    ),
    responses(
        (status = 200, description = "The sites changed since the cursor (`[]` on timeout), and the cursor to send next.",
         body = ChangesEnvelope),
        (status = 422, description = "`details` names every bad parameter (a cursor of another database too).",
         body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn get_changes(
    State(state): State<AppState>,
    principal: Principal,
    params: Result<Query<ChangesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
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
    let after = parse_number(params.after.as_deref(), "after", 0..=i64::MAX, &mut problems);
    let limit = parse_number(
        params.limit.as_deref(),
        "limit",
        1..=listing::MAX_PAGE,
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    // The first answer, or its continuation: every site in scope, a page at a time.
    if cursor.is_none() || after.is_some() {
        let page = Page {
            after: after.unwrap_or(0),
            limit: limit.unwrap_or(listing::MAX_PAGE),
        };
        return list(&state, &principal, cursor, page).await;
    }
    // Each client sees only the sites in its scope: its answers are built for its scope alone.
    let watch = match principal.client.scope.listed() {
        None => Watch::Every,
        Some(sites) => Watch::In(Arc::from(sites)),
    };
    let since = cursor.clone().unwrap_or_else(Snapshot::origin);
    let (found, head) = look(&state, &principal, cursor.as_ref(), &since, wait, &watch).await?;
    if let Some(found) = found {
        return Ok(answer(&found.data, &found.cursor));
    }
    if wait.is_zero() {
        return Ok(answer(empty(), &since.to_cursor()));
    }
    // Nothing changed between the cursor and the head: wait from the later of the two.
    let seen = if head.snapshot().saw_all_of(&since) {
        head.snapshot().clone()
    } else {
        since.clone()
    };
    let waited = wait_for(&state, &principal, seen, watch, wait).await?;
    Ok(match waited {
        Some(found) => answer(&found.data, &found.cursor),
        // Nothing changed: the same cursor again.
        None => answer(empty(), &since.to_cursor()),
    })
}

/// What changed since `since`, and the head that says so. Most long polls come back with the
/// cursor the last answer gave, which this process's latest head answers from memory (a change it
/// does not hold yet wakes the poll when it does). Any other cursor (none, an older one, one newer
/// than the head) and every poll that will not wait, which must see the latest commits, are read
/// from the database.
async fn look(
    state: &AppState,
    principal: &Principal,
    cursor: Option<&Snapshot>,
    since: &Snapshot,
    wait: Duration,
    watch: &Watch,
) -> Result<(Option<Arc<Answer>>, Arc<Head>), ApiError> {
    let from_memory = cursor.filter(|_| !wait.is_zero()).and_then(|since| {
        let head = state.changes.latest()?;
        if since.is_ahead_of(head.snapshot()) {
            return None;
        }
        Some((head.answer(since, watch)?, head))
    });
    if let Some(known) = from_memory {
        return Ok(known);
    }
    principal.limits.feed_read().map_err(ApiError::RateLimited)?;
    let head = Arc::new(state.changes.read(since, None).await?);
    if since.is_ahead_of(head.snapshot()) {
        return Err(ApiError::invalid(
            "cursor",
            "was issued by another database, or by this one before it was restored to an earlier \
             state; start again without a cursor",
        ));
    }
    let found = head
        .answer(since, watch)
        .expect("read from the cursor's own horizon");
    Ok((found, head))
}

/// Where a page of the listing starts, and how many sites it holds at most.
#[derive(Debug, Clone, Copy)]
struct Page {
    after: i64,
    limit: i64,
}

/// A page of every site in scope. The first page's cursor is the snapshot it was read in; a
/// continuation (`cursor` given) answers with that same cursor, so whichever page a client last
/// read, it polls from the first page's snapshot and misses no change made while it paged.
async fn list(
    state: &AppState,
    principal: &Principal,
    cursor: Option<Snapshot>,
    page: Page,
) -> Result<Response, ApiError> {
    principal.limits.feed_read().map_err(ApiError::RateLimited)?;
    let scope = principal.client.scope.listed();
    let read = listing::page(
        &state.pool,
        state.settings.topology,
        page.after,
        page.limit,
        scope,
    )
    .await?;
    let cursor = cursor.unwrap_or(read.snapshot);
    let data = serde_json::value::to_raw_value(&read.sites).expect("metrics serialise");
    let mut envelope = Envelope::ok(&*data).meta("cursor", Value::String(cursor.to_cursor()));
    if let Some(next) = read.next_after {
        envelope = envelope.meta("next_after", Value::from(next));
    }
    Ok(envelope.into_response())
}

/// An optional integer query parameter within `range`.
fn parse_number(
    text: Option<&str>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
    problems: &mut Vec<FieldError>,
) -> Option<i64> {
    let text = text.filter(|t| !t.is_empty())?;
    match text.parse::<i64>() {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            problems.push(FieldError::new(
                name,
                format!("must be an integer from {} to {}", range.start(), range.end()),
            ));
            None
        }
    }
}

fn empty() -> &'static RawValue {
    serde_json::from_str("[]").expect("[] is JSON")
}

fn answer(changed: &RawValue, next: &str) -> Response {
    Envelope::ok(changed)
        .meta("cursor", Value::String(next.to_owned()))
        .into_response()
}

#[derive(Debug, Deserialize)]
struct MetricsParams {
    version: Option<String>,
    wait: Option<String>,
}

/// A site's metrics: at once if its version is above `version` (or none is given), else when it
/// changes, or after `wait` seconds as they are.
#[utoipa::path(
    get,
    path = "/sites/{id}/metrics",
    tag = "live",
    params(
        ("id" = i64, Path, description = "The site's id."),
        ("version" = Option<i64>, Query, minimum = 0,
         description = "The version the client holds: answered when the site's is above it."),
        ("wait" = Option<f64>, Query, minimum = 0,
         description = "Seconds to wait for a newer version (0, the default: answer at once; at most 60)."),
    ),
    responses(
        (status = 200, description = "The site's metrics.", body = SiteMetricsEnvelope),
        (status = 404, description = "No such site, or not in the client's scope.", body = ErrorEnvelope),
        (status = 422, description = "`details` names every bad parameter.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn get_metrics(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<MetricsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let site = readable_site(&principal, id)?;
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
        return Ok(Envelope::ok(current).into_response());
    };
    let watch = Watch::Site { site, version: known };
    let waited = wait_for(&state, &principal, head.snapshot().clone(), watch, wait).await?;
    Ok(match waited {
        Some(found) => Envelope::ok(&*found.data).into_response(),
        None => Envelope::ok(current).into_response(),
    })
}

/// Waits as [`crate::changes::ChangeHub::wait`] does, in one of the client's long-poll slots (429
/// when it holds them all), and ends with 401 the moment its token or session stops working.
async fn wait_for(
    state: &AppState,
    principal: &Principal,
    seen: Snapshot,
    watch: Watch,
    wait: Duration,
) -> Result<Option<Arc<Answer>>, ApiError> {
    let _slot = principal.limits.long_poll_slot().map_err(ApiError::RateLimited)?;
    tokio::select! {
        waited = state.changes.wait(seen, watch, jitter(wait)) => waited.map_err(wait_error),
        () = principal.ended.cancelled() => Err(ApiError::Unauthenticated),
    }
}

/// `wait`: seconds, 0 when absent, at most [`MAX_WAIT`] (longer asks are shortened to it).
fn parse_wait(text: Option<&str>, problems: &mut Vec<FieldError>) -> Duration {
    let Some(text) = text else {
        return Duration::ZERO;
    };
    match text.parse::<f64>() {
        // Shortened before the conversion, which panics on a number of seconds too large for a
        // Duration (`wait=1e300`).
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64()))
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
