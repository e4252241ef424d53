//! `POST /v2/ingest`: JSON, NDJSON and CSV bodies over many sites, their limits and their problems.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";

/// `count` readings as `(site, source, time, value)`, spread round-robin over `sites`, one a second
/// per site from `start`, with values `0.001`, `0.002`, ... kg.
pub fn spread(sites: &[i64], start: &str, count: usize) -> Vec<(i64, String, String, String)> {
    let start: chrono::DateTime<chrono::Utc> = start.parse().unwrap();
    (0..count)
        .map(|i| {
            let site = sites[i % sites.len()];
            let at = start + chrono::Duration::seconds((i / sites.len()) as i64);
            let value = format!("0.{:03}", i % 1000 + 1);
            (site, format!("s{}", i % 3), at.to_rfc3339(), value)
        })
        .collect()
}

pub fn as_json(readings: &[(i64, String, String, String)]) -> String {
    let readings: Vec<Value> = readings
        .iter()
        .map(|(site, source, at, value)| {
            json!({"site_id": site, "source_id": source, "timestamp": at, "value": value})
        })
        .collect();
    json!({ "readings": readings }).to_string()
}

pub fn as_ndjson(readings: &[(i64, String, String, String)]) -> String {
    readings
        .iter()
        .map(|(site, source, at, value)| {
            format!(r#"{{"site_id":{site},"source_id":"{source}","timestamp":"{at}","value":{value}}}"#)
                + "\n"
        })
        .collect()
}

pub fn as_csv(readings: &[(i64, String, String, String)]) -> String {
    let mut body = String::from("site_id,source_id,timestamp,value\n");
    for (site, source, at, value) in readings {
        body.push_str(&format!("{site},{source},{at},{value}\n"));
    }
    body
}

async fn stored_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from measurements")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn claimed_bulk_keys(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from bulk_batches")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn paths(body: &Value) -> Vec<&str> {
    body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_json_request_over_several_sites_stores_each_and_answers_per_site() {
    let app = spawn_app().await;
    let a = app.create_site("A", "1000").await;
    let b = app.create_site("B", "0.005").await;
    app.ingest("v1-first", &batch(a, &[("s", &hours_ago(3), "1")]))
        .await;
    let at = hours_ago(2);
    let body = json!({"readings": [
        {"site_id": b, "source_id": "x", "timestamp": at, "value": "0.004"},
        {"site_id": a, "source_id": "s", "timestamp": hours_ago(3), "value": "1"},
        {"site_id": a, "timestamp": at, "value": 2500, "unit": "g"},
        {"site_id": b, "source_id": "x", "timestamp": at, "value": "0.004"},
        {"site_id": b, "source_id": "y", "timestamp": at, "value": "0.002"},
    ]});

    let (status, body) = status_and_body(app.bulk(Some("bulk-1"), JSON, body.to_string()).await).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    let data = &body["data"];
    assert_eq!(data["batch_id"], "bulk-1");
    assert_eq!(data["readings_submitted"], 5);
    assert_eq!(data["readings_accepted"], 3);
    assert_eq!(data["readings_duplicate"], 2);
    assert_eq!(data["accepted_emissions"], "2.506000");
    assert_eq!(data["replayed"], false);
    let sites = data["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 2);
    assert_eq!(sites[0]["site_id"], a);
    assert_eq!(sites[0]["readings_submitted"], 2);
    assert_eq!(sites[0]["readings_accepted"], 1);
    assert_eq!(sites[0]["readings_duplicate"], 1);
    assert_eq!(sites[0]["accepted_emissions"], "2.500000");
    assert_eq!(sites[0]["total_emissions_to_date"], "3.500000");
    assert_eq!(sites[0]["compliance_status"], "Within Limit");
    assert_eq!(sites[1]["site_id"], b);
    assert_eq!(sites[1]["readings_accepted"], 2);
    assert_eq!(sites[1]["readings_duplicate"], 1);
    assert_eq!(sites[1]["total_emissions_to_date"], "0.006000");
    assert_eq!(sites[1]["compliance_status"], "Limit Exceeded");
    assert_eq!(app.assert_totals_match_rows(a).await, (3_500_000, 2));
    assert_eq!(app.assert_totals_match_rows(b).await, (6_000, 2));
    let events: Vec<(i64, String)> =
        sqlx::query_as("select site_id, event_type from outbox_events where site_id = $1 order by seq")
            .bind(b)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let types: Vec<&str> = events.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(types, ["measurements.ingested", "site.limit_exceeded"]);
}

#[tokio::test]
async fn the_same_readings_as_ndjson_then_csv_under_one_key_are_a_replay() {
    let app = spawn_app().await;
    let sites = [
        app.create_site("A", "1000").await,
        app.create_site("B", "1000").await,
    ];
    let readings = spread(&sites, &hours_ago(30), 600);

    let (status, first) = status_and_body(app.bulk(Some("k"), NDJSON, as_ndjson(&readings)).await).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["data"]["readings_accepted"], 600);

    let response = app.bulk(Some("k"), CSV, as_csv(&readings)).await;
    assert_eq!(response.headers()["idempotent-replay"], "true");
    let (status, replay) = status_and_body(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay["data"]["replayed"], true);
    assert_eq!(replay["data"]["sites"], first["data"]["sites"]);

    let (status, again) = status_and_body(app.bulk(Some("k2"), JSON, as_json(&readings)).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["data"]["readings_accepted"], 0);
    assert_eq!(again["data"]["readings_duplicate"], 600);
    for site in sites {
        assert_eq!(app.assert_totals_match_rows(site).await.1, 300);
    }

    let changed = as_csv(&readings[..599]);
    let (status, body) = status_and_body(app.bulk(Some("k"), CSV, changed).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test]
async fn malformed_ndjson_lines_are_named_and_nothing_is_stored() {
    let app = spawn_app().await;
    let site = app.create_site("A", "1000").await;
    let at = hours_ago(1);
    let body = format!(
        "{{\"site_id\":{site},\"timestamp\":\"{at}\",\"value\":1}}\n\
         {{\"site_id\":{site},\"timestamp\":\"{at}\"\n\
         \n\
         {{\"site_id\":{site},\"source_id\":\"b\",\"timestamp\":\"{at}\"}}\n\
         [1]\n\
         {{\"site_id\":0,\"source_id\":\"c\",\"timestamp\":\"yesterday\",\"value\":-1}}\n"
    );

    let (status, body) = status_and_body(app.bulk(Some("bad"), NDJSON, body).await).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        paths(&body),
        [
            "line 2",
            "line 4.value",
            "line 5",
            "line 6.site_id",
            "line 6.timestamp",
            "line 6.value"
        ]
    );
    assert_eq!(stored_rows(&app).await, 0);
    assert_eq!(claimed_bulk_keys(&app).await, 0);
}

#[tokio::test]
async fn malformed_csv_lines_are_named_and_nothing_is_stored() {
    let app = spawn_app().await;
    let site = app.create_site("A", "1000").await;
    let at = hours_ago(1);
    let body = format!(
        "timestamp,value,site_id,source_id\r\n\
         {at},1.5,{site},\"with, comma\"\r\n\
         {at},abc,{site},a\r\n\
         {at},1,{site}\r\n\
         {at},1,x{site},b\r\n\
         {at},2,{site},\"with, comma\"\r\n"
    );

    let (status, body) = status_and_body(app.bulk(Some("bad"), CSV, body).await).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        paths(&body),
        ["line 3.value", "line 4", "line 5.site_id", "line 6"]
    );
    assert!(body["error"]["details"][3]["message"]
        .as_str()
        .unwrap()
        .contains("same site_id, source_id and timestamp as line 2"));
    assert_eq!(stored_rows(&app).await, 0);

    let (status, body) =
        status_and_body(app.bulk(Some("bad"), CSV, "site_id,time,value\n1,x,1\n").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(paths(&body), ["line 1", "line 1"]);
}

#[tokio::test]
async fn fifty_thousand_readings_are_stored_and_one_more_is_refused() {
    let app = spawn_app().await;
    let mut sites = Vec::new();
    for n in 0..10 {
        sites.push(app.create_site(&format!("S{n}"), "1000000").await);
    }
    // 5,000 readings per site, one a second.
    let readings = spread(&sites, &hours_ago(40), 50_000);

    let (status, body) = status_and_body(app.bulk(Some("big"), CSV, as_csv(&readings)).await).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["readings_accepted"], 50_000);
    assert_eq!(stored_rows(&app).await, 50_000);
    for site in &sites {
        assert_eq!(app.assert_totals_match_rows(*site).await.1, 5_000);
    }

    let one_more = spread(&sites, &hours_ago(20), 50_001);
    let (status, body) = status_and_body(app.bulk(Some("bigger"), JSON, as_json(&one_more)).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "readings");
    assert_eq!(
        body["error"]["details"][0]["message"],
        "must contain 1 to 50000 readings, not 50001"
    );
    let (status, _) = status_and_body(app.bulk(Some("bigger"), NDJSON, as_ndjson(&one_more)).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(stored_rows(&app).await, 50_000);
}

#[tokio::test]
async fn only_the_first_hundred_problems_are_listed() {
    let app = spawn_app().await;
    let site = app.create_site("A", "1000").await;
    let mut body = String::from("site_id,timestamp,value\n");
    for _ in 0..150 {
        body.push_str(&format!("{site},not-a-time,1\n"));
    }

    let (status, body) = status_and_body(app.bulk(Some("many"), CSV, body).await).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let details = body["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 100);
    assert_eq!(details[0]["path"], "line 2.timestamp");
    assert_eq!(details[99]["path"], "line 101.timestamp");
    assert_eq!(
        body["error"]["message"],
        "the request has 150 problems; the first 100 are listed"
    );
}

#[tokio::test]
async fn an_unknown_site_refuses_the_whole_request() {
    let app = spawn_app().await;
    let site = app.create_site("A", "1000").await;
    let readings = vec![
        (site, "a".to_string(), hours_ago(1), "1".to_string()),
        (site + 1000, "a".to_string(), hours_ago(1), "1".to_string()),
    ];

    let (status, body) = status_and_body(app.bulk(Some("k"), JSON, as_json(&readings)).await).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(paths(&body), ["readings[1].site_id"]);
    assert_eq!(
        body["error"]["details"][0]["message"],
        format!("names site {}, which does not exist", site + 1000)
    );
    assert_eq!(stored_rows(&app).await, 0);
    assert_eq!(app.assert_totals_match_rows(site).await, (0, 0));
}

#[tokio::test]
async fn a_bulk_request_needs_a_key_and_a_known_format() {
    let app = spawn_app().await;
    let site = app.create_site("A", "1000").await;
    let body = as_ndjson(&[(site, "a".into(), hours_ago(1), "1".into())]);

    let (status, no_key) = status_and_body(app.bulk(None, NDJSON, body.clone()).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(paths(&no_key), ["Idempotency-Key"]);

    let (status, xml) = status_and_body(app.bulk(Some("k"), "application/xml", body.clone()).await).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(xml["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");

    let (status, empty) = status_and_body(app.bulk(Some("k"), CSV, "site_id,timestamp,value\n").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(paths(&empty), ["readings"]);

    let (status, not_json) = status_and_body(app.bulk(Some("k"), JSON, "{").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(not_json["error"]["code"], "MALFORMED_REQUEST");
    assert_eq!(stored_rows(&app).await, 0);
}

#[tokio::test]
async fn readings_outside_the_window_are_refused_unless_the_request_is_a_retry() {
    // One database, two services: the second accepts only the last 30 days.
    let app = spawn_app().await;
    let site = app.create_site("A", "1000").await;
    let old = vec![(site, "a".to_string(), hours_ago(24 * 100), "4".to_string())];
    let (status, original) = status_and_body(app.bulk(Some("old"), NDJSON, as_ndjson(&old)).await).await;
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
    let mut later = spawn_app_on(&app.database_url, app_pool, narrow).await;
    // The same client: bulk keys are per client.
    later.client = app.client.clone();
    let (status, replay) = status_and_body(later.bulk(Some("old"), CSV, as_csv(&old)).await).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["data"]["sites"], original["data"]["sites"]);

    let mut mixed = old.clone();
    mixed.insert(0, (site, "a".to_string(), hours_ago(1), "1".to_string()));
    let (status, body) = status_and_body(later.bulk(Some("new"), NDJSON, as_ndjson(&mixed)).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(paths(&body), ["line 2.timestamp"]);
    assert_eq!(app.assert_totals_match_rows(site).await, (4_000_000, 1));
}

/// More hours and sources for one site than one statement can list on Citus, where each row of a
/// site's rollups is five parameters (14,000 hours: 70,000 of PostgreSQL's 65,535): one reading an
/// hour, each from a source of its own, for one site, then for two.
#[tokio::test]
async fn a_request_whose_site_spans_more_hours_and_sources_than_one_statement_lists_is_stored_whole() {
    let app = spawn_app().await;
    let a = app.create_site("Wide A", "100000").await;
    let b = app.create_site("Wide B", "100000").await;
    let readings = |site: i64, count: usize| -> Vec<(i64, String, String, String)> {
        (0..count)
            .map(|i| {
                let at = hours_ago(i as i64 + 1);
                (site, format!("source-{i}"), at, "0.001".to_owned())
            })
            .collect()
    };
    let one_site = readings(a, 14_000);
    let (status, body) = status_and_body(app.bulk(Some("wide-1"), NDJSON, as_ndjson(&one_site)).await).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["readings_accepted"], 14_000);
    assert_eq!(app.assert_totals_match_rows(a).await, (14_000_000, 14_000));

    let mut two_sites = readings(b, 5_500);
    two_sites.extend(readings(a, 14_001).into_iter().skip(14_000));
    let (status, body) = status_and_body(app.bulk(Some("wide-2"), NDJSON, as_ndjson(&two_sites)).await).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["readings_accepted"], 5_501);
    assert_eq!(app.assert_totals_match_rows(a).await, (14_001_000, 14_001));
    assert_eq!(app.assert_totals_match_rows(b).await, (5_500_000, 5_500));
    let (heads, hours): (i64, i64) = sqlx::query_as(
        "select (select count(*) from source_heads where site_id = $1),
                (select count(*) from hourly_rollups where site_id = $1)",
    )
    .bind(a)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((heads, hours), (14_001, 14_001));
}
