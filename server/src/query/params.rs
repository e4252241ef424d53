//! Query strings of the read endpoints, parsed into checked types once, at the edge. Every problem
//! is reported at once, each naming its parameter.

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::Deserialize;

use super::readings::{PageCursor, DEFAULT_PAGE, MAX_PAGE};
use super::sources::{self, SourcesCursor, SourcesRequest};
use super::{Bucket, TimeRange, MAX_BUCKETS};
use crate::error::{ApiError, FieldError};
use crate::sites::SiteId;

/// The widest range an export without `site_id` may cover.
pub const MAX_SITELESS_EXPORT: Duration = Duration::days(31);

/// `GET /v2/sites/{id}/series`.
#[derive(Debug, Deserialize)]
pub struct SeriesParams {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
}

/// `GET /v2/sites/{id}/readings`.
#[derive(Debug, Deserialize)]
pub struct ReadingsParams {
    from: Option<String>,
    to: Option<String>,
    source_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v2/sites/{id}/sources`.
#[derive(Debug, Deserialize)]
pub struct SourcesParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v2/export`.
#[derive(Debug, Deserialize)]
pub struct ExportParams {
    site_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    raw: Option<String>,
}

/// A checked series request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRequest {
    /// Whole buckets, at most [`MAX_BUCKETS`] of them.
    pub range: TimeRange,
    /// Their width.
    pub bucket: Bucket,
}

/// A checked page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Readings in this range (all time when not given).
    pub range: TimeRange,
    /// Only this source's readings, if given.
    pub source_id: Option<String>,
    /// At most this many.
    pub limit: i64,
    /// Readings after this one.
    pub after: Option<PageCursor>,
}

/// The formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header line; a source id a spreadsheet would run as a formula (it
    /// starts with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`.
    Csv,
    /// The same CSV with every source id as stored (`raw=true`), for pipelines, not spreadsheets.
    RawCsv,
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet: typed columns, compressed, in row groups of at most
    /// [`crate::query::export::parquet::ROWS_PER_GROUP`] readings.
    Parquet,
}

/// A checked export request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRequest {
    /// One site's readings, or every site's in a range of at most [`MAX_SITELESS_EXPORT`].
    pub site: Option<SiteId>,
    /// Readings in this range.
    pub range: TimeRange,
    /// How to write them.
    pub format: ExportFormat,
}

impl SeriesParams {
    /// Both ends are required and must fall on bucket boundaries (UTC), so every bucket answered
    /// is whole; the default bucket is `hour`.
    pub fn check(&self) -> Result<SeriesRequest, ApiError> {
        let mut problems = Vec::new();
        let bucket = match self.bucket.as_deref() {
            None => Some(Bucket::Hour),
            Some(text) => Bucket::parse(text).or_else(|| {
                problems.push(FieldError::new("bucket", "must be hour, day or month"));
                None
            }),
        };
        let from = required_time(&mut problems, "from", self.from.as_deref());
        let to = required_time(&mut problems, "to", self.to.as_deref());
        if let (Some(bucket), Some(from), Some(to)) = (bucket, from, to) {
            for (name, at) in [("from", from), ("to", to)] {
                if !bucket.is_boundary(at) {
                    problems.push(FieldError::new(
                        name,
                        format!(
                            "must be the start of a UTC {} for bucket={}",
                            bucket.name(),
                            bucket.name()
                        ),
                    ));
                }
            }
            let range = ordered(&mut problems, from, to);
            if let Some(range) = range.filter(|_| problems.is_empty()) {
                if bucket.count(range) > MAX_BUCKETS {
                    problems.push(FieldError::new(
                        "to",
                        format!(
                            "the range spans {} buckets; at most {MAX_BUCKETS} may be asked for at once",
                            bucket.count(range)
                        ),
                    ));
                } else {
                    return Ok(SeriesRequest { range, bucket });
                }
            }
        }
        Err(ApiError::Validation(problems))
    }
}

impl ReadingsParams {
    /// Both ends are optional; a page holds 1 to [`MAX_PAGE`] readings ([`DEFAULT_PAGE`] unless
    /// asked).
    pub fn check(&self) -> Result<PageRequest, ApiError> {
        let mut problems = Vec::new();
        let range = optional_range(&mut problems, self.from.as_deref(), self.to.as_deref());
        let limit = page_limit(self.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE, &mut problems);
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => match PageCursor::decode(text) {
                Some(cursor) if cursor.filter == self.source_id => Some(cursor),
                Some(_) => {
                    problems.push(FieldError::new(
                        "cursor",
                        "belongs to pages with another source_id",
                    ));
                    None
                }
                None => {
                    problems.push(FieldError::new("cursor", "is not a cursor this API issued"));
                    None
                }
            },
        };
        match (range, problems.is_empty()) {
            (Some(range), true) => Ok(PageRequest {
                range,
                source_id: self.source_id.clone(),
                limit,
                after,
            }),
            _ => Err(ApiError::Validation(problems)),
        }
    }
}

impl SourcesParams {
    /// A page holds 1 to [`sources::MAX_PAGE`] sources ([`sources::DEFAULT_PAGE`] unless asked).
    pub fn check(&self) -> Result<SourcesRequest, ApiError> {
        let mut problems = Vec::new();
        let limit = page_limit(
            self.limit.as_deref(),
            sources::DEFAULT_PAGE,
            sources::MAX_PAGE,
            &mut problems,
        );
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => SourcesCursor::decode(text).or_else(|| {
                problems.push(FieldError::new("cursor", "is not a cursor this API issued"));
                None
            }),
        };
        if problems.is_empty() {
            Ok(SourcesRequest { limit, after })
        } else {
            Err(ApiError::Validation(problems))
        }
    }
}

impl ExportParams {
    /// `site_id` (any range), or a range of at most [`MAX_SITELESS_EXPORT`] over every site;
    /// the format is `csv` unless asked.
    pub fn check(&self) -> Result<ExportRequest, ApiError> {
        let mut problems = Vec::new();
        let raw = match self.raw.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                problems.push(FieldError::new("raw", "must be true or false"));
                false
            }
        };
        let format = match self.format.as_deref() {
            None | Some("csv") if raw => Some(ExportFormat::RawCsv),
            None | Some("csv") => Some(ExportFormat::Csv),
            Some("ndjson" | "parquet") if raw => {
                problems.push(FieldError::new(
                    "raw",
                    "applies to csv only (ndjson and parquet are always raw)",
                ));
                None
            }
            Some("ndjson") => Some(ExportFormat::Ndjson),
            Some("parquet") => Some(ExportFormat::Parquet),
            Some(_) => {
                problems.push(FieldError::new("format", "must be csv, ndjson or parquet"));
                None
            }
        };
        let site = match self.site_id.as_deref() {
            None => None,
            Some(text) => text.parse().ok().and_then(SiteId::new).or_else(|| {
                problems.push(FieldError::new("site_id", "must be a positive integer"));
                None
            }),
        };
        let range = optional_range(&mut problems, self.from.as_deref(), self.to.as_deref());
        if self.site_id.is_none() {
            let bounded = range.is_some_and(|r| r.to - r.from <= MAX_SITELESS_EXPORT);
            if !bounded && problems.is_empty() {
                problems.push(FieldError::new(
                    "site_id",
                    format!(
                        "is required unless from and to bound the export to at most {} days",
                        MAX_SITELESS_EXPORT.num_days()
                    ),
                ));
            }
        }
        match (range, format, problems.is_empty()) {
            (Some(range), Some(format), true) => Ok(ExportRequest { site, range, format }),
            _ => Err(ApiError::Validation(problems)),
        }
    }
}

fn parse_time(problems: &mut Vec<FieldError>, name: &str, text: &str) -> Option<DateTime<Utc>> {
    // Years PostgreSQL and RFC 3339 agree on; chrono would also take year 0.
    let at = DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
        .filter(|at| (1..=9999).contains(&at.year()));
    if at.is_none() {
        problems.push(FieldError::new(
            name,
            "must be an RFC 3339 time from year 0001 to 9999, e.g. 2026-01-31T00:00:00Z",
        ));
    }
    at
}

fn required_time(problems: &mut Vec<FieldError>, name: &str, text: Option<&str>) -> Option<DateTime<Utc>> {
    match text {
        Some(text) => parse_time(problems, name, text),
        None => {
            problems.push(FieldError::new(name, "is required"));
            None
        }
    }
}

fn ordered(problems: &mut Vec<FieldError>, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<TimeRange> {
    if from < to {
        Some(TimeRange { from, to })
    } else {
        problems.push(FieldError::new("to", "must be after from"));
        None
    }
}

fn optional_range(problems: &mut Vec<FieldError>, from: Option<&str>, to: Option<&str>) -> Option<TimeRange> {
    let from = match from {
        Some(text) => parse_time(problems, "from", text),
        None => Some(TimeRange::all().from),
    };
    let to = match to {
        Some(text) => parse_time(problems, "to", text),
        None => Some(TimeRange::all().to),
    };
    ordered(problems, from?, to?)
}

/// `text`, a page's `limit`, as an integer from 1 to `max`; `default` when it is absent, and a
/// problem (with `default` in its place) when it is anything else.
fn page_limit(text: Option<&str>, default: i64, max: i64, problems: &mut Vec<FieldError>) -> i64 {
    let Some(text) = text else { return default };
    text.parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .unwrap_or_else(|| {
            problems.push(FieldError::new(
                "limit",
                format!("must be an integer from 1 to {max}"),
            ));
            default
        })
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
