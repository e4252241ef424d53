//! The API's OpenAPI document and reference page as served, and the bugs that
//! `scripts/api-fuzz.sh` (Schemathesis against the document) found, one regression test each.

use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{spawn_app, status_and_body};

#[tokio::test]
async fn the_document_and_its_reference_page_are_served_without_a_token() {
    // Arrange
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();

    // Act
    let document = anonymous
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    let page = anonymous
        .get(format!("{}/api/docs", app.address))
        .send()
        .await
        .unwrap();
    let renderer = anonymous
        .get(format!(
            "{}/assets/vendor/swagger-ui/swagger-ui-bundle.js",
            app.address
        ))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(document.status(), StatusCode::OK);
    assert_eq!(document.headers()[CONTENT_TYPE], "application/json");
    let document: Value = document.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let create_site = &document["paths"]["/v1/sites"]["post"];
    assert_eq!(create_site["operationId"], "v1_create_site");
    assert_eq!(create_site["security"][0]["bearer"], serde_json::json!([]));
    assert!(document["paths"]["/health"]["get"].get("security").is_none());

    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/assets/vendor/swagger-ui/swagger-ui-bundle.js"),
        "{html}"
    );
    assert!(html.contains("/assets/api-docs/init.js"), "{html}");

    assert_eq!(renderer.status(), StatusCode::OK);
    let bundle = renderer.bytes().await.unwrap();
    let vendored = include_bytes!("../../../dashboard/vendor/swagger-ui/swagger-ui-bundle.js");
    assert_eq!(bundle.len(), vendored.len());
}

/// Found by the fuzzer: a `wait` too large for a `Duration` (`1e300` seconds) made both long polls
/// panic (500) instead of being shortened to the 60 s limit like any other long wait.
#[tokio::test]
async fn a_huge_wait_is_shortened_not_a_server_error() {
    // Arrange
    let app = spawn_app().await;
    let site = app.create_site("Pad", "100").await;

    // Act
    let (changes_status, changes) = status_and_body(app.get("/v2/changes?wait=1e300").await).await;
    let (metrics_status, metrics) =
        status_and_body(app.get(&format!("/v2/sites/{site}/metrics?wait=3.4e38")).await).await;

    // Assert
    assert_eq!(changes_status, StatusCode::OK, "{changes}");
    assert_eq!(changes["data"][0]["site_id"], site);
    assert_eq!(metrics_status, StatusCode::OK, "{metrics}");
    assert_eq!(metrics["data"]["site_id"], site);
}
