//! `changes-bench`: how soon a long poll on the change feed answers after a commit, end to end.
//!
//! Starts `plume serve` as a process of its own (or `--instances 2` of them on the same database,
//! where a change reaches the second through PostgreSQL's LISTEN/NOTIFY) on a fresh database on a
//! durable private PostgreSQL (or `--database-url`'s server), with `--sites` sites. Opens
//! `--waiters` long polls, `GET /v2/changes?cursor=..&wait=..`, each on a connection of its own and
//! spread over the instances. Once every one waits, posts one v1 batch for one site through the
//! first instance and times every waiter's answer from the moment the `201` arrived (the commit
//! had happened by then) and from the moment the batch was sent; every answer must hold that site.
//! (The server signals the change as it commits, before it answers `201`, so a waiter may answer
//! first: a negative figure.) That is one round; each of `--rounds` re-arms every waiter with the
//! cursor it was given.
//!
//! Every request carries an admin token minted as the database was created (admins have no
//! per-client limit on long polls). Beside it, from the same client: a plain `GET /v1/sites/{id}/metrics`, one at a time and
//! `--waiters` at once, for what an HTTP round trip and a burst of answers cost on this machine;
//! how long re-arming every waiter takes; and each server's resident memory before any waiter,
//! with all of them waiting and after the last round. The client shares the machine's cores with
//! the servers and PostgreSQL: its own work is in every figure, so the waiters speak plain HTTP/1.1
//! on connections of their own ([`wire`]) and their answers are parsed after each round.

mod wire;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use clap::Parser;
use plume::db::PoolSettings;
use plume_bench::service::Service;
use plume_bench::{nearest_rank, BenchDatabase, Receiver};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;
use wire::Connection;

/// Times the wake-up of long polls on `GET /v2/changes` when a batch is committed.
#[derive(Debug, Parser)]
struct Args {
    /// URL of any database on the PostgreSQL server to use (a fresh database is created there).
    /// Without it, a private cluster with durable settings is started under /tmp and removed after.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// The `plume` binary to serve (build it with `cargo build --release -p plume`).
    #[arg(long, default_value = "target/release/plume")]
    plume_binary: PathBuf,
    /// Long polls waiting at once, each on a connection of its own.
    #[arg(long, default_value_t = 1_000)]
    waiters: usize,
    /// Batches posted, one per round; every waiter answers once per round.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// `plume serve` processes on the same database; the waiters are spread over them and the
    /// batches go through the first.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    instances: u8,
    /// Sites created; the batches all go to the first.
    #[arg(long, default_value_t = 5)]
    sites: u32,
    /// The long polls' `wait=`, in seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Plain `GET /v1/sites/{id}/metrics` requests timed one at a time (after as many untimed).
    #[arg(long, default_value_t = 1_000)]
    baseline_requests: usize,
}

/// Each server's connection pool (`--db-max-connections`), as `plume serve`'s default.
const POOL: u32 = 16;

/// Longest wait for every waiter to be in place before a round's batch.
const ARMING_TIMEOUT: Duration = Duration::from_secs(60);

/// One waiting client: its connection and the cursor it holds.
#[derive(Debug)]
struct Waiter {
    connection: Connection,
    cursor: String,
}

/// Signed latencies in microseconds (a waiter may answer before the batch's own `201` arrives).
#[derive(Debug, Default)]
struct Latencies(Vec<i64>);

impl Latencies {
    fn push(&mut self, from: Instant, to: Instant) {
        let micros = if to >= from {
            (to - from).as_micros() as i64
        } else {
            -((from - to).as_micros() as i64)
        };
        self.0.push(micros);
    }

    fn row(&self, name: &str) -> String {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let at = |p: f64| nearest_rank(&sorted, p) as f64 / 1e3;
        format!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            sorted.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter("warn,sqlx=error")
        .init();
    ensure!(
        args.plume_binary.exists(),
        "{} does not exist: build it with `cargo build --release -p plume`",
        args.plume_binary.display()
    );
    ensure!(
        args.waiters >= usize::from(args.instances) && args.rounds >= 1 && args.sites >= 1,
        "at least one waiter per instance, one round and one site"
    );
    ensure!(
        (1..=plume::changes::MAX_WAIT.as_secs()).contains(&args.wait),
        "--wait must be within 1 to {} seconds",
        plume::changes::MAX_WAIT.as_secs()
    );
    raise_open_files(args.waiters)?;
    let pool = PoolSettings {
        max_connections: 2,
        ..PoolSettings::default()
    };
    let db = BenchDatabase::create(args.database_url.as_deref(), &pool).await?;
    let result = run(&args, &db).await;
    db.close().await;
    result
}

/// Raises this process's open-file limit to its hard limit (the `plume serve` children inherit
/// it: each waiter holds a socket on both sides) and checks that it is enough.
fn raise_open_files(waiters: usize) -> anyhow::Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .context("raising the open-file limit")?;
    let needed = waiters as u64 + 512;
    ensure!(
        limit.maximum.is_none_or(|maximum| maximum >= needed),
        "{waiters} waiters need about {needed} open files, and the hard limit is {limit:?}: raise it"
    );
    Ok(())
}

async fn run(args: &Args, db: &BenchDatabase) -> anyhow::Result<()> {
    sqlx::query(
        "insert into sites (name, emission_limit_mg)
         select 'changes ' || g, 1000000000000000 from generate_series(1, $1) g",
    )
    .bind(i64::from(args.sites))
    .execute(&db.pool)
    .await?;
    let site: i64 = sqlx::query_scalar("select min(id) from sites")
        .fetch_one(&db.pool)
        .await?;
    let instances = usize::from(args.instances);
    // Each server admits exactly its share of the waiters, so that one more poll, refused 503,
    // shows that all of them wait.
    let shares: Vec<usize> = (0..instances)
        .map(|instance| (args.waiters + instances - 1 - instance) / instances)
        .collect();
    let receiver = Receiver::start().await?;
    let mut servers = Vec::with_capacity(instances);
    for share in &shares {
        let extra = ["--max-waiters", &share.to_string()];
        servers.push(Service::process_with(&args.plume_binary, db, &receiver, POOL, &extra).await?);
    }
    let feed = Feed {
        http: db
            .admin_token
            .client_builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(None)
            .build()?,
        addresses: servers.iter().map(|s| s.address().to_owned()).collect(),
        site,
        wait: args.wait,
    };
    let metrics_path = format!("/v1/sites/{site}/metrics");
    println!(
        "changes-bench: {} waiters over {instances} plume process(es), {} rounds, each one batch \
         for site {site} (of {}) through the first process\n",
        args.waiters, args.rounds, args.sites
    );

    let metrics_url = format!("{}{metrics_path}", feed.addresses[0]);
    let one_at_a_time = sequential(&feed.http, &metrics_url, args.baseline_requests).await?;
    let rss_idle = resident(&servers)?;
    let response = feed
        .http
        .get(format!("{}/v2/changes", feed.addresses[0]))
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::OK,
        "GET /v2/changes: {}",
        response.status()
    );
    let first: Value = response.json().await?;
    let cursor = first["meta"]["cursor"]
        .as_str()
        .context("GET /v2/changes gave no cursor")?;
    let mut waiters = Vec::with_capacity(args.waiters);
    for waiter in 0..args.waiters {
        waiters.push(Waiter {
            connection: Connection::open(&feed.addresses[waiter % instances], &db.admin_token).await?,
            cursor: cursor.to_owned(),
        });
    }
    let mut tally = Tally::default();
    let mut rss_waiting = Vec::new();
    // Ten minutes back, a second apart: inside the accepted window, and each reading new.
    let first_reading = chrono::Utc::now() - chrono::Duration::minutes(10);
    for round in 0..args.rounds {
        let reading_at = first_reading + chrono::Duration::seconds(round as i64);
        feed.round(&mut waiters, reading_at, &mut tally, || {
            if round == 0 {
                rss_waiting = resident(&servers)?;
            }
            Ok(())
        })
        .await?;
    }
    let rss_after = resident(&servers)?;
    let burst = at_once(&feed.http, &feed.addresses, &metrics_path, args.waiters).await?;

    let mut rows = tally.rows(instances > 1);
    rows.push((
        "baseline: `GET /v1/sites/{id}/metrics`, one at a time".to_owned(),
        &one_at_a_time,
    ));
    let burst_name = format!("baseline: {} of those sent at once, from the start", args.waiters);
    rows.push((burst_name, &burst));
    println!(
        "| measured | count | p50 ms | p90 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- | --- |"
    );
    for (name, latencies) in rows {
        println!("{}", latencies.row(&name));
    }
    println!(
        "\nanswers: {} in all, {} empty, {} without site {site} (both must be 0)\n",
        args.waiters * args.rounds,
        tally.empty,
        tally.missing
    );
    println!(
        "| plume process | waiters | RSS, none waiting yet | RSS, all waiting (first round) | \
         per waiter | RSS after the last round |\n| --- | --- | --- | --- | --- | --- |"
    );
    for (instance, share) in shares.iter().enumerate() {
        let megabytes = |bytes: &[u64]| bytes[instance] as f64 / 1e6;
        let (idle, waiting) = (megabytes(&rss_idle), megabytes(&rss_waiting));
        println!(
            "| {instance} | {share} | {idle:.1} MB | {waiting:.1} MB | {:.1} KB | {:.1} MB |",
            (waiting - idle) * 1e3 / *share as f64,
            megabytes(&rss_after)
        );
    }
    ensure!(
        tally.empty == 0 && tally.missing == 0,
        "{} answers did not hold the changed site",
        tally.empty + tally.missing
    );
    Ok(())
}

/// What the rounds measured.
#[derive(Debug, Default)]
struct Tally {
    /// Each answer after the batch's `201`, waiters on the process that took the batch.
    same: Latencies,
    /// The same, waiters on the other process.
    other: Latencies,
    /// Each answer after the batch was sent.
    from_send: Latencies,
    /// Each round's first answer after the `201`.
    firsts: Latencies,
    /// Each round's last answer after the `201`.
    lasts: Latencies,
    /// Each batch's round trip.
    posts: Latencies,
    /// From each round's first long poll sent until a probe found all waiting.
    arming: Latencies,
    /// Answers with no site.
    empty: usize,
    /// Answers with sites, but not the one changed.
    missing: usize,
}

impl Tally {
    /// The table's rows, named; `other` says whether there was a second process.
    fn rows(&self, other: bool) -> Vec<(String, &Latencies)> {
        let ingesting = if other { ", on the ingesting process" } else { "" };
        let mut rows = vec![(
            format!("waiter answered, after the batch's 201{ingesting}"),
            &self.same,
        )];
        if other {
            let name = "waiter answered, after the batch's 201, on the other process";
            rows.push((name.to_owned(), &self.other));
        }
        rows.extend(
            [
                ("waiter answered, after the batch was sent", &self.from_send),
                ("first waiter of a round, after the 201", &self.firsts),
                ("last waiter of a round, after the 201", &self.lasts),
                ("`POST /v1/ingest` of one reading (201)", &self.posts),
                ("all waiters sent and waiting (probed every 10 ms)", &self.arming),
            ]
            .map(|(name, latencies)| (name.to_owned(), latencies)),
        );
        rows
    }
}

/// The waiters' side of the feed: where the servers are and which site the batches change.
#[derive(Debug)]
struct Feed {
    http: reqwest::Client,
    addresses: Vec<String>,
    site: i64,
    wait: u64,
}

impl Feed {
    /// Arms a long poll for each waiter (waiter `i` on server `i % servers`), calls `all_armed`
    /// once all wait, posts one reading taken at `reading_at` through the first server, and
    /// collects every answer into `tally`, keeping each waiter's next cursor.
    async fn round(
        &self,
        waiters: &mut Vec<Waiter>,
        reading_at: chrono::DateTime<chrono::Utc>,
        tally: &mut Tally,
        all_armed: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let servers = self.addresses.len();
        let arming = Instant::now();
        let wait = self.wait;
        let probe_cursor = waiters[0].cursor.clone();
        let polls: Vec<_> = waiters
            .drain(..)
            .map(|mut waiter| {
                tokio::spawn(async move {
                    let answer = long_poll(&mut waiter, wait).await;
                    (waiter, answer)
                })
            })
            .collect();
        for address in &self.addresses {
            all_waiting(&self.http, address, &probe_cursor).await?;
        }
        tally.arming.push(arming, Instant::now());
        all_armed()?;
        let (sent, acked) = self.post(reading_at).await?;
        tally.posts.push(sent, acked);
        // Every answer is in before any is parsed: parsing is the client's work, not the wake-up's.
        let mut answers = Vec::with_capacity(polls.len());
        for poll in polls {
            let (waiter, answer) = poll.await?;
            answers.push((waiter, answer?));
        }
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
        for (index, (mut waiter, answer)) in answers.into_iter().enumerate() {
            let latencies = if index % servers == 0 {
                &mut tally.same
            } else {
                &mut tally.other
            };
            latencies.push(acked, answer.arrived);
            tally.from_send.push(sent, answer.arrived);
            first = Some(first.map_or(answer.arrived, |first| first.min(answer.arrived)));
            last = Some(last.map_or(answer.arrived, |last| last.max(answer.arrived)));
            let (sites, cursor) = read_answer(&answer.body)?;
            tally.empty += usize::from(sites.is_empty());
            tally.missing += usize::from(!sites.is_empty() && !sites.contains(&self.site));
            waiter.cursor = cursor;
            waiters.push(waiter);
        }
        if let (Some(first), Some(last)) = (first, last) {
            tally.firsts.push(acked, first);
            tally.lasts.push(acked, last);
        }
        Ok(())
    }

    /// Posts one new reading for the site through the first server; returns when it was sent and
    /// when its `201` had been read.
    async fn post(&self, reading_at: chrono::DateTime<chrono::Utc>) -> anyhow::Result<(Instant, Instant)> {
        let body = serde_json::json!({
            "site_id": self.site,
            "readings": [{
                "source_id": "changes-bench",
                "timestamp": reading_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "value": "1.5",
            }],
        });
        let sent = Instant::now();
        let response = self
            .http
            .post(format!("{}/v1/ingest", self.addresses[0]))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let receipt = response.bytes().await?;
        let acked = Instant::now();
        ensure!(
            status == StatusCode::CREATED,
            "ingest answered {status}: {}",
            String::from_utf8_lossy(&receipt)
        );
        Ok((sent, acked))
    }
}

/// One long poll, sent again while its server is full (before the batch only: a probe of
/// [`all_waiting`] held the last place for a moment); its answer, unparsed.
async fn long_poll(waiter: &mut Waiter, wait: u64) -> anyhow::Result<wire::Response> {
    let path = format!("/v2/changes?cursor={}&wait={wait}", waiter.cursor);
    loop {
        let response = waiter.connection.get(&path).await?;
        if response.status == 503 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        ensure!(response.status == 200, "a long poll answered {}", response.status);
        return Ok(response);
    }
}

/// The sites a long poll's answer says changed, and its next cursor.
fn read_answer(body: &[u8]) -> anyhow::Result<(Vec<i64>, String)> {
    let body: Value = serde_json::from_slice(body)?;
    let sites = body["data"]
        .as_array()
        .context("a long poll's answer has no data")?
        .iter()
        .filter_map(|site| site["site_id"].as_i64())
        .collect();
    let cursor = body["meta"]["cursor"]
        .as_str()
        .context("a long poll's answer has no cursor")?
        .to_owned();
    Ok((sites, cursor))
}

/// Returns once the server at `address` refuses one more long poll: then all its share waits.
async fn all_waiting(http: &reqwest::Client, address: &str, cursor: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + ARMING_TIMEOUT;
    loop {
        let response = http
            .get(format!("{address}/v2/changes"))
            .query(&[("cursor", cursor), ("wait", "0.001")])
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Ok(());
        }
        ensure!(status == StatusCode::OK, "a probe answered {status}");
        ensure!(
            Instant::now() < deadline,
            "the waiters were not all waiting after {ARMING_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET url` one at a time, over one kept-alive connection: as many untimed first, then timed.
async fn sequential(http: &reqwest::Client, url: &str, requests: usize) -> anyhow::Result<Latencies> {
    let mut latencies = Latencies::default();
    for request in 0..2 * requests {
        let sent = Instant::now();
        let response = http.get(url).send().await?;
        ensure!(
            response.status() == StatusCode::OK,
            "{url}: {}",
            response.status()
        );
        response.bytes().await?;
        if request >= requests {
            latencies.push(sent, Instant::now());
        }
    }
    Ok(latencies)
}

/// `count` requests for `path` sent at once, spread over the servers as the waiters are, each
/// timed from the start of all.
async fn at_once(
    http: &reqwest::Client,
    addresses: &[String],
    path: &str,
    count: usize,
) -> anyhow::Result<Latencies> {
    let started = Instant::now();
    let requests: Vec<_> = (0..count)
        .map(|request| {
            let (http, url) = (
                http.clone(),
                format!("{}{path}", addresses[request % addresses.len()]),
            );
            tokio::spawn(async move {
                let response = http.get(&url).send().await?;
                ensure!(
                    response.status() == StatusCode::OK,
                    "{url}: {}",
                    response.status()
                );
                response.bytes().await?;
                Ok(Instant::now())
            })
        })
        .collect();
    let mut latencies = Latencies::default();
    for request in requests {
        latencies.push(started, request.await??);
    }
    Ok(latencies)
}

/// Each server's resident memory now, in bytes.
fn resident(servers: &[Service]) -> anyhow::Result<Vec<u64>> {
    servers
        .iter()
        .map(|server| server.rss()?.context("the server runs in a process of its own"))
        .collect()
}
