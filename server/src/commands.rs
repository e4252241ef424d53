//! What each subcommand does, start to finish. `main` only parses arguments and picks one.

pub mod partitions;
pub mod sql_access;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use partitioning::maintenance::MaintenanceJob;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::cache::AuthMode;
use crate::auth::store;
use crate::config::{
    maintenance_settings, DatabaseArgs, MigrateArgs, OutboxStatusArgs, RelayArgs, RelayCommandArgs,
    RetryDeadArgs, SeedArgs, ServeArgs, WindowArgs,
};
use crate::db::{self, Database};
use crate::metrics::Metrics;
use crate::outbox::admin::Requeue;
use crate::outbox::housekeeping::Housekeeping;
use crate::outbox::relay::Relay;
use crate::outbox::sink::LogSink;
use crate::state::{AppState, Settings};
use crate::{changes, http, outbox, seed};

/// Time between outbox housekeeping passes (premaking days ahead, dropping delivered days).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// `plume serve`: open (or start) the database, migrate, seed a new embedded database, serve until
/// `shutdown`, then stop everything in order.
pub async fn serve(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A bad webhook configuration is refused before anything starts.
    args.relay.webhook_sink()?;
    let database = open(&args.database, &args.window).await?;
    let result = serve_on(&database, &args, shutdown).await;
    database.close().await;
    result
}

async fn serve_on(database: &Database, args: &ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if database.is_embedded() && !args.no_demo {
        let empty = sqlx::query_scalar!(r#"select not exists (select 1 from sites) as "empty!""#)
            .fetch_one(&database.pool)
            .await?;
        if empty {
            seed::seed_demo(&database.pool, chrono::Utc::now())
                .await
                .context("seeding demo data")?;
        }
    }
    http::server::raise_open_file_limit();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "plume is serving");
    let mut settings = args.settings();
    settings.topology = db::citus::Topology::detect(&database.pool)
        .await
        .context("finding out whether the database is a Citus coordinator")?;
    if settings.topology == db::citus::Topology::Citus {
        tracing::info!("serving a Citus coordinator: tables distributed by site; each transaction holds one site's batches; the change feed reads its copy of the sites on the coordinator");
        let copied = crate::changes::mirror::reconcile(&database.pool)
            .await
            .context("bringing the change feed's copy of the sites up to date")?;
        if copied > 0 {
            tracing::info!(
                sites = copied,
                "the change feed's copy of the sites was behind: brought up to date"
            );
        }
    }
    // Readings for retired months are refused at the edge (422), like any outside the window.
    settings.window.not_before = partitioning::history(&database.pool).await?.retired_before;
    let state = AppState::new(database.pool.clone(), settings);
    match args.auth.mode {
        AuthMode::Off => {
            tracing::warn!("AUTHENTICATION IS OFF (--auth off): anyone who reaches {address} acts as an admin; for local experiments only");
        }
        AuthMode::Enforce if database.is_embedded() => {
            print_sign_in(&database.pool, address, &args.database).await?
        }
        AuthMode::Enforce => {}
    }
    if let Some(ops) = args.auth.ops_listen {
        let listener = TcpListener::bind(ops)
            .await
            .with_context(|| format!("listening on {ops} (--ops-listen)"))?;
        tracing::info!(address = %listener.local_addr()?, "serving /health, /ready and /metrics without tokens");
        let (router, closing) = (http::operations_app(state.clone()), shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = http::serve_router(listener, router, closing).await {
                tracing::error!(%error, "the --ops-listen listener failed");
            }
        });
    }
    tokio::spawn(housekeeping(
        database.pool.clone(),
        Retention {
            audit: chrono::Duration::days(i64::from(args.auth.audit_retention_days)),
            receipts: Duration::from_secs(u64::from(args.auth.receipt_retention_days) * 86_400),
        },
        state.metrics.clone(),
        shutdown.clone(),
    ));
    let maintenance =
        (!args.no_maintenance).then(|| spawn_maintenance(database, args, &state, shutdown.clone()));
    let background = if args.no_relay {
        None
    } else {
        Some(spawn_outbox(database, &args.relay, &state, shutdown.clone()).await?)
    };
    let served = http::serve(listener, state, shutdown.clone())
        .await
        .context("serving HTTP");
    // Whatever ended serving, the relay stops too; it finishes the deliveries under way first.
    shutdown.cancel();
    if let Some(background) = background {
        background.wait().await;
    }
    if let Some(job) = maintenance {
        if let Err(error) = job.await {
            tracing::error!(%error, "the partition maintenance job panicked");
        }
    }
    tracing::info!("plume stopped serving");
    served
}

/// How long a printed sign-in link works.
const SIGN_IN_LINK_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// On the embedded database: a one-time sign-in link for the dashboard (creating the `admin`
/// client on first start), printed to standard output (never to the log), and how to mint tokens.
async fn print_sign_in(
    pool: &PgPool,
    address: std::net::SocketAddr,
    database: &DatabaseArgs,
) -> anyhow::Result<()> {
    let expires_at = chrono::Utc::now() + SIGN_IN_LINK_LIFETIME;
    let token = store::sign_in_token(pool, expires_at)
        .await
        .context("creating a dashboard sign-in link")?;
    let data_dir = database.data_dir.display();
    let host = if address.ip().is_unspecified() {
        format!("127.0.0.1:{}", address.port())
    } else {
        address.to_string()
    };
    match token {
        Some(token) => println!(
            "\nSign in to the dashboard (this link works once, for an hour):\n  http://{host}/#sign-in={}\n",
            token.text
        ),
        None => println!("\nNo sign-in link: the admin client is gone. Mint a token to sign in with:"),
    }
    println!(
        "Tokens for sensors, viewers and scripts:\n  PLUME_DATA_DIR={data_dir} plume tokens create --kind ingest --name sensor-1 --site 1\n  PLUME_DATA_DIR={data_dir} plume tokens create --kind admin --name you\n"
    );
    Ok(())
}

/// Time between passes of the housekeeping of receipts, the audit trail and sessions.
const HOUSEKEEPING_PASS_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// How long receipts and audit rows are kept.
#[derive(Debug, Clone, Copy)]
struct Retention {
    audit: chrono::Duration,
    receipts: Duration,
}

/// Deletes receipts past the replay window, old audit rows, ended sessions and expired sign-in
/// links, now and every [`HOUSEKEEPING_PASS_INTERVAL`], so none of those tables grows without bound.
async fn housekeeping(
    pool: PgPool,
    retention: Retention,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        match store::delete_expired(&pool, retention.audit).await {
            Ok(deleted) if deleted > 0 => {
                tracing::info!(deleted, "deleted old audit rows, sessions and sign-in links")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "auth housekeeping failed; retrying at the next pass"),
        }
        match crate::ingest::receipts::prune(&pool, retention.receipts).await {
            Ok(deleted) => {
                metrics
                    .receipts_pruned
                    .fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
                if deleted > 0 {
                    tracing::info!(deleted, "deleted receipts past the replay window");
                }
            }
            Err(error) => tracing::warn!(%error, "pruning receipts failed; retrying at the next pass"),
        }
        tokio::select! {
            () = tokio::time::sleep(HOUSEKEEPING_PASS_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Starts the partition maintenance job: now, then every `--maintenance-interval`.
fn spawn_maintenance(
    database: &Database,
    args: &ServeArgs,
    state: &AppState,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let job = MaintenanceJob {
        pool: database.owner.clone(),
        settings: maintenance_settings(&args.window, &args.retention),
        interval: args.maintenance_interval,
        stats: state.metrics.maintenance.clone(),
    };
    tokio::spawn(job.run(shutdown))
}

/// The outbox relay and its housekeeping, running in the background on a pool of their own.
struct OutboxJobs {
    relay: JoinHandle<()>,
    housekeeping: JoinHandle<()>,
    pool: PgPool,
}

impl OutboxJobs {
    /// Waits for both jobs to stop (they stop on the shutdown token), then closes their pool.
    async fn wait(self) {
        for job in [self.relay, self.housekeeping] {
            if let Err(error) = job.await {
                tracing::error!(%error, "an outbox job panicked");
            }
        }
        self.pool.close().await;
    }
}

/// Starts the relay (webhook sink if configured, else the log sink) and its housekeeping. The relay
/// gets a small pool of its own, so deliveries never wait behind ingestion for a connection, nor
/// ingestion behind them; the housekeeping (daily partitions: DDL) runs on the owner's pool.
async fn spawn_outbox(
    database: &Database,
    args: &RelayArgs,
    state: &AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<OutboxJobs> {
    let config = args.relay_config();
    let sink = args.webhook_sink()?;
    // Found here, not taken from the settings: `plume relay` serves no ingestion and is given none.
    let topology = db::citus::Topology::detect(&database.pool).await?;
    let pool = db::connect(&database.url, &outbox::relay::pool_settings(topology))
        .await
        .context("connecting the outbox relay to the database")?;
    let (metrics, wake) = (state.metrics.clone(), state.outbox_wake.clone());
    let relay = match sink {
        Some(sink) => {
            let urls: Vec<String> = args
                .webhook_urls
                .iter()
                .map(crate::outbox::sink::redacted)
                .collect();
            tracing::info!(?urls, "outbox events go to the alerting webhook");
            let relay = Relay::new(pool.clone(), sink, config, metrics, wake);
            tokio::spawn(relay.run(shutdown.clone()))
        }
        None => {
            tracing::info!("no --alert-webhook-url: outbox events are delivered to the log");
            let relay = Relay::new(pool.clone(), LogSink, config, metrics, wake);
            tokio::spawn(relay.run(shutdown.clone()))
        }
    };
    let housekeeping = Housekeeping {
        pool: database.owner.clone(),
        retention: args.retention(),
        interval: HOUSEKEEPING_INTERVAL,
    };
    Ok(OutboxJobs {
        relay,
        housekeeping: tokio::spawn(housekeeping.run(shutdown)),
        pool,
    })
}

/// `plume relay`: the relay and its housekeeping only (and, with `--listen`, the operational
/// endpoints), until `shutdown`.
pub async fn relay(args: RelayCommandArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    args.relay.webhook_sink()?;
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let result = relay_on(&database, &args, shutdown).await;
    database.close().await;
    result
}

async fn relay_on(
    database: &Database,
    args: &RelayCommandArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState::new(database.pool.clone(), Settings::default());
    // This process serves no long polls.
    state.changes.close();
    let listener = match args.listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("listening on {address}"))?,
        ),
        None => None,
    };
    let jobs = spawn_outbox(database, &args.relay, &state, shutdown.clone()).await?;
    let served = match listener {
        Some(listener) => {
            tracing::info!(address = %listener.local_addr()?, "serving /health, /ready and /metrics");
            http::serve_router(listener, http::operations_app(state), shutdown.clone())
                .await
                .context("serving HTTP")
        }
        None => Ok(()),
    };
    if served.is_err() {
        shutdown.cancel();
    }
    jobs.wait().await;
    served
}

/// `plume outbox status`.
pub async fn outbox_status(args: OutboxStatusArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let result = async {
        let status = outbox::admin::status(&database.pool).await?;
        let dead = outbox::admin::dead_events(&database.pool, 50).await?;
        anyhow::Ok((status, dead))
    }
    .await;
    database.close().await;
    let (status, dead) = result.context("reading the outbox status")?;
    if args.json {
        let report = serde_json::json!({ "status": status, "dead_events": dead });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", outbox::report::status_table(&status, &dead));
    }
    Ok(())
}

/// `plume outbox retry-dead`.
pub async fn outbox_retry_dead(args: RetryDeadArgs) -> anyhow::Result<()> {
    let which = match args.event {
        Some(id) => Requeue::Event(id),
        None => Requeue::All,
    };
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let result = outbox::admin::retry_dead(&database.pool, which).await;
    database.close().await;
    let requeued = result.context("re-queueing dead events")?;
    match (which, requeued) {
        (Requeue::Event(id), 0) => anyhow::bail!("no dead-lettered event has id {id}"),
        _ => println!(
            "{requeued} dead event(s) re-queued; they will be delivered again with their original ids"
        ),
    }
    Ok(())
}

/// `plume migrate`, and with `--grant-app-role`, the grants of the service's role.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let database = open(&args.database, &args.window).await?;
    let granted = match &args.grant_app_role {
        Some(role) => db::roles::grant(&database.owner, role)
            .await
            .with_context(|| format!("granting {role} the application's privileges"))
            .map(|()| Some(role)),
        None => Ok(None),
    };
    let distributed = match (args.citus, &granted) {
        (true, Ok(_)) => Some(db::citus::distribute(&database.owner).await),
        _ => None,
    };
    database.close().await;
    println!("database is migrated and its partitions cover the accepted window");
    if let Some(distributed) = distributed {
        let distributed = distributed.context("distributing the tables over the Citus cluster")?;
        println!(
            "distributed by site over {} Citus worker(s): {} table(s) now, {} already",
            distributed.workers,
            distributed.tables.len(),
            distributed.already.len()
        );
    }
    if let Some(role) = granted? {
        println!("{role} may now read and write plume's rows, and do nothing else: serve with {role} in DATABASE_URL, and this command's URL as --owner-database-url");
    }
    Ok(())
}

/// `plume seed --demo` or `plume seed --synthetic ...`.
pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    if args.synthetic {
        return seed_synthetic(args).await;
    }
    let database = open(&args.database, &args.window).await?;
    let result = seed::seed_demo(&database.pool, chrono::Utc::now()).await;
    announce_changes(&database.pool).await;
    database.close().await;
    let report = result?;
    println!(
        "demo data: {} sites created, {} already present, {} readings stored",
        report.sites_created, report.sites_skipped, report.readings_stored
    );
    Ok(())
}

/// Wakes the long polls of running plume processes, which would otherwise see the new sites only at
/// their next notification or timeout.
async fn announce_changes(pool: &PgPool) {
    if let Err(error) = changes::announce(pool).await {
        tracing::warn!(%error, "could not notify running plume processes of the new data");
    }
}

/// `plume seed --synthetic`: generates and loads the plan, with progress on stderr.
async fn seed_synthetic(mut args: SeedArgs) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let plan = args.synthetic_plan.plan(now);
    plan.check().map_err(anyhow::Error::msg)?;
    // The same bound as the API's accepted window.
    anyhow::ensure!(
        plan.to <= args.window.window().latest(now),
        "--to is ahead of --max-future-skew: readings cannot come from the future"
    );
    let jobs = args.synthetic_plan.jobs();
    // One connection per loader, and spares for the queries before and after them.
    args.database.db_max_connections = args.database.db_max_connections.max(jobs as u32 + 2);
    let database = open(&args.database, &args.window).await?;
    eprintln!(
        "seeding {} sites × {} readings ({} sources each) from {} to {}, seed {}, {jobs} at a time",
        plan.sites, plan.readings_per_site, plan.sources, plan.from, plan.to, plan.seed
    );
    let mut reporter = None;
    let result = seeds::load::load(&database.owner, &plan, jobs, |progress| {
        reporter = Some((progress.clone(), progress.report()));
    })
    .await;
    if let Some((progress, task)) = reporter {
        task.abort();
        progress.finish_line();
    }
    announce_changes(&database.pool).await;
    database.close().await;
    let report = result.context("loading synthetic data (sites already committed are whole; run the same command again to add the rest)")?;
    let seconds = report.load_time.as_secs_f64().max(1e-3);
    println!(
        "synthetic data, seed {}: {} sites created ({} over their limit), {} already present, \
         {} readings stored in {:.1} s ({:.0} readings/s)",
        plan.seed,
        report.sites_created,
        report.sites_over_limit,
        report.sites_present,
        report.readings_stored,
        seconds,
        report.readings_stored as f64 / seconds,
    );
    Ok(())
}

/// Opens and migrates the database, then makes sure every month of the accepted window has a partition.
async fn open(database: &crate::config::DatabaseArgs, window: &WindowArgs) -> anyhow::Result<Database> {
    let db = Database::open(&database.source()?, &database.pool_settings()).await?;
    if let Err(error) =
        partitioning::ensure_window_covered(&db.owner, window.window(), chrono::Utc::now()).await
    {
        db.close().await;
        return Err(error).context("creating partitions for the accepted window");
    }
    Ok(db)
}
