//! What authentication adds to one request, without the load around it.
//!
//! Two plume services run in this process on one fresh database (a private durable PostgreSQL
//! cluster, as for the other end-to-end benches; `BENCH_DATABASE_URL` names another server): one
//! checks tokens, the other runs with authentication off. One client asks both, over a keep-alive
//! loopback connection each, for `GET /v2/session`, the cheapest authenticated route (it answers
//! from the caller's identity, without the database), sending an ingest client's token to both:
//! the difference is the server's whole authentication step (parsing the header, hashing the
//! secret, the cache lookup, the route's rule, the client's request bucket).
//!
//! Not criterion: criterion times one function after the other, and on a machine whose two cores
//! are shared the drift between them was larger than the difference (the same request measured 87
//! and 187 µs a few minutes apart). Here the two services are asked in turn, request by request
//! (in the order enforce, off, off, enforce, ... so that neither always goes first), and each
//! round's medians are compared: both modes share whatever else the machine is doing.
//!
//! `cargo bench -p plume-bench --bench auth-cost` (20 rounds of 5,000 pairs; `cargo test --benches`
//! runs 2 rounds of 50).

use std::time::Instant;

use plume::auth::cache::{AuthMode, AuthSettings};
use plume::db::PoolSettings;
use plume::state::{AppState, Settings};
use plume_bench::credentials::BearerToken;
use plume_bench::{nearest_rank, BenchDatabase};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Rounds and request pairs per round: for measuring, and for a quick check under `cargo test`.
const MEASURE: (usize, usize) = (20, 5_000);
const CHECK: (usize, usize) = (2, 50);

/// One service under test: its mode, where it listens, a client kept alive to it, and every
/// request's time.
struct Target {
    name: &'static str,
    url: String,
    http: reqwest::Client,
    micros: Vec<f64>,
}

impl Target {
    /// One timed `GET`, which must answer 200; the body is read to the end.
    async fn request(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let response = self.http.get(&self.url).send().await?;
        anyhow::ensure!(response.status() == 200, "{}: {}", self.url, response.status());
        response.bytes().await?;
        self.micros.push(started.elapsed().as_secs_f64() * 1e6);
        Ok(())
    }
}

/// Serves plume over `db` with authentication `mode` on a free loopback port until `shutdown`;
/// returns the base URL.
async fn serve(db: &BenchDatabase, mode: AuthMode, shutdown: &CancellationToken) -> anyhow::Result<String> {
    let settings = Settings {
        auth: AuthSettings {
            mode,
            ..AuthSettings::default()
        },
        ..Settings::default()
    };
    let state = AppState::new(db.pool.clone(), settings);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    tokio::spawn(plume::http::serve(listener, state, shutdown.clone()));
    Ok(address)
}

/// The median of `values`, which must not be empty.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    nearest_rank(values, 0.5)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let (rounds, pairs) = if std::env::args().any(|arg| arg == "--bench") {
        MEASURE
    } else {
        CHECK
    };
    let url = std::env::var("BENCH_DATABASE_URL").ok();
    let db = BenchDatabase::create(url.as_deref(), &PoolSettings::default()).await?;
    let shutdown = CancellationToken::new();
    let result = measure(&db, &shutdown, rounds, pairs).await;
    shutdown.cancel();
    db.close().await;
    result
}

async fn measure(
    db: &BenchDatabase,
    shutdown: &CancellationToken,
    rounds: usize,
    pairs: usize,
) -> anyhow::Result<()> {
    let token = BearerToken::ingest(&db.pool, "auth-cost").await?;
    let mut targets = Vec::new();
    for (name, mode) in [("enforce", AuthMode::Enforce), ("off", AuthMode::Off)] {
        targets.push(Target {
            name,
            url: format!("{}/v2/session", serve(db, mode, shutdown).await?),
            http: token.client_builder().tcp_nodelay(true).build()?,
            micros: Vec::new(),
        });
    }
    println!(
        "auth-cost: GET /v2/session, one client over keep-alive loopback, {rounds} rounds of {pairs} \
         request pairs, auth enforce and off in turn\n"
    );
    // Untimed: connections open, the token in the cache, both services warm.
    for _ in 0..pairs.min(1_000) {
        for target in &mut targets {
            target.request().await?;
        }
    }
    let mut round_differences = Vec::with_capacity(rounds);
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for target in &mut targets {
            target.micros.clear();
        }
        for pair in 0..pairs {
            let (first, second) = if pair % 2 == 0 { (0, 1) } else { (1, 0) };
            targets[first].request().await?;
            targets[second].request().await?;
        }
        let enforce = median(&mut targets[0].micros.clone());
        let off = median(&mut targets[1].micros.clone());
        round_differences.push(enforce - off);
        for (times, target) in all.iter_mut().zip(&targets) {
            times.extend(&target.micros);
        }
    }

    println!(
        "| auth | requests | p50 µs | p90 µs | p99 µs | mean µs |\n| --- | --- | --- | --- | --- | --- |"
    );
    for (times, target) in all.iter_mut().zip(&targets) {
        times.sort_by(f64::total_cmp);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            target.name,
            times.len(),
            nearest_rank(times, 0.5),
            nearest_rank(times, 0.9),
            nearest_rank(times, 0.99),
            times.iter().sum::<f64>() / times.len() as f64
        );
    }
    let spread = {
        let mut sorted = round_differences.clone();
        sorted.sort_by(f64::total_cmp);
        (sorted[0], sorted[sorted.len() - 1])
    };
    println!(
        "\nadded by authentication, per request: {:.1} µs (median of the {rounds} rounds' p50 \
         differences; rounds from {:.1} to {:.1} µs)",
        median(&mut round_differences),
        spread.0,
        spread.1
    );
    Ok(())
}
