//! Per-client limits: token buckets for requests and readings, and slots for exports and long
//! polls, so that one client (a runaway gateway, a scraping script) cannot take the service from
//! the others. Each process keeps its own buckets, one per client that has called it: the map is
//! bounded by the number of clients, which only an admin creates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{Client, Kind};

/// Requests per second an ingest client may make by default: a sensor posts a batch every few
/// seconds, a busy gateway a few a second.
pub const DEFAULT_INGEST_REQUESTS: u32 = 200;
/// Readings per second an ingest client may send by default: four full bulk requests a second.
pub const DEFAULT_INGEST_READINGS: u32 = 200_000;
/// Requests per second a read client may make by default.
pub const DEFAULT_READ_REQUESTS: u32 = 100;
/// Requests per second a metrics client may make by default (Prometheus scrapes every few seconds).
pub const DEFAULT_METRICS_REQUESTS: u32 = 10;
/// Exports one client may run at once.
pub const EXPORTS_PER_CLIENT: usize = 2;
/// Long polls one client may hold open at once (a dashboard holds one per open tab).
pub const LONG_POLLS_PER_CLIENT: usize = 100;
/// Change-feed reads a second one client may force on the database (a poll without a cursor or
/// with `wait=0`); polls answered from the process's memory are not counted.
pub const FEED_READS_PER_SECOND: u32 = 5;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A full bucket of `rate` a second that holds two seconds' worth.
    pub fn per_second(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            burst: rate * 2.0,
            state: Mutex::new((rate * 2.0, Instant::now())),
        }
    }

    /// Takes `amount` tokens, or says how long until they would be there.
    pub fn take(&self, amount: f64) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, at) = *state;
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.rate).min(self.burst);
        // More than a full bucket can never be taken: it waits for a full one, then is let through.
        let needed = amount.min(self.burst);
        if tokens >= needed {
            *state = (tokens - needed, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((needed - tokens) / self.rate))
        }
    }
}

/// Why a request was throttled, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// What ran out.
    pub what: &'static str,
    /// Seconds to wait (at least one).
    pub retry_after_secs: u64,
}

impl Throttled {
    fn after(what: &'static str, wait: Duration) -> Self {
        Self {
            what,
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}

/// One client's limits in this process.
#[derive(Debug)]
pub struct ClientLimits {
    requests: Option<Bucket>,
    readings: Option<Bucket>,
    exports: Option<Arc<Semaphore>>,
    long_polls: Option<Arc<Semaphore>>,
    feed_reads: Option<Bucket>,
}

impl ClientLimits {
    /// No limits: admins, and every request under `--auth off`.
    pub fn unlimited() -> Self {
        Self {
            requests: None,
            readings: None,
            exports: None,
            long_polls: None,
            feed_reads: None,
        }
    }

    /// The limits `client` is given: its own rates where set, else its kind's defaults. Admins
    /// are bounded only by the service-wide limits.
    pub fn for_client(client: &Client) -> Self {
        let requests = match client.kind {
            Kind::Admin => return Self::unlimited(),
            Kind::Ingest => DEFAULT_INGEST_REQUESTS,
            Kind::Read => DEFAULT_READ_REQUESTS,
            Kind::Metrics => DEFAULT_METRICS_REQUESTS,
        };
        let readings = (client.kind == Kind::Ingest)
            .then(|| Bucket::per_second(client.readings_per_second.unwrap_or(DEFAULT_INGEST_READINGS)));
        Self {
            requests: Some(Bucket::per_second(client.requests_per_second.unwrap_or(requests))),
            readings,
            exports: Some(Arc::new(Semaphore::new(EXPORTS_PER_CLIENT))),
            long_polls: Some(Arc::new(Semaphore::new(LONG_POLLS_PER_CLIENT))),
            feed_reads: Some(Bucket::per_second(FEED_READS_PER_SECOND)),
        }
    }

    /// Counts one request.
    pub fn request(&self) -> Result<(), Throttled> {
        match &self.requests {
            Some(bucket) => bucket
                .take(1.0)
                .map_err(|wait| Throttled::after("requests", wait)),
            None => Ok(()),
        }
    }

    /// Counts `count` readings sent.
    pub fn readings(&self, count: usize) -> Result<(), Throttled> {
        match &self.readings {
            Some(bucket) => bucket
                .take(count as f64)
                .map_err(|wait| Throttled::after("readings", wait)),
            None => Ok(()),
        }
    }

    /// Counts one change-feed read from the database.
    pub fn feed_read(&self) -> Result<(), Throttled> {
        match &self.feed_reads {
            Some(bucket) => bucket
                .take(1.0)
                .map_err(|wait| Throttled::after("change feed reads", wait)),
            None => Ok(()),
        }
    }

    /// A slot for one export, held until dropped; `None` (with the permit) when unlimited.
    pub fn export_slot(&self) -> Result<Option<OwnedSemaphorePermit>, Throttled> {
        slot(&self.exports, "concurrent exports")
    }

    /// A slot for one long poll, held until dropped.
    pub fn long_poll_slot(&self) -> Result<Option<OwnedSemaphorePermit>, Throttled> {
        slot(&self.long_polls, "concurrent long polls")
    }
}

fn slot(
    slots: &Option<Arc<Semaphore>>,
    what: &'static str,
) -> Result<Option<OwnedSemaphorePermit>, Throttled> {
    match slots {
        Some(slots) => slots
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| Throttled::after(what, Duration::from_secs(1))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_lets_a_burst_through_then_refills_at_its_rate() {
        let bucket = Bucket::per_second(10);
        for _ in 0..20 {
            assert_eq!(bucket.take(1.0), Ok(()));
        }
        let wait = bucket.take(1.0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(bucket.take(1.0), Ok(()));
        assert!(bucket.take(1.0).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_a_bucket_waits_for_a_full_one() {
        let bucket = Bucket::per_second(10);
        assert_eq!(bucket.take(1_000.0), Ok(()));
        let wait = bucket.take(1_000.0).unwrap_err();
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-6, "{wait:?}");
    }
}
