//! The mbox `From ` line some MTAs put in front of the message they pipe to a delivery agent.
//!
//! Trusts nothing: the line is built by the MTA from the envelope sender. Only the sender
//! token is taken; the date is ignored (the delivery agent writes its own).

use crate::prelude::*;

/// If `line` (without its LF) is an mbox `From ` line, returns the sender it names
/// (`MAILER-DAEMON` and `<>` are passed through for [`crate::Sender::parse`] to read).
pub fn sender_from_line(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"From ")?;
    let rest = trim_start(rest);
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(rest.len());
    let token = &rest[..end];
    if token.is_empty() {
        return Some(String::new());
    }
    Some(String::from_utf8_lossy(token).into_owned())
}

fn trim_start(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_line_table() {
        let table: &[(&[u8], Option<&str>)] = &[
            (
                b"From alice@example.org  Sun Nov 22 08:59:06 2026",
                Some("alice@example.org"),
            ),
            (
                b"From MAILER-DAEMON Sun Nov 22 08:59:06 2026",
                Some("MAILER-DAEMON"),
            ),
            (b"From  <>  Sun", Some("<>")),
            (b"From ", Some("")),
            (b"From: alice@example.org", None),
            (b"Subject: x", None),
        ];
        for (line, want) in table {
            assert_eq!(sender_from_line(line).as_deref(), *want);
        }
    }
}
