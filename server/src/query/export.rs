//! Exports: every raw reading of a range, streamed from PostgreSQL's `COPY ... TO STDOUT` to the
//! client in constant memory.
//!
//! The `COPY` runs in binary (PostgreSQL's cheapest output: no timestamp or number formatting on
//! the database's core) and plume writes CSV or NDJSON from it, the same way the API writes
//! timestamps and kilograms, or Parquet, a row group at a time ([`parquet`]). A task owns the
//! connection and hands the client chunks of about 64 KB through a channel of four, so a slow
//! client slows the `COPY` down rather than growing memory. Whenever an export does not run to its
//! end (the client left or stalled, the data broke off), its connection is closed rather than
//! handed back to the pool, which would first have to read the rest of the `COPY`. Exports hold a
//! connection and a snapshot for as long as they run, so only a few run at once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use chrono::SecondsFormat;
use futures_util::Stream;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::params::{ExportFormat, ExportRequest};

mod format;
pub mod parquet;

use format::RowWriter;

/// Bytes of output gathered before they go to the client.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks waiting for the client at most.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Exports running at once, at most (each holds a database connection while it runs).
pub const MAX_CONCURRENT_EXPORTS: usize = 4;
/// How long a client may take to accept the next chunk before its export is ended.
const STALLED_CLIENT: Duration = Duration::from_secs(60);

/// How long and how slowly an export may run: it holds a connection, a slot and a snapshot that
/// holds back VACUUM for as long as it runs, so a client that reads a chunk now and then must not
/// keep it for ever.
#[derive(Debug, Clone, Copy)]
pub struct ExportLimits {
    /// The longest an export may run.
    pub max_duration: Duration,
    /// The slowest average a client may read at, in bytes a second, once `grace` has passed.
    pub min_bytes_per_second: u64,
    /// How long before the rate is checked (a client and a network warming up).
    pub grace: Duration,
}

impl Default for ExportLimits {
    fn default() -> Self {
        Self {
            max_duration: Duration::from_secs(3600),
            min_bytes_per_second: 64 * 1024,
            grace: Duration::from_secs(30),
        }
    }
}

/// Why an export did not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// [`MAX_CONCURRENT_EXPORTS`] are running.
    #[error("{MAX_CONCURRENT_EXPORTS} exports are running already; retry later")]
    Busy,
    /// The database refused or failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A running export: its chunks, and whether it ran to its end.
#[derive(Debug)]
pub struct Export {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    completed: Arc<AtomicBool>,
}

impl Export {
    /// The export's body. If the task ends without completing (it panicked), the body ends in an
    /// error rather than looking complete.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> {
        futures_util::stream::unfold(Some(self), |export| async move {
            let mut export = export?;
            match export.chunks.recv().await {
                Some(chunk) => Some((chunk, Some(export))),
                None if export.completed.load(Ordering::Acquire) => None,
                None => Some((
                    Err(io::Error::other("the export ended before its last row")),
                    None,
                )),
            }
        })
    }
}

/// The query an export copies out. `COPY` takes no bind parameters; the only values written into
/// it are an integer and two timestamps this function formats itself.
///
/// No `order by`: the partitions come out month by month (an `Append` keeps their order), each in
/// storage order. Sorting a site's history by source and time halved the export rate (a sort in
/// PostgreSQL's memory, spilling to disk past `work_mem`); a client that wants an order sorts the
/// file it gets.
///
/// `only` limits an export of every site to the sites a client may read (integers, written in).
pub fn select_statement(request: &ExportRequest, only: Option<&[i64]>) -> String {
    let from = request.range.from.to_rfc3339_opts(SecondsFormat::Micros, true);
    let to = request.range.to.to_rfc3339_opts(SecondsFormat::Micros, true);
    let site_filter = match (request.site, only) {
        (Some(site), _) => format!("site_id = {} and ", site.get()),
        (None, Some(sites)) => {
            let list: Vec<String> = sites.iter().map(i64::to_string).collect();
            format!("site_id = any('{{{}}}'::bigint[]) and ", list.join(","))
        }
        (None, None) => String::new(),
    };
    format!(
        "select site_id, source_id, measured_at, value_mg from measurements \
          where {site_filter}measured_at >= '{from}' and measured_at < '{to}'"
    )
}

/// The `COPY` statement of an export, in binary.
fn copy_statement(request: &ExportRequest, only: Option<&[i64]>) -> String {
    format!(
        "copy ({}) to stdout (format binary)",
        select_statement(request, only)
    )
}

/// Starts an export, one of at most [`MAX_CONCURRENT_EXPORTS`] counted by `running`, of the sites
/// in `only` (every site for `None`): answers once the `COPY` has begun (or failed to). `slot`,
/// the client's own export slot, is held until the export ends.
pub async fn start(
    pool: &PgPool,
    running: &Arc<Semaphore>,
    request: ExportRequest,
    only: Option<Vec<i64>>,
    slot: Option<OwnedSemaphorePermit>,
    limits: ExportLimits,
) -> Result<Export, ExportError> {
    let permit = running
        .clone()
        .try_acquire_owned()
        .map_err(|_| ExportError::Busy)?;
    let (chunks, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (started, has_started) = oneshot::channel();
    let completed = Arc::new(AtomicBool::new(false));
    let task = Task {
        request,
        limits,
        began: tokio::time::Instant::now(),
        sent: 0,
        only,
        _slot: slot,
        chunks,
        completed: completed.clone(),
        _permit: permit,
    };
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut connection = match pool.acquire().await {
            Ok(connection) => connection,
            Err(error) => {
                let _ = started.send(Err(error));
                return;
            }
        };
        if !task.run(&mut connection, started).await {
            drop(connection.detach());
        }
    });
    match has_started.await {
        Ok(Ok(())) => Ok(Export {
            chunks: receiver,
            completed,
        }),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(sqlx::Error::WorkerCrashed.into()),
    }
}

/// What the export's task holds while it runs.
struct Task {
    request: ExportRequest,
    limits: ExportLimits,
    began: tokio::time::Instant,
    /// Bytes the client has taken so far.
    sent: u64,
    only: Option<Vec<i64>>,
    _slot: Option<OwnedSemaphorePermit>,
    chunks: mpsc::Sender<io::Result<Bytes>>,
    completed: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
}

impl Task {
    /// Runs the `COPY` on `connection` and sends its output; whether the connection may go back to
    /// the pool (only when the `COPY` ran to its end).
    async fn run(
        mut self,
        connection: &mut sqlx::PgConnection,
        started: oneshot::Sender<Result<(), sqlx::Error>>,
    ) -> bool {
        use futures_util::StreamExt;

        let statement = copy_statement(&self.request, self.only.as_deref());
        let mut copy = match connection.copy_out_raw(&statement).await {
            Ok(copy) => copy,
            Err(error) => {
                let _ = started.send(Err(error));
                return false;
            }
        };
        if started.send(Ok(())).is_err() {
            return false;
        }
        let mut writer = RowWriter::new(self.request.format, CHUNK_BYTES, describe(&self.request));
        while let Some(data) = copy.next().await {
            let pushed = data.map_err(io::Error::other).and_then(|data| writer.push(&data));
            if let Err(error) = pushed {
                tracing::error!(%error, "an export broke off");
                let _ = self.chunks.send(Err(error)).await;
                return false;
            }
            while let Some(chunk) = writer.full_chunk() {
                if !self.send(Ok(chunk)).await {
                    return false;
                }
            }
        }
        match writer.finish() {
            Ok(mut rest) => {
                while !rest.is_empty() {
                    let chunk = rest.split_to(rest.len().min(CHUNK_BYTES));
                    if !self.send(Ok(chunk)).await {
                        return false;
                    }
                }
                self.completed.store(true, Ordering::Release);
                true
            }
            Err(error) => {
                tracing::error!(%error, "an export's COPY data ended early");
                let _ = self.chunks.send(Err(error)).await;
                false
            }
        }
    }

    /// Hands the client a chunk; false when it left, has not taken one for [`STALLED_CLIENT`],
    /// reads slower than the limits allow, or the export has run its longest.
    async fn send(&mut self, chunk: io::Result<Bytes>) -> bool {
        let size = chunk.as_ref().map_or(0, |bytes| bytes.len() as u64);
        let deadline = self.began + self.limits.max_duration;
        let wait_until = deadline.min(tokio::time::Instant::now() + STALLED_CLIENT);
        match tokio::time::timeout_at(wait_until, self.chunks.send(chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return false,
            Err(_) => {
                tracing::warn!(
                    "an export's client took no data in time, or the export ran its longest; ending it"
                );
                return false;
            }
        }
        self.sent += size;
        let elapsed = self.began.elapsed();
        if elapsed > self.limits.grace
            && (self.sent as f64) < self.limits.min_bytes_per_second as f64 * elapsed.as_secs_f64()
        {
            tracing::warn!(
                sent = self.sent,
                seconds = elapsed.as_secs_f64(),
                "an export's client reads slower than the minimum rate; ending it"
            );
            return false;
        }
        tokio::time::Instant::now() < deadline
    }
}

/// The content type of `format`.
pub fn content_type(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Csv | ExportFormat::RawCsv => "text/csv; charset=utf-8",
        ExportFormat::Ndjson => "application/x-ndjson",
        ExportFormat::Parquet => "application/vnd.apache.parquet",
    }
}

/// The file name extension of `format`.
pub fn extension(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Csv | ExportFormat::RawCsv => "csv",
        ExportFormat::Ndjson => "ndjson",
        ExportFormat::Parquet => "parquet",
    }
}

/// What a Parquet export's footer says of what it holds, beside the value's unit: the site asked
/// for, if one was, and the range, so that a file that has been passed on still tells.
fn describe(request: &ExportRequest) -> Vec<(String, String)> {
    let time = |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let mut metadata = vec![
        ("plume.export.from".to_owned(), time(request.range.from)),
        ("plume.export.to".to_owned(), time(request.range.to)),
    ];
    if let Some(site) = request.site {
        metadata.push(("plume.export.site_id".to_owned(), site.get().to_string()));
    }
    metadata
}
