//! A site's sources, each with its last stored reading: what the dashboard's site page lists, so
//! that a silent sensor shows.
//!
//! The sources are the site's rows in `source_heads` (one per source that ever reported, written by
//! every ingest), in source order, by keyset pagination. A head may be at or above the true newest
//! reading (retention drops old partitions), so the last reading itself is read from
//! `measurements`: one backward step of the identity index per source, bounded by the head.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::quantity::Milligrams;
use crate::sites::SiteId;

/// Sources per page when the client does not say.
pub const DEFAULT_PAGE: i64 = 100;
/// The most sources one page may hold.
pub const MAX_PAGE: i64 = 1_000;

/// A checked sources request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesRequest {
    /// At most this many.
    pub limit: i64,
    /// Sources after this one (by id), or from the first.
    pub after: Option<SourcesCursor>,
}

/// Where the previous page of sources ended: its last source's id, opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesCursor {
    /// The last source listed.
    pub source_id: String,
}

impl SourcesCursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        let text = serde_json::json!(["sources", self.source_id]);
        URL_SAFE_NO_PAD.encode(text.to_string())
    }

    /// Reads back what [`SourcesCursor::encode`] wrote; anything else is `None`.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (tag, source_id): (String, String) = serde_json::from_slice(&bytes).ok()?;
        (tag == "sources").then_some(Self { source_id })
    }
}

/// One source of a site as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS, utoipa::ToSchema)]
pub struct SourceSummary {
    /// The source's id, as its readings carry it (`""` for readings sent without one).
    pub source_id: String,
    /// Its newest stored reading's time, or null when retention has removed all its readings.
    #[serde(serialize_with = "crate::sites::rfc3339_opt")]
    #[ts(type = "string | null")]
    pub last_reading_at: Option<DateTime<Utc>>,
    /// That reading's value, kg with six decimals, or null with it.
    #[ts(type = "string | null")]
    pub last_value: Option<Milligrams>,
}

/// One page of `site`'s sources in source id order, and the cursor of the next page if there is
/// one.
#[tracing::instrument(skip(pool, request), fields(site_id = site.get()))]
pub async fn page(
    pool: &PgPool,
    site: SiteId,
    request: &SourcesRequest,
) -> Result<(Vec<SourceSummary>, Option<SourcesCursor>), sqlx::Error> {
    let after = request.after.as_ref().map(|cursor| cursor.source_id.as_str());
    // One more than asked for tells whether another page follows.
    let rows = sqlx::query!(
        r#"select h.source_id, m.measured_at as "last_reading_at?", m.value_mg as "last_value_mg?"
             from source_heads h
             left join lateral (
                   select measured_at, value_mg from measurements
                    where site_id = h.site_id and source_id = h.source_id and measured_at <= h.newest_at
                    order by measured_at desc
                    limit 1) m on true
            where h.site_id = $1 and ($2::text is null or h.source_id > $2)
            order by h.source_id
            limit $3"#,
        site.get(),
        after,
        request.limit + 1,
    )
    .fetch_all(pool)
    .await?;
    let mut sources: Vec<SourceSummary> = rows
        .into_iter()
        .map(|row| SourceSummary {
            source_id: row.source_id,
            last_reading_at: row.last_reading_at,
            last_value: row.last_value_mg.map(Milligrams::from_mg),
        })
        .collect();
    let next = if sources.len() as i64 > request.limit {
        sources.truncate(request.limit as usize);
        sources.last().map(|last| SourcesCursor {
            source_id: last.source_id.clone(),
        })
    } else {
        None
    };
    Ok((sources, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_text_is_refused() {
        let cursor = SourcesCursor {
            source_id: "stack \"7\", north".into(),
        };
        assert_eq!(SourcesCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(SourcesCursor::decode("c2l0ZTox"), None); // "site:1", a sites cursor
        assert_eq!(SourcesCursor::decode("not base64!"), None);
    }
}
