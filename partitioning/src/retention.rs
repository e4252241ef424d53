//! Retiring expired months: archive each to compressed CSV (optional), check the archive, record what
//! it held per site, then detach and drop it.
//!
//! Only months entirely older than the widest accepted window any plume process has run with (and
//! a month of margin) can expire. A month inside a window would be recreated and accept readings
//! again, and a retried old reading would then be stored and counted a second time. Retiring a
//! month also moves `measurements_settings.retired_before` past it: no part of plume creates a
//! partition before that point again, and the service refuses readings before it. Site totals are lifetime figures: they do not shrink when
//! a month is retired. `retired_partitions` keeps each retired month's per-site count and sum, so
//! `plume verify` still reconciles totals exactly, and the archive keeps the readings themselves.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Months, Utc};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::{month_start, partition_report, quote_ident, AcceptedWindow, MEASUREMENTS_TABLE};

/// How many months to keep, and where archives go.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Whole months kept before the current one; older partitions expire.
    pub keep_months: u32,
    /// Where each expired month is written before it is dropped; `None` drops without an archive.
    pub archive_dir: Option<PathBuf>,
}

/// Why retention refused or failed. Nothing is dropped unless its archive (when asked for) was
/// written and read back intact.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The policy would drop months the service still accepts readings for.
    #[error(
        "keeping {keep} months would retire months inside the accepted window, which starts {}: keep at least {needed} months (or narrow --accepted-window-days)",
        .earliest.format("%Y-%m-%d")
    )]
    InsideWindow {
        /// The months asked for.
        keep: u32,
        /// The first accepted instant.
        earliest: DateTime<Utc>,
        /// The least `keep` that leaves the window whole.
        needed: u32,
    },
    /// An archive did not read back as written.
    #[error("the archive of {0} does not match the partition ({1}); nothing was dropped")]
    ArchiveMismatch(String, String),
    /// The archive directory's file system is full (or its quota is used up).
    #[error(
        "{} could not be written: the archive directory is full ({error}); {partition} was not dropped and what was written of its archive is removed: free space there and run again",
        .path.display()
    )]
    ArchiveFull {
        /// The file being written (the archive or its manifest, by its final name).
        path: PathBuf,
        /// The partition being archived.
        partition: String,
        /// As the file system reported it.
        error: std::io::Error,
    },
    /// An archive of the month exists already.
    #[error("{} exists already and does not match the month; move it away (it may be the only copy of other readings) and run again", .0.display())]
    ArchiveExists(PathBuf),
    /// A plume started with a wider window while retention ran.
    #[error("{0} is inside the accepted window of {1} days that a plume has started with meanwhile; nothing was dropped")]
    Widened(String, i32),
    /// The partition changed between archiving and dropping.
    #[error("{0} changed while it was being archived; nothing was dropped, run retention again")]
    Changed(String),
    /// Writing or reading an archive failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A month that has expired (or was retired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiredPartition {
    /// The partition.
    pub name: String,
    /// Its range.
    pub from: DateTime<Utc>,
    /// Its range's exclusive end.
    pub to: DateTime<Utc>,
    /// Readings in it.
    pub rows: i64,
    /// Their sum, in milligrams.
    pub sum_mg: i64,
    /// The archive written, when one was.
    pub archive: Option<PathBuf>,
}

/// Written beside each archive: what it must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveManifest {
    /// The partition archived (its table name, as pg_partman named it; the range identifies it).
    pub partition: String,
    /// Its range.
    pub range_from: DateTime<Utc>,
    /// Its range's exclusive end.
    pub range_to: DateTime<Utc>,
    /// The compressed CSV file, beside this manifest.
    pub file: String,
    /// CSV columns, in order.
    pub columns: Vec<String>,
    /// Data rows (the header excluded).
    pub rows: i64,
    /// Sum of `value_mg` over the rows.
    pub sum_mg: i64,
    /// SHA-256 of the uncompressed CSV, hex.
    pub sha256: String,
    /// When it was written.
    pub archived_at: DateTime<Utc>,
}

/// The latest end a retirable month may have at `now` when some plume accepts readings
/// `widest_days` back: the start of the oldest accepted month, less a month of margin (nothing is
/// retired that a batch validated a moment ago could still reach).
fn last_retirable(now: DateTime<Utc>, widest_days: i64) -> DateTime<Utc> {
    month_start(now - chrono::Duration::days(widest_days)) - Months::new(1)
}

/// The partitions ending on or before this instant expire when `keep_months` are kept at `now`.
pub fn cutoff(keep_months: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    month_start(now) - Months::new(keep_months)
}

/// The partitions that expire under `policy` at `now`, oldest first, with their counts and sums;
/// changes nothing (the dry run).
pub async fn plan(
    pool: &PgPool,
    policy: &RetentionPolicy,
    window: AcceptedWindow,
    now: DateTime<Utc>,
) -> Result<Vec<ExpiredPartition>, RetentionError> {
    let cutoff = cutoff(policy.keep_months, now);
    // The widest window any plume process has run with, not only this one's: a server accepting
    // more than this command was told must not lose months it still accepts readings for.
    let widest = i64::from(crate::history(pool).await?.widest_window_days).max(window.max_age.num_days());
    let last_retirable = last_retirable(now, widest);
    let earliest = now - chrono::Duration::days(widest);
    if cutoff > last_retirable {
        let needed = (0..=1200)
            .find(|keep| self::cutoff(*keep, now) <= last_retirable)
            .unwrap_or(1200);
        return Err(RetentionError::InsideWindow {
            keep: policy.keep_months,
            earliest,
            needed,
        });
    }
    let mut expired = Vec::new();
    for partition in partition_report(pool).await?.partitions {
        let (Some(from), Some(to)) = (partition.from, partition.to) else {
            continue;
        };
        if to <= cutoff {
            let (rows, sum_mg) = totals(pool, &partition.name).await?;
            expired.push(ExpiredPartition {
                name: partition.name,
                from,
                to,
                rows,
                sum_mg,
                archive: None,
            });
        }
    }
    Ok(expired)
}

/// Retires every partition [`plan`] lists: archive and check it (when `archive_dir` is set),
/// then, in one transaction, record its per-site aggregates, detach and drop it. Calls `progress`
/// after each. Safe to interrupt and re-run: a partition is either still attached and whole, or
/// gone with its aggregates recorded.
pub async fn apply(
    pool: &PgPool,
    policy: &RetentionPolicy,
    window: AcceptedWindow,
    now: DateTime<Utc>,
    mut progress: impl FnMut(&ExpiredPartition),
) -> Result<Vec<ExpiredPartition>, RetentionError> {
    let mut retired = Vec::new();
    for mut partition in plan(pool, policy, window, now).await? {
        if let Some(dir) = &policy.archive_dir {
            partition.archive = Some(archive(pool, &partition, dir).await?);
        }
        retire(pool, &partition, now).await?;
        tracing::info!(partition = %partition.name, rows = partition.rows, "retired an expired partition");
        progress(&partition);
        retired.push(partition);
    }
    Ok(retired)
}

async fn totals(pool: &PgPool, partition: &str) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(&format!(
        "select count(*), coalesce(sum(value_mg), 0)::bigint from {}",
        quote_ident(partition)
    ))
    .fetch_one(pool)
    .await
}

/// The file name, without extension, of the archive of the month starting at `from`:
/// `measurements_2026-11`. Named by the range, whatever pg_partman named the partition (its naming
/// differs between versions).
pub fn archive_stem(from: DateTime<Utc>) -> String {
    format!("measurements_{}", from.format("%Y-%m"))
}

/// Writes `partition` to `dir` as `<stem>.csv.gz` with `<stem>.manifest.json` (see
/// [`archive_stem`]), then reads the file back and checks its rows, sum and checksum against the
/// partition. Both are written under a `.partial` name and renamed into place, the manifest first,
/// so a file by the archive's name is a complete one. An attempt that fails or is cancelled (a full
/// disk, a failed sync, a stopped job) removes what it wrote: the month is still in the table, a
/// partial file would keep holding the space, and the next attempt starts afresh.
pub async fn archive(
    pool: &PgPool,
    partition: &ExpiredPartition,
    dir: &Path,
) -> Result<PathBuf, RetentionError> {
    // `shown` is the file an error names: a `.partial` file is gone once the error is read.
    let io = |what: &str, path: &Path, shown: &Path| {
        let what = format!("{what} {}", path.display());
        let (shown, name) = (shown.to_owned(), partition.name.clone());
        move |error: std::io::Error| {
            if matches!(
                error.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                RetentionError::ArchiveFull {
                    path: shown,
                    partition: name,
                    error,
                }
            } else {
                RetentionError::Io(what, error)
            }
        }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir, dir))?;
    let dir = &std::fs::canonicalize(dir).map_err(io("resolving", dir, dir))?;
    let stem = archive_stem(partition.from);
    let path = dir.join(format!("{stem}.csv.gz"));
    if path.exists() {
        // An earlier attempt archived this month and then failed to drop it (a lock, a crash): its
        // archive is used again if it still matches the month exactly. Anything else is never
        // overwritten: it may be the only copy of readings.
        let (rows, sum_mg, _) = read_back(&path).map_err(io("reading back", &path, &path))?;
        if (rows, sum_mg) == (partition.rows, partition.sum_mg) {
            return Ok(path);
        }
        return Err(RetentionError::ArchiveExists(path));
    }
    let mut unfinished = Unfinished(Vec::new());
    let partial = dir.join(format!("{stem}.csv.gz.partial"));
    unfinished.0.push(partial.clone());
    let file = File::create(&partial).map_err(io("creating", &partial, &path))?;
    let mut csv = HashingWriter {
        inner: GzEncoder::new(BufWriter::new(file), Compression::default()),
        hasher: Sha256::new(),
    };
    let mut connection = pool.acquire().await?;
    // Not handed back to the pool: a COPY that stops part way (the file failed, the run was
    // cancelled) leaves the rest of its output queued on the connection.
    connection.close_on_drop();
    let mut stream = connection
        .copy_out_raw(&format!(
            "copy (select site_id, source_id, measured_at, value_mg from {} order by site_id, source_id, measured_at)
             to stdout with (format csv, header)",
            quote_ident(&partition.name)
        ))
        .await?;
    while let Some(chunk) = stream.try_next().await? {
        csv.write_all(&chunk).map_err(io("writing", &partial, &path))?;
    }
    drop(stream);
    drop(connection);
    let sha256 = hex::encode(csv.hasher.finalize_reset());
    let file = csv.inner.finish().map_err(io("writing", &partial, &path))?;
    file.into_inner()
        .map_err(|e| io("writing", &partial, &path)(e.into_error()))?
        .sync_all()
        .map_err(io("syncing", &partial, &path))?;

    let (rows, sum_mg, read_sha) = read_back(&partial).map_err(io("reading back", &partial, &path))?;
    if (rows, sum_mg, &read_sha) != (partition.rows, partition.sum_mg, &sha256) {
        return Err(RetentionError::ArchiveMismatch(
            partition.name.clone(),
            format!(
                "{rows} rows summing to {sum_mg} mg in the file, {} and {} mg in the table",
                partition.rows, partition.sum_mg
            ),
        ));
    }
    let manifest = ArchiveManifest {
        partition: partition.name.clone(),
        range_from: partition.from,
        range_to: partition.to,
        file: format!("{stem}.csv.gz"),
        columns: ["site_id", "source_id", "measured_at", "value_mg"]
            .map(String::from)
            .to_vec(),
        rows,
        sum_mg,
        sha256,
        archived_at: Utc::now(),
    };
    let manifest_path = dir.join(format!("{stem}.manifest.json"));
    let manifest_partial = dir.join(format!("{stem}.manifest.json.partial"));
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    unfinished.0.push(manifest_partial.clone());
    let mut file =
        File::create(&manifest_partial).map_err(io("creating", &manifest_partial, &manifest_path))?;
    file.write_all(&json)
        .map_err(io("writing", &manifest_partial, &manifest_path))?;
    file.sync_all()
        .map_err(io("syncing", &manifest_partial, &manifest_path))?;
    std::fs::rename(&manifest_partial, &manifest_path).map_err(io(
        "renaming",
        &manifest_partial,
        &manifest_path,
    ))?;
    unfinished.0.push(manifest_path);
    std::fs::rename(&partial, &path).map_err(io("renaming", &partial, &path))?;
    unfinished.0.push(path.clone());
    // The renames and new entries are durable only once the directory itself is synced.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir, dir))?;
    unfinished.keep();
    Ok(path)
}

/// The files an archive attempt has written so far. Dropped before [`Unfinished::keep`] (the
/// attempt failed or was cancelled), it removes them: none belongs to a month that was dropped.
struct Unfinished(Vec<PathBuf>);

impl Unfinished {
    /// The attempt succeeded: its files stay.
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        for path in self.0.drain(..).rev() {
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => tracing::warn!(
                    path = %path.display(),
                    %error,
                    "could not remove a file of an unfinished archive"
                ),
                _ => {}
            }
        }
    }
}

/// Rows, sum of `value_mg` and SHA-256 of a compressed archive's CSV. Records are split on newlines
/// outside quotes (a quoted `source_id` may hold any character); `value_mg` is the last field.
pub fn read_back(path: &Path) -> std::io::Result<(i64, i64, String)> {
    let mut reader = BufReader::new(GzDecoder::new(File::open(path)?));
    let mut hasher = Sha256::new();
    let (mut rows, mut sum) = (0i64, 0i64);
    let mut record: Vec<u8> = Vec::new();
    let (mut in_quotes, mut last_field, mut header) = (false, 0, true);
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        for &byte in chunk {
            match byte {
                b'"' => in_quotes = !in_quotes,
                b',' if !in_quotes => last_field = record.len() + 1,
                b'\n' if !in_quotes => {
                    if !header {
                        let value = std::str::from_utf8(&record[last_field..]).unwrap_or_default();
                        sum += value.trim_end_matches('\r').parse::<i64>().map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("bad value_mg {value:?}"),
                            )
                        })?;
                        rows += 1;
                    }
                    header = false;
                    record.clear();
                    last_field = 0;
                    continue;
                }
                _ => {}
            }
            record.push(byte);
        }
        let consumed = chunk.len();
        reader.consume(consumed);
    }
    Ok((rows, sum, hex::encode(hasher.finalize())))
}

/// Retires one partition, retrying a few times when a lock is not granted within 2 s (detaching
/// needs a moment of exclusive access to `measurements`; queueing longer would stall ingestion).
async fn retire(
    pool: &PgPool,
    partition: &ExpiredPartition,
    now: DateTime<Utc>,
) -> Result<(), RetentionError> {
    let mut attempt = 1;
    loop {
        match retire_once(pool, partition, now).await {
            Err(RetentionError::Database(error)) if is_lock_timeout(&error) && attempt < 5 => {
                tracing::warn!(partition = %partition.name, attempt, "waiting for a lock to retire a partition");
                tokio::time::sleep(std::time::Duration::from_secs(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn is_lock_timeout(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).as_deref() == Some("55P03")
}

/// In one transaction: stop writes to the partition, check it still holds what was archived,
/// record its per-site aggregates and the new retirement point, detach it and drop it.
async fn retire_once(
    pool: &PgPool,
    partition: &ExpiredPartition,
    now: DateTime<Utc>,
) -> Result<(), RetentionError> {
    let mut tx = pool.begin().await?;
    sqlx::query!("set local lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    // Serialises with every creator of months (they read this row `for share`) and re-reads the
    // limits: a plume started meanwhile with a wider window stops the retirement.
    let widest = sqlx::query_scalar!("select widest_window_days from measurements_settings for update")
        .fetch_one(&mut *tx)
        .await?;
    if partition.to > last_retirable(now, i64::from(widest)) {
        return Err(RetentionError::Widened(partition.name.clone(), widest));
    }
    let table = quote_ident(&partition.name);
    // Readers go on; writers wait (none are expected: the month is outside every window).
    sqlx::query(&format!("lock table {table} in share mode"))
        .execute(&mut *tx)
        .await?;
    let (rows, sum_mg): (i64, i64) = sqlx::query_as(&format!(
        "select count(*), coalesce(sum(value_mg), 0)::bigint from {table}"
    ))
    .fetch_one(&mut *tx)
    .await?;
    if (rows, sum_mg) != (partition.rows, partition.sum_mg) {
        return Err(RetentionError::Changed(partition.name.clone()));
    }
    let archive = partition.archive.as_ref().map(|p| p.display().to_string());
    sqlx::query(&format!(
        "insert into retired_partitions
             (partition_name, range_from, range_to, site_id, readings, sum_mg, first_reading_at, last_reading_at, archive_path)
         select $1, $2, $3, site_id, count(*), sum(value_mg)::bigint, min(measured_at), max(measured_at), $4
           from {table} group by site_id"
    ))
    .bind(&partition.name)
    .bind(partition.from)
    .bind(partition.to)
    .bind(archive)
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update measurements_settings set retired_before = greatest(retired_before, $1)",
        partition.to
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "alter table {MEASUREMENTS_TABLE} detach partition {table}"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!("drop table {table}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Passes bytes through to `inner` and hashes them on the way.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_the_start_of_the_month_keep_months_back() {
        let now: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        assert_eq!(
            cutoff(0, now),
            "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            cutoff(25, now),
            "2024-10-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
