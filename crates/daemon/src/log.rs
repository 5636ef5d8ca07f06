//! The daemon's log: one line per event on stderr (journald or the supervisor keeps it),
//! greppable like Postfix's (`status=sent`, the queue id first).
//!
//! Trusts its callers to pass text without line breaks; replaces any that slip through so
//! a client-supplied value can never forge a second log line.

use std::io::Write;

/// Writes one line.
pub fn line(text: &str) {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "cursusd: {clean}");
}
