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
use plume::state::{AppState, Settings};
use plume_bench::{rate, start_service, BenchDatabase, Receiver};
use serde_json::json;
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
    /// After the load, this many seconds of retries: every client re-sends batches it already sent
    /// (same key, same body), each of which must be answered as a replay.
    #[arg(long, default_value_t = 0)]
    replay_seconds: u64,
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
    let address = start_service(db, &state, &receiver, &shutdown).await?;

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
    let mut sent = Vec::new();
    for client in clients {
        let (client_latencies, client_sent) = client.await??;
        latencies.extend(client_latencies);
        sent.push(client_sent);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let requests = tally.requests.load(Ordering::Relaxed);
    let accepted = tally.accepted.load(Ordering::Relaxed);
    let (p50, p95, p99, max) = percentiles(&latencies);
    println!(
        "accepted {} readings/s ({} duplicates in total), {} requests/s; latency ms p50 {:.1} p95 {:.1} p99 {:.1} max {:.1}",
        rate(accepted, elapsed),
        tally.duplicate.load(Ordering::Relaxed),
        rate(requests, elapsed),
        p50, p95, p99, max,
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

    if args.replay_seconds > 0 {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let retries: Vec<_> = sent
            .into_iter()
            .map(|batches| tokio::spawn(replay(address.clone(), batches, stop.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs(args.replay_seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for retry in retries {
            latencies.extend(retry.await??);
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let (p50, p95, p99, max) = percentiles(&latencies);
        let after: i64 = sqlx::query_scalar("select count(*) from measurements")
            .fetch_one(&db.pool)
            .await?;
        ensure!(after == stored, "retries stored {} more rows", after - stored);
        println!(
            "replays: {} requests/s, every one answered 200 from the stored receipt, nothing stored; latency ms p50 {p50:.1} p95 {p95:.1} p99 {p99:.1} max {max:.1}",
            rate(latencies.len() as u64, elapsed)
        );
    }

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
    /// Posts batches until `stop`; returns each request's latency in microseconds and the first
    /// batches sent (key and body), for the replay phase.
    async fn run(self, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> anyhow::Result<(Vec<u64>, Vec<Sent>)> {
        let http = reqwest::Client::new();
        // Up to ~190,000 readings per client stay in the past: 2 minutes apart from 270 days back.
        let start = chrono::Utc::now() - chrono::Duration::days(270);
        let repeats = (self.batch_size as f64 * self.duplicate_ratio).round() as usize;
        let mut latencies = Vec::new();
        // The last new readings sent to each site: the repeats of the next batch for it.
        let mut previous: std::collections::HashMap<u64, Vec<serde_json::Value>> = Default::default();
        let mut sequence = 0u64;
        let mut kept = Vec::new();
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
            let key = format!("load-{}-{batch}", self.client);
            let sent = Instant::now();
            let response = http
                .post(format!("{}/v1/ingest", self.address))
                .header("Idempotency-Key", &key)
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
            if kept.len() < KEPT_FOR_REPLAY {
                kept.push(Sent { key, body });
            }
        }
        Ok((latencies, kept))
    }
}

/// Batches each client keeps for the replay phase.
const KEPT_FOR_REPLAY: usize = 50;

/// A batch as sent.
#[derive(Debug, Clone)]
struct Sent {
    key: String,
    body: serde_json::Value,
}

/// Re-sends `sent` in turn until `stop`; every answer must be a 200 replay. Returns latencies.
async fn replay(address: String, sent: Vec<Sent>, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<u64>> {
    let http = reqwest::Client::new();
    let mut latencies = Vec::new();
    for batch in sent.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        let response = http
            .post(format!("{address}/v1/ingest"))
            .header("Idempotency-Key", &batch.key)
            .json(&batch.body)
            .send()
            .await?;
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replay");
        response.bytes().await?;
        latencies.push(started.elapsed().as_micros() as u64);
        ensure!(
            status == 200 && replayed,
            "a retry answered {status} (replay header: {replayed})"
        );
    }
    Ok(latencies)
}

/// `(p50, p95, p99, max)` in milliseconds of sorted microsecond latencies.
fn percentiles(sorted: &[u64]) -> (f64, f64, f64, f64) {
    let at = |p: f64| {
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index] as f64 / 1000.0
    };
    (at(0.50), at(0.95), at(0.99), at(1.0))
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
