//! The transactional outbox, write side: events are written with the batch or not at all.

use chrono::Datelike;
use plume::outbox::admin;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{
    batch, hours_ago, readings, spawn_app, spawn_app_with_connections, status_and_body, TestApp,
};

/// `(event_id, event_type, site_id, seq, data)` of every event written, by site and sequence.
pub async fn stored_events(pool: &PgPool) -> Vec<(String, String, i64, i64, Value)> {
    sqlx::query_as(
        "select event_id::text, event_type, site_id, seq, data from outbox_events order by site_id, seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

pub async fn pending(pool: &PgPool) -> i64 {
    admin::status(pool).await.unwrap().pending
}

/// Stores one new reading of `value` kg for `site`, `minutes` minutes into the last day.
pub async fn ingest_one(app: &TestApp, site: i64, key: &str, minute: i64, value: &str) {
    let at = chrono::Utc::now() - chrono::Duration::hours(20) + chrono::Duration::minutes(minute);
    let body = batch(
        site,
        &[("s", &at.format("%Y-%m-%dT%H:%M:00Z").to_string(), value)],
    );
    let (status, body) = status_and_body(app.ingest(key, &body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_stored_batch_writes_one_event_and_replays_or_duplicates_write_none() {
    let app = spawn_app().await;
    let site = app.create_site("Events", "100").await;
    let body = json!({"site_id": site, "readings": readings("a", &hours_ago(3), 3, "2")});

    assert_eq!(app.ingest("first", &body).await.status(), StatusCode::CREATED);
    let events = stored_events(&app.pool).await;
    assert_eq!(events.len(), 1);
    let (_, event_type, event_site, seq, data) = &events[0];
    assert_eq!(
        (event_type.as_str(), *event_site, *seq),
        ("measurements.ingested", site, 1)
    );
    assert_eq!(data["batch_id"], "first");
    assert_eq!(data["readings_accepted"], 3);
    assert_eq!(data["accepted_emissions"], "6.000000");
    assert_eq!(data["total_emissions_to_date"], "6.000000");
    assert_eq!(data["compliance_status"], "Within Limit");

    assert_eq!(
        app.ingest("first", &body).await.status(),
        StatusCode::OK,
        "a replay"
    );
    assert_eq!(
        app.ingest("again", &body).await.status(),
        StatusCode::CREATED,
        "all duplicates"
    );
    assert_eq!(stored_events(&app.pool).await.len(), 1, "neither wrote an event");
}

#[tokio::test]
async fn a_rolled_back_batch_leaves_no_event_and_a_failed_event_stores_no_reading() {
    let app = spawn_app().await;
    let site = app.create_site("Atomic", "100").await;
    let at = chrono::Utc::now() - chrono::Duration::hours(2);
    let body = batch(site, &[("a", &at.format("%Y-%m-%dT%H:%M:00Z").to_string(), "5")]);

    // Readings that cannot be stored (their month's partition is gone): no event either.
    let partition = crate::catalog::partition_holding(&app.pool, "measurements", at)
        .await
        .unwrap();
    let detach = format!("alter table measurements detach partition {partition}");
    sqlx::raw_sql(&detach).execute(&app.pool).await.unwrap();
    let (status, _) = status_and_body(app.ingest("no-partition", &body).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(stored_events(&app.pool).await.is_empty());
    let attach = format!(
        "alter table measurements attach partition {partition} for values from ('{}') to ('{}')",
        at.format("%Y-%m-01"),
        (at.date_naive().with_day(1).unwrap() + chrono::Months::new(1)).format("%Y-%m-%d")
    );
    sqlx::raw_sql(&attach).execute(&app.pool).await.unwrap();

    // An event that cannot be written: the readings are not stored either.
    sqlx::raw_sql(
        "create function refuse_poison() returns trigger language plpgsql as $$
         begin
             if new.data->>'batch_id' = 'poison' then raise exception 'event refused'; end if;
             return new;
         end $$;
         create trigger refuse_poison before insert on outbox_events
             for each row execute function refuse_poison();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, _) = status_and_body(app.ingest("poison", &body).await).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        app.assert_totals_match_rows(site).await,
        (0, 0),
        "the readings rolled back with the event"
    );
    assert!(stored_events(&app.pool).await.is_empty());

    assert_eq!(app.ingest("fine", &body).await.status(), StatusCode::CREATED);
    assert_eq!(stored_events(&app.pool).await.len(), 1);
    assert_eq!(app.assert_totals_match_rows(site).await, (5_000_000, 1));
}

#[tokio::test]
async fn fifty_concurrent_batches_crossing_the_limit_raise_exactly_one_limit_exceeded() {
    let app = spawn_app_with_connections(20).await;
    let site = app.create_site("Racing", "10").await;
    let start = hours_ago(10);
    let batches = (0..50).map(|i| {
        let reading = readings("a", &start, 50, "1").swap_remove(i);
        let body = json!({"site_id": site, "readings": [reading]});
        let app = &app;
        async move { app.ingest(&format!("race-{i}"), &body).await.status() }
    });
    let statuses = futures_util::future::join_all(batches).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED), "{statuses:?}");

    let events = stored_events(&app.pool).await;
    let exceeded: Vec<_> = events.iter().filter(|e| e.1 == "site.limit_exceeded").collect();
    assert_eq!(exceeded.len(), 1, "exactly one crossing");
    assert_eq!(exceeded[0].4["total_emissions_before"], "10.000000");
    assert_eq!(exceeded[0].4["total_emissions_to_date"], "11.000000");
    assert_eq!(
        events.iter().filter(|e| e.1 == "measurements.ingested").count(),
        50
    );
    let sequences: Vec<i64> = events.iter().map(|e| e.3).collect();
    assert_eq!(sequences, (1..=51).collect::<Vec<_>>(), "one gapless stream");
}
