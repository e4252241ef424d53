//! The read side for data teams (v2): series from the hourly rollups, raw readings page by page,
//! each source's last reading, and streamed exports.
//!
//! Every query filters on the site id (which leads every index) and bounds `measured_at` or
//! `hour` by the requested range, so PostgreSQL reads only the partitions and index ranges the range
//! needs. [`params`] turns query strings into the checked types here.

pub mod export;
pub mod params;
pub mod readings;
pub mod series;
pub mod sources;

use chrono::{DateTime, Datelike, Duration, DurationRound, Timelike, Utc};

/// The most buckets one series request may ask for.
pub const MAX_BUCKETS: i64 = 10_000;

/// A half-open time range `[from, to)`, `from` before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
}

impl TimeRange {
    /// Every time a reading can have, for a range not given (both ends fit PostgreSQL's
    /// `timestamptz`).
    pub fn all() -> Self {
        Self {
            from: DateTime::from_timestamp(-2_208_988_800, 0).expect("1900-01-01 is a time"),
            to: DateTime::from_timestamp(253_402_214_400, 0).expect("9999-12-31 is a time"),
        }
    }
}

/// The width of a series bucket. Buckets are aligned on UTC boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One hour: a rollup row as stored.
    Hour,
    /// One UTC day: 24 rollup rows added up.
    Day,
    /// One UTC calendar month.
    Month,
}

impl Bucket {
    /// Parses `hour`, `day` or `month`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    /// The name `date_trunc` takes, and the API's.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// Whether `at` is the start of one of these buckets.
    pub fn is_boundary(self, at: DateTime<Utc>) -> bool {
        let whole_hour = at.duration_trunc(Duration::hours(1)).is_ok_and(|hour| hour == at);
        match self {
            Self::Hour => whole_hour,
            Self::Day => whole_hour && at.hour() == 0,
            Self::Month => whole_hour && at.hour() == 0 && at.day() == 1,
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn after(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::Hour => start + Duration::hours(1),
            Self::Day => start + Duration::days(1),
            Self::Month => partitioning::next_month(start),
        }
    }

    /// The starts of the buckets of `range` (both ends on boundaries), in order.
    pub fn starts(self, range: TimeRange) -> Vec<DateTime<Utc>> {
        std::iter::successors(Some(range.from), |start| Some(self.after(*start)))
            .take_while(|start| *start < range.to)
            .collect()
    }

    /// How many buckets `range` spans (both ends on boundaries).
    pub fn count(self, range: TimeRange) -> i64 {
        match self {
            Self::Hour => (range.to - range.from).num_hours(),
            Self::Day => (range.to - range.from).num_days(),
            Self::Month => {
                let months = |at: DateTime<Utc>| i64::from(at.year()) * 12 + i64::from(at.month0());
                months(range.to) - months(range.from)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn boundaries_are_utc_hours_days_and_months() {
        assert!(Bucket::Hour.is_boundary(at("2026-03-05T07:00:00Z")));
        assert!(!Bucket::Hour.is_boundary(at("2026-03-05T07:00:00.000001Z")));
        assert!(!Bucket::Day.is_boundary(at("2026-03-05T07:00:00Z")));
        assert!(Bucket::Day.is_boundary(at("2026-03-05T00:00:00Z")));
        assert!(!Bucket::Month.is_boundary(at("2026-03-05T00:00:00Z")));
        assert!(Bucket::Month.is_boundary(at("2026-03-01T00:00:00Z")));
    }

    #[test]
    fn counts_buckets_across_month_lengths() {
        let range = TimeRange {
            from: at("2025-12-01T00:00:00Z"),
            to: at("2026-03-01T00:00:00Z"),
        };
        assert_eq!(Bucket::Month.count(range), 3);
        assert_eq!(Bucket::Day.count(range), 31 + 31 + 28);
        assert_eq!(Bucket::Hour.count(range), 90 * 24);
        for bucket in [Bucket::Hour, Bucket::Day, Bucket::Month] {
            let starts = bucket.starts(range);
            assert_eq!(starts.len() as i64, bucket.count(range));
            assert_eq!(bucket.after(*starts.last().unwrap()), range.to);
        }
        assert_eq!(Bucket::Month.starts(range)[1], at("2026-01-01T00:00:00Z"));
    }
}
