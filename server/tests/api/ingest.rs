//! Ingestion semantics: idempotency, overlap, batch size, exactness.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn a_replay_returns_the_original_numbers_and_stores_nothing() {
    let app = spawn_app().await;
    let id = app.create_site("Replayed", "100").await;
    let first = batch(id, &[("a", &hours_ago(5), "10"), ("a", &hours_ago(4), "5")]);
    let (status, original) = status_and_body(app.ingest("k-1", &first).await).await;
    assert_eq!(status, StatusCode::CREATED);
    // Another batch moves the total on before the retry arrives.
    app.ingest("k-2", &batch(id, &[("a", &hours_ago(3), "1")])).await;

    // The same readings in another order and spelling are the same payload.
    let retried = json!({"site_id": id, "readings": [
        {"source_id": "a", "timestamp": hours_ago(4), "value": "5000", "unit": "g"},
        {"source_id": "a", "timestamp": hours_ago(5), "value": 10.0},
    ]});
    let response = app.ingest("k-1", &retried).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["idempotent-replay"], "true");
    let (_, replay) = status_and_body(response).await;
    let mut expected = original["data"].clone();
    expected["replayed"] = json!(true);
    assert_eq!(replay["data"], expected);
    assert_eq!(replay["data"]["total_emissions_to_date"], "15.000000");

    let (total, count) = app.assert_totals_match_rows(id).await;
    assert_eq!((total, count), (16_000_000, 3));
}

#[tokio::test]
async fn a_reused_key_with_another_payload_is_409_and_stores_nothing() {
    let app = spawn_app().await;
    let id = app.create_site("Reused", "100").await;
    let at = hours_ago(2);
    assert_eq!(
        app.ingest("same", &batch(id, &[("a", &at, "1")])).await.status(),
        StatusCode::CREATED
    );
    let (status, body) = status_and_body(app.ingest("same", &batch(id, &[("a", &at, "2")])).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
    let (status, _) = status_and_body(
        app.ingest("same", &batch(id, &[("a", &at, "1"), ("b", &at, "1")]))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(app.assert_totals_match_rows(id).await, (1_000_000, 1));
}

#[tokio::test]
async fn keys_are_per_site() {
    let app = spawn_app().await;
    let a = app.create_site("A", "100").await;
    let b = app.create_site("B", "100").await;
    let at = hours_ago(1);
    assert_eq!(
        app.ingest("shared", &batch(a, &[("s", &at, "1")])).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.ingest("shared", &batch(b, &[("s", &at, "1")])).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(app.assert_totals_match_rows(a).await, (1_000_000, 1));
    assert_eq!(app.assert_totals_match_rows(b).await, (1_000_000, 1));
}

#[tokio::test]
async fn overlapping_batches_count_only_new_readings() {
    let app = spawn_app().await;
    let id = app.create_site("Overlap", "1000").await;
    let (t1, t2, t3) = (hours_ago(3), hours_ago(2), hours_ago(1));
    let (_, first) = status_and_body(
        app.ingest("o-1", &batch(id, &[("a", &t1, "1"), ("a", &t2, "2")]))
            .await,
    )
    .await;
    assert_eq!(first["data"]["readings_accepted"], 2);
    // t2 again (even with another value: the stored reading wins, nothing is counted twice), t3 new.
    let (status, second) = status_and_body(
        app.ingest(
            "o-2",
            &batch(id, &[("a", &t2, "7"), ("a", &t3, "4"), ("b", &t2, "8")]),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["data"]["readings_submitted"], 3);
    assert_eq!(second["data"]["readings_accepted"], 2);
    assert_eq!(second["data"]["readings_duplicate"], 1);
    assert_eq!(second["data"]["accepted_emissions"], "12.000000");
    assert_eq!(second["data"]["total_emissions_to_date"], "15.000000");
    // All already stored: accepted 0, version unchanged.
    let version = app.metrics(id).await["version"].clone();
    let (status, third) = status_and_body(app.ingest("o-3", &batch(id, &[("a", &t1, "1")])).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(third["data"]["readings_accepted"], 0);
    assert_eq!(third["data"]["accepted_emissions"], "0.000000");
    assert_eq!(app.metrics(id).await["version"], version);
    assert_eq!(app.assert_totals_match_rows(id).await, (15_000_000, 4));
}

#[tokio::test]
async fn a_batch_holds_1_to_100_readings() {
    let app = spawn_app().await;
    let id = app.create_site("Sizes", "100000").await;
    let start = hours_ago(10);
    let hundred = json!({"site_id": id, "readings": readings("a", &start, 100, "1")});
    let (status, body) = status_and_body(app.ingest("s-100", &hundred).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["data"]["readings_accepted"], 100);

    let too_many = json!({"site_id": id, "readings": readings("b", &start, 101, "1")});
    let (status, body) = status_and_body(app.ingest("s-101", &too_many).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "readings");
    let (status, body) =
        status_and_body(app.ingest("s-0", &json!({"site_id": id, "readings": []})).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "readings");
    assert_eq!(app.assert_totals_match_rows(id).await, (100_000_000, 100));
}

#[tokio::test]
async fn sums_are_exact_and_the_limit_itself_is_within_it() {
    let app = spawn_app().await;
    let id = app.create_site("Exact", "1").await;
    let tenths = json!({"site_id": id, "readings": readings("a", &hours_ago(5), 10, "0.1")});
    let (_, body) = status_and_body(app.ingest("e-1", &tenths).await).await;
    assert_eq!(body["data"]["accepted_emissions"], "1.000000");
    assert_eq!(body["data"]["total_emissions_to_date"], "1.000000");
    assert_eq!(body["data"]["compliance_status"], "Within Limit");
    let metrics = app.metrics(id).await;
    assert_eq!(metrics["compliance_status"], "Within Limit");
    assert_eq!(metrics["utilization_pct"], "100.00");

    let one_mg = json!({"site_id": id, "readings": [{"timestamp": hours_ago(1), "value": 1, "unit": "g"}]});
    let (_, body) = status_and_body(app.ingest("e-2", &one_mg).await).await;
    assert_eq!(body["data"]["total_emissions_to_date"], "1.001000");
    assert_eq!(body["data"]["compliance_status"], "Limit Exceeded");
    let tiny = json!({"site_id": id, "readings": [{"timestamp": hours_ago(2), "value": "0.000000001", "unit": "t"}]});
    let (_, body) = status_and_body(app.ingest("e-3", &tiny).await).await;
    assert_eq!(body["data"]["accepted_emissions"], "0.000001");
    assert_eq!(app.assert_totals_match_rows(id).await, (1_001_001, 12));
}

#[tokio::test]
async fn a_missing_site_is_404_and_nothing_is_claimed() {
    let app = spawn_app().await;
    let (status, body) = status_and_body(
        app.ingest("nosite", &batch(987654, &[("a", &hours_ago(1), "1")]))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SITE_NOT_FOUND");
    assert_eq!(app.claimed_batches().await, 0);
}

#[tokio::test]
async fn the_demo_seed_is_idempotent_and_exact() {
    let app = spawn_app().await;
    let now = chrono::Utc::now();
    let first = plume::seed::seed_demo(&app.app_pool, now).await.unwrap();
    assert_eq!((first.sites_created, first.readings_stored), (5, 280));
    let second = plume::seed::seed_demo(&app.app_pool, now).await.unwrap();
    assert_eq!(
        (second.sites_created, second.sites_skipped, second.readings_stored),
        (0, 5, 0)
    );
    let (_, body) = status_and_body(app.get("/v1/sites").await).await;
    let statuses: Vec<(&str, &str)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["total_emissions_to_date"].as_str().unwrap(),
                s["compliance_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("1930.500000", "Within Limit"),
            ("1896.000000", "Within Limit"),
            ("1452.000000", "Limit Exceeded"),
            ("800.000000", "Within Limit"),
            ("0.000000", "Within Limit")
        ]
    );
    for site in body["data"].as_array().unwrap() {
        app.assert_totals_match_rows(site["id"].as_i64().unwrap()).await;
    }
    let _: Value = body;
}

#[tokio::test]
async fn a_retry_is_replayed_even_after_its_readings_left_the_window() {
    // One database, two services: the second accepts only the last 30 days.
    let app = spawn_app().await;
    let id = app.create_site("Late retry", "100").await;
    let old = hours_ago(24 * 100);
    let body = batch(id, &[("a", &old, "4")]);
    let (status, original) = status_and_body(app.ingest("late-1", &body).await).await;
    assert_eq!(status, StatusCode::CREATED);

    let narrow = plume::state::Settings {
        window: partitioning::AcceptedWindow {
            max_age: chrono::Duration::days(30),
            ..Default::default()
        },
        ..Default::default()
    };
    let app_pool = plume::db::connect(&crate::helpers::app_url(&app.database_url), &Default::default())
        .await
        .unwrap();
    let later = spawn_app_on(&app.database_url, app_pool, narrow).await;
    let (status, replay) = status_and_body(later.ingest("late-1", &body).await).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(
        replay["data"]["total_emissions_to_date"],
        original["data"]["total_emissions_to_date"]
    );
    let (status, refused) = status_and_body(later.ingest("late-2", &body).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["details"][0]["path"], "readings[0].timestamp");
    assert_eq!(app.assert_totals_match_rows(id).await, (4_000_000, 1));
}

#[tokio::test]
async fn a_retry_after_its_receipt_was_pruned_counts_nothing_twice() {
    let app = spawn_app().await;
    let id = app.create_site("Pruned", "100").await;
    let body = batch(id, &[("a", &hours_ago(2), "1.5"), ("b", &hours_ago(2), "2")]);
    let response = app.ingest("old-key", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let bulk = format!("site_id,source_id,timestamp,value\n{id},c,{},4\n", hours_ago(3));
    assert_eq!(
        app.bulk(Some("old-bulk"), "text/csv", bulk.clone())
            .await
            .status(),
        StatusCode::CREATED
    );

    // Past the replay window, the housekeeping deletes both receipts (and only old ones).
    for table in ["ingest_batches", "bulk_batches"] {
        sqlx::query(&format!(
            "update {table} set created_at = now() - interval '40 days'"
        ))
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let young = batch(id, &[("d", &hours_ago(1), "1")]);
    assert_eq!(
        app.ingest("young-key", &young).await.status(),
        StatusCode::CREATED
    );
    let pruned = plume::ingest::receipts::prune(&app.pool, std::time::Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    assert_eq!(app.claimed_batches().await, 1, "the young receipt stays");

    // The late retries are stored again, and every reading is a duplicate: totals do not move.
    let (status, receipt) = status_and_body(app.ingest("old-key", &body).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (
            receipt["data"]["readings_accepted"].as_i64(),
            receipt["data"]["readings_duplicate"].as_i64()
        ),
        (Some(0), Some(2))
    );
    let (status, receipt) = status_and_body(app.bulk(Some("old-bulk"), "text/csv", bulk).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(receipt["data"]["readings_accepted"], 0);
    assert_eq!(app.assert_totals_match_rows(id).await, (8_500_000, 4));
}
