//! PostgreSQL snapshots (`pg_current_snapshot()`), and the opaque cursors made of them.
//!
//! A snapshot says which transactions had committed when it was taken: every one below `xmin`,
//! and every one below `xmax` except those listed as in progress. That is commit order, which a
//! sequence number is not: a transaction that drew its number first may commit last.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A snapshot as `pg_current_snapshot()::text` writes it: `xmin:xmax:xip,xip,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    xmin: u64,
    xmax: u64,
    /// In progress when the snapshot was taken; sorted, each in `xmin..xmax`.
    in_progress: Vec<u64>,
}

/// Cursors name their format, so a later format can tell an old cursor apart.
const CURSOR_TAG: &str = "s1:";

impl Snapshot {
    /// A snapshot that saw no transaction: everything has changed since it.
    pub fn origin() -> Self {
        Self {
            xmin: 0,
            xmax: 0,
            in_progress: Vec::new(),
        }
    }

    /// Parses PostgreSQL's text form; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let xmin: u64 = parts.next()?.parse().ok()?;
        let xmax: u64 = parts.next()?.parse().ok()?;
        let list = parts.next()?;
        if parts.next().is_some() || xmin > xmax {
            return None;
        }
        let mut in_progress = Vec::new();
        if !list.is_empty() {
            for xid in list.split(',') {
                in_progress.push(xid.parse().ok()?);
            }
        }
        in_progress.sort_unstable();
        let in_range = in_progress.iter().all(|xid| (xmin..xmax).contains(xid));
        in_range.then_some(Self {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// The oldest transaction still running when the snapshot was taken: every transaction that
    /// commits after it has an id at or above this.
    pub fn xmin(&self) -> u64 {
        self.xmin
    }

    /// Whether the transaction `xid` (one that has committed) had committed when this was taken.
    pub fn saw(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && self.in_progress.binary_search(&xid).is_err())
    }

    /// Whether this saw every transaction `other` saw (it was taken at the same time or later).
    pub fn saw_all_of(&self, other: &Snapshot) -> bool {
        self.xmax >= other.xmax && self.in_progress.iter().all(|xid| !other.saw(*xid))
    }

    /// Whether this names transactions that had not started when `now` was taken: a cursor from
    /// another database, or from one restored to an earlier state, which must not be trusted.
    pub fn is_ahead_of(&self, now: &Snapshot) -> bool {
        self.xmax > now.xmax
    }

    /// The opaque cursor clients hold.
    pub fn to_cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_TAG}{self}"))
    }

    /// Reads back a cursor made by [`Self::to_cursor`].
    pub fn from_cursor(cursor: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        Self::parse(text.strip_prefix(CURSOR_TAG)?)
    }
}

impl fmt::Display for Snapshot {
    /// PostgreSQL's text form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, xid) in self.in_progress.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{xid}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_postgresql_text_and_round_trips_as_a_cursor() {
        let snapshot = Snapshot::parse("740:745:742,740").unwrap();
        assert_eq!(snapshot.to_string(), "740:745:740,742");
        assert_eq!(Snapshot::from_cursor(&snapshot.to_cursor()), Some(snapshot));
        assert_eq!(Snapshot::parse("10:10:").unwrap().to_string(), "10:10:");
    }

    #[test]
    fn sees_what_had_committed_and_not_what_was_running() {
        let snapshot = Snapshot::parse("740:745:740,742").unwrap();
        assert!(snapshot.saw(1));
        assert!(snapshot.saw(739));
        assert!(!snapshot.saw(740), "running when taken");
        assert!(snapshot.saw(741));
        assert!(!snapshot.saw(742), "running when taken");
        assert!(snapshot.saw(744));
        assert!(!snapshot.saw(745), "started after");
    }

    #[test]
    fn tells_a_later_snapshot_from_an_earlier_one() {
        let earlier = Snapshot::parse("745:747:745").unwrap();
        let later = Snapshot::parse("747:747:").unwrap();
        assert!(later.saw_all_of(&earlier));
        assert!(!earlier.saw_all_of(&later), "745 committed in between");
        assert!(later.saw_all_of(&later));
        let still_running = Snapshot::parse("745:749:745,748").unwrap();
        assert!(still_running.saw_all_of(&earlier));
        assert!(!still_running.saw_all_of(&later));
        assert!(later.saw_all_of(&Snapshot::origin()));
        assert!(!Snapshot::origin().saw_all_of(&later));
        assert!(later.is_ahead_of(&Snapshot::parse("700:700:").unwrap()));
        assert!(!earlier.is_ahead_of(&later));
    }

    #[test]
    fn refuses_what_is_not_a_snapshot_or_a_cursor() {
        for text in ["", "1", "1:2", "3:2:", "1:5:7", "1:5:x", "1:2:3:4", "a:b:"] {
            assert_eq!(Snapshot::parse(text), None, "{text:?}");
        }
        for cursor in ["", "!!", "MTA6MTA6", &URL_SAFE_NO_PAD.encode("s1:1:2:3")] {
            assert_eq!(Snapshot::from_cursor(cursor), None, "{cursor:?}");
        }
    }
}
