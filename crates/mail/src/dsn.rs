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
}

impl Action {
    fn word(&self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
        }
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

/// Builds the notification (CRLF line ends), ready to queue from the null sender.
pub fn build(r: &Report<'_>) -> Vec<u8> {
    let boundary = format!("{}/{}", r.unique, r.reporting_mta);
    let failed: Vec<&RecipientReport> = r
        .recipients
        .iter()
        .filter(|x| x.action == Action::Failed)
        .collect();
    let subject = if failed.is_empty() {
        "Delayed Mail (still being retried)"
    } else {
        "Undelivered Mail Returned to Sender"
    };
    let mut human = String::new();
    if failed.is_empty() {
        human.push_str(&format!(
            "This is the mail system at {}.\n\nYour message has not been delivered yet to the \
             recipients below. Nothing needs to be done: the mail system keeps trying and will \
             tell you if it gives up.\n\n",
            r.reporting_mta
        ));
    } else {
        human.push_str(&format!(
            "This is the mail system at {}.\n\nYour message could not be delivered to one or \
             more recipients. It is attached below. Check each address for typing mistakes; \
             if an address is right, the reason below may tell the recipient's administrator \
             what to fix.\n\n",
            r.reporting_mta
        ));
    }
    for x in r.recipients {
        human.push_str(&format!(
            "<{}>: {}\n    {}\n\n",
            clean(&x.final_recipient),
            match x.action {
                Action::Failed => "delivery failed",
                Action::Delayed => "delivery delayed",
                Action::Delivered => "delivered",
            },
            clean(&x.diagnostic)
        ));
    }
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
        }];
        let text =
            String::from_utf8(build(&report(&rcpts, true, b"Subject: x\n\nbody\n"))).expect("utf8");
        assert!(text.contains("Subject: Delayed Mail"));
        assert!(text.contains("Content-Type: message/rfc822"));
        assert!(text.contains("body\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; connection refused"));
    }

    #[test]
    fn no_bounce_of_a_bounce() {
        assert!(!should_notify(&Sender::Null));
    }
}
