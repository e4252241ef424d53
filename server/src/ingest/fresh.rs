//! The in-order fast path: most sensor data arrives in time order, so most readings of a batch are
//! newer than anything stored for their (site, source). Under the site's lock such a reading cannot
//! conflict with a stored one, so it can be COPYed straight into `measurements`, with its rollups
//! and totals computed here, leaving only late or repeated readings for `on conflict`.
//!
//! This module is the pure part: splitting a batch by the newest stored times, and aggregating the
//! fresh readings per (site, hour) and per site exactly as the database would.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::store::SiteReadings;
use super::Reading;
use crate::sites::SiteId;

/// The newest stored reading time of each (site, source) that has any at or after the batch's
/// earliest reading for it; a pair missing here has nothing stored that late.
pub type NewestStored = HashMap<(SiteId, String), DateTime<Utc>>;

/// A reading with its site, borrowed from the batch.
pub type SiteReading<'a> = (SiteId, &'a Reading);

/// How many readings of one part of a group, and their sum.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PartTotals {
    /// How many.
    pub readings: u64,
    /// Their sum.
    pub sum_mg: i64,
}

/// A group's readings split in two: readings newer than everything stored or sent before them for
/// their (site, source), and the rest. A reading that an earlier part of the group carries is in
/// neither: it is stored by that part or was stored before, so it is a duplicate of its own part.
#[derive(Debug, Default)]
pub struct Split<'a> {
    /// Cannot conflict: COPY them straight into `measurements`.
    pub fresh: Vec<SiteReading<'a>>,
    /// The fresh readings of each part, by the part's index.
    pub fresh_by_part: Vec<PartTotals>,
    /// May repeat stored readings: through staging and `on conflict do nothing`. No two are the same
    /// reading, so each one stored is its own part's.
    pub late: Vec<SiteReading<'a>>,
    /// The part of each late reading, in the same order.
    pub late_parts: Vec<i64>,
}

/// What a reading is compared with to split a group.
#[derive(Debug, Clone, Copy)]
pub enum Stored<'n> {
    /// The newest stored reading of each (site, source) that has one late enough to matter.
    Newest(&'n NewestStored),
    /// Anything may be stored: every reading is late (the conflict-checked path).
    Anything,
}

/// A source's newest stored reading and its newest sent by the parts before, if any.
type Bars = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Splits `parts` (a group's batches, a site's parts adjacent and in the order they arrived) by what
/// is `stored` and by the parts before each: a reading is late when something at or after its time
/// is stored, or sent by an earlier part, for its (site, source), and left out when an earlier
/// part carries the very reading.
pub fn split<'a>(parts: &[&'a SiteReadings], stored: Stored<'_>) -> Split<'a> {
    let mut split = Split {
        fresh_by_part: vec![PartTotals::default(); parts.len()],
        ..Split::default()
    };
    // For the parts of a site after its first: the newest reading of each source in the parts
    // before, and those parts' readings.
    let mut earlier_newest: HashMap<(SiteId, &'a str), DateTime<Utc>> = HashMap::new();
    let mut earlier: HashSet<(SiteId, &'a str, DateTime<Utc>)> = HashSet::new();
    for (index, &part) in parts.iter().enumerate() {
        let site = part.site_id;
        // Readings are sorted by source, then time: look each source up once.
        let mut source: Option<(&str, Bars)> = None;
        for reading in &part.readings {
            let (stored_newest, sent_newest) = match source {
                Some((id, bars)) if id == reading.source_id => bars,
                _ => {
                    let stored_newest = match stored {
                        Stored::Newest(newest) => newest.get(&(site, reading.source_id.clone())).copied(),
                        Stored::Anything => Some(DateTime::<Utc>::MAX_UTC),
                    };
                    let sent_newest = earlier_newest.get(&(site, reading.source_id.as_str())).copied();
                    source = Some((&reading.source_id, (stored_newest, sent_newest)));
                    (stored_newest, sent_newest)
                }
            };
            let at = reading.measured_at;
            if sent_newest.is_some_and(|newest| at <= newest)
                && earlier.contains(&(site, reading.source_id.as_str(), at))
            {
                continue;
            }
            if stored_newest.max(sent_newest).is_some_and(|newest| at <= newest) {
                split.late.push((site, reading));
                split.late_parts.push(index as i64);
            } else {
                split.fresh.push((site, reading));
                let totals = &mut split.fresh_by_part[index];
                totals.readings += 1;
                totals.sum_mg += reading.value.mg();
            }
        }
        if parts.get(index + 1).is_some_and(|next| next.site_id == site) {
            for reading in &part.readings {
                let key = (site, reading.source_id.as_str());
                let newest = earlier_newest.entry(key).or_insert(reading.measured_at);
                *newest = (*newest).max(reading.measured_at);
                earlier.insert((site, reading.source_id.as_str(), reading.measured_at));
            }
        }
    }
    split
}

/// The readings of one (site, source) in a batch, from `earliest` to `newest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceSpan<'a> {
    /// The site.
    pub site_id: SiteId,
    /// The source.
    pub source_id: &'a str,
    /// Its earliest reading in the batch: what the look-up of the newest stored one asks about.
    pub earliest: DateTime<Utc>,
    /// Its newest reading in the batch: where its head stands after the batch.
    pub newest: DateTime<Utc>,
}

/// Each (site, source) of `groups` with the span of its readings, in batch order.
pub fn source_spans<'a>(groups: &[&'a SiteReadings]) -> Vec<SourceSpan<'a>> {
    let mut spans: Vec<SourceSpan<'a>> = Vec::new();
    for &group in groups {
        // Sorted by source, then time: a source's readings are one run, earliest first.
        for reading in &group.readings {
            match spans.last_mut() {
                Some(span) if span.site_id == group.site_id && span.source_id == reading.source_id => {
                    span.newest = reading.measured_at;
                }
                _ => spans.push(SourceSpan {
                    site_id: group.site_id,
                    source_id: &reading.source_id,
                    earliest: reading.measured_at,
                    newest: reading.measured_at,
                }),
            }
        }
    }
    spans
}

/// Where each (site, source) of `spans` stands once the group commits: its newest reading in any
/// part (stored now or before), one entry per (site, source), ascending.
pub fn heads<'a>(spans: &[SourceSpan<'a>]) -> Vec<(SiteId, &'a str, DateTime<Utc>)> {
    let mut heads: BTreeMap<(i64, &'a str), DateTime<Utc>> = BTreeMap::new();
    for span in spans {
        let newest = heads
            .entry((span.site_id.get(), span.source_id))
            .or_insert(span.newest);
        *newest = (*newest).max(span.newest);
    }
    heads
        .into_iter()
        .map(|((site, source), newest)| (SiteId::new(site).expect("a site id"), source, newest))
        .collect()
}

/// One (site, UTC hour) of fresh readings, as a rollup row adds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourTotals {
    /// The site.
    pub site_id: i64,
    /// The UTC hour, as `date_trunc('hour', measured_at, 'UTC')`.
    pub hour: DateTime<Utc>,
    /// Sum of the readings.
    pub sum_mg: i64,
    /// How many.
    pub readings: i64,
    /// The smallest.
    pub min_mg: i64,
    /// The largest.
    pub max_mg: i64,
}

/// One site's fresh readings, as the site row adds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteTotals {
    /// The site.
    pub site_id: i64,
    /// How many readings.
    pub readings: i64,
    /// Their sum.
    pub sum_mg: i64,
    /// The earliest.
    pub first_at: DateTime<Utc>,
    /// The latest.
    pub last_at: DateTime<Utc>,
}

/// What the fresh readings add to the rollups and to the sites.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FreshTotals {
    /// Ascending by (site, hour).
    pub hours: Vec<HourTotals>,
    /// Ascending by site.
    pub sites: Vec<SiteTotals>,
}

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Sums `fresh` per (site, hour) and per site. The sums cannot overflow: a batch holds at most
/// 50,000 readings of at most 10^12 mg.
pub fn totals(fresh: &[SiteReading<'_>]) -> FreshTotals {
    let mut hours: BTreeMap<(i64, i64), HourTotals> = BTreeMap::new();
    let mut sites: BTreeMap<i64, SiteTotals> = BTreeMap::new();
    for &(site, reading) in fresh {
        let (site_id, at, mg) = (site.get(), reading.measured_at, reading.value.mg());
        let micros = at.timestamp_micros();
        let hour_micros = micros - micros.rem_euclid(MICROS_PER_HOUR);
        hours
            .entry((site_id, hour_micros))
            .and_modify(|h| {
                h.sum_mg += mg;
                h.readings += 1;
                h.min_mg = h.min_mg.min(mg);
                h.max_mg = h.max_mg.max(mg);
            })
            .or_insert(HourTotals {
                site_id,
                hour: DateTime::from_timestamp_micros(hour_micros).expect("an hour of a valid time"),
                sum_mg: mg,
                readings: 1,
                min_mg: mg,
                max_mg: mg,
            });
        sites
            .entry(site_id)
            .and_modify(|s| {
                s.readings += 1;
                s.sum_mg += mg;
                s.first_at = s.first_at.min(at);
                s.last_at = s.last_at.max(at);
            })
            .or_insert(SiteTotals {
                site_id,
                readings: 1,
                sum_mg: mg,
                first_at: at,
                last_at: at,
            });
    }
    FreshTotals {
        hours: hours.into_values().collect(),
        sites: sites.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::Milligrams;

    fn reading(source: &str, at: &str, mg: i64) -> Reading {
        Reading {
            source_id: source.into(),
            measured_at: at.parse().unwrap(),
            value: Milligrams::from_mg(mg),
        }
    }

    fn site(id: i64) -> SiteId {
        SiteId::new(id).unwrap()
    }

    #[test]
    fn readings_after_the_newest_stored_for_their_source_are_fresh() {
        let groups = [SiteReadings {
            site_id: site(1),
            readings: vec![
                reading("a", "2026-11-01T10:00:00Z", 1),
                reading("a", "2026-11-01T11:00:00Z", 2),
                reading("a", "2026-11-01T12:00:00Z", 3),
                reading("b", "2026-11-01T10:00:00Z", 4),
            ],
            submitted: 4,
        }];
        let newest = NewestStored::from([(
            (site(1), "a".to_string()),
            "2026-11-01T11:00:00Z".parse().unwrap(),
        )]);

        let parts: Vec<&SiteReadings> = groups.iter().collect();
        let split = split(&parts, Stored::Newest(&newest));

        let values = |rows: &[SiteReading<'_>]| rows.iter().map(|(_, r)| r.value.mg()).collect::<Vec<_>>();
        assert_eq!(values(&split.late), [1, 2]);
        assert_eq!(values(&split.fresh), [3, 4]);
        let spans: Vec<_> = source_spans(&parts)
            .iter()
            .map(|s| (s.source_id, s.earliest.to_rfc3339(), s.newest.to_rfc3339()))
            .collect();
        assert_eq!(
            spans,
            [
                (
                    "a",
                    "2026-11-01T10:00:00+00:00".into(),
                    "2026-11-01T12:00:00+00:00".into()
                ),
                (
                    "b",
                    "2026-11-01T10:00:00+00:00".into(),
                    "2026-11-01T10:00:00+00:00".into()
                )
            ]
        );
    }

    #[test]
    fn a_sites_later_parts_are_split_by_what_the_parts_before_them_sent() {
        let first = SiteReadings {
            site_id: site(1),
            readings: vec![
                reading("a", "2026-11-01T10:00:00Z", 1),
                reading("a", "2026-11-01T12:00:00Z", 2),
            ],
            submitted: 2,
        };
        // The same 12:00 again (left out), 11:00 behind the first part (late), 13:00 (fresh).
        let second = SiteReadings {
            site_id: site(1),
            readings: vec![
                reading("a", "2026-11-01T11:00:00Z", 3),
                reading("a", "2026-11-01T12:00:00Z", 2),
                reading("a", "2026-11-01T13:00:00Z", 4),
            ],
            submitted: 3,
        };
        // Another site's part: what site 1 sent does not matter to it.
        let other = SiteReadings {
            site_id: site(2),
            readings: vec![reading("a", "2026-11-01T11:00:00Z", 5)],
            submitted: 1,
        };
        // 11:00 again: late behind both parts before, but stored by neither (the second stages it).
        let third = SiteReadings {
            site_id: site(1),
            readings: vec![reading("a", "2026-11-01T11:00:00Z", 3)],
            submitted: 1,
        };
        let newest = NewestStored::from([(
            (site(1), "a".to_string()),
            "2026-11-01T09:00:00Z".parse().unwrap(),
        )]);

        let parts = [&first, &second, &third, &other];
        let split = split(&parts, Stored::Newest(&newest));

        let values = |rows: &[SiteReading<'_>]| rows.iter().map(|(_, r)| r.value.mg()).collect::<Vec<_>>();
        assert_eq!(values(&split.fresh), [1, 2, 4, 5]);
        assert_eq!(values(&split.late), [3]);
        assert_eq!(split.late_parts, [1]);
        let by_part: Vec<(u64, i64)> = split
            .fresh_by_part
            .iter()
            .map(|t| (t.readings, t.sum_mg))
            .collect();
        assert_eq!(by_part, [(2, 3), (1, 4), (0, 0), (1, 5)]);

        // Conflict-checked: every reading is late, and still none twice.
        let checked = super::split(&parts, Stored::Anything);
        assert_eq!(values(&checked.late), [1, 2, 3, 4, 5]);
        assert_eq!(checked.late_parts, [0, 0, 1, 1, 3]);
        assert!(checked.fresh.is_empty());
    }

    #[test]
    fn heads_take_each_sources_newest_over_all_parts() {
        let first = SiteReadings {
            site_id: site(1),
            readings: vec![
                reading("a", "2026-11-01T12:00:00Z", 1),
                reading("b", "2026-11-01T10:00:00Z", 1),
            ],
            submitted: 2,
        };
        let second = SiteReadings {
            site_id: site(1),
            readings: vec![reading("a", "2026-11-01T11:00:00Z", 1)],
            submitted: 1,
        };
        let spans = source_spans(&[&first, &second]);
        let heads: Vec<(i64, &str, String)> = heads(&spans)
            .into_iter()
            .map(|(site, source, at)| (site.get(), source, at.to_rfc3339()))
            .collect();
        assert_eq!(
            heads,
            [
                (1, "a", "2026-11-01T12:00:00+00:00".to_string()),
                (1, "b", "2026-11-01T10:00:00+00:00".to_string())
            ]
        );
    }

    #[test]
    fn totals_group_by_utc_hour_and_by_site() {
        let readings = [
            reading("a", "2026-11-01T10:59:59.999999Z", 5),
            reading("b", "2026-11-01T10:00:00Z", 7),
            reading("a", "2026-11-01T11:00:00Z", 2),
            reading("a", "1969-12-31T23:30:00Z", 1),
        ];
        let fresh: Vec<SiteReading<'_>> = vec![
            (site(2), &readings[0]),
            (site(2), &readings[1]),
            (site(2), &readings[2]),
            (site(1), &readings[3]),
        ];

        let totals = totals(&fresh);

        let hours: Vec<(i64, String, i64, i64, i64, i64)> = totals
            .hours
            .iter()
            .map(|h| {
                (
                    h.site_id,
                    h.hour.to_rfc3339(),
                    h.sum_mg,
                    h.readings,
                    h.min_mg,
                    h.max_mg,
                )
            })
            .collect();
        assert_eq!(
            hours,
            [
                (1, "1969-12-31T23:00:00+00:00".into(), 1, 1, 1, 1),
                (2, "2026-11-01T10:00:00+00:00".into(), 12, 2, 5, 7),
                (2, "2026-11-01T11:00:00+00:00".into(), 2, 1, 2, 2),
            ]
        );
        assert_eq!(totals.sites[1].readings, 3);
        assert_eq!(totals.sites[1].sum_mg, 14);
        assert_eq!(totals.sites[1].first_at, readings[1].measured_at);
        assert_eq!(totals.sites[1].last_at, readings[2].measured_at);
    }
}
