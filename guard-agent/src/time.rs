//! Time as the verdicts and logs show it: RFC 3339 UTC with milliseconds. Below `cli/` so
//! the sinks, ECS and the audit log format time without reaching up into the commands.

/// `2026-11-21T10:00:00.123Z` from milliseconds since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000);
    }
    // Digit by digit: every syslog message and ECS document has one, and `format!` cost ten
    // times this.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, m.into());
    put(8, 2, d.into());
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    put(20, 3, ms % 1000);
    b.iter().map(|&c| char::from(c)).collect()
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (the era-based method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_795_255_200_123), "2026-11-21T10:00:00.123Z");
        assert_eq!(utc(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(utc(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        // What `format!` gives, across leap years and centuries.
        for ms in (0..400 * 366).map(|d| d * 86_400_000 * 7 + d * 3_600_123) {
            let secs = ms / 1000;
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, d) = civil_from_days(days as i64);
            assert_eq!(utc(ms), format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000));
        }
    }
}
