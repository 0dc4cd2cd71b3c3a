//! Business hours in the desk's time zone.

use crate::config::{BusinessHours, parse_hhmm};

/// Local day number and minute of the day of a Unix time in ms.
fn local(hours: &BusinessHours, ms: u64) -> (i64, u32) {
    // The offset in force at that instant, so the hours follow summer time.
    let offset = jiff::Timestamp::from_millisecond(ms as i64)
        .map(|at| hours.time_zone.to_offset(at).seconds())
        .unwrap_or(0);
    let local_ms = ms as i64 + i64::from(offset) * 1000;
    let day = local_ms.div_euclid(86_400_000);
    let minute = (local_ms.rem_euclid(86_400_000) / 60_000) as u32;
    (day, minute)
}

/// ISO weekday (1 = Monday) of a day number; day 0 (1970-01-01) was a Thursday.
fn weekday(day: i64) -> u8 {
    ((day + 3).rem_euclid(7) + 1) as u8
}

/// Whether the desk is open at `ms`; always when no hours are configured.
pub(crate) fn is_open(hours: Option<&BusinessHours>, ms: u64) -> bool {
    let Some(h) = hours else { return true };
    let (day, minute) = local(h, ms);
    let (Some(open), Some(close)) = (parse_hhmm(&h.open), parse_hhmm(&h.close)) else {
        return true;
    };
    h.days.contains(&weekday(day)) && minute >= open && minute < close
}

/// The local day number of `ms` (for "once per day").
pub(crate) fn local_day(hours: Option<&BusinessHours>, ms: u64) -> i64 {
    match hours {
        Some(h) => local(h, ms).0,
        None => (ms / 86_400_000) as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn madrid() -> BusinessHours {
        BusinessHours {
            time_zone: jiff::tz::TimeZone::get("Europe/Madrid").unwrap(),
            days: vec![1, 2, 3, 4, 5],
            open: "09:00".into(),
            close: "18:00".into(),
        }
    }

    /// Unix ms of a UTC wall-clock time.
    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> u64 {
        let at = jiff::civil::datetime(y, mo, d, h, mi, 0, 0).to_zoned(jiff::tz::TimeZone::UTC);
        at.unwrap().timestamp().as_millisecond() as u64
    }

    #[test]
    fn weekdays_and_winter_time() {
        let h = madrid();
        // 2026-11-23 is a Monday; Madrid is UTC+1 in winter. 08:30 UTC = 09:30 local.
        assert!(is_open(Some(&h), utc(2026, 11, 23, 8, 30)));
        assert!(!is_open(Some(&h), utc(2026, 11, 23, 7, 30)), "08:30 local");
        assert!(is_open(Some(&h), utc(2026, 11, 23, 16, 59)), "17:59 local");
        assert!(!is_open(Some(&h), utc(2026, 11, 23, 17, 0)), "18:00 local");
        assert!(!is_open(Some(&h), utc(2026, 11, 28, 10, 0)), "Saturday");
        assert!(is_open(None, 0));
    }

    #[test]
    fn summer_time_moves_the_hours() {
        let h = madrid();
        // 2026-07-06 is a Monday; Madrid is UTC+2 in summer. 07:30 UTC = 09:30 local: open,
        // though it would be 08:30 and closed in winter time.
        assert!(is_open(Some(&h), utc(2026, 7, 6, 7, 30)));
        assert!(!is_open(Some(&h), utc(2026, 7, 6, 16, 0)), "18:00 local");
        // The day of the change (Sunday 2026-03-29, 02:00 → 03:00): 21:30 UTC is still Sunday
        // 23:30 local, 22:30 UTC is already Monday 00:30 local.
        let sunday = local_day(Some(&h), utc(2026, 3, 29, 0, 30));
        assert_eq!(local_day(Some(&h), utc(2026, 3, 29, 21, 30)), sunday);
        assert_eq!(local_day(Some(&h), utc(2026, 3, 29, 22, 30)), sunday + 1);
    }

    #[test]
    fn the_local_day_turns_at_local_midnight() {
        let h = madrid();
        // 23:30 UTC on Monday is already Tuesday 00:30 in Madrid.
        let monday = local_day(Some(&h), utc(2026, 11, 23, 12, 0));
        assert_eq!(local_day(Some(&h), utc(2026, 11, 23, 23, 30)), monday + 1);
        assert_eq!(local_day(Some(&h), utc(2026, 11, 23, 22, 59)), monday);
    }
}
