//! criterion benches of the ingest hot path, without a database: parse, validate, canonicalise and
//! hash a request (v1 `parse_batch`, v2 `parse_bulk` in each format), encode the binary COPY
//! buffer, and decompress a compressed body (gzip, zstd) beside parsing it.
//!
//! `cargo bench -p plume-bench --bench hot-path` (`-- decompress` for the last group alone). Throughput is reported in readings per second.
//! Readings are generated from a fixed seed, so every run measures the same input.

use axum::http::HeaderValue;
use chrono::{DateTime, Duration, Utc};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use partitioning::AcceptedWindow;
use plume::http::encoding::{decode, Coding};
use plume::ingest::bulk_request::{parse_bulk, BulkFormat};
use plume::ingest::copy;
use plume::ingest::request::parse_batch;
use plume::ingest::{IdempotencyKey, IngestBatch, Reading, MAX_READINGS_PER_BATCH};
use plume::quantity::Milligrams;
use plume::sites::SiteId;
use serde_json::json;

/// A deterministic pseudo-random sequence (xorshift), so inputs are the same in every run.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn now() -> DateTime<Utc> {
    "2026-11-26T12:00:00Z".parse().unwrap()
}

/// A v1 request body of `count` readings from 4 sources, spread over the last day, values with up
/// to 6 decimals.
fn request_body(count: usize) -> Vec<u8> {
    let mut rng = Seeded(0x5eed);
    let start = now() - Duration::hours(23);
    let readings: Vec<_> = (0..count)
        .map(|i| {
            let at = start + Duration::seconds(i as i64 * 7);
            let value = format!("{}.{:06}", rng.next() % 500, rng.next() % 1_000_000);
            json!({"source_id": format!("sensor-{}", i % 4), "timestamp": at.to_rfc3339(), "value": value})
        })
        .collect();
    serde_json::to_vec(&json!({"site_id": 42, "readings": readings})).unwrap()
}

fn readings(count: usize) -> Vec<Reading> {
    let mut rng = Seeded(0xc0ffee);
    let start = now() - Duration::days(60);
    (0..count)
        .map(|i| Reading {
            source_id: format!("sensor-{}", i % 16),
            measured_at: start + Duration::seconds(i as i64 * 3),
            value: Milligrams::from_mg((rng.next() % 500_000_000_000) as i64),
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse+validate+canonicalise+hash");
    let body = request_body(MAX_READINGS_PER_BATCH);
    let key = HeaderValue::from_static("bench-key-0001");
    let window = AcceptedWindow::default();
    group.throughput(Throughput::Elements(MAX_READINGS_PER_BATCH as u64));
    group.bench_function("v1 request, 100 readings", |b| {
        b.iter(|| parse_batch(black_box(&body), Some(&key), &window, now()).unwrap())
    });
    // Baseline, same input: only reading the JSON into a generic value (no validation, no exact
    // decimals, no canonical form, no hash).
    group.bench_function("baseline: serde_json::Value, 100 readings", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
    });
    // The canonical form and hash alone of a 10,000-reading batch (sort, dedup, SHA-256).
    let many = readings(10_000);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("canonicalise+hash, 10,000 readings", |b| {
        b.iter_batched(
            || many.clone(),
            |readings| {
                IngestBatch::new(
                    SiteId::new(42).unwrap(),
                    IdempotencyKey::parse("k").unwrap(),
                    readings,
                )
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// A v2 body of `count` readings over 10 sites and 4 sources each, spread over the last day.
fn bulk_body(format: BulkFormat, count: usize) -> Vec<u8> {
    let mut rng = Seeded(0xb01c);
    let start = now() - Duration::hours(23);
    let rows: Vec<(u64, String, String, String)> = (0..count)
        .map(|i| {
            let at = start + Duration::milliseconds(i as i64 * 7_000);
            let value = format!("{}.{:06}", rng.next() % 500, rng.next() % 1_000_000);
            (
                1 + i as u64 % 10,
                format!("sensor-{}", i % 4),
                at.to_rfc3339(),
                value,
            )
        })
        .collect();
    let mut body = String::new();
    match format {
        BulkFormat::Json => {
            let readings: Vec<_> = rows
                .iter()
                .map(|(site, source, at, value)| json!({"site_id": site, "source_id": source, "timestamp": at, "value": value}))
                .collect();
            body = json!({ "readings": readings }).to_string();
        }
        BulkFormat::Ndjson => {
            for (site, source, at, value) in &rows {
                body += &json!({"site_id": site, "source_id": source, "timestamp": at, "value": value})
                    .to_string();
                body.push('\n');
            }
        }
        BulkFormat::Csv => {
            body.push_str("site_id,source_id,timestamp,value\n");
            for (site, source, at, value) in &rows {
                body += &format!("{site},{source},{at},{value}\n");
            }
        }
    }
    body.into_bytes()
}

/// v2 bodies of 10,000 readings in each format, checked in parallel chunks on rayon's pool (as the
/// service does) and, for comparison, on a pool of one thread.
fn parse_bulk_bodies(c: &mut Criterion) {
    let mut group = c.benchmark_group("v2 parse+validate+canonicalise+hash");
    let key = HeaderValue::from_static("bench-key-0001");
    let window = AcceptedWindow::default();
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    group.throughput(Throughput::Elements(10_000));
    for format in [BulkFormat::Json, BulkFormat::Ndjson, BulkFormat::Csv] {
        let body = bulk_body(format, 10_000);
        let writer = plume::auth::Principal::unrestricted().client;
        let parse = || parse_bulk(black_box(&body), format, Some(&key), &window, now(), &writer).unwrap();
        group.bench_function(format!("{format:?}, 10,000 readings, all cores"), |b| {
            b.iter(parse)
        });
        group.bench_function(format!("{format:?}, 10,000 readings, one thread"), |b| {
            b.iter(|| one_thread.install(parse))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("binary COPY encode");
    for count in [100, 10_000] {
        let readings = readings(count);
        let site = SiteId::new(42).unwrap();
        let rows: Vec<_> = readings.iter().map(|reading| (site, reading)).collect();
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(format!("{count} readings"), |b| {
            b.iter(|| copy::encode(black_box(&rows)))
        });
    }
    group.finish();
}

/// `body` compressed as a client would: gzip at flate2's default level (6), zstd at its default
/// (3).
fn compress(coding: Coding, body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match coding {
        Coding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(body).unwrap();
            encoder.finish().unwrap()
        }
        Coding::Zstd => zstd::bulk::compress(body, zstd::DEFAULT_COMPRESSION_LEVEL).unwrap(),
    }
}

/// The server's decompression of a v1 batch and of v2 bodies (`plume::http::encoding::decode`, the
/// decoder the routes feed), on one thread; the baseline, in the same run, parses the same decoded
/// body on one thread (the work every body costs, compressed or not). Prints each body's size plain
/// and compressed first.
fn decompress(c: &mut Criterion) {
    let mut group = c.benchmark_group("decompress");
    group.measurement_time(std::time::Duration::from_secs(3));
    let key = HeaderValue::from_static("bench-key-0001");
    let window = AcceptedWindow::default();
    let writer = plume::auth::Principal::unrestricted().client;
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let bodies = [
        (
            "v1 JSON, 100 readings",
            None,
            request_body(MAX_READINGS_PER_BATCH),
            100,
        ),
        (
            "v2 NDJSON, 10,000 readings",
            Some(BulkFormat::Ndjson),
            bulk_body(BulkFormat::Ndjson, 10_000),
            10_000,
        ),
        (
            "v2 CSV, 10,000 readings",
            Some(BulkFormat::Csv),
            bulk_body(BulkFormat::Csv, 10_000),
            10_000,
        ),
    ];
    for (name, format, body, readings) in bodies {
        let gzip = compress(Coding::Gzip, &body);
        let zstd = compress(Coding::Zstd, &body);
        println!(
            "{name}: {} bytes plain, {} gzip ({:.1}%), {} zstd ({:.1}%)",
            body.len(),
            gzip.len(),
            100.0 * gzip.len() as f64 / body.len() as f64,
            zstd.len(),
            100.0 * zstd.len() as f64 / body.len() as f64,
        );
        group.throughput(Throughput::Elements(readings));
        for (coding, compressed) in [(Coding::Gzip, &gzip), (Coding::Zstd, &zstd)] {
            group.bench_function(format!("{name}, {}", coding.name()), |b| {
                b.iter(|| decode(coding, black_box(compressed), body.len()).unwrap())
            });
        }
        group.bench_function(
            format!("{name}, baseline: parse the plain body"),
            |b| match format {
                None => b.iter(|| parse_batch(black_box(&body), Some(&key), &window, now()).unwrap()),
                Some(format) => b.iter(|| {
                    one_thread.install(|| {
                        parse_bulk(black_box(&body), format, Some(&key), &window, now(), &writer).unwrap()
                    })
                }),
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse, parse_bulk_bodies, encode, decompress);
criterion_main!(benches);
