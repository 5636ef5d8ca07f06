//! Dates for the date and currentdate tests (RFC 5260): RFC 5322 date parsing, zone
//! shifts and the date parts.
//!
//! Trusts nothing: Date header values are arbitrary text. Unparseable dates yield `None`
//! (the test then fails, as RFC 5260 §4 says); arithmetic is on i64 with checked ranges,
//! so no overflow panics.

/// The date parts RFC 5260 §4.3 defines.
pub const DATE_PARTS: &[&str] = &[
    "year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601",
    "std11", "zone", "weekday",
];

/// A point in time with the zone it is shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub timestamp: i64,
    /// Offset from UTC in minutes.
    pub offset: i32,
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parse a zone "+hhmm" / "-hhmm" to minutes.
pub fn parse_zone(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 5 {
        return None;
    }
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = s.get(1..)?;
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits.get(..2)?.parse().ok()?;
    let m: i32 = digits.get(2..)?.parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * (h * 60 + m))
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn obsolete_zone(z: &str) -> Option<i32> {
    Some(match z.to_ascii_uppercase().as_str() {
        "UT" | "GMT" | "Z" => 0,
        "EST" => -300,
        "EDT" => -240,
        "CST" => -360,
        "CDT" => -300,
        "MST" => -420,
        "MDT" => -360,
        "PST" => -480,
        "PDT" => -420,
        z if z.len() == 1 && z.chars().all(|c| c.is_ascii_alphabetic()) => 0,
        _ => return None,
    })
}

/// Parse an RFC 5322 date-time (obsolete forms tolerated).
pub fn parse_rfc5322(s: &str) -> Option<DateTime> {
    // Drop comments and the day name.
    let mut clean = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            c if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let mut rest = clean.trim();
    if let Some(i) = rest.find(',') {
        rest = rest.get(i + 1..)?.trim();
    }
    let toks: Vec<&str> = rest.split_whitespace().collect();
    let day: i64 = toks.first()?.parse().ok()?;
    let mon_name = toks.get(1)?.to_ascii_lowercase();
    let month = MONTHS.iter().position(|m| mon_name.starts_with(m))? as i64 + 1;
    let ytok = toks.get(2)?;
    let mut year: i64 = ytok.parse().ok()?;
    if ytok.len() <= 2 {
        year += if year < 50 { 2000 } else { 1900 };
    } else if ytok.len() == 3 {
        year += 1900;
    }
    let time = toks.get(3)?;
    let tp: Vec<&str> = time.split(':').collect();
    let hour: i64 = tp.first()?.parse().ok()?;
    let minute: i64 = tp.get(1)?.parse().ok()?;
    let second: i64 = match tp.get(2) {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || !(0..=9999).contains(&year)
    {
        return None;
    }
    let offset = match toks.get(4) {
        Some(z) => parse_zone(z).or_else(|| obsolete_zone(z))?,
        None => 0,
    };
    let local = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    Some(DateTime {
        timestamp: local - i64::from(offset) * 60,
        offset,
    })
}

/// Format a zone offset as "+hhmm".
pub fn zone_string(offset: i32) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.abs();
    format!("{sign}{:02}{:02}", a / 60, a % 60)
}

/// The value of `part` for `dt` shown in its own offset.
pub fn date_part(dt: DateTime, part: &str) -> Option<String> {
    let local = dt.timestamp + i64::from(dt.offset) * 60;
    let days = local.div_euclid(86400);
    let secs = local.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let zone = zone_string(dt.offset);
    Some(match part.to_ascii_lowercase().as_str() {
        "year" => format!("{y:04}"),
        "month" => format!("{m:02}"),
        "day" => format!("{d:02}"),
        "date" => format!("{y:04}-{m:02}-{d:02}"),
        "julian" => format!("{}", days + 40_587),
        "hour" => format!("{hh:02}"),
        "minute" => format!("{mm:02}"),
        "second" => format!("{ss:02}"),
        "time" => format!("{hh:02}:{mm:02}:{ss:02}"),
        "iso8601" => {
            let z = format!(
                "{}:{}",
                zone.get(..3).unwrap_or("+00"),
                zone.get(3..).unwrap_or("00")
            );
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{z}")
        }
        "std11" => {
            const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
            const MN: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let wd = WD
                .get((days + 4).rem_euclid(7) as usize)
                .copied()
                .unwrap_or("Sun");
            let mn = MN
                .get((m - 1).clamp(0, 11) as usize)
                .copied()
                .unwrap_or("Jan");
            format!("{wd}, {d:02} {mn} {y:04} {hh:02}:{mm:02}:{ss:02} {zone}")
        }
        "zone" => zone,
        "weekday" => format!("{}", (days + 4).rem_euclid(7)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_table() {
        let dt = parse_rfc5322("Mon, 12 Sep 2005 15:33:07 +0200").expect("valid");
        let cases = [
            ("year", "2005"),
            ("month", "09"),
            ("day", "12"),
            ("date", "2005-09-12"),
            ("julian", "53625"),
            ("hour", "15"),
            ("minute", "33"),
            ("second", "07"),
            ("time", "15:33:07"),
            ("iso8601", "2005-09-12T15:33:07+02:00"),
            ("std11", "Mon, 12 Sep 2005 15:33:07 +0200"),
            ("zone", "+0200"),
            ("weekday", "1"),
        ];
        for (p, want) in cases {
            assert_eq!(date_part(dt, p).as_deref(), Some(want), "{p}");
        }
        let utc = DateTime { offset: 0, ..dt };
        assert_eq!(date_part(utc, "hour").as_deref(), Some("13"));
        assert!(parse_rfc5322("garbage").is_none());
        assert_eq!(parse_zone("-0130"), Some(-90));
    }
}
