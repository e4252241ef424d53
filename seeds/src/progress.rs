//! Progress of a long load: how far, how fast, and how long still to go.
//!
//! On a terminal the line is redrawn in place every second; otherwise (a log, CI) a full line is
//! written every ten seconds.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Counts what a load has done so far; shared by its workers.
#[derive(Debug)]
pub struct Progress {
    total_sites: u64,
    total_readings: u64,
    sites: AtomicU64,
    readings: AtomicU64,
    started: Instant,
    /// Microseconds from the start to the last site loaded; 0 while loading.
    loaded_after_micros: AtomicU64,
}

impl Progress {
    /// Nothing done yet of `total_sites` sites holding `total_readings` readings.
    pub fn new(total_sites: u64, total_readings: u64) -> Self {
        Self {
            total_sites,
            total_readings,
            sites: AtomicU64::new(0),
            readings: AtomicU64::new(0),
            started: Instant::now(),
            loaded_after_micros: AtomicU64::new(0),
        }
    }

    /// One more site done, with its readings.
    pub fn site_done(&self, readings: u64) {
        self.sites.fetch_add(1, Ordering::Relaxed);
        self.readings.fetch_add(readings, Ordering::Relaxed);
    }

    /// Readings done so far.
    pub fn readings(&self) -> u64 {
        self.readings.load(Ordering::Relaxed)
    }

    /// Time since the start, or until [`Progress::loaded`] was called.
    pub fn elapsed(&self) -> Duration {
        match self.loaded_after_micros.load(Ordering::Relaxed) {
            0 => self.started.elapsed(),
            micros => Duration::from_micros(micros),
        }
    }

    /// Every site is loaded: the clock stops, and the line says what follows.
    pub fn loaded(&self) {
        let micros = self.started.elapsed().as_micros().max(1) as u64;
        self.loaded_after_micros.store(micros, Ordering::Relaxed);
    }

    /// E.g. `12.3M of 100.0M readings (12.3%) · 123 of 1000 sites · 205.1k readings/s · ETA 7m 30s`.
    pub fn line(&self) -> String {
        let readings = self.readings();
        let seconds = self.elapsed().as_secs_f64().max(1e-3);
        let rate = readings as f64 / seconds;
        if self.loaded_after_micros.load(Ordering::Relaxed) != 0 {
            return format!(
                "{} readings of {} sites loaded in {} ({}/s) · refreshing planner statistics (ANALYZE)",
                count(readings as f64),
                self.sites.load(Ordering::Relaxed),
                minutes_seconds(seconds),
                count(rate),
            );
        }
        let percent = if self.total_readings == 0 {
            100.0
        } else {
            readings as f64 * 100.0 / self.total_readings as f64
        };
        let eta = if readings == 0 {
            "ETA –".to_string()
        } else {
            let left = self.total_readings.saturating_sub(readings) as f64 / rate;
            format!("ETA {}", minutes_seconds(left))
        };
        format!(
            "{} of {} readings ({percent:.1}%) · {} of {} sites · {}/s · {eta}",
            count(readings as f64),
            count(self.total_readings as f64),
            self.sites.load(Ordering::Relaxed),
            self.total_sites,
            count(rate),
        )
    }

    /// Writes [`Progress::line`] to stderr until the returned task is aborted.
    pub fn report(self: &Arc<Self>) -> JoinHandle<()> {
        let progress = Arc::clone(self);
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let line = progress.line();
                let mut stderr = std::io::stderr().lock();
                let _ = if terminal {
                    write!(stderr, "\r\x1b[2K{line}")
                } else {
                    writeln!(stderr, "{line}")
                };
                let _ = stderr.flush();
            }
        })
    }

    /// Ends a terminal's redrawn line, so what follows starts on a line of its own.
    pub fn finish_line(&self) {
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
}

/// 950, 12.3k, 45.6M.
fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// 7m 30s.
fn minutes_seconds(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    format!("{}m {:02}s", seconds / 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_how_far_how_fast_and_how_long_to_go() {
        let progress = Progress::new(10, 2_000_000);
        assert!(progress
            .line()
            .starts_with("0 of 2.0M readings (0.0%) · 0 of 10 sites"));
        assert!(progress.line().ends_with("ETA –"));
        progress.site_done(500_000);
        let line = progress.line();
        assert!(
            line.starts_with("500.0k of 2.0M readings (25.0%) · 1 of 10 sites"),
            "{line}"
        );
        assert!(line.contains("ETA "), "{line}");
        progress.loaded();
        let elapsed = progress.elapsed();
        assert_eq!(progress.elapsed(), elapsed, "the clock stops once loaded");
        assert!(
            progress.line().contains("refreshing planner statistics"),
            "{}",
            progress.line()
        );
    }

    #[test]
    fn durations_read_as_minutes_and_seconds() {
        assert_eq!(minutes_seconds(450.4), "7m 30s");
        assert_eq!(minutes_seconds(5.0), "0m 05s");
    }
}
