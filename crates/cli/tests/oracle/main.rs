//! Differential test (issue 3 §3): generated scripts and messages evaluated by cursus-sieve
//! (through `cursus sieve test`'s library code) and by Pigeonhole's `sieve-test` from Debian's
//! dovecot-sieve; the action lists must agree after normalising both reports.
//!
//! Trusts `sieve-test` only as a second opinion: a disagreement is printed with the script,
//! message, envelope and both reports, shrunk to a small case, and fails the test; the ones
//! that are Pigeonhole's bugs are kept out of the generator and listed in ORACLE.md with the
//! RFC section that decides. Prints a SKIP line and passes when sieve-test is absent. As
//! root, sieve-test runs as nobody through setpriv(1) (it refuses to run as root).
//!
//! Environment: ORACLE_CASES (default 128), ORACLE_SEED (default fixed, so CI is
//! reproducible), ORACLE_KEEP_GOING=1 (report every disagreement, not just the first),
//! CURSUS_SIEVE_TEST (path of sieve-test).
//!
//! Modules: `grammar` (what is generated), `render` (script and message text), `verdict`
//! (what a report means), `pigeonhole` (running sieve-test).

mod grammar;
mod pigeonhole;
mod render;
mod verdict;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};

use grammar::{Case, case_strategy};
use pigeonhole::Pigeonhole;
use render::{render_message, render_script};
use verdict::{SMALL, Verdict, delivery, ours};

struct Disagreement {
    script: String,
    message: String,
    from: &'static str,
    to: &'static str,
    ours: String,
    theirs: String,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "--- envelope: from {} to {}", self.from, self.to)?;
        writeln!(f, "--- script:\n{}", self.script)?;
        writeln!(f, "--- message:\n{}", self.message)?;
        writeln!(f, "--- cursus sieve test:{}", self.ours)?;
        writeln!(f, "--- sieve-test:{}", self.theirs)
    }
}

/// How one case compared.
enum Comparison {
    /// Same report, line for line.
    Identical,
    /// Same delivery, reported differently (e.g. a `:copy` store into INBOX beside the
    /// implicit keep, which Cursus merges into one store).
    SameDelivery,
    Disagreement(Box<Disagreement>),
}

fn compare(ph: &Pigeonhole, case: &Case) -> Comparison {
    let script = render_script(&case.script);
    let message = render_message(&case.message);
    let a = ours(&script, &message, case.from, case.to);
    let b = ph.run(&script, &message, case.from, case.to);
    if a.verdict != b.verdict {
        Comparison::Disagreement(Box::new(Disagreement {
            script,
            message: String::from_utf8_lossy(&message).replace('\r', ""),
            from: case.from,
            to: case.to,
            ours: a.text,
            theirs: b.text,
        }))
    } else if a.lines == b.lines {
        Comparison::Identical
    } else {
        Comparison::SameDelivery
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn cursus_and_pigeonhole_agree_on_generated_cases() {
    let ph = match Pigeonhole::find() {
        Ok(p) => p,
        Err(why) => {
            println!("SKIP oracle: {why}");
            return;
        }
    };
    let cases = env_u64("ORACLE_CASES", 128);
    let seed = env_u64("ORACLE_SEED", 0x5eed_c0de);
    let keep_going = std::env::var_os("ORACLE_KEEP_GOING").is_some();
    let mut seed_bytes = [0u8; 32];
    for chunk in seed_bytes.chunks_mut(8) {
        chunk.copy_from_slice(&seed.to_le_bytes());
    }
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = case_strategy();
    let (mut identical, mut same_delivery) = (0u64, 0u64);
    let mut failures = Vec::new();
    for _ in 0..cases {
        let mut tree = match strategy.new_tree(&mut runner) {
            Ok(t) => t,
            Err(e) => panic!("generating a case: {e}"),
        };
        let first = match compare(&ph, &tree.current()) {
            Comparison::Identical => {
                identical += 1;
                continue;
            }
            Comparison::SameDelivery => {
                same_delivery += 1;
                continue;
            }
            Comparison::Disagreement(d) => d,
        };
        // Shrink to a small disagreement, as proptest's runner does (bounded: each step
        // runs sieve-test once).
        let mut smallest = first;
        let mut steps = 0;
        if tree.simplify() {
            while steps < 300 {
                steps += 1;
                match compare(&ph, &tree.current()) {
                    Comparison::Disagreement(d) => {
                        smallest = d;
                        if !tree.simplify() {
                            break;
                        }
                    }
                    _ if !tree.complicate() => break,
                    _ => {}
                }
            }
        }
        failures.push(smallest);
        if !keep_going {
            break;
        }
    }
    let agreed = identical + same_delivery;
    println!(
        "oracle: {} cases, {agreed} agreed ({identical} identical reports, {same_delivery} the \
         same delivery reported differently), {} disagreed (seed {seed:#x})",
        agreed + failures.len() as u64,
        failures.len()
    );
    for d in &failures {
        println!("=== disagreement\n{d}");
    }
    assert!(
        failures.is_empty(),
        "cursus-sieve and sieve-test disagree; see above (ORACLE.md lists the known ones)"
    );
}

// ---------------------------------------------------------------------------------------
// Cases the oracle found, pinned. Where Pigeonhole is wrong, Cursus must keep following
// the RFC (ORACLE.md names the section); these need no sieve-test.

#[test]
fn pigeonhole_bugs_cursus_follows_the_rfc() {
    let group = "From: alice@example.org\nTo: undisclosed-recipients:;\nSubject: x\n\nbody\n";
    let table: &[(&str, &str, &str, Verdict)] = &[
        (
            "a fileinto after the same fileinto :copy cancels the implicit keep",
            "require [\"fileinto\", \"copy\"];\nfileinto :copy \"Junk\";\nfileinto \"Junk\";\n",
            SMALL,
            delivery(&["Junk"], &[]),
        ),
        (
            "a redirect after the same redirect :copy cancels the implicit keep",
            "require \"copy\";\nredirect :copy \"x@example.com\";\nredirect \"x@example.com\";\n",
            SMALL,
            delivery(&[], &["<x@example.com>"]),
        ),
        (
            "anyof evaluates left to right and keeps the match variables of the test that won",
            "require [\"fileinto\", \"variables\"];\n\
             if anyof(header :matches \"from\" \"?*\", true) { fileinto \"A-${1}-${2}\"; }\n",
            SMALL,
            delivery(&["A-a-lice@example.org"], &[]),
        ),
        (
            "size counts CRLF line ends (61 bytes with LF, 66 with CRLF)",
            "require \"fileinto\";\nif size :over 65 { fileinto \"over-65\"; }\n\
             if size :over 66 { fileinto \"over-66\"; }\n",
            SMALL,
            delivery(&["over-65"], &[]),
        ),
        (
            "the address test never acts on a group name",
            "require \"fileinto\";\nif address :all :matches \"to\" \"*\" { fileinto \"Junk\"; }\n",
            group,
            delivery(&["INBOX"], &[]),
        ),
    ];
    for (what, script, message, expected) in table {
        let got = ours(
            script,
            message.as_bytes(),
            "alice@example.org",
            "bob@example.net",
        );
        assert_eq!(&got.verdict, expected, "{what}:\n{}", got.text);
    }
}

#[test]
fn question_mark_matches_one_octet_under_the_default_comparator() {
    // RFC 5228 §2.7.1: i;octet and i;ascii-casemap define a character as one octet, so
    // "?" matches exactly one octet; "é" is two in UTF-8.
    let message = "From: alice@example.org\nTo: bob@example.net\n\
                   Subject: =?UTF-8?Q?caf=C3=A9?=\n\nbody\n";
    let script = "require \"fileinto\";\n\
                  if header :matches \"subject\" \"caf?\" { fileinto \"one\"; }\n\
                  if header :matches \"subject\" \"caf??\" { fileinto \"two\"; }\n";
    let got = ours(
        script,
        message.as_bytes(),
        "alice@example.org",
        "bob@example.net",
    );
    assert_eq!(got.verdict, delivery(&["two"], &[]), "{}", got.text);
}
