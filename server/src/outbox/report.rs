//! Human-readable renderings of the outbox status, for `plume outbox status`.

use std::fmt::Write;

use super::admin::{DeadEvent, OutboxStatus};

/// The status as a summary, a table of sites with a backlog and a table of dead events.
pub fn status_table(status: &OutboxStatus, dead: &[DeadEvent]) -> String {
    let mut out = String::new();
    let oldest = status
        .oldest_pending_age_seconds
        .map_or("-".to_string(), |age| format!("{age:.1} s"));
    let _ = writeln!(out, "pending:             {}", status.pending);
    let _ = writeln!(out, "in flight:           {}", status.in_flight);
    let _ = writeln!(out, "dead-lettered:       {}", status.dead);
    let _ = writeln!(out, "oldest pending age:  {oldest}");
    if !status.streams.is_empty() {
        let _ = writeln!(
            out,
            "\n{:>10} {:>9} {:>9} {:>8}  {:<20}  last error",
            "site", "pending", "in flight", "attempts", "retry at"
        );
        for stream in &status.streams {
            let retry_at = stream
                .retry_at
                .map_or("-".to_string(), |at| at.format("%Y-%m-%d %H:%M:%S").to_string());
            let _ = writeln!(
                out,
                "{:>10} {:>9} {:>9} {:>8}  {:<20}  {}",
                stream.site_id,
                stream.pending,
                stream.in_flight,
                stream.attempts,
                retry_at,
                stream.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    if !dead.is_empty() {
        let _ = writeln!(
            out,
            "\ndead events (oldest first{}):",
            if status.dead as usize > dead.len() {
                ", first 50"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "{:<36} {:>10} {:<22} {:>8}  {:<19}  last error",
            "event id", "site", "type", "attempts", "dead at"
        );
        for event in dead {
            let _ = writeln!(
                out,
                "{:<36} {:>10} {:<22} {:>8}  {:<19}  {}",
                event.event_id,
                event.site_id,
                event.event_type,
                event.attempts,
                event.dead_at.format("%Y-%m-%d %H:%M:%S"),
                event.last_error.as_deref().unwrap_or("-")
            );
        }
        let _ = writeln!(
            out,
            "\nre-queue with: plume outbox retry-dead --event <id>  (or --all)"
        );
    }
    out
}
