//! The distributed mode: what `plume migrate --citus` leaves, and what a plume process says of the
//! database it serves. Runs in both kinds of test run: against a Citus coordinator
//! (`scripts/test-citus.sh`) it checks the distribution; against one server, that nothing of it
//! shows.

use plume::db::citus::{self, Topology, DISTRIBUTED};
use serde_json::Value;

use crate::helpers::{batch, spawn_app, TestApp, CITUS_URL_ENV};

fn on_citus() -> bool {
    std::env::var(CITUS_URL_ENV).is_ok_and(|url| !url.is_empty())
}

#[tokio::test]
async fn the_database_kind_is_found_and_ready_says_when_it_is_citus() {
    let app = spawn_app().await;
    let topology = Topology::detect(&app.pool).await.unwrap();
    let ready: Value = app.get("/ready").await.json().await.unwrap();
    if on_citus() {
        assert_eq!(topology, Topology::Citus);
        assert_eq!(ready["data"]["database"], "citus: tables distributed by site");
    } else {
        assert_eq!(topology, Topology::Single);
        assert!(ready["data"].get("database").is_none(), "{ready}");
    }
}

#[tokio::test]
async fn every_per_site_table_is_distributed_by_site_beside_the_sites_and_a_second_run_changes_nothing() {
    if !on_citus() {
        return; // Nothing is distributed on one server.
    }
    let app = spawn_app().await;
    for (table, column) in DISTRIBUTED {
        let (key, colocated): (String, bool) = sqlx::query_as(
            "select column_to_column_name(p.logicalrelid, p.partkey),
                    p.colocationid = (select colocationid from pg_dist_partition
                                       where logicalrelid = 'sites'::regclass)
               from pg_dist_partition p where p.logicalrelid = $1::regclass",
        )
        .bind(table)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|error| panic!("{table} is not distributed: {error}"));
        assert_eq!((key.as_str(), colocated), (column, true), "{table}");
    }
    let bulk: String = sqlx::query_scalar(
        "select column_to_column_name(logicalrelid, partkey) from pg_dist_partition
          where logicalrelid = 'bulk_batches'::regclass",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(bulk, "client_id");
    // Partitions pg_partman made are distributed with their parent; none is left local.
    let local: i64 = sqlx::query_scalar(
        "select count(*) from pg_inherits i
           join pg_class parent on parent.oid = i.inhparent
          where parent.relname in ('measurements', 'outbox_events')
            and not exists (select from pg_dist_partition where logicalrelid = i.inhrelid)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(local, 0);
    let again = citus::distribute(&app.pool).await.unwrap();
    assert!(again.tables.is_empty(), "{again:?}");
    assert_eq!(again.already.len(), DISTRIBUTED.len() + 1);
}

/// A site's row and the change feed's copy of it: (version, total, count).
async fn row_and_copy(app: &TestApp, site: i64) -> [(i64, i64, i64); 2] {
    let read = |table: &'static str| {
        let query = format!("select version, total_emissions_mg, reading_count from {table} where id = $1");
        async move {
            sqlx::query_as(&query)
                .bind(site)
                .fetch_one(&app.pool)
                .await
                .unwrap()
        }
    };
    [read("sites").await, read("site_feed").await]
}

#[tokio::test]
async fn the_feeds_copy_of_the_sites_stays_on_the_coordinator_follows_every_change_and_is_repaired_when_behind(
) {
    if !on_citus() {
        return; // One server's feed reads `sites` itself.
    }
    let app = spawn_app().await;
    let site = app.create_site("Copied", "100").await;
    let [row, copy] = row_and_copy(&app, site).await;
    assert_eq!(row, copy, "a new site is copied");
    let at = (chrono::Utc::now() - chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M:%SZ");
    let response = app
        .ingest("copied-1", &batch(site, &[("s1", &at.to_string(), "1.5")]))
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let [row, copy] = row_and_copy(&app, site).await;
    assert_eq!(
        (row, copy.1),
        (copy, 1_500_000),
        "an ingest moves the copy with the row"
    );
    let local: bool = sqlx::query_scalar(
        "select not exists (select from pg_dist_partition where logicalrelid = 'site_feed'::regclass)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(local, "the copy is a table of the coordinator");

    // A copy left behind (a coordinator lost between a worker's commit and its own) is brought
    // up to date by the reconciliation `plume serve` runs at start; a second finds nothing to do.
    sqlx::query("update site_feed set version = 1, total_emissions_mg = 0 where id = $1")
        .bind(site)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(plume::changes::mirror::reconcile(&app.pool).await.unwrap(), 1);
    let [row, copy] = row_and_copy(&app, site).await;
    assert_eq!(row, copy);
    assert_eq!(plume::changes::mirror::reconcile(&app.pool).await.unwrap(), 0);
}
