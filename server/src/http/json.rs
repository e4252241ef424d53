//! Reading JSON request bodies at the edge: the body extractor and the field helpers.
//!
//! Bodies are read as bytes and parsed into structs of borrowed [`RawValue`]s, so that each field is
//! checked by plume's own rules (numbers exactly, from their text) and every problem is reported with
//! its path, instead of stopping at serde's first type error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::encoding::{self, Coding};
use crate::error::ApiError;
use crate::state::AppState;

/// A request body declared as JSON and sent as it is (415 for any `Content-Encoding`), read up to
/// the body limit the router enforces ([`crate::state::Settings::max_body_bytes`]).
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        require_json(&request)?;
        encoding::require_identity(request.headers())?;
        let limit = state.settings.max_body_bytes;
        encoding::read_body(request, state, None, limit).await.map(Self)
    }
}

/// A JSON body that may also be sent compressed (`Content-Encoding: gzip` or `zstd`): the v1
/// ingest batch's. Decoded, it is held to the same limit as a plain body.
#[derive(Debug)]
pub struct EncodedJsonBody(pub Bytes);

impl FromRequest<AppState> for EncodedJsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        require_json(&request)?;
        let coding = Coding::from_headers(request.headers())?;
        let limit = state.settings.max_body_bytes;
        encoding::read_body(request, state, coding, limit).await.map(Self)
    }
}

/// 400 unless the request declares a JSON body.
fn require_json(request: &Request) -> Result<(), ApiError> {
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::Malformed(
            "the request body must be JSON, sent with Content-Type: application/json".into(),
        ))
    }
}

/// Parses `bytes` as `T`: not JSON at all is 400, JSON of the wrong shape is 422.
pub fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        if error.is_data() {
            ApiError::invalid("body", "must be a JSON object")
        } else {
            ApiError::Malformed(format!("the request body is not valid JSON: {error}"))
        }
    })
}

/// A field's raw JSON, with explicit `null` treated as absent.
pub type Field<'a> = Option<&'a RawValue>;

/// The raw value unless it is absent or `null`.
pub fn present(raw: Field<'_>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

/// The field as a string; `Err` names what it must be.
pub fn string(raw: &RawValue) -> Result<String, &'static str> {
    serde_json::from_str(raw.get()).map_err(|_| "must be a string")
}

/// The field as an integer; `Err` names what it must be.
pub fn integer(raw: &RawValue) -> Result<i64, &'static str> {
    raw.get().parse::<i64>().map_err(|_| "must be an integer")
}
