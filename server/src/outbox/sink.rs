//! Where the relay delivers events: the [`Sink`] trait, the webhook sink the alerting service
//! listens on, and the log sink used when no webhook is configured.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use super::{signature, StoredEvent};

/// Header carrying the event id (also in the body): what consumers deduplicate on.
pub const EVENT_ID_HEADER: &str = "x-plume-event-id";
/// Header carrying the event type.
pub const EVENT_TYPE_HEADER: &str = "x-plume-event-type";
/// Header carrying `sha256=<hex HMAC-SHA256 of the body with the (first) shared secret>`.
/// Deprecated: it can be replayed; verify the Standard Webhooks headers ([`super::signature`]).
pub const SIGNATURE_HEADER: &str = "x-plume-signature-256";
/// Header carrying which attempt this is, from 1.
pub const ATTEMPT_HEADER: &str = "x-plume-delivery-attempt";

/// One event, ready to send.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event's id.
    pub event_id: Uuid,
    /// `measurements.ingested` or `site.limit_exceeded`.
    pub event_type: String,
    /// The site whose stream it is in.
    pub site_id: i64,
    /// Its place in the site's stream.
    pub sequence: i64,
    /// When it was written to the outbox.
    pub created_at: DateTime<Utc>,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The JSON body, exactly the bytes sent and signed.
    pub body: Vec<u8>,
}

/// The body's common fields; the type-specific ones follow, flattened.
#[derive(Serialize)]
struct Body<'a> {
    event_id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    site_id: i64,
    sequence: i64,
    occurred_at: String,
    #[serde(flatten)]
    data: &'a serde_json::Map<String, Value>,
}

impl Delivery {
    /// Builds the `attempt`th delivery of a stored event.
    pub fn new(event: &StoredEvent, attempt: u32) -> Self {
        let empty = serde_json::Map::new();
        let body = Body {
            event_id: event.event_id,
            event_type: &event.event_type,
            site_id: event.site_id,
            sequence: event.seq,
            occurred_at: event.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            data: event.data.as_object().unwrap_or(&empty),
        };
        let body = serde_json::to_vec(&body).expect("an event body serialises");
        Self {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            site_id: event.site_id,
            sequence: event.seq,
            created_at: event.created_at,
            attempt,
            body,
        }
    }
}

/// Why a delivery failed; the relay retries it later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// Something events are delivered to. `deliver` succeeds only once the receiver has the event.
pub trait Sink: Send + Sync + fmt::Debug + 'static {
    /// Delivers one event.
    fn deliver(&self, delivery: &Delivery) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Writes each event as one structured log line: the sink when no webhook is configured, so the
/// outbox works (and can be watched) out of the box.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl Sink for LogSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        tracing::info!(
            target: "plume::outbox::delivered",
            event_id = %delivery.event_id,
            event_type = %delivery.event_type,
            site_id = delivery.site_id,
            sequence = delivery.sequence,
            body = %String::from_utf8_lossy(&delivery.body),
            "event delivered to the log"
        );
        Ok(())
    }
}

/// POSTs each event to every configured URL, signed; delivered when all of them answer 2xx.
#[derive(Clone)]
pub struct WebhookSink {
    client: reqwest::Client,
    urls: Vec<reqwest::Url>,
    /// The signing secrets, the newest first.
    secrets: Vec<Vec<u8>>,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("urls", &self.urls.iter().map(redacted).collect::<Vec<_>>())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl WebhookSink {
    /// A sink for `urls`, signing with `secret`, giving up on a request after `timeout`.
    pub fn new(urls: Vec<reqwest::Url>, secret: &[u8], timeout: Duration) -> Result<Self, reqwest::Error> {
        Self::with_secrets(urls, vec![secret.to_vec()], timeout)
    }

    /// A sink signing with each of `secrets` (the newest first, so a receiver can move to it
    /// while the old one still verifies).
    pub fn with_secrets(
        urls: Vec<reqwest::Url>,
        secrets: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect would turn the POST into a body-less GET whose 2xx is no delivery: a 3xx
            // counts as a failure instead.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("plume/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            urls,
            secrets,
        })
    }

    async fn post(
        &self,
        url: &reqwest::Url,
        delivery: &Delivery,
        signatures: &Signatures,
    ) -> Result<(), DeliveryError> {
        let response = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, delivery.event_id.to_string())
            .header(EVENT_TYPE_HEADER, &delivery.event_type)
            .header(ATTEMPT_HEADER, delivery.attempt.to_string())
            .header(SIGNATURE_HEADER, &signatures.legacy)
            .header(signature::ID_HEADER, delivery.event_id.to_string())
            .header(signature::TIMESTAMP_HEADER, signatures.timestamp.to_string())
            .header(signature::SIGNATURE_HEADER, &signatures.standard)
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| DeliveryError(format!("{}: {}", redacted(url), error_chain(&e.without_url()))))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError(format!("{}: answered {status}", redacted(url))))
        }
    }
}

impl Sink for WebhookSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let timestamp = Utc::now().timestamp();
        let signatures = Signatures {
            legacy: sign(&self.secrets[0], &delivery.body),
            standard: signature::sign(
                &self.secrets,
                &delivery.event_id.to_string(),
                timestamp,
                &delivery.body,
            ),
            timestamp,
        };
        let attempts = self.urls.iter().map(|url| self.post(url, delivery, &signatures));
        let failures: Vec<String> = futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .filter_map(|result| result.err().map(|e| e.0))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(DeliveryError(failures.join("; ")))
        }
    }
}

/// One delivery's signatures, the same for every URL.
#[derive(Debug)]
struct Signatures {
    legacy: String,
    standard: String,
    timestamp: i64,
}

/// `sha256=` and the hex HMAC-SHA256 of `body` keyed with `secret`: the value of
/// [`SIGNATURE_HEADER`].
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `signature` (a [`SIGNATURE_HEADER`] value) is `body`'s, compared in constant time.
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(Ok(expected)) = signature.strip_prefix("sha256=").map(hex::decode) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// `url` without its user name, password, query or fragment: fit for logs, the dead letters and
/// `plume outbox status`, which must never show a credential some receivers take in their URL.
pub fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    let had_query = shown.query().is_some();
    shown.set_query(None);
    if had_query {
        format!("{shown}?…")
    } else {
        shown.to_string()
    }
}

/// An error and its causes on one line (reqwest's own message hides the cause, e.g. "connection
/// refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_redacted_url_keeps_where_it_goes_and_drops_its_credentials() {
        let url: reqwest::Url = "https://user:secret@alerts.example:8443/hook?key=abc#x"
            .parse()
            .unwrap();
        assert_eq!(redacted(&url), "https://alerts.example:8443/hook?…");
        let plain: reqwest::Url = "http://alerts.example/hook".parse().unwrap();
        assert_eq!(redacted(&plain), "http://alerts.example/hook");
    }

    use super::*;

    #[test]
    fn a_signature_verifies_with_its_secret_only() {
        let body = br#"{"event_id":"x"}"#;
        let signature = sign(b"secret", body);
        assert!(signature.starts_with("sha256="));
        assert!(verify(b"secret", body, &signature));
        assert!(!verify(b"other", body, &signature));
        assert!(!verify(b"secret", b"{}", &signature));
        assert!(!verify(b"secret", body, "sha256=zz"));
    }

    #[test]
    fn the_signature_is_standard_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_carries_the_common_fields_then_the_data() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let event = StoredEvent {
            site_id: 7,
            seq: 3,
            event_id: Uuid::nil(),
            event_type: "measurements.ingested".into(),
            occurred_at: at,
            created_at: at,
            data: serde_json::json!({"batch_id": "b", "readings_accepted": 2}),
        };
        let delivery = Delivery::new(&event, 1);
        let body: Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(body["type"], "measurements.ingested");
        assert_eq!(body["site_id"], 7);
        assert_eq!(body["sequence"], 3);
        assert_eq!(body["occurred_at"], "2026-01-02T03:04:05.000000Z");
        assert_eq!(body["batch_id"], "b");
    }
}
