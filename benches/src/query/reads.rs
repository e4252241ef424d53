//! Timing the read endpoints, next to the same queries without HTTP, and the exports, next to
//! PostgreSQL's own CSV `COPY`.

use std::time::Instant;

use anyhow::ensure;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use plume::query::params::SeriesRequest;
use plume::query::{readings, series, Bucket, TimeRange};
use plume::sites::SiteId;
use plume_bench::service::Service;
use plume_bench::{nearest_rank, BenchDatabase};
use sqlx::postgres::PgPoolCopyExt;

use crate::{stamp, Args, ExportFormat};

/// Latencies of one kind of request, in milliseconds.
struct Latencies {
    name: String,
    millis: Vec<f64>,
}

impl Latencies {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.millis.clone();
        sorted.sort_by(f64::total_cmp);
        nearest_rank(&sorted, p)
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.2} | {:.2} |",
            self.name,
            self.millis.len(),
            self.percentile(0.5),
            self.percentile(0.99)
        )
    }
}

/// A small deterministic generator for picking sites and times.
struct Picker(u64);

impl Picker {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

/// The request paths of each endpoint, on random sites, and what sends the same query straight
/// to PostgreSQL.
pub(crate) async fn latencies(
    args: &Args,
    db: &BenchDatabase,
    service: &Service,
    sites: &[i64],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> anyhow::Result<()> {
    let http = db.admin_token.client()?;
    let hours = (to - from).num_hours() as u64;
    let full = (
        partitioning::month_start(from),
        partitioning::next_month(partitioning::month_start(to - chrono::Duration::days(1))),
    );
    let mut results = Vec::new();
    for kind in [
        "metrics",
        "series, 30 days hourly",
        "series, full history monthly",
        "readings page of 1,000",
    ] {
        let mut http_times = Latencies {
            name: format!("`GET` {kind}"),
            millis: Vec::new(),
        };
        let mut sql_times = Latencies {
            name: format!("the same query without HTTP: {kind}"),
            millis: Vec::new(),
        };
        for pass in 0..2 {
            // The second pass asks for exactly what the first did, so every request is warm.
            let mut picker = Picker(7);
            for _ in 0..args.requests {
                let site = sites[picker.next(sites.len() as u64) as usize];
                let start = from + chrono::Duration::hours(picker.next(hours.saturating_sub(30 * 24)) as i64);
                let (path, sql_elapsed) = match kind {
                    "metrics" => {
                        let t = Instant::now();
                        plume::sites::find(&db.pool, plume::sites::SiteId::new(site).unwrap()).await?;
                        (format!("/v1/sites/{site}/metrics"), t.elapsed())
                    }
                    "readings page of 1,000" => {
                        let t = Instant::now();
                        let rows = sqlx::query(readings::PAGE_SQL)
                            .bind(site)
                            .bind(start)
                            .bind(to)
                            .bind("")
                            .bind(start)
                            .bind(1001_i64)
                            .fetch_all(&db.pool)
                            .await?;
                        ensure!(rows.len() == 1001, "a page came back short: {}", rows.len());
                        (
                            format!(
                                "/v2/sites/{site}/readings?from={}&to={}&limit=1000",
                                stamp(start),
                                stamp(to)
                            ),
                            t.elapsed(),
                        )
                    }
                    _ => {
                        let (range, bucket) = if kind.contains("30 days") {
                            ((start, start + chrono::Duration::days(30)), "hour")
                        } else {
                            (full, "month")
                        };
                        let request = SeriesRequest {
                            range: TimeRange {
                                from: range.0,
                                to: range.1,
                            },
                            bucket: Bucket::parse(bucket).expect("a bucket name"),
                        };
                        let t = Instant::now();
                        series::series(&db.pool, SiteId::new(site).expect("a site id"), request).await?;
                        let path = format!(
                            "/v2/sites/{site}/series?from={}&to={}&bucket={bucket}",
                            stamp(range.0),
                            stamp(range.1)
                        );
                        (path, t.elapsed())
                    }
                };
                let t = Instant::now();
                let response = http.get(format!("{}{path}", service.address())).send().await?;
                ensure!(response.status().is_success(), "{path}: {}", response.status());
                response.bytes().await?;
                if pass == 1 {
                    http_times.millis.push(t.elapsed().as_secs_f64() * 1e3);
                    sql_times.millis.push(sql_elapsed.as_secs_f64() * 1e3);
                }
            }
        }
        results.push(http_times);
        results.push(sql_times);
    }
    println!("| request (one client, warm) | requests | p50 ms | p99 ms |\n| --- | --- | --- | --- |");
    for result in &results {
        println!("{}", result.row());
    }
    println!();
    Ok(())
}

/// Full-history exports of random sites and one month of every site, in each format asked for,
/// beside PostgreSQL's own CSV `COPY` of the same rows.
pub(crate) async fn exports(
    args: &Args,
    db: &BenchDatabase,
    service: &Service,
    sites: &[i64],
    (from, _to): (DateTime<Utc>, DateTime<Utc>),
    rss_before: u64,
) -> anyhow::Result<()> {
    let http = db.admin_token.client()?;
    let mut picker = Picker(11);
    println!(
        "| export | format | rows | MB | bytes a row | plume rows/s | PostgreSQL `COPY ... (FORMAT csv)` rows/s |\n\
         | --- | --- | --- | --- | --- | --- | --- |"
    );
    let month = partitioning::next_month(partitioning::month_start(from));
    let mut cases: Vec<(String, String, String)> = (0..args.exports)
        .map(|_| {
            let site = sites[picker.next(sites.len() as u64) as usize];
            (
                format!("site {site}, full history"),
                format!("/v2/export?site_id={site}"),
                format!("site_id = {site}"),
            )
        })
        .collect();
    let month_end = partitioning::next_month(month);
    cases.push((
        format!("every site, {}", month.format("%B %Y")),
        format!("/v2/export?from={}&to={}", stamp(month), stamp(month_end)),
        format!(
            "measured_at >= '{}' and measured_at < '{}'",
            stamp(month),
            stamp(month_end)
        ),
    ));
    let mut full_history = Rates::default();
    let mut largest_footer: Option<(u32, usize)> = None;
    for (name, path, filter) in cases {
        let statement = format!(
            "copy (select site_id, source_id, measured_at, value_mg / 1e6 from measurements where {filter})
               to stdout (format csv)"
        );
        let mut measured = Vec::new();
        for format in &args.formats {
            let url = format!("{}{path}&format={}", service.address(), format.name());
            // Untimed first: the timed runs find the rows in memory, as the latency runs do.
            download(&http, &url, *format).await?;
            let t = Instant::now();
            let got = download(&http, &url, *format).await?;
            let seconds = t.elapsed().as_secs_f64();
            if let Some((footer, groups)) = got.parquet_footer {
                if largest_footer.is_none_or(|(_, most)| groups > most) {
                    largest_footer = Some((footer, groups));
                }
            }
            measured.push((*format, got.bytes, got.rows, seconds));
        }
        let t = Instant::now();
        let mut copy = db.pool.copy_out_raw(&statement).await?;
        while let Some(chunk) = copy.next().await {
            chunk?;
        }
        let postgres_seconds = t.elapsed().as_secs_f64();
        let rows = measured.first().map_or(0, |m| m.2);
        ensure!(
            measured.iter().all(|m| m.2 == rows),
            "{name}: the formats held different row counts: {measured:?}"
        );
        let postgres_rate = rows as f64 / postgres_seconds;
        let is_full_history = name.contains("full history");
        if is_full_history {
            full_history.postgres.push(postgres_rate);
        }
        for (format, bytes, rows, seconds) in measured {
            let plume_rate = rows as f64 / seconds;
            if is_full_history {
                full_history
                    .plume
                    .entry(format.name())
                    .or_default()
                    .push(plume_rate);
            }
            println!(
                "| {name} | {} | {rows} | {:.2} | {:.1} | {plume_rate:.0} | {postgres_rate:.0} |",
                format.name(),
                bytes as f64 / 1e6,
                bytes as f64 / rows.max(1) as f64,
            );
        }
    }
    println!();
    for format in &args.formats {
        let rates = full_history.plume.entry(format.name()).or_default();
        println!(
            "full histories, median: plume {} {:.0} rows/s",
            format.name(),
            median(rates)
        );
    }
    println!(
        "full histories, median: PostgreSQL's own CSV COPY {:.0} rows/s",
        median(&mut full_history.postgres)
    );
    if let Some((footer, groups)) = largest_footer {
        println!("the largest Parquet export's footer: {footer} bytes for {groups} row groups");
    }
    let rss_after = service.peak_rss()?.unwrap_or(0);
    println!(
        "\nplume's peak resident memory (VmHWM): {:.1} MB before the exports (after the latency runs), \
         {:.1} MB after them\n",
        rss_before as f64 / 1e6,
        rss_after as f64 / 1e6
    );
    Ok(())
}

/// One export downloaded.
#[derive(Debug)]
struct Download {
    bytes: u64,
    rows: u64,
    /// A Parquet file's footer: its bytes and the row groups it lists.
    parquet_footer: Option<(u32, usize)>,
}

/// Export rates of full histories, plume's by format.
#[derive(Default)]
struct Rates {
    plume: std::collections::BTreeMap<&'static str, Vec<f64>>,
    postgres: Vec<f64>,
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

/// Downloads `url` (an export in `format`). A Parquet file is kept until its end, where its footer
/// tells its rows; CSV and NDJSON are counted by lines.
async fn download(http: &reqwest::Client, url: &str, format: ExportFormat) -> anyhow::Result<Download> {
    let mut response = http.get(url).send().await?;
    ensure!(response.status().is_success(), "{url}: {}", response.status());
    let (mut bytes, mut lines, mut file) = (0_u64, 0_u64, Vec::new());
    let mut parquet_footer = None;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        if format == ExportFormat::Parquet {
            file.extend_from_slice(&chunk);
        } else {
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    let rows = match format {
        ExportFormat::Csv => lines.saturating_sub(1),
        ExportFormat::Ndjson => lines,
        ExportFormat::Parquet => {
            use parquet::file::reader::{FileReader, SerializedFileReader};
            // The footer ends the file: its length, then the magic number.
            ensure!(
                file.len() >= 12 && file.ends_with(b"PAR1"),
                "{url}: not a Parquet file"
            );
            let at = file.len() - 8;
            let footer = u32::from_le_bytes(file[at..at + 4].try_into()?);
            let reader = SerializedFileReader::new(axum::body::Bytes::from(file))?;
            parquet_footer = Some((footer, reader.metadata().num_row_groups()));
            u64::try_from(reader.metadata().file_metadata().num_rows())?
        }
    };
    Ok(Download {
        bytes,
        rows,
        parquet_footer,
    })
}
