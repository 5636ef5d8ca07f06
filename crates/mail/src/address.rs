//! Envelope addresses as MTAs hand them to a delivery agent: sender, recipients, extensions.
//!
//! Trusts nothing: every value comes from argv or the environment and, through the MTA, from
//! a remote SMTP client. Parsing is byte-exact and never builds a path; callers that turn an
//! extension into a folder name must validate it again (the mailbox crate does).

use crate::prelude::*;

/// An envelope sender: either the null reverse-path (`<>`, bounces) or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    Null,
    Address(String),
}

impl Sender {
    /// Reads a sender the way MTAs pass it: `""`, `<>` and Postfix pipe(8)'s default
    /// `null_sender` value `MAILER-DAEMON` mean the null sender; angle brackets are removed.
    pub fn parse(text: &str) -> Sender {
        let trimmed = text.trim();
        let inner = trimmed
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(trimmed)
            .trim();
        if inner.is_empty() || inner.eq_ignore_ascii_case("MAILER-DAEMON") {
            Sender::Null
        } else {
            Sender::Address(inner.to_string())
        }
    }

    /// The address, or `None` for the null sender.
    pub fn address(&self) -> Option<&str> {
        match self {
            Sender::Null => None,
            Sender::Address(a) => Some(a),
        }
    }

    /// The `Return-Path:` value: `<addr>` or `<>`.
    pub fn return_path(&self) -> String {
        format!("<{}>", self.address().unwrap_or(""))
    }
}

/// Splits `local@domain` at the rightmost `@` (RFC 5321 local parts may contain a quoted `@`).
pub fn split_address(address: &str) -> (&str, Option<&str>) {
    match address.rfind('@') {
        Some(at) => (&address[..at], Some(&address[at + 1..])),
        None => (address, None),
    }
}

/// Removes surrounding angle brackets and whitespace from an address given on a command line.
pub fn strip_brackets(address: &str) -> &str {
    let t = address.trim();
    t.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(t)
        .trim()
}

/// The extension of a local part (RFC 5233 "detail"): the text after the first delimiter
/// character found, or `None` when the local part has none. `delimiters` may list several
/// characters, as Postfix's and Dovecot's `recipient_delimiter` do; the first occurrence of
/// any of them wins.
pub fn extension<'a>(local_part: &'a str, delimiters: &str) -> Option<&'a str> {
    local_part
        .char_indices()
        .find(|(_, c)| delimiters.contains(*c))
        .map(|(i, c)| &local_part[i + c.len_utf8()..])
}

/// Compares two addresses as mail systems do for loop detection: the whole address without
/// case distinction (Postfix and OpenSMTPD compare `Delivered-To` case-insensitively).
pub fn same_address(a: &str, b: &str) -> bool {
    strip_brackets(a).eq_ignore_ascii_case(strip_brackets(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_forms() {
        let table: &[(&str, Option<&str>)] = &[
            ("", None),
            ("<>", None),
            (" < > ", None),
            ("MAILER-DAEMON", None),
            ("mailer-daemon", None),
            ("alice@example.org", Some("alice@example.org")),
            ("<alice@example.org>", Some("alice@example.org")),
            (
                "MAILER-DAEMON@example.org",
                Some("MAILER-DAEMON@example.org"),
            ),
        ];
        for (input, want) in table {
            assert_eq!(Sender::parse(input).address(), *want, "input {input:?}");
        }
        assert_eq!(Sender::Null.return_path(), "<>");
    }

    #[test]
    fn extension_table() {
        let table: &[(&str, &str, Option<&str>)] = &[
            ("joe+lists", "+", Some("lists")),
            ("joe", "+", None),
            ("joe+", "+", Some("")),
            ("joe+a+b", "+", Some("a+b")),
            ("joe-a+b", "+-", Some("a+b")),
            ("joe+a-b", "+-", Some("a-b")),
            ("joe+x", "", None),
        ];
        for (local, delims, want) in table {
            assert_eq!(extension(local, delims), *want, "{local} {delims}");
        }
    }

    #[test]
    fn split_uses_the_rightmost_at() {
        assert_eq!(
            split_address("\"a@b\"@example.org"),
            ("\"a@b\"", Some("example.org"))
        );
        assert_eq!(split_address("joe"), ("joe", None));
        assert!(same_address("<Joe@Example.ORG>", "joe@example.org"));
    }
}
