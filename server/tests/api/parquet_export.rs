//! Parquet exports read back with the parquet crate's reader and compared, row for row and in sums,
//! with the stored readings. (`scripts/export-interop.sh` reads them with pyarrow and DuckDB.)

use chrono::{DateTime, Utc};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;
use plume::query::export::parquet::ROWS_PER_GROUP;
use reqwest::StatusCode;
use seeds::synthetic::Plan;

use crate::helpers::{spawn_app, TestApp};

/// A reading as the file and the table both hold it: site, source, µs since 1970, mg.
type Reading = (i64, String, i64, i64);

/// A Parquet export as read back: its rows, its row groups' sizes, its columns as
/// `name physical-type logical-type`, and its footer's key-value metadata.
struct ParquetFile {
    rows: Vec<Reading>,
    row_groups: Vec<i64>,
    columns: Vec<String>,
    key_values: Vec<(String, String)>,
}

/// Downloads `path`, checks it is a Parquet download, and reads it.
async fn download(app: &TestApp, path: &str) -> ParquetFile {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"plume-") && disposition.ends_with(".parquet\""),
        "{disposition}"
    );
    let reader = SerializedFileReader::new(response.bytes().await.unwrap()).unwrap();
    let metadata = reader.metadata();
    let columns = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|column| {
            format!(
                "{} {} {:?}",
                column.name(),
                column.physical_type(),
                column.logical_type_ref()
            )
        })
        .collect();
    let key_values = metadata
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    let row_groups = metadata.row_groups().iter().map(|g| g.num_rows()).collect();
    let mut rows: Vec<Reading> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            (
                row.get_long(0).unwrap(),
                row.get_string(1).unwrap().clone(),
                row.get_timestamp_micros(2).unwrap(),
                row.get_long(3).unwrap(),
            )
        })
        .collect();
    rows.sort();
    ParquetFile {
        rows,
        row_groups,
        columns,
        key_values,
    }
}

/// The stored readings of `site` (every site for `None`) in `[from, to)`, sorted, with their count
/// and sum as PostgreSQL computes them.
async fn stored(app: &TestApp, site: Option<i64>, from: &str, to: &str) -> (Vec<Reading>, i64, i128) {
    let (from, to): (DateTime<Utc>, DateTime<Utc>) = (from.parse().unwrap(), to.parse().unwrap());
    let filter = "($1::bigint is null or site_id = $1) and measured_at >= $2 and measured_at < $3";
    let rows: Vec<(i64, String, DateTime<Utc>, i64)> = sqlx::query_as(&format!(
        "select site_id, source_id, measured_at, value_mg from measurements where {filter}"
    ))
    .bind(site)
    .bind(from)
    .bind(to)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let (count, sum): (i64, String) = sqlx::query_as(&format!(
        "select count(*), coalesce(sum(value_mg), 0)::text from measurements where {filter}"
    ))
    .bind(site)
    .bind(from)
    .bind(to)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let mut rows: Vec<Reading> = rows
        .into_iter()
        .map(|(site, source, at, mg)| (site, source, at.timestamp_micros(), mg))
        .collect();
    rows.sort();
    (rows, count, sum.parse().unwrap())
}

fn sum_mg(rows: &[Reading]) -> i128 {
    rows.iter().map(|r| i128::from(r.3)).sum()
}

#[tokio::test]
async fn a_parquet_export_holds_every_reading_of_the_range_exactly_in_typed_columns() {
    let app = spawn_app().await;
    let plan = Plan {
        sites: 3,
        readings_per_site: 3_000,
        sources: 3,
        from: "2026-01-01T00:00:00Z".parse().unwrap(),
        to: "2026-04-01T00:00:00Z".parse().unwrap(),
        seed: 8,
    };
    seeds::load::load(&app.pool, &plan, 2, |_| {}).await.unwrap();
    let sites: Vec<i64> = sqlx::query_scalar("select id from sites order by id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    // Beside the synthetic ones: a value beyond what a decimal(18,6) of kilograms could hold,
    // a source id that CSV would quote, and a time with microseconds.
    sqlx::query(
        "insert into measurements (site_id, source_id, measured_at, value_mg) values
           ($1, 'Ölfeld \"α\", 1', '2026-02-03T04:05:06.789012Z', 9223372036854775807),
           ($1, '', '2026-02-03T04:05:06Z', 0)",
    )
    .bind(sites[0])
    .execute(&app.pool)
    .await
    .unwrap();
    let (from, to) = ("1900-01-01T00:00:00Z", "9999-12-31T00:00:00Z");

    let file = download(&app, &format!("/v2/export?site_id={}&format=parquet", sites[0])).await;
    let (expected, count, sum) = stored(&app, Some(sites[0]), from, to).await;
    assert_eq!(
        file.columns,
        [
            "site_id INT64 None",
            "source_id BYTE_ARRAY Some(String)",
            "measured_at INT64 Some(Timestamp(TimestampType { is_adjusted_to_u_t_c: true, unit: MICROS }))",
            "value_mg INT64 None",
        ]
    );
    assert!(file
        .key_values
        .contains(&("plume.value_mg.unit".into(), "mg".into())));
    assert!(file
        .key_values
        .contains(&("plume.export.site_id".into(), sites[0].to_string())));
    assert_eq!(file.rows, expected);
    assert_eq!((file.rows.len() as i64, sum_mg(&file.rows)), (count, sum));
    assert_eq!(count, 3_002);
    assert_eq!(file.row_groups, [count]);

    // Every site, half a month.
    let (from, to) = ("2026-02-01T00:00:00Z", "2026-02-15T06:00:00Z");
    let file = download(&app, &format!("/v2/export?from={from}&to={to}&format=parquet")).await;
    let (expected, count, sum) = stored(&app, None, from, to).await;
    assert!(count > 1_000, "{count}");
    assert_eq!(file.rows, expected);
    assert_eq!((file.rows.len() as i64, sum_mg(&file.rows)), (count, sum));
    assert!(file
        .key_values
        .contains(&("plume.export.from".into(), from.into())));

    // Nothing in range: a valid file with the same columns and no rows.
    let empty = download(
        &app,
        &format!(
            "/v2/export?site_id={}&from=2025-01-01T00:00:00Z&to=2025-02-01T00:00:00Z&format=parquet",
            sites[1]
        ),
    )
    .await;
    assert_eq!((empty.rows.len(), empty.row_groups.len()), (0, 0));
    assert_eq!(empty.columns.len(), 4);
}

#[tokio::test]
async fn a_large_parquet_export_comes_in_bounded_row_groups_and_adds_up() {
    let app = spawn_app().await;
    let site = app.create_site("Large", "100").await;
    let rows = 2 * ROWS_PER_GROUP as i64 + 1_234;
    sqlx::query(
        "insert into measurements (site_id, source_id, measured_at, value_mg)
         select $1, 'source-' || (n % 10), now() - interval '1 hour' - n * interval '1 second',
                (n * 7919) % 5000000
           from generate_series(1, $2) n",
    )
    .bind(site)
    .bind(rows)
    .execute(&app.pool)
    .await
    .unwrap();

    let file = download(&app, &format!("/v2/export?site_id={site}&format=parquet")).await;
    let (expected, count, sum) =
        stored(&app, Some(site), "1900-01-01T00:00:00Z", "9999-12-31T00:00:00Z").await;
    assert_eq!(count, rows);
    assert_eq!(
        file.row_groups,
        [ROWS_PER_GROUP as i64, ROWS_PER_GROUP as i64, 1_234]
    );
    assert_eq!((file.rows.len() as i64, sum_mg(&file.rows)), (count, sum));
    assert_eq!(file.rows, expected);
}
