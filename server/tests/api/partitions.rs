//! Storage layout: monthly partitions, the identity constraint on each, an empty default partition.

use chrono::{DateTime, Duration, Utc};
use partitioning::AcceptedWindow;
use reqwest::StatusCode;
use serde_json::json;

use crate::catalog;
use crate::helpers::*;

#[tokio::test]
async fn a_reading_lands_in_its_month_and_never_in_the_default_partition() {
    let app = spawn_app().await;
    let id = app.create_site("Months", "100000").await;
    let now = Utc::now();
    let times: Vec<DateTime<Utc>> = [0, 40, 200, 700]
        .iter()
        .map(|days| partitioning::month_start(now - Duration::days(*days)) + Duration::hours(1))
        .filter(|at| *at <= now)
        .collect();
    let body = json!({"site_id": id, "readings": times.iter().map(|at| json!({"timestamp": at.to_rfc3339(), "value": 1})).collect::<Vec<_>>()});
    let (status, response) = status_and_body(app.ingest("months", &body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{response}");

    let placed: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("select tableoid::regclass::text, measured_at from measurements where site_id = $1 order by measured_at")
            .bind(id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(placed.len(), times.len());
    for (partition, at) in placed {
        let month = catalog::ranges(&app.pool, "measurements")
            .await
            .into_iter()
            .find(|range| range.name == partition)
            .unwrap_or_else(|| panic!("{at} is in {partition}, which is not a ranged partition"));
        assert_eq!(
            (month.from, month.to),
            (
                partitioning::month_start(at),
                partitioning::next_month(partitioning::month_start(at))
            ),
            "{at} is in {partition}"
        );
    }
}

#[tokio::test]
async fn a_reading_without_a_partition_fails_its_batch_until_the_partition_exists() {
    // A service whose window is wider than the partitions made so far.
    let wide = AcceptedWindow {
        max_age: Duration::days(365 * 4),
        ..AcceptedWindow::default()
    };
    let app = spawn_app_with(
        plume::state::Settings {
            window: wide,
            ..Default::default()
        },
        Default::default(),
    )
    .await;
    let id = app.create_site("Early", "100").await;
    let old = (Utc::now() - Duration::days(365 * 3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let body = batch(id, &[("a", &old, "1"), ("a", &hours_ago(1), "2")]);
    let (status, response) = status_and_body(app.ingest("early", &body).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{response}");
    assert_eq!(response["error"]["code"], "UNAVAILABLE");
    assert_eq!(
        app.assert_totals_match_rows(id).await,
        (0, 0),
        "the whole batch rolled back"
    );

    partitioning::ensure_window_covered(&app.pool, wide, Utc::now())
        .await
        .unwrap();
    let (status, receipt) = status_and_body(app.ingest("early", &body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    assert_eq!(app.assert_totals_match_rows(id).await, (3_000_000, 2));
}

#[tokio::test]
async fn every_month_of_the_window_has_a_partition_with_the_identity_constraint() {
    let app = spawn_app().await;
    let report = partitioning::partition_report(&app.pool).await.unwrap();
    let window = AcceptedWindow::default();
    assert!(report.missing_months(&window.months(Utc::now())).is_empty());
    // pg_partman premakes months ahead of the current one.
    let newest = report.partitions.iter().filter_map(|p| p.to).max().unwrap();
    assert!(newest > Utc::now() + Duration::days(90));

    let without_identity: Vec<String> = sqlx::query_scalar(
        "select c.relname::text
           from pg_inherits i join pg_class c on c.oid = i.inhrelid
          where i.inhparent = 'measurements'::regclass
            and not exists (
                select 1 from pg_index x
                 where x.indrelid = c.oid and x.indisunique and x.indisvalid
                   and (select array_agg(a.attname::text order by k.ord)
                          from unnest(x.indkey) with ordinality k(attnum, ord)
                          join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum)
                       = array['site_id', 'source_id', 'measured_at'])",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        without_identity.is_empty(),
        "partitions without the unique identity index: {without_identity:?}"
    );
    let partitions: i64 =
        sqlx::query_scalar("select count(*) from pg_inherits where inhparent = 'measurements'::regclass")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(partitions >= 25 + 4, "{partitions} partitions");
}

#[tokio::test]
async fn the_default_partition_refuses_rows() {
    let app = spawn_app().await;
    let refused =
        sqlx::query("insert into measurements (site_id, measured_at, value_mg) values (1, '1990-01-01', 1)")
            .execute(&app.pool)
            .await
            .unwrap_err();
    let constraint = refused
        .as_database_error()
        .and_then(|e| e.constraint())
        .map(str::to_owned);
    assert_eq!(constraint.as_deref(), Some(partitioning::DEFAULT_PARTITION_GUARD));
}

#[tokio::test]
async fn a_wider_window_gets_its_partitions_and_its_readings() {
    let app = spawn_app().await;
    let window = AcceptedWindow {
        max_age: Duration::days(365 * 4),
        ..AcceptedWindow::default()
    };
    let created = partitioning::ensure_window_covered(&app.pool, window, Utc::now())
        .await
        .unwrap();
    assert!(created >= 23, "created {created}");
    let again = partitioning::ensure_window_covered(&app.pool, window, Utc::now())
        .await
        .unwrap();
    assert_eq!(again, 0);
    let report = partitioning::partition_report(&app.pool).await.unwrap();
    assert!(report.missing_months(&window.months(Utc::now())).is_empty());

    let wide = spawn_app_with(
        plume::state::Settings {
            window,
            ..Default::default()
        },
        Default::default(),
    )
    .await;
    partitioning::ensure_window_covered(&wide.pool, window, Utc::now())
        .await
        .unwrap();
    let id = wide.create_site("Old data", "100").await;
    let old = (Utc::now() - Duration::days(365 * 3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (status, body) = status_and_body(wide.ingest("old", &batch(id, &[("a", &old, "1")])).await).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(wide.assert_totals_match_rows(id).await, (1_000_000, 1));
}
