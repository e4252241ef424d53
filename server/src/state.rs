//! The state every handler shares: the pool, the service settings and the metrics.

use std::sync::Arc;

use partitioning::AcceptedWindow;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};

use crate::auth::cache::{Auth, AuthSettings};
use crate::changes::{ChangeHub, ChangeSignal};
use crate::db::citus::Topology;
use crate::http::health::{GaugeCache, ReadyCache};
use crate::http::server::ServeLimits;
use crate::ingest::group::GroupCommitter;
use crate::metrics::Metrics;
use crate::query::export::ExportLimits;

/// Settings the request handlers need, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which reading timestamps are accepted.
    pub window: AcceptedWindow,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The largest v2 bulk body accepted, in bytes.
    pub max_bulk_body_bytes: usize,
    /// The memory all bulk requests in flight may reserve together, in bytes (each reserves
    /// [`crate::http::bulk::RESERVED_PER_BODY_BYTE`] times its body); beyond it, 503 with
    /// `Retry-After`.
    pub bulk_memory_bytes: usize,
    /// The most long polls waiting at once; more get 503.
    pub max_waiters: usize,
    /// How v1 batches are grouped into transactions ([`crate::ingest::group`]).
    pub group: crate::ingest::group::GroupSettings,
    /// Whether requests authenticate, and how dashboard sessions last.
    pub auth: AuthSettings,
    /// Connection and request bounds of the listener.
    pub limits: ServeLimits,
    /// The `Host` names requests may carry (any when `None`).
    pub allowed_hosts: Option<Vec<String>>,
    /// How long and how slowly an export may run.
    pub exports: ExportLimits,
    /// The kind of database served: on Citus, v1 batches are grouped by site only, and the change
    /// feed is off.
    pub topology: Topology,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            window: AcceptedWindow::default(),
            max_body_bytes: 1024 * 1024,
            max_bulk_body_bytes: 32 * 1024 * 1024,
            bulk_memory_bytes: 512 * 1024 * 1024,
            max_waiters: 10_000,
            group: crate::ingest::group::GroupSettings::default(),
            auth: AuthSettings::default(),
            limits: ServeLimits::default(),
            allowed_hosts: None,
            exports: ExportLimits::default(),
            topology: Topology::Single,
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
    /// Told after every commit that changed sites.
    pub change_signal: ChangeSignal,
    /// Where v1 batches are stored, several to a transaction when they arrive together.
    pub committer: GroupCommitter,
    /// The change feed and its long polls.
    pub changes: ChangeHub,
    /// Authentication: the cache of tokens and sessions.
    pub auth: Auth,
    /// `/ready`'s latest answer.
    pub ready: Arc<ReadyCache>,
    /// `/metrics`' latest database gauges.
    pub gauges: Arc<GaugeCache>,
    /// Permits for the exports running at once ([`crate::query::export::MAX_CONCURRENT_EXPORTS`]).
    pub exports: Arc<Semaphore>,
    /// The memory budget of bulk requests in flight, a permit a KiB.
    pub bulk_memory: Arc<Semaphore>,
}

impl AppState {
    /// State over `pool` with `settings` and fresh metrics; starts the group committer's workers
    /// and the change feed's tasks (so it must be called inside a Tokio runtime).
    pub fn new(pool: PgPool, mut settings: Settings) -> Self {
        if settings.topology == Topology::Citus {
            settings.group = settings.group.for_citus();
        }
        let metrics = Arc::new(Metrics::default());
        let signal = ChangeSignal::default();
        let auth = Auth::start(pool.clone(), settings.auth.clone());
        let settings_bulk_memory = settings.bulk_memory_bytes;
        let changes = ChangeHub::start(
            pool.clone(),
            settings.topology,
            signal.clone(),
            settings.max_waiters,
            auth.clone(),
        );
        Self {
            changes,
            auth,
            ready: Arc::default(),
            gauges: Arc::default(),
            committer: GroupCommitter::start(pool.clone(), metrics.clone(), signal.clone(), settings.group),
            change_signal: signal,
            pool,
            settings: Arc::new(settings),
            metrics,
            outbox_wake: Arc::new(Notify::new()),
            exports: Arc::new(Semaphore::new(crate::query::export::MAX_CONCURRENT_EXPORTS)),
            bulk_memory: Arc::new(Semaphore::new((settings_bulk_memory / 1024).max(1))),
        }
    }
}
