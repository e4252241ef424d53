//! Encoding readings for `COPY ... FROM STDIN (FORMAT binary)`.
//!
//! Each row is `measurements`' four columns: `site_id bigint, source_id text, measured_at
//! timestamptz, value_mg bigint`; the staging table's rows add `part bigint`.

use partitioning::copy::BinaryCopy;

use super::fresh::SiteReading;

/// A `COPY` the buffer from [`encode_staged`] is written for: into the connection's staging table.
pub const COPY_STAGING: &str =
    "copy ingest_staging (site_id, source_id, measured_at, value_mg, part) from stdin (format binary)";

/// A `COPY` the buffer from [`encode`] is written for: straight into the measurements.
pub const COPY_MEASUREMENTS: &str =
    "copy measurements (site_id, source_id, measured_at, value_mg) from stdin (format binary)";

/// Encodes `rows` as one complete binary COPY stream: header, one tuple each, trailer.
pub fn encode(rows: &[SiteReading<'_>]) -> Vec<u8> {
    let payload: usize = rows
        .iter()
        .map(|(_, r)| 2 + 4 + 8 + 4 + r.source_id.len() + 4 + 8 + 4 + 8)
        .sum();
    let mut copy = BinaryCopy::with_capacity(payload);
    for (site_id, reading) in rows {
        copy.row(4);
        copy.bigint(site_id.get());
        copy.text(&reading.source_id);
        copy.timestamptz(reading.measured_at.timestamp_micros());
        copy.bigint(reading.value.mg());
    }
    copy.finish()
}

/// Encodes `rows` for the staging table: the four columns of [`encode`], then each row's part of
/// its group (`parts`, in the same order).
pub fn encode_staged(rows: &[SiteReading<'_>], parts: &[i64]) -> Vec<u8> {
    debug_assert_eq!(rows.len(), parts.len());
    let payload: usize = rows
        .iter()
        .map(|(_, r)| 2 + 4 + 8 + 4 + r.source_id.len() + 4 + 8 + 4 + 8 + 4 + 8)
        .sum();
    let mut copy = BinaryCopy::with_capacity(payload);
    for ((site_id, reading), part) in rows.iter().zip(parts) {
        copy.row(5);
        copy.bigint(site_id.get());
        copy.text(&reading.source_id);
        copy.timestamptz(reading.measured_at.timestamp_micros());
        copy.bigint(reading.value.mg());
        copy.bigint(*part);
    }
    copy.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Reading;
    use crate::quantity::Milligrams;
    use crate::sites::SiteId;

    #[test]
    fn encodes_header_tuples_and_trailer() {
        let reading = Reading {
            source_id: "ab".into(),
            measured_at: "2000-01-01T00:00:01Z".parse().unwrap(),
            value: Milligrams::from_mg(5),
        };
        let bytes = encode(&[(SiteId::new(7).unwrap(), &reading)]);
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 4, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
    }
}
