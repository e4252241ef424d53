//! `plume-load`: drives the ingestion API end to end and checks the result.
//!
//! Starts plume (its HTTP service and outbox relay, delivering to a local receiver) on a fresh
//! database on a durable private PostgreSQL (or `--database-url`'s server), creates `--sites`
//! sites, and has `--clients` concurrent clients post v1 batches of `--batch-size` readings for
//! `--seconds`. Readings are spread over several months, each client on sources of its own; with
//! `--duplicate-ratio`, that share of each batch repeats readings the client already sent. Prints
//! readings/s, requests/s and latency percentiles, then verifies every site's total, count and
//! rollups against the stored rows (exit status 1 on drift).
//!
//! `--baseline` then loads the very rows the service stored, with `psql \copy`, into a fresh table
//! of the same schema (partitioned, uniquely indexed) on the same server, and prints the ratio.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::{Parser, ValueEnum};
use plume::db::PoolSettings;
use plume::outbox::relay::{self, Relay, RelayConfig};
use plume::outbox::sink::WebhookSink;
use plume::state::{AppState, Settings};
use plume_bench::{rate, BenchDatabase, Receiver, SECRET};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Drives plume's ingestion API and verifies what it stored.
#[derive(Debug, Parser)]
struct Args {
    /// URL of any database on the PostgreSQL server to use (fresh databases are created there).
    /// Without it, a private cluster with durable settings is started under /tmp and removed after.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Which ingestion API to drive.
    #[arg(long, value_enum, default_value_t = Api::V1)]
    api: Api,
    /// Sites to create and spread batches over.
    #[arg(long, default_value_t = 100)]
    sites: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Readings per batch (v1 takes at most 100).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Share of each batch that repeats readings already sent (0 to 0.9).
    #[arg(long, default_value_t = 0.0)]
    duplicate_ratio: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Also load the stored rows with `psql \copy` into the same schema and print the ratio.
    #[arg(long)]
    baseline: bool,
    /// Server connection pool size.
    #[arg(long, default_value_t = 32)]
    pool: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Api {
    /// `POST /v1/ingest`, one site per batch.
    V1,
    /// `POST /v2/ingest`, bulk.
    V2,
}

/// What the clients did.
#[derive(Debug, Default)]
struct Tally {
    requests: AtomicU64,
    accepted: AtomicU64,
    duplicate: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter("warn,sqlx=error")
        .init();
    if args.api == Api::V2 {
        bail!("the v2 bulk endpoint does not exist yet; use --api v1");
    }
    ensure!(
        args.batch_size >= 1 && args.batch_size <= 100,
        "v1 batches hold 1 to 100 readings"
    );
    ensure!(
        (0.0..=0.9).contains(&args.duplicate_ratio),
        "--duplicate-ratio must be within 0 to 0.9"
    );
    let pool = PoolSettings {
        max_connections: args.pool,
        ..PoolSettings::default()
    };
    let db = BenchDatabase::create(args.database_url.as_deref(), &pool).await?;
    let result = run(&args, &db).await;
    db.close().await;
    result
}

async fn run(args: &Args, db: &BenchDatabase) -> anyhow::Result<()> {
    sqlx::query("insert into sites (name, emission_limit_mg) select 'load ' || g, 1000000000000000 from generate_series(1, $1) g")
        .bind(args.sites as i64)
        .execute(&db.pool)
        .await?;
    let receiver = Receiver::start().await?;
    let state = AppState::new(db.pool.clone(), Settings::default());
    let shutdown = CancellationToken::new();
    let _stop_on_return = shutdown.clone().drop_guard();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    tokio::spawn(plume::http::serve(listener, state.clone(), shutdown.clone()));
    let relay_pool = plume::db::connect(
        &db.url,
        &PoolSettings {
            max_connections: relay::POOL_CONNECTIONS,
            ..PoolSettings::default()
        },
    )
    .await?;
    let config = RelayConfig::default();
    let sink = WebhookSink::new(vec![receiver.url.clone()], SECRET, config.delivery_timeout)?;
    let relay = Relay::new(
        relay_pool,
        sink,
        config,
        state.metrics.clone(),
        state.outbox_wake.clone(),
    );
    tokio::spawn(relay.run(shutdown.clone()));

    println!(
        "plume-load: v1, {} clients, {} sites, {}-reading batches, {:.0}% duplicates, {} s",
        args.clients,
        args.sites,
        args.batch_size,
        args.duplicate_ratio * 100.0,
        args.seconds
    );
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|client| {
            let load = ClientLoad {
                client,
                sites: args.sites,
                batch_size: args.batch_size,
                duplicate_ratio: args.duplicate_ratio,
                address: address.clone(),
            };
            tokio::spawn(load.run(stop.clone(), tally.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let requests = tally.requests.load(Ordering::Relaxed);
    let accepted = tally.accepted.load(Ordering::Relaxed);
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        Duration::from_micros(latencies[index]).as_secs_f64() * 1000.0
    };
    println!(
        "accepted {} readings/s ({} duplicates in total), {} requests/s; latency ms p50 {:.1} p95 {:.1} p99 {:.1} max {:.1}",
        rate(accepted, elapsed),
        tally.duplicate.load(Ordering::Relaxed),
        rate(requests, elapsed),
        percentile(0.50),
        percentile(0.95),
        percentile(0.99),
        percentile(1.0),
    );

    let verification = partitioning::verify::verify(&db.pool).await?;
    let stored: i64 = sqlx::query_scalar("select count(*) from measurements")
        .fetch_one(&db.pool)
        .await?;
    ensure!(
        stored as u64 == accepted,
        "{stored} rows stored, {accepted} accepted"
    );
    println!(
        "verify: {} sites, {} drift, {} with drifting rollups; {stored} rows stored = accepted",
        verification.sites,
        verification.drift.len(),
        verification.rollup_drift.len()
    );
    ensure!(
        verification.is_clean(),
        "site totals or rollups drift from the stored rows"
    );

    if args.baseline {
        let baseline = psql_copy_baseline(db, stored).await?;
        println!(
            "baseline: psql \\copy of the same {stored} rows into the same schema: {baseline} rows/s; service/baseline = {:.0}%",
            100.0 * rate(accepted, elapsed) as f64 / baseline as f64
        );
    }
    Ok(())
}

/// One client: its own sources on every site, timestamps 2 minutes apart from nine months back.
#[derive(Debug, Clone)]
struct ClientLoad {
    client: usize,
    sites: u64,
    batch_size: usize,
    duplicate_ratio: f64,
    address: String,
}

impl ClientLoad {
    /// Posts batches until `stop`; returns each request's latency in microseconds.
    async fn run(self, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> anyhow::Result<Vec<u64>> {
        let http = reqwest::Client::new();
        // Up to ~190,000 readings per client stay in the past: 2 minutes apart from 270 days back.
        let start = chrono::Utc::now() - chrono::Duration::days(270);
        let repeats = (self.batch_size as f64 * self.duplicate_ratio).round() as usize;
        let mut latencies = Vec::new();
        // The last new readings sent to each site: the repeats of the next batch for it.
        let mut previous: std::collections::HashMap<u64, Vec<serde_json::Value>> = Default::default();
        let mut sequence = 0u64;
        for batch in 0u64.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let site = 1 + (batch * 31 + self.client as u64 * 7) % self.sites;
            let mut readings: Vec<serde_json::Value> = Vec::with_capacity(self.batch_size);
            if let Some(sent_before) = previous.get(&site) {
                readings.extend(sent_before.iter().take(repeats).cloned());
            }
            let fresh_from = readings.len();
            while readings.len() < self.batch_size {
                sequence += 1;
                let at = start + chrono::Duration::minutes(2 * sequence as i64);
                readings.push(json!({
                    "source_id": format!("c{}-s{}", self.client, sequence % 10),
                    "timestamp": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    "value": format!("{}.{:03}", sequence % 50, sequence % 1000),
                }));
            }
            let body = json!({"site_id": site, "readings": readings});
            let sent = Instant::now();
            let response = http
                .post(format!("{}/v1/ingest", self.address))
                .header("Idempotency-Key", format!("load-{}-{batch}", self.client))
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            let receipt: serde_json::Value = response.json().await.context("reading the receipt")?;
            latencies.push(sent.elapsed().as_micros() as u64);
            ensure!(status == 201, "ingest answered {status}: {receipt}");
            tally.requests.fetch_add(1, Ordering::Relaxed);
            let accepted = receipt["data"]["readings_accepted"].as_u64().unwrap_or(0);
            tally.accepted.fetch_add(accepted, Ordering::Relaxed);
            tally
                .duplicate
                .fetch_add(self.batch_size as u64 - accepted, Ordering::Relaxed);
            previous.insert(site, readings.split_off(fresh_from));
        }
        Ok(latencies)
    }
}

/// Copies the stored rows out to a CSV file, loads them with `psql \copy` into a fresh database of
/// the same schema on the same server, and returns rows/s of the load.
async fn psql_copy_baseline(db: &BenchDatabase, rows: i64) -> anyhow::Result<u64> {
    let dir = tempfile::Builder::new()
        .prefix("plume-load-")
        .tempdir_in("/tmp")?;
    let csv = dir.path().join("rows.csv");
    std::fs::File::create(&csv)?;
    // Readable by the server user (the private cluster runs as `postgres`).
    Command::new("chmod")
        .args(["-R", "a+rwx"])
        .arg(dir.path())
        .status()?;
    let export = format!(
        "\\copy (select site_id, source_id, measured_at, value_mg from measurements) to '{}' csv",
        csv.display()
    );
    psql(&db.url, &export)?;
    let target = db.on_same_server().await?;
    let import = format!(
        "\\copy measurements (site_id, source_id, measured_at, value_mg) from '{}' csv",
        csv.display()
    );
    let started = Instant::now();
    psql(&target, &import)?;
    let elapsed = started.elapsed();
    let loaded: i64 = {
        let pool = plume::db::connect_plain(&target).await?;
        let count = sqlx::query_scalar("select count(*) from measurements")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        count
    };
    ensure!(loaded == rows, "the baseline loaded {loaded} rows of {rows}");
    Ok(rate(rows as u64, elapsed))
}

fn psql(url: &str, command: &str) -> anyhow::Result<()> {
    let output = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", command])
        .output()
        .context("running psql (apt-get install postgresql-client-15)")?;
    ensure!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
