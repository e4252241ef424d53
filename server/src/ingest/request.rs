//! Turning a `POST /v1/ingest` request into an [`IngestBatch`], checking every field.
//!
//! All problems are collected, each with its path (`readings[3].timestamp`), so a sensor's operator
//! sees everything wrong with a batch at once. Nothing of a refused batch is stored.

use axum::http::HeaderValue;
use chrono::{DateTime, Utc};
use partitioning::AcceptedWindow;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{IdempotencyKey, IngestBatch, Origin, Reading, MAX_READING, MAX_READINGS_PER_BATCH};
use crate::error::{ApiError, FieldError};
use crate::http::json::{self, Field};
use crate::quantity::{MassUnit, Milligrams};
use crate::sites::SiteId;

/// The longest `source_id`, in characters.
const MAX_SOURCE_ID_CHARS: usize = 64;

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    site_id: Field<'a>,
    #[serde(borrow)]
    readings: Field<'a>,
    #[serde(borrow)]
    batch_id: Field<'a>,
}

/// One reading object as sent. `site_id` is read by v2 only (a v1 batch names its site once).
#[derive(Deserialize)]
pub(super) struct RawReading<'a> {
    #[serde(borrow)]
    pub(super) site_id: Field<'a>,
    #[serde(borrow)]
    timestamp: Field<'a>,
    #[serde(borrow)]
    value: Field<'a>,
    #[serde(borrow)]
    unit: Field<'a>,
    #[serde(borrow)]
    source_id: Field<'a>,
}

/// Problems found in a request. Readings outside the accepted window are counted apart: a retry of a
/// batch stored while its readings were inside the window must still be answered as a replay, so
/// those problems are held in the batch ([`IngestBatch::outside_window`]) until the key is looked up.
#[derive(Debug)]
pub(super) struct Problems {
    /// The first `limit` problems, in request order.
    pub(super) errors: Vec<FieldError>,
    /// How many problems were found, listed or not.
    found: usize,
    outside_window: usize,
    limit: usize,
}

impl Default for Problems {
    /// Every problem is listed.
    fn default() -> Self {
        Self::listing_at_most(usize::MAX)
    }
}

impl Problems {
    /// Problems of which only the first `limit` are listed (all are counted).
    pub(super) fn listing_at_most(limit: usize) -> Self {
        Self {
            errors: Vec::new(),
            found: 0,
            outside_window: 0,
            limit,
        }
    }

    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.found += 1;
        if self.errors.len() < self.limit {
            self.errors.push(FieldError::new(path, message));
        }
    }

    fn push_outside_window(&mut self, path: String, message: String) {
        self.push(path, message);
        self.outside_window += 1;
    }

    /// Problems other than readings outside the window.
    pub(super) fn blocking(&self) -> usize {
        self.found - self.outside_window
    }

    /// How many problems were found, listed or not.
    pub(super) fn found(&self) -> usize {
        self.found
    }

    /// Appends `other`'s problems after these (for requests checked in parallel chunks).
    pub(super) fn append(&mut self, other: Problems) {
        let room = self.limit.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
        self.found += other.found;
        self.outside_window += other.outside_window;
    }
}

/// Parses and validates an ingest request: its body and its `Idempotency-Key` header, with reading
/// times checked against `window` at `now`.
pub fn parse_batch(
    body: &[u8],
    header_key: Option<&HeaderValue>,
    window: &AcceptedWindow,
    now: DateTime<Utc>,
) -> Result<IngestBatch, ApiError> {
    let raw: RawBatch<'_> = json::parse(body)?;
    let mut problems = Problems::default();

    let site_id = match json::present(raw.site_id) {
        None => Err("is required"),
        Some(raw) => json::integer(raw)
            .ok()
            .and_then(SiteId::new)
            .ok_or("must be a positive integer"),
    }
    .map_err(|message| problems.push("site_id", message))
    .ok();

    let key = parse_key(header_key, json::present(raw.batch_id), &mut problems);
    let readings = parse_readings(json::present(raw.readings), window, now, &mut problems);

    match (site_id, key, readings) {
        (Some(site_id), Some(key), Some(readings)) if problems.blocking() == 0 => {
            let mut batch = IngestBatch::new(site_id, key, readings);
            batch.outside_window = problems.errors;
            Ok(batch)
        }
        _ => Err(ApiError::Validation(problems.errors)),
    }
}

/// The site and key of a request, when both are valid: enough to look up a retry before its
/// readings are read. `None` when either is missing or invalid ([`parse_batch`] then says why).
pub fn peek_identity(body: &[u8], header_key: Option<&HeaderValue>) -> Option<(SiteId, IdempotencyKey)> {
    let raw: RawBatch<'_> = serde_json::from_slice(body).ok()?;
    let site_id = json::present(raw.site_id)
        .and_then(|raw| json::integer(raw).ok())
        .and_then(SiteId::new)?;
    let key = parse_key(header_key, json::present(raw.batch_id), &mut Problems::default())?;
    Some((site_id, key))
}

/// The key from the header or, for sensors that cannot send headers, the body's `batch_id`.
fn parse_key(
    header: Option<&HeaderValue>,
    body: Option<&RawValue>,
    problems: &mut Problems,
) -> Option<IdempotencyKey> {
    let from_header = header.map(|value| {
        value
            .to_str()
            .map_err(|_| "must contain only printable ASCII characters")
            .and_then(IdempotencyKey::parse)
    });
    let from_body = body.map(|raw| json::string(raw).and_then(|text| IdempotencyKey::parse(&text)));
    match (from_header, from_body) {
        (None, None) => {
            problems.push(
                "Idempotency-Key",
                "is required: send an Idempotency-Key header or a batch_id field",
            );
            None
        }
        (Some(Err(message)), _) => {
            problems.push("Idempotency-Key", message);
            None
        }
        (_, Some(Err(message))) => {
            problems.push("batch_id", message);
            None
        }
        (Some(Ok(header)), Some(Ok(body))) if header != body => {
            problems.push("batch_id", "differs from the Idempotency-Key header");
            None
        }
        (Some(Ok(key)), _) | (None, Some(Ok(key))) => Some(key),
    }
}

fn parse_readings(
    raw: Option<&RawValue>,
    window: &AcceptedWindow,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> Option<Vec<Reading>> {
    let Some(raw) = raw else {
        problems.push("readings", "is required");
        return None;
    };
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
        problems.push("readings", "must be an array of readings");
        return None;
    };
    if items.is_empty() || items.len() > MAX_READINGS_PER_BATCH {
        let count = items.len();
        problems.push(
            "readings",
            format!("must contain 1 to {MAX_READINGS_PER_BATCH} readings, not {count}"),
        );
        return None;
    }
    let blocking_before = problems.blocking();
    let mut readings = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let origin = Origin::Index(index);
        if let Some(reading) = parse_raw_reading(origin, item, problems)
            .and_then(|raw| check_reading(origin, ReadingFields::from_json(&raw), window, now, problems))
        {
            readings.push((origin, (), reading));
        }
    }
    if problems.blocking() > blocking_before {
        return None;
    }
    check_repeats(&mut readings, "source_id and timestamp", problems);
    (problems.blocking() == blocking_before).then(|| readings.into_iter().map(|(_, _, r)| r).collect())
}

/// Reads one reading object's fields, or records why `item` is not one.
pub(super) fn parse_raw_reading<'a>(
    origin: Origin,
    item: &'a RawValue,
    problems: &mut Problems,
) -> Option<RawReading<'a>> {
    match serde_json::from_str::<RawReading<'_>>(item.get()) {
        Ok(raw) => Some(raw),
        Err(error) if item.get().starts_with('{') => {
            problems.push(origin.to_string(), format!("is not a valid reading: {error}"));
            None
        }
        Err(_) => {
            problems.push(origin.to_string(), "must be an object");
            None
        }
    }
}

/// A reading's fields (all but `site_id`) as text, however the request spelled them: `None` when
/// absent, `Err` when present but not a string (the message says what it must be).
#[derive(Debug, Default)]
pub(super) struct ReadingFields<'a> {
    pub(super) timestamp: Option<Result<String, &'static str>>,
    /// The value's text: a JSON number or string, or a CSV field.
    pub(super) value: Option<&'a str>,
    pub(super) unit: Option<Result<String, &'static str>>,
    pub(super) source_id: Option<Result<String, &'static str>>,
}

const UNIT_RULE: &str = "must be one of \"kg\", \"g\" or \"t\"";

impl<'a> ReadingFields<'a> {
    /// The fields of a JSON reading object.
    pub(super) fn from_json(raw: &RawReading<'a>) -> Self {
        Self {
            timestamp: json::present(raw.timestamp)
                .map(|raw| json::string(raw).map_err(|_| "must be an RFC 3339 timestamp string")),
            value: json::present(raw.value).map(RawValue::get),
            unit: json::present(raw.unit).map(|raw| json::string(raw).map_err(|_| UNIT_RULE)),
            source_id: json::present(raw.source_id).map(json::string),
        }
    }
}

/// Checks a reading's fields, recording every problem under `origin`.
pub(super) fn check_reading(
    origin: Origin,
    fields: ReadingFields<'_>,
    window: &AcceptedWindow,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> Option<Reading> {
    let path = |field: &str| format!("{origin}.{field}");
    let before = problems.blocking();

    let measured_at = match fields.timestamp {
        None => Err("is required".to_string()),
        Some(text) => text
            .map_err(str::to_owned)
            .and_then(|text| parse_timestamp(&text)),
    }
    .map_err(|message| problems.push(path("timestamp"), message))
    .ok();
    if let Some(Err(outside)) = measured_at.map(|at| window.check(at, now)) {
        problems.push_outside_window(path("timestamp"), outside.to_string());
    }

    let unit = match fields.unit {
        None => Ok(MassUnit::Kilograms),
        Some(text) => text.and_then(|text| MassUnit::parse(&text).ok_or(UNIT_RULE)),
    }
    .map_err(|message| problems.push(path("unit"), message))
    .ok();

    let value = match (fields.value, unit) {
        (None, _) => Err("is required".to_string()),
        (Some(_), None) => Err("cannot be read without a valid unit".to_string()),
        (Some(text), Some(unit)) => {
            Milligrams::parse_json(text, unit, MAX_READING).map_err(|e| e.to_string())
        }
    }
    .map_err(|message| problems.push(path("value"), message))
    .ok();

    let source_id = match fields.source_id {
        None => Ok(String::new()),
        Some(text) => text.and_then(|text| {
            let length = text.chars().count();
            if length == 0 || length > MAX_SOURCE_ID_CHARS {
                Err("must be 1 to 64 characters long")
            } else if text.chars().any(char::is_control) {
                Err("must not contain control characters")
            } else if crate::text::has_format_characters(&text) {
                Err("must not contain invisible format characters (bidirectional controls, zero-width characters)")
            } else {
                Ok(text)
            }
        }),
    }
    .map_err(|message| problems.push(path("source_id"), message))
    .ok();

    match (measured_at, value, source_id) {
        (Some(measured_at), Some(value), Some(source_id)) if problems.blocking() == before => Some(Reading {
            source_id,
            measured_at,
            value,
        }),
        _ => None,
    }
}

/// RFC 3339 with an explicit offset, to the microsecond (PostgreSQL's precision: finer is refused
/// rather than silently truncated).
fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|_| {
        "must be an RFC 3339 timestamp with a UTC offset, e.g. 2026-01-31T12:00:00Z".to_string()
    })?;
    let nanos = parsed.timestamp_subsec_nanos();
    if nanos >= 1_000_000_000 {
        // chrono keeps a leap second apart from the next second; PostgreSQL (and the dedup key) would
        // fold the two together.
        return Err("is a leap second (second 60), which cannot be stored".to_string());
    }
    if nanos % 1_000 != 0 {
        return Err("is more precise than 1 microsecond".to_string());
    }
    Ok(parsed.with_timezone(&Utc))
}

/// The same identity twice in a batch: fine when the values agree (counted once), refused when they
/// differ. An identity is the reading's `scope` (its site, in v2; nothing in v1, whose batch has one
/// site) with its source and time; `identity` names its fields for the message.
pub(super) fn check_repeats<S: Ord>(
    readings: &mut [(Origin, S, Reading)],
    identity: &str,
    problems: &mut Problems,
) {
    readings.sort_by(|(oa, sa, a), (ob, sb, b)| {
        (sa, &a.source_id, a.measured_at, oa).cmp(&(sb, &b.source_id, b.measured_at, ob))
    });
    for pair in readings.windows(2) {
        let ((first_origin, first_scope, first), (origin, scope, reading)) = (&pair[0], &pair[1]);
        if first_scope == scope
            && first.source_id == reading.source_id
            && first.measured_at == reading.measured_at
            && first.value != reading.value
        {
            problems.push(
                origin.to_string(),
                format!("has the same {identity} as {first_origin} but a different value"),
            );
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
