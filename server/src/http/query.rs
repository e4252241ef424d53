//! `/v2/sites/{id}/series`, `/v2/sites/{id}/readings`, `/v2/sites/{id}/sources` and `/v2/export`:
//! the read side, for data teams and the dashboard's site page.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::access::Routes;
use super::envelope::Envelope;
use super::openapi::schemas::{ErrorEnvelope, ReadingPageEnvelope, SeriesEnvelope, SourcePageEnvelope};
use super::sites::readable_site;
use crate::auth::{Principal, Rule};
use crate::error::ApiError;
use crate::query::export::{self, ExportError};
use crate::query::params::{ExportParams, ReadingsParams, SeriesParams, SourcesParams};
use crate::query::readings::{self, StoredReading};
use crate::query::series::{self, SeriesBucket};
use crate::query::sources::{self, SourceSummary};
use crate::query::TimeRange;
use crate::sites::{self, SiteId};
use crate::state::AppState;

/// The read routes, relative to `/v2`.
pub fn router() -> Routes {
    Routes::new()
        .get("/sites/{id}/series", Rule::Read, get_series)
        .get("/sites/{id}/readings", Rule::Read, get_readings)
        .get("/sites/{id}/sources", Rule::Read, get_sources)
        .get("/export", Rule::Export, get_export)
}

/// These routes' part of the API document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(get_series, get_readings, get_sources, get_export))]
pub struct Api;

/// Sums, counts, minima and maxima per bucket, read from the hourly rollups; only buckets that
/// have readings are listed, in time order.
#[utoipa::path(
    get,
    path = "/sites/{id}/series",
    tag = "read",
    params(
        ("id" = i64, Path, description = "The site's id."),
        ("from" = String, Query, format = DateTime, example = "2026-01-01T00:00:00Z",
         description = "RFC 3339, included; the start of a bucket (UTC)."),
        ("to" = String, Query, format = DateTime, example = "2026-03-01T00:00:00Z",
         description = "RFC 3339, excluded; the start of a bucket (UTC); at most 10,000 buckets after `from`."),
        ("bucket" = Option<String>, Query, pattern = "^(hour|day|month)$", example = "month",
         description = "`hour` (the default), `day` or `month`."),
    ),
    responses(
        (status = 200, description = "The buckets that have readings.", body = SeriesEnvelope),
        (status = 404, description = "No such site, or not in the client's scope.", body = ErrorEnvelope),
        (status = 422, description = "`details` names every bad parameter.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn get_series(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Envelope<Vec<SeriesBucket>>, ApiError> {
    let site = readable_site(&principal, id)?;
    let request = query(params)?.check()?;
    let buckets = series::series(&state.pool, site, request).await?;
    if buckets.is_empty() {
        require_site(&state, site).await?;
    }
    Ok(Envelope::ok(buckets)
        .meta("site_id", site.get().into())
        .meta("bucket", request.bucket.name().into())
        .meta("from", time(request.range.from))
        .meta("to", time(request.range.to)))
}

/// A site's raw readings, a page at a time, ordered by source, then time.
#[utoipa::path(
    get,
    path = "/sites/{id}/readings",
    tag = "read",
    params(
        ("id" = i64, Path, description = "The site's id."),
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339, included (default: all time)."),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339, excluded (default: all time)."),
        ("source_id" = Option<String>, Query, description = "Only this source's readings."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 10000, description = "Readings per page (default 1,000)."),
        ("cursor" = Option<String>, Query, description = "The previous page's `meta.next_cursor`, with the same `source_id`."),
    ),
    responses(
        (status = 200, description = "A page of readings.", body = ReadingPageEnvelope),
        (status = 404, description = "No such site, or not in the client's scope.", body = ErrorEnvelope),
        (status = 422, description = "`details` names every bad parameter.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn get_readings(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadingsParams>, QueryRejection>,
) -> Result<Envelope<Vec<StoredReading>>, ApiError> {
    let site = readable_site(&principal, id)?;
    let request = query(params)?.check()?;
    let (page, next) = readings::page(&state.pool, site, &request).await?;
    if page.is_empty() {
        require_site(&state, site).await?;
    }
    let next_cursor = next.map_or(Value::Null, |cursor| Value::String(cursor.encode()));
    Ok(Envelope::ok(page).meta("next_cursor", next_cursor))
}

/// Each source of a site with its newest stored reading, a page at a time, in source id order.
#[utoipa::path(
    get,
    path = "/sites/{id}/sources",
    tag = "read",
    params(
        ("id" = i64, Path, description = "The site's id."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Sources per page (default 100)."),
        ("cursor" = Option<String>, Query, description = "The previous page's `meta.next_cursor`."),
    ),
    responses(
        (status = 200, description = "A page of sources.", body = SourcePageEnvelope),
        (status = 404, description = "No such site, or not in the client's scope.", body = ErrorEnvelope),
        (status = 422, description = "`details` names every bad parameter.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn get_sources(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<SourcesParams>, QueryRejection>,
) -> Result<Envelope<Vec<SourceSummary>>, ApiError> {
    let site = readable_site(&principal, id)?;
    let request = query(params)?.check()?;
    let (page, next) = sources::page(&state.pool, site, &request).await?;
    if page.is_empty() {
        require_site(&state, site).await?;
    }
    let next_cursor = next.map_or(Value::Null, |cursor| Value::String(cursor.encode()));
    Ok(Envelope::ok(page).meta("next_cursor", next_cursor))
}

/// Every raw reading of the range, streamed as CSV, NDJSON or Parquet, in no particular order.
///
/// CSV columns: `site_id,source_id,measured_at,value_kg`; NDJSON: one object with those members per
/// line. Once the first bytes are sent the status cannot change: a failure mid-export closes the
/// connection without the end of the chunked body.
#[utoipa::path(
    get,
    path = "/export",
    tag = "read",
    params(
        ("site_id" = Option<i64>, Query, minimum = 1,
         description = "One site's readings; without it, `from` and `to` are required and at most 31 days apart."),
        ("from" = Option<String>, Query, format = DateTime, example = "2026-01-01T00:00:00Z", description = "RFC 3339, included."),
        ("to" = Option<String>, Query, format = DateTime, example = "2026-01-02T00:00:00Z", description = "RFC 3339, excluded."),
        ("format" = Option<String>, Query, pattern = "^(csv|ndjson|parquet)$", description = "`csv` (the default), `ndjson` or `parquet`."),
        ("raw" = Option<bool>, Query,
         description = "CSV only: `true` writes source ids as stored, without the spreadsheet guard (default `false`)."),
    ),
    responses(
        (status = 200, description = "The readings, as a download.",
         content((String = "text/csv"), (String = "application/x-ndjson"), (Vec<u8> = "application/vnd.apache.parquet")),
         headers(("Content-Disposition" = String, description = "`attachment` with the file's name."))),
        (status = 404, description = "No such site, or not in the client's scope.", body = ErrorEnvelope),
        (status = 422, description = "`details` names every bad parameter.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn get_export(
    State(state): State<AppState>,
    principal: Principal,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request = query(params)?.check()?;
    let scope = &principal.client.scope;
    if let Some(site) = request.site {
        if !scope.contains(site) {
            return Err(ApiError::SiteNotFound(site.get().to_string()));
        }
        require_site(&state, site).await?;
    }
    let slot = principal.limits.export_slot().map_err(ApiError::RateLimited)?;
    let only = scope.listed().map(<[i64]>::to_vec);
    let limits = state.settings.exports;
    let export = export::start(&state.pool, &state.exports, request, only, slot, limits)
        .await
        .map_err(|error| match error {
            ExportError::Busy => ApiError::Busy(error.to_string()),
            ExportError::Database(error) => ApiError::from(error),
        })?;
    let disposition = format!(
        "attachment; filename=\"{}.{}\"",
        file_stem(request.site, request.range),
        export::extension(request.format)
    );
    Ok((
        [
            (CONTENT_TYPE, export::content_type(request.format).to_owned()),
            (CONTENT_DISPOSITION, disposition),
            (CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(export.into_stream()),
    )
        .into_response())
}

/// Query strings that do not even decode are refused in the envelope, like every other problem.
pub(super) fn query<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    params
        .map(|Query(params)| params)
        .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
}

/// An empty answer for a site that does not exist is a 404, not an empty list.
async fn require_site(state: &AppState, site: SiteId) -> Result<(), ApiError> {
    match sites::find(&state.pool, site).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::SiteNotFound(site.get().to_string())),
    }
}

fn time(at: chrono::DateTime<chrono::Utc>) -> Value {
    Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// `plume-site-7-20260101T000000Z-20260201T000000Z`, or `plume-all-sites-...`.
fn file_stem(site: Option<SiteId>, range: TimeRange) -> String {
    let stamp = |at: chrono::DateTime<chrono::Utc>| at.format("%Y%m%dT%H%M%SZ").to_string();
    let whose = site.map_or_else(|| "all-sites".to_owned(), |site| format!("site-{}", site.get()));
    format!("plume-{whose}-{}-{}", stamp(range.from), stamp(range.to))
}
