//! Reading PostgreSQL's binary `COPY` output of `(site_id, source_id, measured_at, value_mg)` and
//! writing it as CSV or NDJSON, fast: timestamps and kilograms are written digit by digit, the
//! way the rest of the API writes them (RFC 3339 in UTC, fractions only when present; six decimals).
//! Parquet keeps the binary values as they are, in typed columns ([`super::parquet`]).

use std::io;

use axum::body::Bytes;

use super::super::params::ExportFormat;
use super::parquet::ParquetWriter;

/// The binary `COPY` signature that starts the output.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01T00:00:00Z).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// The CSV header.
const CSV_HEADER: &str = "site_id,source_id,measured_at,value_kg\n";

/// One exported reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Row<'a> {
    /// Its site.
    pub(super) site_id: i64,
    /// Its source.
    pub(super) source_id: &'a str,
    /// Its time, microseconds since the Unix epoch.
    pub(super) unix_micros: i64,
    /// Its value, mg.
    pub(super) value_mg: i64,
}

/// Turns binary `COPY` data, pushed in pieces of any size, into chunks of CSV, NDJSON or Parquet.
#[derive(Debug)]
pub(super) struct RowWriter {
    encoder: Encoder,
    chunk_bytes: usize,
    /// Input not yet parsed: a partial header or row, once `push` returns.
    pending: Vec<u8>,
    header_read: bool,
    trailer_read: bool,
    output: Vec<u8>,
    /// Output being handed out in chunks: a Parquet row group arrives in `output` all at once.
    ready: Bytes,
}

/// What a row becomes.
#[derive(Debug)]
enum Encoder {
    /// A CSV line; `raw` leaves source ids a spreadsheet would run as they are.
    Csv { raw: bool },
    /// A JSON object on a line.
    Ndjson,
    /// A row of the Parquet file's row group in the making.
    Parquet(Box<ParquetWriter>),
}

impl RowWriter {
    /// A writer of `format` handing out chunks of about `chunk_bytes`; a CSV starts with its
    /// header, and a Parquet file ends with `metadata` in its footer.
    pub(super) fn new(format: ExportFormat, chunk_bytes: usize, metadata: Vec<(String, String)>) -> Self {
        let mut output = Vec::with_capacity(chunk_bytes + 1024);
        let encoder = match format {
            ExportFormat::Csv | ExportFormat::RawCsv => {
                output.extend_from_slice(CSV_HEADER.as_bytes());
                Encoder::Csv {
                    raw: format == ExportFormat::RawCsv,
                }
            }
            ExportFormat::Ndjson => Encoder::Ndjson,
            ExportFormat::Parquet => Encoder::Parquet(Box::new(ParquetWriter::new(metadata))),
        };
        Self {
            encoder,
            chunk_bytes,
            pending: Vec::new(),
            header_read: false,
            trailer_read: false,
            output,
            ready: Bytes::new(),
        }
    }

    /// Parses `data` and writes every row it completes; only a row split across pushes is copied
    /// to be completed by the next one.
    pub(super) fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if self.pending.is_empty() {
            let used = self.write_rows(data)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            let used = self.write_rows(&pending)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// Writes every complete row of `data` (after the header, if not read yet); returns the bytes
    /// used.
    fn write_rows(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut at = 0;
        if !self.header_read {
            let Some(length) = header_length(data)? else {
                return Ok(0);
            };
            at = length;
            self.header_read = true;
        }
        while let Some((row, length)) = parse_row(&data[at..])? {
            match (row, &mut self.encoder) {
                (None, _) => self.trailer_read = true,
                (Some(row), Encoder::Csv { raw }) => write_csv(&mut self.output, &row, *raw),
                (Some(row), Encoder::Ndjson) => write_ndjson(&mut self.output, &row),
                (Some(row), Encoder::Parquet(parquet)) => parquet.push(&row, &mut self.output)?,
            }
            at += length;
        }
        Ok(at)
    }

    /// The next chunk of output, once there is a chunk's worth: from `chunk_bytes` to twice that.
    pub(super) fn full_chunk(&mut self) -> Option<Bytes> {
        if self.ready.is_empty() {
            if self.output.len() < self.chunk_bytes {
                return None;
            }
            let next = Vec::with_capacity(self.chunk_bytes + 1024);
            self.ready = Bytes::from(std::mem::replace(&mut self.output, next));
        }
        let size = if self.ready.len() >= 2 * self.chunk_bytes {
            self.chunk_bytes
        } else {
            self.ready.len()
        };
        Some(self.ready.split_to(size))
    }

    /// The rest of the output (a Parquet file's last row group and footer); an error unless the
    /// data ended with its trailer.
    pub(super) fn finish(mut self) -> io::Result<Bytes> {
        if !self.trailer_read || !self.pending.is_empty() {
            return Err(malformed("the data ended before its trailer"));
        }
        if let Encoder::Parquet(parquet) = self.encoder {
            parquet.finish(&mut self.output)?;
        }
        if self.ready.is_empty() {
            return Ok(Bytes::from(self.output));
        }
        let mut rest = Vec::with_capacity(self.ready.len() + self.output.len());
        rest.extend_from_slice(&self.ready);
        rest.extend_from_slice(&self.output);
        Ok(Bytes::from(rest))
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("binary COPY data: {what}"))
}

/// The header's length once `data` holds all of it.
fn header_length(data: &[u8]) -> io::Result<Option<usize>> {
    if data.len() < SIGNATURE.len() + 8 {
        return Ok(None);
    }
    if &data[..SIGNATURE.len()] != SIGNATURE {
        return Err(malformed("no signature"));
    }
    let extension = i32::from_be_bytes(data[15..19].try_into().expect("4 bytes"));
    let length = 19 + usize::try_from(extension).map_err(|_| malformed("negative header extension"))?;
    Ok((data.len() >= length).then_some(length))
}

/// The next row (`None` inside for the trailer) and its length, once `data` holds all of it.
fn parse_row(data: &[u8]) -> io::Result<Option<(Option<Row<'_>>, usize)>> {
    let Some(fields) = data.get(..2) else {
        return Ok(None);
    };
    match i16::from_be_bytes([fields[0], fields[1]]) {
        -1 => return Ok(Some((None, 2))),
        4 => {}
        other => return Err(malformed(&format!("{other} fields in a row, expected 4"))),
    }
    let mut at = 2;
    let mut values: [&[u8]; 4] = [&[]; 4];
    for value in &mut values {
        let Some(length) = data.get(at..at + 4) else {
            return Ok(None);
        };
        let length = i32::from_be_bytes(length.try_into().expect("4 bytes"));
        let length = usize::try_from(length).map_err(|_| malformed("a null field"))?;
        let Some(bytes) = data.get(at + 4..at + 4 + length) else {
            return Ok(None);
        };
        *value = bytes;
        at += 4 + length;
    }
    let bigint = |bytes: &[u8]| -> io::Result<i64> {
        Ok(i64::from_be_bytes(
            bytes.try_into().map_err(|_| malformed("a bigint not 8 bytes"))?,
        ))
    };
    let row = Row {
        site_id: bigint(values[0])?,
        source_id: std::str::from_utf8(values[1]).map_err(|_| malformed("a source id not UTF-8"))?,
        unix_micros: bigint(values[2])? + POSTGRES_EPOCH_MICROS,
        value_mg: bigint(values[3])?,
    };
    Ok(Some((Some(row), at)))
}

/// Appends `row` as a CSV line; unless `raw`, a source id a spreadsheet would run gets a leading `'`.
fn write_csv(out: &mut Vec<u8>, row: &Row<'_>, raw: bool) {
    write_integer(out, row.site_id);
    out.push(b',');
    if !raw && starts_a_formula(row.source_id) {
        // A spreadsheet would run it: a leading quote makes it text (OWASP's advice).
        write_csv_field(out, &format!("'{}", row.source_id));
    } else {
        write_csv_field(out, row.source_id);
    }
    out.push(b',');
    write_rfc3339(out, row.unix_micros);
    out.push(b',');
    write_kilograms(out, row.value_mg);
    out.push(b'\n');
}

/// Appends `row` as one NDJSON line.
fn write_ndjson(out: &mut Vec<u8>, row: &Row<'_>) {
    out.extend_from_slice(b"{\"site_id\":");
    write_integer(out, row.site_id);
    out.extend_from_slice(b",\"source_id\":");
    write_json_string(out, row.source_id);
    out.extend_from_slice(b",\"measured_at\":\"");
    write_rfc3339(out, row.unix_micros);
    out.extend_from_slice(b"\",\"value_kg\":\"");
    write_kilograms(out, row.value_mg);
    out.extend_from_slice(b"\"}\n");
}

fn write_integer(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    let mut digits = [0_u8; 20];
    let mut rest = value.unsigned_abs();
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// `value` as exactly `width` digits, zero-padded (`value` must fit).
fn write_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [b'0'; 9];
    let mut rest = value;
    for digit in digits[..width].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// Kilograms with six decimals, as [`crate::quantity::Milligrams`] displays them.
fn write_kilograms(out: &mut Vec<u8>, mg: i64) {
    if mg < 0 {
        out.push(b'-');
    }
    let abs = mg.unsigned_abs();
    write_integer(out, (abs / 1_000_000) as i64);
    out.push(b'.');
    write_padded(out, abs % 1_000_000, 6);
}

/// `2026-01-31T12:00:00Z`, with `.123` or `.123456` when the time has milli- or microseconds: what
/// chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes, elsewhere in the API.
fn write_rfc3339(out: &mut Vec<u8>, unix_micros: i64) {
    let seconds = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000) as u64;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400) as u64;
    write_padded(out, year as u64, 4);
    out.push(b'-');
    write_padded(out, u64::from(month), 2);
    out.push(b'-');
    write_padded(out, u64::from(day), 2);
    out.push(b'T');
    write_padded(out, of_day / 3600, 2);
    out.push(b':');
    write_padded(out, of_day / 60 % 60, 2);
    out.push(b':');
    write_padded(out, of_day % 60, 2);
    if micros != 0 {
        out.push(b'.');
        if micros % 1000 == 0 {
            write_padded(out, micros / 1000, 3);
        } else {
            write_padded(out, micros, 6);
        }
    }
    out.push(b'Z');
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether a spreadsheet opening the CSV would take `text` for a formula.
fn starts_a_formula(text: &str) -> bool {
    matches!(
        text.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// A CSV field, quoted (with quotes doubled) only when it holds a comma, quote or line break.
fn write_csv_field(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.push(b'"');
        for byte in text.bytes() {
            if byte == b'"' {
                out.push(b'"');
            }
            out.push(byte);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// A JSON string; plain printable ASCII is copied as it is.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
