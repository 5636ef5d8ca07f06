//! Fuzz target: the text formats an administrator or a user writes and cursusd reads:
//! /etc/aliases (and `:include:` files), a user's .forward, and bounce templates.
//!
//! Trusts nothing: the bytes, as UTF-8 (lossy), go to all three parsers. A panic, a hang
//! or a blow-up is a finding. Every alias parsed has a name and at least one target.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(aliases) = cursus_mail::aliases::parse(&text) {
        for alias in &aliases {
            assert!(!alias.name.is_empty());
            assert!(!alias.targets.is_empty());
        }
    }
    let _ = cursus_mail::forward::parse(&text);
    let _ = cursus_mail::dsn::Templates::check(&text);
});
