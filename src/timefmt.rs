//! UTC calendar time from a `SystemTime`, without a date crate: the few fixed formats psi
//! prints (SigV4's `X-Amz-Date`, `psi cache status`'s ISO-8601 timestamps) need only this.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC calendar time. Times before 1970 are clamped to the epoch (psi only formats file
/// times and "now").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl Utc {
    pub fn of(time: SystemTime) -> Utc {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days as i64);
        Utc {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            micros: since.subsec_micros(),
        }
    }

    /// Python's `datetime.isoformat()` for an aware UTC time, as the original printed file
    /// times: `2026-04-08T05:52:33.478981+00:00`, the fraction left out when it is zero.
    pub fn isoformat(&self) -> String {
        let mut out = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.micros != 0 {
            out.push_str(&format!(".{:06}", self.micros));
        }
        out.push_str("+00:00");
        out
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn isoformat_like_python() {
        let t = UNIX_EPOCH + Duration::from_micros(1_775_627_553_478_981);
        assert_eq!(Utc::of(t).isoformat(), "2026-04-08T05:52:33.478981+00:00");
        assert_eq!(Utc::of(UNIX_EPOCH).isoformat(), "1970-01-01T00:00:00+00:00");
        // 2024-02-29T23:59:59 (a leap day).
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(Utc::of(leap).isoformat(), "2024-02-29T23:59:59+00:00");
    }
}
