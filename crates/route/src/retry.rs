//! Retry rules: when a temporary failure is tried again, and when the sender is told it
//! will not be delivered. `[[retry]]` tables in cursus.toml, tried in order; the first
//! whose address pattern, error classes and senders all match decides. Without a match,
//! the built-in default applies.
//!
//! ```toml
//! [[retry]]
//! pattern = "*.example.org"          # a domain; `local@domain` patterns match addresses
//! errors = ["rcpt", "data"]          # error classes (default: any)
//! senders = ["*@lists.example.org"]  # optional
//! schedule = "F,2h,15m; G,16h,1h,1.5; F,4d,6h"
//! lifetime = "4d"                    # bounce after this (default: the last cutoff)
//! ```
//!
//! A schedule is a list of segments, as Exim writes them: `F,cutoff,interval` (fixed) and
//! `G,cutoff,initial,factor` (each interval `factor` times the last). Cutoffs are counted
//! from the message's arrival, which is also its first attempt; a failure before a
//! segment's cutoff (and after the previous one's) is retried after that segment's
//! interval. After the last cutoff the last interval repeats until the lifetime ends; the
//! last attempt is at the lifetime, and a failure there bounces.
//!
//! Pure arithmetic on seconds since arrival: no clock, no I/O, so schedules are tested
//! exactly and `cursus retry test` prints what the daemon will do.
//!
//! Trusts the configuration for the rules (validated here: increasing cutoffs, positive
//! intervals, factors from 1 to 10); matches untrusted addresses in linear time.
//! Attack stopped: a rule that retries in a tight loop (interval 0, a factor below 1) or
//! for ever would let one deferring peer keep the queue busy; both are refused at load.

use std::fmt;

use cursus_mail::diagnostic::{line_col, suggest, unknown_field};
use serde::Deserialize;
use toml::Spanned;

use crate::config::ConfigError;
use crate::pattern::{Pattern, PatternList};

/// The built-in schedule: every 5 minutes for the first half hour, then growing by half
/// from 15 minutes for the first day, then every 3 hours.
pub const DEFAULT_SCHEDULE: &str = "F,30m,5m; G,1d,15m,1.5; F,5d,3h";

/// The default lifetime: 5 days, as Postfix's maximal_queue_lifetime.
pub const DEFAULT_LIFETIME: u64 = 5 * 86_400;

/// Most attempt times one schedule may produce (a sanity bound for printing and tests).
const MAX_ATTEMPTS: usize = 100_000;

/// What went wrong, as far as retrying cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The connection was refused (nothing listens).
    Refused,
    /// The connection timed out (or the host is unreachable).
    Timeout,
    /// A temporary DNS failure looking up MX or address records.
    Dns,
    /// A 4xx reply to the greeting, EHLO or HELO.
    Greeting,
    /// A 4xx reply to MAIL FROM.
    Mail,
    /// A 4xx reply to RCPT TO.
    Rcpt,
    /// A 4xx reply after the message data (or the connection lost during it).
    Data,
    /// The TLS handshake failed or the certificate was refused where TLS is required.
    Tls,
    /// Local delivery: the mailbox is over quota (4.2.2).
    Quota,
    /// Local delivery: the home directory or mailbox is unavailable.
    Home,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Every class with its configuration name and a description.
    pub const ALL: &'static [(ErrorClass, &'static str, &'static str)] = &[
        (ErrorClass::Refused, "refused", "connection refused"),
        (ErrorClass::Timeout, "timeout", "connection timed out"),
        (ErrorClass::Dns, "dns", "temporary DNS failure"),
        (
            ErrorClass::Greeting,
            "greeting",
            "4xx at the greeting or EHLO",
        ),
        (ErrorClass::Mail, "mail", "4xx at MAIL FROM"),
        (ErrorClass::Rcpt, "rcpt", "4xx at RCPT TO"),
        (ErrorClass::Data, "data", "4xx after the message data"),
        (ErrorClass::Tls, "tls", "TLS failure"),
        (ErrorClass::Quota, "quota", "local mailbox over quota"),
        (
            ErrorClass::Home,
            "home",
            "local home or mailbox unavailable",
        ),
        (ErrorClass::Other, "other", "any other temporary failure"),
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or("other", |(_, n, _)| n)
    }

    /// What the class means, for people.
    pub fn describe(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or("", |(_, _, d)| d)
    }

    /// Reads a configuration name; the error suggests the nearest one.
    pub fn parse(word: &str) -> Result<ErrorClass, String> {
        let word = word.to_ascii_lowercase();
        if let Some((c, _, _)) = Self::ALL.iter().find(|(_, n, _)| *n == word) {
            return Ok(*c);
        }
        let names: Vec<&str> = Self::ALL.iter().map(|(_, n, _)| *n).collect();
        Err(match suggest(&word, &names) {
            Some(s) => format!("unknown error class `{word}`; did you mean `{s}`?"),
            None => format!("unknown error class `{word}`; known: {}", names.join(", ")),
        })
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One segment of a schedule; times in seconds since arrival.
#[derive(Clone, Debug, PartialEq)]
pub enum Segment {
    Fixed {
        cutoff: u64,
        interval: u64,
    },
    Geometric {
        cutoff: u64,
        initial: u64,
        factor: f64,
    },
}

impl Segment {
    fn cutoff(&self) -> u64 {
        match self {
            Segment::Fixed { cutoff, .. } | Segment::Geometric { cutoff, .. } => *cutoff,
        }
    }
}

/// A parsed schedule: segments with increasing cutoffs.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub written: String,
    pub segments: Vec<Segment>,
}

impl Schedule {
    /// Reads `F,2h,15m; G,16h,1h,1.5; ...`.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let mut segments = Vec::new();
        let mut last_cutoff = 0;
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split(',').map(str::trim).collect();
            let segment = match fields.as_slice() {
                [kind, cutoff, interval] if kind.eq_ignore_ascii_case("F") => {
                    let interval = duration(interval)?;
                    if interval == 0 {
                        return Err(format!("`{part}`: the interval must be at least 1s"));
                    }
                    Segment::Fixed {
                        cutoff: duration(cutoff)?,
                        interval,
                    }
                }
                [kind, cutoff, initial, factor] if kind.eq_ignore_ascii_case("G") => {
                    let initial = duration(initial)?;
                    if initial == 0 {
                        return Err(format!("`{part}`: the first interval must be at least 1s"));
                    }
                    let factor: f64 = factor
                        .parse()
                        .map_err(|_| format!("`{part}`: `{factor}` is not a number"))?;
                    if !(1.0..=10.0).contains(&factor) {
                        return Err(format!("`{part}`: the factor must be from 1 to 10"));
                    }
                    Segment::Geometric {
                        cutoff: duration(cutoff)?,
                        initial,
                        factor,
                    }
                }
                _ => {
                    return Err(format!(
                        "`{part}`: a segment is `F,cutoff,interval` or `G,cutoff,first,factor`"
                    ));
                }
            };
            if segment.cutoff() <= last_cutoff {
                return Err(format!(
                    "`{part}`: cutoffs must increase (each is counted from arrival)"
                ));
            }
            last_cutoff = segment.cutoff();
            segments.push(segment);
        }
        if segments.is_empty() {
            return Err("a schedule needs at least one segment".into());
        }
        Ok(Schedule {
            written: text.trim().to_string(),
            segments,
        })
    }

    /// The last cutoff: the default lifetime of a rule.
    pub fn last_cutoff(&self) -> u64 {
        self.segments.last().map_or(0, Segment::cutoff)
    }

    /// The attempt times after the first (seconds since arrival), in order, up to and
    /// including the first at or past `lifetime`, which is capped to `lifetime`.
    pub fn times(&self, lifetime: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut t: u64 = 0;
        let mut last_interval = 1;
        let mut index = 0;
        let mut geometric: Option<f64> = None;
        while t < lifetime && out.len() < MAX_ATTEMPTS {
            // The segment that applies at t: the first whose cutoff is after t.
            while index < self.segments.len() && self.segments[index].cutoff() <= t {
                index += 1;
                geometric = None;
            }
            let interval = match self.segments.get(index) {
                Some(Segment::Fixed { interval, .. }) => *interval,
                Some(Segment::Geometric {
                    initial, factor, ..
                }) => {
                    let next = match geometric {
                        None => *initial as f64,
                        Some(previous) => previous * factor,
                    };
                    geometric = Some(next);
                    next.min(u64::MAX as f64 / 2.0) as u64
                }
                None => last_interval,
            };
            last_interval = interval.max(1);
            t = t.saturating_add(last_interval).min(lifetime);
            out.push(t);
        }
        out
    }

    /// The next attempt after a failure `elapsed` seconds after arrival, or `None` when
    /// the lifetime is over (the recipient bounces).
    pub fn next_after(&self, elapsed: u64, lifetime: u64) -> Option<u64> {
        if elapsed >= lifetime {
            return None;
        }
        self.times(lifetime).into_iter().find(|&t| t > elapsed)
    }
}

/// `30s`, `15m`, `2h`, `4d`, `1w`, and sums like `1h30m`; a bare number is seconds.
pub fn duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty duration".into());
    }
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => {
                return Err(format!(
                    "`{text}` is not a duration (a number with s, m, h, d or w: 15m, 2h, 4d)"
                ));
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration (a number before each unit)"))?;
        number.clear();
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !number.is_empty() {
        return Err(format!(
            "`{text}`: a unit (s, m, h, d, w) after the last number"
        ));
    }
    Ok(total)
}

/// Prints seconds the way schedules are written: `1d2h`, `15m`, `0s`.
pub fn format_duration(mut secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&format!("{}{name}", secs / unit));
            secs %= unit;
        }
    }
    out
}

/// One rule.
#[derive(Clone, Debug)]
pub struct RetryRule {
    /// Where it was written (`file:line`), or `built-in default`.
    pub origin: String,
    pub pattern_text: String,
    pattern: Pattern,
    /// `None`: any class.
    pub errors: Option<Vec<ErrorClass>>,
    pub senders: Option<PatternList>,
    pub schedule: Schedule,
    /// Seconds after arrival when the recipient bounces.
    pub lifetime: u64,
}

impl RetryRule {
    /// Whether the rule applies to `address` (or a bare domain) failing with `class` for
    /// a message from `sender` (empty: the null sender).
    pub fn matches(&self, address: &str, class: ErrorClass, sender: &str) -> bool {
        let address = address.to_lowercase();
        let value = if self.pattern_text.contains('@') || !address.contains('@') {
            address.as_str()
        } else {
            address
                .rsplit_once('@')
                .map_or(address.as_str(), |(_, d)| d)
        };
        let pattern_ok = self.pattern_text == "*" || self.pattern.matches(value);
        let class_ok = self.errors.as_ref().is_none_or(|e| e.contains(&class));
        let sender_ok = self.senders.as_ref().is_none_or(|s| s.matches(sender));
        pattern_ok && class_ok && sender_ok
    }

    /// The next attempt after a failure `elapsed` seconds after arrival; `None`: bounce.
    pub fn next_after(&self, elapsed: u64) -> Option<u64> {
        self.schedule.next_after(elapsed, self.lifetime)
    }
}

/// The rules of one configuration, in order, and the default behind them.
#[derive(Clone, Debug)]
pub struct RetryRules {
    pub rules: Vec<RetryRule>,
    pub default: RetryRule,
}

/// The keys of a `[[retry]]` table.
const RULE_KEYS: &[&str] = &["pattern", "errors", "senders", "schedule", "lifetime"];

#[derive(Debug, Deserialize)]
struct RawFile {
    #[serde(default)]
    retry: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pattern: Option<Spanned<String>>,
    errors: Option<Spanned<Vec<String>>>,
    senders: Option<Spanned<Vec<String>>>,
    schedule: Spanned<String>,
    lifetime: Option<Spanned<String>>,
}

impl RetryRules {
    /// No rules: the built-in default for everything, bouncing after `lifetime` seconds.
    pub fn defaults(lifetime: u64) -> RetryRules {
        RetryRules {
            rules: Vec::new(),
            default: default_rule(lifetime),
        }
    }

    /// Reads the `[[retry]]` tables of cursus.toml (other keys are not looked at here);
    /// `lifetime` is the default rule's (the daemon's `queue_lifetime_days`).
    pub fn parse(text: &str, source: &str, lifetime: u64) -> Result<RetryRules, Vec<ConfigError>> {
        let at = |offset: usize, message: String| ConfigError {
            source: source.to_string(),
            line: Some(line_col(text, offset)),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let mut message = e.message().trim().to_string();
            if let Some(word) = unknown_field(&message) {
                // serde lists the keys RawRule knows after "expected" (so the list cannot
                // drift from the struct; cursusd's parameter tests read it); ours otherwise.
                let listed: Vec<&str> = message
                    .split_once("expected")
                    .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
                    .unwrap_or_default();
                let known: &[&str] = if listed.is_empty() {
                    RULE_KEYS
                } else {
                    &listed
                };
                message = match suggest(&word, known) {
                    Some(s) => format!("unknown key `{word}`; did you mean `{s}`?"),
                    None => format!("unknown key `{word}`; known: {}", known.join(", ")),
                };
            }
            vec![at(offset, format!("[[retry]]: {message}"))]
        })?;
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        for table in raw.retry {
            let start = table.span().start;
            let raw = table.into_inner();
            let pattern_text = raw
                .pattern
                .as_ref()
                .map_or("*".to_string(), |p| p.get_ref().to_lowercase());
            let pattern = match Pattern::parse(&pattern_text) {
                Ok(p) => p,
                Err(e) => {
                    let offset = raw.pattern.as_ref().map_or(start, |p| p.span().start);
                    errors.push(at(offset, e));
                    continue;
                }
            };
            let classes = match &raw.errors {
                None => None,
                Some(list) => {
                    let mut out = Vec::new();
                    for word in list.get_ref() {
                        if word == "*" || word == "any" {
                            out.clear();
                            break;
                        }
                        match ErrorClass::parse(word) {
                            Ok(c) => out.push(c),
                            Err(e) => errors.push(at(list.span().start, e)),
                        }
                    }
                    if out.is_empty() { None } else { Some(out) }
                }
            };
            let senders = match &raw.senders {
                None => None,
                Some(list) => match PatternList::parse(list.get_ref()) {
                    Ok(p) => Some(p),
                    Err(bad) => {
                        for (_, e) in bad {
                            errors.push(at(list.span().start, e));
                        }
                        None
                    }
                },
            };
            let schedule = match Schedule::parse(raw.schedule.get_ref()) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(at(raw.schedule.span().start, format!("schedule: {e}")));
                    continue;
                }
            };
            let lifetime = match &raw.lifetime {
                None => schedule.last_cutoff(),
                Some(l) => match duration(l.get_ref()) {
                    Ok(0) => {
                        errors.push(at(l.span().start, "lifetime must be more than 0".into()));
                        continue;
                    }
                    Ok(v) => v,
                    Err(e) => {
                        errors.push(at(l.span().start, format!("lifetime: {e}")));
                        continue;
                    }
                },
            };
            rules.push(RetryRule {
                origin: format!("{source}:{}", line_col(text, start).0),
                pattern_text,
                pattern,
                errors: classes,
                senders,
                schedule,
                lifetime,
            });
        }
        if errors.is_empty() {
            Ok(RetryRules {
                rules,
                default: default_rule(lifetime),
            })
        } else {
            Err(errors)
        }
    }

    /// The rule that decides for `address` failing with `class` for a message from
    /// `sender`: the first configured rule that matches, else the default.
    pub fn find(&self, address: &str, class: ErrorClass, sender: &str) -> &RetryRule {
        self.rules
            .iter()
            .find(|r| r.matches(address, class, sender))
            .unwrap_or(&self.default)
    }
}

fn default_rule(lifetime: u64) -> RetryRule {
    RetryRule {
        origin: "built-in default".into(),
        pattern_text: "*".into(),
        pattern: Pattern::Wildcard("*".into()),
        errors: None,
        senders: None,
        schedule: Schedule::parse(DEFAULT_SCHEDULE).unwrap_or_else(|_| Schedule {
            written: "F,5d,1h".into(),
            segments: vec![Segment::Fixed {
                cutoff: DEFAULT_LIFETIME,
                interval: 3600,
            }],
        }),
        lifetime: lifetime.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print() {
        assert_eq!(duration("15m"), Ok(900));
        assert_eq!(duration("1h30m"), Ok(5400));
        assert_eq!(duration("4d"), Ok(4 * 86_400));
        assert_eq!(duration("90"), Ok(90));
        assert!(duration("15x").is_err());
        assert!(duration("h").is_err());
        assert!(duration("15m3").is_err());
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn fixed_then_geometric_then_fixed() {
        let s = Schedule::parse("F,1h,15m; G,16h,1h,2; F,1d,6h").expect("valid");
        let t = s.times(86_400);
        let m = |x: u64| x * 60;
        // Every 15 minutes for the first hour.
        assert_eq!(&t[..4], &[m(15), m(30), m(45), m(60)]);
        // Then 1h, 2h, 4h, 8h: 2h, 4h, 8h, 16h after arrival.
        assert_eq!(&t[4..8], &[m(120), m(240), m(480), m(960)]);
        // Then every 6 hours: 22h, then capped at the lifetime (24h).
        assert_eq!(&t[8..], &[m(1320), m(1440)]);
        assert_eq!(s.next_after(m(50), 86_400), Some(m(60)));
        assert_eq!(s.next_after(m(60), 86_400), Some(m(120)));
        assert_eq!(s.next_after(86_400, 86_400), None);
    }

    #[test]
    fn after_the_last_cutoff_the_last_interval_repeats_until_the_lifetime() {
        let s = Schedule::parse("F,1h,30m").expect("valid");
        assert_eq!(
            s.times(3 * 3600),
            vec![1800, 3600, 5400, 7200, 9000, 10_800]
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "at least one segment"),
            ("F,1h,0m", "at least 1s"),
            ("G,1h,10m,0.5", "factor"),
            ("F,2h,10m; F,1h,5m", "increase"),
            ("X,1h,5m", "a segment is"),
            ("F,1h", "a segment is"),
            ("F,1q,5m", "not a duration"),
        ] {
            let e = Schedule::parse(bad).expect_err("an error");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rules_match_in_order_on_domain_address_class_and_sender() {
        let text = r#"
hostname = "mx.example"
[[retry]]
pattern = "*@slow.example"
errors = ["rcpt"]
schedule = "F,1d,1h"

[[retry]]
pattern = "*.example.org"
senders = ["*@lists.example"]
schedule = "F,2h,10m"
lifetime = "3h"

[[retry]]
errors = ["quota"]
schedule = "F,7d,12h"
"#;
        let rules = RetryRules::parse(text, "cursus.toml", DEFAULT_LIFETIME).expect("valid");
        assert_eq!(rules.rules.len(), 3);
        let r = rules.find("joe@slow.example", ErrorClass::Rcpt, "");
        assert_eq!(r.origin, "cursus.toml:3");
        // Another class: not the first rule.
        let r = rules.find("joe@slow.example", ErrorClass::Data, "");
        assert_eq!(r.origin, "built-in default");
        let r = rules.find("ann@mx.example.org", ErrorClass::Refused, "a@lists.example");
        assert_eq!(r.lifetime, 3 * 3600);
        let r = rules.find("ann@mx.example.org", ErrorClass::Refused, "a@other.example");
        assert_eq!(r.origin, "built-in default");
        let r = rules.find("bob@localhost", ErrorClass::Quota, "");
        assert_eq!(r.lifetime, 7 * 86_400);
        // A bare domain matches domain patterns.
        assert_eq!(
            rules
                .find("mx.example.org", ErrorClass::Rcpt, "x@lists.example")
                .origin,
            "cursus.toml:8"
        );
    }

    #[test]
    fn config_errors_have_lines_and_suggestions() {
        let text = "[[retry]]\nerrors = [\"rcp\"]\nschedule = \"F,1h,5m\"\n\n[[retry]]\nschedule = \"F,1h,0s\"\n";
        let errors = RetryRules::parse(text, "c.toml", DEFAULT_LIFETIME).expect_err("an error");
        let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            all.iter().any(|e| e.contains("did you mean `rcpt`")),
            "{all:?}"
        );
        assert!(all.iter().any(|e| e.starts_with("c.toml:6:")), "{all:?}");
        let text = "[[retry]]\nschedule = \"F,1h,5m\"\nlifetme = \"1d\"\n";
        let errors = RetryRules::parse(text, "c.toml", DEFAULT_LIFETIME).expect_err("an error");
        assert!(
            errors[0].to_string().contains("did you mean `lifetime`"),
            "{errors:?}"
        );
        let errors = RetryRules::parse(
            "[[retry]]\nerrors = [\"rcpt\"]\nschedule = \"F,1h,0s\"\n",
            "c.toml",
            DEFAULT_LIFETIME,
        )
        .expect_err("an error");
        assert!(errors[0].to_string().starts_with("c.toml:3:"), "{errors:?}");
    }

    #[test]
    fn the_default_schedule_is_valid_and_ends_at_the_lifetime() {
        let rules = RetryRules::defaults(DEFAULT_LIFETIME);
        let times = rules.default.schedule.times(DEFAULT_LIFETIME);
        assert_eq!(times.first(), Some(&300));
        assert_eq!(times.last(), Some(&DEFAULT_LIFETIME));
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert!(times.len() < 80, "{}", times.len());
    }
}
