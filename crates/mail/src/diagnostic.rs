//! Telling an administrator where a problem is in a configuration text and what was meant:
//! line and column from a byte offset, the key serde reported as unknown, and the known word
//! nearest to a misspelt one.
//!
//! Pure: takes text, returns values. Trusts nothing about the text (offsets past the end are
//! clamped); never panics.

use crate::prelude::*;

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// The key in serde's "unknown field `name`, expected ..." message.
pub fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// The known word closest to `word`, if it is close enough to be a typo.
pub fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_fields_and_suggestions() {
        assert_eq!(line_col("a\nbc\nd", 4), (2, 3));
        assert_eq!(line_col("ab", 99), (1, 3));
        assert_eq!(
            unknown_field("unknown field `destinaton`, expected one of"),
            Some("destinaton".into())
        );
        assert_eq!(unknown_field("invalid type"), None);
        let known = ["destination", "fsync", "quota"];
        assert_eq!(suggest("destinaton", &known), Some("destination"));
        assert_eq!(suggest("fsinc", &known), Some("fsync"));
        assert_eq!(suggest("completely-else", &known), None);
    }
}
