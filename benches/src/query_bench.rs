//! `query-bench`: the read side at scale, end to end.
//!
//! Loads a synthetic data set with `plume seed --synthetic` (by default 1,000 sites × 100,000
//! readings: 100M) into a fresh database on a durable private PostgreSQL (or `--database-url`'s
//! server), timing it; loads a share of the same rows again with two `psql \copy` streams into an
//! empty copy of the schema, as the ceiling to compare with; states the database's size on disk.
//! Then starts `plume serve` as a process of its own and times, from one client over keep-alive,
//! each read endpoint over `--requests` requests on random sites (a first pass warms the caches and
//! is not counted), next to the same query without HTTP
//! (plume's query function, or its SQL, called on a pool of this process). Last, it exports sites'
//! full histories as CSV (and one month of every site), each once untimed and then timed, beside
//! PostgreSQL's own `COPY ... TO STDOUT (FORMAT csv)` of the same rows, reading the server's
//! resident memory before and after.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context};
use chrono::{DateTime, Utc};
use clap::Parser;
use futures_util::StreamExt;
use plume::db::PoolSettings;
use plume::query::params::SeriesRequest;
use plume::query::{readings, series, Bucket, TimeRange};
use plume::sites::SiteId;
use plume_bench::service::Service;
use plume_bench::{BenchDatabase, Receiver};
use sqlx::postgres::PgPoolCopyExt;

/// Times plume's read endpoints on a large synthetic data set.
#[derive(Debug, Parser)]
struct Args {
    /// URL of any database on the PostgreSQL server to use (a fresh database is created there).
    /// Without it, a private cluster with durable settings is started under /tmp and removed after.
    #[arg(long, env = "BENCH_DATABASE_URL", conflicts_with = "reuse_database")]
    database_url: Option<String>,
    /// URL of a database to load into and keep: a later run with the same shape finds the data
    /// loaded (the seed adds only missing sites) and goes straight to the measurements.
    #[arg(long)]
    reuse_database: Option<String>,
    /// The `plume` binary to seed with and serve (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/plume")]
    plume_binary: PathBuf,
    /// Sites to load.
    #[arg(long, default_value_t = 1_000)]
    sites: u32,
    /// Readings per site.
    #[arg(long, default_value_t = 100_000)]
    readings_per_site: u64,
    /// Sources per site.
    #[arg(long, default_value_t = 10)]
    sources: u32,
    /// First day of the readings.
    #[arg(long, default_value = "2025-01-01")]
    from: String,
    /// End of the readings (exclusive).
    #[arg(long, default_value = "2026-11-01")]
    to: String,
    /// Timed requests per endpoint (after as many untimed ones).
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Sites whose full history is exported.
    #[arg(long, default_value_t = 20)]
    exports: usize,
    /// Readings per `psql \copy` stream of the ceiling run (two streams).
    #[arg(long, default_value_t = 5_000_000)]
    ceiling_rows_per_stream: u64,
}

/// Latencies of one kind of request, in milliseconds.
struct Latencies {
    name: String,
    millis: Vec<f64>,
}

impl Latencies {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.millis.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.2} | {:.2} |",
            self.name,
            self.millis.len(),
            self.percentile(0.5),
            self.percentile(0.99)
        )
    }
}

/// A small deterministic generator for picking sites and times.
struct Picker(u64);

impl Picker {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

fn day(text: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")?
        .and_time(chrono::NaiveTime::MIN)
        .and_utc())
}

fn stamp(at: DateTime<Utc>) -> String {
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
    ceiling(args, db).await?;
    disk(db, readings).await?;
    verify_command(args, db).await?;

    let receiver = Receiver::start().await?;
    let service = Service::process(&args.plume_binary, db, &receiver, 16).await?;
    let sites: Vec<i64> = sqlx::query_scalar("select id from sites order by id")
        .fetch_all(&db.pool)
        .await?;
    latencies(args, db, &service, &sites, (from, to)).await?;
    let rss_before = service.peak_rss()?.unwrap_or(0);
    exports(args, db, &service, &sites, (from, to), rss_before).await?;
    Ok(())
}

/// `psql \copy` of the first sites' rows into an empty copy of the schema, two streams at once.
async fn ceiling(args: &Args, db: &BenchDatabase) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in("/tmp")?;
    let mut files = Vec::new();
    for stream in 0..2_u64 {
        let path = dir.path().join(format!("stream-{stream}.bin"));
        let statement = format!(
            "copy (select site_id, source_id, measured_at, value_mg from measurements
                    where site_id in (select id from sites order by id offset {} limit {})) to stdout (format binary)",
            stream * args.ceiling_rows_per_stream / args.readings_per_site,
            args.ceiling_rows_per_stream / args.readings_per_site,
        );
        // One row per chunk: written through a buffer, not a file write each.
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&path).await?);
        let mut copy = db.pool.copy_out_raw(&statement).await?;
        while let Some(chunk) = copy.next().await {
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk?).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut out).await?;
        files.push(path);
    }
    let url = db.on_same_server().await?;
    let started = Instant::now();
    let children: Vec<_> = files
        .iter()
        .map(|file| {
            Command::new("psql")
                .args([url.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!(
                    "\\copy measurements (site_id, source_id, measured_at, value_mg) from '{}' (format binary)",
                    file.display()
                ))
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut child in children {
        ensure!(child.wait()?.success(), "psql \\copy failed");
    }
    let seconds = started.elapsed().as_secs_f64();
    let name = url
        .rsplit('/')
        .next()
        .context("a database URL names its database")?;
    sqlx::query(&format!("drop database {name}"))
        .execute(&db.pool)
        .await?;
    let rows = 2 * args.ceiling_rows_per_stream;
    println!(
        "ceiling, psql \\copy of {rows} of the same rows into an empty copy of the schema, 2 streams: \
         {seconds:.1} s = {:.0} rows/s\n",
        rows as f64 / seconds
    );
    Ok(())
}

/// Heap, indexes and the other tables, per reading.
async fn disk(db: &BenchDatabase, readings: i64) -> anyhow::Result<()> {
    let sizes: Vec<(String, i64)> = sqlx::query_as(
        "select 'measurements heap', sum(pg_relation_size(i.inhrelid))::bigint
           from pg_inherits i where i.inhparent = 'measurements'::regclass
         union all
         select 'measurements identity index', sum(pg_indexes_size(i.inhrelid))::bigint
           from pg_inherits i where i.inhparent = 'measurements'::regclass
         union all
         select 'hourly_rollups (heap and index)', pg_total_relation_size('hourly_rollups')
         union all
         select 'source_heads, sites', pg_total_relation_size('source_heads') + pg_total_relation_size('sites')
         union all
         select 'whole database', pg_database_size(current_database())",
    )
    .fetch_all(&db.pool)
    .await?;
    println!("| on disk | bytes | GiB | bytes per reading |\n| --- | --- | --- | --- |");
    for (name, bytes) in sizes {
        println!(
            "| {name} | {bytes} | {:.2} | {:.1} |",
            bytes as f64 / f64::from(1 << 30),
            bytes as f64 / readings as f64
        );
    }
    println!();
    Ok(())
}

/// `plume verify` over everything, timed.
async fn verify_command(args: &Args, db: &BenchDatabase) -> anyhow::Result<()> {
    let started = Instant::now();
    let output = Command::new(&args.plume_binary)
        .args(["verify", "--database-url", &db.url])
        .env("RUST_LOG", "warn")
        .output()?;
    println!(
        "plume verify: {} in {:.1} s: {}\n",
        if output.status.success() { "clean" } else { "DRIFT" },
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stdout).trim()
    );
    ensure!(output.status.success(), "plume verify found drift");
    Ok(())
}

/// The request paths of each endpoint, on random sites, and what sends the same query straight
/// to PostgreSQL.
async fn latencies(
    args: &Args,
    db: &BenchDatabase,
    service: &Service,
    sites: &[i64],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let hours = (to - from).num_hours() as u64;
    let full = (
        partitioning::month_start(from),
        partitioning::next_month(partitioning::month_start(to - chrono::Duration::days(1))),
    );
    let mut results = Vec::new();
    for kind in [
        "metrics",
        "series, 30 days hourly",
        "series, full history monthly",
        "readings page of 1,000",
    ] {
        let mut http_times = Latencies {
            name: format!("`GET` {kind}"),
            millis: Vec::new(),
        };
        let mut sql_times = Latencies {
            name: format!("the same query without HTTP: {kind}"),
            millis: Vec::new(),
        };
        for pass in 0..2 {
            // The second pass asks for exactly what the first did, so every request is warm.
            let mut picker = Picker(7);
            for _ in 0..args.requests {
                let site = sites[picker.next(sites.len() as u64) as usize];
                let start = from + chrono::Duration::hours(picker.next(hours.saturating_sub(30 * 24)) as i64);
                let (path, sql_elapsed) = match kind {
                    "metrics" => {
                        let t = Instant::now();
                        plume::sites::find(&db.pool, plume::sites::SiteId::new(site).unwrap()).await?;
                        (format!("/v1/sites/{site}/metrics"), t.elapsed())
                    }
                    "readings page of 1,000" => {
                        let t = Instant::now();
                        let rows = sqlx::query(readings::PAGE_SQL)
                            .bind(site)
                            .bind(start)
                            .bind(to)
                            .bind("")
                            .bind(start)
                            .bind(1001_i64)
                            .fetch_all(&db.pool)
                            .await?;
                        ensure!(rows.len() == 1001, "a page came back short: {}", rows.len());
                        (
                            format!(
                                "/v2/sites/{site}/readings?from={}&to={}&limit=1000",
                                stamp(start),
                                stamp(to)
                            ),
                            t.elapsed(),
                        )
                    }
                    _ => {
                        let (range, bucket) = if kind.contains("30 days") {
                            ((start, start + chrono::Duration::days(30)), "hour")
                        } else {
                            (full, "month")
                        };
                        let request = SeriesRequest {
                            range: TimeRange {
                                from: range.0,
                                to: range.1,
                            },
                            bucket: Bucket::parse(bucket).expect("a bucket name"),
                        };
                        let t = Instant::now();
                        series::series(&db.pool, SiteId::new(site).expect("a site id"), request).await?;
                        let path = format!(
                            "/v2/sites/{site}/series?from={}&to={}&bucket={bucket}",
                            stamp(range.0),
                            stamp(range.1)
                        );
                        (path, t.elapsed())
                    }
                };
                let t = Instant::now();
                let response = http.get(format!("{}{path}", service.address())).send().await?;
                ensure!(response.status().is_success(), "{path}: {}", response.status());
                response.bytes().await?;
                if pass == 1 {
                    http_times.millis.push(t.elapsed().as_secs_f64() * 1e3);
                    sql_times.millis.push(sql_elapsed.as_secs_f64() * 1e3);
                }
            }
        }
        results.push(http_times);
        results.push(sql_times);
    }
    println!("| request (one client, warm) | requests | p50 ms | p99 ms |\n| --- | --- | --- | --- |");
    for result in &results {
        println!("{}", result.row());
    }
    println!();
    Ok(())
}

/// Full-history exports of random sites and one month of every site, beside PostgreSQL's own CSV
/// `COPY` of the same rows.
async fn exports(
    args: &Args,
    db: &BenchDatabase,
    service: &Service,
    sites: &[i64],
    (from, _to): (DateTime<Utc>, DateTime<Utc>),
    rss_before: u64,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut picker = Picker(11);
    println!("| export | rows | MB | plume rows/s | PostgreSQL `COPY ... (FORMAT csv)` rows/s |\n| --- | --- | --- | --- | --- |");
    let month = partitioning::next_month(partitioning::month_start(from));
    let mut cases: Vec<(String, String, String)> = (0..args.exports)
        .map(|_| {
            let site = sites[picker.next(sites.len() as u64) as usize];
            (
                format!("site {site}, full history"),
                format!("/v2/export?site_id={site}&format=csv"),
                format!("site_id = {site}"),
            )
        })
        .collect();
    let month_end = partitioning::next_month(month);
    cases.push((
        format!("every site, {}", month.format("%B %Y")),
        format!(
            "/v2/export?from={}&to={}&format=csv",
            stamp(month),
            stamp(month_end)
        ),
        format!(
            "measured_at >= '{}' and measured_at < '{}'",
            stamp(month),
            stamp(month_end)
        ),
    ));
    let (mut plume_rates, mut postgres_rates) = (Vec::new(), Vec::new());
    for (name, path, filter) in cases {
        // Untimed first: the timed runs find the rows in memory, as the latency runs do.
        download(&http, &format!("{}{path}", service.address())).await?;
        let t = Instant::now();
        let (bytes, lines) = download(&http, &format!("{}{path}", service.address())).await?;
        let plume_seconds = t.elapsed().as_secs_f64();
        let rows = lines - 1;
        let statement = format!(
            "copy (select site_id, source_id, measured_at, value_mg / 1e6 from measurements where {filter})
               to stdout (format csv)"
        );
        let t = Instant::now();
        let mut copy = db.pool.copy_out_raw(&statement).await?;
        while let Some(chunk) = copy.next().await {
            chunk?;
        }
        let postgres_seconds = t.elapsed().as_secs_f64();
        let (plume_rate, postgres_rate) = (rows as f64 / plume_seconds, rows as f64 / postgres_seconds);
        if name.contains("full history") {
            plume_rates.push(plume_rate);
            postgres_rates.push(postgres_rate);
        }
        println!(
            "| {name} | {rows} | {:.1} | {plume_rate:.0} | {postgres_rate:.0} |",
            bytes as f64 / 1e6
        );
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    };
    println!(
        "\nfull histories, median: plume {:.0} rows/s, PostgreSQL's own CSV COPY {:.0} rows/s",
        median(&mut plume_rates),
        median(&mut postgres_rates)
    );
    let rss_after = service.peak_rss()?.unwrap_or(0);
    println!(
        "\nplume's peak resident memory (VmHWM): {:.1} MB before the exports (after the latency runs), \
         {:.1} MB after them\n",
        rss_before as f64 / 1e6,
        rss_after as f64 / 1e6
    );
    Ok(())
}

/// Downloads `url` to nowhere; returns its bytes and lines.
async fn download(http: &reqwest::Client, url: &str) -> anyhow::Result<(u64, u64)> {
    let mut response = http.get(url).send().await?;
    ensure!(response.status().is_success(), "{url}: {}", response.status());
    let (mut bytes, mut lines) = (0_u64, 0_u64);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok((bytes, lines))
}
