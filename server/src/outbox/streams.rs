//! The relay's side of `outbox_streams`: claiming ready streams under a lease, reading their
//! claimed events, and writing back how far delivery got (or dead-lettering the head event).
//!
//! Every claim stamps its streams with a token of its own, and every write-back matches on it, so
//! a write-back from a claim whose lease has expired changes nothing, even when the same relay has
//! claimed the stream again since.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use super::StoredEvent;

/// A stream held under a lease.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) site_id: i64,
    /// Every event up to here was delivered when the stream was claimed.
    pub(super) delivered_seq: i64,
    /// The last event of this claim.
    pub(super) claimed_seq: i64,
    /// No undelivered event of the stream was written before this (`outbox_streams.pending_since`);
    /// none when there is no such bound (the stream was behind when the bound was introduced).
    pub(super) pending_since: Option<DateTime<Utc>>,
    /// Failed attempts so far at the event after `delivered_seq`.
    pub(super) attempts: i32,
    /// The last failure, kept while the head event keeps failing.
    pub(super) last_error: Option<String>,
    /// This claim's lease token.
    pub(super) token: Uuid,
    /// The lease ends no earlier than this (taken before the claim was sent).
    pub(super) lease_deadline: Instant,
}

/// A claimed stream's row, as both claims return it.
struct Claimed {
    site_id: i64,
    delivered_seq: i64,
    claimed_seq: i64,
    attempts: i32,
    last_error: Option<String>,
    pending_since: Option<DateTime<Utc>>,
}

impl Claimed {
    fn held(self, token: Uuid, lease_deadline: Instant) -> Claim {
        Claim {
            site_id: self.site_id,
            delivered_seq: self.delivered_seq,
            claimed_seq: self.claimed_seq,
            pending_since: self.pending_since,
            attempts: self.attempts,
            last_error: self.last_error,
            token,
            lease_deadline,
        }
    }
}

/// Takes up to `limit` ready streams, least recently served first, each with up to `batch` events,
/// under a lease of `lease` held by `token` (new for each claim).
#[tracing::instrument(skip(pool))]
pub(super) async fn claim(
    pool: &PgPool,
    token: Uuid,
    limit: usize,
    batch: i64,
    lease: Duration,
) -> Result<Vec<Claim>, sqlx::Error> {
    let lease_deadline = Instant::now() + lease;
    let rows = sqlx::query_as!(
        Claimed,
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
      returning s.site_id, s.delivered_seq, s.claimed_seq, s.attempts, s.last_error,
                nullif(s.pending_since, '-infinity') as pending_since",
        token,
        lease.as_secs_f64(),
        batch,
        limit as i64,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| row.held(token, lease_deadline))
        .collect())
}

/// [`claim`] for Citus, where `for update` must stay on one shard: reads the ready streams without
/// locks, then claims each with a statement on its own site, which takes it only if it is still
/// ready (so two relays never both take one stream; one of them finds it leased and moves on).
#[tracing::instrument(skip(pool))]
pub(super) async fn claim_by_site(
    pool: &PgPool,
    token: Uuid,
    limit: usize,
    batch: i64,
    lease: Duration,
) -> Result<Vec<Claim>, sqlx::Error> {
    let lease_deadline = Instant::now() + lease;
    let ready = sqlx::query_scalar!(
        "select site_id from outbox_streams
          where head_seq > delivered_seq
            and next_attempt_at <= now()
            and (lease_until is null or lease_until < now())
          order by next_attempt_at, site_id
          limit $1",
        limit as i64,
    )
    .fetch_all(pool)
    .await?;
    let mut claims = Vec::with_capacity(ready.len());
    for site_id in ready {
        let row = sqlx::query_as!(
            Claimed,
            "update outbox_streams s
                set lease_owner = $1,
                    lease_until = now() + make_interval(secs => $2),
                    claimed_seq = least(s.head_seq, s.delivered_seq + $3)
              where s.site_id = $4
                and s.head_seq > s.delivered_seq
                and s.next_attempt_at <= now()
                and (s.lease_until is null or s.lease_until < now())
          returning s.site_id, s.delivered_seq, s.claimed_seq, s.attempts, s.last_error,
                    nullif(s.pending_since, '-infinity') as pending_since",
            token,
            lease.as_secs_f64(),
            batch,
            site_id,
        )
        .fetch_optional(pool)
        .await?;
        claims.extend(row.map(|row| row.held(token, lease_deadline)));
    }
    Ok(claims)
}

/// Ends every lease `token` holds: those of a claim whose answer was lost (the database crashed or
/// the link broke after the claim committed), which would otherwise wait for their lease to run
/// out. Returns how many there were.
#[tracing::instrument(skip(pool))]
pub(super) async fn release_lost_claim(pool: &PgPool, token: Uuid) -> Result<u64, sqlx::Error> {
    let released = sqlx::query!(
        "update outbox_streams set lease_owner = null, lease_until = null where lease_owner = $1",
        token,
    )
    .execute(pool)
    .await?;
    Ok(released.rows_affected())
}

/// The claim's events, in sequence order. Only the log's partitions from the stream's
/// `pending_since` on are read (pruned when the statement starts).
#[tracing::instrument(skip_all, fields(site_id = claim.site_id))]
pub(super) async fn fetch(pool: &PgPool, claim: &Claim) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as!(
        StoredEvent,
        "select site_id, seq, event_id, event_type, occurred_at, created_at, data
           from outbox_events
          where site_id = $1 and seq > $2 and seq <= $3
            and created_at >= coalesce($4, '-infinity'::timestamptz)
          order by seq",
        claim.site_id,
        claim.delivered_seq,
        claim.claimed_seq,
        claim.pending_since,
    )
    .fetch_all(pool)
    .await
}

/// Where a stream stands when its claim ends.
#[derive(Debug)]
pub(super) struct Release<'a> {
    /// Every event up to here is delivered.
    pub(super) delivered_seq: i64,
    /// Failed attempts at the next event.
    pub(super) attempts: i32,
    /// When the stream may be claimed again, from now.
    pub(super) delay: Duration,
    /// The last failure at the next event, if any.
    pub(super) last_error: Option<&'a str>,
}

/// Writes back the stream's cursor and retry state and ends the lease, if the claim still holds
/// it; returns whether it did. The cursor never moves back. A stream found fully delivered loses
/// its `pending_since`; one with events still to go keeps it.
#[tracing::instrument(skip_all, fields(site_id = claim.site_id, delivered_seq = release.delivered_seq))]
pub(super) async fn release(
    pool: &PgPool,
    claim: &Claim,
    release: &Release<'_>,
) -> Result<bool, sqlx::Error> {
    let released = sqlx::query!(
        "update outbox_streams
            set delivered_seq = greatest(delivered_seq, $3), attempts = $4, last_error = $6,
                next_attempt_at = now() + make_interval(secs => $5::float8),
                lease_owner = null, lease_until = null,
                pending_since = case when greatest(delivered_seq, $3) < head_seq then pending_since end
          where site_id = $1 and lease_owner = $2",
        claim.site_id,
        claim.token,
        release.delivered_seq,
        release.attempts,
        release.delay.as_secs_f64(),
        release.last_error,
    )
    .execute(pool)
    .await?;
    Ok(released.rows_affected() == 1)
}

/// Copies `event` (the stream's next one) with its body to `outbox_dead` and moves the stream past
/// it, ending the lease; in one transaction, and only if the claim still holds the lease.
#[tracing::instrument(skip_all, fields(site_id = claim.site_id, event_id = %event.event_id))]
pub(super) async fn dead_letter(
    pool: &PgPool,
    claim: &Claim,
    event: &StoredEvent,
    attempts: i32,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let moved = sqlx::query!(
        "update outbox_streams
            set delivered_seq = greatest(delivered_seq, $3), attempts = 0, last_error = null,
                next_attempt_at = now(), lease_owner = null, lease_until = null,
                pending_since = case when greatest(delivered_seq, $3) < head_seq then pending_since end
          where site_id = $1 and lease_owner = $2",
        claim.site_id,
        claim.token,
        event.seq,
    )
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query!(
        "insert into outbox_dead (event_id, site_id, seq, event_type, occurred_at, created_at, data, attempts, last_error)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         on conflict (site_id, event_id) do nothing",
        event.event_id,
        event.site_id,
        event.seq,
        event.event_type,
        event.occurred_at,
        event.created_at,
        event.data,
        attempts,
        error,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
