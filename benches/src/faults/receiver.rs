//! The alerting webhook as the suite plays it: it records every event it is sent, and can be
//! down (nothing listens), failing (500 to everything) or slow (answering after plume's timeout).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use plume_bench::SECRET;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How the webhook answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// 200 at once.
    Healthy,
    /// Not listening: connections are refused.
    Down,
    /// 500 to every event.
    Failing,
    /// 200, but only after this long.
    Slow(Duration),
}

/// One delivery as received.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Event {
    pub(crate) event_id: String,
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) site_id: i64,
    pub(crate) sequence: i64,
    #[serde(default)]
    pub(crate) batch_id: Option<String>,
}

#[derive(Debug, Default)]
struct Record {
    /// Each site's deliveries, in the order they arrived (repeats included).
    by_site: BTreeMap<i64, Vec<Event>>,
    bad_signatures: u64,
    refused: u64,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    record: Mutex<Record>,
}

/// The receiver: one address for its whole life, listening or not as its mode says.
#[derive(Debug)]
pub(crate) struct Webhook {
    address: SocketAddr,
    shared: Arc<Shared>,
    serving: Mutex<Option<CancellationToken>>,
}

impl Webhook {
    /// Starts healthy on a free loopback port.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let webhook = Self {
            address: listener.local_addr()?,
            shared: Arc::new(Shared {
                mode: Mutex::new(Mode::Healthy),
                record: Mutex::new(Record::default()),
            }),
            serving: Mutex::new(None),
        };
        webhook.serve(listener);
        Ok(webhook)
    }

    /// Where plume sends events.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/alerts", self.address)
    }

    /// Changes how it answers; `Down` closes the listening socket, anything else opens it again.
    pub(crate) async fn set_mode(&self, mode: Mode) -> anyhow::Result<()> {
        *self.shared.mode.lock().unwrap() = mode;
        let listening = self.serving.lock().unwrap().is_some();
        match (mode, listening) {
            (Mode::Down, true) => {
                if let Some(stop) = self.serving.lock().unwrap().take() {
                    stop.cancel();
                }
            }
            (Mode::Down, false) | (_, true) => {}
            (_, false) => {
                // The port was just closed by this process; binding it again may take a moment.
                let mut tries = 0;
                let listener = loop {
                    match TcpListener::bind(self.address).await {
                        Ok(listener) => break listener,
                        Err(_) if tries < 50 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(error) => return Err(error.into()),
                    }
                };
                self.serve(listener);
            }
        }
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/alerts", post(receive))
            .with_state(self.shared.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        *self.serving.lock().unwrap() = Some(stop);
    }

    /// Each site's deliveries in arrival order.
    pub(crate) fn deliveries(&self) -> BTreeMap<i64, Vec<Event>> {
        self.shared.record.lock().unwrap().by_site.clone()
    }

    /// Distinct events received.
    pub(crate) fn distinct(&self) -> usize {
        let record = self.shared.record.lock().unwrap();
        let ids: HashSet<&str> = record
            .by_site
            .values()
            .flatten()
            .map(|e| e.event_id.as_str())
            .collect();
        ids.len()
    }

    /// Deliveries whose signature did not verify.
    pub(crate) fn bad_signatures(&self) -> u64 {
        self.shared.record.lock().unwrap().bad_signatures
    }

    /// Deliveries answered with a failure (500, or too late).
    pub(crate) fn refused(&self) -> u64 {
        self.shared.record.lock().unwrap().refused
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(stop) = self.serving.lock().unwrap().take() {
            stop.cancel();
        }
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mode = *shared.mode.lock().unwrap();
    match mode {
        Mode::Failing | Mode::Down => {
            shared.record.lock().unwrap().refused += 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        Mode::Slow(delay) => {
            shared.record.lock().unwrap().refused += 1;
            tokio::time::sleep(delay).await;
            // plume gave up on it already: it is not counted as delivered.
            return StatusCode::OK;
        }
        Mode::Healthy => {}
    }
    let signature = headers
        .get(plume::outbox::sink::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut record = shared.record.lock().unwrap();
    if !plume::outbox::sink::verify(SECRET, &body, signature) {
        record.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<Event>(&body) {
        Ok(event) => {
            record.by_site.entry(event.site_id).or_default().push(event);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}
