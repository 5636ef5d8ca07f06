//! The daemon's log: one line per event on stderr (journald or the supervisor keeps it),
//! greppable like Postfix's (`status=sent`, the queue id first).
//!
//! Trusts its callers to pass text without line breaks; replaces any that slip through so
//! a client-supplied value can never forge a second log line.

use std::io::Write;

/// Writes one line, with one write(2): stderr is unbuffered, so `writeln!` would issue a
/// write per piece and lines of concurrent threads (or of cursus-lda, which shares the
/// stream) could interleave mid-line.
pub fn line(text: &str) {
    let mut out = String::with_capacity(text.len() + 10);
    out.push_str("cursusd: ");
    out.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c }));
    out.push('\n');
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}
