//! A real HTTP webhook receiver for the outbox tests: it verifies signatures, records every request,
//! can fail chosen sites, hold requests, answer slowly, and detects two deliveries for one site
//! at the same time.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use plume::outbox::{signature, sink};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The secret the tests' relays sign with.
pub const SECRET: &[u8] = b"test-webhook-secret";

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: String,
    pub event_type: String,
    pub site_id: i64,
    pub sequence: i64,
    pub body: Value,
    pub signature_valid: bool,
    pub attempt_header: u32,
}

#[derive(Default)]
struct Shared {
    /// Every request, in arrival order.
    arrived: Mutex<Vec<Received>>,
    /// Requests answered 2xx, in answer order.
    accepted: Mutex<Vec<Received>>,
    failing_sites: Mutex<HashSet<i64>>,
    in_flight: Mutex<HashMap<i64, usize>>,
    /// Times a request arrived while another for the same site was still being answered.
    overlaps: AtomicUsize,
    delay: Mutex<Duration>,
    holding: AtomicBool,
    released: Notify,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub url: reqwest::Url,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A loopback port nothing listens on (yet): a receiver that is down.
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// The receiver's URL on `port`.
pub fn url_on(port: u16) -> reqwest::Url {
    format!("http://127.0.0.1:{port}/hooks/alerts").parse().unwrap()
}

impl Receiver {
    /// Starts a receiver on a free port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts a receiver on `port` (0 for any).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let shutdown = CancellationToken::new();
        let app = Router::new()
            .route("/hooks/alerts", post(receive))
            .with_state(shared.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            url: url_on(port),
            shared,
            shutdown,
        }
    }

    /// Answers 500 to every event of `site_id` (or stops doing so).
    pub fn fail_site(&self, site_id: i64, failing: bool) {
        let mut sites = self.shared.failing_sites.lock().unwrap();
        if failing {
            sites.insert(site_id);
        } else {
            sites.remove(&site_id);
        }
    }

    /// Waits `delay` before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Holds every request unanswered until [`Receiver::release`].
    pub fn hold(&self) {
        self.shared.holding.store(true, Ordering::SeqCst);
    }

    /// Answers held requests and stops holding.
    pub fn release(&self) {
        self.shared.holding.store(false, Ordering::SeqCst);
        self.shared.released.notify_waiters();
    }

    /// Every request so far.
    pub fn arrived(&self) -> Vec<Received> {
        self.shared.arrived.lock().unwrap().clone()
    }

    /// Every request answered 2xx so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// How often two requests for one site were being answered at once.
    pub fn overlaps(&self) -> usize {
        self.shared.overlaps.load(Ordering::SeqCst)
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let json: Value = serde_json::from_slice(&body).expect("an event body is JSON");
    let received = Received {
        event_id: header(sink::EVENT_ID_HEADER),
        event_type: header(sink::EVENT_TYPE_HEADER),
        site_id: json["site_id"].as_i64().unwrap(),
        sequence: json["sequence"].as_i64().unwrap(),
        // Both the Standard Webhooks signature (id, timestamp and body) and the deprecated one.
        signature_valid: sink::verify(SECRET, &body, &header(sink::SIGNATURE_HEADER))
            && header(signature::ID_HEADER) == header(sink::EVENT_ID_HEADER)
            && signature::verify(
                &[SECRET.to_vec()],
                &header(signature::ID_HEADER),
                &header(signature::TIMESTAMP_HEADER),
                &body,
                &header(signature::SIGNATURE_HEADER),
                chrono::Utc::now().timestamp(),
            ),
        attempt_header: header(sink::ATTEMPT_HEADER).parse().unwrap_or(0),
        body: json,
    };
    let site = received.site_id;
    shared.arrived.lock().unwrap().push(received.clone());
    {
        let mut in_flight = shared.in_flight.lock().unwrap();
        let count = in_flight.entry(site).or_default();
        if *count > 0 {
            shared.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        *count += 1;
    }
    let released = shared.released.notified();
    if shared.holding.load(Ordering::SeqCst) {
        released.await;
    }
    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    *shared.in_flight.lock().unwrap().get_mut(&site).unwrap() -= 1;
    if shared.failing_sites.lock().unwrap().contains(&site) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    shared.accepted.lock().unwrap().push(received);
    StatusCode::OK
}

/// Polls `condition` every 10 ms until it holds; panics after 20 s with `what`.
pub async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
