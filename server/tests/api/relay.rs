//! The outbox relay: every event delivered, in order per site, through outages, failures, crashes
//! and competing relays.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use plume::outbox::admin::{self, Requeue};
use plume::outbox::relay::{Relay, RelayConfig};
use plume::outbox::sink::{Delivery, DeliveryError, Sink, WebhookSink};
use tokio_util::sync::CancellationToken;

use sqlx::PgPool;

use crate::helpers::{app_url, spawn_app, TestApp};
use crate::outbox::{ingest_one, pending, stored_events};
use crate::receiver::{free_port, url_on, wait_for, Received, Receiver, SECRET};

/// Fast retries and short leases, so the tests run in well under a second each.
pub fn fast_config() -> RelayConfig {
    RelayConfig {
        concurrency: 8,
        batch_size: 10,
        lease: Duration::from_secs(2),
        delivery_timeout: Duration::from_millis(500),
        poll_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..RelayConfig::default()
    }
}

/// A pool for a relay, as `plume serve` makes it for the test's database.
pub async fn relay_pool(app: &TestApp) -> PgPool {
    let settings = plume::outbox::relay::pool_settings(app.state.settings.topology);
    plume::db::connect(&app_url(&app.database_url), &settings)
        .await
        .unwrap()
}

pub async fn relay_to(app: &TestApp, url: reqwest::Url, config: RelayConfig) -> Relay<WebhookSink> {
    let sink = WebhookSink::new(vec![url], SECRET, config.delivery_timeout).unwrap();
    Relay::new(
        relay_pool(app).await,
        sink,
        config,
        app.state.metrics.clone(),
        app.state.outbox_wake.clone(),
    )
}

fn assert_in_order_per_site(received: &[Received]) {
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for event in received {
        let previous = last.insert(event.site_id, event.sequence).unwrap_or(0);
        assert!(
            event.sequence > previous,
            "site {} got {} after {previous}",
            event.site_id,
            event.sequence
        );
    }
}

#[tokio::test]
async fn every_event_is_delivered_signed_once_the_receiver_comes_back() {
    let app = spawn_app().await;
    let sites = [
        app.create_site("A", "100").await,
        app.create_site("B", "100").await,
    ];
    for (i, site) in sites.iter().enumerate() {
        for n in 0..3 {
            ingest_one(&app, *site, &format!("k-{i}-{n}"), n, "1").await;
        }
    }
    let port = free_port().await;
    let relay = relay_to(&app, url_on(port), fast_config()).await;

    // Down: every attempt fails, nothing is lost.
    let round = relay.run_once().await.unwrap();
    assert_eq!((round.delivered, round.failed), (0, 2));
    assert_eq!(pending(&app.pool).await, 6);

    // Up again, on the same address.
    let receiver = Receiver::start_on(port).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    wait_for("every event delivered", || async {
        pending(&app.pool).await == 0
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();

    let accepted = receiver.accepted();
    let stored: HashSet<String> = stored_events(&app.pool).await.into_iter().map(|e| e.0).collect();
    let delivered: HashSet<String> = accepted.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(delivered, stored, "every stored event, by id");
    assert!(
        accepted.iter().all(|r| r.signature_valid),
        "signed with the shared secret"
    );
    assert!(accepted.iter().all(|r| r.body["event_id"] == r.event_id.as_str()));
    assert!(accepted.iter().all(|r| r.event_type == "measurements.ingested"));
    assert_in_order_per_site(&accepted);
    let first_of_a = accepted.iter().find(|r| r.site_id == sites[0]).unwrap();
    assert_eq!(
        first_of_a.attempt_header, 2,
        "the second attempt at the first event"
    );
}

#[tokio::test]
async fn a_site_whose_events_fail_does_not_hold_up_the_others() {
    let app = spawn_app().await;
    let (bad, good) = (
        app.create_site("Bad", "100").await,
        app.create_site("Good", "100").await,
    );
    for n in 0..3 {
        ingest_one(&app, bad, &format!("bad-{n}"), n, "1").await;
        ingest_one(&app, good, &format!("good-{n}"), n, "1").await;
    }
    let receiver = Receiver::start().await;
    receiver.fail_site(bad, true);
    let relay = relay_to(&app, receiver.url.clone(), fast_config()).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    wait_for("the good site's events", || async {
        receiver.accepted().len() == 3
    })
    .await;
    wait_for("retries of the bad site", || async {
        receiver.arrived().iter().filter(|r| r.site_id == bad).count() >= 3
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();

    assert!(receiver.accepted().iter().all(|r| r.site_id == good));
    let status = admin::status(&app.pool).await.unwrap();
    assert_eq!(status.pending, 3, "the bad site's events wait, in order");
    let stream = &status.streams[0];
    assert_eq!(stream.site_id, bad);
    assert!(stream.attempts >= 3, "{stream:?}");
    assert!(
        stream.last_error.as_deref().unwrap().contains("500"),
        "{stream:?}"
    );
    let tried: HashSet<i64> = receiver
        .arrived()
        .iter()
        .filter(|r| r.site_id == bad)
        .map(|r| r.sequence)
        .collect();
    assert_eq!(
        tried,
        HashSet::from([1]),
        "only the head of the failing stream is tried"
    );
}

#[tokio::test]
async fn a_relay_killed_mid_delivery_has_its_event_delivered_again_with_the_same_id() {
    let app = spawn_app().await;
    let site = app.create_site("Crash", "100").await;
    ingest_one(&app, site, "only", 0, "1").await;
    let receiver = Receiver::start().await;
    receiver.hold();

    let doomed = tokio::spawn(
        relay_to(&app, receiver.url.clone(), fast_config())
            .await
            .run(CancellationToken::new()),
    );
    wait_for("the first delivery to arrive", || async {
        receiver.arrived().len() == 1
    })
    .await;
    doomed.abort(); // killed between sending the event and hearing the answer
    let _ = doomed.await;
    receiver.release();
    assert_eq!(pending(&app.pool).await, 1, "not marked delivered");

    let successor = relay_to(&app, receiver.url.clone(), fast_config()).await;
    assert_eq!(
        successor.run_once().await.unwrap().streams,
        0,
        "the lease still holds"
    );
    wait_for("the lease to expire and the event to go out again", || async {
        successor.run_once().await.unwrap();
        pending(&app.pool).await == 0
    })
    .await;
    let arrived = receiver.arrived();
    assert_eq!(arrived.len(), 2);
    assert_eq!(
        arrived[0].event_id, arrived[1].event_id,
        "the same event id, for deduplication"
    );
}

#[tokio::test]
async fn two_relays_never_deliver_a_site_at_the_same_time() {
    let app = spawn_app().await;
    let mut sites = Vec::new();
    for s in 0..6 {
        let site = app.create_site(&format!("Site {s}"), "100").await;
        for n in 0..5 {
            ingest_one(&app, site, &format!("{s}-{n}"), n, "1").await;
        }
        sites.push(site);
    }
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(3));
    let config = RelayConfig {
        batch_size: 2,
        ..fast_config()
    };
    let shutdown = CancellationToken::new();
    let first = tokio::spawn(
        relay_to(&app, receiver.url.clone(), config.clone())
            .await
            .run(shutdown.clone()),
    );
    let second = tokio::spawn(
        relay_to(&app, receiver.url.clone(), config)
            .await
            .run(shutdown.clone()),
    );
    wait_for("every event delivered", || async {
        pending(&app.pool).await == 0
    })
    .await;
    shutdown.cancel();
    first.await.unwrap();
    second.await.unwrap();

    assert_eq!(receiver.overlaps(), 0, "a site delivered by two relays at once");
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 30, "each event once: nothing crashed");
    let ids: HashSet<&str> = accepted.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), 30);
    assert_in_order_per_site(&accepted);
}

#[tokio::test]
async fn an_event_that_keeps_failing_is_dead_lettered_then_requeued_and_delivered() {
    let app = spawn_app().await;
    let site = app.create_site("Dead", "100").await;
    ingest_one(&app, site, "doomed", 0, "1").await;
    let receiver = Receiver::start().await;
    receiver.fail_site(site, true);
    let relay = relay_to(
        &app,
        receiver.url.clone(),
        RelayConfig {
            max_attempts: 3,
            ..fast_config()
        },
    )
    .await;
    wait_for("the event to be dead-lettered", || async {
        relay.run_once().await.unwrap();
        admin::status(&app.pool).await.unwrap().dead == 1
    })
    .await;
    assert_eq!(receiver.arrived().len(), 3, "three attempts");
    assert_eq!(pending(&app.pool).await, 0, "the stream moved on");
    let dead = admin::dead_events(&app.pool, 10).await.unwrap();
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].last_error.as_deref().unwrap().contains("500"));

    // The site's later events are not held up by the dead one.
    receiver.fail_site(site, false);
    ingest_one(&app, site, "later", 1, "1").await;
    relay.run_once().await.unwrap();
    assert_eq!(receiver.accepted().len(), 1);

    assert_eq!(admin::retry_dead(&app.pool, Requeue::All).await.unwrap(), 1);
    assert_eq!(admin::status(&app.pool).await.unwrap().dead, 0);
    relay.run_once().await.unwrap();
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(
        accepted[1].event_id,
        dead[0].event_id.to_string(),
        "the original id"
    );
    assert_eq!(accepted[1].body["batch_id"], "doomed");
    assert_eq!(accepted[1].sequence, 3, "appended after the site's later event");
    assert_eq!(
        admin::retry_dead(&app.pool, Requeue::Event(dead[0].event_id))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn metrics_show_the_backlog_and_the_deliveries() {
    let app = spawn_app().await;
    let site = app.create_site("Watched", "100").await;
    ingest_one(&app, site, "one", 0, "1").await;
    let page = app.get("/metrics").await.text().await.unwrap();
    assert!(page.contains("plume_outbox_pending 1\n"), "{page}");
    assert!(page.contains("plume_outbox_dead 0\n"), "{page}");
    assert!(
        page.contains("plume_outbox_oldest_pending_age_seconds "),
        "{page}"
    );

    let receiver = Receiver::start().await;
    relay_to(&app, receiver.url.clone(), fast_config())
        .await
        .run_once()
        .await
        .unwrap();
    // The database's gauges are read at most every few seconds.
    wait_for("the pending gauge to come down", || async {
        let page = app.get("/metrics").await.text().await.unwrap();
        page.contains("plume_outbox_pending 0\n")
    })
    .await;
    let page = app.get("/metrics").await.text().await.unwrap();
    assert!(page.contains("plume_outbox_delivered_total 1\n"), "{page}");
    assert!(
        page.contains("plume_outbox_delivery_latency_seconds_count 1\n"),
        "{page}"
    );
}

#[tokio::test]
async fn a_busy_site_does_not_starve_a_quiet_one() {
    let app = spawn_app().await;
    let (busy, quiet) = (
        app.create_site("Busy", "100").await,
        app.create_site("Quiet", "100").await,
    );
    ingest_one(&app, quiet, "quiet", 0, "1").await;
    sqlx::query("insert into outbox_streams (site_id, head_seq) values ($1, 0)")
        .bind(busy)
        .execute(&app.pool)
        .await
        .unwrap();
    // The busy site (the lower id) always has new events by the time its delivery round ends.
    let stop = CancellationToken::new();
    let writer = {
        let (pool, stop) = (app.pool.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                sqlx::query(
                    "with s as (update outbox_streams set head_seq = head_seq + 1 where site_id = $1 returning head_seq)
                     insert into outbox_events (site_id, seq, event_id, event_type, occurred_at, data)
                     select $1, head_seq, gen_random_uuid(), 'measurements.ingested', now(), '{}' from s",
                )
                .bind(busy)
                .execute(&pool)
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(5));
    let config = RelayConfig {
        concurrency: 1,
        ..fast_config()
    };
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(
        relay_to(&app, receiver.url.clone(), config)
            .await
            .run(shutdown.clone()),
    );
    wait_for("the quiet site's event", || async {
        receiver.accepted().iter().any(|r| r.site_id == quiet)
    })
    .await;
    stop.cancel();
    shutdown.cancel();
    writer.await.unwrap();
    running.await.unwrap();
    let busy_before_quiet = receiver
        .accepted()
        .iter()
        .take_while(|r| r.site_id == busy)
        .count();
    assert!(
        busy_before_quiet <= 10,
        "one round of the busy site at most, then the quiet one: {busy_before_quiet}"
    );
}

/// A sink whose deliveries each wait for a permit the test hands out.
#[derive(Debug, Clone)]
struct Gated(std::sync::Arc<GateState>);

impl Default for Gated {
    fn default() -> Self {
        Self(std::sync::Arc::new(GateState {
            permits: tokio::sync::Semaphore::new(0),
            calls: Default::default(),
        }))
    }
}

#[derive(Debug)]
struct GateState {
    permits: tokio::sync::Semaphore,
    calls: std::sync::atomic::AtomicUsize,
}

impl Sink for Gated {
    async fn deliver(&self, _delivery: &Delivery) -> Result<(), DeliveryError> {
        self.0.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.permits.acquire().await.unwrap().forget();
        Ok(())
    }
}

#[tokio::test]
async fn a_late_write_back_from_an_expired_claim_leaves_the_new_claim_alone() {
    let app = spawn_app().await;
    let site = app.create_site("Slow", "100").await;
    ingest_one(&app, site, "slow", 0, "1").await;
    let gate = Gated::default();
    let config = RelayConfig {
        lease: Duration::from_millis(800),
        delivery_timeout: Duration::from_millis(100),
        ..fast_config()
    };
    let relay = std::sync::Arc::new(Relay::new(
        relay_pool(&app).await,
        gate.clone(),
        config,
        app.state.metrics.clone(),
        app.state.outbox_wake.clone(),
    ));
    let calls = || gate.0.calls.load(std::sync::atomic::Ordering::SeqCst);

    // A delivery that outlives its lease (a sink ignoring its timeout), then the same relay
    // claims the stream again once the lease has expired.
    let first = tokio::spawn({
        let relay = relay.clone();
        async move { relay.run_once().await.unwrap() }
    });
    wait_for("the first delivery", || async { calls() == 1 }).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let second = tokio::spawn({
        let relay = relay.clone();
        async move { relay.run_once().await.unwrap() }
    });
    wait_for("the second claim's delivery", || async { calls() == 2 }).await;

    gate.0.permits.add_permits(1); // the first, stale delivery ends and writes back
    first.await.unwrap();
    let lease: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select lease_until from outbox_streams where site_id = $1")
            .bind(site)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        lease.is_some(),
        "the stale write-back ended the live claim's lease"
    );

    gate.0.permits.add_permits(1);
    assert_eq!(second.await.unwrap().delivered, 1);
    assert_eq!(pending(&app.pool).await, 0);
}

#[tokio::test]
async fn a_redirect_is_a_failed_delivery_not_a_delivered_event() {
    use axum::response::Redirect;
    let app = spawn_app().await;
    let site = app.create_site("Moved", "100").await;
    ingest_one(&app, site, "moved", 0, "1").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let moved = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(|| async { Redirect::to("/elsewhere") }),
        )
        .route("/elsewhere", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, moved).await.unwrap() });

    let url = format!("http://{address}/hook").parse().unwrap();
    let round = relay_to(&app, url, fast_config()).await.run_once().await.unwrap();
    assert_eq!((round.delivered, round.failed), (0, 1));
    let status = admin::status(&app.pool).await.unwrap();
    assert_eq!(status.pending, 1);
    assert!(
        status.streams[0].last_error.as_deref().unwrap().contains("303"),
        "{status:?}"
    );
}

#[tokio::test]
async fn an_event_older_than_the_maximum_age_is_dead_lettered_at_its_next_failure() {
    let app = spawn_app().await;
    let site = app.create_site("Old", "100").await;
    ingest_one(&app, site, "old", 0, "1").await;
    let receiver = Receiver::start().await;
    receiver.fail_site(site, true);
    let config = RelayConfig {
        max_age: Duration::from_millis(1),
        ..fast_config()
    };
    let round = relay_to(&app, receiver.url.clone(), config)
        .await
        .run_once()
        .await
        .unwrap();
    assert_eq!((round.failed, round.dead_lettered), (1, 1));
    let status = admin::status(&app.pool).await.unwrap();
    assert_eq!((status.pending, status.dead), (0, 1));
}

#[tokio::test]
async fn credentials_in_a_failing_webhook_url_appear_in_no_error_or_status() {
    let app = spawn_app().await;
    let site = app.create_site("Secretive", "100").await;
    ingest_one(&app, site, "hidden", 0, "1").await;
    // Nothing listens there: every attempt fails with a connection error naming the URL, if any.
    let port = free_port().await;
    let url: reqwest::Url = format!("http://hook-user:pa55word@127.0.0.1:{port}/hooks?token=qu3ry-secret")
        .parse()
        .unwrap();
    let relay = relay_to(
        &app,
        url,
        RelayConfig {
            max_attempts: 2,
            ..fast_config()
        },
    )
    .await;
    wait_for("the event to be dead-lettered", || async {
        relay.run_once().await.unwrap();
        admin::status(&app.pool).await.unwrap().dead == 1
    })
    .await;
    let dead = admin::dead_events(&app.pool, 10).await.unwrap();
    let shown = format!("{dead:?} {:?}", admin::status(&app.pool).await.unwrap());
    assert!(shown.contains(&format!("127.0.0.1:{port}/hooks")), "{shown}");
    for secret in ["hook-user", "pa55word", "qu3ry-secret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let stored: String =
        sqlx::query_scalar("select coalesce(string_agg(coalesce(last_error, ''), ' '), '') from outbox_dead")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        !stored.contains("pa55word") && !stored.contains("qu3ry-secret"),
        "{stored}"
    );
}

#[test]
fn short_or_too_many_webhook_secrets_are_refused_at_start() {
    let run = |secrets: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_plume"));
        command.args(["relay", "--alert-webhook-url", "http://127.0.0.1:9/hook"]);
        for secret in secrets {
            command.args(["--alert-webhook-secret", secret]);
        }
        // The database is never reached: the sink is checked first.
        command.env("DATABASE_URL", "postgres://127.0.0.1:9/none");
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(&["short"]);
    assert!(!ok && stderr.contains("at least 32 bytes"), "{stderr}");
    assert!(!stderr.contains("short\""), "the secret is not echoed");
    let long = "x".repeat(32);
    let (ok, stderr) = run(&[&long, &long, &long]);
    assert!(!ok && stderr.contains("at most twice"), "{stderr}");
}

#[tokio::test]
async fn scraping_metrics_often_reads_the_database_gauges_once_in_a_while() {
    let app = spawn_app().await;
    let reads_before = app.metric("plume_outbox_pending").await;
    // A change the gauges would show, then many scrapes at once: they show the cached figure.
    let site = app.create_site("Scraped", "100").await;
    ingest_one(&app, site, "scraped", 0, "1").await;
    for _ in 0..20 {
        assert_eq!(
            app.metric("plume_outbox_pending").await,
            reads_before,
            "served from the cache"
        );
    }
}

/// `(pending_since, oldest undelivered created_at)` of `site`'s stream.
async fn pending_bound(
    app: &TestApp,
    site: i64,
) -> (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
) {
    sqlx::query_as(
        "select s.pending_since,
                (select min(e.created_at) from outbox_events e
                  where e.site_id = s.site_id and e.seq > s.delivered_seq)
           from outbox_streams s where s.site_id = $1",
    )
    .bind(site)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_streams_pending_since_bounds_its_undelivered_events_and_clears_once_all_are_delivered() {
    let app = spawn_app().await;
    let site = app.create_site("Bounded", "100").await;
    for n in 0..3 {
        ingest_one(&app, site, &format!("first-{n}"), n, "1").await;
    }
    let (bound, oldest) = pending_bound(&app, site).await;
    assert_eq!(bound, oldest, "the first append's own time");
    assert!(bound.is_some());

    // A claim that takes only part of the stream leaves the bound where it was.
    let receiver = Receiver::start().await;
    let relay = relay_to(
        &app,
        receiver.url.clone(),
        RelayConfig {
            batch_size: 2,
            ..fast_config()
        },
    )
    .await;
    relay.run_once().await.unwrap();
    assert_eq!(receiver.accepted().len(), 2);
    let (bound, oldest) = pending_bound(&app, site).await;
    assert!(bound.unwrap() <= oldest.unwrap());

    relay.run_once().await.unwrap();
    assert_eq!(receiver.accepted().len(), 3);
    assert_eq!(pending_bound(&app, site).await, (None, None), "caught up");

    // A backlog from days ago, as a relay that was down for days would find it (the events moved
    // to an older day's partition, the bound with them): read from there, in order.
    ingest_one(&app, site, "second-0", 10, "1").await;
    ingest_one(&app, site, "second-1", 11, "1").await;
    sqlx::query(
        "with moved as (
             update outbox_events set created_at = created_at - interval '3 days'
              where site_id = $1 and seq > 3
         )
         update outbox_streams set pending_since = pending_since - interval '3 days' where site_id = $1",
    )
    .bind(site)
    .execute(&app.pool)
    .await
    .unwrap();
    relay.run_once().await.unwrap();
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 5);
    assert_eq!(
        accepted.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(pending_bound(&app, site).await, (None, None));

    // The next event after the catch-up sets the bound to its own time.
    ingest_one(&app, site, "third", 20, "1").await;
    let (bound, oldest) = pending_bound(&app, site).await;
    assert_eq!(bound, oldest);
}
