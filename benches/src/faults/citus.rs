//! The Citus scenario: every shard of one worker moves to the other and back while plume ingests.
//!
//! On a Citus cluster the test owns (its coordinator's superuser URL given), the scenario makes a
//! database on every node, migrates and distributes it as `plume migrate --citus` does, and starts
//! `plume serve` on the coordinator under the usual retrying clients. Then, under load:
//! `citus_drain_node` moves every shard off the second worker, and `citus_rebalance_start` (waited
//! for with `citus_rebalance_wait`) spreads them over both again. The shards move with
//! `block_writes`: writes to a moving shard wait until its copy is in place (plume's tables have
//! no replica identity for logical replication to use). The checks are the suite's: nothing
//! acknowledged lost or counted twice, `plume verify` clean, every event delivered in order.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use plume::db::{self, citus, migrate};

use crate::receiver::Webhook;
use crate::scenarios::{conclude, first_write, fleet, seconds, READY_LIMIT};
use crate::world::{Fixtures, Plume, Store};
use crate::{Args, Report};

/// How the shards move: writes to a moving shard wait for the move.
const TRANSFER: &str = "block_writes";

/// Runs the scenario on the cluster whose coordinator `coordinator_url` reaches as a superuser.
pub(crate) async fn rebalance(args: &Args, coordinator_url: &str) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: "Citus shards drained and rebalanced".into(),
        ..Report::default()
    };
    let name = format!("faults_{}", uuid::Uuid::new_v4().simple());
    let url = citus::create_database(coordinator_url, &name).await?;
    migrate::run(&url).await.context("migrating")?;
    let owner = db::connect_plain(&url).await?;
    partitioning::ensure_window_covered(&owner, Default::default(), chrono::Utc::now()).await?;
    citus::distribute(&owner).await?;

    let fixtures = Fixtures::create(&url, args.sites).await?;
    let webhook = Webhook::start().await?;
    let plume = Plume::start(&args.plume_binary, Store::Url(url.clone()), &webhook.url(), &[]).await?;
    let fleet = fleet(args, &fixtures, &plume, Duration::ZERO)?;
    tokio::time::sleep(seconds(args.load_seconds)).await;

    let (host, port): (String, i32) = sqlx::query_as(
        "select node_name::text, node_port::int from citus_get_active_worker_nodes()
          order by node_port desc limit 1",
    )
    .fetch_one(&owner)
    .await?;
    let before = placements(&owner).await?;
    let started = Instant::now();
    sqlx::query("select citus_drain_node($1, $2, shard_transfer_mode => $3::citus.shard_transfer_mode)")
        .bind(&host)
        .bind(port)
        .bind(TRANSFER)
        .execute(&owner)
        .await
        .context("draining the second worker")?;
    let drained = started.elapsed();
    let after_drain = placements(&owner).await?;
    sqlx::query("select citus_set_node_property($1, $2, 'shouldhaveshards', true)")
        .bind(&host)
        .bind(port)
        .execute(&owner)
        .await?;
    let rebalance_started = Instant::now();
    sqlx::query("select citus_rebalance_start(shard_transfer_mode => $1::citus.shard_transfer_mode)")
        .bind(TRANSFER)
        .execute(&owner)
        .await
        .context("starting the rebalance")?;
    sqlx::query("select citus_rebalance_wait()")
        .execute(&owner)
        .await
        .context("waiting for the rebalance")?;
    let rebalanced = rebalance_started.elapsed();
    let after = placements(&owner).await?;
    report.notes.push(format!(
        "shard placements per worker {before:?}, drained in {:.1} s to {after_drain:?}, rebalanced in {:.1} s to {after:?}",
        drained.as_secs_f64(),
        rebalanced.as_secs_f64()
    ));
    if after_drain.len() != 1 || after.len() != before.len() {
        report.findings.problems.push(format!(
            "the shards did not move as staged: {before:?}, then {after_drain:?}, then {after:?}"
        ));
    }
    let done = Instant::now();
    report.recovery = first_write(
        fleet.first_ack_after(done, READY_LIMIT).await,
        "first acknowledged write sent after the rebalance",
    );
    tokio::time::sleep(seconds(args.load_seconds)).await;
    conclude(
        args,
        &mut report,
        fleet,
        &fixtures,
        &webhook,
        &url,
        &HashSet::new(),
    )
    .await?;
    drop(plume);
    owner.close().await;
    Ok(report)
}

/// How many shard placements each node (by port) holds, ascending by port: the workers only, as
/// the coordinator holds no shard of plume's.
async fn placements(owner: &sqlx::PgPool) -> anyhow::Result<Vec<(i32, i64)>> {
    Ok(sqlx::query_as(
        "select nodeport, count(*) from pg_dist_shard_placement group by nodeport order by nodeport",
    )
    .fetch_all(owner)
    .await?)
}
