//! A site's raw readings, one page at a time, by keyset pagination.
//!
//! Pages follow the identity index (`site_id, source_id, measured_at`): by source, then time. So a
//! page is one index range read per partition, merged, and stops after `limit` rows however deep
//! the cursor is; with `source_id` given it is that source's time series, partitions read in
//! time order. The cursor is the last reading's identity, opaque to clients.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::params::PageRequest;
use super::TimeRange;
use crate::quantity::Milligrams;
use crate::sites::SiteId;

/// Readings per page when the client does not say.
pub const DEFAULT_PAGE: i64 = 1_000;
/// The most readings one page may hold.
pub const MAX_PAGE: i64 = 10_000;

/// A page of every source: `$1` site, `$2`..`$3` the range, `$4`, `$5` the cursor, `$6` the row
/// count. Checked at run time, not by the query macros, so that the pruning test can `EXPLAIN`
/// this very text.
pub const PAGE_SQL: &str = "select source_id, measured_at, value_mg from measurements
     where site_id = $1 and measured_at >= $2 and measured_at < $3
       and (site_id, source_id, measured_at) > ($1, $4, $5)
     order by source_id, measured_at
     limit $6";

/// A page of one source: `$7` the source, the rest as in [`PAGE_SQL`].
pub const SOURCE_PAGE_SQL: &str = "select source_id, measured_at, value_mg from measurements
     where site_id = $1 and source_id = $7 and measured_at >= $2 and measured_at < $3
       and (site_id, source_id, measured_at) > ($1, $4, $5)
     order by measured_at
     limit $6";

/// Where the previous page ended: its last reading's source and time, and the `source_id` filter
/// of the pages it belongs to (a cursor sent with another filter is refused, not taken for an end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    /// The `source_id` filter of its pages.
    pub filter: Option<String>,
    /// The last reading's source.
    pub source_id: String,
    /// The last reading's time.
    pub measured_at: DateTime<Utc>,
}

impl PageCursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        let micros = self.measured_at.timestamp_micros();
        let text = serde_json::json!(["readings", self.filter, self.source_id, micros]);
        URL_SAFE_NO_PAD.encode(text.to_string())
    }

    /// Reads back what [`PageCursor::encode`] wrote; anything else is `None`.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (tag, filter, source_id, micros): (String, Option<String>, String, i64) =
            serde_json::from_slice(&bytes).ok()?;
        (tag == "readings").then_some(())?;
        Some(Self {
            filter,
            source_id,
            measured_at: DateTime::from_timestamp_micros(micros)?,
        })
    }

    /// Before every reading: the empty source id sorts first, and no time precedes all time.
    fn start() -> Self {
        Self {
            filter: None,
            source_id: String::new(),
            measured_at: TimeRange::all().from,
        }
    }
}

/// One stored reading as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StoredReading {
    /// Its source.
    pub source_id: String,
    /// Its time, RFC 3339 in UTC.
    #[serde(serialize_with = "crate::sites::rfc3339")]
    pub measured_at: DateTime<Utc>,
    /// Its value, kg with six decimals.
    pub value: Milligrams,
}

/// One page: up to `limit` readings after the cursor, and the cursor of the next page if there
/// is one.
#[tracing::instrument(skip(pool, request), fields(site_id = site.get()))]
pub async fn page(
    pool: &PgPool,
    site: SiteId,
    request: &PageRequest,
) -> Result<(Vec<StoredReading>, Option<PageCursor>), sqlx::Error> {
    let after = request.after.clone().unwrap_or_else(PageCursor::start);
    // One more than asked for tells whether another page follows.
    let fetch = request.limit + 1;
    let sql = if request.source_id.is_some() {
        SOURCE_PAGE_SQL
    } else {
        PAGE_SQL
    };
    let mut query = sqlx::query_as::<_, StoredRow>(sql)
        .bind(site.get())
        .bind(request.range.from)
        .bind(request.range.to)
        .bind(&after.source_id)
        .bind(after.measured_at)
        .bind(fetch);
    if let Some(source_id) = &request.source_id {
        query = query.bind(source_id);
    }
    let rows = query.fetch_all(pool).await?;
    let mut readings: Vec<StoredReading> = rows.into_iter().map(StoredRow::into_reading).collect();
    let next = if readings.len() as i64 > request.limit {
        readings.truncate(request.limit as usize);
        readings.last().map(|last| PageCursor {
            filter: request.source_id.clone(),
            source_id: last.source_id.clone(),
            measured_at: last.measured_at,
        })
    } else {
        None
    };
    Ok((readings, next))
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    source_id: String,
    measured_at: DateTime<Utc>,
    value_mg: i64,
}

impl StoredRow {
    fn into_reading(self) -> StoredReading {
        StoredReading {
            source_id: self.source_id,
            measured_at: self.measured_at,
            value: Milligrams::from_mg(self.value_mg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_text_is_refused() {
        let cursor = PageCursor {
            filter: Some("north".into()),
            source_id: "stack \"7\", north".into(),
            measured_at: "2026-01-31T12:00:00.000123Z".parse().unwrap(),
        };
        assert_eq!(PageCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(PageCursor::decode("c2l0ZTox"), None); // "site:1", a sites cursor
        assert_eq!(PageCursor::decode("not base64!"), None);
    }
}
