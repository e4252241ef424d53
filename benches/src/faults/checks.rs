//! After a scenario: the database held to the clients' ledger and to `plume verify`, and the
//! webhook's record held to the outbox.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::clients::Ledger;
use crate::receiver::Webhook;

/// What the checks found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Acknowledged readings that are not stored.
    pub(crate) lost: i64,
    /// Readings a site's running count holds beyond the acknowledged ones.
    pub(crate) double_counted: i64,
    /// Events delivered, and how.
    pub(crate) outbox: String,
    /// Everything that is wrong, in words; empty when the scenario passed.
    pub(crate) problems: Vec<String>,
}

/// Holds the stored rows and every site's running total to the ledger, and runs `plume verify`.
pub(crate) async fn integrity(
    pool: &PgPool,
    ledger: &Ledger,
    plume: &Path,
    url: &str,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let rows: BTreeMap<i64, (i64, i64)> = sqlx::query_as::<_, (i64, i64, i64)>(
        "select site_id, count(*), coalesce(sum(value_mg), 0)::bigint from measurements
          where source_id like 'fault-%' group by site_id",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(site, count, mg)| (site, (count, mg)))
    .collect();
    let counted: BTreeMap<i64, (i64, i64)> =
        sqlx::query_as::<_, (i64, i64, i64)>("select id, reading_count, total_emissions_mg from sites")
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(site, count, mg)| (site, (count, mg)))
            .collect();
    for (site, (count, mg)) in &ledger.sites {
        let (stored, stored_mg) = rows.get(site).copied().unwrap_or_default();
        let (running, running_mg) = counted.get(site).copied().unwrap_or_default();
        findings.lost += (count - stored).max(0);
        findings.double_counted += (running - count).max(0);
        if stored != *count || stored_mg != *mg {
            findings.problems.push(format!(
                "site {site}: {stored} readings ({stored_mg} mg) stored, {count} ({mg} mg) acknowledged"
            ));
        }
        if running != *count || running_mg != *mg {
            findings.problems.push(format!(
                "site {site}: its running total counts {running} readings ({running_mg} mg), {count} ({mg} mg) acknowledged"
            ));
        }
    }
    for (site, (stored, _)) in &rows {
        if !ledger.sites.contains_key(site) {
            findings.problems.push(format!(
                "site {site}: {stored} readings stored, none acknowledged"
            ));
        }
    }
    if ledger.unresolved > 0 {
        findings.problems.push(format!(
            "{} requests were never acknowledged, however often retried",
            ledger.unresolved
        ));
    }
    for rejected in ledger.rejected.iter().take(5) {
        findings.problems.push(format!("refused: {rejected}"));
    }
    if let Some(first) = ledger.unexpected.first() {
        findings.problems.push(format!(
            "{} answers were a 5xx other than 503, the first: {first}",
            ledger.unexpected.len()
        ));
    }
    let verify = Command::new(plume)
        .args(["verify", "--database-url", url])
        .env("RUST_LOG", "error")
        .output()?;
    if !verify.status.success() {
        findings.problems.push(format!(
            "plume verify failed: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        ));
    }
    Ok(())
}

/// Waits (at most `limit`) until the webhook has every event in the outbox, then checks each
/// site's stream: the event of every sequence number from 1 to its head received (no gap; a
/// dead-lettered event counts when it arrived after `plume outbox retry-dead` put it back at the
/// end of its stream), first received in order (apart from those `requeued` events), and every
/// acknowledged batch reported at each of its sites.
pub(crate) async fn outbox(
    pool: &PgPool,
    webhook: &Webhook,
    ledger: &Ledger,
    requeued: &HashSet<String>,
    limit: Duration,
    findings: &mut Findings,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let events: i64 = loop {
        let events: i64 = sqlx::query_scalar("select count(distinct event_id) from outbox_events")
            .fetch_one(pool)
            .await?;
        if webhook.distinct() as i64 >= events || started.elapsed() > limit {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drained = started.elapsed();
    let deliveries = webhook.deliveries();
    let received: HashSet<&str> = deliveries
        .values()
        .flatten()
        .map(|event| event.event_id.as_str())
        .collect();
    let stored: Vec<(i64, i64, uuid::Uuid)> =
        sqlx::query_as("select site_id, seq, event_id from outbox_events order by site_id, seq")
            .fetch_all(pool)
            .await?;
    let mut missing: BTreeMap<i64, (usize, i64)> = BTreeMap::new();
    for (site, seq, id) in &stored {
        if !received.contains(id.to_string().as_str()) {
            missing.entry(*site).or_insert((0, *seq)).0 += 1;
        }
    }
    for (site, (count, first)) in &missing {
        findings.problems.push(format!(
            "site {site}: {count} events never arrived (the first at sequence {first})"
        ));
    }
    let mut reported: HashSet<(String, i64)> = HashSet::new();
    let mut repeats = 0;
    for (site, arrivals) in &deliveries {
        let mut seen = HashSet::new();
        let mut last = 0;
        for event in arrivals {
            if !seen.insert(event.event_id.as_str()) {
                repeats += 1;
                continue;
            }
            if event.event_type == "measurements.ingested" {
                if let Some(batch) = &event.batch_id {
                    reported.insert((batch.clone(), *site));
                }
            }
            if requeued.contains(&event.event_id) {
                continue;
            }
            if event.sequence < last {
                findings.problems.push(format!(
                    "site {site}: event {} first arrived after event {last}",
                    event.sequence
                ));
            }
            last = last.max(event.sequence);
        }
    }
    let unreported = ledger
        .batches
        .iter()
        .flat_map(|(key, sites)| sites.iter().map(move |site| (key, site)))
        .filter(|(key, site)| !reported.contains(&((*key).clone(), **site)))
        .count();
    if unreported > 0 {
        findings.problems.push(format!(
            "{unreported} (batch, site) pairs acknowledged but never reported to the webhook"
        ));
    }
    if webhook.bad_signatures() > 0 {
        findings.problems.push(format!(
            "{} deliveries were badly signed",
            webhook.bad_signatures()
        ));
    }
    findings.outbox = if missing.is_empty() {
        format!(
            "{events} events, all received, in per-site order; {repeats} received more than once{}",
            if requeued.is_empty() {
                String::new()
            } else {
                format!("; {} re-queued from the dead letters", requeued.len())
            }
        )
    } else {
        format!("{} of {events} events received", webhook.distinct())
    };
    Ok(drained)
}
