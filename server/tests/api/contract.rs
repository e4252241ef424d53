//! The v1 contract, field by field.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn create_site_returns_the_site_in_the_envelope() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/v1/sites", app.address))
        .header("X-Request-Id", "req-123")
        .json(&json!({"name": "Well 7", "emission_limit": 5000, "metadata": {"basin": "Permian"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["meta"]["request_id"], "req-123");
    let site = &body["data"];
    assert!(site["id"].as_i64().unwrap() > 0);
    assert_eq!(site["name"], "Well 7");
    assert_eq!(site["emission_limit"], "5000.000000");
    assert_eq!(site["metadata"], json!({"basin": "Permian"}));
    assert_eq!(site["total_emissions_to_date"], "0.000000");
    assert_eq!(site["compliance_status"], "Within Limit");
    let created: chrono::DateTime<chrono::Utc> = site["created_at"].as_str().unwrap().parse().unwrap();
    assert!((chrono::Utc::now() - created).num_seconds().abs() < 60);
    let keys: Vec<&String> = site.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        7,
        "exactly id, name, emission_limit, metadata, total, status, created_at: {keys:?}"
    );
}

#[tokio::test]
async fn every_response_has_a_request_id() {
    let app = spawn_app().await;
    for path in ["/health", "/v1/sites", "/v1/sites/999", "/nope"] {
        let response = app.get(path).await;
        let header = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let (_, body) = status_and_body(response).await;
        assert_eq!(body["meta"]["request_id"], header.as_str(), "{path}");
        assert!(!header.is_empty());
    }
}

#[tokio::test]
async fn get_site_and_metrics() {
    let app = spawn_app().await;
    let id = app.create_site("Compressor", "200.5").await;
    let (status, body) = status_and_body(app.get(&format!("/v1/sites/{id}")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["emission_limit"], "200.500000");

    let metrics = app.metrics(id).await;
    assert_eq!(
        metrics,
        json!({
            "site_id": id, "name": "Compressor", "emission_limit": "200.500000",
            "total_emissions_to_date": "0.000000", "compliance_status": "Within Limit",
            "utilization_pct": "0.00", "reading_count": 0, "first_reading_at": null,
            "last_reading_at": null, "version": 1
        })
    );

    let (first, last) = (hours_ago(3), hours_ago(2));
    let response = app
        .ingest("m-1", &batch(id, &[("a", &first, "100"), ("a", &last, "0.25")]))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let metrics = app.metrics(id).await;
    assert_eq!(metrics["total_emissions_to_date"], "100.250000");
    assert_eq!(metrics["utilization_pct"], "50.00");
    assert_eq!(metrics["reading_count"], 2);
    assert_eq!(metrics["version"], 2);
    let first_at: chrono::DateTime<chrono::Utc> =
        metrics["first_reading_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(first_at, first.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    assert!(metrics["last_reading_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn unknown_sites_are_404_site_not_found() {
    let app = spawn_app().await;
    for path in ["/v1/sites/424242", "/v1/sites/424242/metrics"] {
        let (status, body) = status_and_body(app.get(path).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "SITE_NOT_FOUND");
    }
    let (status, body) = status_and_body(app.get("/v1/sites/abc").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "id");
}

#[tokio::test]
async fn sites_are_listed_with_keyset_pagination() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create_site(&format!("site {i}"), "10").await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sites?limit=2&cursor={c}"),
            None => "/v1/sites?limit=2".to_string(),
        };
        let (status, body) = status_and_body(app.get(&path).await).await;
        assert_eq!(status, StatusCode::OK);
        pages += 1;
        for site in body["data"].as_array().unwrap() {
            seen.push(site["id"].as_i64().unwrap());
        }
        match body["meta"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(body["meta"]["next_cursor"].is_null());
                break;
            }
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    for bad in [
        "/v1/sites?limit=0",
        "/v1/sites?limit=501",
        "/v1/sites?limit=x",
        "/v1/sites?cursor=%%%",
    ] {
        let (status, body) = status_and_body(app.get(bad).await).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{bad}"
        );
        assert!(body["error"]["code"].is_string(), "{bad}");
    }
}

#[tokio::test]
async fn ingest_answers_with_the_receipt() {
    let app = spawn_app().await;
    let id = app.create_site("Pad", "1000").await;
    let at = hours_ago(1);
    let response = app
        .ingest(
            "receipt-1",
            &batch(id, &[("a", &at, "1.5"), ("b", &at, "2"), ("a", &at, "1.5")]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().get("idempotent-replay").is_none());
    let (_, body) = status_and_body(response).await;
    assert_eq!(
        body["data"],
        json!({
            "batch_id": "receipt-1", "site_id": id, "readings_submitted": 3, "readings_accepted": 2,
            "readings_duplicate": 1, "accepted_emissions": "3.500000",
            "total_emissions_to_date": "3.500000", "compliance_status": "Within Limit", "replayed": false
        })
    );
    assert!(body["meta"]["request_id"].is_string());
}

#[tokio::test]
async fn unversioned_paths_answer_as_v1() {
    let app = spawn_app().await;
    let response = app
        .post_json("/sites", &json!({"name": "Old sensor", "emission_limit": 1}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["data"]["id"]
        .as_i64()
        .unwrap();
    let at = hours_ago(1);
    let response = app
        .client
        .post(format!("{}/ingest", app.address))
        .json(&json!({"site_id": id, "batch_id": "old-1", "readings": [{"timestamp": at, "value": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, v1) = status_and_body(app.get(&format!("/v1/sites/{id}/metrics")).await).await;
    let (_, old) = status_and_body(app.get(&format!("/sites/{id}/metrics")).await).await;
    assert_eq!(v1["data"], old["data"]);
    assert_eq!(old["data"]["compliance_status"], "Limit Exceeded");
    let (_, v1) = status_and_body(app.get(&format!("/v1/sites/{id}")).await).await;
    let (_, old) = status_and_body(app.get(&format!("/sites/{id}")).await).await;
    assert_eq!(v1["data"], old["data"]);
    let (status, _) = status_and_body(app.get("/sites").await).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let app = spawn_app().await;
    let (status, body) = status_and_body(app.get("/health").await).await;
    assert_eq!(
        (status, body["data"]["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, body) = status_and_body(app.get("/ready").await).await;
    assert_eq!(
        (status, body["data"]["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    let id = app.create_site("Metered", "10").await;
    let at = hours_ago(1);
    let body = batch(id, &[("a", &at, "1")]);
    app.ingest("metrics-1", &body).await;
    app.ingest("metrics-1", &body).await;
    app.ingest("metrics-1", &batch(id, &[("a", &at, "2")])).await;
    app.ingest("metrics-2", &batch(id, &[("a", &at, "1"), ("b", &at, "1")]))
        .await;
    let response = app.get("/metrics").await;
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for line in [
        "plume_ingest_requests_total{outcome=\"created\"} 2",
        "plume_ingest_requests_total{outcome=\"replayed\"} 1",
        "plume_ingest_requests_total{outcome=\"conflict\"} 1",
        "plume_ingest_readings_total{outcome=\"accepted\"} 2",
        "plume_ingest_readings_total{outcome=\"duplicate\"} 1",
        "plume_ingest_duplicate_requests_total{reason=\"replay\"} 1",
        "plume_ingest_duplicate_requests_total{reason=\"key_reused\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}

#[tokio::test]
async fn ready_is_503_when_the_schema_is_behind() {
    let app = spawn_app().await;
    sqlx::query("delete from refinery_schema_history")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, body) = status_and_body(app.get("/ready").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
}

#[tokio::test]
async fn metadata_numbers_come_back_exactly() {
    let app = spawn_app().await;
    let body = r#"{"name": "Exact meta", "emission_limit": 1, "metadata": {"serial": 12345678901234567890123, "gain": 0.1}}"#;
    let response = app
        .client
        .post(format!("{}/v1/sites", app.address))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["data"]["id"]
        .as_i64()
        .unwrap();
    let text = app.get(&format!("/v1/sites/{id}")).await.text().await.unwrap();
    assert!(text.contains(r#""serial": 12345678901234567890123"#), "{text}");
    assert!(text.contains(r#""gain": 0.1"#), "{text}");
}
