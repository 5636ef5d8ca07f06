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

use crate::header::fields;

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

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
