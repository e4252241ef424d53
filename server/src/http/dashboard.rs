//! The dashboard, served at `/` from files embedded in the binary (`dashboard/` in the repository:
//! plain ES modules, nothing to build), and the files of the API reference page (`/api/docs`).

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::access::Routes;
use crate::auth::Rule;

use crate::error::ApiError;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Each asset's path under `/assets/`, content type and bytes.
const ASSETS: [(&str, &str, &[u8]); 21] = [
    (
        "src/main.js",
        JS,
        include_bytes!("../../../dashboard/src/main.js"),
    ),
    ("src/api.js", JS, include_bytes!("../../../dashboard/src/api.js")),
    (
        "src/backoff.js",
        JS,
        include_bytes!("../../../dashboard/src/backoff.js"),
    ),
    (
        "src/live.js",
        JS,
        include_bytes!("../../../dashboard/src/live.js"),
    ),
    (
        "src/queue.js",
        JS,
        include_bytes!("../../../dashboard/src/queue.js"),
    ),
    (
        "src/chart.js",
        JS,
        include_bytes!("../../../dashboard/src/chart.js"),
    ),
    ("src/dom.js", JS, include_bytes!("../../../dashboard/src/dom.js")),
    (
        "src/overview.js",
        JS,
        include_bytes!("../../../dashboard/src/overview.js"),
    ),
    (
        "src/fleet.js",
        JS,
        include_bytes!("../../../dashboard/src/fleet.js"),
    ),
    (
        "src/format.js",
        JS,
        include_bytes!("../../../dashboard/src/format.js"),
    ),
    (
        "src/sources-panel.js",
        JS,
        include_bytes!("../../../dashboard/src/sources-panel.js"),
    ),
    (
        "src/site-page.js",
        JS,
        include_bytes!("../../../dashboard/src/site-page.js"),
    ),
    (
        "src/forms.js",
        JS,
        include_bytes!("../../../dashboard/src/forms.js"),
    ),
    (
        "src/queue-panel.js",
        JS,
        include_bytes!("../../../dashboard/src/queue-panel.js"),
    ),
    (
        "src/session.js",
        JS,
        include_bytes!("../../../dashboard/src/session.js"),
    ),
    (
        "src/style.css",
        CSS,
        include_bytes!("../../../dashboard/src/style.css"),
    ),
    (
        "vendor/uPlot.esm.js",
        JS,
        include_bytes!("../../../dashboard/vendor/uPlot.esm.js"),
    ),
    (
        "vendor/uPlot.min.css",
        CSS,
        include_bytes!("../../../dashboard/vendor/uPlot.min.css"),
    ),
    (
        "api-docs/init.js",
        JS,
        include_bytes!("../../../dashboard/api-docs/init.js"),
    ),
    (
        "vendor/swagger-ui/swagger-ui-bundle.js",
        JS,
        include_bytes!("../../../dashboard/vendor/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "vendor/swagger-ui/swagger-ui.css",
        CSS,
        include_bytes!("../../../dashboard/vendor/swagger-ui/swagger-ui.css"),
    ),
];

/// Only the page's own files; uPlot and Swagger UI set inline styles, Swagger UI shows inline
/// (data:) images.
const POLICY: &str =
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

/// `/` and `/assets/...`: open, since the sign-in page is among them; they hold no data.
pub fn router() -> Routes {
    Routes::new()
        .get("/", Rule::Open, index)
        .get("/assets/{*path}", Rule::Open, asset)
}

/// These routes' part of the API document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(index, asset))]
pub struct Api;

/// The dashboard.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    responses((status = 200, description = "The dashboard's page.", content_type = "text/html", body = String))
)]
async fn index() -> Response {
    page(include_bytes!("../../../dashboard/index.html"))
}

/// An HTML page of plume's own, with the dashboard's policy.
pub(super) fn page(html: &'static [u8]) -> Response {
    file(HTML, html)
}

/// One of the dashboard's (or the API reference's) files.
#[utoipa::path(
    get,
    path = "/assets/{path}",
    tag = "dashboard",
    params(("path" = String, Path, example = "src/main.js", description = "The file, e.g. `src/main.js`.")),
    responses(
        (status = 200, description = "The file.", content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, description = "No such file.", body = super::openapi::schemas::ErrorEnvelope),
    )
)]
async fn asset(Path(path): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == path)
        .map(|(_, content_type, bytes)| file(content_type, bytes))
        .ok_or_else(|| ApiError::NotFound(format!("/assets/{path}")))
}

fn file(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            // Revalidated on every load: a new binary's dashboard is used at once.
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, POLICY),
        ],
        bytes,
    )
        .into_response()
}
