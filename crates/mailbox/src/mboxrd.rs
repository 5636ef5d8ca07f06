//! One message in mboxrd form: the `From ` separator line, the metadata headers an mbox reader
//! trusts stripped, `>From ` quoting, the final newline and the blank separator line
//! (mda-interface §4.1-4.3).
//!
//! Trusts: nothing in the message; the envelope sender only after replacing whitespace and
//! control characters (a sender with a space or newline must not forge a second word or a
//! second line in the separator).
//! Fails: only with the writer's `io::Error`.
//!
//! Each rule and what it stops:
//! * Every line matching `^>*From ` gets one more `>`, from the first line after our separator
//!   to the end, headers included: a line `From x` anywhere in the message would otherwise
//!   start a forged message for readers that split on any `From ` line (Python, mutt); the
//!   `>*` part keeps the quoting reversible (mboxrd).
//! * `Status`, `X-Status`, `X-UID`, `X-Keywords`, `X-IMAP`, `X-IMAPbase`, `Content-Length`,
//!   `X-Mozilla-Status(2)` are removed from the original header section (not from our own
//!   prefix): Dovecot trusts Status/X-Status completely and the others are its private
//!   metadata, so a sender could mark mail as read, forge UIDs, or make a `Content-Length`
//!   reader skip into the next message.
//! * The message always ends with a newline and one blank line follows, so the next separator
//!   starts a line after a blank line.

use std::io::{self, Write};
use std::time::SystemTime;

use crate::message::Message;

/// Headers removed before a message goes into an mbox (compared case-insensitively).
const STRIPPED_HEADERS: &[&str] = &[
    "Status",
    "X-Status",
    "X-UID",
    "X-Keywords",
    "X-IMAP",
    "X-IMAPbase",
    "Content-Length",
    "X-Mozilla-Status",
    "X-Mozilla-Status2",
];

/// Lines of `>` longer than this are passed through unquoted instead of being buffered.
const MAX_PENDING: usize = 4096;

/// `From <sender>  <asctime>\n` in the local time zone, Postfix style (two spaces).
/// `None` or an empty sender becomes `MAILER-DAEMON`; whitespace and control characters in
/// the sender become `-`.
pub fn from_line(envelope_sender: Option<&str>, when: SystemTime) -> String {
    let sender = match envelope_sender {
        Some(s) if !s.is_empty() => s
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '-'
                } else {
                    c
                }
            })
            .collect::<String>(),
        _ => "MAILER-DAEMON".to_string(),
    };
    format!("From {sender}  {}\n", asctime(when))
}

/// asctime(3) format in the system's local time zone: `Mon Jan  2 15:04:05 2006`.
pub fn asctime(when: SystemTime) -> String {
    let zone = jiff::tz::TimeZone::system();
    asctime_in(when, &zone)
}

fn asctime_in(when: SystemTime, zone: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::try_from(when) {
        Ok(ts) => ts
            .to_zoned_datetime(zone.clone())
            .strftime("%a %b %e %H:%M:%S %Y")
            .to_string(),
        // Outside jiff's range (year -9999..9999): the epoch is a well-formed stand-in.
        Err(_) => "Thu Jan  1 00:00:00 1970".to_string(),
    }
}

/// Removes the mbox metadata headers (and their continuation lines) from a header section.
/// Everything from the first empty line on is kept as it is.
pub fn strip_headers(header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len());
    let mut in_header = true;
    let mut skipping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if !in_header {
            out.extend_from_slice(line);
            continue;
        }
        if line == b"\n" {
            in_header = false;
            out.extend_from_slice(line);
            continue;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if !skipping {
                out.extend_from_slice(line);
            }
            continue;
        }
        skipping = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let name = line[..colon].trim_ascii_end();
                STRIPPED_HEADERS
                    .iter()
                    .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
            }
            None => false,
        };
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out
}

/// A writer that adds one `>` to every line matching `^>*From `.
pub struct FromQuoter<W: Write> {
    out: W,
    /// True while the current line's beginning is still being matched.
    matching: bool,
    pending: Vec<u8>,
    last_byte: Option<u8>,
}

enum Prefix {
    Partial,
    Match,
    NoMatch,
}

fn classify(pending: &[u8]) -> Prefix {
    let rest = &pending[pending.iter().take_while(|&&b| b == b'>').count()..];
    if rest.is_empty() {
        Prefix::Partial
    } else if b"From ".starts_with(rest) {
        if rest.len() == 5 {
            Prefix::Match
        } else {
            Prefix::Partial
        }
    } else {
        Prefix::NoMatch
    }
}

impl<W: Write> FromQuoter<W> {
    /// Starts at the beginning of a line.
    pub fn new(out: W) -> Self {
        FromQuoter {
            out,
            matching: true,
            pending: Vec::new(),
            last_byte: None,
        }
    }

    /// The last byte written through the quoter (before quoting), if any.
    pub fn last_byte(&self) -> Option<u8> {
        self.last_byte
    }

    /// Writes any held-back line start and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        Ok(self.out)
    }

    /// Gives the inner writer back without writing held-back bytes (after an error).
    pub fn into_inner_unflushed(self) -> W {
        self.out
    }
}

impl<W: Write> Write for FromQuoter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut i = 0;
        while i < buf.len() {
            if self.matching {
                let b = buf[i];
                i += 1;
                self.pending.push(b);
                match classify(&self.pending) {
                    Prefix::Partial if self.pending.len() <= MAX_PENDING => {}
                    Prefix::Partial => {
                        self.out.write_all(&self.pending)?;
                        self.pending.clear();
                        self.matching = false;
                    }
                    Prefix::Match => {
                        self.out.write_all(b">")?;
                        self.out.write_all(&self.pending)?;
                        self.pending.clear();
                        self.matching = false;
                    }
                    Prefix::NoMatch => {
                        self.out.write_all(&self.pending)?;
                        self.pending.clear();
                        self.matching = b == b'\n';
                    }
                }
            } else {
                match buf[i..].iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        self.out.write_all(&buf[i..=i + p])?;
                        i += p + 1;
                        self.matching = true;
                    }
                    None => {
                        self.out.write_all(&buf[i..])?;
                        i = buf.len();
                    }
                }
            }
        }
        if let Some(&b) = buf.last() {
            self.last_byte = Some(b);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes one complete mbox entry: separator line, quoted prefix + stripped header + body,
/// a final newline if missing, and the blank separator line.
pub fn write_entry(out: &mut dyn Write, from_line: &str, message: &Message) -> io::Result<()> {
    out.write_all(from_line.as_bytes())?;
    let mut quoter = FromQuoter::new(&mut *out);
    quoter.write_all(&message.prefix)?;
    quoter.write_all(&strip_headers(&message.header))?;
    message.body.copy_to(&mut quoter)?;
    let last = quoter.last_byte();
    let out = quoter.finish()?;
    match last {
        Some(b'\n') | None => out.write_all(b"\n"),
        Some(_) => out.write_all(b"\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spooled;
    use std::time::Duration;

    fn quote_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut q = FromQuoter::new(Vec::new());
        for part in input.chunks(chunk.max(1)) {
            q.write_all(part).expect("write");
        }
        q.finish().expect("finish")
    }

    #[test]
    fn mboxrd_quoting_table() {
        let table: &[(&str, &str)] = &[
            ("From x\n", ">From x\n"),
            (">From x\n", ">>From x\n"),
            (">>From x\n", ">>>From x\n"),
            ("a\nFrom here on\nb\n", "a\n>From here on\nb\n"),
            ("From", "From"),
            ("From x", ">From x"),
            ("From\n", "From\n"),
            ("Fromx\n", "Fromx\n"),
            ("from x\n", "from x\n"),
            (" From x\n", " From x\n"),
            (">\n>>\n", ">\n>>\n"),
            ("x From y\n", "x From y\n"),
            (">>Fro", ">>Fro"),
            ("\nFrom \n\n>From \n", "\n>From \n\n>>From \n"),
            ("", ""),
        ];
        for (input, want) in table {
            for chunk in [1, 2, 3, 7, 1000] {
                let got = quote_in_chunks(input.as_bytes(), chunk);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    *want,
                    "{input:?} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn header_stripping_table() {
        let table: &[(&str, &str)] = &[
            ("Subject: a\nStatus: RO\nX-Status: F\n\n", "Subject: a\n\n"),
            ("status: RO\nSTATUS : x\nTo: b\n", "To: b\n"),
            (
                "X-UID: 5\nX-Keywords: a\n b\nX-IMAP: 1\nX-IMAPbase: 1 2\nTo: x\n",
                "To: x\n",
            ),
            (
                "Content-Length: 99\n\tcontinued\nSubject: s\n continued\n",
                "Subject: s\n continued\n",
            ),
            (
                "X-Mozilla-Status: 0001\nX-Mozilla-Status2: 0\nX-Statusx: y\n",
                "X-Statusx: y\n",
            ),
            (
                "Subject: x\n\nStatus: body line\n",
                "Subject: x\n\nStatus: body line\n",
            ),
            ("From x\nStatus: y", "From x\n"),
            ("Subject: no newline", "Subject: no newline"),
        ];
        for (input, want) in table {
            let got = strip_headers(input.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), *want, "{input:?}");
        }
    }

    #[test]
    fn asctime_format() {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_136_214_245);
        assert_eq!(
            asctime_in(when, &jiff::tz::TimeZone::UTC),
            "Mon Jan  2 15:04:05 2006"
        );
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            asctime_in(when, &jiff::tz::TimeZone::UTC),
            "Tue Nov 14 22:13:20 2023"
        );
        let fixed = jiff::tz::TimeZone::fixed(jiff::tz::offset(-5));
        assert_eq!(asctime_in(when, &fixed), "Tue Nov 14 17:13:20 2023");
        assert_eq!(asctime(when).len(), 24);
    }

    #[test]
    fn from_line_sender() {
        let when = SystemTime::UNIX_EPOCH;
        let table: &[(Option<&str>, &str)] = &[
            (None, "From MAILER-DAEMON  "),
            (Some(""), "From MAILER-DAEMON  "),
            (Some("a@b.example"), "From a@b.example  "),
            (Some("a b\n@c\t"), "From a-b-@c-  "),
        ];
        for (sender, prefix) in table {
            let line = from_line(*sender, when);
            assert!(line.starts_with(prefix), "{line:?}");
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line:?}"
            );
            assert_eq!(line.len(), prefix.len() + 24 + 1, "{line:?}");
        }
    }

    fn entry(prefix: &str, header: &str, body: &str) -> String {
        let message = Message {
            prefix: prefix.as_bytes().to_vec(),
            header: header.as_bytes().to_vec(),
            body: Spooled::from_bytes(body.as_bytes().to_vec()),
        };
        let mut out = Vec::new();
        write_entry(&mut out, "From s  Thu Jan  1 00:00:00 1970\n", &message).expect("write");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn entries_end_with_a_blank_line() {
        let sep = "From s  Thu Jan  1 00:00:00 1970\n";
        let table: &[(&str, &str, &str, &str)] = &[
            ("R: x\n", "S: y\n\n", "body\n", "R: x\nS: y\n\nbody\n\n"),
            (
                "R: x\n",
                "S: y\n\n",
                "no newline",
                "R: x\nS: y\n\nno newline\n\n",
            ),
            (
                "",
                "From x\nStatus: RO\n\n",
                "From y\n>From z",
                ">From x\n\n>From y\n>>From z\n\n",
            ),
            ("", "", "", "\n"),
            ("Return-Path: <a>\n", "", "", "Return-Path: <a>\n\n"),
        ];
        for (prefix, header, body, want) in table {
            assert_eq!(
                entry(prefix, header, body),
                format!("{sep}{want}"),
                "{body:?}"
            );
        }
    }
}
