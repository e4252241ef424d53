//! The loaded data set: PostgreSQL's own COPY of the same rows as the ceiling, its size on disk,
//! and `plume verify` over it.

use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context};
use futures_util::StreamExt;
use plume_bench::BenchDatabase;
use sqlx::postgres::PgPoolCopyExt;

use crate::Args;

/// `psql \copy` of the first sites' rows into an empty copy of the schema, two streams at once.
pub(crate) async fn ceiling(args: &Args, db: &BenchDatabase) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in("/tmp")?;
    let mut files = Vec::new();
    for stream in 0..2_u64 {
        let path = dir.path().join(format!("stream-{stream}.bin"));
        let statement = format!(
            "copy (select site_id, source_id, measured_at, value_mg from measurements
                    where site_id in (select id from sites order by id offset {} limit {})) to stdout (format binary)",
            stream * args.ceiling_rows_per_stream / args.readings_per_site,
            args.ceiling_rows_per_stream / args.readings_per_site,
        );
        // One row per chunk: written through a buffer, not a file write each.
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&path).await?);
        let mut copy = db.pool.copy_out_raw(&statement).await?;
        while let Some(chunk) = copy.next().await {
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk?).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut out).await?;
        files.push(path);
    }
    let url = db.on_same_server().await?;
    let started = Instant::now();
    let children: Vec<_> = files
        .iter()
        .map(|file| {
            Command::new("psql")
                .args([url.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!(
                    "\\copy measurements (site_id, source_id, measured_at, value_mg) from '{}' (format binary)",
                    file.display()
                ))
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut child in children {
        ensure!(child.wait()?.success(), "psql \\copy failed");
    }
    let seconds = started.elapsed().as_secs_f64();
    let name = url
        .split('?')
        .next()
        .and_then(|base| base.rsplit('/').next())
        .context("a database URL names its database")?;
    sqlx::query(&format!("drop database {name}"))
        .execute(&db.pool)
        .await?;
    let rows = 2 * args.ceiling_rows_per_stream;
    println!(
        "ceiling, psql \\copy of {rows} of the same rows into an empty copy of the schema, 2 streams: \
         {seconds:.1} s = {:.0} rows/s\n",
        rows as f64 / seconds
    );
    Ok(())
}

/// Heap, indexes and the other tables, per reading.
pub(crate) async fn disk(db: &BenchDatabase, readings: i64) -> anyhow::Result<()> {
    let sizes: Vec<(String, i64)> = sqlx::query_as(
        "select 'measurements heap', sum(pg_relation_size(i.inhrelid))::bigint
           from pg_inherits i where i.inhparent = 'measurements'::regclass
         union all
         select 'measurements identity index', sum(pg_indexes_size(i.inhrelid))::bigint
           from pg_inherits i where i.inhparent = 'measurements'::regclass
         union all
         select 'hourly_rollups (heap and index)', pg_total_relation_size('hourly_rollups')
         union all
         select 'source_heads, sites', pg_total_relation_size('source_heads') + pg_total_relation_size('sites')
         union all
         select 'whole database', pg_database_size(current_database())",
    )
    .fetch_all(&db.pool)
    .await?;
    println!("| on disk | bytes | GiB | bytes per reading |\n| --- | --- | --- | --- |");
    for (name, bytes) in sizes {
        println!(
            "| {name} | {bytes} | {:.2} | {:.1} |",
            bytes as f64 / f64::from(1 << 30),
            bytes as f64 / readings as f64
        );
    }
    println!();
    Ok(())
}

/// `plume verify` over everything, timed.
pub(crate) async fn verify_command(args: &Args, db: &BenchDatabase) -> anyhow::Result<()> {
    let started = Instant::now();
    let output = Command::new(&args.plume_binary)
        .args(["verify", "--database-url", &db.url])
        .env("RUST_LOG", "warn")
        .output()?;
    println!(
        "plume verify: {} in {:.1} s: {}\n",
        if output.status.success() { "clean" } else { "DRIFT" },
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stdout).trim()
    );
    ensure!(output.status.success(), "plume verify found drift");
    Ok(())
}
