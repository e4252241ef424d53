//! plume: exact, retry-safe time-series storage for methane emission readings.
//!
//! Sensors post batches of readings; each batch is stored in one transaction, deduplicated by the
//! reading identity (site, source, time), and moves its site's running total by exactly what was
//! newly stored. The modules follow the system's seams:
//!
//! - [`auth`]: clients, tokens, sessions, the rule each route declares, per-client limits, audit;
//! - [`http`]: the HTTP API, one module per endpoint group, and its JSON envelope;
//! - [`ingest`]: the batch command, its validation and the transactional processor;
//! - [`sites`]: sites, their totals and compliance status;
//! - [`changes`]: the change feed and long polls that wake across processes;
//! - [`query`]: the read side for data teams: series from the rollups, reading pages, exports;
//! - [`outbox`]: events for the alerting service, written in the ingest transaction, and their relay;
//! - [`db`]: the connection pool, the embedded PostgreSQL cluster and migrations;
//! - [`quantity`]: exact milligram arithmetic, from JSON text to database and back;
//! - [`sql_access`]: login roles for Grafana and BI tools that read the `plume_sql` views only;
//! - [`config`], [`commands`], [`seed`], [`metrics`], [`state`], [`error`], [`text`].

pub mod auth;
pub mod changes;
pub mod commands;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod quantity;
pub mod query;
pub mod seed;
pub mod sites;
pub mod sql_access;
pub mod state;
pub mod text;

/// Sets up `tracing`: text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(format: config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Text => builder.try_init(),
        config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
