//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463).
//!
//! Trusts: the daemon, for the code and text it chooses. Text is made safe before it goes on
//! the wire: CR, LF and other control characters become spaces, so a reply can never carry
//! a line break that a client would read as a second reply (reply injection).
//! Fails: never; a code outside 200..=599 is clamped to 451 (a local error the client
//! retries), because the daemon's mistake must not turn into a malformed reply.

use std::fmt;

use cursus_mail::EnhancedStatus;

/// One reply: a three-digit code, an optional enhanced status and one or more lines of text.
///
/// The greeting and the answers to HELO, EHLO and LHLO carry no enhanced status (RFC 2034
/// §3); every other reply the session produces does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status. The status class follows the code: a 4xx
    /// code forces class 4, a 5xx code class 5.
    pub fn new(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Reply {
        let code = valid_code(code);
        let status = match code / 100 {
            4 => status.as_temporary(),
            5 => status.as_permanent(),
            _ => status,
        };
        Reply {
            code,
            status: Some(status),
            lines: vec![one_line(text.into())],
        }
    }

    /// A reply without an enhanced status (the greeting, HELO/EHLO/LHLO answers, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code: valid_code(code),
            status: None,
            lines: vec![one_line(text.into())],
        }
    }

    /// Adds a line; the reply becomes multi-line (`250-first`, ..., `250 last`).
    pub fn with_line(mut self, text: impl Into<String>) -> Reply {
        self.lines.push(one_line(text.into()));
        self
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// 2xx: the command succeeded.
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// 3xx: the command is accepted and more input is expected (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// 4xx or 5xx: the command failed.
    pub fn is_negative(&self) -> bool {
        self.code >= 400
    }

    /// The bytes to write to the client, every line ending in CRLF.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            write!(f, "{}{}", self.code, sep)?;
            if let Some(status) = self.status {
                write!(f, "{status} ")?;
            }
            write!(f, "{line}\r\n")?;
        }
        Ok(())
    }
}

fn valid_code(code: u16) -> u16 {
    if (200..=599).contains(&code) {
        code
    } else {
        451
    }
}

/// Control characters (CR and LF above all) become spaces; at most 500 bytes are kept, on a
/// character boundary (RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets).
fn one_line(text: String) -> String {
    const MAX: usize = 500;
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cursus_mail::codes;

    #[test]
    fn renders_single_and_multi_line_replies() {
        let table: &[(Reply, &str)] = &[
            (Reply::new(250, codes::DELIVERED, "Ok"), "250 2.0.0 Ok\r\n"),
            (
                Reply::plain(250, "mx.example").with_line("PIPELINING"),
                "250-mx.example\r\n250 PIPELINING\r\n",
            ),
            (
                Reply::new(550, codes::BAD_MAILBOX, "no").with_line("such user"),
                "550-5.1.1 no\r\n550 5.1.1 such user\r\n",
            ),
        ];
        for (reply, want) in table {
            assert_eq!(reply.to_string(), *want);
        }
    }

    #[test]
    fn status_class_follows_the_code() {
        let r = Reply::new(452, codes::SYSTEM_FULL.as_permanent(), "full");
        assert_eq!(r.to_string(), "452 4.3.1 full\r\n");
        let r = Reply::new(554, codes::SYSTEM_FULL, "no");
        assert_eq!(r.to_string(), "554 5.3.1 no\r\n");
    }

    #[test]
    fn reply_injection_is_impossible() {
        let r = Reply::new(550, codes::BAD_MAILBOX, "no\r\n250 2.0.0 Ok");
        assert_eq!(r.to_string(), "550 5.1.1 no  250 2.0.0 Ok\r\n");
        assert_eq!(Reply::plain(99, "x").code(), 451);
    }
}
