//! Router conditions: lists of patterns a domain, local part or sender must match.
//!
//! A pattern is an exact value (`example.org`), a wildcard (`*.example.org`: `*` stands for
//! any run of characters, anywhere, any number of times), or a regular expression after
//! `re:` (the regex crate's syntax). Matching ignores case: values, exact patterns and
//! wildcards are folded to lowercase, expressions are compiled case-insensitive. The null
//! sender matches `<>`.
//!
//! Trusts the configuration for the patterns; matches untrusted values in linear time (the
//! regex crate has no backtracking). Fails at configuration time with the regex error.
//!
//! Attacks stopped: an unanchored expression matching more than its author read it as
//! (`re:example\.org` accepting `example.org.attacker.net` as a local domain): every
//! regular expression is anchored at both ends, so it must match the whole value.

use regex::Regex;

/// One pattern of a condition list.
#[derive(Debug, Clone)]
pub enum Pattern {
    Exact(String),
    Wildcard(String),
    Regex(Regex),
}

impl Pattern {
    /// Reads `re:...`, a value with `*`, or an exact value.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if let Some(re) = text.strip_prefix("re:") {
            return Regex::new(&format!("^(?i:{re})$"))
                .map(Pattern::Regex)
                .map_err(|e| {
                    // The regex crate draws a picture over several lines; keep the last.
                    let text = e.to_string();
                    let last = text.lines().last().unwrap_or("").trim();
                    let last = last.strip_prefix("error: ").unwrap_or(last);
                    format!("bad regular expression {re:?}: {last}")
                });
        }
        let folded = text.to_lowercase();
        if folded.contains('*') {
            Ok(Pattern::Wildcard(folded))
        } else {
            Ok(Pattern::Exact(folded))
        }
    }

    /// Whether `value` (already folded to lowercase) matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == value || (e == "<>" && value.is_empty()),
            Pattern::Wildcard(w) => glob(w, value),
            Pattern::Regex(r) => r.is_match(value),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A list of patterns; `None` in [`Conditions`] means "no condition".
#[derive(Debug, Clone)]
pub struct PatternList {
    /// The patterns as written, for traces.
    pub written: Vec<String>,
    patterns: Vec<Pattern>,
}

impl PatternList {
    /// Parses every pattern; the errors carry the index of the bad one.
    pub fn parse(written: &[String]) -> Result<PatternList, Vec<(usize, String)>> {
        let mut patterns = Vec::new();
        let mut errors = Vec::new();
        for (i, w) in written.iter().enumerate() {
            match Pattern::parse(w) {
                Ok(p) => patterns.push(p),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() {
            Ok(PatternList {
                written: written.to_vec(),
                patterns,
            })
        } else {
            Err(errors)
        }
    }

    /// Whether any pattern matches `value` (folded to lowercase here).
    pub fn matches(&self, value: &str) -> bool {
        let value = value.to_lowercase();
        self.patterns.iter().any(|p| p.matches(&value))
    }
}

/// The conditions of one router; all given conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub domains: Option<PatternList>,
    pub local_parts: Option<PatternList>,
    pub senders: Option<PatternList>,
}

impl Conditions {
    /// `Ok(())` when every condition holds, else why not (for traces).
    pub fn check(&self, local: &str, domain: &str, sender: &str) -> Result<(), String> {
        let rows = [
            ("domain", domain, &self.domains),
            ("local part", local, &self.local_parts),
            ("sender", sender, &self.senders),
        ];
        for (what, value, list) in rows {
            if let Some(list) = list
                && !list.matches(value)
            {
                let shown = if value.is_empty() { "<>" } else { value };
                return Err(format!(
                    "{what} {shown} is not in [{}]",
                    list.written.join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_wildcard_and_anchored_regex() {
        let rows: &[(&str, &str, bool)] = &[
            ("example.org", "example.org", true),
            ("Example.ORG", "example.org", true),
            ("example.org", "www.example.org", false),
            ("*.example.org", "www.example.org", true),
            ("*.example.org", "a.b.example.org", true),
            ("*.example.org", "example.org", false),
            ("*.example.org", "badexample.org", false),
            ("*", "anything", true),
            ("list-*", "list-rust", true),
            ("list-*", "lis", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("re:example\\.org", "example.org", true),
            ("re:example\\.org", "example.org.attacker.net", false),
            ("re:example\\.org", "evil-example.org", false),
            ("re:.*\\.example\\.(org|net)", "mx.example.net", true),
            ("re:[a-z]+\\.[0-9]+", "joe.42", true),
            ("<>", "", true),
            ("<>", "joe@example.org", false),
        ];
        for (pattern, value, want) in rows {
            let p = Pattern::parse(pattern).expect("valid pattern");
            assert_eq!(p.matches(value), *want, "{pattern} ~ {value}");
        }
        assert!(Pattern::parse("re:(unclosed").is_err());
    }

    #[test]
    fn conditions_explain_what_did_not_hold() {
        let list = |v: &[&str]| {
            PatternList::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).ok()
        };
        let c = Conditions {
            domains: list(&["example.org", "*.example.org"]),
            local_parts: list(&["re:[a-z]+"]),
            senders: list(&["*@trusted.example", "<>"]),
        };
        assert_eq!(
            c.check("joe", "Mail.Example.org", "x@trusted.example"),
            Ok(())
        );
        assert_eq!(c.check("joe", "example.org", ""), Ok(()));
        assert_eq!(
            c.check("joe", "example.net", ""),
            Err("domain example.net is not in [example.org, *.example.org]".into())
        );
        assert_eq!(
            c.check("joe42", "example.org", ""),
            Err("local part joe42 is not in [re:[a-z]+]".into())
        );
        assert_eq!(
            c.check("joe", "example.org", "x@else.example"),
            Err("sender x@else.example is not in [*@trusted.example, <>]".into())
        );
        let errs = PatternList::parse(&["ok".into(), "re:(".into()]).expect_err("bad regex");
        assert_eq!(errs[0].0, 1);
    }
}
