//! Event lines a log shipper parses, for every driver: a UTC time in RFC 3339 and logfmt
//! values (`key=value`, quoted only when the value is not one plain word).
use alloc::format;
use alloc::string::String;
use core::fmt::Write as _;

/// `unix_ms` milliseconds since the Unix epoch as `2026-12-06T20:45:01.123Z` (the civil date
/// from days: Hinnant's algorithm).
pub fn utc(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (days, of_day) = ((seconds / 86_400) as i64, seconds % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        unix_ms % 1000
    )
}

/// A logfmt value: bare when it is one plain word, else quoted with `"` and `\` escaped.
pub fn value(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        return String::from(text);
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_match_the_calendar() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_500), "2000-02-29T00:00:00.500Z");
        assert_eq!(utc(1_796_588_900_123), "2026-12-06T20:28:20.123Z");
    }

    #[test]
    fn values_are_quoted_only_when_they_must_be() {
        assert_eq!(value("backup"), "backup");
        assert_eq!(value("solo primary"), "\"solo primary\"");
        assert_eq!(value("a \"b\" = \\"), "\"a \\\"b\\\" = \\\\\"");
        assert_eq!(value(""), "\"\"");
    }
}
