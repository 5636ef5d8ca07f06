//! Messages we write ourselves: the vacation response (RFC 5230 §5, RFC 3834), the
//! rejection notice (RFC 5429 §2.1.1, an MDN per RFC 8098) and the mailto notification
//! (RFC 5436). Pure: bytes in, bytes out; the clock and the host name are arguments.
//!
//! Trusts the action values the Sieve interpreter validated, but treats every string as
//! text from a stranger: header values lose their control characters (no header injection
//! through a subject or an address), non-ASCII header text becomes RFC 2047 encoded words,
//! and body lines longer than SMTP allows switch the body to base64. Never fails for
//! vacation and rejection; a notification whose URI names no usable recipient is an error
//! the caller notes.

use cursus_mail::header::{fields, is_field_start};
use cursus_sieve::{Notify, Vacation};

use crate::sendmail::usable_address;

/// A message ready for sendmail: envelope and LF-terminated bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Envelope sender; `None` is the null sender.
    pub sender: Option<String>,
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
}

/// What every generated message needs from the world.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// RFC 5322 date, e.g. `Tue, 01 Apr 2026 10:00:00 +0200`.
    pub date: String,
    /// A unique `<...@host>`.
    pub message_id: String,
    /// This host's name, for the MDN's Reporting-UA.
    pub host: String,
}

impl Stamp {
    /// The current local time and a fresh Message-ID.
    pub fn now(host: &str) -> Stamp {
        let now = jiff::ZonedDateTime::now();
        let date = now.strftime("%a, %d %b %Y %H:%M:%S %z").to_string();
        let mut random = [0u8; 8];
        let seeded = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
            .is_ok();
        if !seeded {
            random = now.timestamp().as_nanosecond().to_le_bytes()[..8]
                .try_into()
                .unwrap_or_default();
        }
        let message_id = format!(
            "<{}.{}.{:016x}@{}>",
            now.timestamp().as_second(),
            std::process::id(),
            u64::from_le_bytes(random),
            sanitize(host).replace(' ', "")
        );
        Stamp {
            date,
            message_id,
            host: host.to_string(),
        }
    }
}

/// The vacation response to `v.recipient`, from the null sender (RFC 5230 §5.1).
pub fn vacation(v: &Vacation, stamp: &Stamp) -> Outgoing {
    let mut m = String::new();
    m.push_str(&field("From", &mailbox(&v.from)));
    let to = if v.to_header.trim().is_empty() {
        format!("<{}>", sanitize(&v.recipient))
    } else {
        mailbox(&v.to_header)
    };
    m.push_str(&field("To", &to));
    m.push_str(&field("Subject", &encode_words(&v.subject)));
    m.push_str(&field("Date", &stamp.date));
    m.push_str(&field("Message-ID", &stamp.message_id));
    if let Some(id) = v.in_reply_to.as_deref().filter(|i| !i.trim().is_empty()) {
        m.push_str(&field("In-Reply-To", &sanitize(id)));
    }
    if let Some(refs) = v.references.as_deref().filter(|r| !r.trim().is_empty()) {
        m.push_str(&field("References", &sanitize(refs)));
    }
    m.push_str(&field("Auto-Submitted", "auto-replied (vacation)"));
    m.push_str(&field("MIME-Version", "1.0"));
    let mut bytes = m.into_bytes();
    if v.mime {
        // The reason is a whole MIME entity: its own Content-Type, a blank line, a body.
        let entity = lf(v.reason.as_bytes());
        let first_line = entity.split(|&b| b == b'\n').next().unwrap_or_default();
        if !first_line.is_empty() && !is_field_start(first_line) {
            // No header section of its own: the blank line ends ours.
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(&entity);
    } else {
        bytes.extend_from_slice(&text_body(&v.reason));
    }
    Outgoing {
        // RFC 5230 §5.1: the null sender unless configured otherwise.
        sender: Some(v.envelope_from.clone()).filter(|s| !s.is_empty()),
        recipients: vec![v.recipient.clone()],
        message: bytes,
    }
}

/// Who was rejected what, for the notice.
#[derive(Debug, Clone)]
pub struct Rejection<'a> {
    pub reason: &'a str,
    /// The envelope sender, who gets the notice.
    pub sender: &'a str,
    pub original_recipient: &'a str,
    pub final_recipient: &'a str,
    /// The rejected message's header section (LF line ends), returned as
    /// text/rfc822-headers: enough to identify it, never its body.
    pub header: &'a [u8],
}

/// An RFC 5429 §2.1.1 rejection: a multipart/report MDN with disposition "deleted".
pub fn rejection(r: &Rejection<'_>, stamp: &Stamp) -> Outgoing {
    let boundary = format!(
        "=_cursus_{}",
        stamp
            .message_id
            .trim_matches(['<', '>'])
            .replace(['@', '.'], "_")
    );
    let subject = header_value(r.header, "Subject").unwrap_or_default();
    let original_id = header_value(r.header, "Message-ID");
    let mut m = String::new();
    m.push_str(&field(
        "From",
        &format!("<{}>", sanitize(r.final_recipient)),
    ));
    m.push_str(&field("To", &format!("<{}>", sanitize(r.sender))));
    m.push_str(&field(
        "Subject",
        &encode_words(&format!("Rejected: {subject}")),
    ));
    m.push_str(&field("Date", &stamp.date));
    m.push_str(&field("Message-ID", &stamp.message_id));
    if let Some(id) = &original_id {
        m.push_str(&field("In-Reply-To", &sanitize(id)));
    }
    m.push_str(&field("Auto-Submitted", "auto-replied (rejected)"));
    m.push_str(&field("MIME-Version", "1.0"));
    m.push_str(&field(
        "Content-Type",
        &format!(
            "multipart/report; report-type=disposition-notification;\n boundary=\"{boundary}\""
        ),
    ));
    m.push_str("\nThis is a MIME-encapsulated message.\n\n");
    m.push_str(&format!("--{boundary}\n"));
    let text = format!(
        "Your message to <{}> was automatically rejected:\n{}\n",
        sanitize(r.final_recipient),
        r.reason
    );
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(&text_body(&text));
    let mut report = format!("\n--{boundary}\nContent-Type: message/disposition-notification\n\n");
    report.push_str(&format!(
        "Reporting-UA: {}; Cursus cursus-deliver\n",
        sanitize(&stamp.host)
    ));
    if !r.original_recipient.is_empty() {
        report.push_str(&format!(
            "Original-Recipient: rfc822; {}\n",
            sanitize(r.original_recipient)
        ));
    }
    report.push_str(&format!(
        "Final-Recipient: rfc822; {}\n",
        sanitize(r.final_recipient)
    ));
    if let Some(id) = &original_id {
        report.push_str(&format!("Original-Message-ID: {}\n", sanitize(id)));
    }
    report.push_str("Disposition: automatic-action/MDN-sent-automatically; deleted\n");
    report.push_str(&format!(
        "\n--{boundary}\nContent-Type: text/rfc822-headers\n\n"
    ));
    bytes.extend_from_slice(report.as_bytes());
    let header = r.header.strip_suffix(b"\n\n").unwrap_or(r.header);
    bytes.extend_from_slice(header);
    if !header.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    Outgoing {
        sender: None,
        recipients: vec![r.sender.to_string()],
        message: bytes,
    }
}

/// A mailto notification (RFC 5436) about the message whose header is `header`.
/// `user` is the recipient's own address (the default From).
pub fn notification(
    n: &Notify,
    header: &[u8],
    user: &str,
    stamp: &Stamp,
) -> Result<Outgoing, String> {
    let uri = Mailto::parse(&n.method)?;
    let original_subject = header_value(header, "Subject").unwrap_or_default();
    let original_from = header_value(header, "From").unwrap_or_default();
    let message = (!n.message.is_empty()).then_some(n.message.as_str());
    let subject = uri
        .subject
        .clone()
        .or_else(|| message.map(str::to_string))
        .unwrap_or_else(|| format!("[SIEVE] New mail: {original_subject}"));
    let body = uri
        .body
        .clone()
        .or_else(|| message.map(str::to_string))
        .unwrap_or_else(|| format!("New mail from {original_from}\nSubject: {original_subject}\n"));
    let from = n.from.as_deref().filter(|f| !f.is_empty()).unwrap_or(user);
    let (importance, priority) = match n.importance {
        1 => ("high", "1 (Highest)"),
        3 => ("low", "5 (Lowest)"),
        _ => ("normal", "3 (Normal)"),
    };
    let mut m = String::new();
    m.push_str(&field("From", &mailbox(from)));
    m.push_str(&field("To", &angle_list(&uri.to)));
    if !uri.cc.is_empty() {
        m.push_str(&field("Cc", &angle_list(&uri.cc)));
    }
    m.push_str(&field("Subject", &encode_words(&subject)));
    m.push_str(&field("Date", &stamp.date));
    m.push_str(&field("Message-ID", &stamp.message_id));
    m.push_str(&field("Auto-Submitted", "auto-notified"));
    m.push_str(&field("Importance", importance));
    m.push_str(&field("X-Priority", priority));
    m.push_str(&field("MIME-Version", "1.0"));
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(&text_body(&body));
    let recipients = uri
        .to
        .iter()
        .chain(&uri.cc)
        .chain(&uri.bcc)
        .cloned()
        .collect();
    Ok(Outgoing {
        sender: None,
        recipients,
        message: bytes,
    })
}

/// The parts of a mailto URI (RFC 6068) a notification uses; other header fields in the
/// URI are ignored (RFC 5436 §2.7 forbids taking From, Received, Auto-Submitted etc.).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mailto {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
}

impl Mailto {
    pub fn parse(uri: &str) -> Result<Mailto, String> {
        let (scheme, rest) = uri
            .split_once(':')
            .ok_or("notification method has no scheme")?;
        if !scheme.eq_ignore_ascii_case("mailto") {
            return Err(format!("notification method {scheme:?} is not supported"));
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut m = Mailto::default();
        add_addresses(&mut m.to, &percent_decode(path)?)?;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)?;
            match percent_decode(k)?.to_ascii_lowercase().as_str() {
                "to" => add_addresses(&mut m.to, &v)?,
                "cc" => add_addresses(&mut m.cc, &v)?,
                "bcc" => add_addresses(&mut m.bcc, &v)?,
                "subject" => m.subject = Some(v),
                "body" => m.body = Some(v),
                _ => {}
            }
        }
        if m.to.is_empty() && m.cc.is_empty() && m.bcc.is_empty() {
            return Err("notification method names no recipient".into());
        }
        Ok(m)
    }
}

fn add_addresses(out: &mut Vec<String>, list: &str) -> Result<(), String> {
    for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let a = a.trim_start_matches('<').trim_end_matches('>');
        let ok = usable_address(a)
            && a.rsplit_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
            && !a.contains(['<', '>', ',', ';', '"', '(', ')']);
        if !ok {
            return Err(format!("notification recipient {a:?} is not an address"));
        }
        if out.len() < 16 {
            out.push(a.to_string());
        }
    }
    Ok(())
}

/// Percent-decoding as the Sieve crate does it for notify URIs, with the error named.
fn percent_decode(s: &str) -> Result<String, String> {
    cursus_sieve::actions::percent_decode(s)
        .ok_or_else(|| format!("bad percent-encoding or non-UTF-8 text in {s:?}"))
}

fn angle_list(list: &[String]) -> String {
    list.iter()
        .map(|a| format!("<{a}>"))
        .collect::<Vec<_>>()
        .join(",\n ")
}

/// The unfolded value of the first `name` field in a header section.
pub fn header_value(header: &[u8], name: &str) -> Option<String> {
    fields(header)
        .find(|f| f.is(name))
        .map(|f| f.value_str().trim().to_string())
}

/// `Name: value\n`, with the value stripped of control characters; ASCII values longer
/// than a line are folded at spaces.
fn field(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut line = out.len();
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 && line + 1 + word.len() > 78 && line > name.len() + 1 {
            out.push_str("\n ");
            line = 1;
        } else {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
        if let Some(nl) = word.rfind('\n') {
            line = word.len() - nl;
        }
    }
    out.push('\n');
    out
}

/// Control characters (CR, LF, tab, NUL...) become spaces.
fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A From value: `addr`, `<addr>` or `Phrase <addr>`; a non-ASCII phrase is encoded.
fn mailbox(value: &str) -> String {
    let value = sanitize(value.trim());
    match value.rfind('<') {
        Some(i) if value.ends_with('>') => {
            let phrase = value[..i].trim();
            let addr = &value[i..];
            if phrase.is_empty() {
                addr.to_string()
            } else if phrase.is_ascii() {
                format!("{phrase} {addr}")
            } else {
                format!("{} {addr}", encode_words(phrase))
            }
        }
        _ => format!("<{value}>"),
    }
}

/// RFC 2047: ASCII text stays as it is; otherwise UTF-8 base64 encoded words of at most
/// 39 input bytes each (64 characters, so even after `Subject: ` a line stays under 78),
/// cut on character boundaries, folded between.
pub fn encode_words(text: &str) -> String {
    let text = sanitize(text);
    if text.is_ascii() {
        return text;
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 39 {
            words.push(format!("=?utf-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?utf-8?B?{}?=", base64(chunk.as_bytes())));
    }
    words.join("\n ")
}

/// Content-Type and transfer encoding headers, the blank line and the body of a
/// text/plain UTF-8 part: 7bit, 8bit, or base64 when a line exceeds 998 bytes.
fn text_body(text: &str) -> Vec<u8> {
    let mut body = lf(text.as_bytes());
    if !body.ends_with(b"\n") {
        body.push(b'\n');
    }
    let long_line = body.split(|&b| b == b'\n').any(|l| l.len() > 998);
    let mut out = b"Content-Type: text/plain; charset=utf-8\n".to_vec();
    if long_line {
        out.extend_from_slice(b"Content-Transfer-Encoding: base64\n\n");
        let encoded = base64(&body);
        for line in encoded.as_bytes().chunks(76) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    } else {
        let cte = if body.is_ascii() { "7bit" } else { "8bit" };
        out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\n\n").as_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// CRLF and lone CR become LF.
fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\r' {
            out.push(b'\n');
            if bytes.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            date: "Wed, 01 Apr 2026 10:00:00 +0200".into(),
            message_id: "<1.2.3@mx.example.net>".into(),
            host: "mx.example.net".into(),
        }
    }

    fn vac() -> Vacation {
        Vacation {
            recipient: "alice@example.org".into(),
            to_header: "Alice <alice@example.org>".into(),
            from: "joe@example.net".into(),
            subject: "Auto: hello".into(),
            reason: "I am away.".into(),
            mime: false,
            handle: "h".into(),
            period: 86400,
            in_reply_to: Some("<1@example.org>".into()),
            references: Some("<0@example.org> <1@example.org>".into()),
            send: true,
            envelope_from: String::new(),
        }
    }

    #[test]
    fn base64_table() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("€", "4oKs"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn vacation_response_is_rfc_5230() {
        let out = vacation(&vac(), &stamp());
        assert_eq!(out.sender, None);
        assert_eq!(out.recipients, vec!["alice@example.org".to_string()]);
        let text = String::from_utf8(out.message).expect("utf-8");
        let want = "From: <joe@example.net>\nTo: Alice <alice@example.org>\nSubject: Auto: hello\n\
                    Date: Wed, 01 Apr 2026 10:00:00 +0200\nMessage-ID: <1.2.3@mx.example.net>\n\
                    In-Reply-To: <1@example.org>\nReferences: <0@example.org> <1@example.org>\n\
                    Auto-Submitted: auto-replied (vacation)\nMIME-Version: 1.0\n\
                    Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n\
                    I am away.\n";
        assert_eq!(text, want);
    }

    #[test]
    fn header_injection_and_non_ascii_are_neutralised() {
        let mut v = vac();
        v.subject = "Re: x\r\nBcc: victim@example.com".into();
        v.reason = "Bin weg – zurück am Montag.\r\n".into();
        let text = String::from_utf8(vacation(&v, &stamp()).message).expect("utf-8");
        assert!(!text.contains("\nBcc:"), "{text}");
        assert!(
            text.contains("Subject: Re: x  Bcc: victim@example.com\n"),
            "{text}"
        );
        assert!(text.contains("Content-Transfer-Encoding: 8bit\n\nBin weg – zurück am Montag.\n"));
        v.subject = "Abwesenheit: Grüße aus dem Urlaub, bis bald und vielen Dank für alles".into();
        let text = String::from_utf8(vacation(&v, &stamp()).message).expect("utf-8");
        let subject = text
            .split("\nSubject:")
            .nth(1)
            .and_then(|s| s.split("\nDate:").next())
            .expect("subject");
        for line in subject.lines() {
            assert!(line.len() <= 78 && line.is_ascii(), "{line:?}");
        }
        assert!(subject.contains("=?utf-8?B?"), "{subject}");
    }

    #[test]
    fn mime_vacation_keeps_the_entity() {
        let mut v = vac();
        v.mime = true;
        v.reason = "Content-Type: text/html\r\n\r\n<p>away</p>\r\n".into();
        let text = String::from_utf8(vacation(&v, &stamp()).message).expect("utf-8");
        assert!(
            text.ends_with("MIME-Version: 1.0\nContent-Type: text/html\n\n<p>away</p>\n"),
            "{text}"
        );
    }

    #[test]
    fn rejection_is_a_multipart_report() {
        let header =
            b"From: Alice <alice@example.org>\nSubject: buy now\nMessage-ID: <9@example.org>\n\n";
        let r = Rejection {
            reason: "no spam please",
            sender: "alice@example.org",
            original_recipient: "joe+x@example.net",
            final_recipient: "joe@example.net",
            header,
        };
        let out = rejection(&r, &stamp());
        assert_eq!(out.sender, None);
        assert_eq!(out.recipients, vec!["alice@example.org".to_string()]);
        let text = String::from_utf8(out.message).expect("utf-8");
        for want in [
            "Subject: Rejected: buy now\n",
            "In-Reply-To: <9@example.org>\n",
            "Content-Type: multipart/report; report-type=disposition-notification;\n boundary=",
            "was automatically rejected:\nno spam please\n",
            "Content-Type: message/disposition-notification\n",
            "Original-Recipient: rfc822; joe+x@example.net\n",
            "Final-Recipient: rfc822; joe@example.net\n",
            "Original-Message-ID: <9@example.org>\n",
            "Disposition: automatic-action/MDN-sent-automatically; deleted\n",
            "Content-Type: text/rfc822-headers\n\nFrom: Alice <alice@example.org>\n",
            "Auto-Submitted: auto-replied (rejected)\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.trim_end().ends_with("--"), "{text}");
    }

    #[test]
    fn mailto_table() {
        let m = Mailto::parse("mailto:a@example.org%2Cb@example.org?cc=c@example.org&subject=Hi%20there&from=evil@x&body=b")
            .expect("parses");
        assert_eq!(m.to, vec!["a@example.org", "b@example.org"]);
        assert_eq!(m.cc, vec!["c@example.org"]);
        assert_eq!(m.subject.as_deref(), Some("Hi there"));
        assert_eq!(m.body.as_deref(), Some("b"));
        for bad in [
            "xmpp:a@b",
            "mailto:",
            "mailto:-oQ@x",
            "mailto:a%0Ab@x",
            "mailto:a@b%zz",
            "nocolon",
        ] {
            assert!(Mailto::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn notification_uses_uri_then_message() {
        let n = Notify {
            method: "mailto:me@example.com".into(),
            from: None,
            importance: 1,
            options: Vec::new(),
            message: "Mail from Alice".into(),
        };
        let out = notification(&n, b"Subject: hi\n\n", "joe@example.net", &stamp()).expect("ok");
        assert_eq!(out.recipients, vec!["me@example.com".to_string()]);
        let text = String::from_utf8(out.message).expect("utf-8");
        assert!(
            text.contains(
                "From: <joe@example.net>\nTo: <me@example.com>\nSubject: Mail from Alice\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Auto-Submitted: auto-notified\nImportance: high\n"),
            "{text}"
        );
    }
}
