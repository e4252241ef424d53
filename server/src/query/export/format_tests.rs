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

fn export(format: ExportFormat, data: &[u8], piece: usize) -> String {
    let mut writer = RowWriter::new(format, 16);
    let mut out = Vec::new();
    for part in data.chunks(piece) {
        writer.push(part).unwrap();
        while let Some(chunk) = writer.full_chunk() {
            out.extend_from_slice(&chunk);
        }
    }
    out.extend_from_slice(&writer.finish().unwrap());
    String::from_utf8(out).unwrap()
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
    let mut writer = RowWriter::new(ExportFormat::Csv, 16);
    assert!(writer.push(b"NOTPGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0").is_err());
    let mut data = copy_of(&[]);
    data.truncate(19);
    data.extend_from_slice(&3_i16.to_be_bytes());
    let mut writer = RowWriter::new(ExportFormat::Csv, 16);
    assert!(writer.push(&data).is_err());
    let mut cut = copy_of(&[(1, "a", 0, 1)]);
    cut.truncate(cut.len() - 2); // no trailer
    let mut writer = RowWriter::new(ExportFormat::Csv, 16);
    writer.push(&cut).unwrap();
    assert!(writer.finish().is_err());
}
