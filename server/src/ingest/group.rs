//! Group commit for v1 batches: batches that wait at the same moment share one transaction, so the
//! per-statement and per-commit costs (locks, statements, the commit's WAL flush) are paid once for
//! many small batches, whether they are for many sites or for one.
//!
//! A few workers ([`GroupCommitter::start`]) take queued batches, each worker the batches of its own
//! share of the sites, so that two workers' transactions never wait on each other's site locks. A
//! worker takes the first waiting batch and every other one already queued, up to [`MAX_GROUP`].
//! When its last group was not alone (the load is high), it then waits a moment ([`LINGER`] by
//! default) for more; when the load is low, a batch waits for nothing. A lone batch runs the
//! single-batch path ([`processor::execute`]). A group runs the same steps for all its batches at
//! once: lock their sites in ascending order, one COPY and one statement ([`store`]), claim every
//! key in one insert, record every event, commit. A site's batches are stored in the order they
//! arrived, each its own part: each gets exactly the receipt, the events and the share of the
//! site's total it would have got alone, one after the other.
//!
//! If anything fails in a group (a key claimed by a racing retry, a total that would overflow, a
//! reading stored behind the lock, the database going away), the transaction is rolled back and
//! every batch of the group runs the single-batch path on its own, in order, which answers each
//! exactly. The workers run apart from the request handlers: a client that hangs up never cuts a
//! group short.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::closing::Closing;
use super::processor::{self, IngestError, Outcome};
use super::store::{self, Path, SiteOutcome, SiteReadings};
use super::IngestBatch;
use crate::changes::ChangeSignal;
use crate::db::citus::Topology;
use crate::error::is_unavailable;
use crate::metrics::Metrics;

/// At most this many batches share a transaction: up to 6,400 readings of v1 batches.
pub const MAX_GROUP: usize = 64;

/// How long a worker waits by default for more batches after taking those queued, when its last
/// group held more than one batch (`plume serve --group-linger-us`).
pub const LINGER: Duration = Duration::from_millis(1);

/// Workers by default (`plume serve --group-workers`), each running one transaction at a time for
/// its own share of the sites.
pub const WORKERS: usize = 2;

/// How the committer groups batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    /// Workers, each with its own queue and its own share of the sites (`site id % workers`).
    pub workers: usize,
    /// How long a busy worker waits for more batches.
    pub linger: Duration,
    /// The most batches a transaction holds, at most [`MAX_GROUP`]; 1 turns grouping off.
    pub max_batches: usize,
    /// The database's kind. On Citus a transaction holds one site's batches only (one shard, no
    /// two-phase commit), so a worker stores what it took site by site, in arrival order.
    pub topology: Topology,
}

/// Workers on Citus at least: each holds one site's transaction at a time, and those take longer
/// (every statement goes through the coordinator to a worker).
pub const CITUS_WORKERS: usize = 8;

impl GroupSettings {
    /// These settings for a Citus coordinator: groups of one site, and at least [`CITUS_WORKERS`]
    /// workers.
    pub fn for_citus(self) -> Self {
        Self {
            workers: self.workers.max(CITUS_WORKERS),
            topology: Topology::Citus,
            ..self
        }
    }
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            workers: WORKERS,
            linger: LINGER,
            max_batches: MAX_GROUP,
            topology: Topology::Single,
        }
    }
}

struct Job {
    batch: IngestBatch,
    reply: oneshot::Sender<Result<Outcome, IngestError>>,
}

/// The handle request handlers submit batches through; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    /// One queue a worker: a site's batches always go to the same worker, so two workers' groups
    /// never wait on each other's site locks, and a site's batches keep their order.
    queues: Arc<[mpsc::Sender<Job>]>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("batch", &self.batch.key).finish()
    }
}

impl GroupCommitter {
    /// Starts `settings.workers` workers storing through `pool`. They stop when every handle is
    /// dropped. `changes` is told after every commit that stored readings.
    pub fn start(
        pool: PgPool,
        metrics: Arc<Metrics>,
        changes: ChangeSignal,
        settings: GroupSettings,
    ) -> Self {
        let queues = (0..settings.workers.max(1))
            .map(|_| {
                let (queue, jobs) = mpsc::channel(4 * MAX_GROUP);
                tokio::spawn(work(
                    jobs,
                    pool.clone(),
                    metrics.clone(),
                    changes.clone(),
                    settings,
                ));
                queue
            })
            .collect();
        Self { queues }
    }

    /// Stores `batch` (its key not found before, its readings inside the window), alone or with
    /// others, and answers as [`processor::execute`] would.
    pub async fn store(&self, batch: IngestBatch) -> Result<Outcome, IngestError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || IngestError::Database(sqlx::Error::PoolClosed);
        let worker = batch.site.site_id.get().unsigned_abs() as usize % self.queues.len();
        self.queues[worker]
            .send(Job { batch, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn work(
    mut jobs: mpsc::Receiver<Job>,
    pool: PgPool,
    metrics: Arc<Metrics>,
    changes: ChangeSignal,
    settings: GroupSettings,
) {
    let linger = settings.linger;
    let most = settings.max_batches.clamp(1, MAX_GROUP);
    let mut busy = false;
    loop {
        let mut group = Vec::new();
        match jobs.recv().await {
            Some(job) => group.push(job),
            None => return,
        }
        while group.len() < most {
            let Ok(job) = jobs.try_recv() else { break };
            group.push(job);
        }
        if busy && !linger.is_zero() {
            let deadline = Instant::now() + linger;
            while group.len() < most {
                match tokio::time::timeout_at(deadline, jobs.recv()).await {
                    Ok(Some(job)) => group.push(job),
                    // The deadline passed, or every handle is gone: run what is in hand.
                    Ok(None) | Err(_) => break,
                }
            }
        }
        busy = group.len() > 1;
        let groups = match settings.topology {
            Topology::Citus => by_site(group),
            Topology::Single => vec![group],
        };
        for group in groups {
            // A panic drops the group's reply channels (its requests are answered 503, nothing of
            // the group committed) and leaves the worker running.
            if AssertUnwindSafe(run(&pool, &metrics, &changes, settings.topology, group))
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!("storing a group of batches panicked");
            }
        }
    }
}

/// `jobs` split by site, sites in the order of their first batch, each site's batches in arrival
/// order.
fn by_site(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut groups: Vec<Vec<Job>> = Vec::new();
    for job in jobs {
        let site = job.batch.site.site_id;
        match groups
            .iter_mut()
            .find(|group| group[0].batch.site.site_id == site)
        {
            Some(group) => group.push(job),
            None => groups.push(vec![job]),
        }
    }
    groups
}

async fn run(
    pool: &PgPool,
    metrics: &Arc<Metrics>,
    changes: &ChangeSignal,
    topology: Topology,
    group: Vec<Job>,
) {
    let (batches, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|job| (job.batch, job.reply)).unzip();
    let outcomes = store_together(pool, metrics, topology, batches).await;
    if outcomes
        .iter()
        .any(|outcome| matches!(outcome, Ok(Outcome::Stored(_))))
    {
        changes.committed();
    }
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

/// Stores `batches` (keys not found before; readings inside the window; a site's batches in the
/// order they arrived) in one transaction, or each alone if that fails, and answers each as
/// [`processor::execute`] would, in the order given.
pub async fn store_together(
    pool: &PgPool,
    metrics: &Arc<Metrics>,
    topology: Topology,
    batches: Vec<IngestBatch>,
) -> Vec<Result<Outcome, IngestError>> {
    if batches.len() > 1 {
        // A key sent again while its first batch waits in the same group (a client's retry) is
        // answered after the group, as the replay (or the 409) it is: in the group, its claim would
        // fail every batch of it back to one at a time.
        let mut keys = HashSet::new();
        let (mut order, repeats): (Vec<usize>, Vec<usize>) = (0..batches.len())
            .partition(|&index| keys.insert((batches[index].site.site_id, batches[index].key.as_str())));
        // A stable sort: a site's batches keep the order they arrived in.
        order.sort_by_key(|&index| batches[index].site.site_id.get());
        let sorted: Vec<&IngestBatch> = order.iter().map(|&index| &batches[index]).collect();
        match store_group(pool, topology, &sorted).await {
            Ok(outcomes) => {
                metrics.group_commit(sorted.len());
                let mut answers: Vec<Option<Result<Outcome, IngestError>>> =
                    (0..batches.len()).map(|_| None).collect();
                for (index, outcome) in order.into_iter().zip(outcomes) {
                    answers[index] = Some(outcome);
                }
                for index in repeats {
                    let batch = batches[index].clone();
                    answers[index] =
                        Some(processor::execute(pool.clone(), metrics.clone(), topology, batch, None).await);
                }
                return answers.into_iter().map(|a| a.expect("one answer each")).collect();
            }
            Err(IngestError::Database(error)) if is_unavailable(&error) => {
                // Each batch alone would wait for the same database in turn: answer all at once
                // (503: nothing was stored, a retry is safe).
                tracing::warn!(%error, batches = batches.len(), "a group failed: the database is unavailable");
                return batches
                    .iter()
                    .map(|_| {
                        let lost =
                            std::io::Error::new(std::io::ErrorKind::ConnectionAborted, error.to_string());
                        Err(IngestError::Database(sqlx::Error::Io(lost)))
                    })
                    .collect();
            }
            Err(error) => {
                tracing::debug!(%error, batches = batches.len(), "a group failed: storing its batches one by one");
            }
        }
    }
    let mut answers = Vec::with_capacity(batches.len());
    for batch in batches {
        answers.push(processor::execute(pool.clone(), metrics.clone(), topology, batch, None).await);
    }
    answers
}

/// The steps of [`processor::execute`] for every batch of `group` (sorted by site, a site's batches
/// in the order they arrived, no key twice) in one transaction. Batches whose site does not exist
/// are answered as such; any other failure fails the whole group.
async fn store_group(
    pool: &PgPool,
    topology: Topology,
    group: &[&IngestBatch],
) -> Result<Vec<Result<Outcome, IngestError>>, IngestError> {
    let mut tx = pool.begin().await?;
    let mut site_ids: Vec<i64> = group.iter().map(|batch| batch.site.site_id.get()).collect();
    site_ids.dedup();
    let locked = store::lock(&mut tx, topology, &site_ids).await?;
    let exists = |batch: &IngestBatch| {
        locked
            .binary_search_by_key(&batch.site.site_id.get(), |site| site.site_id.get())
            .is_ok()
    };
    let present: Vec<&IngestBatch> = group.iter().copied().filter(|batch| exists(batch)).collect();
    let parts: Vec<&SiteReadings> = present.iter().map(|batch| &batch.site).collect();
    let close = |outcomes: &[SiteOutcome]| Closing::new(&present, outcomes);
    let closing = if parts.is_empty() {
        Closing::new(&[], &[])
    } else {
        store::store_and_close(&mut tx, topology, &parts, &locked, Path::InOrder, &close).await?
    };
    tx.commit().await?;

    let mut receipts = closing.receipts.into_iter();
    Ok(group
        .iter()
        .map(|batch| match exists(batch) {
            true => Ok(Outcome::Stored(
                receipts.next().expect("one receipt per present batch"),
            )),
            false => Err(IngestError::SiteNotFound(batch.site.site_id)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::IdempotencyKey;
    use crate::sites::SiteId;

    fn job(site: i64, key: &str) -> Job {
        let batch = IngestBatch::new(
            SiteId::new(site).unwrap(),
            IdempotencyKey::parse(key).unwrap(),
            Vec::new(),
        );
        Job {
            batch,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_per_site_worker_stores_each_sites_batches_together_in_arrival_order() {
        let jobs = vec![job(2, "a"), job(1, "b"), job(2, "c"), job(3, "d"), job(1, "e")];
        let groups: Vec<Vec<String>> = by_site(jobs)
            .iter()
            .map(|group| {
                let name = |job: &Job| format!("{}{}", job.batch.site.site_id.get(), job.batch.key.as_str());
                group.iter().map(name).collect()
            })
            .collect();
        assert_eq!(groups, [vec!["2a", "2c"], vec!["1b", "1e"], vec!["3d"]]);
    }
}
