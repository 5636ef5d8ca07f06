//! Delivery status notifications (RFC 3464): a `multipart/report; report-type=delivery-status`
//! message with a first part written for the person who sent the mail, the machine-readable
//! `message/delivery-status` part, and the original message's header (RET=HDRS, the
//! default) or the whole message (RET=FULL).
//!
//! Pure: builds bytes from values. Trusts nothing in the original message or the error
//! texts: every value that goes into a header is stripped of control characters, and the
//! returned part is bounded. Never fails.
//!
//! Attacks stopped: header injection through an error text or an address (CR/LF removed);
//! a bounce loop (the caller sends DSNs from the null sender `<>`, and never for a message
//! whose sender is null: see [`should_notify`]); a huge original turned into a huge bounce
//! (the full message is included only up to [`MAX_RETURNED`], else the header only).

use crate::prelude::*;

use crate::address::Sender;
use crate::status::EnhancedStatus;

/// The most bytes of the original message a DSN carries (RET=FULL); beyond, only its header.
pub const MAX_RETURNED: usize = 1 << 20;

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Handed to a server that does not send delivery reports (RFC 3461 §4.2).
    Relayed,
}

impl Action {
    fn word(&self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }

    /// Delivered or relayed: the message left our hands for good.
    pub fn is_success(&self) -> bool {
        matches!(self, Action::Delivered | Action::Relayed)
    }
}

/// One recipient's line in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    pub final_recipient: String,
    /// ORCPT as given by the client (`rfc822;addr`), if any.
    pub original_recipient: Option<String>,
    pub action: Action,
    pub status: EnhancedStatus,
    /// The error text (e.g. the remote reply or the local outcome).
    pub diagnostic: String,
    /// RFC 5321 reply when a remote server said it, else `None` (local outcome).
    pub remote_mta: Option<String>,
    /// Text for people that replaces the built-in explanation (for example written by the
    /// administrator's script for unknown local users), one or more lines.
    pub explanation: Option<String>,
}

/// Everything a notification needs.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Our host name (Reporting-MTA, Message-ID, From: MAILER-DAEMON@host).
    pub reporting_mta: &'a str,
    /// Who the DSN goes to: the original sender.
    pub to: &'a str,
    pub envid: Option<&'a str>,
    pub queue_id: &'a str,
    /// When the original message arrived, RFC 5322 date text.
    pub arrival_date: &'a str,
    /// Now, RFC 5322 date text.
    pub date: &'a str,
    pub recipients: &'a [RecipientReport],
    /// The original message (CRLF or LF line ends).
    pub original: &'a [u8],
    /// RET=FULL asked for the whole message.
    pub return_full: bool,
    /// A unique token for Message-ID and the MIME boundary.
    pub unique: &'a str,
    /// The administrator's texts for the first part; `None`: the built-in ones.
    pub templates: Option<&'a Templates>,
    /// For delay notices: when the mail system will give up, RFC 5322 date text.
    pub give_up: Option<&'a str>,
}

/// The variables a template may use.
pub const TEMPLATE_VARIABLES: &[&str] = &[
    "mta",
    "sender",
    "subject",
    "arrival",
    "queue_id",
    "recipients",
    "count",
    "give_up",
];

/// The first part of each kind of notice, as an administrator wrote it: plain text with
/// `${variable}` (see [`TEMPLATE_VARIABLES`]); `$$` is a dollar sign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    pub failed: Option<String>,
    pub delayed: Option<String>,
    pub delivered: Option<String>,
}

impl Templates {
    /// Checks a template's text: every `${...}` names a known variable. The error says
    /// which one and what is known.
    pub fn check(text: &str) -> Result<(), String> {
        expand(text, |name| {
            TEMPLATE_VARIABLES
                .contains(&name)
                .then(String::new)
                .ok_or_else(|| {
                    format!(
                        "unknown variable ${{{name}}}; known: {}",
                        TEMPLATE_VARIABLES.join(", ")
                    )
                })
        })
        .map(drop)
    }
}

/// Replaces `${name}` by `value(name)` and `$$` by `$`.
fn expand(
    text: &str,
    mut value: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "a `${` without its `}`".to_string())?;
            out.push_str(&value(&body[..end])?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What a status means and what the sender can do, in words for people who are not
/// postmasters. Keyed by the status's subject and detail (RFC 3463), not its class.
pub fn explain(status: EnhancedStatus, action: &Action) -> (&'static str, &'static str) {
    if *action == Action::Delivered {
        return (
            "The message was delivered.",
            "Nothing: this is the receipt you asked for.",
        );
    }
    if *action == Action::Relayed {
        return (
            "The message was passed on to the recipient's mail server, which does not send \
             delivery receipts.",
            "Nothing: this is the last receipt you will get for this recipient.",
        );
    }
    if *action == Action::Delayed {
        return (
            "The message has not been delivered yet: the recipient's mail system could not \
             be reached or asked us to try later.",
            "Nothing for now. The mail system keeps trying and will tell you if it gives up.",
        );
    }
    let code = status.to_string();
    let sub = code.split_once('.').map_or("", |(_, rest)| rest);
    match sub {
        "1.1" => (
            "The address does not exist: the recipient's mail system does not know it.",
            "Check the address for typing mistakes, or ask the recipient for their current \
             address.",
        ),
        "1.2" | "1.10" => (
            "The domain (the part after the @) does not exist or does not accept mail.",
            "Check the part of the address after the @ for typing mistakes.",
        ),
        "2.2" => (
            "The recipient's mailbox is full.",
            "Send the message again later, or reach the recipient another way and tell them.",
        ),
        "2.1" => (
            "The recipient's mailbox is disabled and does not accept messages.",
            "Reach the recipient another way.",
        ),
        "2.3" | "3.4" => (
            "The message is too large for the recipient's mail system.",
            "Send it again with smaller attachments, or share large files by a link.",
        ),
        "4.6" => (
            "The message went round in a forwarding loop and was stopped.",
            "Tell the recipient: their forwarding or mailing list is misconfigured.",
        ),
        "4.7" => (
            "The mail system kept trying for days but could not deliver the message.",
            "The recipient's mail server may be down for a long time. Try again later, or \
             reach the recipient another way.",
        ),
        s if s.starts_with("4.") => (
            "The recipient's mail server could not be reached.",
            "Check the address; if it is right, try again later.",
        ),
        s if s.starts_with("7.") => (
            "The recipient's mail system refused the message by its rules (for example as \
             suspected spam, or because your address is not allowed to send there).",
            "Ask your mail administrator to look at the technical details below, or reach \
             the recipient another way.",
        ),
        s if s.starts_with("6.") => (
            "The recipient's mail system could not accept the message's format.",
            "Send it again as plain text, or without unusual attachments.",
        ),
        s if s.starts_with("1.") => (
            "The address could not be used.",
            "Check the address for typing mistakes.",
        ),
        _ => (
            "The message could not be delivered.",
            "Your mail administrator can read the technical details below.",
        ),
    }
}

/// The Subject of `message`'s header, unfolded (raw: encoded-words are kept).
fn original_subject(message: &[u8]) -> Option<String> {
    let header = String::from_utf8_lossy(original_header(message)).replace("\r\n", "\n");
    let mut lines = header.split('\n').peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case("subject:") {
            let mut value = line[8..].trim().to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with([' ', '\t']) {
                    value.push(' ');
                    value.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            return Some(value);
        }
    }
    None
}

/// Whether a notification may be sent for a message from `sender`: never for the null
/// sender (RFC 5321 §4.5.5: no bounce of a bounce).
pub fn should_notify(sender: &Sender) -> bool {
    !matches!(sender, Sender::Null)
}

fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The header section of `message` (up to the first empty line), LF or CRLF.
fn original_header(message: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < message.len() {
        let end = message[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |e| i + e + 1);
        let line = &message[i..end];
        if line == b"\n" || line == b"\r\n" {
            return &message[..i];
        }
        i = end;
    }
    message
}

fn push_crlf(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
}

/// One recipient's paragraph of the first part.
fn recipient_text(x: &RecipientReport) -> String {
    let (what, todo) = explain(x.status, &x.action);
    let mut out = format!("<{}>\n", clean(&x.final_recipient));
    match &x.explanation {
        Some(text) => {
            for line in text.lines().take(20) {
                out.push_str(&format!("    {}\n", clean(line)));
            }
        }
        None => {
            out.push_str(&format!("    What happened: {what}\n"));
            out.push_str(&format!("    What you can do: {todo}\n"));
        }
    }
    out.push_str(&format!(
        "    Technical details: {} {}\n",
        x.status,
        clean(&x.diagnostic)
    ));
    out
}

/// The first part: the administrator's template or the built-in text.
fn human_text(r: &Report<'_>, failed: bool) -> String {
    let delivered_only = r.recipients.iter().all(|x| x.action.is_success());
    let recipients: Vec<String> = r.recipients.iter().map(recipient_text).collect();
    let recipients = recipients.join("\n");
    let subject = original_subject(r.original)
        .map(|s| clean(&s))
        .unwrap_or_else(|| "(no subject)".to_string());
    let count = r.recipients.len();
    let template = r.templates.and_then(|t| {
        if failed {
            t.failed.as_deref()
        } else if delivered_only {
            t.delivered.as_deref()
        } else {
            t.delayed.as_deref()
        }
    });
    let value = |name: &str| -> Result<String, String> {
        Ok(match name {
            "mta" => clean(r.reporting_mta),
            "sender" => clean(r.to),
            "subject" => subject.clone(),
            "arrival" => clean(r.arrival_date),
            "queue_id" => clean(r.queue_id),
            "recipients" => recipients.clone(),
            "count" => count.to_string(),
            "give_up" => r.give_up.map(clean).unwrap_or_default(),
            other => return Err(format!("unknown variable {other}")),
        })
    };
    if let Some(text) = template {
        // Checked when the templates were loaded; a bad one falls back to the built-in.
        if let Ok(out) = expand(text, value) {
            return out;
        }
    }
    let whom = if count == 1 {
        "the recipient below".to_string()
    } else {
        format!("the {count} recipients below")
    };
    let opening = if failed {
        format!("I'm sorry: your message could not be delivered to {whom}.")
    } else if delivered_only {
        format!("Your message was delivered to {whom}, as you asked to be told.")
    } else {
        let until = r
            .give_up
            .map(|g| format!(" until {}", clean(g)))
            .unwrap_or_default();
        format!(
            "Your message has not been delivered yet to {whom}. You do not need to send it \
             again: the mail system keeps trying{until}, and will tell you if it gives up."
        )
    };
    let closing = if failed {
        "The original message's header (or the whole message, if you asked for it) is \
         attached. If you need help, forward this whole notice to your mail administrator."
    } else {
        "This notice was sent automatically; please do not reply to it."
    };
    format!(
        "This is the mail system at {mta}.\n\n{opening}\n\n    Subject: {subject}\n    \
         Sent:    {arrival}\n\n{recipients}\n{closing}\n",
        mta = clean(r.reporting_mta),
        arrival = clean(r.arrival_date),
    )
}

/// Builds the notification (CRLF line ends), ready to queue from the null sender.
pub fn build(r: &Report<'_>) -> Vec<u8> {
    let boundary = format!("{}/{}", r.unique, r.reporting_mta);
    let failed: Vec<&RecipientReport> = r
        .recipients
        .iter()
        .filter(|x| x.action == Action::Failed)
        .collect();
    let subject = if !failed.is_empty() {
        "Undelivered Mail Returned to Sender"
    } else if r.recipients.iter().all(|x| x.action.is_success()) {
        "Successful Mail Delivery Report"
    } else {
        "Delayed Mail (still being retried)"
    };
    let human = human_text(r, !failed.is_empty());
    let mut out = Vec::new();
    let headers = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{mta}>\n\
         To: <{to}>\n\
         Subject: {subject}\n\
         Date: {date}\n\
         Message-ID: <{unique}@{mta}>\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n\
         \n\
         This is a MIME-encapsulated message.\n\
         \n\
         --{boundary}\n\
         Content-Description: Notification\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\
         \n",
        mta = clean(r.reporting_mta),
        to = clean(r.to),
        date = clean(r.date),
        unique = clean(r.unique),
    );
    push_crlf(&mut out, headers.as_bytes());
    // push_crlf ends the block with CRLF; the headers text ended with a blank line already.
    push_crlf(&mut out, human.as_bytes());
    let mut status = format!(
        "\n--{boundary}\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; {}\n",
        clean(r.reporting_mta)
    );
    if let Some(envid) = r.envid {
        status.push_str(&format!("Original-Envelope-Id: {}\n", clean(envid)));
    }
    status.push_str(&format!(
        "X-Cursus-Queue-ID: {}\nArrival-Date: {}\n",
        clean(r.queue_id),
        clean(r.arrival_date)
    ));
    for x in r.recipients {
        status.push('\n');
        status.push_str(&format!(
            "Final-Recipient: rfc822; {}\n",
            clean(&x.final_recipient)
        ));
        if let Some(o) = &x.original_recipient {
            status.push_str(&format!("Original-Recipient: {}\n", clean(o)));
        }
        status.push_str(&format!(
            "Action: {}\nStatus: {}\n",
            x.action.word(),
            x.status
        ));
        if let Some(m) = &x.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {}\n", clean(m)));
            status.push_str(&format!(
                "Diagnostic-Code: smtp; {}\n",
                clean(&x.diagnostic)
            ));
        } else {
            status.push_str(&format!(
                "Diagnostic-Code: x-cursus; {}\n",
                clean(&x.diagnostic)
            ));
        }
    }
    push_crlf(&mut out, status.as_bytes());
    let full = r.return_full && r.original.len() <= MAX_RETURNED;
    if full {
        push_crlf(
            &mut out,
            format!(
                "\n--{boundary}\nContent-Description: Undelivered Message\nContent-Type: message/rfc822\n\n"
            )
            .as_bytes(),
        );
        push_crlf(&mut out, r.original);
    } else {
        push_crlf(
            &mut out,
            format!(
                "\n--{boundary}\nContent-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\n\n"
            )
            .as_bytes(),
        );
        push_crlf(&mut out, original_header(r.original));
    }
    push_crlf(&mut out, format!("\n--{boundary}--\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report<'a>(recipients: &'a [RecipientReport], full: bool, original: &'a [u8]) -> Report<'a> {
        Report {
            reporting_mta: "mx.example.org",
            to: "alice@example.net",
            envid: Some("env-1"),
            queue_id: "Q1",
            arrival_date: "Mon, 23 Nov 2026 10:00:00 +0000",
            date: "Mon, 23 Nov 2026 10:05:00 +0000",
            recipients,
            original,
            return_full: full,
            unique: "u1",
            templates: None,
            give_up: Some("Sat, 28 Nov 2026 10:00:00 +0000"),
        }
    }

    #[test]
    fn a_failure_report_has_the_three_parts_and_the_fields() {
        let rcpts = [RecipientReport {
            final_recipient: "bob@example.org".into(),
            original_recipient: Some("rfc822;bob@example.org".into()),
            action: Action::Failed,
            status: EnhancedStatus::new(5, 1, 1),
            diagnostic: "no such user\r\nInjected: yes".into(),
            remote_mta: None,
            explanation: None,
        }];
        let original = b"Subject: hi\r\nFrom: alice@example.net\r\n\r\nsecret body\r\n";
        let text = String::from_utf8(build(&report(&rcpts, false, original))).expect("utf8");
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Reporting-MTA: dns; mx.example.org\r\n"));
        assert!(text.contains("Original-Envelope-Id: env-1\r\n"));
        assert!(text.contains("Final-Recipient: rfc822; bob@example.org\r\n"));
        assert!(text.contains("Action: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Content-Type: text/rfc822-headers"));
        assert!(text.contains("Subject: hi\r\n"));
        assert!(
            !text.contains("secret body"),
            "RET=HDRS returns the header only"
        );
        assert!(!text.contains("\r\nInjected: yes"), "{text}");
        assert!(
            !text.contains("\n\n") && !text.replace("\r\n", "").contains('\n'),
            "bare LF"
        );
        assert!(text.ends_with("--\r\n"));
    }

    #[test]
    fn ret_full_returns_the_message_and_delays_say_so() {
        let rcpts = [RecipientReport {
            final_recipient: "bob@example.org".into(),
            original_recipient: None,
            action: Action::Delayed,
            status: EnhancedStatus::new(4, 4, 1),
            diagnostic: "connection refused".into(),
            remote_mta: Some("mx.example.org".into()),
            explanation: None,
        }];
        let text =
            String::from_utf8(build(&report(&rcpts, true, b"Subject: x\n\nbody\n"))).expect("utf8");
        assert!(text.contains("Subject: Delayed Mail"));
        assert!(text.contains("Content-Type: message/rfc822"));
        assert!(text.contains("body\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; connection refused"));
    }

    #[test]
    fn the_first_part_says_what_happened_and_what_to_do() {
        let rcpts = [RecipientReport {
            final_recipient: "bob@example.org".into(),
            original_recipient: None,
            action: Action::Failed,
            status: EnhancedStatus::new(5, 2, 2),
            diagnostic: "mailbox full".into(),
            remote_mta: None,
            explanation: None,
        }];
        let original = b"Subject: Quarterly\r\n report\r\n\r\nbody\r\n";
        let text = String::from_utf8(build(&report(&rcpts, false, original))).expect("utf8");
        assert!(
            text.contains("could not be delivered to the recipient below"),
            "{text}"
        );
        assert!(text.contains("Subject: Quarterly report\r\n"), "{text}");
        assert!(
            text.contains("What happened: The recipient's mailbox is full."),
            "{text}"
        );
        assert!(
            text.contains("Technical details: 5.2.2 mailbox full"),
            "{text}"
        );

        // A delay notice says when the system gives up.
        let delayed = [RecipientReport {
            action: Action::Delayed,
            status: EnhancedStatus::new(4, 4, 1),
            ..rcpts[0].clone()
        }];
        let text = String::from_utf8(build(&report(&delayed, false, original))).expect("utf8");
        assert!(
            text.contains("keeps trying until Sat, 28 Nov 2026"),
            "{text}"
        );
        assert!(text.contains("Subject: Delayed Mail"), "{text}");
    }

    #[test]
    fn an_administrators_template_and_a_scripts_explanation_replace_the_text() {
        let templates = Templates {
            failed: Some("Hello from ${mta}. ${count} failed ($$0 cost):\n${recipients}".into()),
            ..Templates::default()
        };
        assert!(Templates::check(templates.failed.as_deref().unwrap_or("")).is_ok());
        let e = Templates::check("Dear ${senderr}").expect_err("unknown variable");
        assert!(
            e.contains("unknown variable ${senderr}") && e.contains("sender"),
            "{e}"
        );
        assert!(Templates::check("${mta").is_err());
        let rcpts = [RecipientReport {
            final_recipient: "nobody@example.org".into(),
            original_recipient: None,
            action: Action::Failed,
            status: EnhancedStatus::new(5, 1, 1),
            diagnostic: "user unknown".into(),
            remote_mta: None,
            explanation: Some("Nobody by that name works here.\nTry sales@example.org.".into()),
        }];
        let mut r = report(&rcpts, false, b"Subject: x\r\n\r\n");
        r.templates = Some(&templates);
        let text = String::from_utf8(build(&r)).expect("utf8");
        assert!(
            text.contains("Hello from mx.example.org. 1 failed ($0 cost):"),
            "{text}"
        );
        assert!(
            text.contains("    Nobody by that name works here.\r\n    Try sales@"),
            "{text}"
        );
        assert!(!text.contains("What happened"), "{text}");
        assert!(text.contains("Status: 5.1.1"), "the report part stays");
    }

    #[test]
    fn no_bounce_of_a_bounce() {
        assert!(!should_notify(&Sender::Null));
    }
}
