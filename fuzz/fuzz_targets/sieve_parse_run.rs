//! Fuzz target: compile and evaluate arbitrary bytes as a Sieve script and message.
//!
//! Trusts nothing: the input is split by cursus_sieve::parse_and_run_for_fuzz (script up to
//! the first NUL, the message after it) and run under tight limits. A panic, a hang
//! (libFuzzer's -timeout) or unbounded memory (-rss_limit_mb) is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cursus_sieve::parse_and_run_for_fuzz(data);
});
