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
    lines(&[text]);
}

/// Writes several lines (one event's) with one write(2).
pub fn lines<S: AsRef<str>>(texts: &[S]) {
    if texts.is_empty() {
        return;
    }
    let mut out = String::with_capacity(texts.iter().map(|t| t.as_ref().len() + 10).sum());
    for text in texts {
        out.push_str("cursusd: ");
        out.extend(
            text.as_ref()
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c }),
        );
        out.push('\n');
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}
