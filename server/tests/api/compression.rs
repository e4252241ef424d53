//! Compressed uploads (`Content-Encoding: gzip` or `zstd`) on `POST /v1/ingest` and
//! `POST /v2/ingest`: they store exactly what the plain body stores; the body limits hold for the
//! decompressed body (a decompression bomb is refused quickly); other codings are 415 and broken
//! streams 400, storing nothing; and a retry compressed another way is a replay.

use std::io::Write;
use std::time::{Duration, Instant};

use plume::db::PoolSettings;
use plume::state::Settings;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::bulk::{as_csv, as_json, as_ndjson, spread};
use crate::helpers::*;

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";

/// How a body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Plain,
    Gzip,
    Zstd,
}

const EVERY_WIRE: [Wire; 3] = [Wire::Plain, Wire::Gzip, Wire::Zstd];

impl Wire {
    fn encode(self, body: &[u8]) -> Vec<u8> {
        match self {
            Self::Plain => body.to_vec(),
            Self::Gzip => gzip(body),
            Self::Zstd => zstd_with_checksum(body),
        }
    }

    fn content_encoding(self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::Gzip => Some("gzip"),
            Self::Zstd => Some("zstd"),
        }
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// zstd at its default level with a checksum, as the zstd command line writes it.
fn zstd_with_checksum(body: &[u8]) -> Vec<u8> {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    encoder.include_checksum(true).unwrap();
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// `POST path` with `body` sent as it is, under `content_type` and `content_encoding`.
async fn post(
    app: &TestApp,
    path: &str,
    key: &str,
    content_type: &str,
    content_encoding: Option<&str>,
    body: Vec<u8>,
) -> Response {
    let mut request = app
        .client
        .post(format!("{}{path}", app.address))
        .header("content-type", content_type)
        .header("idempotency-key", key)
        .body(body);
    if let Some(coding) = content_encoding {
        request = request.header("content-encoding", coding);
    }
    request.send().await.unwrap()
}

/// `body` on the v1 route, encoded as `wire` says.
async fn post_v1(app: &TestApp, key: &str, wire: Wire, body: &Value) -> Response {
    let encoded = wire.encode(body.to_string().as_bytes());
    post(app, "/v1/ingest", key, JSON, wire.content_encoding(), encoded).await
}

/// `body` on the v2 route as `content_type`, encoded as `wire` says.
async fn post_v2(app: &TestApp, key: &str, content_type: &str, wire: Wire, body: &str) -> Response {
    let encoded = wire.encode(body.as_bytes());
    post(
        app,
        "/v2/ingest",
        key,
        content_type,
        wire.content_encoding(),
        encoded,
    )
    .await
}

/// Every stored reading of `site` as `(source, time, mg)`, in order.
async fn stored(app: &TestApp, site: i64) -> Vec<(String, chrono::DateTime<chrono::Utc>, i64)> {
    sqlx::query_as(
        "select source_id, measured_at, value_mg from measurements where site_id = $1
          order by source_id, measured_at",
    )
    .bind(site)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn stored_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from measurements")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Idempotency keys claimed by v1 and v2 batches together.
async fn claimed_keys(app: &TestApp) -> i64 {
    sqlx::query_scalar("select (select count(*) from ingest_batches) + (select count(*) from bulk_batches)")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The receipt's data without what names the site or the key.
fn counts(receipt: &Value) -> Value {
    let mut data = receipt["data"].clone();
    let object = data.as_object_mut().unwrap();
    object.remove("site_id");
    object.remove("batch_id");
    data
}

#[tokio::test]
async fn a_v1_batch_sent_gzip_or_zstd_stores_exactly_what_the_plain_one_stores() {
    let app = spawn_app().await;
    let mut receipts = Vec::new();
    let mut rows = Vec::new();
    for wire in EVERY_WIRE {
        let site = app.create_site(&format!("{wire:?}"), "1000").await;
        let mut readings = readings("a", &hours_ago(5), 60, "1.25");
        readings.extend(readings_of("b", 30));
        let body = json!({"site_id": site, "readings": readings});

        let (status, receipt) = status_and_body(post_v1(&app, "k", wire, &body).await).await;

        assert_eq!(status, StatusCode::CREATED, "{wire:?}: {receipt}");
        assert_eq!(receipt["data"]["readings_accepted"], 90, "{wire:?}");
        assert_eq!(app.assert_totals_match_rows(site).await.1, 90, "{wire:?}");
        receipts.push(counts(&receipt));
        rows.push(stored(&app, site).await);
    }
    assert_eq!(receipts[1], receipts[0], "gzip's receipt");
    assert_eq!(receipts[2], receipts[0], "zstd's receipt");
    assert_eq!(rows[1], rows[0], "gzip's rows");
    assert_eq!(rows[2], rows[0], "zstd's rows");
}

/// `n` readings from `source` with values 0.001 kg apart, one a minute from four hours ago.
fn readings_of(source: &str, n: usize) -> Vec<Value> {
    let start: chrono::DateTime<chrono::Utc> = hours_ago(4).parse().unwrap();
    (0..n)
        .map(|i| {
            let at = start + chrono::Duration::minutes(i as i64);
            json!({"source_id": source, "timestamp": at.to_rfc3339(), "value": format!("0.{:03}", i + 1)})
        })
        .collect()
}

/// Writes readings as a v2 body in one format.
type Writer = fn(&[(i64, String, String, String)]) -> String;

#[tokio::test]
async fn a_v2_body_in_each_format_sent_gzip_or_zstd_stores_exactly_what_the_plain_one_stores() {
    let app = spawn_app().await;
    let formats: [(&str, Writer); 3] = [(JSON, as_json), (NDJSON, as_ndjson), (CSV, as_csv)];
    // One start for every body: the rows of each are compared, and the minute may turn meanwhile.
    let start = hours_ago(20);
    for (content_type, write) in formats {
        let mut receipts = Vec::new();
        let mut rows = Vec::new();
        for wire in EVERY_WIRE {
            let sites = [
                app.create_site(&format!("{content_type} {wire:?} 1"), "1000")
                    .await,
                app.create_site(&format!("{content_type} {wire:?} 2"), "1000")
                    .await,
            ];
            let body = write(&spread(&sites, &start, 2_000));
            let key = format!("{content_type} {wire:?}");

            let (status, receipt) =
                status_and_body(post_v2(&app, &key, content_type, wire, &body).await).await;

            assert_eq!(status, StatusCode::CREATED, "{content_type} {wire:?}: {receipt}");
            assert_eq!(
                receipt["data"]["readings_accepted"], 2_000,
                "{content_type} {wire:?}"
            );
            let mut per_site = Vec::new();
            for site in sites {
                assert_eq!(app.assert_totals_match_rows(site).await.1, 1_000);
                per_site.push(stored(&app, site).await);
            }
            let mut receipt = counts(&receipt);
            for site in receipt["sites"].as_array_mut().unwrap() {
                site.as_object_mut().unwrap().remove("site_id");
            }
            receipts.push(receipt);
            rows.push(per_site);
        }
        assert_eq!(receipts[1], receipts[0], "{content_type}: gzip's receipt");
        assert_eq!(receipts[2], receipts[0], "{content_type}: zstd's receipt");
        assert_eq!(rows[1], rows[0], "{content_type}: gzip's rows");
        assert_eq!(rows[2], rows[0], "{content_type}: zstd's rows");
    }
}

#[tokio::test]
async fn a_retry_compressed_another_way_or_not_at_all_is_a_replay() {
    let app = spawn_app().await;
    let site = app.create_site("Retried", "1000").await;
    let body = json!({"site_id": site, "readings": readings("a", &hours_ago(3), 50, "2")});
    let (status, first) = status_and_body(post_v1(&app, "v1-key", Wire::Gzip, &body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");

    // The very same decoded bytes (answered before parsing), then the same readings in another
    // order (answered by their canonical hash).
    let mut reordered = body.clone();
    reordered["readings"].as_array_mut().unwrap().reverse();
    for (wire, body) in [
        (Wire::Zstd, &body),
        (Wire::Plain, &body),
        (Wire::Zstd, &reordered),
    ] {
        let response = post_v1(&app, "v1-key", wire, body).await;
        assert_eq!(response.headers()["idempotent-replay"], "true", "{wire:?}");
        let (status, replay) = status_and_body(response).await;
        assert_eq!(status, StatusCode::OK, "{wire:?}: {replay}");
        assert_eq!(replay["data"]["replayed"], true);
        assert_eq!(
            counts(&replay)["readings_accepted"],
            first["data"]["readings_accepted"]
        );
    }
    // Other readings under the key, compressed or not, are still a reused key.
    let other = json!({"site_id": site, "readings": readings("a", &hours_ago(3), 49, "2")});
    let (status, refused) = status_and_body(post_v1(&app, "v1-key", Wire::Gzip, &other).await).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(app.assert_totals_match_rows(site).await, (100_000_000, 50));

    let sites = [site];
    let readings = spread(&sites, &hours_ago(10), 300);
    let (status, first) =
        status_and_body(post_v2(&app, "v2-key", NDJSON, Wire::Zstd, &as_ndjson(&readings)).await).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    for (wire, content_type, body) in [
        (Wire::Gzip, NDJSON, as_ndjson(&readings)),
        (Wire::Plain, NDJSON, as_ndjson(&readings)),
        (Wire::Gzip, CSV, as_csv(&readings)),
    ] {
        let response = post_v2(&app, "v2-key", content_type, wire, &body).await;
        assert_eq!(
            response.headers()["idempotent-replay"],
            "true",
            "{wire:?} {content_type}"
        );
        let (status, replay) = status_and_body(response).await;
        assert_eq!(status, StatusCode::OK, "{wire:?} {content_type}: {replay}");
        assert_eq!(replay["data"]["sites"], first["data"]["sites"]);
    }
    assert_eq!(app.assert_totals_match_rows(site).await.1, 350);
    assert_eq!(stored_rows(&app).await, 350);
    assert_eq!(claimed_keys(&app).await, 2);
}

/// Zeros, compressed as `wire` says: a mebibyte compressed once and repeated (gzip members or zstd
/// frames in a row, one body to the decoder) `mib` times.
fn bomb(wire: Wire, mib: usize) -> Vec<u8> {
    wire.encode(&vec![0; 1024 * 1024]).repeat(mib)
}

#[tokio::test]
async fn a_decompression_bomb_is_413_at_once_and_stores_nothing() {
    let app = spawn_app().await;
    let total_budget = app.state.bulk_memory.available_permits();
    // v1's limit is 1 MiB on the wire too: 512 MiB of zeros as gzip take about 520 KB.
    let cases = [
        ("/v1/ingest", JSON, Wire::Gzip, 512, 1024 * 1024),
        ("/v1/ingest", JSON, Wire::Zstd, 1024, 1024 * 1024),
        ("/v2/ingest", NDJSON, Wire::Gzip, 1024, 32 * 1024 * 1024),
        ("/v2/ingest", CSV, Wire::Zstd, 1024, 32 * 1024 * 1024),
    ];
    for (path, content_type, wire, mib, limit) in cases {
        let body = bomb(wire, mib);
        assert!(
            body.len() < limit,
            "{path} {wire:?}: the bomb fits the wire limit"
        );
        let coding = wire.content_encoding();
        let started = Instant::now();

        let response = post(&app, path, "bomb", content_type, coding, body).await;

        let elapsed = started.elapsed();
        let (status, body) = status_and_body(response).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path} {wire:?}: {body}");
        assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&limit.to_string()), "{message}");
        assert!(message.contains("decompressed"), "{message}");
        // Refused as soon as the decoded body passes the limit (a loose bound: a debug build on a
        // busy machine).
        assert!(elapsed < Duration::from_secs(10), "{path} {wire:?}: {elapsed:?}");
    }
    assert_eq!(stored_rows(&app).await, 0);
    assert_eq!(claimed_keys(&app).await, 0);
    assert_eq!(
        app.state.bulk_memory.available_permits(),
        total_budget,
        "budget returned"
    );
}

#[tokio::test]
async fn a_compressed_body_over_the_limit_on_the_wire_is_413_before_decoding() {
    let app = spawn_app().await;
    let site = app.create_site("Large", "1000").await;
    // Readings padded with noise (16 letters, xorshift): past 1 MiB even compressed.
    let mut state = 0x5eed_u64;
    let noise: String = (0..3_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state >> 60) as u8)
        })
        .collect();
    let body = json!({"site_id": site, "padding": noise, "readings": readings("a", &hours_ago(1), 1, "1")});
    let encoded = gzip(body.to_string().as_bytes());
    assert!(encoded.len() > 1024 * 1024);

    let (status, body) =
        status_and_body(post(&app, "/v1/ingest", "k", JSON, Some("gzip"), encoded).await).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        body["error"]["message"],
        "the request body is larger than 1048576 bytes"
    );
    assert_eq!(stored_rows(&app).await, 0);
}

#[tokio::test]
async fn other_codings_are_415_naming_the_ones_read_and_store_nothing() {
    let app = spawn_app().await;
    let site = app.create_site("Brotli", "1000").await;
    let v1 = json!({"site_id": site, "readings": readings("a", &hours_ago(1), 3, "1")}).to_string();
    let v2 = as_csv(&spread(&[site], &hours_ago(2), 3));
    for coding in ["br", "deflate", "gzip, gzip", "gzip, zstd"] {
        for (path, content_type, body) in [("/v1/ingest", JSON, &v1), ("/v2/ingest", CSV, &v2)] {
            let response = post(
                &app,
                path,
                "k",
                content_type,
                Some(coding),
                body.clone().into_bytes(),
            )
            .await;

            assert_eq!(
                response.headers()["accept-encoding"],
                "gzip, zstd",
                "{path} {coding}"
            );
            let (status, body) = status_and_body(response).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {coding}: {body}"
            );
            assert_eq!(body["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("gzip or zstd"), "{message}");
        }
    }
    // `identity` is the body as it is.
    let response = post(&app, "/v1/ingest", "k", JSON, Some("identity"), v1.into_bytes()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(stored_rows(&app).await, 3);
}

#[tokio::test]
async fn a_corrupt_or_cut_stream_is_400_stores_nothing_and_claims_no_key() {
    let app = spawn_app().await;
    let site = app.create_site("Corrupt", "1000").await;
    let v1 = json!({"site_id": site, "readings": readings("a", &hours_ago(1), 40, "1")});
    let v2 = as_ndjson(&spread(&[site], &hours_ago(2), 40));
    for wire in [Wire::Gzip, Wire::Zstd] {
        let coding = wire.content_encoding();
        let name = coding.unwrap();
        let compressed_v1 = wire.encode(v1.to_string().as_bytes());
        let compressed_v2 = wire.encode(v2.as_bytes());
        let mut flipped = compressed_v1.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        flipped[middle + 1] ^= 0x55;
        let cut = compressed_v2[..compressed_v2.len() - 4].to_vec();
        let plain = v1.to_string().into_bytes();
        let cases = [
            ("/v1/ingest", JSON, flipped),
            ("/v1/ingest", JSON, plain),
            ("/v2/ingest", NDJSON, cut),
            ("/v2/ingest", NDJSON, Vec::new()),
        ];
        for (path, content_type, body) in cases {
            let (status, body) =
                status_and_body(post(&app, path, "k", content_type, coding, body).await).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {name}: {body}");
            assert_eq!(body["error"]["code"], "MALFORMED_REQUEST");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!("the request body is not valid {name}: ")),
                "{message}"
            );
        }
    }
    assert_eq!(stored_rows(&app).await, 0);
    assert_eq!(claimed_keys(&app).await, 0);
    // The failed requests claimed nothing: the key stores the batch once it arrives whole.
    let (status, _) = status_and_body(post_v1(&app, "k", Wire::Gzip, &v1).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.assert_totals_match_rows(site).await, (40_000_000, 40));
}

/// A compressed upload reserves the route's whole limit from the bulk memory budget until its
/// body is read (its Content-Length says nothing of what it decodes to), then only what its
/// decoded body takes.
#[tokio::test]
async fn a_compressed_upload_reserves_the_whole_limit_until_it_is_read() {
    let settings = Settings {
        // 64 MiB: less than one compressed upload's 3 × 32 MiB, so one takes all of it.
        bulk_memory_bytes: 64 * 1024 * 1024,
        ..Settings::default()
    };
    let app = spawn_app_with(settings, PoolSettings::default()).await;
    let total_budget = app.state.bulk_memory.available_permits();
    let [held_site, other] = [
        app.create_site("Held", "1000").await,
        app.create_site("Other", "1000").await,
    ];
    let small = as_csv(&spread(&[other], &hours_ago(2), 10));

    // A gzip upload that declares 1,000 bytes and sends its first 10.
    let compressed = gzip(as_csv(&spread(&[held_site], &hours_ago(3), 100)).as_bytes());
    let mut held = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v2/ingest HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
         content-type: text/csv\r\ncontent-encoding: gzip\r\nidempotency-key: held\r\n\
         content-length: {}\r\n\r\n",
        app.admin_token,
        compressed.len()
    );
    held.write_all(head.as_bytes()).await.unwrap();
    held.write_all(&compressed[..10]).await.unwrap();
    wait_until(|| app.state.bulk_memory.available_permits() == 0).await;

    let response = post_v2(&app, "small", CSV, Wire::Plain, &small).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Its body read (and its batch waiting on the site's lock), it holds only what it decoded to.
    let lock = app.hold_site_lock(held_site).await;
    held.write_all(&compressed[10..]).await.unwrap();
    wait_until(|| app.state.bulk_memory.available_permits() > 0).await;
    assert!(app.state.bulk_memory.available_permits() >= total_budget - 64);
    let (status, body) = status_and_body(post_v2(&app, "small", CSV, Wire::Plain, &small).await).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    drop(lock);
    wait_until(|| app.state.bulk_memory.available_permits() == total_budget).await;
    assert_eq!(app.assert_totals_match_rows(held_site).await.1, 100);
    assert_eq!(app.assert_totals_match_rows(other).await.1, 10);
}

async fn wait_until(condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(30), "never came true");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_compressed_body_on_an_endpoint_that_takes_none_is_415_and_creates_nothing() {
    let app = spawn_app().await;
    let site = json!({"name": "Squeezed", "emission_limit": "10"}).to_string();
    for (coding, body) in [
        ("gzip", Wire::Gzip.encode(site.as_bytes())),
        ("zstd", Wire::Zstd.encode(site.as_bytes())),
        ("br", site.clone().into_bytes()),
    ] {
        let response = post(&app, "/v1/sites", "k", JSON, Some(coding), body).await;
        assert_eq!(response.headers()["accept-encoding"], "identity", "{coding}");
        let (status, body) = status_and_body(response).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{coding}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("without a Content-Encoding"), "{message}");
    }
    let sites: i64 = sqlx::query_scalar("select count(*) from sites")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sites, 0);
    let response = post(&app, "/v1/sites", "k", JSON, Some("identity"), site.into_bytes()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}
