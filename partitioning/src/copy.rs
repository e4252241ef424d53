//! Writing rows in PostgreSQL's binary `COPY` format.
//!
//! The binary format skips PostgreSQL's text parsing of every timestamp and number, which is most
//! of the cost of a text `COPY` of readings.

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01T00:00:00Z).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One complete binary `COPY` stream being written: header, rows, trailer.
#[derive(Debug)]
pub struct BinaryCopy {
    buffer: Vec<u8>,
}

impl BinaryCopy {
    /// A stream with room for `capacity` bytes of rows, its header written.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buffer = Vec::with_capacity(19 + capacity + 2);
        buffer.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buffer.extend_from_slice(&0_i32.to_be_bytes()); // flags: no OIDs
        buffer.extend_from_slice(&0_i32.to_be_bytes()); // header extension length
        Self { buffer }
    }

    /// Starts a row of `fields` fields; exactly that many field calls must follow.
    pub fn row(&mut self, fields: i16) {
        self.buffer.extend_from_slice(&fields.to_be_bytes());
    }

    /// A `bigint` field.
    pub fn bigint(&mut self, value: i64) {
        self.buffer.extend_from_slice(&8_i32.to_be_bytes());
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    /// A `timestamptz` field, given in microseconds since the Unix epoch.
    pub fn timestamptz(&mut self, unix_micros: i64) {
        self.bigint(unix_micros - POSTGRES_EPOCH_MICROS);
    }

    /// A `text` field.
    pub fn text(&mut self, text: &str) {
        self.buffer.extend_from_slice(&(text.len() as i32).to_be_bytes());
        self.buffer.extend_from_slice(text.as_bytes());
    }

    /// Writes the trailer and returns the stream.
    pub fn finish(mut self) -> Vec<u8> {
        self.buffer.extend_from_slice(&(-1_i16).to_be_bytes());
        self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_header_fields_and_trailer() {
        let mut copy = BinaryCopy::with_capacity(0);
        copy.row(3);
        copy.bigint(7);
        copy.text("ab");
        copy.timestamptz(946_684_801_000_000);
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(copy.finish(), expected);
    }
}
