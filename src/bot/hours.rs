//! Business hours in a fixed UTC offset.

use crate::config::{BusinessHours, parse_hhmm};

/// Local day number and minute of the day of a Unix time in ms.
fn local(hours: &BusinessHours, ms: u64) -> (i64, u32) {
    let local_ms = ms as i64 + i64::from(hours.utc_offset_minutes) * 60_000;
    let day = local_ms.div_euclid(86_400_000);
    let minute = (local_ms.rem_euclid(86_400_000) / 60_000) as u32;
    (day, minute)
}

/// ISO weekday (1 = Monday) of a day number; day 0 (1970-01-01) was a Thursday.
fn weekday(day: i64) -> u8 {
    ((day + 3).rem_euclid(7) + 1) as u8
}

/// Whether the desk is open at `ms`; always when no hours are configured.
pub fn is_open(hours: Option<&BusinessHours>, ms: u64) -> bool {
    let Some(h) = hours else { return true };
    let (day, minute) = local(h, ms);
    let (Some(open), Some(close)) = (parse_hhmm(&h.open), parse_hhmm(&h.close)) else {
        return true;
    };
    h.days.contains(&weekday(day)) && minute >= open && minute < close
}

/// The local day number of `ms` (for "once per day").
pub fn local_day(hours: Option<&BusinessHours>, ms: u64) -> i64 {
    match hours {
        Some(h) => local(h, ms).0,
        None => (ms / 86_400_000) as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_and_offsets() {
        let h = BusinessHours {
            utc_offset_minutes: 60,
            days: vec![1, 2, 3, 4, 5],
            open: "09:00".into(),
            close: "18:00".into(),
        };
        // 2026-11-23 is a Monday. 08:30 UTC = 09:30 in UTC+1.
        let monday_0830_utc = 1_795_392_000_000 + 8 * 3_600_000 + 30 * 60_000;
        assert!(is_open(Some(&h), monday_0830_utc));
        // 07:30 UTC = 08:30 local: closed.
        assert!(!is_open(Some(&h), monday_0830_utc - 3_600_000));
        // Saturday.
        assert!(!is_open(Some(&h), monday_0830_utc + 5 * 86_400_000));
        assert!(is_open(None, 0));
    }
}
