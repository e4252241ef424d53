//! Encoding readings for `COPY ... FROM STDIN (FORMAT binary)`.
//!
//! The binary format skips PostgreSQL's text parsing of every timestamp and number. Each row is the
//! staging table's (and `measurements`') four columns: `site_id bigint, source_id text,
//! measured_at timestamptz, value_mg bigint`.

use super::fresh::SiteReading;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01T00:00:00Z).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `COPY` the buffer from [`encode`] is written for: into the connection's staging table.
pub const COPY_STAGING: &str =
    "copy ingest_staging (site_id, source_id, measured_at, value_mg) from stdin (format binary)";

/// A `COPY` the buffer from [`encode`] is written for: straight into the measurements.
pub const COPY_MEASUREMENTS: &str =
    "copy measurements (site_id, source_id, measured_at, value_mg) from stdin (format binary)";

/// Encodes `rows` as one complete binary COPY stream: header, one tuple each, trailer.
pub fn encode(rows: &[SiteReading<'_>]) -> Vec<u8> {
    let payload: usize = rows
        .iter()
        .map(|(_, r)| 2 + 4 + 8 + 4 + r.source_id.len() + 4 + 8 + 4 + 8)
        .sum();
    let mut buffer = Vec::with_capacity(19 + payload + 2);
    buffer.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buffer.extend_from_slice(&0_i32.to_be_bytes()); // flags: no OIDs
    buffer.extend_from_slice(&0_i32.to_be_bytes()); // header extension length
    for (site_id, reading) in rows {
        buffer.extend_from_slice(&4_i16.to_be_bytes());
        buffer.extend_from_slice(&8_i32.to_be_bytes());
        buffer.extend_from_slice(&site_id.get().to_be_bytes());
        buffer.extend_from_slice(&(reading.source_id.len() as i32).to_be_bytes());
        buffer.extend_from_slice(reading.source_id.as_bytes());
        buffer.extend_from_slice(&8_i32.to_be_bytes());
        let micros = reading.measured_at.timestamp_micros() - POSTGRES_EPOCH_MICROS;
        buffer.extend_from_slice(&micros.to_be_bytes());
        buffer.extend_from_slice(&8_i32.to_be_bytes());
        buffer.extend_from_slice(&reading.value.mg().to_be_bytes());
    }
    buffer.extend_from_slice(&(-1_i16).to_be_bytes());
    buffer
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
