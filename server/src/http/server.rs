//! Serving the router over TCP with the bounds a public listener needs, so that one client cannot
//! hold the service: a header read timeout (which also closes a keep-alive connection left idle),
//! a cap on open connections, and a time limit on every request but long polls and exports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::error::ApiError;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections open at once; past it new ones are closed at once (counted on `/metrics`).
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and how long a keep-alive
    /// connection may sit idle between requests.
    pub header_read_timeout: Duration,
    /// How long any request but a long poll or an export may take, its body included (so a body
    /// must arrive faster than its size over this time).
    pub request_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Routes whose requests last as long as they need (bounded by their own rules instead): long
/// polls (`wait`, at most a minute) and exports (streamed).
const UNTIMED_ROUTES: [&str; 3] = ["/v2/changes", "/v2/sites/{id}/metrics", "/v2/export"];

/// Middleware: answers 503 `UNAVAILABLE` when a request outside [`UNTIMED_ROUTES`] takes longer
/// than `timeout`. A v1 batch already handed to the committer is stored all the same; its retry
/// is answered from the stored receipt.
pub async fn request_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    let untimed = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| UNTIMED_ROUTES.contains(&path.as_str()));
    if untimed {
        return next.run(request).await;
    }
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Busy(format!(
            "the request took longer than {} s; retrying it is safe",
            timeout.as_secs()
        ))
        .into_response(),
    }
}

/// Middleware: refuses (421) a request whose `Host` is not one of `allowed` (names or addresses,
/// any port), so that a page on a rebound DNS name cannot reach a plume listening on localhost.
pub async fn check_host(allowed: Arc<[String]>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_name)
        .unwrap_or_default();
    if allowed.iter().any(|name| name.eq_ignore_ascii_case(host)) {
        return next.run(request).await;
    }
    let mut response = ApiError::Forbidden(format!(
        "this server does not answer for the host {host:?} (see --allowed-hosts)"
    ))
    .into_response();
    *response.status_mut() = axum::http::StatusCode::MISDIRECTED_REQUEST;
    response
}

/// The host of a `Host` header, without its port (`[::1]:8080` → `[::1]`).
fn host_name(header: &str) -> &str {
    match header.rfind(':') {
        Some(colon) if !header[colon..].contains(']') => &header[..colon],
        _ => header,
    }
}

/// The hosts a listener on `address` answers for by default: its loopback names when it listens
/// on a loopback address, else any (`None`).
pub fn default_allowed_hosts(address: SocketAddr) -> Option<Vec<String>> {
    address
        .ip()
        .is_loopback()
        .then(|| ["localhost", "127.0.0.1", "[::1]"].map(str::to_owned).to_vec())
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled, then lets in-flight
/// requests finish. Each request carries its peer's address (`ConnectInfo<SocketAddr>`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: ServeLimits,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most often: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(
                max = limits.max_connections,
                "too many open connections: one refused"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            router.clone().call(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection's errors (a reset, a timeout) are the client's; nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Raises this process's open-file limit to its hard limit, so that the connection cap, not the
/// default of 1,024 descriptors, bounds what the listener holds.
pub fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(%error, "could not raise the open-file limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_compared_without_its_port() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("plume.example"), "plume.example");
    }
}
