//! Bad input: every case gets its status, code and details, and nothing is stored.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// The `path` of every detail of an error envelope.
fn detail_paths(response: &Value) -> Vec<&str> {
    response["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect()
}

async fn assert_refused(app: &TestApp, key: Option<&str>, body: &Value, status: StatusCode, paths: &[&str]) {
    let mut request = app.client.post(format!("{}/v1/ingest", app.address)).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let (actual, response) = status_and_body(request.send().await.unwrap()).await;
    assert_eq!(actual, status, "{body} -> {response}");
    assert_eq!(response["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(detail_paths(&response), paths, "{body} -> {response}");
    for detail in response["error"]["details"].as_array().unwrap() {
        assert!(!detail["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn bad_readings_are_422_with_a_detail_per_field() {
    let app = spawn_app().await;
    let id = app.create_site("Strict", "100").await;
    let ok = hours_ago(1);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"readings": [{"timestamp": ok, "value": 1}]}),
            vec!["site_id"],
        ),
        (
            json!({"site_id": 0, "readings": [{"timestamp": ok, "value": 1}]}),
            vec!["site_id"],
        ),
        (
            json!({"site_id": "1", "readings": [{"timestamp": ok, "value": 1}]}),
            vec!["site_id"],
        ),
        (
            json!({"site_id": 1.5, "readings": [{"timestamp": ok, "value": 1}]}),
            vec!["site_id"],
        ),
        (json!({"site_id": id}), vec!["readings"]),
        (
            json!({"site_id": id, "readings": {"timestamp": ok}}),
            vec!["readings"],
        ),
        (json!({"site_id": id, "readings": [5]}), vec!["readings[0]"]),
        (
            json!({"site_id": id, "readings": [{"value": 1}]}),
            vec!["readings[0].timestamp"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok}]}),
            vec!["readings[0].value"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": "2026-01-01 noon", "value": 1}]}),
            vec!["readings[0].timestamp"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": "2026-01-01T00:00:00", "value": 1}]}),
            vec!["readings[0].timestamp"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": 1700000000, "value": 1}]}),
            vec!["readings[0].timestamp"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": hours_ago(24 * 731), "value": 1}]}),
            vec!["readings[0].timestamp"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": hours_ago(-25), "value": 1}]}),
            vec!["readings[0].timestamp"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": -1}]}),
            vec!["readings[0].value"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": "abc"}]}),
            vec!["readings[0].value"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": 0.0000001}]}),
            vec!["readings[0].value"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": 0.1, "unit": "mg"}]}),
            vec!["readings[0].unit", "readings[0].value"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": 0.0001, "unit": "g"}]}),
            vec!["readings[0].value"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": 1, "source_id": ""}]}),
            vec!["readings[0].source_id"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": 1, "source_id": "x".repeat(65)}]}),
            vec!["readings[0].source_id"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": 1, "source_id": 7}]}),
            vec!["readings[0].source_id"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": 1e30}]}),
            vec!["readings[0].value"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": "1000.000001", "unit": "t"}]}),
            vec!["readings[0].value"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": format!("{}60Z", &ok[..17]), "value": 1}]}),
            vec!["readings[0].timestamp"],
        ),
        (
            json!({"site_id": id, "readings": [{"timestamp": ok, "value": 1}, {"timestamp": ok, "value": 2}]}),
            vec!["readings[1]"],
        ),
        (
            json!({"site_id": -3, "readings": [{"timestamp": ok, "value": 1}, {"timestamp": "x", "value": -2}]}),
            vec!["site_id", "readings[1].timestamp", "readings[1].value"],
        ),
    ];
    for (index, (body, paths)) in cases.iter().enumerate() {
        assert_refused(&app, Some(&format!("bad-{index}")), body, unprocessable, paths).await;
    }
    assert_eq!(app.assert_totals_match_rows(id).await, (0, 0));
    assert_eq!(app.claimed_batches().await, 0);
}

#[tokio::test]
async fn the_idempotency_key_is_required_and_checked() {
    let app = spawn_app().await;
    let id = app.create_site("Keys", "100").await;
    let body = batch(id, &[("a", &hours_ago(1), "1")]);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    assert_refused(&app, None, &body, unprocessable, &["Idempotency-Key"]).await;
    assert_refused(
        &app,
        Some(&"k".repeat(129)),
        &body,
        unprocessable,
        &["Idempotency-Key"],
    )
    .await;
    let mut with_bad_body_key = body.clone();
    with_bad_body_key["batch_id"] = json!("");
    assert_refused(&app, None, &with_bad_body_key, unprocessable, &["batch_id"]).await;
    with_bad_body_key["batch_id"] = json!(42);
    assert_refused(&app, None, &with_bad_body_key, unprocessable, &["batch_id"]).await;
    let mut with_other_key = body.clone();
    with_other_key["batch_id"] = json!("other");
    assert_refused(&app, Some("this"), &with_other_key, unprocessable, &["batch_id"]).await;

    let mut with_body_key = body.clone();
    with_body_key["batch_id"] = json!("k".repeat(128));
    let response = app.post_json("/v1/ingest", &with_body_key).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, receipt) = status_and_body(response).await;
    assert_eq!(receipt["data"]["batch_id"], "k".repeat(128));
}

#[tokio::test]
async fn bodies_that_are_not_json_are_400() {
    let app = spawn_app().await;
    let url = format!("{}/v1/ingest", app.address);
    let sends = [
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .header("Idempotency-Key", "k")
            .body("{\"site_id\": 1,"),
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .header("Idempotency-Key", "k")
            .body(""),
        app.client
            .post(&url)
            .header("content-type", "text/plain")
            .header("Idempotency-Key", "k")
            .body("{}"),
        app.client.post(&url).header("Idempotency-Key", "k").body("{}"),
        app.client
            .post(format!("{}/v1/sites", app.address))
            .header("content-type", "application/json")
            .body("nope"),
    ];
    for send in sends {
        let response = send.send().await.unwrap();
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let (status, body) = status_and_body(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "MALFORMED_REQUEST");
        assert!(body["meta"]["request_id"].is_string());
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = spawn_app().await;
    let id = app.create_site("Big", "100").await;
    let padding = "x".repeat(1024 * 1024 + 1);
    let body =
        json!({"site_id": id, "padding": padding, "readings": [{"timestamp": hours_ago(1), "value": 1}]});
    let (status, body) = status_and_body(app.ingest("big", &body).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(app.assert_totals_match_rows(id).await, (0, 0));
}

#[tokio::test]
async fn bad_sites_are_422_with_details() {
    let app = spawn_app().await;
    let cases = [
        (json!({"emission_limit": 1}), vec!["name"]),
        (json!({"name": "   ", "emission_limit": 1}), vec!["name"]),
        (
            json!({"name": "n".repeat(201), "emission_limit": 1}),
            vec!["name"],
        ),
        (json!({"name": 5, "emission_limit": 1}), vec!["name"]),
        (json!({"name": "a"}), vec!["emission_limit"]),
        (json!({"name": "a", "emission_limit": 0}), vec!["emission_limit"]),
        (
            json!({"name": "a", "emission_limit": "-5"}),
            vec!["emission_limit"],
        ),
        (
            json!({"name": "a", "emission_limit": 0.0000001}),
            vec!["emission_limit"],
        ),
        (
            json!({"name": "a", "emission_limit": 1, "metadata": "x"}),
            vec!["metadata"],
        ),
        (json!({}), vec!["name", "emission_limit"]),
        (json!({"name": "a\u{0}b", "emission_limit": 1}), vec!["name"]),
        (
            json!({"name": "a", "emission_limit": 1, "metadata": {"k": "a\u{0}b"}}),
            vec!["metadata"],
        ),
        (json!([1]), vec!["body"]),
    ];
    for (body, paths) in cases {
        let (status, response) = status_and_body(app.post_json("/v1/sites", &body).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(response["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(detail_paths(&response), paths, "{body}");
    }
    let (status, body) = status_and_body(
        app.post_json(
            "/v1/sites",
            &json!({"name": "n".repeat(200), "emission_limit": "0.000001"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let count: i64 = sqlx::query_scalar("select count(*) from sites")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_envelope() {
    let app = spawn_app().await;
    let (status, body) = status_and_body(app.get("/v1/nothing").await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    let response = app
        .client
        .delete(format!("{}/v1/sites", app.address))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_body(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn a_repeated_field_in_a_reading_is_named() {
    let app = spawn_app().await;
    let id = app.create_site("Repeated", "1").await;
    let body = format!(
        r#"{{"site_id": {id}, "readings": [{{"timestamp": "{}", "value": 1, "value": 2}}]}}"#,
        hours_ago(1)
    );
    let response = app
        .client
        .post(format!("{}/v1/ingest", app.address))
        .header("content-type", "application/json")
        .header("Idempotency-Key", "repeated")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_body(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "readings[0]");
    assert!(body["error"]["details"][0]["message"]
        .as_str()
        .unwrap()
        .contains("duplicate field"));
}

#[tokio::test]
async fn the_largest_reading_is_1000_tonnes() {
    let app = spawn_app().await;
    let id = app.create_site("Huge", "1").await;
    let body =
        json!({"site_id": id, "readings": [{"timestamp": hours_ago(1), "value": "1000", "unit": "t"}]});
    let (status, receipt) = status_and_body(app.ingest("huge", &body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    assert_eq!(receipt["data"]["accepted_emissions"], "1000000.000000");
}

#[tokio::test]
async fn site_ids_in_paths_and_list_parameters_are_checked() {
    let app = spawn_app().await;
    for path in [
        "/v1/sites/0",
        "/v1/sites/-4",
        "/v1/sites/99999999999999999999",
        "/v1/sites/0/metrics",
    ] {
        let (status, body) = status_and_body(app.get(path).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], "SITE_NOT_FOUND", "{path}");
    }
    for path in ["/v1/sites/+1", "/v1/sites/1.5", "/v1/sites/x1", "/v1/sites/%20"] {
        let (status, body) = status_and_body(app.get(path).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(body["error"]["details"][0]["path"], "id", "{path}");
    }
    let (status, body) = status_and_body(app.get("/v1/sites?limit=1&limit=2").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "query");
}

/// Readings may be a few minutes ahead of the server's clock (clock skew), not more: a writer must
/// not pre-write a future minute that the real reading would then duplicate. An ingest client may
/// be given its own skew, on v1 and bulk alike.
#[tokio::test]
async fn readings_ahead_of_the_clock_are_refused_beyond_the_allowed_skew() {
    use plume::auth::store::NewClient;
    use plume::auth::{Kind, Scope};

    let app = spawn_app().await;
    let id = app.create_site("Ahead", "1000").await;
    let ahead = |minutes: i64| {
        (chrono::Utc::now() + chrono::Duration::minutes(minutes))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };

    let (status, body) =
        status_and_body(app.ingest("near", &batch(id, &[("s", &ahead(3), "1")])).await).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "3 minutes ahead is clock skew: {body}"
    );
    let (status, body) =
        status_and_body(app.ingest("far", &batch(id, &[("s", &ahead(30), "1")])).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "readings[0].timestamp");
    assert_eq!(
        body["error"]["details"][0]["message"],
        "is more than 5 minutes in the future"
    );
    let bulk_far = format!("site_id,source_id,timestamp,value\n{id},s,{},1\n", ahead(30));
    let response = app.bulk(Some("bulk-far"), "text/csv", bulk_far.clone()).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // A gateway whose sensors buffer ahead, allowed an hour.
    let gateway = NewClient {
        max_future_skew_seconds: Some(3600),
        ..NewClient::new("ahead-gateway", Kind::Ingest, Scope::all())
    };
    let client = client_with_token(&mint_client(&app.pool, &gateway).await);
    let response = client
        .post(format!("{}/v1/ingest", app.address))
        .header("Idempotency-Key", "gateway-far")
        .json(&batch(id, &[("g", &ahead(30), "1")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = client
        .post(format!("{}/v2/ingest", app.address))
        .header("Idempotency-Key", "gateway-bulk-far")
        .header("Content-Type", "text/csv")
        .body(bulk_far)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (status, body) = status_and_body(
        client
            .post(format!("{}/v1/ingest", app.address))
            .header("Idempotency-Key", "gateway-too-far")
            .json(&batch(id, &[("g", &ahead(90), "1")]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"]["details"][0]["message"],
        "is more than 1 hour in the future"
    );
    assert_eq!(app.assert_totals_match_rows(id).await, (3_000_000, 3));
}
