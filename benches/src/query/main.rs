//! `query-bench`: the read side at scale, end to end.
//!
//! Loads a synthetic data set with `plume seed --synthetic` (by default 1,000 sites × 100,000
//! readings: 100M) into a fresh database on a durable private PostgreSQL (or `--database-url`'s
//! server), timing it; loads a share of the same rows again with two `psql \copy` streams into an
//! empty copy of the schema, as the ceiling to compare with; states the database's size on disk.
//! Then starts `plume serve` as a process of its own and times, from one client over keep-alive
//! (with an admin token), each read endpoint over `--requests` requests on random sites (a first
//! pass warms the caches and is not counted), next to the same query without HTTP (plume's query
//! function, or its SQL, called on a pool of this process). Last, it exports sites'
//! full histories (and one month of every site) in each format of `--formats` (CSV unless asked),
//! each once untimed and then timed, beside PostgreSQL's own `COPY ... TO STDOUT (FORMAT csv)` of
//! the same rows, reading the server's resident memory before and after.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context};
use chrono::{DateTime, Utc};
use clap::Parser;
use plume::db::PoolSettings;
use plume_bench::service::Service;
use plume_bench::{BenchDatabase, Receiver};

mod load;
mod reads;

/// Times plume's read endpoints on a large synthetic data set.
#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// URL of any database on the PostgreSQL server to use (a fresh database is created there).
    /// Without it, a private cluster with durable settings is started under /tmp and removed after.
    #[arg(long, env = "BENCH_DATABASE_URL", conflicts_with = "reuse_database")]
    pub(crate) database_url: Option<String>,
    /// URL of a database to load into and keep: a later run with the same shape finds the data
    /// loaded (the seed adds only missing sites) and goes straight to the measurements.
    #[arg(long)]
    pub(crate) reuse_database: Option<String>,
    /// --database-url names a Citus coordinator (a database with the workers registered): the
    /// fresh database is made on every node and distributed by site, as `plume migrate --citus`
    /// leaves it. The ceiling's `psql \copy` runs into a plain database on the coordinator.
    #[arg(long, requires = "database_url")]
    pub(crate) citus: bool,
    /// The `plume` binary to seed with and serve (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/plume")]
    pub(crate) plume_binary: PathBuf,
    /// Sites to load.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) sites: u32,
    /// Readings per site.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) readings_per_site: u64,
    /// Sources per site.
    #[arg(long, default_value_t = 10)]
    pub(crate) sources: u32,
    /// First day of the readings.
    #[arg(long, default_value = "2025-01-01")]
    pub(crate) from: String,
    /// End of the readings (exclusive).
    #[arg(long, default_value = "2026-11-01")]
    pub(crate) to: String,
    /// Timed requests per endpoint (after as many untimed ones).
    #[arg(long, default_value_t = 300)]
    pub(crate) requests: usize,
    /// Sites whose full history is exported.
    #[arg(long, default_value_t = 20)]
    pub(crate) exports: usize,
    /// Readings per `psql \copy` stream of the ceiling run (two streams).
    #[arg(long, default_value_t = 5_000_000)]
    pub(crate) ceiling_rows_per_stream: u64,
    /// The export formats to time, each on the same rows.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "csv")]
    pub(crate) formats: Vec<ExportFormat>,
}

/// An export format, as `format=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    Csv,
    Ndjson,
    Parquet,
}

impl ExportFormat {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
            Self::Parquet => "parquet",
        }
    }
}

pub(crate) fn day(text: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")?
        .and_time(chrono::NaiveTime::MIN)
        .and_utc())
}

pub(crate) fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.plume_binary.exists(),
        "{} does not exist: build it with `cargo build --release -p plume`",
        args.plume_binary.display()
    );
    let pool = PoolSettings {
        max_connections: 4,
        ..PoolSettings::default()
    };
    // With the bench's usual 16 GB between checkpoints, the WAL reached 17 GB while loading 100M
    // readings: more disk than the data.
    let db = match &args.reuse_database {
        Some(url) => BenchDatabase::existing(url, &pool).await?,
        None if args.citus => {
            let url = args
                .database_url
                .as_deref()
                .expect("--citus requires --database-url");
            BenchDatabase::on_citus(url, &pool).await?
        }
        None => {
            BenchDatabase::create_with(args.database_url.as_deref(), &pool, &[("max_wal_size", "4GB")])
                .await?
        }
    };
    let result = run(&args, &db).await;
    db.close().await;
    result
}

async fn run(args: &Args, db: &BenchDatabase) -> anyhow::Result<()> {
    let (from, to) = (day(&args.from)?, day(&args.to)?);

    println!(
        "## Load: {} sites × {} readings\n",
        args.sites, args.readings_per_site
    );
    let count = || async {
        sqlx::query_scalar::<_, Option<i64>>("select sum(reading_count)::bigint from sites")
            .fetch_one(&db.pool)
            .await
            .map(Option::unwrap_or_default)
    };
    let before = count().await?;
    let started = Instant::now();
    let seeded = Command::new(&args.plume_binary)
        .args(["seed", "--synthetic", "--database-url", &db.url])
        .args(["--sites", &args.sites.to_string()])
        .args(["--readings-per-site", &args.readings_per_site.to_string()])
        .args([
            "--sources",
            &args.sources.to_string(),
            "--from",
            &args.from,
            "--to",
            &args.to,
        ])
        .env("RUST_LOG", "warn")
        .status()
        .context("running plume seed")?;
    ensure!(seeded.success(), "plume seed failed");
    let load_seconds = started.elapsed().as_secs_f64();
    let readings = count().await?;
    if readings == before {
        println!("plume seed --synthetic: the {readings} readings were loaded already");
    } else {
        println!(
            "plume seed --synthetic: {} readings in {load_seconds:.1} s = {:.0} readings/s \
             (whole command: generation, COPY, totals, rollups, heads, ANALYZE)",
            readings - before,
            (readings - before) as f64 / load_seconds
        );
    }
    load::ceiling(args, db).await?;
    load::disk(db, readings).await?;
    load::verify_command(args, db).await?;

    let receiver = Receiver::start().await?;
    let service = Service::process(&args.plume_binary, db, &receiver, 16).await?;
    let sites: Vec<i64> = sqlx::query_scalar("select id from sites order by id")
        .fetch_all(&db.pool)
        .await?;
    reads::latencies(args, db, &service, &sites, (from, to)).await?;
    let rss_before = service.peak_rss()?.unwrap_or(0);
    reads::exports(args, db, &service, &sites, (from, to), rss_before).await?;
    Ok(())
}
