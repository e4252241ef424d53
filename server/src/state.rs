//! The state every handler shares: the pool, the service settings and the metrics.

use std::sync::Arc;

use partitioning::AcceptedWindow;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};

use crate::ingest::group::GroupCommitter;
use crate::metrics::Metrics;

/// Settings the request handlers need, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which reading timestamps are accepted.
    pub window: AcceptedWindow,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The largest v2 bulk body accepted, in bytes.
    pub max_bulk_body_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            window: AcceptedWindow::default(),
            max_body_bytes: 1024 * 1024,
            max_bulk_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Cheap to clone: everything inside is shared.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// Fixed settings.
    pub settings: Arc<Settings>,
    /// Counters exported on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Woken after a commit that wrote outbox events, so this process's relay sends them at once.
    pub outbox_wake: Arc<Notify>,
    /// Where v1 batches are stored, several to a transaction when they arrive together.
    pub committer: GroupCommitter,
    /// Permits for the exports running at once ([`crate::query::export::MAX_CONCURRENT_EXPORTS`]).
    pub exports: Arc<Semaphore>,
}

impl AppState {
    /// State over `pool` with `settings` and fresh metrics; starts the group committer's workers
    /// (so it must be called inside a Tokio runtime).
    pub fn new(pool: PgPool, settings: Settings) -> Self {
        let metrics = Arc::new(Metrics::default());
        Self {
            committer: GroupCommitter::start(pool.clone(), metrics.clone()),
            pool,
            settings: Arc::new(settings),
            metrics,
            outbox_wake: Arc::new(Notify::new()),
            exports: Arc::new(Semaphore::new(crate::query::export::MAX_CONCURRENT_EXPORTS)),
        }
    }
}
