//! The API's OpenAPI document and reference page as served.

use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

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

