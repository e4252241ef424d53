//! The relay: delivers every site's events in order, shared safely by any number of plume instances.
//!
//! A relay claims *streams* (one per site) rather than single events: `for update skip locked` picks
//! streams with undelivered events that no live lease holds and whose retry time has come, and
//! stamps them with this relay's id and a lease. It then delivers the stream's claimed events one
//! after another, in sequence order, and writes back how far it got, releasing the lease.
//!
//! - **Per-site order**: only the lease holder delivers a site's events, in sequence order, and
//!   stops at the first failure; the next attempt starts from that event.
//! - **Isolation**: a failing site backs off on its own stream; other streams keep flowing.
//! - **Fairness**: ready streams are claimed least recently served first (`next_attempt_at` is set
//!   to the release time), so under overload every site still gets its turn.
//! - **No two relays at once**: a relay starts a delivery only while there is time left in its lease
//!   for that delivery and the write-back (twice `delivery_timeout`), so a lease does not end while
//!   its holder is still delivering; and each claim has its own lease token, so a late write-back
//!   from an expired claim changes nothing, even when the same relay has claimed the stream again.
//! - **Crashes**: a dead relay's lease expires and another relay takes the stream over from its
//!   cursor; events delivered but not yet written back are delivered again, same `event_id`.
//! - **Dead letters**: after `max_attempts` failed attempts, or once an event is older than
//!   `max_age`, it is copied to `outbox_dead` (kept, re-queueable) and the stream moves on.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sink::{Delivery, DeliveryError, Sink};
use super::streams::{self, Claim, Release};
use super::StoredEvent;
use crate::db::citus::Topology;
use crate::db::PoolSettings;
use crate::metrics::Metrics;

/// Connections of the relay's own pool (with its housekeeping): it holds one only to claim, read
/// and write back, never while a webhook answers.
pub const POOL_CONNECTIONS: u32 = 8;

/// The least time between two claims on Citus. Each claim first reads the ready streams of every
/// shard (about 14 ms of the coordinator's time on the benchmark box), and a relay woken by every
/// commit and every finished delivery would claim dozens of times a second; this bounds it to ten,
/// at the cost of up to 100 ms more before an event is delivered.
pub const CITUS_CLAIM_GAP: Duration = Duration::from_millis(100);

/// The relay's own pool on a database of `topology`: [`POOL_CONNECTIONS`] connections, and generic
/// plans on one node only. The read of a stream's events bounds the log's daily partitions by a
/// parameter, which a generic plan prunes once; Citus cannot plan its multi-shard read of ready
/// streams generically ("could not create distributed plan"), so there every statement is
/// planned for its parameters.
pub fn pool_settings(topology: Topology) -> PoolSettings {
    PoolSettings {
        max_connections: POOL_CONNECTIONS,
        acquire_timeout: Duration::from_secs(30),
        generic_plans: topology == Topology::Single,
        ..PoolSettings::default()
    }
}

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Streams (sites) delivered at the same time.
    pub concurrency: usize,
    /// Most events taken from one stream per claim.
    pub batch_size: i64,
    /// How long a claim is exclusive. Must exceed `delivery_timeout`.
    pub lease: Duration,
    /// The longest one delivery may take (the sink's own timeout).
    pub delivery_timeout: Duration,
    /// How often to look for work when nothing wakes the relay.
    pub poll_interval: Duration,
    /// The first retry's delay; doubled on every further failure, with jitter.
    pub backoff_base: Duration,
    /// The longest delay between retries.
    pub backoff_max: Duration,
    /// Failed attempts after which an event is dead-lettered.
    pub max_attempts: u32,
    /// Age after which an event that still fails is dead-lettered.
    pub max_age: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            batch_size: 100,
            lease: Duration::from_secs(60),
            delivery_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(250),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_attempts: 15,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl RelayConfig {
    /// The delay before attempt `failed + 1`: `backoff_base * 2^(failed-1)`, capped at
    /// `backoff_max`, then jittered to between half and all of it so retries spread out.
    pub fn backoff(&self, failed: u32) -> Duration {
        let doubling = 2u32.saturating_pow(failed.saturating_sub(1));
        let full = self.backoff_base.saturating_mul(doubling).min(self.backoff_max);
        full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }
}

/// What one round of [`Relay::run_once`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    /// Streams claimed.
    pub streams: usize,
    /// Events delivered.
    pub delivered: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
}

impl RoundReport {
    fn add(&mut self, other: &Self) {
        self.streams += other.streams;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.dead_lettered += other.dead_lettered;
    }
}

/// Delivers the outbox through a sink.
#[derive(Debug)]
pub struct Relay<S> {
    pool: PgPool,
    sink: Arc<S>,
    config: RelayConfig,
    metrics: Arc<Metrics>,
    /// Notified after a local commit wrote events, so they go out without waiting for a poll.
    wake: Arc<Notify>,
    /// The database's kind, found at the first claim: on Citus, streams are claimed one site (one
    /// shard) at a time.
    topology: OnceCell<Topology>,
}

impl<S: Sink> Relay<S> {
    /// A relay over `pool` delivering to `sink`. A lease shorter than three delivery timeouts is
    /// lengthened to that: a delivery only starts with two timeouts of lease left.
    pub fn new(
        pool: PgPool,
        sink: S,
        mut config: RelayConfig,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Self {
        config.lease = config.lease.max(config.delivery_timeout * 3);
        Self {
            pool,
            sink: Arc::new(sink),
            config,
            metrics,
            wake,
            topology: OnceCell::new(),
        }
    }

    /// Delivers until `shutdown`, then finishes the deliveries under way (each stops after its
    /// current event) and releases their streams.
    pub async fn run(self, shutdown: CancellationToken) {
        let relay = Arc::new(self);
        let mut deliveries = JoinSet::new();
        let mut last_claim = Instant::now();
        tracing::info!(concurrency = relay.config.concurrency, "outbox relay started");
        while !shutdown.is_cancelled() {
            while let Some(finished) = deliveries.try_join_next() {
                if let Err(error) = finished {
                    tracing::error!(%error, "an outbox delivery task failed");
                }
            }
            let free = relay.config.concurrency.saturating_sub(deliveries.len());
            let mut claimed = 0;
            if free > 0 {
                let gap = relay.claim_gap().saturating_sub(last_claim.elapsed());
                if !gap.is_zero() {
                    tokio::select! {
                        _ = shutdown.cancelled() => continue,
                        _ = tokio::time::sleep(gap) => {}
                    }
                }
                last_claim = Instant::now();
                match relay.claim(free).await {
                    Ok(claims) => {
                        claimed = claims.len();
                        for claim in claims {
                            let (relay, shutdown) = (relay.clone(), shutdown.clone());
                            deliveries.spawn(async move { relay.deliver_stream(claim, &shutdown).await });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "claiming outbox streams failed; retrying"),
                }
            }
            if claimed > 0 && claimed == free {
                continue; // there may be more ready streams than free slots
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
                _ = relay.wake.notified() => {}
                _ = tokio::time::sleep(relay.config.poll_interval) => {}
            }
        }
        while deliveries.join_next().await.is_some() {}
        tracing::info!("outbox relay stopped");
    }

    /// Claims every ready stream (up to `concurrency`), delivers them at once and waits for all.
    pub async fn run_once(&self) -> Result<RoundReport, sqlx::Error> {
        let claims = self.claim(self.config.concurrency).await?;
        let never = CancellationToken::new();
        let rounds = claims.into_iter().map(|claim| self.deliver_stream(claim, &never));
        let mut report = RoundReport::default();
        for round in futures_util::future::join_all(rounds).await {
            report.add(&round);
        }
        Ok(report)
    }

    /// The least time between two claims: none on one node; [`CITUS_CLAIM_GAP`] on Citus, where a
    /// claim's read of ready streams crosses every shard.
    fn claim_gap(&self) -> Duration {
        match self.topology.get() {
            Some(Topology::Citus) => CITUS_CLAIM_GAP,
            Some(Topology::Single) | None => Duration::ZERO,
        }
    }

    /// Claims up to `limit` streams. When the claim fails, it may still have committed with its
    /// answer lost (a crash or a broken link right after the commit): the streams it took are
    /// released by its token, tried again like a write-back until the lease would have ended, so
    /// that they do not wait out their lease.
    async fn claim(&self, limit: usize) -> Result<Vec<Claim>, sqlx::Error> {
        let token = Uuid::new_v4();
        let lease_deadline = Instant::now() + self.config.lease;
        let (batch, lease) = (self.config.batch_size, self.config.lease);
        let topology = self
            .topology
            .get_or_try_init(|| Topology::detect(&self.pool))
            .await?;
        let claimed = match topology {
            Topology::Single => streams::claim(&self.pool, token, limit, batch, lease).await,
            Topology::Citus => streams::claim_by_site(&self.pool, token, limit, batch, lease).await,
        };
        let Err(error) = claimed else { return claimed };
        let released = until_deadline(lease_deadline, "releasing a failed claim's streams", || {
            streams::release_lost_claim(&self.pool, token)
        })
        .await;
        match released {
            Ok(0) => {}
            Ok(released) => tracing::warn!(released, "a failed claim had taken streams; released them"),
            Err(release_error) => {
                tracing::warn!(%release_error, "releasing a failed claim's streams failed; their lease will expire")
            }
        }
        Err(error)
    }

    /// Delivers a claimed stream's events in order until one fails, the lease runs short or
    /// shutdown; then writes back how far it got.
    #[tracing::instrument(skip_all, fields(site_id = claim.site_id, from = claim.delivered_seq + 1, to = claim.claimed_seq))]
    async fn deliver_stream(&self, claim: Claim, shutdown: &CancellationToken) -> RoundReport {
        let mut report = RoundReport {
            streams: 1,
            ..RoundReport::default()
        };
        let mut progress = Progress {
            delivered_seq: claim.delivered_seq,
            attempts: claim.attempts,
            failure: None,
        };
        let events = match streams::fetch(&self.pool, &claim).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "reading claimed events failed; releasing the stream");
                self.finish(&claim, progress, &mut report).await;
                return report;
            }
        };
        if events.is_empty() {
            // Only when someone dropped a day of the log by hand: the events are gone, and the
            // stream must not stay stuck on them.
            tracing::error!("claimed events are missing from the outbox; skipping them");
            progress.delivered_seq = claim.claimed_seq;
        }
        // Stop while there is time left for one more delivery and the write-back: the lease must
        // not end while this relay is still delivering.
        let last_start = claim.lease_deadline - self.config.delivery_timeout * 2;
        for event in events {
            if shutdown.is_cancelled() || Instant::now() >= last_start {
                break;
            }
            let delivery = Delivery::new(&event, progress.attempts as u32 + 1);
            match self.sink.deliver(&delivery).await {
                Ok(()) => {
                    progress.delivered_seq = event.seq;
                    progress.attempts = 0;
                    report.delivered += 1;
                    self.metrics.outbox.delivered(Utc::now() - event.created_at);
                }
                Err(error) => {
                    tracing::debug!(event_id = %event.event_id, %error, "delivery failed");
                    report.failed += 1;
                    self.metrics.outbox.failed_attempt();
                    progress.failure = Some((event, error));
                    break;
                }
            }
        }
        self.finish(&claim, progress, &mut report).await;
        report
    }

    /// Writes back the stream's cursor and retry state and ends the lease: backs off after a
    /// failure, dead-letters the event that failed once it has used up its attempts or its age.
    /// When the database is away (it crashed, the network broke), the write-back is tried again
    /// until it lands or the lease is about to end: a stream whose progress was lost would wait
    /// for its lease to run out (a minute by default) before any relay delivered it again.
    async fn finish(&self, claim: &Claim, progress: Progress, report: &mut RoundReport) {
        let written = until_deadline(claim.lease_deadline, "writing back outbox progress", || {
            self.write_back(claim, &progress)
        })
        .await;
        match written {
            Ok(WrittenBack::Released) => {}
            Ok(WrittenBack::DeadLettered) => report.dead_lettered += 1,
            Ok(WrittenBack::LeaseLost) => {
                tracing::warn!("the stream's lease ended before its progress was written back")
            }
            Err(error) => {
                tracing::warn!(%error, "writing back outbox progress failed; the lease will expire")
            }
        }
    }

    /// One try of [`Relay::finish`]'s write-back.
    async fn write_back(&self, claim: &Claim, progress: &Progress) -> Result<WrittenBack, sqlx::Error> {
        match &progress.failure {
            None => {
                // Nothing failed. If nothing was delivered either (shutdown, lease running short),
                // the retry state of the stream's next event is kept as it was.
                let untouched = progress.delivered_seq == claim.delivered_seq;
                let release = Release {
                    delivered_seq: progress.delivered_seq,
                    attempts: progress.attempts,
                    delay: Duration::ZERO,
                    last_error: if untouched {
                        claim.last_error.as_deref()
                    } else {
                        None
                    },
                };
                released(streams::release(&self.pool, claim, &release).await)
            }
            Some((event, error)) => {
                let attempts = progress.attempts + 1;
                let age = (Utc::now() - event.created_at).to_std().unwrap_or_default();
                if attempts as u32 >= self.config.max_attempts || age >= self.config.max_age {
                    let dead = streams::dead_letter(&self.pool, claim, event, attempts, &error.0).await?;
                    if !dead {
                        return Ok(WrittenBack::LeaseLost);
                    }
                    self.metrics.outbox.dead_lettered();
                    tracing::error!(
                        event_id = %event.event_id, attempts, %error,
                        "event dead-lettered; re-queue it with `plume outbox retry-dead`"
                    );
                    Ok(WrittenBack::DeadLettered)
                } else {
                    let release = Release {
                        delivered_seq: progress.delivered_seq,
                        attempts,
                        delay: self.config.backoff(attempts as u32),
                        last_error: Some(&error.0),
                    };
                    released(streams::release(&self.pool, claim, &release).await)
                }
            }
        }
    }
}

/// How one write-back ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WrittenBack {
    /// The cursor and retry state are stored and the lease ended.
    Released,
    /// The failing event went to the dead letters and the lease ended.
    DeadLettered,
    /// The lease was no longer this relay's: nothing was written.
    LeaseLost,
}

/// [`WrittenBack`] from [`streams::release`]'s answer (whether the lease was still held).
fn released(held: Result<bool, sqlx::Error>) -> Result<WrittenBack, sqlx::Error> {
    held.map(|held| {
        if held {
            WrittenBack::Released
        } else {
            WrittenBack::LeaseLost
        }
    })
}

/// Runs `attempt` until it succeeds, pausing between tries ([`WRITE_BACK_FIRST_PAUSE`] doubling up
/// to [`WRITE_BACK_MAX_PAUSE`]) for as long as the next pause ends before `deadline`; then returns
/// the last error. Used while the database may be away (it crashed, the network broke), for what
/// must land before a lease runs out. `what` names the attempt in the log.
async fn until_deadline<T, F>(
    deadline: Instant,
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, sqlx::Error>
where
    F: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut pause = WRITE_BACK_FIRST_PAUSE;
    loop {
        match attempt().await {
            Err(error) if Instant::now() + pause < deadline => {
                tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "{what} failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(WRITE_BACK_MAX_PAUSE);
            }
            result => return result,
        }
    }
}

/// The first pause before a failed write-back is tried again; doubled each time.
const WRITE_BACK_FIRST_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between write-back tries.
const WRITE_BACK_MAX_PAUSE: Duration = Duration::from_secs(2);

/// How far a delivery round got.
#[derive(Debug)]
struct Progress {
    delivered_seq: i64,
    /// Failed attempts at the event after `delivered_seq`.
    attempts: i32,
    failure: Option<(StoredEvent, DeliveryError)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_jitter_of_at_most_half() {
        let config = RelayConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ..RelayConfig::default()
        };
        for (failed, full) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            for _ in 0..50 {
                let delay = config.backoff(failed);
                let full = Duration::from_secs(full);
                assert!(delay <= full && delay >= full / 2, "attempt {failed}: {delay:?}");
            }
        }
    }
}
