//! Clients that would hold the service: a header trickled a byte at a time, thousands of idle
//! connections, a request that takes too long.

use std::time::{Duration, Instant};

use plume::db::PoolSettings;
use plume::http::server::{raise_open_file_limit, ServeLimits};
use plume::state::Settings;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{batch, hours_ago, spawn_app, spawn_app_with, status_and_body};

fn with_limits(limits: ServeLimits) -> Settings {
    Settings {
        limits,
        ..Settings::default()
    }
}

#[tokio::test]
async fn a_header_sent_a_byte_a_second_is_cut_off() {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let app = spawn_app_with(with_limits(limits), PoolSettings::default()).await;
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let started = Instant::now();
    let mut cut_off = None;
    for byte in b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n".iter().cycle().take(20) {
        if stream.write_all(&[*byte]).await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        // The server closes its side: a read returns the end (or an error) at once.
        let mut answer = [0u8; 256];
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut answer)).await {
            if read.map_or(true, |n| n == 0 || answer.starts_with(b"HTTP/1.1 408")) {
                cut_off = Some(started.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cut_off = cut_off.expect("the trickling client is cut off");
    assert!(cut_off < Duration::from_secs(4), "{cut_off:?}");
}

#[tokio::test]
async fn five_thousand_idle_connections_do_not_keep_a_request_waiting() {
    raise_open_file_limit();
    let app = spawn_app().await;
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut idle = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        idle.push(TcpStream::connect(&host).await.unwrap());
    }
    let started = Instant::now();
    let (status, _) = status_and_body(app.get("/v1/sites").await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_and_old_ones_served() {
    let limits = ServeLimits {
        max_connections: 3,
        ..ServeLimits::default()
    };
    let app = spawn_app_with(with_limits(limits), PoolSettings::default()).await;
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&host).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&host).await.unwrap();
    extra
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok();
    let mut answer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut answer))
        .await
        .unwrap();
    assert!(
        read.map_or(true, |n| n == 0),
        "the fourth connection is closed unanswered"
    );
    // A held connection is still served.
    held[0]
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let read = held[0].read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_503_and_its_retry_counts_once() {
    let limits = ServeLimits {
        request_timeout: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let app = spawn_app_with(with_limits(limits), PoolSettings::default()).await;
    let id = app.create_site("Slow", "100").await;
    let body = batch(id, &[("a", &hours_ago(1), "2")]);
    let holding = app.hold_site_lock(id).await;
    let (status, answer) = status_and_body(app.ingest("slow-1", &body).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "UNAVAILABLE");
    drop(holding);
    let mut stored = false;
    for _ in 0..50 {
        let (status, _) = status_and_body(app.ingest("slow-1", &body).await).await;
        if status == StatusCode::OK || status == StatusCode::CREATED {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored);
    assert_eq!(app.assert_totals_match_rows(id).await, (2_000_000, 1));
}

#[tokio::test]
async fn a_lock_held_too_long_is_503_from_the_database_and_the_retry_counts_once() {
    let pool = PoolSettings {
        lock_timeout: Duration::from_millis(500),
        ..PoolSettings::default()
    };
    let app = spawn_app_with(Settings::default(), pool).await;
    let id = app.create_site("Locked", "100").await;
    let body = batch(id, &[("a", &hours_ago(1), "3")]);
    let holding = app.hold_site_lock(id).await;
    let started = Instant::now();
    let (status, answer) = status_and_body(app.ingest("locked-1", &body).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.claimed_batches().await, 0, "nothing half-stored");
    drop(holding);
    let (status, _) = status_and_body(app.ingest("locked-1", &body).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.assert_totals_match_rows(id).await, (3_000_000, 1));
}

#[tokio::test]
async fn a_request_for_another_host_is_refused() {
    let settings = Settings {
        allowed_hosts: plume::http::server::default_allowed_hosts("127.0.0.1:8080".parse().unwrap()),
        ..Settings::default()
    };
    let app = spawn_app_with(settings, PoolSettings::default()).await;
    let rebound = app
        .client
        .get(format!("{}/v1/sites", app.address))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    let (status, _) = status_and_body(app.get("/v1/sites").await).await;
    assert_eq!(status, StatusCode::OK, "127.0.0.1 with its port is allowed");
}

/// A site with `rows` readings written straight into the table (a few MB of export).
async fn site_with_rows(app: &crate::helpers::TestApp, rows: i64) -> i64 {
    let id = app.create_site("Exported", "100").await;
    sqlx::query(
        "insert into measurements (site_id, source_id, measured_at, value_mg)
         select $1, 'source-' || (n % 10), now() - interval '1 hour' - n * interval '1 second', 1000
           from generate_series(1, $2) n",
    )
    .bind(id)
    .bind(rows)
    .execute(&app.pool)
    .await
    .unwrap();
    id
}

fn export_limits(limits: plume::query::export::ExportLimits) -> Settings {
    Settings {
        exports: limits,
        ..Settings::default()
    }
}

#[tokio::test]
async fn an_export_that_runs_too_long_or_too_slowly_is_ended_and_frees_its_slot() {
    use plume::query::export::ExportLimits;
    for limits in [
        ExportLimits {
            max_duration: Duration::from_secs(2),
            min_bytes_per_second: 1,
            grace: Duration::from_secs(600),
        },
        ExportLimits {
            max_duration: Duration::from_secs(600),
            min_bytes_per_second: 4 * 1024 * 1024,
            grace: Duration::from_millis(500),
        },
    ] {
        let app = spawn_app_with(export_limits(limits), PoolSettings::default()).await;
        let site = site_with_rows(&app, 300_000).await;
        let url = format!("{}/v2/export?site_id={site}&format=csv", app.address);
        let started = Instant::now();
        let mut response = app.client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // A chunk now and then: never the whole export.
        let mut received = 0usize;
        let ended = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => received += chunk.len(),
                Ok(None) => break false,
                Err(_) => break true,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(started.elapsed() < Duration::from_secs(90), "never ended");
        };
        // An export that ran to its end finishes its body cleanly; one that was ended breaks off
        // with an error (how much arrived first depends on the socket buffers, so is not counted).
        assert!(ended, "{limits:?}: the export broke off, after {received} bytes");
        // Its slot is free again: a client's next export starts.
        let next = app.client.get(&url).send().await.unwrap();
        assert_eq!(next.status(), StatusCode::OK);
    }
}

/// Bulk uploads share a memory budget, reserved before a body is read: a flood of large uploads is
/// answered 503 with `Retry-After` beyond it instead of growing the process, while small v1 batches
/// go on; once the uploads in flight end, the next is served.
#[tokio::test]
async fn bulk_uploads_beyond_the_memory_budget_are_503_and_v1_batches_go_on() {
    let settings = plume::state::Settings {
        // 1 MiB: one upload declaring 200 KB reserves 600 KB of it.
        bulk_memory_bytes: 1024 * 1024,
        ..plume::state::Settings::default()
    };
    let app = spawn_app_with(settings, PoolSettings::default()).await;
    let site = app.create_site("Flooded", "1000").await;

    // An upload that declares 200 KB and sends a little: it holds its reservation while it trickles.
    let mut held = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v2/ingest HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
         content-type: text/csv\r\nidempotency-key: held\r\ncontent-length: 200000\r\n\r\n\
         site_id,source_id,timestamp,value\r\n",
        app.admin_token
    );
    held.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let csv = format!("site_id,source_id,timestamp,value\n{site},s,{},1\n", hours_ago(1));
    let padded = format!("{csv}{}", "\n".repeat(200_000 - csv.len()));
    let response = app.bulk(Some("second"), "text/csv", padded.clone()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, body) = status_and_body(response).await;
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert!(app.metric("plume_bulk_refused_busy_total").await >= 1.0);

    // A small v1 batch is not held back.
    let v1 = app
        .ingest("small", &batch(site, &[("v1", &hours_ago(2), "1")]))
        .await;
    assert_eq!(v1.status(), StatusCode::CREATED);

    // The held upload goes away: its reservation is returned, and the retry is stored once.
    drop(held);
    let mut stored = None;
    for _ in 0..50 {
        let response = app.bulk(Some("second"), "text/csv", padded.clone()).await;
        if response.status() == StatusCode::CREATED {
            stored = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored.is_some(), "served once the budget is free");
    assert_eq!(app.assert_totals_match_rows(site).await, (2_000_000, 2));
}
