//! Cron schedules of segments: parsing (the `croner` crate: standard five-field cron, or six
//! fields with leading seconds; UTC) and the next due time.

use chrono::{DateTime, SubsecRound, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::error::{EngineError, Result};

/// Parses `minute hour day-of-month month day-of-week` (UTC), optionally preceded by seconds.
pub fn parse(text: &str) -> Result<Cron> {
    let fields = text.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(invalid(
            text,
            &format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with leading seconds, found {fields}"
            ),
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(text)
        .map_err(|e| invalid(text, &e.to_string()))
}

fn invalid(text: &str, why: &str) -> EngineError {
    EngineError::InvalidStatement(format!(
        "invalid schedule '{text}': {why}; e.g. '0 6 * * *' runs daily at 06:00 UTC"
    ))
}

/// The first due time strictly after `after`, in whole seconds (cron has no finer unit).
pub fn next_after(cron: &Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.trunc_subsecs(0), false)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_and_finds_the_next_time() {
        let cron = parse("30 6 * * *").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 6, 30, 0).unwrap();
        assert_eq!(
            next_after(&cron, at),
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 6, 30, 0).unwrap())
        );
        let every_five = parse("*/5 * * * *").unwrap();
        assert_eq!(
            next_after(&every_five, at),
            Some(Utc.with_ymd_and_hms(2026, 11, 23, 6, 35, 0).unwrap())
        );
    }

    #[test]
    fn bad_expressions_are_clear_errors() {
        let message = |text: &str| parse(text).unwrap_err().to_string();
        assert!(
            message("every day").contains("expected 5 fields"),
            "{}",
            message("every day")
        );
        assert!(message("61 * * * *").contains("invalid schedule '61 * * * *'"));
        assert!(message("* * * * * * *").contains("found 7"));
        let every_ten_seconds = parse("*/10 * * * * *").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 6, 30, 0).unwrap();
        assert_eq!(
            next_after(&every_ten_seconds, at),
            Some(Utc.with_ymd_and_hms(2026, 11, 23, 6, 30, 10).unwrap())
        );
    }

    #[test]
    fn due_times_are_whole_seconds() {
        let every_second = parse("* * * * * *").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 6, 30, 0).unwrap()
            + chrono::Duration::microseconds(250_123);
        assert_eq!(
            next_after(&every_second, at),
            Some(Utc.with_ymd_and_hms(2026, 11, 23, 6, 30, 1).unwrap())
        );
        let daily = parse("30 6 * * *").unwrap();
        assert_eq!(
            next_after(&daily, at),
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 6, 30, 0).unwrap())
        );
    }
}
