//! Turning a `POST /v2/ingest` body (JSON, NDJSON or CSV) into a [`BulkBatch`], checking every field.
//!
//! Each problem names where it is: `readings[3].value` in a JSON body, `line 4.value` in an NDJSON
//! or CSV body (lines count from 1; a CSV header is line 1). The first [`MAX_LISTED_PROBLEMS`] are
//! listed. Readings are checked in parallel chunks on rayon's pool once a body holds more than
//! [`PARALLEL_CHUNK`] of them; the caller runs the whole parse off the async workers.

use axum::http::HeaderValue;
use chrono::{DateTime, Utc};
use partitioning::AcceptedWindow;
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::bulk::{BulkBatch, MAX_READINGS_PER_BULK};
use super::request::{check_reading, check_repeats, parse_raw_reading, Problems, ReadingFields};
use super::{IdempotencyKey, Origin, Reading};
use crate::auth::Client;
use crate::error::ApiError;
use crate::http::json::{self, Field};
use crate::sites::SiteId;

/// At most this many problems are listed in a 422 (all are counted).
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// Readings per parallel chunk; smaller bodies are checked on the calling thread.
pub const PARALLEL_CHUNK: usize = 2_048;

/// How a bulk body is written, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkFormat {
    /// `application/json`: `{"readings": [{"site_id", "source_id"?, "timestamp", "value", "unit"?}]}`.
    Json,
    /// `application/x-ndjson`: one reading object per line.
    Ndjson,
    /// `text/csv`: a header naming `site_id`, `timestamp`, `value` and optionally `source_id` and
    /// `unit`, in any order, then one reading per line.
    Csv,
}

impl BulkFormat {
    /// The format a media type (parameters allowed) names, if it is one of the three.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let mime = content_type.split(';').next()?.trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(Self::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Some(Self::Ndjson),
            "text/csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// A checked reading with its site and where it was.
type Located = (Origin, SiteId, Reading);

/// Parses and validates a bulk request from `writer`: its body in `format` and its
/// `Idempotency-Key` header, with reading times checked against `window` at `now`. Readings of
/// sites or sources the writer may not write are refused first (403, each named).
pub fn parse_bulk(
    body: &[u8],
    format: BulkFormat,
    header_key: Option<&HeaderValue>,
    window: &AcceptedWindow,
    now: DateTime<Utc>,
    writer: &Client,
) -> Result<BulkBatch, ApiError> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let mut problems = Problems::listing_at_most(MAX_LISTED_PROBLEMS);
    let key = parse_key(header_key, &mut problems);
    let readings = match format {
        BulkFormat::Json => json_readings(body, window, now, &mut problems)?,
        BulkFormat::Ndjson => ndjson_readings(body, window, now, &mut problems),
        BulkFormat::Csv => csv_readings(body, window, now, &mut problems),
    };
    let Some(mut readings) = readings else {
        return Err(refusal(problems));
    };
    check_writer(&readings, writer)?;
    // Repeats among the readings that passed, reported with every other problem at once.
    check_repeats(&mut readings, "site_id, source_id and timestamp", &mut problems);
    match key {
        Some(key) if problems.blocking() == 0 => {
            let readings = readings
                .into_iter()
                .map(|(origin, site, reading)| (site, reading, origin))
                .collect();
            let mut batch = BulkBatch::new(key, readings);
            batch.outside_window = problems.errors;
            Ok(batch)
        }
        _ => Err(refusal(problems)),
    }
}

/// 403 naming every reading (the first [`MAX_LISTED_PROBLEMS`]) whose site or source `writer`
/// may not write.
fn check_writer(readings: &[Located], writer: &Client) -> Result<(), ApiError> {
    let mut refused = Problems::listing_at_most(MAX_LISTED_PROBLEMS);
    for (origin, site, reading) in readings {
        if !writer.may_write(*site) {
            refused.push(
                format!("{origin}.site_id"),
                format!("this client may not write readings to site {}", site.get()),
            );
        } else if !writer.may_write_source(&reading.source_id) {
            refused.push(
                format!("{origin}.source_id"),
                format!("{:?} is not a source this client may write", reading.source_id),
            );
        }
    }
    match refused.found() {
        0 => Ok(()),
        found => Err(ApiError::ForbiddenReadings(refused.errors, found)),
    }
}

fn refusal(problems: Problems) -> ApiError {
    let found = problems.found();
    if found > problems.errors.len() {
        ApiError::TooManyProblems(problems.errors, found)
    } else {
        ApiError::Validation(problems.errors)
    }
}

fn parse_key(header: Option<&HeaderValue>, problems: &mut Problems) -> Option<IdempotencyKey> {
    let Some(header) = header else {
        problems.push("Idempotency-Key", "is required: send an Idempotency-Key header");
        return None;
    };
    header
        .to_str()
        .map_err(|_| "must contain only printable ASCII characters")
        .and_then(IdempotencyKey::parse)
        .map_err(|message| problems.push("Idempotency-Key", message))
        .ok()
}

/// `None` (and a problem) unless there are 1 to [`MAX_READINGS_PER_BULK`] readings.
fn check_count(count: usize, problems: &mut Problems) -> Option<()> {
    if count == 0 || count > MAX_READINGS_PER_BULK {
        problems.push(
            "readings",
            format!("must contain 1 to {MAX_READINGS_PER_BULK} readings, not {count}"),
        );
        return None;
    }
    Some(())
}

#[derive(Deserialize)]
struct RawBulk<'a> {
    #[serde(borrow)]
    readings: Field<'a>,
}

fn json_readings(
    body: &[u8],
    window: &AcceptedWindow,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> Result<Option<Vec<Located>>, ApiError> {
    let raw: RawBulk<'_> = json::parse(body)?;
    let Some(raw) = json::present(raw.readings) else {
        problems.push("readings", "is required");
        return Ok(None);
    };
    let Ok(Bounded { items, count }) = serde_json::from_str::<Bounded<'_>>(raw.get()) else {
        problems.push("readings", "must be an array of readings");
        return Ok(None);
    };
    if check_count(count, problems).is_none() {
        return Ok(None);
    }
    let items: Vec<(Origin, &RawValue)> = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| (Origin::Index(index), item))
        .collect();
    Ok(Some(check_all(&items, problems, |origin, item, problems| {
        check_object(origin, item, window, now, problems)
    })))
}

/// A JSON array kept only up to [`MAX_READINGS_PER_BULK`] items (a body within the size limit could
/// otherwise hold millions of tiny ones), with the count of all of them.
struct Bounded<'a> {
    items: Vec<&'a RawValue>,
    count: usize,
}

impl<'de> Deserialize<'de> for Bounded<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bounded<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while items.len() < MAX_READINGS_PER_BULK {
                    match seq.next_element::<&RawValue>()? {
                        Some(item) => items.push(item),
                        None => {
                            return Ok(Bounded {
                                count: items.len(),
                                items,
                            })
                        }
                    }
                }
                let mut count = items.len();
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(Bounded { items, count })
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

fn ndjson_readings(
    body: &[u8],
    window: &AcceptedWindow,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> Option<Vec<Located>> {
    let lines = || {
        body.split(|&byte| byte == b'\n')
            .enumerate()
            .map(|(index, line)| (Origin::Line(index + 1), line.trim_ascii()))
            .filter(|(_, line)| !line.is_empty())
    };
    // Counted before any is kept: a body within the size limit could hold millions of tiny lines.
    check_count(lines().count(), problems)?;
    let lines: Vec<(Origin, &[u8])> = lines().collect();
    Some(check_all(
        &lines,
        problems,
        |origin, line, problems| match serde_json::from_slice::<&RawValue>(line) {
            Ok(item) => check_object(origin, item, window, now, problems),
            Err(error) => {
                problems.push(origin.to_string(), format!("is not valid JSON: {error}"));
                None
            }
        },
    ))
}

/// One JSON reading object: its site and its fields.
fn check_object(
    origin: Origin,
    item: &RawValue,
    window: &AcceptedWindow,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> Option<(SiteId, Reading)> {
    let raw = parse_raw_reading(origin, item, problems)?;
    let site = match json::present(raw.site_id) {
        None => Err("is required"),
        Some(raw) => json::integer(raw)
            .ok()
            .and_then(SiteId::new)
            .ok_or("must be a positive integer"),
    }
    .map_err(|message| problems.push(format!("{origin}.site_id"), message))
    .ok();
    let reading = check_reading(origin, ReadingFields::from_json(&raw), window, now, problems);
    Some((site?, reading?))
}

/// The most columns a CSV header may have: five are known, the rest must be refused anyway.
const MAX_CSV_COLUMNS: usize = 16;

/// The columns of a CSV body, by position.
struct CsvColumns {
    site_id: usize,
    source_id: Option<usize>,
    timestamp: usize,
    value: usize,
    unit: Option<usize>,
    count: usize,
}

fn csv_readings(
    body: &[u8],
    window: &AcceptedWindow,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> Option<Vec<Located>> {
    // Counted before the CSV reader splits the line: a header of millions of empty columns would
    // otherwise become millions of fields.
    let first_line = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let columns = first_line.iter().filter(|b| **b == b',').count() + 1;
    if columns > MAX_CSV_COLUMNS {
        problems.push(
            "line 1",
            format!("has {columns} columns; a header names at most {MAX_CSV_COLUMNS}"),
        );
        return None;
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut records = reader.byte_records();
    let header = match records.next() {
        Some(Ok(header)) => header,
        Some(Err(error)) => {
            problems.push("line 1", format!("is not a valid CSV header: {error}"));
            return None;
        }
        None => {
            problems.push("line 1", "must be a header: site_id,source_id,timestamp,value");
            return None;
        }
    };
    let columns = csv_columns(&header, problems)?;
    let mut lines = LineCounter {
        body,
        offset: 0,
        line: 1,
    };
    // Rows past the limit are counted, not kept: a body within the size limit could hold millions.
    let mut rows = Vec::new();
    let mut over = 0;
    for record in records {
        match record {
            Ok(record) if record.len() == 1 && record[0].trim_ascii().is_empty() => {}
            Ok(_) if rows.len() == MAX_READINGS_PER_BULK => over += 1,
            Ok(record) => {
                let line = lines.line_at(record.position().map_or(0, |p| p.byte() as usize));
                rows.push((Origin::Line(line), record));
            }
            Err(error) => {
                let line = lines.line_at(error.position().map_or(0, |p| p.byte() as usize));
                problems.push(
                    Origin::Line(line).to_string(),
                    format!("is not valid CSV: {error}"),
                );
                return None;
            }
        }
    }
    check_count(rows.len() + over, problems)?;
    Some(check_all(&rows, problems, |origin, record, problems| {
        check_csv_record(origin, record, &columns, window, now, problems)
    }))
}

/// Line numbers of CSV records from their byte offsets, counted forward as records arrive in order.
/// (The csv crate's own line numbers lag by one after each CRLF line end.)
struct LineCounter<'a> {
    body: &'a [u8],
    offset: usize,
    line: usize,
}

impl LineCounter<'_> {
    /// The line of the record that starts at `byte`, or at the line ends before it (the csv crate
    /// may report a record's start at the line feed ending the line before). Lines end with LF,
    /// CRLF or a lone CR.
    fn line_at(&mut self, byte: usize) -> usize {
        let mut start = byte.clamp(self.offset, self.body.len());
        while matches!(self.body.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        let passed = &self.body[self.offset..start];
        let line_ends = passed
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && passed.get(i + 1) != Some(&b'\n')))
            .count();
        self.line += line_ends;
        self.offset = start;
        self.line
    }
}

fn csv_columns(header: &csv::ByteRecord, problems: &mut Problems) -> Option<CsvColumns> {
    let names: Vec<String> = header
        .iter()
        .map(|name| String::from_utf8_lossy(name.trim_ascii()).into_owned())
        .collect();
    let find = |wanted: &str| names.iter().position(|name| name == wanted);
    let before = problems.found();
    for (index, name) in names.iter().enumerate() {
        let known = ["site_id", "source_id", "timestamp", "value", "unit"].contains(&name.as_str());
        if !known {
            problems.push(
                "line 1",
                format!("names an unknown column {name:?}: the columns are site_id, source_id, timestamp, value and unit"),
            );
        } else if find(name) != Some(index) {
            problems.push("line 1", format!("names the column {name:?} twice"));
        }
    }
    for required in ["site_id", "timestamp", "value"] {
        if find(required).is_none() {
            problems.push("line 1", format!("must name the column {required:?}"));
        }
    }
    if problems.found() > before {
        return None;
    }
    Some(CsvColumns {
        site_id: find("site_id")?,
        source_id: find("source_id"),
        timestamp: find("timestamp")?,
        value: find("value")?,
        unit: find("unit"),
        count: names.len(),
    })
}

fn check_csv_record(
    origin: Origin,
    record: &csv::ByteRecord,
    columns: &CsvColumns,
    window: &AcceptedWindow,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> Option<(SiteId, Reading)> {
    if record.len() != columns.count {
        problems.push(
            origin.to_string(),
            format!("has {} fields; the header names {}", record.len(), columns.count),
        );
        return None;
    }
    let mut text = |column: usize, name: &str| csv_field(record, column, origin, name, problems);
    let site_text = text(columns.site_id, "site_id");
    let timestamp = text(columns.timestamp, "timestamp");
    let value = text(columns.value, "value");
    let unit = columns.unit.and_then(|column| text(column, "unit"));
    let source_id = columns.source_id.and_then(|column| text(column, "source_id"));
    let site = match site_text {
        None => Err("is required"),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .and_then(SiteId::new)
            .ok_or("must be a positive integer"),
    }
    .map_err(|message| problems.push(format!("{origin}.site_id"), message))
    .ok();
    let fields = ReadingFields {
        timestamp: timestamp.map(|text| Ok(text.to_owned())),
        value,
        unit: unit.map(|text| Ok(text.to_owned())),
        source_id: source_id.map(|text| Ok(text.to_owned())),
    };
    let reading = check_reading(origin, fields, window, now, problems);
    Some((site?, reading?))
}

/// A CSV field's text; `None` when empty (or not UTF-8, which is a problem).
fn csv_field<'r>(
    record: &'r csv::ByteRecord,
    column: usize,
    origin: Origin,
    name: &str,
    problems: &mut Problems,
) -> Option<&'r str> {
    // A source id is taken as written, spaces and all, as in JSON; the other fields are numbers,
    // times and units, where surrounding spaces carry nothing.
    let field = match name {
        "source_id" => &record[column],
        _ => record[column].trim_ascii(),
    };
    match std::str::from_utf8(field) {
        Ok("") => None,
        Ok(text) => Some(text),
        Err(_) => {
            problems.push(format!("{origin}.{name}"), "is not valid UTF-8");
            None
        }
    }
}

/// Checks every item with `check`, in parallel chunks when there are many, keeping request order
/// for both the readings that pass and the problems.
fn check_all<T: Sync>(
    items: &[(Origin, T)],
    problems: &mut Problems,
    check: impl Fn(Origin, &T, &mut Problems) -> Option<(SiteId, Reading)> + Sync,
) -> Vec<Located> {
    let check_chunk = |chunk: &[(Origin, T)]| {
        let mut chunk_problems = Problems::listing_at_most(MAX_LISTED_PROBLEMS);
        let readings: Vec<Located> = chunk
            .iter()
            .filter_map(|(origin, item)| {
                check(*origin, item, &mut chunk_problems).map(|(site, reading)| (*origin, site, reading))
            })
            .collect();
        (readings, chunk_problems)
    };
    let mut readings = Vec::with_capacity(items.len());
    // In parallel only on rayon's own pool (where the caller runs large bodies): from an async
    // worker, waiting for the pool would block it.
    if items.len() <= PARALLEL_CHUNK || rayon::current_thread_index().is_none() {
        let (checked, chunk_problems) = check_chunk(items);
        readings = checked;
        problems.append(chunk_problems);
    } else {
        let chunks: Vec<_> = items.par_chunks(PARALLEL_CHUNK).map(check_chunk).collect();
        for (checked, chunk_problems) in chunks {
            readings.extend(checked);
            problems.append(chunk_problems);
        }
    }
    readings
}

#[cfg(test)]
#[path = "bulk_request_tests.rs"]
mod tests;
