//! The wire shapes the API document names that no Rust type of the service serialises: the
//! envelopes around each answer's `data`, and the request bodies, which the handlers parse by hand
//! from raw JSON (so that numbers are read exactly and every problem is named) rather than through
//! a deserialised struct. Each type here describes what its parser reads; none is ever built.

#![allow(dead_code)] // described, never constructed

use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::http::session::SessionInfo;
use crate::ingest::bulk::BulkReceipt;
use crate::ingest::BatchReceipt;
use crate::query::readings::StoredReading;
use crate::query::series::SeriesBucket;
use crate::query::sources::SourceSummary;
use crate::sites::{Site, SiteMetrics};

/// The `meta` member of every answer: the request's id (also in `X-Request-Id`).
#[derive(ToSchema)]
pub(crate) struct Meta {
    /// The client's `X-Request-Id` when it sent a usable one, else a fresh UUID.
    request_id: String,
}

/// `meta` of a page: the request's id and the next page's cursor.
#[derive(ToSchema)]
pub(crate) struct PageMeta {
    /// See [`Meta`].
    request_id: String,
    /// Opaque: send it back as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// `meta` of a series: the request's id and the range answered.
#[derive(ToSchema)]
pub(crate) struct SeriesMeta {
    /// See [`Meta`].
    request_id: String,
    /// The site.
    site_id: i64,
    /// `hour`, `day` or `month`.
    #[schema(pattern = "^(hour|day|month)$")]
    bucket: String,
    /// The range's start (included), RFC 3339 UTC.
    #[schema(format = DateTime)]
    from: String,
    /// The range's end (excluded), RFC 3339 UTC.
    #[schema(format = DateTime)]
    to: String,
}

/// `meta` of the change feed: the cursor to poll with next and, while the listing goes on, the
/// last site id of this page.
#[derive(ToSchema)]
pub(crate) struct ChangesMeta {
    /// See [`Meta`].
    request_id: String,
    /// Opaque: send it back as `cursor`.
    cursor: String,
    /// Present when more sites may follow: send it as `after` with the same `cursor`.
    next_after: Option<i64>,
}

/// `data` of `/health` and `/ready`.
#[derive(ToSchema)]
pub(crate) struct Status {
    /// `ok` (`/health`) or `ready` (`/ready`).
    #[schema(pattern = "^(ok|ready)$")]
    status: String,
    /// Only when authentication is off: says so.
    auth: Option<String>,
}

/// Declares an envelope: `data` of one type, `meta` of another.
macro_rules! envelope {
    ($(#[$doc:meta])* $name:ident, $data:ty, $meta:ty) => {
        $(#[$doc])*
        #[derive(ToSchema)]
        pub(crate) struct $name {
            /// The answer.
            data: $data,
            /// The request's id, and the endpoint's own members.
            meta: $meta,
        }
    };
}

envelope!(
    /// A site.
    SiteEnvelope, Site, Meta
);
envelope!(
    /// A page of sites.
    SitePageEnvelope, Vec<Site>, PageMeta
);
envelope!(
    /// A site's metrics.
    SiteMetricsEnvelope, SiteMetrics, Meta
);
envelope!(
    /// The sites changed since the cursor, with their metrics.
    ChangesEnvelope, Vec<SiteMetrics>, ChangesMeta
);
envelope!(
    /// A v1 batch's receipt.
    BatchReceiptEnvelope, BatchReceipt, Meta
);
envelope!(
    /// A bulk request's receipt.
    BulkReceiptEnvelope, BulkReceipt, Meta
);
envelope!(
    /// A site's series.
    SeriesEnvelope, Vec<SeriesBucket>, SeriesMeta
);
envelope!(
    /// A page of a site's readings.
    ReadingPageEnvelope, Vec<StoredReading>, PageMeta
);
envelope!(
    /// A page of a site's sources.
    SourcePageEnvelope, Vec<SourceSummary>, PageMeta
);
envelope!(
    /// Who is signed in.
    SessionEnvelope, SessionInfo, Meta
);
envelope!(
    /// The process's or the database's state.
    StatusEnvelope, Status, Meta
);

/// Every error: `error` with its stable code, `meta` with the request id.
#[derive(ToSchema)]
pub(crate) struct ErrorEnvelope {
    /// What went wrong.
    error: ErrorBody,
    /// The request's id.
    meta: Meta,
}

/// A mass: a JSON number (`12.5`, `1e3`) or a decimal string (`"12.5"`), read exactly from its
/// text, never through floating point; it must be a whole number of milligrams once converted.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = Quantity)]
pub(crate) enum QuantityInput {
    /// A JSON number.
    Number(QuantityNumber),
    /// A decimal string.
    Text(QuantityText),
}

/// A quantity as a JSON number: at least 0, whole milligrams once converted.
#[derive(serde::Serialize, ToSchema)]
#[schema(value_type = f64, example = 12.5)]
pub(crate) struct QuantityNumber(f64);

/// A quantity as a decimal string: digits, and at most six decimals in kilograms.
#[derive(serde::Serialize, ToSchema)]
#[schema(value_type = String, pattern = r"^[0-9]{1,13}(\.[0-9]{1,6})?$", example = "12.5")]
pub(crate) struct QuantityText(String);

/// `POST /v1/sites` (read by `sites::request::parse_new_site`).
#[derive(ToSchema)]
#[schema(as = NewSite)]
pub(crate) struct NewSiteBody {
    /// 1 to 200 characters, not blank, no control or invisible format characters; stored in NFC.
    #[schema(min_length = 1, max_length = 200, example = "Permian Well Pad 7")]
    name: String,
    /// Kilograms, greater than 0, whole milligrams.
    #[schema(example = "5000")]
    emission_limit: QuantityInput,
    /// A JSON object (default `{}`), at most 16 KiB of JSON nested at most 16 deep, without
    /// `\u0000`; numbers are kept exactly as written.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// One reading of a v1 batch (read by `ingest::request`).
#[derive(ToSchema)]
pub(crate) struct Reading {
    /// RFC 3339 with an offset, at most microsecond precision, no leap second; inside the
    /// accepted window (730 days back, 5 minutes ahead by default).
    #[schema(format = DateTime)]
    timestamp: String,
    /// At least 0 in `unit`, whole milligrams once converted, at most 1,000 t.
    value: QuantityInput,
    /// `kg` (the default), `g` or `t`.
    #[schema(pattern = "^(kg|g|t)$")]
    unit: Option<String>,
    /// 1 to 64 characters, no control or invisible format characters (default `""`).
    #[schema(max_length = 64)]
    source_id: Option<String>,
}

/// `POST /v1/ingest` (read by `ingest::request::parse_batch`).
#[derive(ToSchema)]
#[schema(as = Batch)]
pub(crate) struct BatchBody {
    /// The site, which must exist.
    #[schema(minimum = 1)]
    site_id: i64,
    /// 1 to 100 readings.
    #[schema(min_items = 1, max_items = 100)]
    readings: Vec<Reading>,
    /// The idempotency key, for sensors that cannot send the `Idempotency-Key` header; equal to
    /// it when both are sent.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[\x20-\x7e]+$")]
    batch_id: Option<String>,
}

/// One reading of a bulk request: a v1 reading that names its site.
#[derive(ToSchema)]
pub(crate) struct BulkReading {
    /// The site, which must exist and be in the client's scope.
    #[schema(minimum = 1)]
    site_id: i64,
    /// As in a v1 reading.
    #[schema(format = DateTime)]
    timestamp: String,
    /// As in a v1 reading.
    value: QuantityInput,
    /// As in a v1 reading.
    #[schema(pattern = "^(kg|g|t)$")]
    unit: Option<String>,
    /// As in a v1 reading.
    #[schema(max_length = 64)]
    source_id: Option<String>,
}

/// `POST /v2/ingest` as `application/json` (read by `ingest::bulk_request::parse_bulk`).
#[derive(ToSchema)]
#[schema(as = BulkBatch)]
pub(crate) struct BulkBody {
    /// 1 to 50,000 readings, for any number of sites.
    #[schema(min_items = 1, max_items = 50000)]
    readings: Vec<BulkReading>,
}

/// `POST /v2/session`.
#[derive(ToSchema)]
#[schema(as = SignIn)]
pub(crate) struct SignInBody {
    /// A token from `plume tokens create`.
    token: String,
}
