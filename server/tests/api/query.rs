//! The v2 read side: series from the rollups, reading pages and exports, each checked against the
//! stored rows of a synthetic load.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use seeds::synthetic::Plan;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, status_and_body, TestApp};

const FROM: &str = "2026-01-01T00:00:00Z";
const TO: &str = "2026-04-01T00:00:00Z";

fn kg(mg: i64) -> String {
    format!("{}.{:06}", mg / 1_000_000, mg % 1_000_000)
}

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A plume holding three synthetic sites of 3,000 readings from three sources over Q1 2026; returns
/// it and the sites' ids.
async fn seeded_app() -> (TestApp, Vec<i64>) {
    let app = spawn_app().await;
    let plan = Plan {
        sites: 3,
        readings_per_site: 3_000,
        sources: 3,
        from: utc(FROM),
        to: utc(TO),
        seed: 21,
    };
    seeds::load::load(&app.pool, &plan, 2, |_| {}).await.unwrap();
    let ids = sqlx::query_scalar("select id from sites order by id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    (app, ids)
}

/// The buckets as the API should show them, computed from the raw rows.
async fn buckets_from_rows(app: &TestApp, site: i64, bucket: &str, from: &str, to: &str) -> Value {
    let rows: Vec<(DateTime<Utc>, i64, i64, i64, i64)> = sqlx::query_as(
        "select date_trunc($2, measured_at, 'UTC'), sum(value_mg)::bigint, count(*), min(value_mg), max(value_mg)
           from measurements where site_id = $1 and measured_at >= $3 and measured_at < $4
          group by 1 order by 1",
    )
    .bind(site)
    .bind(bucket)
    .bind(utc(from))
    .bind(utc(to))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(start, sum, count, min, max)| {
            json!({"start": stamp(start), "sum": kg(sum), "count": count, "min": kg(min), "max": kg(max)})
        })
        .collect()
}

/// Every reading of a site in the range as the API should show it, in (source, time) order.
async fn readings_from_rows(
    app: &TestApp,
    site: i64,
    source: Option<&str>,
    from: &str,
    to: &str,
) -> Vec<Value> {
    let rows: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
        "select source_id, measured_at, value_mg from measurements
          where site_id = $1 and ($2::text is null or source_id = $2) and measured_at >= $3 and measured_at < $4
          order by source_id, measured_at",
    )
    .bind(site)
    .bind(source)
    .bind(utc(from))
    .bind(utc(to))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(source_id, at, mg)| json!({"source_id": source_id, "measured_at": stamp(at), "value": kg(mg)}))
        .collect()
}

#[tokio::test]
async fn series_in_hours_days_and_months_equal_the_rows_added_up() {
    let (app, sites) = seeded_app().await;
    let cases = [
        ("hour", "2026-02-10T00:00:00Z", "2026-03-12T00:00:00Z"),
        ("day", "2026-01-15T00:00:00Z", "2026-03-20T00:00:00Z"),
        ("month", FROM, TO),
    ];
    for (bucket, from, to) in cases {
        let path = format!(
            "/v2/sites/{}/series?from={from}&to={to}&bucket={bucket}",
            sites[1]
        );

        let (status, body) = status_and_body(app.get(&path).await).await;

        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["data"],
            buckets_from_rows(&app, sites[1], bucket, from, to).await,
            "{bucket}"
        );
        assert_eq!(body["meta"]["bucket"], bucket);
        assert_eq!(body["meta"]["site_id"], sites[1]);
    }
    let months = status_and_body(
        app.get(&format!(
            "/v2/sites/{}/series?from={FROM}&to={TO}&bucket=month",
            sites[1]
        ))
        .await,
    )
    .await
    .1;
    assert_eq!(months["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_series_follows_new_readings_exactly_and_names_its_problems() {
    let app = spawn_app().await;
    let site = app.create_site("Series", "100").await;
    let hour = chrono::Utc::now() - chrono::Duration::hours(3);
    let hour = chrono::DurationRound::duration_trunc(hour, chrono::Duration::hours(1)).unwrap();
    let at = |minutes: i64| stamp(hour + chrono::Duration::minutes(minutes));
    let batch = json!({"site_id": site, "readings": [
        {"source_id": "a", "timestamp": at(5), "value": "0.1"},
        {"source_id": "b", "timestamp": at(10), "value": "0.2"},
        {"source_id": "a", "timestamp": at(65), "value": "1.000001"},
    ]});
    assert_eq!(app.ingest("series-1", &batch).await.status(), StatusCode::CREATED);
    let (from, to) = (stamp(hour), stamp(hour + chrono::Duration::hours(2)));

    let (status, body) = status_and_body(
        app.get(&format!("/v2/sites/{site}/series?from={from}&to={to}"))
            .await,
    )
    .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"],
        json!([
            {"start": from, "sum": "0.300000", "count": 2, "min": "0.100000", "max": "0.200000"},
            {"start": at(60), "sum": "1.000001", "count": 1, "min": "1.000001", "max": "1.000001"},
        ])
    );

    let misaligned = app
        .get(&format!("/v2/sites/{site}/series?from={}&to={to}", at(5)))
        .await;
    let (status, body) = status_and_body(misaligned).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"][0]["path"], "from");
    let too_many = app
        .get(&format!(
            "/v2/sites/{site}/series?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&bucket=hour"
        ))
        .await;
    let (status, body) = status_and_body(too_many).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 10000"),
        "{body}"
    );
    let missing = app
        .get(&format!("/v2/sites/999999/series?from={from}&to={to}"))
        .await;
    assert_eq!(
        status_and_body(missing).await.1["error"]["code"],
        "SITE_NOT_FOUND"
    );
    let empty_site = app.create_site("Empty", "1").await;
    let empty = status_and_body(
        app.get(&format!("/v2/sites/{empty_site}/series?from={from}&to={to}"))
            .await,
    )
    .await;
    assert_eq!(empty, (StatusCode::OK, empty.1.clone()));
    assert_eq!(empty.1["data"], json!([]));
}

#[tokio::test]
async fn pages_walked_by_cursor_hold_every_reading_once_in_order() {
    let (app, sites) = seeded_app().await;
    let (from, to) = ("2026-01-20T00:00:00Z", "2026-03-05T12:30:00Z");
    for source in [None, Some("sensor-002")] {
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v2/sites/{}/readings?from={from}&to={to}&limit=700", sites[0]);
            if let Some(source) = source {
                path.push_str(&format!("&source_id={source}"));
            }
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let (status, body) = status_and_body(app.get(&path).await).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let page = body["data"].as_array().unwrap();
            assert!(page.len() <= 700);
            walked.extend(page.iter().cloned());
            pages += 1;
            match body["meta"]["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }

        let expected = readings_from_rows(&app, sites[0], source, from, to).await;
        assert_eq!(walked, expected, "source {source:?}");
        assert_eq!(pages, expected.len().div_ceil(700).max(1));
    }

    let bad = status_and_body(
        app.get(&format!("/v2/sites/{}/readings?cursor=c2l0ZTox", sites[0]))
            .await,
    )
    .await;
    assert_eq!(
        (bad.0, bad.1["error"]["details"][0]["path"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("cursor"))
    );
    let first = app
        .get(&format!(
            "/v2/sites/{}/readings?source_id=sensor-002&limit=5",
            sites[0]
        ))
        .await;
    let cursor = status_and_body(first).await.1["meta"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_filter = app
        .get(&format!("/v2/sites/{}/readings?cursor={cursor}", sites[0]))
        .await;
    let (status, body) = status_and_body(other_filter).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another source_id"),
        "{body}"
    );
    let missing = status_and_body(app.get("/v2/sites/999999/readings").await).await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
}

/// The readings in (site, source, time) order: how the tests compare an export, which comes in no
/// particular order.
fn sorted(mut readings: Vec<Value>) -> Vec<Value> {
    readings.sort_by_key(|r| {
        let text = |name: &str| r[name].as_str().map(str::to_owned);
        (
            r["site_id"].as_i64(),
            text("source_id"),
            text("measured_at").map(|t| utc(&t)),
        )
    });
    readings
}

#[tokio::test]
async fn exports_stream_every_reading_of_the_range_as_csv_or_ndjson() {
    let (app, sites) = seeded_app().await;

    let response = app
        .get(&format!("/v2/export?site_id={}&format=csv", sites[2]))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains(&format!("plume-site-{}-", sites[2])));
    let csv = response.text().await.unwrap();
    let expected = readings_from_rows(&app, sites[2], None, FROM, TO).await;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("site_id,source_id,measured_at,value_kg"));
    let rows: Vec<Value> = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields[0], sites[2].to_string());
            json!({"source_id": fields[1], "measured_at": fields[2], "value": fields[3]})
        })
        .collect();
    assert_eq!(sorted(rows), expected);

    let (from, to) = ("2026-02-01T00:00:00Z", "2026-02-15T06:00:00Z");
    let response = app
        .get(&format!("/v2/export?from={from}&to={to}&format=ndjson"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines = sorted(lines);
    let mut expected = Vec::new();
    for site in &sites {
        for reading in readings_from_rows(&app, *site, None, from, to).await {
            expected.push(json!({
                "site_id": site, "source_id": reading["source_id"], "measured_at": reading["measured_at"],
                "value_kg": reading["value"],
            }));
        }
    }
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn an_export_needs_a_known_site_or_a_bounded_range() {
    let (app, _) = seeded_app().await;
    let cases = [
        ("/v2/export", StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        (
            "/v2/export?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "/v2/export?site_id=1&format=xlsx",
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "/v2/export?site_id=999999",
            StatusCode::NOT_FOUND,
            "SITE_NOT_FOUND",
        ),
    ];
    for (path, status, code) in cases {
        let (got, body) = status_and_body(app.get(path).await).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn at_most_four_exports_run_and_a_client_leaving_ends_its_copy_and_closes_that_connection() {
    let app = spawn_app().await;
    let plan = Plan {
        sites: 1,
        readings_per_site: 400_000,
        sources: 4,
        from: utc(FROM),
        to: utc(TO),
        seed: 4,
    };
    seeds::load::load(&app.pool, &plan, 1, |_| {}).await.unwrap();
    let site: i64 = sqlx::query_scalar("select id from sites")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut running = Vec::new();
    for _ in 0..plume::query::export::MAX_CONCURRENT_EXPORTS {
        let mut response = app.get(&format!("/v2/export?site_id={site}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.chunk().await.unwrap().is_some());
        running.push(response);
    }
    let (status, body) = status_and_body(app.get(&format!("/v2/export?site_id={site}")).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("retry later"),
        "{body}"
    );

    drop(running);

    // Closed, not handed back to the pool: a returned connection would first read the rest of the
    // COPY (and it would still show in pg_stat_activity, idle, with the COPY as its last query).

    let copies = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity where query like 'copy (select site_id%'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let mut waited = 0;
    while copies().await > 0 {
        assert!(
            waited < 100,
            "an export's connection is still open 10 s after its client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    let after = app.get(&format!("/v2/sites/{site}/readings?limit=1")).await;
    assert_eq!(after.status(), StatusCode::OK);
    let again = app
        .get(&format!(
            "/v2/export?site_id={site}&from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z"
        ))
        .await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "the exports' permits were not given back"
    );
}
