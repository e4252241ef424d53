//! The in-order fast path: fresh readings go straight in, late ones through conflict checks, and a
//! stored reading the fast path did not expect sends the batch back through conflict checks.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Executor};

use crate::helpers::*;

/// `n` readings of 1 kg from `source`, one a minute from `start`.
fn minutes(source: &str, start: &str, n: usize) -> Vec<serde_json::Value> {
    readings(source, start, n, "1")
}

#[tokio::test]
async fn a_batch_mixing_new_late_and_repeated_readings_counts_each_once() {
    let app = spawn_app().await;
    let site = app.create_site("A", "1000").await;
    let start = hours_ago(10);
    let first = json!({"site_id": site, "readings": minutes("a", &start, 30)});
    let (status, _) = status_and_body(app.ingest("first", &first).await).await;
    assert_eq!(status, StatusCode::CREATED);

    // Minutes -10..60 of "a": 10 late and new, 30 repeated, 30 new after; and a new source "b".
    let earlier = (start.parse::<chrono::DateTime<chrono::Utc>>().unwrap() - chrono::Duration::minutes(10))
        .to_rfc3339();
    let mut mixed = minutes("a", &earlier, 70);
    mixed.extend(minutes("b", &start, 5));
    let (status, body) = status_and_body(
        app.ingest("mixed", &json!({"site_id": site, "readings": mixed}))
            .await,
    )
    .await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["readings_accepted"], 45);
    assert_eq!(body["data"]["readings_duplicate"], 30);
    assert_eq!(app.assert_totals_match_rows(site).await, (75_000_000, 75));
    // The late and repeated readings were found by the look-up, not by a failed COPY.
    assert_eq!(app.metric("plume_ingest_fresh_conflicts_total").await, 0.0);
}

#[tokio::test]
async fn a_reading_stored_behind_the_lock_sends_the_batch_through_conflict_checks() {
    let app = spawn_app().await;
    let site = app.create_site("A", "1000").await;
    let start = hours_ago(10);
    let first = json!({"site_id": site, "readings": minutes("a", &start, 10)});
    assert_eq!(app.ingest("first", &first).await.status(), StatusCode::CREATED);

    // A writer that ignores the site lock stores minute 20, uncommitted: the batch's probe cannot
    // see it, takes minutes 10..20 for new, and its COPY waits on the unique index until the
    // writer commits, then meets the duplicate.
    let later = (start.parse::<chrono::DateTime<chrono::Utc>>().unwrap() + chrono::Duration::minutes(10))
        .to_rfc3339();
    let minute_20 = start.parse::<chrono::DateTime<chrono::Utc>>().unwrap() + chrono::Duration::minutes(20);
    let mut intruder = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
    intruder.execute("begin").await.unwrap();
    sqlx::query(
        "insert into measurements (site_id, source_id, measured_at, value_mg) values ($1, 'a', $2, 1000000)",
    )
    .bind(site)
    .bind(minute_20)
    .execute(&mut intruder)
    .await
    .unwrap();
    let batch = json!({"site_id": site, "readings": minutes("a", &later, 11)});
    let sending = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/v1/ingest", app.address);
        async move {
            let response = client
                .post(url)
                .header("Idempotency-Key", "second")
                .json(&batch)
                .send()
                .await
                .unwrap();
            status_and_body(response).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    intruder.execute("commit").await.unwrap();

    let (status, body) = sending.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["readings_accepted"], 10);
    assert_eq!(body["data"]["readings_duplicate"], 1);
    let rows: i64 = sqlx::query_scalar("select count(*) from measurements where site_id = $1")
        .bind(site)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 21);
    // The site counts what plume stored: 20 readings (the intruder's row is not plume's).
    assert_eq!(app.metrics(site).await["reading_count"], 20);
    assert_eq!(app.metric("plume_ingest_fresh_conflicts_total").await, 1.0);
}
