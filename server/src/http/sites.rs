//! `/v1/sites`: create, list, read, and read metrics.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::envelope::Envelope;
use super::json::JsonBody;
use crate::error::ApiError;
use crate::sites::{self, request, Site, SiteId, SiteMetrics};
use crate::state::AppState;

/// Sites per page when the client does not say.
const DEFAULT_PAGE: i64 = 50;
/// The most sites one page may hold.
const MAX_PAGE: i64 = 500;

/// The site routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sites", get(list_sites).post(create_site))
        .route("/sites/{id}", get(get_site))
        .route("/sites/{id}/metrics", get(get_metrics))
}

#[tracing::instrument(skip_all)]
async fn create_site(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Envelope<Site>, ApiError> {
    let new_site = request::parse_new_site(&body)?;
    let row = sites::create(&state.pool, &new_site).await?;
    state.change_signal.committed();
    tracing::info!(site_id = row.id, "site created");
    Ok(Envelope::with_status(StatusCode::CREATED, row.into()))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn list_sites(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Envelope<Vec<Site>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_PAGE}")))?,
    };
    let after = match params.cursor.as_deref() {
        None | Some("") => 0,
        Some(cursor) => decode_cursor(cursor)
            .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this API issued"))?,
    };
    let mut rows = sites::list(&state.pool, after, limit + 1).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|row| Value::String(encode_cursor(row.id)))
    } else {
        None
    };
    let data = rows.into_iter().map(Site::from).collect();
    Ok(Envelope::ok(data).meta("next_cursor", next_cursor.unwrap_or(Value::Null)))
}

#[tracing::instrument(skip_all)]
async fn get_site(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Envelope<Site>, ApiError> {
    let id = parse_site_id(id)?;
    let row = sites::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::SiteNotFound(id.get().to_string()))?;
    Ok(Envelope::ok(row.into()))
}

#[tracing::instrument(skip_all)]
async fn get_metrics(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Envelope<SiteMetrics>, ApiError> {
    let id = parse_site_id(id)?;
    let row = sites::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::SiteNotFound(id.get().to_string()))?;
    Ok(Envelope::ok(row.into()))
}

/// An id that is not an integer is 422; an integer that cannot name a site (0, negative, too
/// large) is simply not found.
pub(super) fn parse_site_id(id: Result<Path<String>, PathRejection>) -> Result<SiteId, ApiError> {
    let Ok(Path(text)) = id else {
        return Err(ApiError::invalid("id", "must be a positive integer"));
    };
    let digits = text.strip_prefix('-').unwrap_or(&text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid("id", "must be a positive integer"));
    }
    text.parse::<i64>()
        .ok()
        .and_then(SiteId::new)
        .ok_or(ApiError::SiteNotFound(text))
}

/// Cursors are opaque to clients: the last id seen, tagged and encoded.
fn encode_cursor(last_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("site:{last_id}"))
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("site:")?
        .parse()
        .ok()
        .filter(|id: &i64| *id >= 0)
}
