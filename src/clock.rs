//! Time as a dependency: everything that asks "what time is it" asks a [`Clock`], so tests
//! can pin month boundaries and expiry without waiting.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Source of the current instant.
pub trait Clock: Send + Sync {
    /// The current instant in UTC.
    fn now(&self) -> DateTime<Utc>;
    /// How long the clock has run, by a clock nobody sets (the machine's monotonic clock):
    /// how far the high-water mark moves on while the wall clock may be set back.
    fn running(&self) -> std::time::Duration;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn running(&self) -> std::time::Duration {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed()
    }
}

/// `TOLLGATE_NOW` (test-clock builds) is not an instant.
#[derive(Debug, thiserror::Error)]
#[error("TOLLGATE_NOW={text:?} is not an RFC 3339 instant: {source}")]
pub struct ClockError {
    /// The variable's value.
    pub text: String,
    /// chrono's reason.
    pub source: chrono::ParseError,
}

/// The clock `tollgate run` uses: the system clock, or under the `test-clock` feature a
/// clock starting at `TOLLGATE_NOW` (RFC 3339) that then advances in real time.
pub fn from_env() -> Result<std::sync::Arc<dyn Clock>, ClockError> {
    #[cfg(feature = "test-clock")]
    if let Ok(text) = std::env::var("TOLLGATE_NOW") {
        let start = DateTime::parse_from_rfc3339(&text)
            .map_err(|source| ClockError {
                text: text.clone(),
                source,
            })?
            .with_timezone(&Utc);
        return Ok(std::sync::Arc::new(StartedClock::new(start)));
    }
    Ok(std::sync::Arc::new(SystemClock))
}

/// A clock that reads `start` when created and then advances in real time; lets tests put
/// the sidecar a few seconds before a month boundary or an expiry.
#[derive(Debug, Clone, Copy)]
pub struct StartedClock {
    start: DateTime<Utc>,
    origin: std::time::Instant,
}

impl StartedClock {
    /// A clock reading `start` now.
    pub fn new(start: DateTime<Utc>) -> StartedClock {
        StartedClock {
            start,
            origin: std::time::Instant::now(),
        }
    }
}

impl Clock for StartedClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.origin.elapsed()).unwrap_or(TimeDelta::MAX);
        self.start.checked_add_signed(elapsed).unwrap_or(self.start)
    }

    fn running(&self) -> std::time::Duration {
        self.origin.elapsed()
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

/// A month as one number (`year * 12 + month0`), for packing into counters and comparing.
pub fn month_index(now: DateTime<Utc>, tz: Tz) -> u32 {
    let local = now.with_timezone(&tz);
    u32::try_from(local.year()).unwrap_or(0) * 12 + local.month0()
}

/// The `YYYY-MM` label of a month index.
pub fn month_index_label(index: u32) -> String {
    format!("{:04}-{:02}", index / 12, index % 12 + 1)
}

/// Parses `YYYY-MM` into a month index.
pub fn parse_month(label: &str) -> Option<u32> {
    let (year, month) = label.split_once('-')?;
    let (year, month): (u32, u32) = (year.parse().ok()?, month.parse().ok()?);
    (year.to_string().len() == 4 && (1..=12).contains(&month) && label.len() == 7)
        .then(|| year * 12 + month - 1)
}

/// A clock tests move by hand: [`ManualClock::set`] sets the wall clock as an operator
/// would (no time passes), [`ManualClock::advance`] lets time pass.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock(std::sync::Mutex<(DateTime<Utc>, std::time::Duration)>);

#[cfg(test)]
impl ManualClock {
    /// A clock reading `now` until moved.
    pub(crate) fn new(now: DateTime<Utc>) -> ManualClock {
        ManualClock(std::sync::Mutex::new((now, std::time::Duration::ZERO)))
    }

    /// Sets the wall clock to `now`; the monotonic clock does not move.
    pub(crate) fn set(&self, now: DateTime<Utc>) {
        if let Ok(mut current) = self.0.lock() {
            current.0 = now;
        }
    }

    /// Lets `by` pass: the wall clock and the monotonic clock move on alike.
    pub(crate) fn advance(&self, by: std::time::Duration) {
        if let Ok(mut current) = self.0.lock() {
            current.0 += TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
            current.1 += by;
        }
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map_or_else(|_| Utc::now(), |now| now.0)
    }

    fn running(&self) -> std::time::Duration {
        self.0.lock().map_or(std::time::Duration::ZERO, |now| now.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_indexes_round_trip_through_labels() {
        let index = month_index(utc("2026-12-01T03:00:00Z"), chrono_tz::America::New_York);
        assert_eq!(month_index_label(index), "2026-11");
        assert_eq!(parse_month("2026-11"), Some(index));
        assert_eq!(parse_month("2026-12"), Some(index + 1));
        for bad in ["2026-13", "2026-00", "26-11", "2026-1", "2026-011", "x"] {
            assert_eq!(parse_month(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_started_clock_advances_from_its_start() {
        let clock = StartedClock::new(utc("2026-11-30T23:59:59Z"));
        let first = clock.now();
        assert!(first >= utc("2026-11-30T23:59:59Z") && first < utc("2026-12-01T00:00:00Z"));
        assert!(clock.now() >= first);
    }

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
