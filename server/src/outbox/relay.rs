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
//! - **No two relays at once**: a relay stops taking events from a stream once the next delivery
//!   could outlast its lease (`delivery_timeout` before the lease ends), so a lease never expires
//!   while its holder is still delivering, and writes back only while it still holds the lease.
//! - **Crashes**: a dead relay's lease expires and another relay takes the stream over from its
//!   cursor; events delivered but not yet written back are delivered again, same `event_id`.
//! - **Dead letters**: after `max_attempts` failed attempts, or once an event is older than
//!   `max_age`, it is copied to `outbox_dead` (kept, re-queueable) and the stream moves on.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sink::{Delivery, DeliveryError, Sink};
use crate::metrics::Metrics;

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

/// A stream this relay holds.
#[derive(Debug, Clone)]
struct Claim {
    site_id: i64,
    delivered_seq: i64,
    claimed_seq: i64,
    attempts: i32,
    /// The lease ends no earlier than this (taken before the claim was sent).
    lease_deadline: Instant,
}

/// A stored event.
#[derive(Debug)]
struct StoredEvent {
    seq: i64,
    event_id: Uuid,
    event_type: String,
    occurred_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    data: Value,
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
    /// This relay's lease owner id.
    owner: Uuid,
    /// Notified after a local commit wrote events, so they go out without waiting for a poll.
    wake: Arc<Notify>,
}

impl<S: Sink> Relay<S> {
    /// A relay over `pool` delivering to `sink`.
    pub fn new(pool: PgPool, sink: S, config: RelayConfig, metrics: Arc<Metrics>, wake: Arc<Notify>) -> Self {
        Self {
            pool,
            sink: Arc::new(sink),
            config,
            metrics,
            owner: Uuid::new_v4(),
            wake,
        }
    }

    /// Delivers until `shutdown`, then finishes the deliveries under way (each stops after its
    /// current event) and releases their streams.
    pub async fn run(self, shutdown: CancellationToken) {
        let relay = Arc::new(self);
        let mut deliveries = JoinSet::new();
        tracing::info!(owner = %relay.owner, concurrency = relay.config.concurrency, "outbox relay started");
        while !shutdown.is_cancelled() {
            while deliveries.try_join_next().is_some() {}
            let free = relay.config.concurrency.saturating_sub(deliveries.len());
            let mut claimed = 0;
            if free > 0 {
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
        tracing::info!(owner = %relay.owner, "outbox relay stopped");
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

    /// Takes up to `limit` ready streams under a lease.
    async fn claim(&self, limit: usize) -> Result<Vec<Claim>, sqlx::Error> {
        let lease_deadline = Instant::now() + self.config.lease;
        let rows = sqlx::query!(
            "update outbox_streams s
                set lease_owner = $1,
                    lease_until = now() + make_interval(secs => $2),
                    claimed_seq = least(s.head_seq, s.delivered_seq + $3)
               from (select site_id from outbox_streams
                      where head_seq > delivered_seq
                        and next_attempt_at <= now()
                        and (lease_until is null or lease_until < now())
                      order by next_attempt_at, site_id
                      limit $4
                      for update skip locked) ready
              where s.site_id = ready.site_id
          returning s.site_id, s.delivered_seq, s.claimed_seq, s.attempts",
            self.owner,
            self.config.lease.as_secs_f64(),
            self.config.batch_size,
            limit as i64,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Claim {
                site_id: row.site_id,
                delivered_seq: row.delivered_seq,
                claimed_seq: row.claimed_seq,
                attempts: row.attempts,
                lease_deadline,
            })
            .collect())
    }

    /// Delivers a claimed stream's events in order until one fails, the lease runs short or
    /// shutdown; then writes back how far it got.
    #[tracing::instrument(skip_all, fields(site_id = claim.site_id, from = claim.delivered_seq + 1, to = claim.claimed_seq))]
    async fn deliver_stream(&self, claim: Claim, shutdown: &CancellationToken) -> RoundReport {
        let mut report = RoundReport {
            streams: 1,
            ..RoundReport::default()
        };
        let events = match self.fetch(&claim).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "reading claimed events failed; the lease will expire");
                return report;
            }
        };
        let mut progress = Progress {
            delivered_seq: claim.delivered_seq,
            attempts: claim.attempts,
            failure: None,
        };
        if events.is_empty() {
            // The claimed events are gone (their partition was dropped by hand): nothing to deliver,
            // and the stream must not stay stuck on them.
            tracing::warn!("claimed events are missing from the outbox; skipping them");
            progress.delivered_seq = claim.claimed_seq;
        }
        for event in events {
            if shutdown.is_cancelled()
                || Instant::now() + self.config.delivery_timeout >= claim.lease_deadline
            {
                break;
            }
            let delivery = Delivery::new(
                event.event_id,
                event.event_type.clone(),
                claim.site_id,
                event.seq,
                event.occurred_at,
                event.created_at,
                &event.data,
                progress.attempts as u32 + 1,
            );
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
        match self.finish(&claim, progress).await {
            Ok(dead) => {
                if dead {
                    report.dead_lettered += 1;
                    self.metrics.outbox.dead_lettered();
                }
            }
            Err(error) => {
                tracing::warn!(%error, "writing back outbox progress failed; the lease will expire")
            }
        }
        report
    }

    async fn fetch(&self, claim: &Claim) -> Result<Vec<StoredEvent>, sqlx::Error> {
        sqlx::query_as!(
            StoredEvent,
            "select seq, event_id, event_type, occurred_at, created_at, data
               from outbox_events
              where site_id = $1 and seq > $2 and seq <= $3
              order by seq",
            claim.site_id,
            claim.delivered_seq,
            claim.claimed_seq,
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Writes back the stream's cursor and retry state and releases the lease, if this relay still
    /// holds it. Returns whether an event was dead-lettered.
    async fn finish(&self, claim: &Claim, progress: Progress) -> Result<bool, sqlx::Error> {
        let Some((event, error)) = progress.failure else {
            self.release(claim.site_id, progress.delivered_seq, 0, Duration::ZERO, None)
                .await?;
            return Ok(false);
        };
        let attempts = progress.attempts + 1;
        let age = (Utc::now() - event.created_at).to_std().unwrap_or_default();
        if attempts as u32 >= self.config.max_attempts || age >= self.config.max_age {
            return self.dead_letter(claim, event, attempts, &error).await;
        }
        let delay = self.config.backoff(attempts as u32);
        self.release(
            claim.site_id,
            progress.delivered_seq,
            attempts,
            delay,
            Some(&error.0),
        )
        .await?;
        Ok(false)
    }

    async fn release(
        &self,
        site_id: i64,
        delivered_seq: i64,
        attempts: i32,
        delay: Duration,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let released = sqlx::query!(
            "update outbox_streams
                set delivered_seq = $3, attempts = $4, last_error = $6,
                    next_attempt_at = now() + make_interval(secs => $5::float8),
                    lease_owner = null, lease_until = null
              where site_id = $1 and lease_owner = $2",
            site_id,
            self.owner,
            delivered_seq,
            attempts,
            delay.as_secs_f64(),
            error,
        )
        .execute(&self.pool)
        .await?;
        if released.rows_affected() == 0 {
            tracing::warn!(
                site_id,
                "the stream's lease was lost before its progress was written back"
            );
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        claim: &Claim,
        event: StoredEvent,
        attempts: i32,
        error: &DeliveryError,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let released = sqlx::query!(
            "update outbox_streams
                set delivered_seq = $3, attempts = 0, last_error = null, next_attempt_at = now(),
                    lease_owner = null, lease_until = null
              where site_id = $1 and lease_owner = $2",
            claim.site_id,
            self.owner,
            event.seq,
        )
        .execute(&mut *tx)
        .await?;
        if released.rows_affected() == 0 {
            tracing::warn!(
                site_id = claim.site_id,
                "the stream's lease was lost before dead-lettering"
            );
            return Ok(false);
        }
        sqlx::query!(
            "insert into outbox_dead (event_id, site_id, seq, event_type, occurred_at, created_at, data, attempts, last_error)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             on conflict (event_id) do nothing",
            event.event_id,
            claim.site_id,
            event.seq,
            event.event_type,
            event.occurred_at,
            event.created_at,
            event.data,
            attempts,
            error.0,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::error!(
            event_id = %event.event_id, site_id = claim.site_id, attempts, error = %error,
            "event dead-lettered; re-queue it with `plume outbox retry-dead`"
        );
        Ok(true)
    }
}

/// How far a delivery round got.
#[derive(Debug)]
struct Progress {
    delivered_seq: i64,
    /// Failed attempts at the event after `delivered_seq`.
    attempts: i32,
    failure: Option<(StoredEvent, DeliveryError)>,
}
