//! `plume partitions ...` and `plume verify`: the DBA's commands. Tables for people by default,
//! `--json` for scripts; the work itself is in the `partitioning` crate.

use std::fmt::Write;

use anyhow::Context;
use chrono::{DateTime, Utc};
use partitioning::maintenance::{MaintenanceJob, MaintenanceLock};
use partitioning::retention::{self, ExpiredPartition, RetentionPolicy};
use partitioning::status::TableStatus;
use partitioning::{repair, status, verify};

use crate::config::{
    maintenance_settings, MaintainArgs, PartitionStatusArgs, RepairDefaultArgs, RetentionArgs, VerifyArgs,
};
use crate::db::Database;
use crate::quantity::Milligrams;

/// `plume partitions status`.
pub async fn status(args: PartitionStatusArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let result = status::status(&database.owner, args.exact, Utc::now()).await;
    let receipts = crate::ingest::receipts::summary(&database.owner, args.exact).await;
    database.close().await;
    let status = result.context("reading the partitions")?;
    let receipts = receipts.context("reading the receipts")?;
    if args.json {
        let mut json = serde_json::to_value(&status)?;
        json["receipts"] = serde_json::to_value(&receipts)?;
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", status_table(&status));
        let oldest = match receipts.oldest {
            Some(at) => format!(", oldest {}", at.format("%Y-%m-%d %H:%M UTC")),
            None if args.exact => ", none".to_string(),
            None => " (est.; --exact counts them and finds the oldest)".to_string(),
        };
        println!(
            "\nidempotency receipts:    {} v1, {} bulk{oldest}; pruned by `plume serve` after --receipt-retention-days",
            receipts.v1, receipts.bulk,
        );
    }
    Ok(())
}

/// `plume partitions maintain`.
pub async fn maintain(args: MaintainArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let job = MaintenanceJob {
        pool: database.owner.clone(),
        settings: maintenance_settings(&args.window, &args.retention),
        interval: std::time::Duration::ZERO,
        stats: Default::default(),
    };
    let result = job.run_once(Utc::now()).await;
    database.close().await;
    let report = result.context("running partition maintenance")?;
    for error in &report.errors {
        eprintln!("failed: {error}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !report.ran {
        println!("another plume instance is running maintenance right now; nothing done");
    } else {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        println!("created:       {}", list(&report.created));
        println!("retired:       {}", list(&report.dropped));
        println!("analysed:      {}", list(&report.analyzed));
        println!("default rows:  {}", report.default_rows);
        println!("months ahead:  {}", report.months_ahead);
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("partition maintenance failed in {} step(s)", report.errors.len())
    }
}

/// The maintenance lock, so that a DBA's command never runs alongside the job of a running plume.
async fn maintenance_lock(database: &Database) -> anyhow::Result<MaintenanceLock> {
    MaintenanceLock::try_acquire(&database.owner)
        .await?
        .context("partition maintenance is running in a plume instance right now; try again in a minute")
}

/// `plume partitions repair-default`.
pub async fn repair_default(args: RepairDefaultArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let lock = match maintenance_lock(&database).await {
        Ok(lock) => lock,
        Err(error) => {
            database.close().await;
            return Err(error);
        }
    };
    let json = args.json;
    let result = repair::repair_default(&database.owner, |progress| {
        if json {
            println!("{}", serde_json::to_string(progress).unwrap_or_default());
        } else {
            println!(
                "batch {}: moved {} rows, {} left in the default partition",
                progress.batch, progress.moved, progress.remaining
            );
        }
    })
    .await;
    lock.release().await;
    database.close().await;
    let report = result.context("repairing the default partition")?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else if report.moved == 0 {
        println!("the default partition is empty; nothing to move");
    } else {
        println!("moved {} rows in {} batches", report.moved, report.batches);
    }
    if report.guard_restored && !json {
        println!("the default partition's guard is back: it refuses rows again");
    }
    Ok(())
}

/// `plume partitions retention`.
pub async fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    if args.apply && args.archive_dir.is_none() && !args.no_archive {
        anyhow::bail!("--apply drops readings: give --archive-dir DIR to keep them, or --no-archive to drop them for good");
    }
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let policy = RetentionPolicy {
        keep_months: args.keep,
        archive_dir: args.archive_dir.clone(),
    };
    let window = args.window.window();
    let json = args.json;
    let result = if args.apply {
        let lock = match maintenance_lock(&database).await {
            Ok(lock) => lock,
            Err(error) => {
                database.close().await;
                return Err(error);
            }
        };
        let applied = retention::apply(&database.owner, &policy, window, Utc::now(), |retired| {
            if !json {
                println!("retired {}", describe(retired));
            }
        })
        .await;
        lock.release().await;
        applied
    } else {
        retention::plan(&database.owner, &policy, window, Utc::now()).await
    };
    database.close().await;
    let partitions = result.context("applying retention")?;
    if json {
        let report = serde_json::json!({ "applied": args.apply, "partitions": partitions });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if partitions.is_empty() {
        println!("no month is older than {} months; nothing expires", args.keep);
    } else if !args.apply {
        println!("would retire (dry run; add --apply to archive and drop):");
        for partition in &partitions {
            println!("  {}", describe(partition));
        }
    }
    Ok(())
}

/// `plume verify`.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let result = verify::verify(&database.owner).await;
    database.close().await;
    let verification = result.context("verifying site totals")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verification)?);
    } else {
        for drift in &verification.drift {
            let site = if drift.site_exists { "" } else { " (no such site)" };
            println!(
                "site {}{site}: total {} kg stored vs {} kg in readings; count {} vs {}; first {} vs {}; last {} vs {}",
                drift.site_id,
                Milligrams::from_mg(drift.stored_total_mg),
                Milligrams::from_mg(drift.rows_total_mg),
                drift.stored_count,
                drift.rows_count,
                time(drift.stored_first),
                time(drift.rows_first),
                time(drift.stored_last),
                time(drift.rows_last),
            );
        }
        for drift in &verification.rollup_drift {
            println!(
                "site {}: {} hourly rollups differ from the readings, the first at {}",
                drift.site_id,
                drift.hours,
                drift.first_hour.format("%Y-%m-%dT%H:00Z")
            );
        }
        println!(
            "{} sites checked, {} drift, {} with drifting rollups",
            verification.sites,
            verification.drift.len(),
            verification.rollup_drift.len()
        );
    }
    if verification.is_clean() {
        Ok(())
    } else {
        let sites: std::collections::BTreeSet<i64> = (verification.drift.iter().map(|d| d.site_id))
            .chain(verification.rollup_drift.iter().map(|d| d.site_id))
            .collect();
        anyhow::bail!("{} sites drift from their stored readings", sites.len())
    }
}

fn describe(partition: &ExpiredPartition) -> String {
    let archive = partition
        .archive
        .as_ref()
        .map_or(String::new(), |path| format!(", archived to {}", path.display()));
    format!(
        "{} [{} .. {}): {} readings, {} kg{archive}",
        partition.name,
        partition.from.format("%Y-%m-%d"),
        partition.to.format("%Y-%m-%d"),
        partition.rows,
        Milligrams::from_mg(partition.sum_mg)
    )
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or("-".to_string(), |at| {
        at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    })
}

/// The status as text: a summary, then one line per partition.
fn status_table(status: &TableStatus) -> String {
    let mut out = String::new();
    let last = status
        .last_maintenance
        .as_ref()
        .map_or("never".to_string(), |run| {
            let outcome = if run.succeeded { "succeeded" } else { "FAILED" };
            format!("{} ({outcome})", run.finished_at.format("%Y-%m-%d %H:%M:%S UTC"))
        });
    let _ = writeln!(out, "default partition rows:  {}", status.default_rows);
    let _ = writeln!(out, "default partition guard: {:?}", status.default_guard);
    let _ = writeln!(
        out,
        "months premade ahead:    {} (pg_partman premake {})",
        status.months_ahead, status.premake
    );
    let _ = writeln!(
        out,
        "retention:               {}",
        status
            .retention
            .as_deref()
            .unwrap_or("none in pg_partman (plume partitions retention)")
    );
    let _ = writeln!(out, "months retired:          {}", status.retired_partitions);
    let _ = writeln!(out, "last maintenance:        {last}");
    let rows_label = if status.exact { "rows" } else { "rows (est.)" };
    let _ = writeln!(
        out,
        "\n{:<24} {:<10} {:<10} {:>14} {:>10}  identity index",
        "partition", "from", "to", rows_label, "size"
    );
    for partition in &status.partitions {
        let day =
            |at: Option<DateTime<Utc>>| at.map_or("-".to_string(), |at| at.format("%Y-%m-%d").to_string());
        let rows = partition
            .rows
            .map_or("unknown".to_string(), |rows| rows.to_string());
        let index = if partition.identity_index_valid {
            "valid"
        } else {
            "MISSING OR INVALID"
        };
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<10} {:>14} {:>10}  {index}",
            partition.name,
            day(partition.from),
            day(partition.to),
            rows,
            bytes(partition.total_bytes),
        );
    }
    out
}

fn bytes(count: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
