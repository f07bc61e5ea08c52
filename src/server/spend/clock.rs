//! The calendar budgets are counted in: days and months in Beijing time
//! (UTC+8), as Tencent bills, read from an injectable [`Clock`] so tests
//! can cross midnight without waiting for it.

use std::time::Duration;

use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

/// Beijing time, the zone Tencent's bills are in.
pub(crate) const BEIJING: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => panic!("UTC+8 is a valid offset"),
};

/// Where the budgets read the time from.
pub(crate) trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Period {
    /// A calendar day, Beijing time.
    Day,
    /// A calendar month, Beijing time.
    Month,
}

/// One period as it is now: its name and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    /// `2026-11-30` or `2026-11`: part of the counter's key, so a new
    /// period starts a new counter.
    pub(crate) id: String,
    /// When the next period starts.
    pub(crate) resets_at: OffsetDateTime,
}

impl Period {
    /// Both periods.
    pub(crate) const ALL: [Period; 2] = [Period::Day, Period::Month];

    /// `day` or `month`, as labels, keys and messages write it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The period that contains `now`.
    pub(crate) fn window(self, now: OffsetDateTime) -> Window {
        let local = now.to_offset(BEIJING);
        let date = local.date();
        let (id, next_start) = match self {
            Period::Day => (
                format!(
                    "{:04}-{:02}-{:02}",
                    date.year(),
                    u8::from(date.month()),
                    date.day()
                ),
                date.next_day().unwrap_or(Date::MAX),
            ),
            Period::Month => {
                let (year, month) = match date.month() {
                    Month::December => (date.year() + 1, Month::January),
                    month => (date.year(), month.next()),
                };
                (
                    format!("{:04}-{:02}", date.year(), u8::from(date.month())),
                    Date::from_calendar_date(year, month, 1).unwrap_or(Date::MAX),
                )
            }
        };
        Window {
            id,
            resets_at: next_start.with_time(Time::MIDNIGHT).assume_offset(BEIJING),
        }
    }
}

/// How long from `now` until `at` (zero once passed).
pub(crate) fn until(now: OffsetDateTime, at: OffsetDateTime) -> Duration {
    Duration::try_from(at - now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use time::macros::datetime;

    use super::*;

    /// A clock tests move by hand.
    #[derive(Debug)]
    pub(crate) struct ManualClock(Mutex<OffsetDateTime>);

    impl ManualClock {
        pub(crate) fn at(now: OffsetDateTime) -> Self {
            Self(Mutex::new(now))
        }

        pub(crate) fn set(&self, now: OffsetDateTime) {
            *self.0.lock().unwrap() = now;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> OffsetDateTime {
            *self.0.lock().unwrap()
        }
    }

    #[test]
    fn a_beijing_day_starts_at_16_00_utc() {
        let before = Period::Day.window(datetime!(2026-11-30 15:59:59 UTC));
        let after = Period::Day.window(datetime!(2026-11-30 16:00:00 UTC));
        assert_eq!(before.id, "2026-11-30");
        assert_eq!(after.id, "2026-12-01");
        assert_eq!(before.resets_at, datetime!(2026-11-30 16:00:00 UTC));
        assert_eq!(after.resets_at, datetime!(2026-12-01 16:00:00 UTC));
    }

    #[test]
    fn a_beijing_month_rolls_over_at_its_first_midnight_and_across_the_year() {
        let last = Period::Month.window(datetime!(2026-12-31 15:59:59 UTC));
        let first = Period::Month.window(datetime!(2026-12-31 16:00:00 UTC));
        assert_eq!(last.id, "2026-12");
        assert_eq!(first.id, "2027-01");
        assert_eq!(last.resets_at, datetime!(2026-12-31 16:00:00 UTC));
        assert_eq!(first.resets_at, datetime!(2027-01-31 16:00:00 UTC));
        // February of a leap year.
        let february = Period::Month.window(datetime!(2028-02-10 00:00:00 UTC));
        assert_eq!(february.resets_at, datetime!(2028-02-29 16:00:00 UTC));
    }

    #[test]
    fn until_is_zero_once_passed() {
        let now = datetime!(2026-11-30 15:00:00 UTC);
        assert_eq!(
            until(now, datetime!(2026-11-30 16:00:00 UTC)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            until(now, datetime!(2026-11-30 14:00:00 UTC)),
            Duration::ZERO
        );
    }
}
