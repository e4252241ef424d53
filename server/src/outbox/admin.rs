//! What operators do to the outbox: read its status, list and re-queue dead events.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The outbox at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxStatus {
    /// Events written and not yet delivered or dead-lettered.
    pub pending: i64,
    /// Pending events a relay is delivering now (claimed under a live lease).
    pub in_flight: i64,
    /// Dead-lettered events waiting for an operator.
    pub dead: i64,
    /// Age of the oldest pending event, in seconds; `None` when nothing is pending.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Every site with pending events, by site id.
    pub streams: Vec<StreamBacklog>,
}

/// One site's undelivered events.
#[derive(Debug, Clone, Serialize)]
pub struct StreamBacklog {
    /// The site.
    pub site_id: i64,
    /// Undelivered events.
    pub pending: i64,
    /// Of those, claimed by a relay now.
    pub in_flight: i64,
    /// Failed attempts at its next event.
    pub attempts: i32,
    /// When its next event is tried again, if it is backing off.
    pub retry_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When its oldest pending event was written.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// Reads the outbox status.
#[tracing::instrument(skip_all)]
pub async fn status(pool: &PgPool) -> Result<OutboxStatus, sqlx::Error> {
    let streams = sqlx::query_as!(
        StreamBacklog,
        r#"select s.site_id,
                  s.head_seq - s.delivered_seq as "pending!",
                  case when s.lease_until > now() then s.claimed_seq - s.delivered_seq else 0 end as "in_flight!",
                  s.attempts,
                  case when s.next_attempt_at > now() then s.next_attempt_at end as retry_at,
                  s.last_error,
                  (select e.created_at from outbox_events e
                    where e.site_id = s.site_id and e.seq > s.delivered_seq
                    order by e.seq limit 1) as oldest_pending_at
             from outbox_streams s
            where s.head_seq > s.delivered_seq
            order by s.site_id"#,
    )
    .fetch_all(pool)
    .await?;
    let dead = sqlx::query_scalar!(r#"select count(*) as "dead!" from outbox_dead"#)
        .fetch_one(pool)
        .await?;
    let now = Utc::now();
    let oldest = streams.iter().filter_map(|s| s.oldest_pending_at).min();
    Ok(OutboxStatus {
        pending: streams.iter().map(|s| s.pending).sum(),
        in_flight: streams.iter().map(|s| s.in_flight).sum(),
        dead,
        oldest_pending_age_seconds: oldest.map(|at| (now - at).num_microseconds().unwrap_or(0) as f64 / 1e6),
        streams,
    })
}

/// A dead-lettered event, as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// The site.
    pub site_id: i64,
    /// Its type.
    pub event_type: String,
    /// Failed attempts.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was dead-lettered.
    pub dead_at: DateTime<Utc>,
}

/// The dead-lettered events, oldest first (at most `limit`).
#[tracing::instrument(skip(pool))]
pub async fn dead_events(pool: &PgPool, limit: i64) -> Result<Vec<DeadEvent>, sqlx::Error> {
    sqlx::query_as!(
        DeadEvent,
        "select event_id, site_id, event_type, attempts, last_error, dead_at
           from outbox_dead order by dead_at, site_id, seq limit $1",
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Which dead events to re-queue.
#[derive(Debug, Clone, Copy)]
pub enum Requeue {
    /// One event.
    Event(Uuid),
    /// Every dead event.
    All,
}

/// Puts dead events back at the end of their sites' streams, with their original id, type,
/// `occurred_at` and fields (and a new sequence number), and removes them from the dead letters,
/// in one transaction. Returns how many were re-queued.
#[tracing::instrument(skip(pool))]
pub async fn retry_dead(pool: &PgPool, which: Requeue) -> Result<u64, sqlx::Error> {
    let only = match which {
        Requeue::Event(id) => Some(id),
        Requeue::All => None,
    };
    let mut tx = pool.begin().await?;
    let sites = sqlx::query_scalar!(
        r#"select distinct site_id as "site_id!" from outbox_dead
            where $1::uuid is null or event_id = $1 order by 1"#,
        only,
    )
    .fetch_all(&mut *tx)
    .await?;
    // Site by site, each statement on one site (on Citus: one shard), the streams locked in
    // ascending site order, as every ingest transaction locks them, so a re-queue and a batch over
    // several sites never wait on each other in a cycle.
    let mut requeued = 0;
    for site in sites {
        sqlx::query!(
            "select site_id from outbox_streams where site_id = $1 for update",
            site
        )
        .fetch_all(&mut *tx)
        .await?;
        let dead = sqlx::query!(
            "delete from outbox_dead where site_id = $1 and ($2::uuid is null or event_id = $2)
             returning event_id, event_type, occurred_at, data, seq",
            site,
            only,
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut dead: Vec<_> = dead.into_iter().collect();
        dead.sort_by_key(|event| event.seq);
        let base = sqlx::query_scalar!(
            "update outbox_streams
                set head_seq = head_seq + $2, pending_since = least(pending_since, now())
              where site_id = $1
          returning head_seq - $2",
            site,
            dead.len() as i64,
        )
        .fetch_one(&mut *tx)
        .await?
        .unwrap_or_default();
        let ids: Vec<Uuid> = dead.iter().map(|event| event.event_id).collect();
        let types: Vec<String> = dead.iter().map(|event| event.event_type.clone()).collect();
        let occurred: Vec<_> = dead.iter().map(|event| event.occurred_at).collect();
        let data: Vec<_> = dead.iter().map(|event| event.data.clone()).collect();
        requeued += sqlx::query!(
            "insert into outbox_events (site_id, seq, event_id, event_type, occurred_at, data)
             select $1, $2 + n, id, event_type, occurred_at, data
               from unnest($3::uuid[], $4::text[], $5::timestamptz[], $6::jsonb[])
                    with ordinality as e(id, event_type, occurred_at, data, n)",
            site,
            base,
            &ids,
            &types,
            &occurred,
            &data,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(requeued)
}
