//! Realistic synthetic methane data, the same for the same seed on every machine.
//!
//! Every site has a few sources (sensors), each reading on a regular cadence with its own phase.
//! A reading is the source's base rate, shaped by a daily cycle (higher in the afternoon, UTC),
//! noise of ±10%, and now and then a leak: a run of readings several times the base rate. Limits
//! are set from each site's own total, so about one site in twenty (and always at least one) ends
//! up over its limit.
//!
//! Randomness comes from SplitMix64 streams keyed by (seed, site, source), so a site's readings do
//! not depend on which thread made them, in what order, or on the library versions in use. (The
//! daily cycle uses `f64::sin` from the platform's maths library; across platforms a value could in
//! rare cases round to a milligram more or less.)

use std::collections::HashMap;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use partitioning::copy::BinaryCopy;

/// Milligrams per kilogram.
const MG_PER_KG: i64 = 1_000_000;
/// Microseconds per hour.
const HOUR_MICROS: i64 = 3_600_000_000;
/// Microseconds per second.
const SECOND_MICROS: i64 = 1_000_000;
/// The most sources one site may have.
pub const MAX_SOURCES: u32 = 1_000;
/// The most readings one site may have: a site is generated whole in memory (about 76 bytes a
/// reading, a few sites at a time), so this bounds the load's memory.
pub const MAX_READINGS_PER_SITE: u64 = 2_000_000;
/// The chance that a reading outside a leak starts one.
const LEAK_CHANCE: f64 = 1.0 / 1_500.0;

/// What to generate: `sites` sites of `readings_per_site` readings from `sources` sources each,
/// between `from` (inclusive) and `to` (exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// How many sites.
    pub sites: u32,
    /// Readings per site, spread evenly over its sources.
    pub readings_per_site: u64,
    /// Sources per site, 1 to [`MAX_SOURCES`].
    pub sources: u32,
    /// The earliest reading is at or after this.
    pub from: DateTime<Utc>,
    /// Every reading is before this.
    pub to: DateTime<Utc>,
    /// The seed: the same seed and plan give the same data.
    pub seed: u64,
}

impl Plan {
    /// Checks the plan can be generated: at least one reading, a non-empty range, and readings of
    /// one source at least a second apart.
    pub fn check(&self) -> Result<(), String> {
        if self.sites == 0 {
            return Err("--sites must be at least 1".into());
        }
        if self.readings_per_site == 0 || self.readings_per_site > MAX_READINGS_PER_SITE {
            return Err(format!(
                "--readings-per-site must be from 1 to {MAX_READINGS_PER_SITE}"
            ));
        }
        if self.sources == 0 || self.sources > MAX_SOURCES {
            return Err(format!("--sources must be from 1 to {MAX_SOURCES}"));
        }
        if self.from >= self.to {
            return Err("--from must be before --to".into());
        }
        let per_source = self.readings_per_site.div_ceil(u64::from(self.sources));
        let span_seconds = (self.to - self.from).num_seconds().max(0) as u64;
        if per_source > span_seconds {
            return Err(format!(
                "{per_source} readings per source do not fit between --from and --to at one a second: \
                 widen the range, add sources or lower --readings-per-site"
            ));
        }
        Ok(())
    }

    /// The plan but its seed, as recorded with every site it loads: a rerun of the same seed must
    /// have the same shape.
    pub fn shape(&self) -> String {
        format!(
            "{} sites × {} readings × {} sources, {} to {}",
            self.sites,
            self.readings_per_site,
            self.sources,
            self.from.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            self.to.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
    }

    /// Every reading, in total.
    pub fn total_readings(&self) -> u64 {
        u64::from(self.sites) * self.readings_per_site
    }

    /// The name of site `index`: unique per seed, so a rerun can find what it already made.
    pub fn site_name(&self, index: u32) -> String {
        format!("synthetic-{}-{index:05}", self.seed)
    }

    /// What every site name of this seed starts with.
    pub fn name_prefix(&self) -> String {
        format!("synthetic-{}-", self.seed)
    }

    /// The source ids every site uses.
    pub fn source_ids(&self) -> Vec<String> {
        (1..=self.sources).map(|n| format!("sensor-{n:03}")).collect()
    }

    /// The first day of each month the range touches, in order.
    pub fn months(&self) -> Vec<DateTime<Utc>> {
        let last = self.to - chrono::Duration::microseconds(1);
        let mut month = partitioning::month_start(self.from);
        let mut months = Vec::new();
        while month <= last {
            months.push(month);
            month = partitioning::next_month(month);
        }
        months
    }
}

/// One generated reading; its source is an index into [`Plan::source_ids`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Index of its source.
    pub source: u16,
    /// Microseconds since the Unix epoch.
    pub at_micros: i64,
    /// Whole milligrams.
    pub value_mg: i64,
}

/// One site's exact hourly rollup, as `hourly_rollups` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRollup {
    /// The UTC hour, in microseconds since the Unix epoch.
    pub hour_micros: i64,
    /// Sum of the hour's readings, mg.
    pub sum_mg: i64,
    /// How many readings.
    pub readings: i64,
    /// Smallest reading, mg.
    pub min_mg: i64,
    /// Largest reading, mg.
    pub max_mg: i64,
}

/// One site with everything the database keeps about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Its index in the plan, 0-based.
    pub index: u32,
    /// Its name ([`Plan::site_name`]).
    pub name: String,
    /// Its limit, mg: from its own total, so that a few sites are over.
    pub emission_limit_mg: i64,
    /// Its readings, ordered by month, then source, then time: the order that fills each monthly
    /// partition's identity index from the right.
    pub readings: Vec<Reading>,
    /// Its hourly rollups, in hour order.
    pub rollups: Vec<HourRollup>,
    /// The newest reading time of each source that has readings: (source index, microseconds).
    pub heads: Vec<(u16, i64)>,
    /// Sum of its readings, mg.
    pub total_mg: i64,
    /// Its earliest and latest reading times, microseconds.
    pub first_last_micros: (i64, i64),
}

impl Site {
    /// Whether it ends over its limit.
    pub fn is_over_limit(&self) -> bool {
        self.total_mg > self.emission_limit_mg
    }

    /// Its readings as a binary `COPY` stream for `measurements (site_id, source_id,
    /// measured_at, value_mg)`.
    pub fn readings_copy(&self, site_id: i64, source_ids: &[String]) -> Vec<u8> {
        let mut copy = BinaryCopy::with_capacity(self.readings.len() * 48);
        for reading in &self.readings {
            copy.row(4);
            copy.bigint(site_id);
            copy.text(&source_ids[usize::from(reading.source)]);
            copy.timestamptz(reading.at_micros);
            copy.bigint(reading.value_mg);
        }
        copy.finish()
    }

    /// Its rollups as a binary `COPY` stream for `hourly_rollups (site_id, hour, sum_mg, readings,
    /// min_mg, max_mg)`.
    pub fn rollups_copy(&self, site_id: i64) -> Vec<u8> {
        let mut copy = BinaryCopy::with_capacity(self.rollups.len() * 74);
        for rollup in &self.rollups {
            copy.row(6);
            copy.bigint(site_id);
            copy.timestamptz(rollup.hour_micros);
            copy.bigint(rollup.sum_mg);
            copy.bigint(rollup.readings);
            copy.bigint(rollup.min_mg);
            copy.bigint(rollup.max_mg);
        }
        copy.finish()
    }
}

/// Generates site `index` of `plan`.
pub fn generate(plan: &Plan, index: u32) -> Site {
    let mut readings = Vec::with_capacity(plan.readings_per_site as usize);
    let mut heads = Vec::new();
    let sources = u64::from(plan.sources);
    for source in 0..plan.sources {
        let count = plan.readings_per_site / sources
            + u64::from(u64::from(source) < plan.readings_per_site % sources);
        if count == 0 {
            continue;
        }
        let mut random = SplitMix64::new(plan.seed, &[u64::from(index), u64::from(source)]);
        let before = readings.len();
        source_readings(plan, source as u16, count, &mut random, &mut readings);
        heads.push((source as u16, readings[readings.len() - 1].at_micros));
        debug_assert!(readings.len() - before == count as usize);
    }
    // A stable sort keeps source-then-time order within each month.
    readings.sort_by_key(|reading| month_number(reading.at_micros));
    let rollups = hourly_rollups(&readings);
    let total_mg = readings.iter().map(|r| r.value_mg).sum();
    let first = readings.iter().map(|r| r.at_micros).min().unwrap_or(0);
    let last = readings.iter().map(|r| r.at_micros).max().unwrap_or(0);
    let mut limits = SplitMix64::new(plan.seed, &[u64::from(index), u64::MAX]);
    let over = index == (plan.seed % u64::from(plan.sites)) as u32 || limits.next_u64() % 20 == 0;
    Site {
        index,
        name: plan.site_name(index),
        emission_limit_mg: limit_for(total_mg, over, limits.next_f64()),
        readings,
        rollups,
        heads,
        total_mg,
        first_last_micros: (first, last),
    }
}

/// Appends `count` readings of one source, on its cadence, in time order.
fn source_readings(plan: &Plan, source: u16, count: u64, random: &mut SplitMix64, out: &mut Vec<Reading>) {
    let span = (plan.to - plan.from).num_microseconds().unwrap_or(i64::MAX);
    // Whole seconds apart, so that every reading is a distinct, plausible sensor timestamp.
    let step = (span / count as i64) / SECOND_MICROS * SECOND_MICROS;
    let phase = (random.next_u64() % (step / SECOND_MICROS) as u64) as i64 * SECOND_MICROS;
    let start = plan.from.timestamp_micros() + phase;
    // A base rate between 50 g and 500 g per reading.
    let base_mg = 50_000.0 + random.next_f64() * 450_000.0;
    let mut leak_left = 0_u32;
    let mut leak_factor = 1.0;
    for n in 0..count as i64 {
        let at_micros = start + n * step;
        if leak_left == 0 && random.next_f64() < LEAK_CHANCE {
            leak_left = 6 + (random.next_u64() % 43) as u32;
            leak_factor = 4.0 + random.next_f64() * 21.0;
        }
        let leak = if leak_left > 0 {
            leak_left -= 1;
            leak_factor
        } else {
            1.0
        };
        let noise = 0.9 + random.next_f64() * 0.2;
        let value_mg = (base_mg * daily_cycle(at_micros) * noise * leak).round() as i64;
        out.push(Reading {
            source,
            at_micros,
            value_mg,
        });
    }
}

/// 1 ± 0.35 over the UTC day, highest at 15:00.
fn daily_cycle(at_micros: i64) -> f64 {
    let day_fraction = at_micros.rem_euclid(24 * HOUR_MICROS) as f64 / (24 * HOUR_MICROS) as f64;
    1.0 + 0.35 * (std::f64::consts::TAU * (day_fraction - 0.375)).sin()
}

/// Months since year 0 of a time: the sort key that groups readings by partition.
fn month_number(at_micros: i64) -> i32 {
    let at = Utc.timestamp_micros(at_micros).single().unwrap_or_default();
    at.year() * 12 + at.month0() as i32
}

/// Exact rollups of `readings`, by UTC hour, in hour order.
fn hourly_rollups(readings: &[Reading]) -> Vec<HourRollup> {
    let mut hours: HashMap<i64, HourRollup> = HashMap::new();
    for reading in readings {
        let hour_micros = reading.at_micros.div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let rollup = hours.entry(hour_micros).or_insert(HourRollup {
            hour_micros,
            sum_mg: 0,
            readings: 0,
            min_mg: i64::MAX,
            max_mg: i64::MIN,
        });
        rollup.sum_mg += reading.value_mg;
        rollup.readings += 1;
        rollup.min_mg = rollup.min_mg.min(reading.value_mg);
        rollup.max_mg = rollup.max_mg.max(reading.value_mg);
    }
    let mut rollups: Vec<_> = hours.into_values().collect();
    rollups.sort_unstable_by_key(|rollup| rollup.hour_micros);
    rollups
}

/// A limit for a site whose readings total `total_mg`: 70–95% of it for a site meant to be over,
/// 125–300% otherwise (`fraction` in [0, 1) picks where), in whole kilograms where that keeps the
/// site on the intended side, and always above zero.
fn limit_for(total_mg: i64, over: bool, fraction: f64) -> i64 {
    if total_mg <= 1 {
        return MG_PER_KG;
    }
    let ratio = if over {
        0.70 + fraction * 0.25
    } else {
        1.25 + fraction * 1.75
    };
    let exact = ((total_mg as f64) * ratio) as i64;
    let whole_kg = if over {
        exact / MG_PER_KG * MG_PER_KG
    } else {
        (exact + MG_PER_KG - 1) / MG_PER_KG * MG_PER_KG
    };
    let limit = if (whole_kg < total_mg) == over && whole_kg > 0 {
        whole_kg
    } else {
        exact
    };
    if over {
        limit.clamp(1, total_mg - 1)
    } else {
        limit.max(total_mg)
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed generator whose output is fixed by its
/// definition, unlike library RNGs that may change between versions.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A stream for `seed` and `keys`, independent of every other key combination.
    fn new(seed: u64, keys: &[u64]) -> Self {
        let mut state = mix(seed ^ 0x5EED_5EED_5EED_5EED);
        for key in keys {
            state = mix(state ^ mix(key.wrapping_add(0x9E37_79B9_7F4A_7C15)));
        }
        Self { state }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
#[path = "synthetic_tests.rs"]
mod tests;
