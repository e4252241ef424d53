//! Operating the outbox: housekeeping of the daily event log, and the `plume outbox` commands.

use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plume::outbox::housekeeping::Housekeeping;
use serde_json::Value;
use sqlx::{Connection, Executor, PgPool};

use crate::catalog;
use crate::helpers::{hours_ago, readings, run_plume, spawn_app};

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn housekeeping_of(pool: &PgPool) -> Housekeeping {
    Housekeeping {
        pool: pool.clone(),
        retention: WEEK,
        interval: Duration::from_secs(3600),
    }
}

/// The day of the event log holding `at`, if it has a partition (found by its range: pg_partman's
/// names differ by version).
async fn day_holding(pool: &PgPool, at: DateTime<Utc>) -> Option<String> {
    catalog::partition_holding(pool, "outbox_events", at).await
}

async fn events_in_default(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox_events_default")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn housekeeping_premakes_days_rescues_the_default_partition_and_drops_only_delivered_days() {
    let app = spawn_app().await;
    let site = app.create_site("Kept", "100").await;

    let report = housekeeping_of(&app.pool).run_once().await.unwrap();
    assert!(report.ran);
    let ahead_at = Utc::now() + chrono::Duration::days(7);
    let ahead = day_holding(&app.pool, ahead_at).await;
    assert!(ahead.is_some(), "a week premade");

    // An undelivered event from 20 days ago, older than any partition: it lands in the default.
    let old_at = Utc::now() - chrono::Duration::days(20);
    assert_eq!(day_holding(&app.pool, old_at).await, None);
    sqlx::raw_sql(&format!(
        "insert into outbox_streams (site_id, head_seq) values ({site}, 1);
         insert into outbox_events (created_at, site_id, seq, event_id, event_type, occurred_at, data)
         values ('{}', {site}, 1, gen_random_uuid(), 'measurements.ingested', now(), '{{}}');",
        old_at.to_rfc3339()
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(events_in_default(&app.pool).await, 1);

    let report = housekeeping_of(&app.pool).run_once().await.unwrap();
    assert_eq!(report.default_rows_moved, 1);
    assert_eq!(report.partitions_dropped, 0, "its day holds an undelivered event");
    assert_eq!(events_in_default(&app.pool).await, 0);
    assert!(day_holding(&app.pool, old_at).await.is_some(), "its day was made");

    sqlx::query("update outbox_streams set delivered_seq = 1 where site_id = $1")
        .bind(site)
        .execute(&app.pool)
        .await
        .unwrap();
    let report = housekeeping_of(&app.pool).run_once().await.unwrap();
    assert!(report.partitions_dropped >= 1);
    assert_eq!(
        day_holding(&app.pool, old_at).await,
        None,
        "the delivered day is dropped whole"
    );
    assert_eq!(day_holding(&app.pool, ahead_at).await, ahead);
    assert!(
        day_holding(&app.pool, Utc::now()).await.is_some(),
        "days inside the retention stay"
    );
}

#[tokio::test]
async fn housekeeping_runs_in_one_instance_at_a_time() {
    let app = spawn_app().await;
    let mut other = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
    other.execute("begin").await.unwrap();
    other
        .execute("select pg_advisory_xact_lock(hashtext('plume.outbox.housekeeping'))")
        .await
        .unwrap();
    let report = housekeeping_of(&app.pool).run_once().await.unwrap();
    assert!(!report.ran, "skipped while another instance holds the job");
    other.execute("rollback").await.unwrap();
    assert!(housekeeping_of(&app.pool).run_once().await.unwrap().ran);
}

#[tokio::test]
async fn outbox_status_and_retry_dead_commands_report_and_refuse_clearly() {
    let app = spawn_app().await;
    let site = app.create_site("Listed", "100").await;
    let body = serde_json::json!({"site_id": site, "readings": readings("a", &hours_ago(2), 2, "1")});
    assert_eq!(
        app.ingest("one", &body).await.status(),
        reqwest::StatusCode::CREATED
    );

    let url = app.database_url.clone();
    let output = tokio::task::spawn_blocking(move || run_plume(&["outbox", "status", "--json"], &url))
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["status"]["pending"], 1);
    assert_eq!(report["status"]["streams"][0]["site_id"], site);
    assert_eq!(report["status"]["dead"], 0);

    let url = app.database_url.clone();
    let table = tokio::task::spawn_blocking(move || run_plume(&["outbox", "status"], &url))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("pending:             1"), "{text}");

    let url = app.database_url.clone();
    let unknown = tokio::task::spawn_blocking(move || {
        run_plume(
            &[
                "outbox",
                "retry-dead",
                "--event",
                "00000000-0000-4000-8000-000000000000",
            ],
            &url,
        )
    })
    .await
    .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no dead-lettered event has id"));

    let url = app.database_url.clone();
    let neither = tokio::task::spawn_blocking(move || run_plume(&["outbox", "retry-dead"], &url))
        .await
        .unwrap();
    assert_eq!(neither.status.code(), Some(2), "a usage error");
}

#[tokio::test]
async fn housekeeping_rescues_events_in_the_default_partition_for_a_day_it_must_premake() {
    let app = spawn_app().await;
    let site = app.create_site("Ahead", "100").await;
    // Housekeeping has not run for a week: no day after today has a partition yet, and an event
    // for the day after tomorrow landed in the default partition.
    let now = Utc::now();
    for later in catalog::ranges(&app.pool, "outbox_events").await {
        if later.from > now {
            sqlx::raw_sql(&format!("drop table {}", later.name))
                .execute(&app.pool)
                .await
                .unwrap();
        }
    }
    let day_at = now + chrono::Duration::days(2);
    assert_eq!(day_holding(&app.pool, day_at).await, None);
    sqlx::raw_sql(&format!(
        "insert into outbox_streams (site_id, head_seq) values ({site}, 1);
         insert into outbox_events (created_at, site_id, seq, event_id, event_type, occurred_at, data)
         values ('{}', {site}, 1, gen_random_uuid(), 'measurements.ingested', now(), '{{}}');",
        day_at.to_rfc3339()
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(events_in_default(&app.pool).await, 1);

    let report = housekeeping_of(&app.pool).run_once().await.unwrap();
    assert_eq!(report.default_rows_moved, 1);
    assert!(day_holding(&app.pool, day_at).await.is_some());
    assert_eq!(events_in_default(&app.pool).await, 0);
    let kept: i64 = sqlx::query_scalar("select count(*) from outbox_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn plume_relay_delivers_the_backlog_serves_metrics_and_stops_on_sigterm() {
    let app = spawn_app().await;
    let site = app.create_site("Relayed", "100").await;
    let body = serde_json::json!({"site_id": site, "readings": readings("a", &hours_ago(2), 2, "1")});
    assert_eq!(
        app.ingest("relayed", &body).await.status(),
        reqwest::StatusCode::CREATED
    );

    let port = crate::receiver::free_port().await;
    let relay = Command::new(env!("CARGO_BIN_EXE_plume"))
        .args(["relay", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &app.database_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::receiver::wait_for("the relay to deliver the event to the log", || async {
        plume::outbox::admin::status(&app.pool).await.unwrap().pending == 0
    })
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    let page = metrics.text().await.unwrap();
    assert!(page.contains("plume_outbox_delivered_total 1\n"), "{page}");
    assert!(page.contains("plume_outbox_pending 0\n"), "{page}");

    let pid = relay.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let output = tokio::task::spawn_blocking(move || relay.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("event delivered to the log"), "{log}");
    assert!(log.contains("measurements.ingested"), "{log}");
}
