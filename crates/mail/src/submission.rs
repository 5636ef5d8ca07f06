//! Completing a locally submitted message: the header fields a submission server adds when
//! the author left them out. Date (RFC 6409 §8.2) and Message-ID (§8.3); From, which RFC 5322
//! §3.6 requires, from the submitting user, as sendmail and Postfix do for local mail. The
//! same rules for `cursus sendmail` and for SMTP on cursusd's submission socket.
//!
//! Trusts the caller's values (the user's login and name from the system, our host name);
//! nothing in the message, which is only scanned (bounded, like [`crate::header::fields`]).
//! Never fails: a header it cannot read is one without the fields, so they are added.
//! Attacks stopped: a full name with quotes or backslashes cannot end the quoted display
//! name early; line breaks in any value are replaced, so no field can be injected.

use crate::prelude::*;

use crate::header::{MAX_FIELDS, fields, is_field_start};

/// What the fields are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion<'a> {
    /// The author's address for From (`login@host`, or the envelope sender).
    pub from: &'a str,
    /// The author's full name, if known (a display name in From).
    pub full_name: Option<&'a str>,
    /// An RFC 5322 date-time (`Tue, 05 Mar 2024 10:00:00 +0100`).
    pub date: &'a str,
    /// A unique identifier with our host name, without the angle brackets.
    pub message_id: &'a str,
}

/// The fields `header` (a message, or its header section; LF or CRLF line ends) lacks, as
/// `Name: value` lines without a line end, in the order From, Date, Message-ID.
pub fn missing_fields(header: &[u8], values: &Completion<'_>) -> Vec<String> {
    let (mut from, mut date, mut id) = (false, false, false);
    for f in fields(header) {
        from |= f.is("from");
        date |= f.is("date");
        id |= f.is("message-id");
    }
    let mut out = Vec::new();
    if !from {
        let address = one_line(values.from);
        match values
            .full_name
            .map(one_line)
            .filter(|n| !n.trim().is_empty())
        {
            Some(name) => {
                let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
                out.push(format!("From: \"{quoted}\" <{address}>"));
            }
            None => out.push(format!("From: {address}")),
        }
    }
    if !date {
        out.push(format!("Date: {}", one_line(values.date)));
    }
    if !id {
        out.push(format!("Message-ID: <{}>", one_line(values.message_id)));
    }
    out
}

/// How much of a message [`HeaderHold`] keeps at most while it waits for the end of the
/// header section; a longer header is completed from this much of it.
pub const HOLD_LIMIT: usize = 1 << 20;

/// The start of a message arriving in pieces, held until [`missing_fields`] can be decided
/// (the receiver writes the message to disk as it comes, and the fields go before it).
///
/// It holds until a complete line stops the scan [`fields`] makes (an empty line, a line
/// that is neither a field nor a continuation, or the line after the last of
/// [`MAX_FIELDS`] fields), until [`HOLD_LIMIT`] octets, or until the end of the message.
/// Then `missing_fields` of the held bytes is `missing_fields` of the whole message
/// (when its header section ends within the limit), whatever the pieces were.
#[derive(Debug, Default)]
pub struct HeaderHold {
    held: Vec<u8>,
    released: bool,
    /// Start of the first line not examined yet.
    line: usize,
    /// Fields seen so far.
    count: usize,
    /// The line before `line` belonged to a field (so a leading space or tab continues it).
    in_field: bool,
}

/// What to do with a piece given to [`HeaderHold::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// Kept; nothing to write yet.
    Holding,
    /// The header is decided: complete these bytes (everything so far, this piece included)
    /// with `missing_fields`, then write them.
    Released(Vec<u8>),
    /// Already released earlier: write the piece as it is.
    Passing,
}

impl HeaderHold {
    pub fn new() -> HeaderHold {
        HeaderHold::default()
    }

    /// Takes the next piece of the message.
    pub fn push(&mut self, piece: &[u8]) -> Held {
        if self.released {
            return Held::Passing;
        }
        self.held.extend_from_slice(piece);
        if self.decided() || self.held.len() >= HOLD_LIMIT {
            self.released = true;
            return Held::Released(core::mem::take(&mut self.held));
        }
        Held::Holding
    }

    /// The end of the message: what is still held, if anything.
    pub fn end(&mut self) -> Option<Vec<u8>> {
        if self.released {
            return None;
        }
        self.released = true;
        Some(core::mem::take(&mut self.held))
    }

    /// Whether a complete line already ends the scan of [`fields`] (the same rules, on
    /// complete lines only: a partial line may still become a field).
    fn decided(&mut self) -> bool {
        while let Some(len) = self.held[self.line..].iter().position(|&b| b == b'\n') {
            let line = &self.held[self.line..self.line + len];
            let continues = self.in_field && matches!(line.first(), Some(b' ' | b'\t'));
            if !continues {
                if self.count >= MAX_FIELDS || line.is_empty() || !is_field_start(line) {
                    return true;
                }
                self.count += 1;
                self.in_field = true;
            }
            self.line += len + 1;
        }
        false
    }
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `message` to a hold in pieces cut at `cuts`; returns the completed message
    /// (the fields of the released head, then everything in order).
    fn completed_in_pieces(message: &[u8], cuts: &[usize]) -> (Vec<String>, Vec<u8>) {
        let mut hold = HeaderHold::new();
        let (mut fields, mut out) = (Vec::new(), Vec::new());
        let release = |head: Vec<u8>, fields: &mut Vec<String>, out: &mut Vec<u8>| {
            *fields = missing_fields(&head, &VALUES);
            out.extend_from_slice(&head);
        };
        let mut at = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (message.len() + 1)).collect();
        ends.sort_unstable();
        ends.push(message.len());
        for end in ends {
            match hold.push(&message[at..end]) {
                Held::Holding => {}
                Held::Released(head) => release(head, &mut fields, &mut out),
                Held::Passing => out.extend_from_slice(&message[at..end]),
            }
            at = end;
        }
        if let Some(head) = hold.end() {
            release(head, &mut fields, &mut out);
        }
        (fields, out)
    }

    /// Lines that make interesting headers: fields, continuations, empty and broken lines,
    /// with LF or CRLF.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("From: a@b".to_string()),
            Just("Date: x".to_string()),
            Just("message-id: <m@b>".to_string()),
            Just("Subject: s".to_string()),
            Just(" folded".to_string()),
            Just("\tfolded".to_string()),
            Just(String::new()),
            Just("no colon here".to_string()),
            Just("Bad name: x".to_string()),
            "[ -~]{0,12}",
        ]
    }

    proptest! {
        #[test]
        fn any_split_completes_as_the_whole_message(
            lines in proptest::collection::vec((line(), any::<bool>()), 0..12),
            tail in "[a-z]{0,3}",
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut message = String::new();
            for (l, crlf) in &lines {
                message.push_str(l);
                message.push_str(if *crlf { "\r\n" } else { "\n" });
            }
            message.push_str(&tail);
            let (fields, out) = completed_in_pieces(message.as_bytes(), &cuts);
            prop_assert_eq!(fields, missing_fields(message.as_bytes(), &VALUES));
            prop_assert_eq!(out, message.as_bytes());
        }
    }

    #[test]
    fn the_hold_ends_at_the_header_limit_and_at_the_field_limit() {
        // A header with no end in sight is released at HOLD_LIMIT.
        let long = format!("Subject: {}", "x".repeat(HOLD_LIMIT));
        let mut hold = HeaderHold::new();
        assert_eq!(hold.push(&long.as_bytes()[..1000]), Held::Holding);
        assert!(matches!(
            hold.push(&long.as_bytes()[1000..]),
            Held::Released(_)
        ));
        assert_eq!(hold.push(b"more"), Held::Passing);
        assert_eq!(hold.end(), None);
        // After MAX_FIELDS fields the scan stops, so the hold does too.
        let many = "X-A: 1\r\n".repeat(MAX_FIELDS) + "Date: late\r\n";
        let mut hold = HeaderHold::new();
        assert!(matches!(hold.push(many.as_bytes()), Held::Released(_)));
        // A message without a header section is decided at its first line.
        let mut hold = HeaderHold::new();
        assert!(matches!(hold.push(b"hello\r\nworld"), Held::Released(_)));
    }

    const VALUES: Completion<'static> = Completion {
        from: "joe@host.example",
        full_name: Some("Joe \"J\" Bloggs"),
        date: "Tue, 05 Mar 2024 10:00:00 +0100",
        message_id: "abc.1@host.example",
    };

    #[test]
    fn each_field_is_added_only_when_missing_with_lf_and_crlf() {
        let table: [(&str, &[&str]); 5] = [
            (
                "Subject: x\n\nbody\n",
                &[
                    "From: \"Joe \\\"J\\\" Bloggs\" <joe@host.example>",
                    "Date: Tue, 05 Mar 2024 10:00:00 +0100",
                    "Message-ID: <abc.1@host.example>",
                ],
            ),
            ("from: a@b\nDATE: x\nMessage-Id: <m@b>\n\n", &[]),
            (
                "From: a@b\n\nDate: in the body\n",
                &[
                    "Date: Tue, 05 Mar 2024 10:00:00 +0100",
                    "Message-ID: <abc.1@host.example>",
                ],
            ),
            (
                "",
                &[
                    "From: \"Joe \\\"J\\\" Bloggs\" <joe@host.example>",
                    "Date: Tue, 05 Mar 2024 10:00:00 +0100",
                    "Message-ID: <abc.1@host.example>",
                ],
            ),
            (
                "Message-ID:\n <folded@b>\nDate: x\n\n",
                &["From: \"Joe \\\"J\\\" Bloggs\" <joe@host.example>"],
            ),
        ];
        for (message, want) in table {
            for text in [message.to_string(), message.replace('\n', "\r\n")] {
                assert_eq!(missing_fields(text.as_bytes(), &VALUES), want, "{text:?}");
            }
        }
    }

    #[test]
    fn without_a_name_from_is_the_bare_address_and_no_value_breaks_a_line() {
        let values = Completion {
            full_name: Some("  "),
            from: "joe@host\r\nBcc: x@y",
            ..VALUES
        };
        let got = missing_fields(b"Date: x\nMessage-ID: <a@b>\n\n", &values);
        assert_eq!(got, ["From: joe@host  Bcc: x@y"]);
        let values = Completion {
            full_name: None,
            ..VALUES
        };
        assert_eq!(
            missing_fields(b"Date: x\nMessage-ID: <a@b>\n\n", &values),
            ["From: joe@host.example"]
        );
    }
}
