//! Time as a dependency: everything that asks "what time is it" asks a [`Clock`], so tests
//! can pin month boundaries and expiry without waiting.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Source of the current instant.
pub trait Clock: Send + Sync {
    /// The current instant in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The calendar month containing `now` in `tz`, as the UTC instants of its first moment
/// (00:00 on the 1st) and of the next month's first moment.
pub fn month_bounds(now: DateTime<Utc>, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = now.with_timezone(&tz).date_naive();
    let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).unwrap_or(local);
    let next = first.checked_add_months(Months::new(1)).unwrap_or(first);
    (local_midnight(first, tz), local_midnight(next, tz))
}

/// The month `now` falls in, in `tz`, as `YYYY-MM`.
pub fn month_label(now: DateTime<Utc>, tz: Tz) -> String {
    now.with_timezone(&tz).format("%Y-%m").to_string()
}

/// 00:00 of `date` in `tz`; where a clock change skips midnight, the first instant that exists.
fn local_midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    (0..=3)
        .find_map(|hours| {
            tz.from_local_datetime(&(midnight + TimeDelta::hours(hours)))
                .earliest()
        })
        .map_or_else(|| midnight.and_utc(), |local| local.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn months_begin_at_midnight_on_the_first_in_utc() {
        let (start, end) = month_bounds(utc("2026-11-30T23:59:59Z"), Tz::UTC);
        assert_eq!(start, utc("2026-11-01T00:00:00Z"));
        assert_eq!(end, utc("2026-12-01T00:00:00Z"));
        assert_eq!(
            month_bounds(utc("2026-12-01T00:00:00Z"), Tz::UTC).0,
            utc("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            month_bounds(utc("2026-12-31T12:00:00Z"), Tz::UTC).1,
            utc("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn months_begin_at_local_midnight_in_new_york() {
        let ny = chrono_tz::America::New_York;
        // 03:00 UTC on Dec 1 is still Nov 30 in New York (UTC-5).
        let (start, end) = month_bounds(utc("2026-12-01T03:00:00Z"), ny);
        assert_eq!(
            start,
            utc("2026-11-01T04:00:00Z"),
            "November starts under daylight time"
        );
        assert_eq!(end, utc("2026-12-01T05:00:00Z"));
        assert_eq!(month_label(utc("2026-12-01T03:00:00Z"), ny), "2026-11");
        assert_eq!(month_label(utc("2026-12-01T05:00:00Z"), ny), "2026-12");
    }

    #[test]
    fn a_skipped_midnight_starts_the_month_at_the_first_existing_instant() {
        // Cuba moved its clocks from 00:00 to 01:00 on 2012-04-01: that midnight never happened.
        let havana = chrono_tz::America::Havana;
        let (start, _) = month_bounds(utc("2012-04-15T12:00:00Z"), havana);
        assert_eq!(start, utc("2012-04-01T05:00:00Z"));
        assert_eq!(month_label(start, havana), "2012-04");
    }
}
