//! What plume's end-to-end benchmarks share: a fresh database on a durable PostgreSQL (a private
//! temporary cluster unless a URL is given) with an admin token minted in it ([`credentials`]), a
//! webhook receiver that answers at once, and the service itself in-process or as a `plume` child
//! process ([`service`]).

pub mod credentials;
pub mod service;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use credentials::BearerToken;
use plume::db::embedded::{ClusterOptions, EmbeddedCluster};
use plume::db::{self, migrate, PoolSettings};
use plume::outbox::relay::{self, Relay, RelayConfig};
use plume::outbox::sink::{self, WebhookSink};
use plume::state::AppState;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The private cluster's settings beyond PostgreSQL's durable defaults: memory for a machine with
/// 24 GiB, and checkpoints spaced so that one run (service and baseline alike) is not split by a
/// checkpoint at a random moment, which made figures swing by a third from run to run.
pub const BENCH_SETTINGS: [(&str, &str); 4] = [
    ("shared_buffers", "2GB"),
    ("max_wal_size", "16GB"),
    ("checkpoint_timeout", "30min"),
    ("work_mem", "16MB"),
];

/// A migrated database of the benchmark's own, and the cluster behind it when the bench started one.
#[derive(Debug)]
pub struct BenchDatabase {
    /// Its URL.
    pub url: String,
    /// A pool as the service opens it.
    pub pool: PgPool,
    /// An admin client's token, minted as the database was created: every route, every site, no
    /// per-client limits.
    pub admin_token: BearerToken,
    cluster: Option<(EmbeddedCluster, tempfile::TempDir)>,
}

impl BenchDatabase {
    /// A fresh database on `server_url` (a URL of any database on the server to use), or on a new
    /// private cluster with PostgreSQL's durable defaults (fsync and synchronous commit on) and
    /// [`BENCH_SETTINGS`].
    pub async fn create(server_url: Option<&str>, pool: &PoolSettings) -> anyhow::Result<Self> {
        Self::create_with(server_url, pool, &[]).await
    }

    /// [`BenchDatabase::create`], with `overrides` replacing or adding to [`BENCH_SETTINGS`] on a
    /// private cluster (settings given on the command line, which `alter system` cannot change).
    pub async fn create_with(
        server_url: Option<&str>,
        pool: &PoolSettings,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let (admin_url, cluster) = match server_url {
            Some(url) => (url.to_owned(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("plume-bench-")
                    .tempdir_in("/tmp")?;
                let options = ClusterOptions {
                    settings: BENCH_SETTINGS
                        .iter()
                        .filter(|(name, _)| !overrides.iter().any(|(o, _)| o == name))
                        .chain(overrides)
                        .map(|(name, value)| (name.to_string(), value.to_string()))
                        .collect(),
                    ..ClusterOptions::new(dir.path().join("cluster"))
                };
                let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options))
                    .await?
                    .context("starting PostgreSQL for the benchmark")?;
                (cluster.url("postgres"), Some((cluster, dir)))
            }
        };
        let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
        db::create_database_if_missing(&admin_url, &name).await?;
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => anyhow::bail!("the database URL has no database name: {admin_url}"),
        };
        migrate::run(&url)
            .await
            .context("migrating the benchmark database")?;
        let pool = db::connect(&url, pool).await?;
        let admin_token = BearerToken::admin(&pool).await?;
        Ok(Self {
            url,
            pool,
            admin_token,
            cluster,
        })
    }

    /// The existing database at `url`, migrated, with a new admin token; left in place when closed.
    pub async fn existing(url: &str, pool: &PoolSettings) -> anyhow::Result<Self> {
        migrate::run(url)
            .await
            .context("migrating the benchmark database")?;
        let pool = db::connect(url, pool).await?;
        let admin_token = BearerToken::admin(&pool).await?;
        Ok(Self {
            url: url.to_owned(),
            pool,
            admin_token,
            cluster: None,
        })
    }

    /// A fresh database on the Citus cluster `coordinator_url` is the coordinator of (a superuser
    /// URL of a database with the workers registered), migrated and distributed by site as
    /// `plume migrate --citus` does; left in place when closed.
    pub async fn on_citus(coordinator_url: &str, pool: &PoolSettings) -> anyhow::Result<Self> {
        let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let url = db::citus::create_database(coordinator_url, &name).await?;
        migrate::run(&url)
            .await
            .context("migrating the benchmark database")?;
        let owner = db::connect_plain(&url).await?;
        partitioning::ensure_window_covered(&owner, Default::default(), chrono::Utc::now()).await?;
        let distributed = db::citus::distribute(&owner).await;
        owner.close().await;
        distributed?;
        Self::existing(&url, pool).await
    }

    /// The URL of another fresh, migrated database on the same server.
    pub async fn on_same_server(&self) -> anyhow::Result<String> {
        let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
        db::create_database_if_missing(&self.url, &name).await?;
        // The query string (`?sslmode=disable` on Citus) is kept.
        let url = db::with_database(&self.url, &name);
        migrate::run(&url)
            .await
            .context("migrating the baseline database")?;
        Ok(url)
    }

    /// Closes the pool and stops the private cluster, removing its files.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some((cluster, dir)) = self.cluster {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
            drop(dir);
        }
    }
}

/// The secret the benchmarks sign and verify with.
pub const SECRET: &[u8] = b"bench-webhook-signing-secret-of-32-bytes";

#[derive(Debug, Default)]
struct Counts {
    received: AtomicU64,
    bad_signatures: AtomicU64,
    ids: Mutex<HashSet<String>>,
}

/// A webhook receiver that verifies each signature, remembers each event id and answers 200 at once.
#[derive(Debug)]
pub struct Receiver {
    /// Where it listens.
    pub url: reqwest::Url,
    counts: Arc<Counts>,
    shutdown: CancellationToken,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/alerts", listener.local_addr()?).parse()?;
        let counts = Arc::new(Counts::default());
        let shutdown = CancellationToken::new();
        let app = Router::new()
            .route("/alerts", post(receive))
            .with_state(counts.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            url,
            counts,
            shutdown,
        })
    }

    /// Requests received.
    pub fn received(&self) -> u64 {
        self.counts.received.load(Ordering::Relaxed)
    }

    /// Distinct event ids received.
    pub fn distinct(&self) -> usize {
        self.counts.ids.lock().unwrap().len()
    }

    /// Requests whose signature did not verify.
    pub fn bad_signatures(&self) -> u64 {
        self.counts.bad_signatures.load(Ordering::Relaxed)
    }

    /// Forgets what was received.
    pub fn reset(&self) {
        self.counts.received.store(0, Ordering::Relaxed);
        self.counts.ids.lock().unwrap().clear();
    }

    /// Waits until `expected` requests arrived, or `timeout`; returns whether they did.
    pub async fn wait_for(&self, expected: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.received() < expected {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn receive(State(counts): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    if !sink::verify(SECRET, &body, header(sink::SIGNATURE_HEADER)) {
        counts.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    counts
        .ids
        .lock()
        .unwrap()
        .insert(header(sink::EVENT_ID_HEADER).to_owned());
    counts.received.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

/// A relay as `plume serve` runs it (default pacing, a pool of its own) delivering signed events to
/// `receiver`, `concurrency` sites at a time, sharing `state`'s metrics and wake-ups.
pub async fn relay_to(
    db: &BenchDatabase,
    receiver: &Receiver,
    state: &AppState,
    concurrency: usize,
) -> anyhow::Result<Relay<WebhookSink>> {
    let config = RelayConfig {
        concurrency,
        ..RelayConfig::default()
    };
    let sink = WebhookSink::new(vec![receiver.url.clone()], SECRET, config.delivery_timeout)?;
    let pool = PoolSettings {
        max_connections: relay::POOL_CONNECTIONS,
        ..PoolSettings::default()
    };
    let pool = db::connect(&db.url, &pool).await?;
    Ok(Relay::new(
        pool,
        sink,
        config,
        state.metrics.clone(),
        state.outbox_wake.clone(),
    ))
}

/// Serves plume's HTTP API over `state` on a free loopback port until `shutdown`, with its relay
/// delivering to `receiver`; returns the base URL.
pub async fn start_service(
    db: &BenchDatabase,
    state: &AppState,
    receiver: &Receiver,
    shutdown: &CancellationToken,
) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    tokio::spawn(plume::http::serve(listener, state.clone(), shutdown.clone()));
    let relay = relay_to(db, receiver, state, RelayConfig::default().concurrency).await?;
    tokio::spawn(relay.run(shutdown.clone()));
    Ok(address)
}

/// The nearest-rank `p` percentile (0 < p ≤ 1) of `sorted`, which must not be empty.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `count / seconds`, rounded.
pub fn rate(count: u64, elapsed: Duration) -> u64 {
    (count as f64 / elapsed.as_secs_f64()).round() as u64
}
