//! Group commit for v1 batches: batches for different sites that wait at the same moment share one
//! transaction, so the per-transaction cost (locks, statements, the commit's WAL flush) is paid
//! once for many small batches.
//!
//! A few workers ([`GroupCommitter::start`]) take queued batches. A worker takes the first waiting
//! batch and, without waiting for more, every other one already queued, up to [`MAX_GROUP`], one
//! per site (a second batch for a site waits for the worker's next group, so that each site's
//! receipt, version and events stay per batch). A lone batch runs the single-batch path
//! ([`processor::execute`]). A group runs the same steps for all its sites at once: lock them in
//! ascending order, one COPY and one statement ([`store`]), claim every key in one insert, record
//! every event, commit. Each batch gets exactly the receipt it would have got alone.
//!
//! If anything fails in a group (a key claimed by a racing retry, a total that would overflow, a
//! reading stored behind the lock, the database going away), the transaction is rolled back and
//! every batch of the group runs the single-batch path on its own, which answers each exactly.
//! The workers run apart from the request handlers: a client that hangs up never cuts a group short.

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::processor::{self, IngestError, Outcome};
use super::store::{self, Path, SiteReadings};
use super::{BatchReceipt, IngestBatch};
use crate::changes::ChangeSignal;
use crate::error::is_unavailable;
use crate::metrics::Metrics;
use crate::outbox;

/// At most this many batches share a transaction.
pub const MAX_GROUP: usize = 32;

/// Workers, each running one transaction at a time. Two keep one group filling while another
/// commits; more made concurrent groups wait on each other's site locks (64 clients over 100
/// sites on 2 cores: 1 worker 77k readings/s, 2 workers 92k, 4 workers 72-75k).
pub const WORKERS: usize = 2;

struct Job {
    batch: IngestBatch,
    reply: oneshot::Sender<Result<Outcome, IngestError>>,
}

/// The handle request handlers submit batches through; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("batch", &self.batch.key).finish()
    }
}

impl GroupCommitter {
    /// Starts [`WORKERS`] workers storing through `pool`. They stop when every handle is dropped.
    /// `changes` is told after every commit that stored readings.
    pub fn start(pool: PgPool, metrics: Arc<Metrics>, changes: ChangeSignal) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_GROUP * WORKERS);
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..WORKERS {
            tokio::spawn(work(jobs.clone(), pool.clone(), metrics.clone(), changes.clone()));
        }
        Self { queue }
    }

    /// Stores `batch` (its key not found before, its readings inside the window), alone or with
    /// others, and answers as [`processor::execute`] would.
    pub async fn store(&self, batch: IngestBatch) -> Result<Outcome, IngestError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || IngestError::Database(sqlx::Error::PoolClosed);
        self.queue
            .send(Job { batch, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn work(
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    pool: PgPool,
    metrics: Arc<Metrics>,
    changes: ChangeSignal,
) {
    let mut deferred: VecDeque<Job> = VecDeque::new();
    loop {
        let mut group = Vec::new();
        let mut sites = HashSet::new();
        // This worker's deferred batches first: each waited for a group without its site.
        let waiting = deferred.len();
        for _ in 0..waiting {
            let job = deferred.pop_front().expect("counted");
            if group.len() < MAX_GROUP && sites.insert(job.batch.site.site_id) {
                group.push(job);
            } else {
                deferred.push_back(job);
            }
        }
        // With deferred batches in hand, only drain the queue if no other worker is waiting on it:
        // that worker may wait for new batches, and these must not wait behind it.
        let mut queue = if group.is_empty() {
            Some(jobs.lock().await)
        } else {
            jobs.try_lock().ok()
        };
        if let Some(jobs) = queue.as_mut() {
            if group.is_empty() {
                match jobs.recv().await {
                    Some(job) => {
                        sites.insert(job.batch.site.site_id);
                        group.push(job);
                    }
                    None => return,
                }
            }
            while group.len() < MAX_GROUP {
                let Ok(job) = jobs.try_recv() else { break };
                if sites.insert(job.batch.site.site_id) {
                    group.push(job);
                } else {
                    deferred.push_back(job);
                }
            }
        }
        drop(queue);
        // A panic drops the group's reply channels (its requests are answered 503, nothing of the
        // group committed) and leaves the worker running.
        if AssertUnwindSafe(run(&pool, &metrics, &changes, group))
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!("storing a group of batches panicked");
        }
    }
}

async fn run(pool: &PgPool, metrics: &Arc<Metrics>, changes: &ChangeSignal, group: Vec<Job>) {
    let (batches, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|job| (job.batch, job.reply)).unzip();
    let outcomes = store_together(pool, metrics, batches).await;
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

/// Stores `batches` (at most one per site; keys not found before; readings inside the window) in
/// one transaction, or each alone if that fails, and answers each as [`processor::execute`] would,
/// in the order given.
pub async fn store_together(
    pool: &PgPool,
    metrics: &Arc<Metrics>,
    batches: Vec<IngestBatch>,
) -> Vec<Result<Outcome, IngestError>> {
    if batches.len() > 1 {
        let mut order: Vec<usize> = (0..batches.len()).collect();
        order.sort_by_key(|&index| batches[index].site.site_id.get());
        let sorted: Vec<&IngestBatch> = order.iter().map(|&index| &batches[index]).collect();
        debug_assert!(sorted
            .windows(2)
            .all(|pair| pair[0].site.site_id != pair[1].site.site_id));
        match store_group(pool, &sorted).await {
            Ok(outcomes) => {
                metrics.group_commit(batches.len());
                let mut answers: Vec<Option<Result<Outcome, IngestError>>> =
                    (0..batches.len()).map(|_| None).collect();
                for (index, outcome) in order.into_iter().zip(outcomes) {
                    answers[index] = Some(outcome);
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
        answers.push(processor::execute(pool.clone(), metrics.clone(), batch, None).await);
    }
    answers
}

/// The steps of [`processor::execute`] for every batch of `group` (sorted by site, one per site) in
/// one transaction. Batches whose site does not exist are answered as such; any other failure fails
/// the whole group.
async fn store_group(
    pool: &PgPool,
    group: &[&IngestBatch],
) -> Result<Vec<Result<Outcome, IngestError>>, IngestError> {
    let mut tx = pool.begin().await?;
    let site_ids: Vec<i64> = group.iter().map(|batch| batch.site.site_id.get()).collect();
    let locked = store::lock_sites(&mut tx, &site_ids).await?;
    let exists = |batch: &IngestBatch| {
        locked
            .binary_search_by_key(&batch.site.site_id.get(), |site| site.site_id.get())
            .is_ok()
    };
    let present: Vec<&IngestBatch> = group.iter().copied().filter(|batch| exists(batch)).collect();
    let groups: Vec<SiteReadings> = present.iter().map(|batch| batch.site.clone()).collect();
    let outcomes = if groups.is_empty() {
        Vec::new()
    } else {
        store::store(&mut tx, &groups, &locked, Path::InOrder).await?
    };
    let receipts: Vec<BatchReceipt> = present
        .iter()
        .zip(&outcomes)
        .map(|(batch, site)| BatchReceipt::stored(&batch.key, site))
        .collect();
    sqlx::query!(
        "insert into ingest_batches (site_id, idempotency_key, payload_sha256, body_sha256, receipt)
         select * from unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[], $5::jsonb[])",
        &present
            .iter()
            .map(|batch| batch.site.site_id.get())
            .collect::<Vec<_>>(),
        &present
            .iter()
            .map(|batch| batch.key.as_str().to_owned())
            .collect::<Vec<_>>(),
        &present
            .iter()
            .map(|batch| batch.payload_sha256.to_vec())
            .collect::<Vec<_>>(),
        &present
            .iter()
            .map(|batch| batch.body_sha256.map(|hash| hash.to_vec()))
            .collect::<Vec<_>>() as &[Option<Vec<u8>>],
        &receipts
            .iter()
            .map(|receipt| serde_json::to_value(receipt).expect("a receipt serialises"))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    let events: Vec<_> = receipts
        .iter()
        .zip(&outcomes)
        .flat_map(|(receipt, site)| outbox::events_for_batch(&receipt.batch_id, site))
        .collect();
    outbox::record(&mut tx, chrono::Utc::now(), &events).await?;
    tx.commit().await?;

    let mut receipts = receipts.into_iter();
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
