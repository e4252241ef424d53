use std::collections::{BTreeMap, HashSet};

use super::*;

fn plan(seed: u64) -> Plan {
    Plan {
        sites: 40,
        readings_per_site: 2_000,
        sources: 3,
        from: "2026-01-15T00:00:00Z".parse().unwrap(),
        to: "2026-04-01T00:00:00Z".parse().unwrap(),
        seed,
    }
}

#[test]
fn the_same_seed_gives_the_same_sites_and_another_seed_others() {
    let plan = plan(7);
    assert_eq!(generate(&plan, 3), generate(&plan, 3));
    assert_ne!(generate(&plan, 3).readings, generate(&plan, 4).readings);
    assert_ne!(
        generate(&plan, 3).readings,
        generate(&crate::synthetic::tests::plan(8), 3).readings
    );
}

#[test]
fn readings_are_spread_over_the_sources_inside_the_range_and_unique() {
    let plan = Plan {
        readings_per_site: 2_001,
        ..plan(1)
    };
    let site = generate(&plan, 0);
    assert_eq!(site.readings.len(), 2_001);
    let mut per_source = BTreeMap::new();
    for reading in &site.readings {
        *per_source.entry(reading.source).or_insert(0) += 1;
        assert!(reading.at_micros >= plan.from.timestamp_micros());
        assert!(reading.at_micros < plan.to.timestamp_micros());
        assert!(reading.value_mg > 0);
    }
    assert_eq!(per_source.into_values().collect::<Vec<_>>(), vec![667, 667, 667]);
    let identities: HashSet<_> = site.readings.iter().map(|r| (r.source, r.at_micros)).collect();
    assert_eq!(identities.len(), site.readings.len());
}

#[test]
fn readings_are_ordered_by_month_then_source_then_time() {
    let site = generate(&plan(1), 5);
    let keys: Vec<_> = site
        .readings
        .iter()
        .map(|r| (month_number(r.at_micros), r.source, r.at_micros))
        .collect();
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
}

#[test]
fn totals_rollups_and_heads_agree_with_the_readings() {
    let site = generate(&plan(2), 9);
    let total: i64 = site.readings.iter().map(|r| r.value_mg).sum();
    assert_eq!(site.total_mg, total);
    assert_eq!(site.rollups.iter().map(|r| r.sum_mg).sum::<i64>(), total);
    assert_eq!(
        site.rollups.iter().map(|r| r.readings).sum::<i64>(),
        site.readings.len() as i64
    );
    for rollup in &site.rollups {
        let hour: Vec<_> = site
            .readings
            .iter()
            .filter(|r| r.at_micros.div_euclid(HOUR_MICROS) * HOUR_MICROS == rollup.hour_micros)
            .map(|r| r.value_mg)
            .collect();
        assert_eq!(rollup.min_mg, *hour.iter().min().unwrap());
        assert_eq!(rollup.max_mg, *hour.iter().max().unwrap());
    }
    for (source, newest) in &site.heads {
        let max = site
            .readings
            .iter()
            .filter(|r| r.source == *source)
            .map(|r| r.at_micros)
            .max();
        assert_eq!(max, Some(*newest));
    }
    let (first, last) = site.first_last_micros;
    assert_eq!(first, site.readings.iter().map(|r| r.at_micros).min().unwrap());
    assert_eq!(last, site.readings.iter().map(|r| r.at_micros).max().unwrap());
}

#[test]
fn a_few_sites_end_over_their_limit_and_always_at_least_one() {
    let plan = plan(3);
    let over = (0..plan.sites)
        .filter(|&i| generate(&plan, i).is_over_limit())
        .count();
    assert!((1..=8).contains(&over), "{over} of 40 sites over their limit");
    let one_site = Plan { sites: 1, ..plan };
    assert!(generate(&one_site, 0).is_over_limit());
}

#[test]
fn limits_land_on_the_intended_side_even_for_tiny_totals() {
    for total in [2, 3, 999_999, 1_000_000, 1_000_001, 4_000_000, 123_456_789_012] {
        for fraction in [0.0, 0.5, 0.999_999] {
            let over = limit_for(total, true, fraction);
            assert!(over > 0 && over < total, "over: {total} {fraction} → {over}");
            let within = limit_for(total, false, fraction);
            assert!(within >= total, "within: {total} {fraction} → {within}");
        }
    }
    assert_eq!(limit_for(0, true, 0.5), MG_PER_KG);
}

#[test]
fn leaks_and_the_daily_cycle_shape_the_values() {
    let site = generate(
        &Plan {
            readings_per_site: 30_000,
            ..plan(4)
        },
        0,
    );
    let source_zero: Vec<_> = site.readings.iter().filter(|r| r.source == 0).collect();
    let median = {
        let mut values: Vec<_> = source_zero.iter().map(|r| r.value_mg).collect();
        values.sort_unstable();
        values[values.len() / 2]
    };
    assert!(
        source_zero.iter().any(|r| r.value_mg > median * 4),
        "no leak spike"
    );
    assert!(daily_cycle(15 * HOUR_MICROS) > 1.34 && daily_cycle(3 * HOUR_MICROS) < 0.66);
}

#[test]
fn plans_that_cannot_be_generated_are_refused_with_a_reason() {
    let good = plan(1);
    assert_eq!(good.check(), Ok(()));
    assert!(Plan {
        sites: 0,
        ..good.clone()
    }
    .check()
    .is_err());
    assert!(Plan {
        sources: 0,
        ..good.clone()
    }
    .check()
    .is_err());
    assert!(Plan {
        to: good.from,
        ..good.clone()
    }
    .check()
    .is_err());
    let crowded = Plan {
        readings_per_site: 100_000,
        sources: 1,
        to: good.from + chrono::Duration::hours(1),
        ..good.clone()
    };
    assert!(crowded.check().unwrap_err().contains("one a second"));
}

#[test]
fn months_cover_the_range() {
    let months = plan(1).months();
    let expected: Vec<DateTime<Utc>> = ["2026-01-01", "2026-02-01", "2026-03-01"]
        .iter()
        .map(|d| format!("{d}T00:00:00Z").parse().unwrap())
        .collect();
    assert_eq!(months, expected);
}
