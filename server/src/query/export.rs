//! Exports: every raw reading of a range, streamed from PostgreSQL's `COPY ... TO STDOUT` to the
//! client in constant memory.
//!
//! The `COPY` runs in binary (PostgreSQL's cheapest output: no timestamp or number formatting on
//! the database's core) and plume writes CSV or NDJSON from it, the same way the API writes
//! timestamps and kilograms. A task owns the connection and hands the client chunks of about
//! 64 KB through a channel of four, so a slow client slows the `COPY` down rather than growing
//! memory. A client that goes away closes the connection, which ends the `COPY` at once (a
//! connection returned mid-`COPY` would first have to read the rest).

use std::io;

use axum::body::Bytes;
use chrono::SecondsFormat;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::params::{ExportFormat, ExportRequest};

mod format;

pub use format::{Row, RowWriter};

/// Bytes of output gathered before they go to the client.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks waiting for the client at most.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The query an export copies out. `COPY` takes no bind parameters; the only values written into
/// it are an integer and two timestamps this function formats itself.
///
/// No `order by`: the partitions come out month by month (an `Append` keeps their order), each in
/// storage order. Sorting a site's history by source and time halved the export rate (a sort in
/// PostgreSQL's memory, spilling to disk past `work_mem`); a client that wants an order sorts the
/// file it gets.
pub fn select_statement(request: &ExportRequest) -> String {
    let from = request.range.from.to_rfc3339_opts(SecondsFormat::Micros, true);
    let to = request.range.to.to_rfc3339_opts(SecondsFormat::Micros, true);
    let site_filter = match request.site {
        Some(site) => format!("site_id = {} and ", site.get()),
        None => String::new(),
    };
    format!(
        "select site_id, source_id, measured_at, value_mg from measurements \
          where {site_filter}measured_at >= '{from}' and measured_at < '{to}'"
    )
}

/// The `COPY` statement of an export, in binary.
fn copy_statement(request: &ExportRequest) -> String {
    format!("copy ({}) to stdout (format binary)", select_statement(request))
}

/// Starts the export: answers once the `COPY` has begun (or failed to), with a receiver of the
/// output's chunks. A chunk that is an error means the export broke off.
pub async fn start(
    pool: &PgPool,
    request: ExportRequest,
) -> Result<mpsc::Receiver<io::Result<Bytes>>, sqlx::Error> {
    let (chunks, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (started, has_started) = oneshot::channel();
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut connection = match pool.acquire().await {
            Ok(connection) => connection,
            Err(error) => {
                let _ = started.send(Err(error));
                return;
            }
        };
        let finished = stream(&mut connection, &request, started, &chunks).await;
        if !finished {
            // Dropped mid-COPY: close the connection rather than return it to the pool.
            drop(connection.detach());
        }
    });
    match has_started.await {
        Ok(Ok(())) => Ok(receiver),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(sqlx::Error::WorkerCrashed),
    }
}

/// Runs the `COPY` on `connection` and sends its output; whether it ran to its end.
async fn stream(
    connection: &mut sqlx::PgConnection,
    request: &ExportRequest,
    started: oneshot::Sender<Result<(), sqlx::Error>>,
    chunks: &mpsc::Sender<io::Result<Bytes>>,
) -> bool {
    use futures_util::StreamExt;

    let statement = copy_statement(request);
    let mut copy = match connection.copy_out_raw(&statement).await {
        Ok(copy) => copy,
        Err(error) => {
            let _ = started.send(Err(error));
            return true;
        }
    };
    if started.send(Ok(())).is_err() {
        return false;
    }
    let mut writer = RowWriter::new(request.format, CHUNK_BYTES);
    loop {
        let data = match copy.next().await {
            None => break,
            Some(Ok(data)) => data,
            Some(Err(error)) => {
                tracing::error!(%error, "an export broke off");
                let _ = chunks.send(Err(io::Error::other(error))).await;
                return true;
            }
        };
        if let Err(error) = writer.push(&data) {
            tracing::error!(%error, "an export's COPY data could not be read");
            let _ = chunks.send(Err(error)).await;
            return false;
        }
        while let Some(chunk) = writer.full_chunk() {
            if chunks.send(Ok(chunk)).await.is_err() {
                return false;
            }
        }
    }
    let rest = writer.finish();
    if !rest.is_empty() {
        let _ = chunks.send(Ok(rest)).await;
    }
    true
}

/// The content type of `format`.
pub fn content_type(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Csv => "text/csv; charset=utf-8",
        ExportFormat::Ndjson => "application/x-ndjson",
    }
}
