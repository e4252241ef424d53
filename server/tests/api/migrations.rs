//! Migrations on both pg_partman lines: a fresh database gets the same partition sets from the
//! same migration files whichever pg_partman the server has, and refinery's history always matches
//! the files, so a later binary finds nothing changed.

use plume::db::{migrate, partman_dialect};

use crate::helpers::{empty_database, fresh_database};

/// `(version, name, checksum)` of every migration in the database's history.
async fn history(url: &str) -> Vec<(i32, String, String)> {
    let pool = plume::db::connect_plain(url).await.unwrap();
    let rows = sqlx::query_as("select version, name, checksum from refinery_schema_history order by version")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

#[tokio::test]
async fn a_fresh_database_gets_monthly_and_daily_partition_sets_on_either_pg_partman() {
    let url = empty_database().await;
    let applied = migrate::run(&url).await.unwrap();
    let migrations = migrate::migrations();
    assert_eq!(applied.len(), migrations.len(), "{applied:?}");
    assert_eq!(applied[0], "V1__foundation");

    let pool = plume::db::connect_plain(&url).await.unwrap();
    let intervals: Vec<(String, String)> = sqlx::query_as(
        "select parent_table, partition_interval from partman.part_config order by parent_table",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        intervals,
        [
            ("public.measurements".to_string(), "1 mon".to_string()),
            ("public.outbox_events".to_string(), "1 day".to_string())
        ]
    );
    let report = partitioning::partition_report(&pool).await.unwrap();
    let window = partitioning::AcceptedWindow::default();
    assert!(report
        .missing_months(&window.months(chrono::Utc::now()))
        .is_empty());
    pool.close().await;
}

#[tokio::test]
async fn the_history_matches_the_files_so_migrating_again_changes_nothing() {
    let url = fresh_database().await;
    let recorded = history(&url).await;
    let mut expected: Vec<(i32, String, String)> = migrate::migrations()
        .iter()
        .map(|m| (m.version() as i32, m.name().to_string(), m.checksum().to_string()))
        .collect();
    expected.sort();
    assert_eq!(recorded, expected);
    assert!(migrate::run(&url).await.unwrap().is_empty());
    assert_eq!(history(&url).await, recorded);
}

#[tokio::test]
async fn the_pg_partman_line_is_detected_and_translating_again_applies_nothing() {
    let url = fresh_database().await;
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let installed: String =
        sqlx::query_scalar("select extversion from pg_extension where extname = 'pg_partman'")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    let major = partman_dialect::partman_major(&mut connection).await.unwrap();
    assert_eq!(
        major.map(|m| m.to_string()),
        installed.split('.').next().map(String::from)
    );
    // On a database that has them, translating again applies nothing, on either line.
    let again = partman_dialect::apply(&mut connection, &migrate::migrations())
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}
