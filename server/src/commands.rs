//! What each subcommand does, start to finish. `main` only parses arguments and picks one.

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{MigrateArgs, SeedArgs, ServeArgs, WindowArgs};
use crate::db::Database;
use crate::state::AppState;
use crate::{http, seed};

/// `plume serve`: open (or start) the database, migrate, seed a new embedded database, serve until
/// `shutdown`, then stop everything in order.
pub async fn serve(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
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
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "plume is serving");
    let state = AppState::new(database.pool.clone(), args.settings());
    http::serve(listener, state, shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("plume stopped serving");
    Ok(())
}

/// `plume migrate`.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let database = open(&args.database, &args.window).await?;
    database.close().await;
    println!("database is migrated and its partitions cover the accepted window");
    Ok(())
}

/// `plume seed --demo`.
pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let database = open(&args.database, &args.window).await?;
    let result = seed::seed_demo(&database.pool, chrono::Utc::now()).await;
    database.close().await;
    let report = result?;
    println!(
        "demo data: {} sites created, {} already present, {} readings stored",
        report.sites_created, report.sites_skipped, report.readings_stored
    );
    Ok(())
}

/// Opens and migrates the database, then makes sure every month of the accepted window has a partition.
async fn open(database: &crate::config::DatabaseArgs, window: &WindowArgs) -> anyhow::Result<Database> {
    let db = Database::open(&database.source(), &database.pool_settings()).await?;
    if let Err(error) =
        partitioning::ensure_window_covered(&db.pool, window.window(), chrono::Utc::now()).await
    {
        db.close().await;
        return Err(error).context("creating partitions for the accepted window");
    }
    Ok(db)
}
