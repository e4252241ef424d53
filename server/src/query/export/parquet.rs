//! Exported readings as Apache Parquet: typed columns, in row groups of at most
//! [`ROWS_PER_GROUP`] readings, each handed on as soon as it is encoded. A Parquet file's footer,
//! which lists every row group, comes last; writing the row groups as they fill, rather than the
//! file at its end, keeps an export's memory to one row group however many rows it has.
//!
//! The value is `value_mg`, the stored integer of milligrams: exact, and able to hold every value
//! the column can. A `decimal(18,6)` of kilograms, the other exact choice, stops at 10^12 kg (a
//! Parquet decimal kept in an int64 has at most 18 digits, and a `bigint` has 19).

use std::io;
use std::sync::Arc;

use ::parquet::basic::{Compression, Encoding};
use ::parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use ::parquet::errors::ParquetError;
use ::parquet::file::metadata::KeyValue;
use ::parquet::file::properties::{EnabledStatistics, WriterProperties};
use ::parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use ::parquet::schema::parser::parse_message_type;
use ::parquet::schema::types::ColumnPath;
use axum::body::Bytes;

use super::format::Row;

/// Readings per row group, at most: about 3 MB of columns waiting to be encoded. Readers split
/// their work by row group, so a group is no smaller than it needs to be.
pub const ROWS_PER_GROUP: usize = 64 * 1024;

/// The file's schema. Every column is required: the table's are `not null`.
const SCHEMA: &str = "message plume_export {
    required int64 site_id;
    required binary source_id (STRING);
    required int64 measured_at (TIMESTAMP(MICROS,true));
    required int64 value_mg;
}";

/// The key of the footer's key-value metadata that names `value_mg`'s unit.
pub const VALUE_UNIT_KEY: &str = "plume.value_mg.unit";

/// Source ids handed to the column writer at once (each a shared slice of one buffer).
const SOURCE_BATCH: usize = 4096;

/// A Parquet file being written, one row group at a time.
pub(super) struct ParquetWriter {
    file: SerializedFileWriter<Vec<u8>>,
    site_ids: Vec<i64>,
    /// Every source id of the row group, end to end.
    source_bytes: Vec<u8>,
    /// Where each row's source id ends in `source_bytes`.
    source_ends: Vec<usize>,
    measured_at: Vec<i64>,
    values_mg: Vec<i64>,
}

impl std::fmt::Debug for ParquetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetWriter")
            .field("buffered_rows", &self.site_ids.len())
            .finish_non_exhaustive()
    }
}

impl ParquetWriter {
    /// A file with `metadata` (and `value_mg`'s unit) in its footer.
    pub(super) fn new(metadata: Vec<(String, String)>) -> Self {
        let schema = parse_message_type(SCHEMA).expect("the export schema parses");
        let mut key_values = vec![KeyValue::new(VALUE_UNIT_KEY.to_owned(), "mg".to_owned())];
        key_values.extend(metadata.into_iter().map(|(key, value)| KeyValue::new(key, value)));
        let column = |name: &str| ColumnPath::from(name);
        let properties = WriterProperties::builder()
            // After delta encoding, zstd made files only 1-2% smaller than snappy does.
            .set_compression(Compression::SNAPPY)
            // Statistics of each column chunk let readers skip row groups (by time, say); page
            // statistics and the page index would keep state for every page until the footer.
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_offset_index_disabled(true)
            // A site's and a source's ids repeat: a dictionary. Times and values hardly do.
            .set_column_dictionary_enabled(column("measured_at"), false)
            .set_column_dictionary_enabled(column("value_mg"), false)
            .set_column_encoding(column("measured_at"), Encoding::DELTA_BINARY_PACKED)
            .set_column_encoding(column("value_mg"), Encoding::DELTA_BINARY_PACKED)
            .set_key_value_metadata(Some(key_values))
            .build();
        let file = SerializedFileWriter::new(Vec::new(), Arc::new(schema), Arc::new(properties))
            .expect("writing to a Vec cannot fail");
        Self {
            file,
            site_ids: Vec::with_capacity(ROWS_PER_GROUP),
            source_bytes: Vec::new(),
            source_ends: Vec::with_capacity(ROWS_PER_GROUP),
            measured_at: Vec::with_capacity(ROWS_PER_GROUP),
            values_mg: Vec::with_capacity(ROWS_PER_GROUP),
        }
    }

    /// Adds `row`; once a row group is full, appends it, encoded, to `out`.
    pub(super) fn push(&mut self, row: &Row<'_>, out: &mut Vec<u8>) -> io::Result<()> {
        self.site_ids.push(row.site_id);
        self.source_bytes.extend_from_slice(row.source_id.as_bytes());
        self.source_ends.push(self.source_bytes.len());
        self.measured_at.push(row.unix_micros);
        self.values_mg.push(row.value_mg);
        if self.site_ids.len() == ROWS_PER_GROUP {
            self.write_group().map_err(io::Error::other)?;
            out.append(self.file.inner_mut());
        }
        Ok(())
    }

    /// Appends the last row group, if any, and the footer to `out`.
    pub(super) fn finish(mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if !self.site_ids.is_empty() {
            self.write_group().map_err(io::Error::other)?;
        }
        out.append(&mut self.file.into_inner().map_err(io::Error::other)?);
        Ok(())
    }

    /// Encodes the buffered rows as a row group, into the file's sink.
    fn write_group(&mut self) -> Result<(), ParquetError> {
        let mut group = self.file.next_row_group()?;
        write_int64s(&mut group, &self.site_ids)?;
        let sources = Bytes::from(std::mem::take(&mut self.source_bytes));
        let mut column = group.next_column()?.ok_or_else(missing_column)?;
        let mut batch = Vec::with_capacity(SOURCE_BATCH);
        let mut start = 0;
        for ends in self.source_ends.chunks(SOURCE_BATCH) {
            batch.clear();
            for &end in ends {
                batch.push(ByteArray::from(sources.slice(start..end)));
                start = end;
            }
            column.typed::<ByteArrayType>().write_batch(&batch, None, None)?;
        }
        column.close()?;
        write_int64s(&mut group, &self.measured_at)?;
        write_int64s(&mut group, &self.values_mg)?;
        group.close()?;
        self.site_ids.clear();
        self.source_ends.clear();
        self.measured_at.clear();
        self.values_mg.clear();
        Ok(())
    }
}

/// Writes the row group's next column, an int64 one.
fn write_int64s(
    group: &mut SerializedRowGroupWriter<'_, Vec<u8>>,
    values: &[i64],
) -> Result<(), ParquetError> {
    let mut column = group.next_column()?.ok_or_else(missing_column)?;
    column.typed::<Int64Type>().write_batch(values, None, None)?;
    column.close()
}

fn missing_column() -> ParquetError {
    ParquetError::General("the export schema has fewer columns than written".to_owned())
}
