//! `plume-load`: drives the ingestion API end to end and checks the result.
//!
//! Starts plume (its HTTP service and outbox relay, delivering to a local receiver) on a fresh
//! database on a durable private PostgreSQL (or `--database-url`'s server), creates `--sites`
//! sites, and has `--clients` concurrent clients post v1 batches or v2 bulk bodies (`--api`) of
//! `--batch-size` readings for
//! `--seconds`, plain or compressed (`--compress gzip|zstd`). Readings are spread over several months, each client on sources of its own; with
//! `--duplicate-ratio`, that share of each batch repeats readings the client already sent. Prints
//! readings/s, requests/s, latency percentiles and the body bytes sent (and, with `--plume-binary`,
//! the server's CPU time per request), then verifies every site's total, count and rollups against the stored rows (exit
//! status 1 on drift).
//!
//! The clients authenticate as sensors do: one ingest client over every site, its bearer token on
//! every request, with rates far above what the machine can send so that it never throttles
//! ([`BearerToken::ingest`]). `--auth off` runs the same load against a service with
//! authentication off (the clients still send the token, which it then ignores), so that the two
//! runs differ by the server's authentication work alone.
//!
//! `--baseline` then loads the very rows the service stored, with `psql \copy`, into a fresh table
//! of the same schema (partitioned, uniquely indexed) on the same server, and prints the ratio.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::{Parser, ValueEnum};
use plume::auth::cache::{AuthMode, AuthSettings};
use plume::db::PoolSettings;
use plume::state::Settings;
use plume_bench::credentials::BearerToken;
use plume_bench::service::Service;
use plume_bench::{nearest_rank, rate, BenchDatabase, Receiver};

use crate::batches::{Batches, Compress, Format, Request, Shape};

mod batches;

/// Drives plume's ingestion API and verifies what it stored.
#[derive(Debug, Parser)]
struct Args {
    /// URL of any database on the PostgreSQL server to use (fresh databases are created there).
    /// Without it, a private cluster with durable settings is started under /tmp and removed after.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// --database-url names a Citus coordinator (a database with the workers registered): the
    /// fresh database is made on every node and distributed by site, as `plume migrate --citus`
    /// does. Not with --baseline.
    #[arg(long, requires = "database_url", conflicts_with = "baseline")]
    citus: bool,
    /// Which ingestion API to drive.
    #[arg(long, value_enum, default_value_t = Api::V1)]
    api: Api,
    /// Sites to create and spread batches over.
    #[arg(long, default_value_t = 100)]
    sites: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Readings per batch (v1 takes at most 100, v2 at most 50,000).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// v2: how the bodies are written.
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    format: Format,
    /// v2: sites per batch; each client posts for one group of this many consecutive sites after
    /// another, like gateways that each serve a few sites.
    #[arg(long, default_value_t = 10)]
    sites_per_batch: u64,
    /// How bodies go on the wire: as they are, or with `Content-Encoding: gzip` (level 6) or
    /// `zstd` (level 3). Each body is compressed once, by its client, before it is timed.
    #[arg(long, value_enum, default_value_t = Compress::None)]
    compress: Compress,
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
    /// Run the service as this `plume` binary (`target/release/plume`) in a process of its own, and
    /// report its peak memory; without it, the service runs inside the load tool.
    #[arg(long)]
    plume_binary: Option<std::path::PathBuf>,
    /// `enforce`: the service checks the clients' token on every request, as in production. `off`:
    /// the service runs with authentication off (`plume serve --auth off`); the clients send the
    /// same token, unread, so that comparing the two measures what authentication costs.
    #[arg(long, value_enum, default_value_t = AuthMode::Enforce)]
    auth: AuthMode,
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
    /// Body bytes sent, as sent (compressed, when they are).
    body_bytes: AtomicU64,
    /// The same bodies' bytes before compression.
    plain_bytes: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter("warn,sqlx=error")
        .init();
    let max_batch = match args.api {
        Api::V1 => plume::ingest::MAX_READINGS_PER_BATCH,
        Api::V2 => plume::ingest::bulk::MAX_READINGS_PER_BULK,
    };
    ensure!(
        (1..=max_batch).contains(&args.batch_size),
        "{:?} batches hold 1 to {max_batch} readings",
        args.api
    );
    ensure!(
        args.api == Api::V1 || (1..=args.sites).contains(&args.sites_per_batch),
        "--sites-per-batch must be within 1 to --sites"
    );
    ensure!(
        (0.0..=0.9).contains(&args.duplicate_ratio),
        "--duplicate-ratio must be within 0 to 0.9"
    );
    let pool = PoolSettings {
        max_connections: args.pool,
        ..PoolSettings::default()
    };
    let db = match (&args.database_url, args.citus) {
        (Some(url), true) => BenchDatabase::on_citus(url, &pool).await?,
        (url, _) => BenchDatabase::create(url.as_deref(), &pool).await?,
    };
    let result = run(&args, &db).await;
    db.close().await;
    result
}

async fn run(args: &Args, db: &BenchDatabase) -> anyhow::Result<()> {
    sqlx::query("insert into sites (name, emission_limit_mg) select 'load ' || g, 1000000000000000 from generate_series(1, $1) g")
        .bind(args.sites as i64)
        .execute(&db.pool)
        .await?;
    let token = BearerToken::ingest(&db.pool, "plume-load").await?;
    let receiver = Receiver::start().await?;
    let service = match &args.plume_binary {
        Some(binary) => {
            let auth = match args.auth {
                AuthMode::Enforce => "enforce",
                AuthMode::Off => "off",
            };
            Service::process_with(binary, db, &receiver, args.pool, &["--auth", auth]).await?
        }
        None => {
            let settings = Settings {
                auth: AuthSettings {
                    mode: args.auth,
                    ..AuthSettings::default()
                },
                ..Settings::default()
            };
            Service::in_process(db, &receiver, settings).await?
        }
    };
    let address = service.address().to_owned();
    check_auth_mode(&address, args.auth).await?;

    let api = match args.api {
        Api::V1 => "v1".to_string(),
        Api::V2 => format!(
            "v2 {:?} over {} sites per batch",
            args.format, args.sites_per_batch
        ),
    };
    println!(
        "plume-load: {api}, {} clients, {} sites, {}-reading batches, {:.0}% duplicates, bodies {}, {} s, auth {}",
        args.clients,
        args.sites,
        args.batch_size,
        args.duplicate_ratio * 100.0,
        args.compress.content_encoding().unwrap_or("plain"),
        args.seconds,
        match args.auth {
            AuthMode::Enforce => "enforced (an ingest token on every request)",
            AuthMode::Off => "off",
        }
    );
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = service.cpu_time()?;
    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|client| {
            let shape = match args.api {
                Api::V1 => Shape::V1,
                Api::V2 => Shape::V2 {
                    format: args.format,
                    sites_per_batch: args.sites_per_batch,
                },
            };
            let load = ClientLoad {
                batches: Batches::new(
                    client,
                    args.sites,
                    args.batch_size,
                    args.duplicate_ratio,
                    shape,
                    args.compress,
                ),
                batch_size: args.batch_size,
                address: address.clone(),
                // A connection pool of its own, as each sensor has.
                http: token.client()?,
            };
            Ok(tokio::spawn(load.run(stop.clone(), tally.clone())))
        })
        .collect::<anyhow::Result<_>>()?;
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
    let cpu = cpu_used(&service, cpu_before)?;
    latencies.sort_unstable();
    let requests = tally.requests.load(Ordering::Relaxed);
    let accepted = tally.accepted.load(Ordering::Relaxed);
    println!(
        "accepted {} readings/s ({} duplicates in total), {} requests/s; latency ms {}",
        rate(accepted, elapsed),
        tally.duplicate.load(Ordering::Relaxed),
        rate(requests, elapsed),
        percentiles(&latencies),
    );
    let body_bytes = tally.body_bytes.load(Ordering::Relaxed);
    let plain_bytes = tally.plain_bytes.load(Ordering::Relaxed);
    println!(
        "bodies sent: {} bytes per request on average, {:.1}% of their {} plain bytes; {:.1} MB/s",
        body_bytes / requests.max(1),
        100.0 * body_bytes as f64 / plain_bytes.max(1) as f64,
        plain_bytes / requests.max(1),
        body_bytes as f64 / 1e6 / elapsed.as_secs_f64(),
    );
    if let Some(cpu) = cpu {
        print_cpu("server CPU", cpu, requests, elapsed);
    }

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
    if let Some(peak) = service.peak_rss()? {
        println!("server peak RSS: {} MB", peak / (1024 * 1024));
    }

    if args.replay_seconds > 0 {
        let stop = Arc::new(AtomicBool::new(false));
        let cpu_before = service.cpu_time()?;
        let started = Instant::now();
        let retries: Vec<_> = sent
            .into_iter()
            .map(|batches| {
                Ok(tokio::spawn(replay(
                    token.client()?,
                    address.clone(),
                    batches,
                    stop.clone(),
                )))
            })
            .collect::<anyhow::Result<_>>()?;
        tokio::time::sleep(Duration::from_secs(args.replay_seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for retry in retries {
            latencies.extend(retry.await??);
        }
        let elapsed = started.elapsed();
        let cpu = cpu_used(&service, cpu_before)?;
        latencies.sort_unstable();
        let after: i64 = sqlx::query_scalar("select count(*) from measurements")
            .fetch_one(&db.pool)
            .await?;
        ensure!(after == stored, "retries stored {} more rows", after - stored);
        println!(
            "replays: {} requests/s, every one answered 200 from the stored receipt, nothing stored; latency ms {}",
            rate(latencies.len() as u64, elapsed),
            percentiles(&latencies),
        );
        if let Some(cpu) = cpu {
            print_cpu("replays' server CPU", cpu, latencies.len() as u64, elapsed);
        }
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

/// One client posting the batches of [`Batches`] one after another.
#[derive(Debug)]
struct ClientLoad {
    batches: Batches,
    batch_size: usize,
    address: String,
    /// Sends the load client's token.
    http: reqwest::Client,
}

impl ClientLoad {
    /// Posts batches until `stop`; returns each request's latency in microseconds and the first
    /// requests sent, for the replay phase.
    async fn run(
        mut self,
        stop: Arc<AtomicBool>,
        tally: Arc<Tally>,
    ) -> anyhow::Result<(Vec<u64>, Vec<Request>)> {
        let mut latencies = Vec::new();
        let mut kept = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let request = self.batches.next_request();
            let sent = Instant::now();
            let response = send(&self.http, &self.address, &request).await?;
            let status = response.status();
            let receipt: serde_json::Value = response.json().await.context("reading the receipt")?;
            latencies.push(sent.elapsed().as_micros() as u64);
            ensure!(status == 201, "ingest answered {status}: {receipt}");
            tally.requests.fetch_add(1, Ordering::Relaxed);
            tally
                .body_bytes
                .fetch_add(request.body.len() as u64, Ordering::Relaxed);
            tally
                .plain_bytes
                .fetch_add(request.plain_bytes as u64, Ordering::Relaxed);
            let accepted = receipt["data"]["readings_accepted"].as_u64().unwrap_or(0);
            tally.accepted.fetch_add(accepted, Ordering::Relaxed);
            tally
                .duplicate
                .fetch_add(self.batch_size as u64 - accepted, Ordering::Relaxed);
            if kept.len() < KEPT_FOR_REPLAY {
                kept.push(request);
            }
        }
        Ok((latencies, kept))
    }
}

async fn send(
    http: &reqwest::Client,
    address: &str,
    request: &Request,
) -> reqwest::Result<reqwest::Response> {
    let mut post = http
        .post(format!("{address}{}", request.path))
        .header("Idempotency-Key", &request.key)
        .header("content-type", request.content_type);
    if let Some(coding) = request.content_encoding {
        post = post.header("content-encoding", coding);
    }
    post.body(request.body.clone()).send().await
}

/// Requests each client keeps for the replay phase.
const KEPT_FOR_REPLAY: usize = 50;

/// Re-sends `sent` in turn with `http` until `stop`; every answer must be a 200 replay. Returns
/// latencies.
async fn replay(
    http: reqwest::Client,
    address: String,
    sent: Vec<Request>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::new();
    for request in sent.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        let response = send(&http, &address, request).await?;
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

/// Checks that the service runs in `mode`: a request without a token must be refused (401) when
/// authentication is enforced and answered when it is off, or the run would not measure what it
/// says.
async fn check_auth_mode(address: &str, mode: AuthMode) -> anyhow::Result<()> {
    let status = reqwest::get(format!("{address}/v1/sites/1/metrics"))
        .await?
        .status();
    let expected = match mode {
        AuthMode::Enforce => reqwest::StatusCode::UNAUTHORIZED,
        AuthMode::Off => reqwest::StatusCode::OK,
    };
    ensure!(
        status == expected,
        "a request without a token answered {status} with --auth {mode:?}, not {expected}"
    );
    Ok(())
}

/// `p50 … p95 … p99 … max …` in milliseconds of sorted microsecond latencies: to the microsecond
/// below 10 ms (a replay takes a fraction of a millisecond), to a tenth above.
fn percentiles(sorted: &[u64]) -> String {
    let at = |p: f64| {
        let millis = nearest_rank(sorted, p) as f64 / 1000.0;
        if millis < 10.0 {
            format!("{millis:.3}")
        } else {
            format!("{millis:.1}")
        }
    };
    format!(
        "p50 {} p95 {} p99 {} max {}",
        at(0.50),
        at(0.95),
        at(0.99),
        at(1.0)
    )
}

/// The CPU time the server (a process of its own) used since `before`.
fn cpu_used(service: &Service, before: Option<Duration>) -> anyhow::Result<Option<Duration>> {
    Ok(service.cpu_time()?.zip(before).map(|(now, before)| now - before))
}

/// `what: N µs per request (… s of CPU in … s)`: the server's CPU time per answered request (its
/// background work, the relay's deliveries and the group commits, included).
fn print_cpu(what: &str, cpu: Duration, requests: u64, elapsed: Duration) {
    println!(
        "{what}: {:.0} µs per request ({:.2} s of CPU in {:.1} s, {:.0}% of one core)",
        cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
        cpu.as_secs_f64(),
        elapsed.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64()
    );
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
