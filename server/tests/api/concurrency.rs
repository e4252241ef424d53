//! Many writers to one site at once: no error, no deadlock, nothing lost or counted twice.

use std::collections::HashSet;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// Sends every `(key, body)` at once and returns the statuses and bodies in order.
async fn send_all(app: &TestApp, batches: &[(String, Value)]) -> Vec<(StatusCode, Value)> {
    let requests = batches
        .iter()
        .map(|(key, body)| async move { status_and_body(app.ingest(key, body).await).await });
    join_all(requests).await
}

async fn run_mixed_writers(writers: usize) {
    let app = spawn_app_with_connections(writers as u32 + 4).await;
    let id = app.create_site("Contended", "1000000").await;
    let start = hours_ago(48);
    let mut batches = Vec::new();
    for writer in 0..writers {
        let body = match writer % 4 {
            // Distinct readings: a source of its own.
            0 => json!({"site_id": id, "readings": readings(&format!("own-{writer}"), &start, 50, "1.5")}),
            // Overlapping: the same shared source, windows of 40 minutes shifted by 5 per writer.
            1 => {
                let shifted = (start.parse::<chrono::DateTime<chrono::Utc>>().unwrap()
                    + chrono::Duration::minutes(5 * writer as i64))
                .to_rfc3339();
                json!({"site_id": id, "readings": readings("shared", &shifted, 40, "2")})
            }
            // Identical payloads under different keys.
            2 => json!({"site_id": id, "readings": readings("identical", &start, 30, "0.1")}),
            // Identical payloads under the same key (retries racing each other).
            _ => json!({"site_id": id, "readings": readings("retried", &start, 20, "3")}),
        };
        let key = if writer % 4 == 3 {
            "retry-key".to_string()
        } else {
            format!("writer-{writer}")
        };
        batches.push((key, body));
    }

    let results = send_all(&app, &batches).await;

    let mut stored_under_retry_key = 0;
    let mut accepted_total = 0;
    for ((key, _), (status, body)) in batches.iter().zip(&results) {
        assert!(status.is_success(), "{key}: {status} {body}");
        if key == "retry-key" {
            if *status == StatusCode::CREATED {
                stored_under_retry_key += 1;
            } else {
                assert_eq!(body["data"]["replayed"], true);
            }
        }
        if *status == StatusCode::CREATED {
            accepted_total += body["data"]["readings_accepted"].as_i64().unwrap();
        }
    }
    assert_eq!(
        stored_under_retry_key, 1,
        "a key is stored once however many retries race"
    );

    // Every newly stored reading was counted once, and the total is the sum of the stored rows.
    let (_, count) = app.assert_totals_match_rows(id).await;
    assert_eq!(count, accepted_total);
    let distinct_keys: HashSet<&String> = batches.iter().map(|(k, _)| k).collect();
    let claimed: i64 = sqlx::query_scalar("select count(*) from ingest_batches where site_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(claimed as usize, distinct_keys.len());

    // What the rows must be, independently of the service's own counters.
    let own = (0..writers).filter(|w| w % 4 == 0).count() as i64 * 50;
    let shared_writers: Vec<i64> = (0..writers).filter(|w| w % 4 == 1).map(|w| w as i64).collect();
    let shared = match (shared_writers.first(), shared_writers.last()) {
        (Some(first), Some(last)) => 5 * (last - first) + 40,
        _ => 0,
    };
    let identical = if writers > 2 { 30 } else { 0 };
    let retried = if writers > 3 { 20 } else { 0 };
    assert_eq!(count, own + shared + identical + retried);
}

#[tokio::test]
async fn ten_concurrent_writers_to_one_site() {
    run_mixed_writers(10).await;
}

#[tokio::test]
async fn fifty_concurrent_writers_to_one_site() {
    run_mixed_writers(50).await;
}

#[tokio::test]
async fn concurrent_retries_of_one_batch_store_it_once() {
    let app = spawn_app_with_connections(24).await;
    let id = app.create_site("Retried", "10").await;
    let body = json!({"site_id": id, "readings": readings("a", &hours_ago(3), 100, "0.1")});
    let batches: Vec<(String, Value)> = (0..20).map(|_| ("one-key".to_string(), body.clone())).collect();
    let results = send_all(&app, &batches).await;
    let created = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let replayed = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!((created, replayed), (1, 19));
    for (_, body) in &results {
        assert_eq!(body["data"]["readings_accepted"], 100);
        assert_eq!(body["data"]["total_emissions_to_date"], "10.000000");
        assert_eq!(body["data"]["compliance_status"], "Within Limit");
    }
    assert_eq!(app.assert_totals_match_rows(id).await, (10_000_000, 100));
}

#[tokio::test]
async fn concurrent_writers_to_many_sites() {
    let app = spawn_app_with_connections(24).await;
    let mut sites = Vec::new();
    for i in 0..5 {
        sites.push(app.create_site(&format!("site {i}"), "100").await);
    }
    let start = hours_ago(30);
    let batches: Vec<(String, Value)> = (0..40)
        .map(|i| {
            let site = sites[i % sites.len()];
            let body =
                json!({"site_id": site, "readings": readings(&format!("s{}", i % 3), &start, 25, "0.5")});
            (format!("b-{i}"), body)
        })
        .collect();
    let results = send_all(&app, &batches).await;
    assert!(results.iter().all(|(s, _)| *s == StatusCode::CREATED));
    for site in sites {
        // 8 batches per site over 3 sources of 25 readings each: 75 distinct readings.
        assert_eq!(app.assert_totals_match_rows(site).await, (37_500_000, 75));
    }
}
