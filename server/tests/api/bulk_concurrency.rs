//! Bulk requests over overlapping sites at once, with v1 batches and retries among them: no
//! deadlock, and every site's total, count and rollups equal its stored rows.

use std::collections::HashSet;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// A bulk JSON body: for each of `sites` (in the order given), `per_site` readings from `source`, one
/// a minute from `start`.
fn bulk_body(sites: &[i64], source: &str, start: &str, per_site: usize) -> String {
    let readings: Vec<Value> = sites
        .iter()
        .flat_map(|site| {
            readings(source, start, per_site, "0.25")
                .into_iter()
                .map(move |mut reading| {
                    reading["site_id"] = json!(site);
                    reading
                })
        })
        .collect();
    json!({ "readings": readings }).to_string()
}

#[tokio::test]
async fn overlapping_bulk_requests_v1_batches_and_retries_store_everything_once() {
    let app = spawn_app_with_connections(24).await;
    let mut sites = Vec::new();
    for n in 0..6 {
        sites.push(app.create_site(&format!("S{n}"), "1000").await);
    }
    let start = hours_ago(30);
    let later = hours_ago(29);

    let mut requests = Vec::new();
    for writer in 0..12_usize {
        // Overlapping site sets, listed in different orders, so lock order matters.
        let mut chosen: Vec<i64> = (0..4).map(|k| sites[(writer + k) % sites.len()]).collect();
        if writer % 2 == 1 {
            chosen.reverse();
        }
        // Half share a source and overlap in time; the rest have their own.
        let (source, from) = if writer % 2 == 0 {
            (
                "shared".to_string(),
                if writer % 4 == 0 { &start } else { &later },
            )
        } else {
            (format!("own-{writer}"), &start)
        };
        let key = if writer % 3 == 0 {
            "retried".to_string()
        } else {
            format!("bulk-{writer}")
        };
        let body = if key == "retried" {
            bulk_body(&sites, "retry", &start, 20)
        } else {
            bulk_body(&chosen, &source, from, 90)
        };
        requests.push((key, body));
    }
    let bulk = requests.iter().map(|(key, body)| {
        let app = &app;
        async move { status_and_body(app.bulk(Some(key), "application/json", body.clone()).await).await }
    });
    let v1 = sites.iter().map(|&site| {
        let app = &app;
        let start = start.clone();
        async move {
            let body = json!({"site_id": site, "readings": readings("shared", &start, 100, "0.25")});
            status_and_body(app.ingest(&format!("v1-{site}"), &body).await).await
        }
    });
    let (bulk_answers, v1_answers) = tokio::join!(join_all(bulk), join_all(v1));

    let mut accepted = 0_u64;
    let mut stored_retries = 0;
    for ((key, _), (status, body)) in requests.iter().zip(&bulk_answers) {
        match *status {
            StatusCode::CREATED => {
                accepted += body["data"]["readings_accepted"].as_u64().unwrap();
                stored_retries += usize::from(key == "retried");
            }
            StatusCode::OK => assert_eq!(body["data"]["replayed"], true),
            other => panic!("{key}: {other} {body}"),
        }
    }
    assert_eq!(stored_retries, 1, "exactly one retry stores");
    for (status, body) in &v1_answers {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        accepted += body["data"]["readings_accepted"].as_u64().unwrap();
    }
    let mut stored = 0;
    for site in &sites {
        stored += app.assert_totals_match_rows(*site).await.1;
    }
    assert_eq!(accepted, stored as u64, "accepted readings vs stored rows");
    let mut distinct = HashSet::new();
    for (_, body) in &requests {
        let body: Value = serde_json::from_str(body).unwrap();
        for reading in body["readings"].as_array().unwrap() {
            distinct.insert((
                reading["site_id"].as_i64().unwrap(),
                reading["source_id"].to_string(),
                reading["timestamp"].to_string(),
            ));
        }
    }
    for &site in &sites {
        for reading in readings("shared", &start, 100, "0.25") {
            distinct.insert((
                site,
                reading["source_id"].to_string(),
                reading["timestamp"].to_string(),
            ));
        }
    }
    assert_eq!(
        stored as usize,
        distinct.len(),
        "stored rows vs distinct readings sent"
    );
    // Under the locks, the in-order path's look-up saw every stored reading.
    assert_eq!(app.metric("plume_ingest_fresh_conflicts_total").await, 0.0);
}
