//! `GET /v2/sites/{id}/sources`: each source of a site with its last stored reading, page by page.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, status_and_body};

fn stamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[tokio::test]
async fn each_source_is_listed_once_with_its_last_stored_reading() {
    // Arrange: three sources, two readings from two of them, out of time order within the batch.
    let app = spawn_app().await;
    let site = app.create_site("Sources", "100").await;
    let other = app.create_site("Other sources", "100").await;
    let hour = chrono::Utc::now() - chrono::Duration::hours(3);
    let hour = chrono::DurationRound::duration_trunc(hour, chrono::Duration::hours(1)).unwrap();
    let at = |minutes: i64| stamp(hour + chrono::Duration::minutes(minutes));
    let batch = json!({"site_id": site, "readings": [
        {"source_id": "north", "timestamp": at(30), "value": "2.5"},
        {"source_id": "north", "timestamp": at(5), "value": "0.1"},
        {"source_id": "flare", "timestamp": at(10), "value": "0.2"},
        {"source_id": "south", "timestamp": at(20), "value": "1"},
        {"source_id": "south", "timestamp": at(50), "value": "0.000001"},
    ]});
    assert_eq!(
        app.ingest("sources-1", &batch).await.status(),
        StatusCode::CREATED
    );
    let elsewhere =
        json!({"site_id": other, "readings": [{"source_id": "east", "timestamp": at(1), "value": "1"}]});
    assert_eq!(
        app.ingest("sources-2", &elsewhere).await.status(),
        StatusCode::CREATED
    );

    // Act
    let (status, body) = status_and_body(app.get(&format!("/v2/sites/{site}/sources")).await).await;

    // Assert: by source id, each with its newest reading, and no other site's sources.
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"],
        json!([
            {"source_id": "flare", "last_reading_at": at(10), "last_value": "0.200000"},
            {"source_id": "north", "last_reading_at": at(30), "last_value": "2.500000"},
            {"source_id": "south", "last_reading_at": at(50), "last_value": "0.000001"},
        ])
    );
    assert_eq!(body["meta"]["next_cursor"], Value::Null);
}

#[tokio::test]
async fn sources_page_by_cursor_and_a_removed_reading_is_not_shown_as_the_last() {
    let app = spawn_app().await;
    let site = app.create_site("Paged sources", "100").await;
    let hour = chrono::Utc::now() - chrono::Duration::hours(2);
    let hour = chrono::DurationRound::duration_trunc(hour, chrono::Duration::hours(1)).unwrap();
    let at = |minutes: i64| stamp(hour + chrono::Duration::minutes(minutes));
    let batch = json!({"site_id": site, "readings": [
        {"source_id": "a", "timestamp": at(1), "value": "1"},
        {"source_id": "b", "timestamp": at(2), "value": "2"},
        {"source_id": "b", "timestamp": at(40), "value": "4"},
        {"source_id": "c", "timestamp": at(3), "value": "3"},
    ]});
    assert_eq!(app.ingest("paged-1", &batch).await.status(), StatusCode::CREATED);
    // As retention leaves it: the head of `b` still at its newest reading, which is gone.
    sqlx::query("delete from measurements where site_id = $1 and source_id = 'b' and value_mg = 4000000")
        .bind(site)
        .execute(&app.pool)
        .await
        .unwrap();

    let mut listed = Vec::new();
    let mut path = format!("/v2/sites/{site}/sources?limit=2");
    let mut pages = 0;
    loop {
        let (status, body) = status_and_body(app.get(&path).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        listed.extend(body["data"].as_array().unwrap().iter().cloned());
        match body["meta"]["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v2/sites/{site}/sources?limit=2&cursor={cursor}"),
            None => break,
        }
    }

    assert_eq!(pages, 2);
    assert_eq!(
        listed,
        vec![
            json!({"source_id": "a", "last_reading_at": at(1), "last_value": "1.000000"}),
            json!({"source_id": "b", "last_reading_at": at(2), "last_value": "2.000000"}),
            json!({"source_id": "c", "last_reading_at": at(3), "last_value": "3.000000"}),
        ]
    );
}

#[tokio::test]
async fn a_site_without_readings_has_no_sources_and_problems_are_named() {
    let app = spawn_app().await;
    let site = app.create_site("Quiet", "100").await;

    let (status, body) = status_and_body(app.get(&format!("/v2/sites/{site}/sources")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], json!([]));

    let (status, body) = status_and_body(app.get("/v2/sites/999999/sources").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SITE_NOT_FOUND");

    let (status, body) = status_and_body(
        app.get(&format!("/v2/sites/{site}/sources?limit=0&cursor=c2l0ZTox"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|detail| detail["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["limit", "cursor"]);
}
