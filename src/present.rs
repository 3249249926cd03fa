//! How values read for people: durations ("3h 5m"), shortened digests, child
//! text clipped to one line, aligned text columns. Shared by the status model
//! (its reasons are sentences), the CLI and the reports, so a digest or an age
//! reads the same everywhere.
//!
//! Pure text functions over plain values; this module knows nothing of apps,
//! statuses or the store.

use chrono::{DateTime, Duration, Utc};

/// Rows as aligned text columns: each cell padded to its column's widest, two
/// spaces apart, the last column unpadded; one line per row, each starting with
/// `indent` and ending with a newline.
pub fn align_columns<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_owned();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A duration as people read it: "45s", "12m", "3h 5m", "2d 4h"; the smaller unit
/// is left out when zero ("3h"), negative durations read "0s". Truncates: 59s is
/// "59s", 119s is "1m".
pub fn format_age(d: Duration) -> String {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    let two = |major: i64, major_unit: &str, minor: i64, minor_unit: &str| {
        if minor == 0 {
            format!("{major}{major_unit}")
        } else {
            format!("{major}{major_unit} {minor}{minor_unit}")
        }
    };
    match d.num_seconds().max(0) {
        s if s < MINUTE => format!("{s}s"),
        s if s < HOUR => format!("{}m", s / MINUTE),
        s if s < DAY => two(s / HOUR, "h", s % HOUR / MINUTE, "m"),
        s => two(s / DAY, "d", s % DAY / HOUR, "h"),
    }
}

/// How long ago `then` was, at `now`, as [`format_age`] writes it.
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    format_age(now - then)
}

/// `sha256:` and the first 12 hex digits. Anything else came from a child that does
/// not follow the protocol, and is only clipped.
pub fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 && hex.bytes().take(12).all(|b| b.is_ascii_hexdigit()) => {
            format!("sha256:{}…", &hex[..12])
        }
        _ if digest.is_empty() => "(empty digest)".to_owned(),
        _ => clip(digest, 19),
    }
}

/// At most `max` characters (cut on a char boundary, "…" marks the cut), with
/// control characters as spaces: child text must not break a one-line reason or
/// smuggle terminal escapes into `canopy status`.
pub fn clip(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .by_ref()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";

    #[test]
    fn ages_read_like_people_write_them() {
        let cases = [
            (-5, "0s"),
            (0, "0s"),
            (45, "45s"),
            (59, "59s"),
            (60, "1m"),
            (119, "1m"),
            (12 * 60 + 30, "12m"),
            (3600, "1h"),
            (3 * 3600 + 5 * 60 + 59, "3h 5m"),
            (86_400, "1d"),
            (2 * 86_400 + 4 * 3600 + 59 * 60, "2d 4h"),
            (400 * 86_400, "400d"),
        ];
        for (secs, text) in cases {
            assert_eq!(format_age(Duration::seconds(secs)), text, "{secs}s");
        }
        assert_eq!(format_age(Duration::MIN), "0s");
        assert_eq!(format_age(Duration::MAX), "106751991167d 7h");
    }

    #[test]
    fn digests_are_shortened_for_reasons() {
        assert_eq!(short_digest(A), "sha256:aaaaaaaaaaaa…");
        assert_eq!(short_digest("sha256:abc"), "sha256:abc");
        assert_eq!(short_digest(""), "(empty digest)");
        assert_eq!(
            short_digest("md5:0123456789abcdef0123"),
            "md5:0123456789abcde…"
        );
        assert_eq!(short_digest("sha256:ééééééééééééé"), "sha256:éééééééééééé…");
    }
}
