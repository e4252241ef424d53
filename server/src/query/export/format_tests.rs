use axum::body::Bytes;
use chrono::{DateTime, SecondsFormat};
use partitioning::copy::BinaryCopy;

use super::*;

fn copy_of(rows: &[(i64, &str, i64, i64)]) -> Vec<u8> {
    let mut copy = BinaryCopy::with_capacity(0);
    for (site_id, source_id, unix_micros, value_mg) in rows {
        copy.row(4);
        copy.bigint(*site_id);
        copy.text(source_id);
        copy.timestamptz(*unix_micros);
        copy.bigint(*value_mg);
    }
    copy.finish()
}

/// The export of `data` pushed `piece` bytes at a time, in chunks of 16 bytes or more.
fn export_bytes(format: ExportFormat, data: &[u8], piece: usize) -> Vec<u8> {
    let mut writer = RowWriter::new(format, 16, vec![("plume.test".into(), "yes".into())]);
    let mut out = Vec::new();
    for part in data.chunks(piece) {
        writer.push(part).unwrap();
        while let Some(chunk) = writer.full_chunk() {
            assert!(
                (16..32).contains(&chunk.len()),
                "a chunk of {} bytes",
                chunk.len()
            );
            out.extend_from_slice(&chunk);
        }
    }
    out.extend_from_slice(&writer.finish().unwrap());
    out
}

fn export(format: ExportFormat, data: &[u8], piece: usize) -> String {
    String::from_utf8(export_bytes(format, data, piece)).unwrap()
}

#[test]
fn csv_and_ndjson_whatever_the_pieces_the_data_arrives_in() {
    let data = copy_of(&[
        (7, "stack-1", 1_769_860_800_000_000, 1_500_000),
        (7, "north, \"old\"", 1_769_860_800_123_000, 5),
    ]);
    let csv = "site_id,source_id,measured_at,value_kg\n\
               7,stack-1,2026-01-31T12:00:00Z,1.500000\n\
               7,\"north, \"\"old\"\"\",2026-01-31T12:00:00.123Z,0.000005\n";
    let ndjson = "{\"site_id\":7,\"source_id\":\"stack-1\",\"measured_at\":\"2026-01-31T12:00:00Z\",\"value_kg\":\"1.500000\"}\n\
                  {\"site_id\":7,\"source_id\":\"north, \\\"old\\\"\",\"measured_at\":\"2026-01-31T12:00:00.123Z\",\"value_kg\":\"0.000005\"}\n";
    for piece in [1, 3, 7, data.len()] {
        assert_eq!(export(ExportFormat::Csv, &data, piece), csv);
        assert_eq!(export(ExportFormat::Ndjson, &data, piece), ndjson);
    }
}

#[test]
fn a_source_id_a_spreadsheet_would_run_is_made_text_unless_raw() {
    let data = copy_of(&[
        (7, "=HYPERLINK(\"http://x\",\"y\")", 1_769_860_800_000_000, 1),
        (7, "+1", 1_769_860_800_000_000, 1),
        (7, "@sum", 1_769_860_800_000_000, 1),
        (7, "-2", 1_769_860_800_000_000, 1),
        (7, "a=b", 1_769_860_800_000_000, 1),
    ]);
    let sources = |csv: String| -> Vec<String> {
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        reader.records().map(|r| r.unwrap()[1].to_owned()).collect()
    };
    assert_eq!(
        sources(export(ExportFormat::Csv, &data, data.len())),
        ["'=HYPERLINK(\"http://x\",\"y\")", "'+1", "'@sum", "'-2", "a=b"]
    );
    assert_eq!(
        sources(export(ExportFormat::RawCsv, &data, data.len())),
        ["=HYPERLINK(\"http://x\",\"y\")", "+1", "@sum", "-2", "a=b"]
    );
}

#[test]
fn an_empty_export_is_a_csv_header_or_nothing() {
    let data = copy_of(&[]);
    assert_eq!(export(ExportFormat::Csv, &data, 5), CSV_HEADER);
    assert_eq!(export(ExportFormat::Ndjson, &data, 5), "");
}

#[test]
fn timestamps_are_written_as_chrono_writes_them() {
    let mut state = 0x1234_5678_u64;
    let mut samples = vec![
        0,
        -1,
        951_782_400_000_000,
        4_102_444_799_999_999,
        -2_208_988_800_000_000,
    ];
    for _ in 0..20_000 {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let micros = (state >> 8) as i64 % 4_102_444_800_000_000 - 1_000_000_000_000_000;
        // Whole seconds and milliseconds too, which are written shorter.
        samples.extend([micros, micros / 1_000_000 * 1_000_000, micros / 1000 * 1000]);
    }
    for micros in samples {
        let mut out = Vec::new();
        write_rfc3339(&mut out, micros);
        let expected = DateTime::from_timestamp_micros(micros)
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true);
        assert_eq!(String::from_utf8(out).unwrap(), expected, "{micros}");
    }
}

#[test]
fn kilograms_match_the_apis_quantities() {
    for mg in [0, 1, 999_999, 1_000_000, 123_456_789, i64::MAX] {
        let mut out = Vec::new();
        write_kilograms(&mut out, mg);
        let expected = crate::quantity::Milligrams::from_mg(mg).to_string();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}

#[test]
fn broken_copy_data_is_an_error_not_a_silent_gap() {
    let mut writer = RowWriter::new(ExportFormat::Csv, 16, Vec::new());
    assert!(writer.push(b"NOTPGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0").is_err());
    let mut data = copy_of(&[]);
    data.truncate(19);
    data.extend_from_slice(&3_i16.to_be_bytes());
    let mut writer = RowWriter::new(ExportFormat::Csv, 16, Vec::new());
    assert!(writer.push(&data).is_err());
    let mut cut = copy_of(&[(1, "a", 0, 1)]);
    cut.truncate(cut.len() - 2); // no trailer
    let mut writer = RowWriter::new(ExportFormat::Csv, 16, Vec::new());
    writer.push(&cut).unwrap();
    assert!(writer.finish().is_err());
}

/// A reading as a Parquet file holds it: site, source, µs since 1970, mg.
type Reading = (i64, String, i64, i64);

/// A Parquet file's rows, the sizes of its row groups and its footer's key-value metadata, read
/// with the parquet crate's own reader.
fn read_parquet(file: Vec<u8>) -> (Vec<Reading>, Vec<i64>, Vec<(String, String)>) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;

    let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
    let metadata = reader.metadata();
    let groups = metadata.row_groups().iter().map(|g| g.num_rows()).collect();
    let key_values = metadata
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    let rows = reader
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
    (rows, groups, key_values)
}

#[test]
fn parquet_holds_every_value_exactly_whatever_the_pieces() {
    let rows = [
        (7, "stack-1", 1_769_860_800_000_000, 1_500_000),
        (7, "north, \"old\"", 1_769_860_800_123_456, 0),
        (8, "", -2_208_988_800_000_000, i64::MAX),
        (9, "Ölfeld α", 4_102_444_799_999_999, 1),
    ];
    let data = copy_of(&rows);
    for piece in [1, 7, data.len()] {
        let (read, groups, key_values) = read_parquet(export_bytes(ExportFormat::Parquet, &data, piece));
        let expected: Vec<_> = rows
            .iter()
            .map(|(a, b, c, d)| (*a, b.to_string(), *c, *d))
            .collect();
        assert_eq!(read, expected);
        assert_eq!(groups, [4]);
        assert!(key_values.contains(&("plume.value_mg.unit".into(), "mg".into())));
        assert!(key_values.contains(&("plume.test".into(), "yes".into())));
    }
}

#[test]
fn parquet_row_groups_are_bounded_and_an_empty_export_is_a_file_without_rows() {
    use super::super::parquet::ROWS_PER_GROUP;

    // Noisy times and values, as real readings are: row groups of some size.
    let mut state = 1_u64;
    let rows: Vec<Reading> = (0..2 * ROWS_PER_GROUP as i64 + 5)
        .map(|n| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = (state >> 24) as i64;
            let at = 1_769_860_800_000_000 + noise % 86_400_000_000;
            (n % 3 + 1, format!("source-{}", n % 10), at, noise % 1_000_000_000)
        })
        .collect();
    let borrowed: Vec<(i64, &str, i64, i64)> =
        rows.iter().map(|(a, b, c, d)| (*a, b.as_str(), *c, *d)).collect();
    let data = copy_of(&borrowed);
    let mut writer = RowWriter::new(ExportFormat::Parquet, 64 * 1024, Vec::new());
    let mut file = Vec::new();
    let mut largest_chunk = 0;
    for part in data.chunks(100_000) {
        writer.push(part).unwrap();
        while let Some(chunk) = writer.full_chunk() {
            largest_chunk = largest_chunk.max(chunk.len());
            file.extend_from_slice(&chunk);
        }
    }
    // The first row groups went out before the data ended.
    assert!(!file.is_empty());
    assert!(largest_chunk < 128 * 1024, "a chunk of {largest_chunk} bytes");
    file.extend_from_slice(&writer.finish().unwrap());
    let (read, groups, _) = read_parquet(file);
    assert_eq!(groups, [ROWS_PER_GROUP as i64, ROWS_PER_GROUP as i64, 5]);
    assert_eq!(read, rows);

    let (read, groups, _) = read_parquet(export_bytes(ExportFormat::Parquet, &copy_of(&[]), 5));
    assert_eq!((read.len(), groups.len()), (0, 0));
}
