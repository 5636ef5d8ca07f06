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
enum PatTok<T> {
    Star,
    One,
    Lit(T),
}

/// The units a comparator matches `?` against (RFC 5228 §2.7.1: the comparator defines
/// what a character is; i;octet and i;ascii-casemap define it as one octet).
enum Tokens {
    Octets(Vec<PatTok<u8>>),
    Chars(Vec<PatTok<char>>),
}

/// A compiled `:matches` pattern. Matching is segment-wise (at most O(n*m), no
/// backtracking explosion) and does not copy or fold the value.
pub struct Glob {
    toks: Tokens,
    /// Token ranges of the star-separated segments.
    segs: Vec<(usize, usize)>,
    cmp: Comparator,
}

fn tokenize<T: Copy>(pattern: &str, lit: impl Fn(char, &mut Vec<PatTok<T>>)) -> Vec<PatTok<T>> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(PatTok::Star),
            '?' => out.push(PatTok::One),
            '\\' => lit(chars.next().unwrap_or('\\'), &mut out),
            c => lit(c, &mut out),
        }
    }
    out
}

fn segments<T>(toks: &[PatTok<T>]) -> Vec<(usize, usize)> {
    let mut segs = Vec::new();
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        if matches!(t, PatTok::Star) {
            segs.push((start, i));
            start = i + 1;
        }
    }
    segs.push((start, toks.len()));
    segs
}

/// Find where each segment starts in a text of `n` units (`eq(i, lit)`: unit `i` equals
/// the folded literal). Fills `starts` when given.
fn glob_run<T: Copy>(
    toks: &[PatTok<T>],
    segs: &[(usize, usize)],
    n: usize,
    eq: impl Fn(usize, T) -> bool,
    mut starts: Option<&mut Vec<usize>>,
) -> bool {
    let seg = |k: usize| -> &[PatTok<T>] {
        segs.get(k)
            .and_then(|&(a, b)| toks.get(a..b))
            .unwrap_or_default()
    };
    let seg_at = |s: &[PatTok<T>], at: usize| -> bool {
        at + s.len() <= n
            && s.iter().enumerate().all(|(i, t)| match t {
                PatTok::Lit(c) => eq(at + i, *c),
                _ => true,
            })
    };
    let mut push = |p: usize| {
        if let Some(st) = starts.as_deref_mut() {
            st.push(p);
        }
    };
    if segs.len() <= 1 {
        let s = seg(0);
        if s.len() != n || !seg_at(s, 0) {
            return false;
        }
        push(0);
        return true;
    }
    let first = seg(0);
    let last = seg(segs.len() - 1);
    if first.len() + last.len() > n || !seg_at(first, 0) {
        return false;
    }
    let last_start = n - last.len();
    if !seg_at(last, last_start) {
        return false;
    }
    push(0);
    let mut at = first.len();
    for k in 1..segs.len() - 1 {
        let s = seg(k);
        let mut p = at;
        let mut found = None;
        while p + s.len() <= last_start {
            if seg_at(s, p) {
                found = Some(p);
                break;
            }
            p += 1;
        }
        let Some(p) = found else {
            return false;
        };
        push(p);
        at = p + s.len();
    }
    push(last_start);
    true
}

impl Glob {
    /// Compile `pattern` for `cmp`.
    pub fn new(pattern: &str, cmp: Comparator) -> Glob {
        match cmp {
            Comparator::UnicodeCasemap => {
                let toks = tokenize(pattern, |c, out| out.push(PatTok::Lit(cmp.fold(c))));
                let segs = segments(&toks);
                Glob {
                    toks: Tokens::Chars(toks),
                    segs,
                    cmp,
                }
            }
            _ => {
                let fold = cmp == Comparator::AsciiCasemap;
                let toks = tokenize(pattern, |c, out| {
                    let mut buf = [0u8; 4];
                    for &b in c.encode_utf8(&mut buf).as_bytes() {
                        out.push(PatTok::Lit(if fold { b.to_ascii_lowercase() } else { b }));
                    }
                });
                let segs = segments(&toks);
                Glob {
                    toks: Tokens::Octets(toks),
                    segs,
                    cmp,
                }
            }
        }
    }

    fn run(&self, value: &str, starts: Option<&mut Vec<usize>>, chars: &mut Vec<char>) -> bool {
        match &self.toks {
            Tokens::Octets(toks) => {
                let text = value.as_bytes();
                let fold = self.cmp == Comparator::AsciiCasemap;
                glob_run(
                    toks,
                    &self.segs,
                    text.len(),
                    |i, c| {
                        text.get(i)
                            .is_some_and(|&b| (if fold { b.to_ascii_lowercase() } else { b }) == c)
                    },
                    starts,
                )
            }
            Tokens::Chars(toks) => {
                chars.extend(value.chars());
                let cmp = self.cmp;
                let text: &[char] = chars;
                glob_run(
                    toks,
                    &self.segs,
                    text.len(),
                    |i, c| text.get(i).is_some_and(|&t| cmp.fold(t) == c),
                    starts,
                )
            }
        }
    }

    /// Whether `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.run(value, None, &mut Vec::new())
    }

    /// On a match, the captured values: the whole value first, then one per `*` and `?`
    /// in pattern order. With an octet comparator a capture may split a multi-byte
    /// character; such bytes become U+FFFD.
    pub fn captures(&self, value: &str) -> Option<Vec<String>> {
        let mut starts = Vec::with_capacity(self.segs.len());
        let mut chars = Vec::new();
        if !self.run(value, Some(&mut starts), &mut chars) {
            return None;
        }
        let slice = |a: usize, b: usize| -> String {
            match &self.toks {
                Tokens::Octets(_) => value
                    .as_bytes()
                    .get(a..b)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default(),
                Tokens::Chars(_) => chars
                    .get(a..b)
                    .map(|s| s.iter().collect())
                    .unwrap_or_default(),
            }
        };
        let is_one: Vec<bool> = match &self.toks {
            Tokens::Octets(t) => t.iter().map(|t| matches!(t, PatTok::One)).collect(),
            Tokens::Chars(t) => t.iter().map(|t| matches!(t, PatTok::One)).collect(),
        };
        let mut caps = vec![value.to_string()];
        let mut prev_end = 0;
        for (k, &(a, b)) in self.segs.iter().enumerate() {
            let s = starts.get(k).copied().unwrap_or(0);
            if k > 0 {
                caps.push(slice(prev_end, s));
            }
            for j in 0..b.saturating_sub(a) {
                if is_one.get(a + j).copied().unwrap_or(false) {
                    caps.push(slice(s + j, s + j + 1));
                }
            }
            prev_end = s + (b - a);
        }
        Some(caps)
    }
}

/// `:matches` with wildcard captures. On success returns the captured values: the
/// whole value first, then one per `*` and `?` in pattern order.
pub fn glob_match(value: &str, pattern: &str, cmp: Comparator) -> Option<Vec<String>> {
    Glob::new(pattern, cmp).captures(value)
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
            // RFC 5228 §2.7.1: with i;ascii-casemap (and i;octet) "?" is one octet.
            ("café", "caf?", None),
            ("café", "caf??", Some(&["café", "\u{fffd}", "\u{fffd}"])),
            ("café", "caf*", Some(&["café", "é"])),
            ("CAFÉ", "caf\\É", Some(&["CAFÉ"])),
        ];
        for (v, p, want) in cases {
            let got = glob_match(v, p, c);
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{v} {p}");
        }
    }

    #[test]
    fn glob_unicode_casemap_counts_characters() {
        let c = Comparator::UnicodeCasemap;
        assert_eq!(
            glob_match("CAFÉ", "caf?", c),
            Some(vec!["CAFÉ".to_string(), "É".to_string()])
        );
        assert_eq!(glob_match("café", "caf?", Comparator::Octet), None);
        assert!(Glob::new("a*b?c", Comparator::AsciiCasemap).is_match("AxxBzC"));
        assert!(!Glob::new("a*b?c", Comparator::Octet).is_match("AxxBzC"));
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
