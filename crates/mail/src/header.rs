//! The header section of a message: field scanning, trace headers a delivery agent adds,
//! and `Delivered-To` loop detection.
//!
//! Trusts nothing: the header bytes come from the sender. Scanning is bounded (at most
//! [`MAX_FIELDS`] fields are examined, as Postfix caps its Delivered-To scan) and works on
//! raw bytes, so 8-bit, NUL and malformed lines cannot make it fail; they only stop being
//! recognised as fields.

use crate::prelude::*;

use crate::address::same_address;

/// How many header fields loop detection looks at before giving up (Postfix: 1000).
pub const MAX_FIELDS: usize = 1000;

/// One header field: its name and its value with folding line breaks removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: Vec<u8>,
}

impl Field<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).trim().to_string()
    }
}

/// Whether `line` starts a header field: a name of printable ASCII other than `:` and
/// space (RFC 5322 ftext), then a colon.
pub fn is_field_start(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(0) | None => false,
        Some(colon) => line[..colon].iter().all(|&b| (33..=126).contains(&b)),
    }
}

/// Iterates over the fields of a header section (LF line ends). Stops at the first empty
/// line, at the first line that is neither a field nor a continuation, or after
/// [`MAX_FIELDS`] fields.
pub fn fields(header: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let mut rest = header;
    let mut count = 0usize;
    core::iter::from_fn(move || {
        if count >= MAX_FIELDS {
            return None;
        }
        let (line, after) = split_line(rest);
        if line.is_empty() || !is_field_start(line) {
            return None;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = &line[..colon];
        let mut value = line[colon + 1..].to_vec();
        rest = after;
        loop {
            let (next, after_next) = split_line(rest);
            if matches!(next.first(), Some(b' ' | b'\t')) {
                value.extend_from_slice(next);
                rest = after_next;
            } else {
                break;
            }
        }
        count += 1;
        Some(Field { name, value })
    })
}

/// Splits off one line without its LF; a line without LF runs to the end.
fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

/// Header fields an MTA prepends for the delivery it hands to a delivery agent
/// (mda-interface §1.8): they sit above the first `Received:` line.
const PREPENDED: &[&str] = &[
    "return-path",
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "delivery-date",
];

/// What the top of a message says the MTA already did for this delivery, and whether the
/// message has been delivered to this recipient before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState {
    /// The MTA already prepended a `Return-Path:` (Exim spells it `Return-path:`).
    pub has_return_path: bool,
    /// The MTA already prepended `Delivered-To: <recipient>` for this delivery.
    pub has_delivered_to: bool,
    /// The recipient appears in a `Delivered-To:` that this delivery did not add: a mail
    /// forwarding loop (RFC 9228 §4, Postfix's 5.4.6).
    pub looped: bool,
}

/// Examines the header section for the MTA's prepended trace fields and for a
/// `Delivered-To: recipient` loop. `recipient` is `None` when no recipient is known.
pub fn trace_state(header: &[u8], recipient: Option<&str>) -> TraceState {
    let mut state = TraceState::default();
    let mut in_prepended_block = true;
    let mut matches = 0usize;
    let mut prepended_match = false;
    for field in fields(header) {
        let lower = String::from_utf8_lossy(field.name).to_ascii_lowercase();
        if !PREPENDED.contains(&lower.as_str()) {
            in_prepended_block = false;
        }
        if in_prepended_block && lower == "return-path" {
            state.has_return_path = true;
        }
        let is_recipient = |rcpt: &str| same_address(&field.value_str(), rcpt);
        if lower == "delivered-to" && recipient.is_some_and(is_recipient) {
            matches += 1;
            if in_prepended_block && !prepended_match {
                prepended_match = true;
            }
        }
    }
    state.has_delivered_to = prepended_match;
    state.looped = matches > usize::from(prepended_match);
    state
}

/// The header lines a delivery agent puts on top of the stored message, in the order
/// Postfix's mail_copy uses: Return-Path, then Delivered-To.
pub fn trace_prefix(state: &TraceState, return_path: &str, delivered_to: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    if !state.has_return_path {
        out.extend_from_slice(b"Return-Path: ");
        out.extend_from_slice(sanitize_value(return_path).as_bytes());
        out.push(b'\n');
    }
    if let (false, Some(rcpt)) = (state.has_delivered_to, delivered_to) {
        out.extend_from_slice(b"Delivered-To: ");
        out.extend_from_slice(sanitize_value(rcpt).as_bytes());
        out.push(b'\n');
    }
    out
}

/// A header value we generate from envelope data: line breaks and other control
/// characters become spaces, so an address from argv cannot inject a header line.
fn sanitize_value(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_unfold_and_stop_at_the_body() {
        let h = b"Subject: a\n b\nFrom: x@y\n\nBody: no\n";
        let got: Vec<_> = fields(h).map(|f| (f.name.to_vec(), f.value)).collect();
        assert_eq!(
            got,
            vec![
                (b"Subject".to_vec(), b" a b".to_vec()),
                (b"From".to_vec(), b" x@y".to_vec())
            ]
        );
    }

    #[test]
    fn field_start_table() {
        for (line, want) in [
            (&b"Subject: x"[..], true),
            (b"X-A:", true),
            (b": x", false),
            (b"No colon", false),
            (b"Bad name: x", false),
            (b"\xffName: x", false),
            (b"", false),
        ] {
            assert_eq!(
                is_field_start(line),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn loop_and_prepended_fields() {
        struct Case {
            header: &'static [u8],
            rcpt: Option<&'static str>,
            want: TraceState,
        }
        let st = |rp, dt, lp| TraceState {
            has_return_path: rp,
            has_delivered_to: dt,
            looped: lp,
        };
        let cases = [
            // Plain message: nothing prepended, no loop.
            Case {
                header: b"From: a@b\nSubject: s\n\n",
                rcpt: Some("u@x"),
                want: st(false, false, false),
            },
            // OpenSMTPD / Postfix pipe D+R: prepended for this delivery, not a loop.
            Case {
                header: b"Return-Path: <a@b>\nDelivered-To: U@X\nReceived: r\nFrom: a@b\n\n",
                rcpt: Some("u@x"),
                want: st(true, true, false),
            },
            // Exim: Return-path spelled with a lower-case p, Envelope-to instead.
            Case {
                header: b"Return-path: <a@b>\nEnvelope-to: u@x\nReceived: r\n\n",
                rcpt: Some("u@x"),
                want: st(true, false, false),
            },
            // A loop below the MTA's prepended copy.
            Case {
                header: b"Delivered-To: u@x\nReceived: r\nDelivered-To: u@x\n\n",
                rcpt: Some("u@x"),
                want: st(false, true, true),
            },
            // A loop with nothing prepended.
            Case {
                header: b"Received: r\nDelivered-To: <u@x>\n\n",
                rcpt: Some("u@x"),
                want: st(false, false, true),
            },
            // Another recipient's Delivered-To is no loop.
            Case {
                header: b"Received: r\nDelivered-To: v@x\n\n",
                rcpt: Some("u@x"),
                want: st(false, false, false),
            },
            // A Return-Path deep in the message is not the MTA's.
            Case {
                header: b"Received: r\nReturn-Path: <z@z>\n\n",
                rcpt: None,
                want: st(false, false, false),
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(trace_state(c.header, c.rcpt), c.want, "case {i}");
        }
    }

    #[test]
    fn loop_scan_is_bounded() {
        let mut h = Vec::new();
        for _ in 0..MAX_FIELDS {
            h.extend_from_slice(b"X-Filler: y\n");
        }
        h.extend_from_slice(b"Delivered-To: u@x\n\n");
        assert!(!trace_state(&h, Some("u@x")).looped);
    }

    #[test]
    fn prefix_skips_what_the_mta_added_and_cannot_be_injected() {
        let none = TraceState::default();
        assert_eq!(
            trace_prefix(&none, "<a@b>", Some("u@x")),
            b"Return-Path: <a@b>\nDelivered-To: u@x\n".to_vec()
        );
        let both = TraceState {
            has_return_path: true,
            has_delivered_to: true,
            looped: false,
        };
        assert!(trace_prefix(&both, "<a@b>", Some("u@x")).is_empty());
        let injected = trace_prefix(&none, "<a@b>\nBcc: evil", None);
        assert_eq!(injected, b"Return-Path: <a@b> Bcc: evil\n".to_vec());
    }
}
