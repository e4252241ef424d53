//! The batches a load client sends: fresh readings on sources of its own, with a share of repeats,
//! written as a v1 batch or as a v2 bulk body in any of its formats, sent plain or compressed.

use std::io::Write as _;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use std::fmt::Write;

/// How a v2 body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// `application/json`.
    Json,
    /// `application/x-ndjson`.
    Ndjson,
    /// `text/csv`.
    Csv,
}

/// How a body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Compress {
    /// As it is.
    None,
    /// `Content-Encoding: gzip`, at flate2's default level (6).
    Gzip,
    /// `Content-Encoding: zstd`, at zstd's default level (3).
    Zstd,
}

impl Compress {
    /// The `Content-Encoding` to send, if any.
    pub(crate) fn content_encoding(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("gzip"),
            Self::Zstd => Some("zstd"),
        }
    }

    /// `body` as it goes on the wire.
    pub(crate) fn encode(self, body: Bytes) -> Bytes {
        match self {
            Self::None => body,
            Self::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 4),
                    flate2::Compression::default(),
                );
                encoder.write_all(&body).expect("writing to memory");
                Bytes::from(encoder.finish().expect("writing to memory"))
            }
            Self::Zstd => Bytes::from(
                zstd::bulk::compress(&body, zstd::DEFAULT_COMPRESSION_LEVEL).expect("zstd in memory"),
            ),
        }
    }
}

/// Which API a batch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `POST /v1/ingest`: one site per batch.
    V1,
    /// `POST /v2/ingest`: readings of `sites_per_batch` sites, written as `format`.
    V2 { format: Format, sites_per_batch: u64 },
}

/// One reading as generated.
#[derive(Debug, Clone)]
pub(crate) struct Generated {
    site: u64,
    source: String,
    at: DateTime<Utc>,
    value: String,
}

/// A request ready to send, and to re-send as a retry.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) key: String,
    pub(crate) path: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) content_encoding: Option<&'static str>,
    /// The body as sent (compressed, when it is).
    pub(crate) body: Bytes,
    /// The body's size before compression.
    pub(crate) plain_bytes: usize,
}

/// Readings 2 minutes apart over nine months: one round of a client's sources.
const ROUND: u64 = 270 * 24 * 30;

/// Generates one client's batches: its own sources on every site, timestamps 2 minutes apart from
/// nine months back, in time order; after nine months' worth a new round of sources starts over.
#[derive(Debug)]
pub(crate) struct Batches {
    client: usize,
    sites: u64,
    batch_size: usize,
    repeats: usize,
    shape: Shape,
    compress: Compress,
    start: DateTime<Utc>,
    sequence: u64,
    batch: u64,
    /// The last batch's new readings for each site group: the next batch's repeats for it.
    previous: std::collections::HashMap<u64, Vec<Generated>>,
}

impl Batches {
    pub(crate) fn new(
        client: usize,
        sites: u64,
        batch_size: usize,
        duplicate_ratio: f64,
        shape: Shape,
        compress: Compress,
    ) -> Self {
        Self {
            client,
            sites,
            batch_size,
            repeats: (batch_size as f64 * duplicate_ratio).round() as usize,
            shape,
            compress,
            start: Utc::now() - chrono::Duration::days(270),
            sequence: 0,
            batch: 0,
            previous: Default::default(),
        }
    }

    /// The next request.
    pub(crate) fn next_request(&mut self) -> Request {
        self.batch += 1;
        let sites_per_batch = match self.shape {
            Shape::V1 => 1,
            Shape::V2 { sites_per_batch, .. } => sites_per_batch.clamp(1, self.sites),
        };
        // The group's first site: v1 walks the sites in a client-specific order; v2 gateways each
        // own a run of consecutive sites, and a client posts for one gateway after another.
        let groups = self.sites / sites_per_batch;
        let group = (self.batch * 31 + self.client as u64 * 7) % groups;
        let first = group * sites_per_batch;
        let mut readings: Vec<Generated> = Vec::with_capacity(self.batch_size);
        if let Some(sent_before) = self.previous.get(&group) {
            readings.extend(sent_before.iter().take(self.repeats).cloned());
        }
        let fresh_from = readings.len();
        while readings.len() < self.batch_size {
            self.sequence += 1;
            let sequence = self.sequence;
            readings.push(Generated {
                site: 1 + (first + sequence % sites_per_batch) % self.sites,
                source: format!("c{}-r{}-s{}", self.client, sequence / ROUND, sequence % 10),
                at: self.start + chrono::Duration::minutes(2 * (sequence % ROUND) as i64),
                value: format!("{}.{:03}", sequence % 50, sequence % 1000),
            });
        }
        let key = format!("load-{}-{}", self.client, self.batch);
        let (path, content_type, body) = match self.shape {
            Shape::V1 => ("/v1/ingest", "application/json", v1_body(1 + first, &readings)),
            Shape::V2 { format, .. } => (
                "/v2/ingest",
                match format {
                    Format::Json => "application/json",
                    Format::Ndjson => "application/x-ndjson",
                    Format::Csv => "text/csv",
                },
                v2_body(format, &readings),
            ),
        };
        let request = Request {
            key,
            path,
            content_type,
            content_encoding: self.compress.content_encoding(),
            plain_bytes: body.len(),
            body: self.compress.encode(body),
        };
        self.previous.insert(group, readings.split_off(fresh_from));
        request
    }
}

/// RFC 3339 to the second, written without chrono's format-string machinery: the load tool shares
/// the machine with the service, so its own work is kept small.
fn timestamp(at: &DateTime<Utc>) -> impl std::fmt::Display {
    use chrono::{Datelike, Timelike};
    struct Rfc3339(u32, u32, u32, u32, u32, u32);
    impl std::fmt::Display for Rfc3339 {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let Self(year, month, day, hour, minute, second) = *self;
            let digits = |n: u32| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
            let mut text = [0u8; 20];
            text[..4].copy_from_slice(&[
                b'0' + (year / 1000) as u8,
                b'0' + (year / 100 % 10) as u8,
                b'0' + (year / 10 % 10) as u8,
                b'0' + (year % 10) as u8,
            ]);
            text[4] = b'-';
            text[5..7].copy_from_slice(&digits(month));
            text[7] = b'-';
            text[8..10].copy_from_slice(&digits(day));
            text[10] = b'T';
            text[11..13].copy_from_slice(&digits(hour));
            text[13] = b':';
            text[14..16].copy_from_slice(&digits(minute));
            text[16] = b':';
            text[17..19].copy_from_slice(&digits(second));
            text[19] = b'Z';
            f.write_str(std::str::from_utf8(&text).expect("ASCII digits"))
        }
    }
    Rfc3339(
        at.year() as u32,
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
    )
}

/// Writes `r` as a JSON reading object, with its `site_id` for v2 (a v1 batch names its site once).
fn write_object(body: &mut String, r: &Generated, with_site: bool) {
    body.push('{');
    if with_site {
        let _ = write!(body, r#""site_id":{},"#, r.site);
    }
    let _ = write!(
        body,
        r#""source_id":"{}","timestamp":"{}","value":"{}"}}"#,
        r.source,
        timestamp(&r.at),
        r.value
    );
}

/// Writes `readings` as a JSON array of reading objects.
fn write_array(body: &mut String, readings: &[Generated], with_site: bool) {
    body.push('[');
    for (n, r) in readings.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        write_object(body, r, with_site);
    }
    body.push(']');
}

fn v1_body(site: u64, readings: &[Generated]) -> Bytes {
    let mut body = format!(r#"{{"site_id":{site},"readings":"#);
    write_array(&mut body, readings, false);
    body.push('}');
    Bytes::from(body)
}

fn v2_body(format: Format, readings: &[Generated]) -> Bytes {
    let mut body = String::with_capacity(readings.len() * 80);
    match format {
        Format::Json => {
            body.push_str(r#"{"readings":"#);
            write_array(&mut body, readings, true);
            body.push('}');
        }
        Format::Ndjson => {
            for r in readings {
                write_object(&mut body, r, true);
                body.push('\n');
            }
        }
        Format::Csv => {
            body.push_str("site_id,source_id,timestamp,value\n");
            for r in readings {
                let _ = writeln!(body, "{},{},{},{}", r.site, r.source, timestamp(&r.at), r.value);
            }
        }
    }
    Bytes::from(body)
}
