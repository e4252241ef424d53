//! A plume database made with pg_partman 4.7 whose extension is then updated to 5.x, as
//! `docs/OPERATIONS.md` describes: everything keeps working with the same binary.
//!
//! Ignored by default: it needs a server that offers both a 4.x and a 5.x pg_partman (Debian
//! packages ship one line each). `scripts/test-pg17.sh` gives its PostgreSQL 17 the 4.7 install
//! script from the host's package and runs it with `--ignored`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Months, Utc};
use partitioning::maintenance::{MaintenanceJob, MaintenanceSettings, MaintenanceStats};
use plume::db::{self, migrate};
use plume::outbox::housekeeping::Housekeeping;
use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{batch, empty_database, hours_ago, spawn_app_on};

/// The newest 4.x pg_partman the server offers.
async fn partman_4(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "select version from pg_available_extension_versions
          where name = 'pg_partman' and version like '4.%'
          order by string_to_array(version, '.')::int[] desc limit 1",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
    .expect("the server offers no pg_partman 4.x; run this through scripts/test-pg17.sh")
}

async fn partman_config(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "select parent_table, partition_type, partition_interval from partman.part_config order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "needs a server offering pg_partman 4.x and 5.x: scripts/test-pg17.sh"]
async fn a_database_made_with_pg_partman_4_keeps_working_after_the_update_to_5() {
    // Arrange: a plume database made, filled and maintained under pg_partman 4.x.
    let url = empty_database().await;
    let pool = db::connect_plain(&url).await.unwrap();
    let old = partman_4(&pool).await;
    sqlx::raw_sql(&format!(
        "create schema partman; create extension pg_partman version '{old}' schema partman"
    ))
    .execute(&pool)
    .await
    .unwrap();
    migrate::run(&url).await.unwrap();
    partitioning::ensure_window_covered(&pool, Default::default(), Utc::now())
        .await
        .unwrap();
    assert_eq!(partman_config(&pool).await[0].1, "native");
    let app = spawn_app_on(
        &url,
        db::connect(&url, &Default::default()).await.unwrap(),
        Default::default(),
    )
    .await;
    let site = app.create_site("Upgraded", "1000").await;
    let before = batch(site, &[("a", &hours_ago(3), "1.5")]);
    assert_eq!(app.ingest("before", &before).await.status(), StatusCode::CREATED);

    // Act: pg_partman's staged update, with plume's instances stopped.
    app.shut_down();
    sqlx::raw_sql("alter extension pg_partman update to '5.0.0'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql("alter extension pg_partman update")
        .execute(&pool)
        .await
        .unwrap();

    // Assert: the same partition sets, nothing to migrate, maintenance and housekeeping work, and
    // readings are stored and counted as before.
    let version: String =
        sqlx::query_scalar("select extversion from pg_extension where extname = 'pg_partman'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(version.starts_with('5'), "{version}");
    assert_eq!(
        partman_config(&pool).await,
        [
            ("public.measurements".into(), "range".into(), "1 mon".into()),
            ("public.outbox_events".into(), "range".into(), "1 day".into())
        ]
    );
    assert!(migrate::run(&url).await.unwrap().is_empty());
    let maintenance = MaintenanceJob {
        pool: pool.clone(),
        settings: MaintenanceSettings::default(),
        interval: Duration::from_secs(3600),
        stats: Arc::new(MaintenanceStats::default()),
    };
    let later = Utc::now() + Months::new(7);
    let report = maintenance.run_once(later).await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(!report.created.is_empty(), "months made under 5.x: {report:?}");
    assert_eq!(report.months_ahead, 4);
    let housekeeping = Housekeeping {
        pool: pool.clone(),
        retention: Duration::from_secs(7 * 24 * 3600),
        interval: Duration::from_secs(3600),
    };
    assert!(housekeeping.run_once().await.unwrap().ran);

    let app = spawn_app_on(
        &url,
        db::connect(&url, &Default::default()).await.unwrap(),
        Default::default(),
    )
    .await;
    let after = batch(site, &[("a", &hours_ago(2), "2.5")]);
    assert_eq!(app.ingest("after", &after).await.status(), StatusCode::CREATED);
    assert_eq!(app.assert_totals_match_rows(site).await, (4_000_000, 2));
    assert!(partitioning::verify::verify(&pool).await.unwrap().is_clean());
}
