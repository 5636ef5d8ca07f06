//! What a sieve-test style report means for the message, and Cursus's report of a case.
//!
//! Trusts the report layout of sieve-test(1), which `cursus sieve test` copies; a report it
//! cannot read is an empty delivery, which then disagrees with the other side.

use std::collections::BTreeSet;

use cursus_cli::cli::EnvelopeArgs;
use cursus_cli::sieve_test::{self, TrialStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivery {
        stores: BTreeSet<String>,
        redirects: BTreeSet<String>,
    },
    CompileError,
    RuntimeError,
}

/// A verdict and the report's action lines as printed, for the stricter count.
pub(crate) fn parse_report(text: &str) -> (Verdict, Vec<String>) {
    let mut stores = BTreeSet::new();
    let mut redirects = BTreeSet::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("* ") || t.starts_with("+ ") || t == "Implicit keep:" {
            lines.push(t.to_string());
        }
        if let Some(mailbox) = t.strip_prefix("* store message in folder: ") {
            if mailbox.eq_ignore_ascii_case("INBOX") {
                stores.insert("INBOX".to_string());
            } else {
                stores.insert(comparable_mailbox(mailbox));
            }
        } else if let Some(address) = t.strip_prefix("* redirect message to: ") {
            redirects.insert(address.to_string());
        }
    }
    (Verdict::Delivery { stores, redirects }, lines)
}

/// A mailbox name as both reports can be compared: sieve-test prints at most 128 bytes
/// (125 and "..."), and Pigeonhole's `set :upper`/`:lower` change only ASCII letters
/// while Cursus changes all letters (ORACLE.md), so non-ASCII letters compare in lower
/// case. ASCII case still counts.
pub(crate) fn comparable_mailbox(name: &str) -> String {
    let mut name = name.to_string();
    if name.len() > 128 {
        let mut cut = 125;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        name.push_str("...");
    }
    name.chars()
        .flat_map(|c| {
            let lower: Vec<char> = if c.is_ascii() {
                vec![c]
            } else {
                c.to_lowercase().collect()
            };
            lower
        })
        .collect()
}

pub(crate) struct Report {
    pub(crate) verdict: Verdict,
    pub(crate) lines: Vec<String>,
    pub(crate) text: String,
}

pub(crate) fn ours(script: &str, message: &[u8], from: &str, to: &str) -> Report {
    let args = EnvelopeArgs {
        from: Some(from.into()),
        to: Some(to.into()),
        ..EnvelopeArgs::default()
    };
    let out = sieve_test::run(
        "case.sieve",
        script.as_bytes(),
        message,
        &args,
        &cursus_sieve::Config::default(),
    );
    let (verdict, lines) = match out.status {
        TrialStatus::Success => parse_report(&out.stdout),
        TrialStatus::CompileFailed => (Verdict::CompileError, Vec::new()),
        TrialStatus::RuntimeFailed => (Verdict::RuntimeError, Vec::new()),
    };
    Report {
        verdict,
        lines,
        text: format!("{}{}", out.stdout, out.stderr),
    }
}

pub(crate) fn delivery(stores: &[&str], redirects: &[&str]) -> Verdict {
    Verdict::Delivery {
        stores: stores.iter().map(|s| s.to_string()).collect(),
        redirects: redirects.iter().map(|s| s.to_string()).collect(),
    }
}

pub(crate) const SMALL: &str = "From: alice@example.org\nTo: bob@example.net\nSubject: x\n\nbody\n";
