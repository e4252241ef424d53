//! `outbox-bench`: how fast the outbox relay delivers, and whether it keeps up with ingestion.
//!
//! 1. **Relay throughput.** Writes `--events` events over `--sites` sites straight into the outbox,
//!    then times the relay delivering all of them, signed, to a local webhook receiver that answers
//!    at once. The baseline, measured in the same run, is the same webhook sink posting the same
//!    number of events at the same concurrency with no database at all: the HTTP ceiling.
//! 2. **Backlog under ingestion.** Runs the HTTP service with its relay and drives v1 ingestion with
//!    `--ingest-clients` concurrent clients (with an admin token) for `--ingest-seconds`, sampling
//!    the outbox backlog; prints ingestion rate, the largest backlog and oldest-pending age seen,
//!    both at the end of the load, and how long the relay took to drain what was left.
//!
//! Every delivered event id is checked against the number written: nothing lost, nothing extra.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use plume::db::PoolSettings;
use plume::outbox::sink::{Delivery, Sink, WebhookSink};
use plume::outbox::{admin, StoredEvent};
use plume::state::{AppState, Settings};
use plume_bench::{rate, relay_to, start_service, BenchDatabase, Receiver, SECRET};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Measures the outbox relay's throughput and its backlog under v1 ingestion.
#[derive(Debug, Parser)]
struct Args {
    /// URL of any database on the PostgreSQL server to use (a fresh database is created there).
    /// Without it, a private cluster with durable settings is started under /tmp and removed after.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Events written for the throughput phase.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Sites the events are spread over.
    #[arg(long, default_value_t = 200)]
    sites: u64,
    /// Relay concurrency (streams delivered at once), also the baseline's.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of v1 ingestion in the backlog phase (0 skips it).
    #[arg(long, default_value_t = 30)]
    ingest_seconds: u64,
    /// Concurrent ingestion clients in the backlog phase.
    #[arg(long, default_value_t = 8)]
    ingest_clients: usize,
    /// Print the backlog four times a second during the ingestion phase.
    #[arg(long)]
    trace_backlog: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter("warn,sqlx=error")
        .init();
    let pool = PoolSettings {
        max_connections: args.concurrency as u32 + args.ingest_clients as u32 + 8,
        ..PoolSettings::default()
    };
    let db = BenchDatabase::create(args.database_url.as_deref(), &pool).await?;
    let result = run(&args, &db).await;
    db.close().await;
    result
}

async fn run(args: &Args, db: &BenchDatabase) -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let per_site = args.events.div_ceil(args.sites);
    let events = per_site * args.sites;
    sqlx::query(
        "insert into sites (name, emission_limit_mg) select 'bench ' || g, 1000000000000000 from generate_series(1, $1) g",
    )
    .bind(args.sites as i64)
    .execute(&db.pool)
    .await?;
    println!(
        "outbox-bench: {events} events over {} sites, concurrency {}",
        args.sites, args.concurrency
    );

    let baseline = baseline(args, &receiver, events).await?;
    receiver.reset();
    write_events(db, per_site).await?;
    let relayed = relay_throughput(args, db, &receiver, events).await?;
    println!(
        "| relay, {events} events, {} sites, {} streams at once | {} events/s | {} events/s | {:.0}% |",
        args.sites,
        args.concurrency,
        relayed,
        baseline,
        100.0 * relayed as f64 / baseline as f64
    );
    ensure!(receiver.bad_signatures() == 0, "signatures failed to verify");

    if args.ingest_seconds > 0 {
        receiver.reset();
        backlog_under_ingestion(args, db, &receiver).await?;
    }
    Ok(())
}

/// The webhook sink alone, no database: `concurrency` tasks posting `events` signed events.
async fn baseline(args: &Args, receiver: &Receiver, events: u64) -> anyhow::Result<u64> {
    let sink = Arc::new(WebhookSink::new(
        vec![receiver.url.clone()],
        SECRET,
        Duration::from_secs(10),
    )?);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers = (0..args.concurrency).map(|_| {
        let (sink, next) = (sink.clone(), next.clone());
        tokio::spawn(async move {
            let now = chrono::Utc::now();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    return Ok::<_, anyhow::Error>(());
                }
                let event = StoredEvent {
                    site_id: 1,
                    seq: n as i64,
                    event_id: uuid::Uuid::new_v4(),
                    event_type: "measurements.ingested".to_owned(),
                    occurred_at: now,
                    created_at: now,
                    data: json!({"batch_id": "bench", "readings_accepted": 100}),
                };
                let delivery = Delivery::new(&event, 1);
                sink.deliver(&delivery).await?;
            }
        })
    });
    for worker in futures_util::future::join_all(workers).await {
        worker??;
    }
    let per_second = rate(events, started.elapsed());
    ensure!(receiver.distinct() as u64 == events, "the baseline lost events");
    Ok(per_second)
}

/// Writes `per_site` events for every site, as the ingest transaction would.
async fn write_events(db: &BenchDatabase, per_site: u64) -> anyhow::Result<()> {
    sqlx::raw_sql(&format!(
        "insert into outbox_events (site_id, seq, event_id, event_type, occurred_at, data)
         select s.id, g, gen_random_uuid(), 'measurements.ingested', now(),
                jsonb_build_object('batch_id', 'bench-' || g, 'readings_accepted', 100,
                                   'accepted_emissions', '100.000000', 'total_emissions_to_date', '5000.000000',
                                   'compliance_status', 'Within Limit')
           from sites s, generate_series(1, {per_site}) g;
         insert into outbox_streams (site_id, head_seq) select id, {per_site} from sites;
         analyze outbox_events;"
    ))
    .execute(&db.pool)
    .await
    .context("writing the events")?;
    Ok(())
}

async fn relay_throughput(
    args: &Args,
    db: &BenchDatabase,
    receiver: &Receiver,
    events: u64,
) -> anyhow::Result<u64> {
    let state = AppState::new(db.pool.clone(), Settings::default());
    let relay = relay_to(db, receiver, &state, args.concurrency).await?;
    let shutdown = CancellationToken::new();
    let _stop_on_return = shutdown.clone().drop_guard();
    let started = Instant::now();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    let complete = receiver.wait_for(events, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.await?;
    // No HTTP server closes them here: the change listener and the auth sweep would otherwise
    // outlive the cluster and warn as it stops.
    state.changes.close();
    state.auth.close();
    ensure!(
        complete,
        "the relay did not deliver every event within 10 minutes"
    );
    let status = admin::status(&db.pool).await?;
    ensure!(status.pending == 0, "{} events still pending", status.pending);
    ensure!(
        receiver.distinct() as u64 == events,
        "{} distinct ids for {events} events",
        receiver.distinct()
    );
    Ok(rate(events, elapsed))
}

/// A relay as `plume serve` runs it: default pacing, on a pool of its own.
/// The service and its relay under v1 ingestion: does the backlog stay bounded?
async fn backlog_under_ingestion(args: &Args, db: &BenchDatabase, receiver: &Receiver) -> anyhow::Result<()> {
    let state = AppState::new(db.pool.clone(), Settings::default());
    let shutdown = CancellationToken::new();
    let _stop_on_return = shutdown.clone().drop_guard();
    let address = start_service(db, &state, receiver, &shutdown).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let stored = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..args.ingest_clients)
        .map(|client| {
            Ok(tokio::spawn(ingest_client(
                client,
                args.sites,
                // The admin token, on a connection pool of the client's own.
                db.admin_token.client()?,
                address.clone(),
                stop.clone(),
                stored.clone(),
            )))
        })
        .collect::<anyhow::Result<_>>()?;
    let (mut max_pending, mut max_age) = (0, 0.0f64);
    while started.elapsed() < Duration::from_secs(args.ingest_seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = admin::status(&db.pool).await?;
        max_pending = max_pending.max(status.pending);
        if args.trace_backlog {
            let oldest = status.streams.iter().min_by_key(|s| s.oldest_pending_at);
            eprintln!(
                "backlog: {} pending in {} sites, {} in flight, oldest {:.3} s (site {:?})",
                status.pending,
                status.streams.len(),
                status.in_flight,
                status.oldest_pending_age_seconds.unwrap_or(0.0),
                oldest.map(|s| s.site_id)
            );
        }
        max_age = max_age.max(status.oldest_pending_age_seconds.unwrap_or(0.0));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await??;
    }
    let elapsed = started.elapsed();
    let at_end = admin::status(&db.pool).await?;
    let drain_started = Instant::now();
    while admin::status(&db.pool).await?.pending > 0 {
        ensure!(
            drain_started.elapsed() < Duration::from_secs(600),
            "the backlog did not drain"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = drain_started.elapsed();
    shutdown.cancel();

    let batches = stored.load(Ordering::Relaxed);
    let events: i64 =
        sqlx::query_scalar("select count(*) from outbox_events where data->>'batch_id' like 'load-%'")
            .fetch_one(&db.pool)
            .await?;
    ensure!(
        events as u64 == batches,
        "{events} events for {batches} stored batches"
    );
    ensure!(
        receiver.distinct() as u64 == batches,
        "{} delivered for {batches} batches",
        receiver.distinct()
    );
    println!(
        "| v1 ingest, {} clients, 100-reading batches, {:.0} s | {} batches/s ({} readings/s) | backlog max {max_pending} events, oldest pending max {max_age:.3} s | at the end: {} pending, oldest {:.3} s; drained in {} ms |",
        args.ingest_clients,
        elapsed.as_secs_f64(),
        rate(batches, elapsed),
        rate(batches * 100, elapsed),
        at_end.pending,
        at_end.oldest_pending_age_seconds.unwrap_or(0.0),
        drained.as_millis()
    );
    Ok(())
}

/// Posts 100-reading batches for sites in turn with `http` until `stop`, each with new readings.
async fn ingest_client(
    client: usize,
    sites: u64,
    http: reqwest::Client,
    address: String,
    stop: Arc<AtomicBool>,
    stored: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let start = chrono::Utc::now() - chrono::Duration::days(60);
    let mut batch = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let site = 1 + (batch * 7 + client as u64) % sites;
        let readings: Vec<_> = (0..100)
            .map(|i| {
                let at = start + chrono::Duration::seconds((batch * 100 + i) as i64);
                json!({"source_id": format!("c{client}"), "timestamp": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "value": "1.5"})
            })
            .collect();
        let response = http
            .post(format!("{address}/v1/ingest"))
            .header("Idempotency-Key", format!("load-{client}-{batch}"))
            .json(&json!({"site_id": site, "readings": readings}))
            .send()
            .await?;
        let status = response.status();
        ensure!(
            status == 201,
            "ingest answered {status}: {}",
            response.text().await?
        );
        stored.fetch_add(1, Ordering::Relaxed);
        batch += 1;
    }
    Ok(())
}
