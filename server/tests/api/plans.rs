//! The read queries' plans: each reads only the partitions its range needs, with the custom plans
//! PostgreSQL makes for the first executions of a prepared statement and with the generic plan it
//! may switch to after them. Series read the rollups, never the raw readings.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use plume::query::params::{ExportFormat, ExportRequest};
use plume::query::{export, readings, series, TimeRange};
use plume::sites::SiteId;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::catalog;
use crate::helpers::spawn_app;

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// Every relation a JSON plan reads.
fn relations(plan: &Value, found: &mut BTreeSet<String>) {
    if let Some(name) = plan.get("Relation Name").and_then(Value::as_str) {
        found.insert(name.to_owned());
    }
    for child in plan.get("Plans").and_then(Value::as_array).into_iter().flatten() {
        relations(child, found);
    }
}

/// A value bound after the site and the range.
#[derive(Debug, Clone)]
enum Bind {
    Text(&'static str),
    Int(i64),
    Time(DateTime<Utc>),
}

/// The relations `sql` reads when run for site 1 over `range` and then `rest`, planned as `mode`
/// (`auto` or `force_generic_plan`).
async fn relations_read(
    connection: &mut PgConnection,
    mode: &str,
    sql: &str,
    range: TimeRange,
    rest: &[Bind],
) -> BTreeSet<String> {
    sqlx::query(&format!("set plan_cache_mode = {mode}"))
        .execute(&mut *connection)
        .await
        .unwrap();
    let text = format!("explain (analyze, format json) {sql}");
    let mut query = sqlx::query_scalar::<_, Value>(&text)
        .bind(1_i64)
        .bind(range.from)
        .bind(range.to);
    for value in rest {
        query = match value {
            Bind::Text(text) => query.bind(*text),
            Bind::Int(n) => query.bind(*n),
            Bind::Time(at) => query.bind(*at),
        };
    }
    let plan = query.fetch_one(&mut *connection).await.unwrap();
    let mut found = BTreeSet::new();
    relations(&plan[0]["Plan"], &mut found);
    found
}

/// The partitions holding each of `months`, found by their ranges.
async fn months(pool: &sqlx::PgPool, months: &[DateTime<Utc>]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for month in months {
        names.insert(
            catalog::partition_holding(pool, "measurements", *month)
                .await
                .expect("every month of the window has a partition"),
        );
    }
    names
}

#[tokio::test]
async fn reading_pages_and_exports_read_only_the_months_of_their_range() {
    let app = spawn_app().await;
    let mut connection = PgConnection::connect(&app.database_url).await.unwrap();
    // A month inside the partitions the migration made, and a range across three of them.
    let month = plume::query::Bucket::Month;
    let now = Utc::now();
    let this_month = partitioning::month_start(now);
    let last = partitioning::month_start(this_month - chrono::Duration::days(1));
    let before = partitioning::month_start(last - chrono::Duration::days(1));
    assert_eq!(
        month.count(TimeRange {
            from: before,
            to: this_month
        }),
        2
    );
    let one_month = TimeRange {
        from: last,
        to: this_month,
    };
    let three_months = TimeRange {
        from: before + chrono::Duration::days(3),
        to: this_month + chrono::Duration::hours(5),
    };
    let cases = [
        (one_month, months(&app.pool, &[last]).await),
        (three_months, months(&app.pool, &[before, last, this_month]).await),
    ];

    for (range, expected) in cases {
        for mode in ["auto", "force_generic_plan"] {
            let page_binds = [Bind::Text(""), Bind::Time(range.from), Bind::Int(1001)];
            let page = relations_read(&mut connection, mode, readings::PAGE_SQL, range, &page_binds).await;
            assert_eq!(page, expected, "page, {mode}");
            let source_binds = [page_binds.as_slice(), &[Bind::Text("sensor-001")]].concat();
            let source_page = relations_read(
                &mut connection,
                mode,
                readings::SOURCE_PAGE_SQL,
                range,
                &source_binds,
            )
            .await;
            assert_eq!(source_page, expected, "source page, {mode}");
        }
        for site in [SiteId::new(1), None] {
            let request = ExportRequest {
                site,
                range,
                format: ExportFormat::Csv,
            };
            let text = format!(
                "explain (format json) {}",
                export::select_statement(&request, None)
            );
            let plan: Value = sqlx::query_scalar(&text)
                .fetch_one(&mut connection)
                .await
                .unwrap();
            let mut found = BTreeSet::new();
            relations(&plan[0]["Plan"], &mut found);
            assert_eq!(found, expected, "export of {site:?}");
        }
    }
}

#[tokio::test]
async fn series_read_the_rollups_and_never_the_raw_readings() {
    let app = spawn_app().await;
    let mut connection = PgConnection::connect(&app.database_url).await.unwrap();
    let range = TimeRange {
        from: utc("2026-01-01T00:00:00Z"),
        to: utc("2026-03-01T00:00:00Z"),
    };
    let rollups = BTreeSet::from(["hourly_rollups".to_owned()]);

    for mode in ["auto", "force_generic_plan"] {
        let hours = relations_read(&mut connection, mode, series::HOURS_SQL, range, &[]).await;
        assert_eq!(hours, rollups, "hours, {mode}");

        sqlx::query(&format!("set plan_cache_mode = {mode}"))
            .execute(&mut connection)
            .await
            .unwrap();
        let starts = plume::query::Bucket::Day.starts(range);
        let stops: Vec<_> = starts
            .iter()
            .map(|start| plume::query::Bucket::Day.after(*start))
            .collect();
        let text = format!("explain (analyze, format json) {}", series::BUCKETS_SQL);
        let plan: Value = sqlx::query_scalar(&text)
            .bind(1_i64)
            .bind(&starts)
            .bind(&stops)
            .fetch_one(&mut connection)
            .await
            .unwrap();
        let mut days = BTreeSet::new();
        relations(&plan[0]["Plan"], &mut days);
        assert_eq!(days, rollups, "days, {mode}");
    }
}
