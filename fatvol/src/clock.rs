//! The build timestamp as FAT stores it: a UTC civil date and time that
//! fatfs stamps on every entry it creates, and its on-disk encoding for the
//! entries the syslinux installer writes.

use fatfs::{Date, DateTime, Time, TimeProvider};

/// Converts Unix seconds to a UTC civil date and time
/// (year, month, day, hour, minute, second).
pub fn civil(epoch: u32) -> (u16, u16, u16, u16, u16, u16) {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    // Howard Hinnant's days_from_civil inverse, restricted to dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u32::from(month <= 2);
    (
        narrow(year),
        narrow(month),
        narrow(day),
        narrow(secs / 3600),
        narrow(secs % 3600 / 60),
        narrow(secs % 60),
    )
}

/// Every field of [`civil`] fits 16 bits: a 32-bit epoch ends in 2106.
fn narrow(value: u32) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

/// Feeds the build timestamp to fatfs for every directory entry it creates.
/// FAT has no time zone; UTC is as good as any and keeps builds reproducible
/// across machines.
#[derive(Debug)]
pub struct FatClock {
    now: DateTime,
}

impl FatClock {
    /// FAT dates cover 1980..=2107; earlier epochs are clamped to the start.
    pub fn new(epoch: u32) -> Self {
        let (year, month, day, hour, min, sec) = civil(epoch);
        let now = if year < 1980 {
            DateTime {
                date: Date {
                    year: 1980,
                    month: 1,
                    day: 1,
                },
                time: Time {
                    hour: 0,
                    min: 0,
                    sec: 0,
                    millis: 0,
                },
            }
        } else {
            DateTime {
                date: Date { year, month, day },
                time: Time {
                    hour,
                    min,
                    sec,
                    millis: 0,
                },
            }
        };
        FatClock { now }
    }

    /// fatfs 0.3 only accepts a `&'static` time provider; one small clock per
    /// distinct epoch is leaked, which is bounded by the number of builds.
    pub fn leak(epoch: u32) -> &'static FatClock {
        Box::leak(Box::new(FatClock::new(epoch)))
    }
}

/// A timestamp in the on-disk encoding of FAT directory entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatStamp {
    /// Years since 1980 (7 bits), month (4 bits), day (5 bits).
    pub date: u16,
    /// Hour (5 bits), minute (6 bits), seconds / 2 (5 bits).
    pub time: u16,
    /// The creation time's extra precision: 0..=199 hundredths of a second.
    pub hundredths: u8,
}

impl FatClock {
    /// The same encoding fatfs uses when it stamps an entry.
    pub fn encoded(&self) -> FatStamp {
        let (date, time) = (self.now.date, self.now.time);
        let hundredths = (time.sec % 2) * 100 + time.millis / 10;
        FatStamp {
            date: ((date.year - 1980) << 9) | (date.month << 5) | date.day,
            time: (time.hour << 11) | (time.min << 5) | (time.sec / 2),
            // At most 199: an odd second plus 990 ms.
            hundredths: u8::try_from(hundredths).unwrap_or(199),
        }
    }
}

impl TimeProvider for FatClock {
    fn get_current_date(&self) -> Date {
        self.now.date
    }

    fn get_current_date_time(&self) -> DateTime {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TEST_EPOCH as DEFAULT_EPOCH;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(DEFAULT_EPOCH), (2024, 1, 1, 0, 0, 0));
        // 2000-02-29T23:59:59Z: leap day of a century leap year.
        assert_eq!(civil(951_868_799), (2000, 2, 29, 23, 59, 59));
        assert_eq!(civil(4_294_967_295), (2106, 2, 7, 6, 28, 15));
    }

    #[test]
    fn fat_clock_clamps_before_1980() {
        assert_eq!(FatClock::new(0).get_current_date().year, 1980);
        assert_eq!(FatClock::new(DEFAULT_EPOCH).get_current_date().year, 2024);
    }
}
