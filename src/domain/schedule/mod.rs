//! Schedules (seed 004): a source's cron schedule, parsed and checked here
//! (the planner checks it when a source is created), and fired by
//! [`schedule_loop`] (`scheduler.rs`), which every `serve` and `worker`
//! process runs.

mod scheduler;

pub use scheduler::{Scheduler, schedule_loop};

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::model::SourceSchedule;

/// A source's schedule, parsed.
#[derive(Debug, Clone)]
pub struct ParsedSchedule {
    cron: Cron,
    zone: Tz,
}

impl ParsedSchedule {
    /// Parses the cron expression and time zone; the error says which is wrong.
    pub fn parse(schedule: &SourceSchedule) -> Result<Self, String> {
        let cron = Cron::from_str(&schedule.cron)
            .map_err(|e| format!("schedule.cron `{}` is not valid: {e}", schedule.cron))?;
        let zone = match &schedule.time_zone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                format!("schedule.time_zone `{name}` is not an IANA time zone (e.g. Europe/Paris)")
            })?,
        };
        Ok(ParsedSchedule { cron, zone })
    }

    /// The shortest gap between consecutive slots among the next
    /// `firings` after `from`; `None` when fewer than two slots follow.
    /// Cron gaps are irregular (`0,1 9 * * *` fires twice a minute apart,
    /// once a day), so every gap is looked at, not just the first.
    pub fn shortest_interval(&self, from: DateTime<Utc>, firings: usize) -> Option<Duration> {
        let from = from.with_timezone(&self.zone);
        let slots: Vec<_> = self.cron.iter_after(from).take(firings).collect();
        slots
            .windows(2)
            .filter_map(|pair| (pair[1] - pair[0]).to_std().ok())
            .min()
    }

    /// The latest slot in `(after, until]`, if one fell there.
    pub fn latest_due(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let until = until.with_timezone(&self.zone);
        let slot = self
            .cron
            .find_previous_occurrence(&until, true)
            .ok()?
            .with_timezone(&Utc);
        (slot > after).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, zone: Option<&str>) -> SourceSchedule {
        SourceSchedule {
            cron: cron.into(),
            time_zone: zone.map(Into::into),
            target_collection_name: None,
            branch: None,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_latest_slot_in_the_window_is_due_once() {
        let every_15 = ParsedSchedule::parse(&schedule("*/15 * * * *", None)).unwrap();
        let slot = every_15.latest_due(at("2026-01-01T10:14:59Z"), at("2026-01-01T10:15:00Z"));
        assert_eq!(slot, Some(at("2026-01-01T10:15:00Z")));
        // The next window starts where this one ended: the slot is not due again.
        assert_eq!(
            every_15.latest_due(at("2026-01-01T10:15:00Z"), at("2026-01-01T10:16:00Z")),
            None
        );
        // Several slots in one window: only the latest fires.
        assert_eq!(
            every_15.latest_due(at("2026-01-01T09:00:00Z"), at("2026-01-01T10:20:00Z")),
            Some(at("2026-01-01T10:15:00Z"))
        );
    }

    #[test]
    fn cron_fields_are_read_in_the_schedule_time_zone() {
        // 09:00 in Paris is 08:00 UTC in winter.
        let nine_paris =
            ParsedSchedule::parse(&schedule("0 9 * * *", Some("Europe/Paris"))).unwrap();
        assert_eq!(
            nine_paris.latest_due(at("2026-01-15T00:00:00Z"), at("2026-01-15T12:00:00Z")),
            Some(at("2026-01-15T08:00:00Z"))
        );
    }

    #[test]
    fn bad_cron_or_zone_is_a_clear_error() {
        let error = ParsedSchedule::parse(&schedule("61 * * * *", None)).unwrap_err();
        assert!(error.contains("schedule.cron"), "{error}");
        let error =
            ParsedSchedule::parse(&schedule("* * * * *", Some("Mars/Olympus"))).unwrap_err();
        assert!(error.contains("schedule.time_zone"), "{error}");
    }
}
