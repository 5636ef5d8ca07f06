//! Comparators (RFC 4790 as used by RFC 5228 §2.7.3): i;octet, i;ascii-casemap,
//! i;unicode-casemap and i;ascii-numeric (RFC 4790 §9.1).
//!
//! Trusts nothing: inputs are arbitrary strings from messages. Pure functions; they cannot
//! fail. i;ascii-numeric compares digit strings of any length without converting them to
//! machine integers, so huge numbers cannot overflow.

use std::cmp::Ordering;

/// A comparator named by `:comparator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Comparator {
    /// `i;octet`: bytes as they are.
    Octet,
    /// `i;ascii-casemap`: ASCII letters folded to lower case (the default).
    #[default]
    AsciiCasemap,
    /// `i;unicode-casemap` (RFC 5051), approximated by full Unicode lower-casing.
    UnicodeCasemap,
    /// `i;ascii-numeric`: leading decimal digits as an unsigned number.
    AsciiNumeric,
}

impl Comparator {
    /// The comparator with this name (case-insensitive), if we know it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "i;octet" => Some(Comparator::Octet),
            "i;ascii-casemap" => Some(Comparator::AsciiCasemap),
            "i;unicode-casemap" => Some(Comparator::UnicodeCasemap),
            "i;ascii-numeric" => Some(Comparator::AsciiNumeric),
            _ => None,
        }
    }

    /// The capability string that must be required for this comparator, if any.
    pub fn capability(self) -> Option<&'static str> {
        match self {
            Comparator::AsciiNumeric => Some("comparator-i;ascii-numeric"),
            _ => None,
        }
    }

    /// Whether substring operations (`:contains`, `:matches`, `:regex`) are defined.
    pub fn supports_substring(self) -> bool {
        !matches!(self, Comparator::AsciiNumeric)
    }

    /// Fold one character for comparison.
    pub fn fold(self, c: char) -> char {
        match self {
            Comparator::Octet | Comparator::AsciiNumeric => c,
            Comparator::AsciiCasemap => c.to_ascii_lowercase(),
            Comparator::UnicodeCasemap => c.to_lowercase().next().unwrap_or(c),
        }
    }

    /// Equality under this comparator.
    pub fn equals(self, a: &str, b: &str) -> bool {
        match self {
            Comparator::Octet => a == b,
            Comparator::AsciiCasemap => a.eq_ignore_ascii_case(b),
            _ => self.compare(a, b) == Ordering::Equal,
        }
    }

    /// Ordering under this comparator (used by `:value`).
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Comparator::Octet => a.as_bytes().cmp(b.as_bytes()),
            Comparator::AsciiNumeric => numeric_compare(a, b),
            // ASCII folding maps ASCII to ASCII only, and UTF-8 byte order is code point
            // order, so comparing folded octets in place equals comparing folded characters.
            Comparator::AsciiCasemap => a
                .bytes()
                .map(|b| b.to_ascii_lowercase())
                .cmp(b.bytes().map(|b| b.to_ascii_lowercase())),
            Comparator::UnicodeCasemap => a
                .chars()
                .map(|c| self.fold(c))
                .cmp(b.chars().map(|c| self.fold(c))),
        }
    }

    /// Substring test under this comparator.
    pub fn contains(self, haystack: &str, needle: &str) -> bool {
        match self {
            Comparator::Octet | Comparator::AsciiNumeric => haystack.contains(needle),
            Comparator::AsciiCasemap => {
                contains_ascii_casemap(haystack.as_bytes(), needle.as_bytes())
            }
            Comparator::UnicodeCasemap => {
                let h: Vec<char> = haystack.chars().map(|c| self.fold(c)).collect();
                let n: Vec<char> = needle.chars().map(|c| self.fold(c)).collect();
                if n.is_empty() {
                    return true;
                }
                h.windows(n.len()).any(|w| w == n.as_slice())
            }
        }
    }
}

/// Whether `needle` occurs in `haystack`, ASCII letters compared case-insensitively, in
/// place (no folded copies). A match can only start on a character boundary because the
/// needle is UTF-8 too and starts with a non-continuation byte.
fn contains_ascii_casemap(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    if needle.len() > haystack.len() {
        return false;
    }
    let lo = first.to_ascii_lowercase();
    let up = first.to_ascii_uppercase();
    let last_start = haystack.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        let Some(window) = haystack.get(i..=last_start) else {
            return false;
        };
        let Some(off) = window.iter().position(|&b| b == lo || b == up) else {
            return false;
        };
        let at = i + off;
        if haystack
            .get(at + 1..at + needle.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(rest))
        {
            return true;
        }
        i = at + 1;
    }
    false
}

/// The leading digits of `s` without leading zeros; `None` when `s` does not start with a
/// digit (which i;ascii-numeric treats as positive infinity).
fn leading_number(s: &str) -> Option<&str> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let digits = s.get(..end).unwrap_or("");
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed })
}

fn numeric_compare(a: &str, b: &str) -> Ordering {
    match (leading_number(a), leading_number(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use Comparator::*;
        let cases = [
            (Octet, "abc", "abc", Ordering::Equal),
            (Octet, "abc", "ABC", Ordering::Greater),
            (AsciiCasemap, "abc", "ABC", Ordering::Equal),
            (UnicodeCasemap, "ÄBC", "äbc", Ordering::Equal),
            (AsciiNumeric, "007", "7", Ordering::Equal),
            (AsciiNumeric, "10", "9", Ordering::Greater),
            (
                AsciiNumeric,
                "abc",
                "99999999999999999999999",
                Ordering::Greater,
            ),
            (AsciiNumeric, "abc", "", Ordering::Equal),
        ];
        for (c, a, b, want) in cases {
            assert_eq!(c.compare(a, b), want, "{c:?} {a} {b}");
        }
        assert!(AsciiCasemap.contains("Hello World", "WORLD"));
        assert!(!Octet.contains("Hello World", "WORLD"));
        for (h, n, want) in [
            ("Hello World", "o w", true),
            ("Hello World", "", true),
            ("", "a", false),
            ("abc", "abcd", false),
            ("aaab", "AAB", true),
            ("café", "É", false),
            ("cafÉ", "É", true),
            ("xyz", "Z", true),
        ] {
            assert_eq!(AsciiCasemap.contains(h, n), want, "{h} {n}");
        }
        assert_eq!(AsciiCasemap.compare("a", "B"), Ordering::Less);
        assert_eq!(AsciiCasemap.compare("[", "a"), Ordering::Less);
        assert!(AsciiCasemap.equals("ÀbC", "Àbc"));
    }
}
