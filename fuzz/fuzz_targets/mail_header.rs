//! Fuzz target: the header scanning cursus-deliver runs on every incoming message.
//!
//! Trusts nothing: arbitrary bytes are the header section; the first line, up to 256 bytes,
//! doubles as the recipient for the Delivered-To loop check. A panic or a hang is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let recipient = data
        .split(|&b| b == b'\n')
        .next()
        .filter(|line| line.len() <= 256)
        .and_then(|line| std::str::from_utf8(line).ok());
    let state = cursus_mail::header::trace_state(data, recipient);
    let _ = cursus_mail::header::trace_prefix(&state, "<sender@example.org>", recipient);
    for field in cursus_mail::header::fields(data) {
        let _ = field.value_str();
        let _ = field.is("delivered-to");
    }
});
