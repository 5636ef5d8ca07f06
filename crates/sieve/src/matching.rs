//! Match types: :is, :contains, :matches (RFC 5228 §2.7.1), :regex (linear-time, via the
//! regex crate), :value and :count (RFC 5231), with match variables (RFC 5229 §3.2).
//!
//! Trusts nothing: values come from messages and keys may come from variables. Wildcard
//! matching is segment-wise (no backtracking explosion: at most O(n*m) per key); regular
//! expressions are compiled with a size limit and run in linear time. Bad patterns are
//! reported as errors, never panics.

use std::cmp::Ordering;

use crate::comparator::Comparator;

/// A relational operator (RFC 5231 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelOp {
    /// "gt"
    Gt,
    /// "ge"
    Ge,
    /// "lt"
    Lt,
    /// "le"
    Le,
    /// "eq"
    Eq,
    /// "ne"
    Ne,
}

impl RelOp {
    /// Parse a relational operator name (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "gt" => RelOp::Gt,
            "ge" => RelOp::Ge,
            "lt" => RelOp::Lt,
            "le" => RelOp::Le,
            "eq" => RelOp::Eq,
            "ne" => RelOp::Ne,
            _ => return None,
        })
    }

    /// Whether `ord` (value compared to key) satisfies the operator.
    pub fn holds(self, ord: Ordering) -> bool {
        match self {
            RelOp::Gt => ord == Ordering::Greater,
            RelOp::Ge => ord != Ordering::Less,
            RelOp::Lt => ord == Ordering::Less,
            RelOp::Le => ord != Ordering::Greater,
            RelOp::Eq => ord == Ordering::Equal,
            RelOp::Ne => ord != Ordering::Equal,
        }
    }
}

/// A match type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatchType {
    /// `:is` (the default)
    #[default]
    Is,
    /// `:contains`
    Contains,
    /// `:matches`
    Matches,
    /// `:regex`
    Regex,
    /// `:value "op"`
    Value(RelOp),
    /// `:count "op"`
    Count(RelOp),
}

/// Comparator and match type together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Matcher {
    /// The comparator.
    pub comparator: Comparator,
    /// The match type.
    pub match_type: MatchType,
}

#[derive(Clone, Copy)]
enum PatTok {
    Star,
    One,
    Lit(char),
}

fn glob_tokens(pattern: &str, cmp: Comparator) -> Vec<PatTok> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(PatTok::Star),
            '?' => out.push(PatTok::One),
            '\\' => {
                let n = chars.next().unwrap_or('\\');
                out.push(PatTok::Lit(cmp.fold(n)));
            }
            c => out.push(PatTok::Lit(cmp.fold(c))),
        }
    }
    out
}

/// Whether `seg` (no stars) matches `text` at `at`.
fn seg_at(seg: &[PatTok], text: &[char], at: usize) -> bool {
    if at + seg.len() > text.len() {
        return false;
    }
    seg.iter().enumerate().all(|(i, t)| match t {
        PatTok::Lit(c) => text.get(at + i) == Some(c),
        _ => true,
    })
}

/// `:matches` with wildcard captures. On success returns the captured values: the
/// whole value first, then one per `*` and `?` in pattern order.
pub fn glob_match(value: &str, pattern: &str, cmp: Comparator) -> Option<Vec<String>> {
    let orig: Vec<char> = value.chars().collect();
    let text: Vec<char> = orig.iter().map(|&c| cmp.fold(c)).collect();
    let toks = glob_tokens(pattern, cmp);
    let segs: Vec<&[PatTok]> = toks.split(|t| matches!(t, PatTok::Star)).collect();
    let n = text.len();
    // Positions where each segment starts.
    let mut starts = Vec::with_capacity(segs.len());
    if segs.len() == 1 {
        let s = segs.first()?;
        if s.len() != n || !seg_at(s, &text, 0) {
            return None;
        }
        starts.push(0);
    } else {
        let first = segs.first()?;
        let last = segs.last()?;
        if first.len() + last.len() > n || !seg_at(first, &text, 0) {
            return None;
        }
        let last_start = n - last.len();
        if !seg_at(last, &text, last_start) {
            return None;
        }
        starts.push(0);
        let mut at = first.len();
        for seg in segs.iter().take(segs.len() - 1).skip(1) {
            let mut found = None;
            let mut p = at;
            while p + seg.len() <= last_start {
                if seg_at(seg, &text, p) {
                    found = Some(p);
                    break;
                }
                p += 1;
            }
            let p = found?;
            starts.push(p);
            at = p + seg.len();
        }
        starts.push(last_start);
    }
    // Build captures in pattern order.
    let mut caps = vec![value.to_string()];
    let slice = |a: usize, b: usize| -> String {
        orig.get(a..b)
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    };
    for (i, seg) in segs.iter().enumerate() {
        let s = starts.get(i).copied().unwrap_or(0);
        if i > 0 {
            let prev_end =
                starts.get(i - 1).copied().unwrap_or(0) + segs.get(i - 1).map_or(0, |p| p.len());
            caps.push(slice(prev_end, s));
        }
        for (j, t) in seg.iter().enumerate() {
            if matches!(t, PatTok::One) {
                caps.push(slice(s + j, s + j + 1));
            }
        }
    }
    Some(caps)
}

/// Translate a POSIX extended regular expression to the regex crate's syntax and compile
/// it, case-insensitively for the casemap comparators.
pub fn compile_regex(pattern: &str, cmp: Comparator) -> Result<regex::Regex, String> {
    let mut b = regex::RegexBuilder::new(pattern);
    b.case_insensitive(matches!(
        cmp,
        Comparator::AsciiCasemap | Comparator::UnicodeCasemap
    ))
    .size_limit(1 << 20)
    .dfa_size_limit(1 << 20)
    .nest_limit(64);
    b.build().map_err(|e| {
        let text = e.to_string();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid")
            .trim()
            .to_string();
        format!("invalid regular expression '{pattern}' for regex match: {last}")
    })
}

/// Captures of a regex match: ${0} the whole match, then the groups (unmatched groups are
/// empty strings).
pub fn regex_captures(re: &regex::Regex, value: &str) -> Option<Vec<String>> {
    let caps = re.captures(value)?;
    Some(
        caps.iter()
            .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let c = Comparator::AsciiCasemap;
        let cases: &[(&str, &str, Option<&[&str]>)] = &[
            ("hello", "hello", Some(&["hello"])),
            ("hello", "h*o", Some(&["hello", "ell"])),
            ("hello", "h?llo", Some(&["hello", "e"])),
            ("a.b.c", "*.*", Some(&["a.b.c", "a", "b.c"])),
            ("HELLO", "*l*", Some(&["HELLO", "HE", "LO"])),
            ("x", "x*", Some(&["x", ""])),
            ("abc", "a\\*c", None),
            ("a*c", "a\\*c", Some(&["a*c"])),
            ("ab", "a?b", None),
            ("", "*", Some(&["", ""])),
        ];
        for (v, p, want) in cases {
            let got = glob_match(v, p, c);
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{v} {p}");
        }
    }

    #[test]
    fn regex_errors_are_values() {
        assert!(compile_regex("a(", Comparator::Octet).is_err());
        let re = compile_regex("^(a+)b$", Comparator::AsciiCasemap).expect("valid");
        assert_eq!(
            regex_captures(&re, "AAB"),
            Some(vec!["AAB".into(), "AA".into()])
        );
    }
}
