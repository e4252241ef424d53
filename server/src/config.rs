//! Command-line and environment configuration: one `clap` parser, whose doc comments are `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use partitioning::AcceptedWindow;

use crate::db::{DatabaseSource, PoolSettings};
use crate::state::Settings;

/// plume: exact, retry-safe storage for methane emission readings.
///
/// Without DATABASE_URL, plume runs its own PostgreSQL 15 cluster (with pg_partman) under
/// --data-dir, from the PostgreSQL binaries installed on this machine.
#[derive(Debug, Parser)]
#[command(name = "plume", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "PLUME_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (migrating first; with the embedded database, seeding demo data on first start).
    Serve(ServeArgs),
    /// Apply pending database migrations and create the partitions the accepted window needs, then exit.
    Migrate(MigrateArgs),
    /// Load data into the database.
    Seed(SeedArgs),
}

/// How to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (the database needs the pg_partman extension available). Without it, plume
    /// runs its own PostgreSQL under --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory of the embedded PostgreSQL cluster (used only without --database-url).
    #[arg(long, env = "PLUME_DATA_DIR", default_value = ".plume")]
    pub data_dir: PathBuf,
    /// Most database connections held open.
    #[arg(long, env = "PLUME_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Seconds a request waits for a free connection before answering 503.
    #[arg(long, env = "PLUME_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 5)]
    pub db_acquire_timeout_secs: u64,
}

impl DatabaseArgs {
    /// The database to use.
    pub fn source(&self) -> DatabaseSource {
        match &self.database_url {
            Some(url) if !url.is_empty() => DatabaseSource::Url(url.clone()),
            _ => DatabaseSource::Embedded(self.data_dir.clone()),
        }
    }

    /// Pool settings.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.db_max_connections.max(1),
            acquire_timeout: Duration::from_secs(self.db_acquire_timeout_secs),
        }
    }
}

/// Which readings are accepted.
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// How many days back a reading's timestamp may be. Every month of that window gets a partition.
    #[arg(long, env = "PLUME_ACCEPTED_WINDOW_DAYS", default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub accepted_window_days: u32,
}

impl WindowArgs {
    /// The accepted window (readings up to 24 hours ahead are always accepted).
    pub fn window(&self) -> AcceptedWindow {
        AcceptedWindow {
            max_age: chrono::Duration::days(i64::from(self.accepted_window_days)),
            ..AcceptedWindow::default()
        }
    }
}

/// `plume serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PLUME_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, env = "PLUME_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Do not load the demo data (otherwise loaded when the embedded database has no sites yet).
    #[arg(long, env = "PLUME_NO_DEMO")]
    pub no_demo: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub window: WindowArgs,
}

impl ServeArgs {
    /// The handlers' settings.
    pub fn settings(&self) -> Settings {
        Settings {
            window: self.window.window(),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// `plume migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// `plume seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Load the demo sites and their readings (idempotent: sites that exist by name are skipped).
    #[arg(long, required = true)]
    pub demo: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub window: WindowArgs,
}
