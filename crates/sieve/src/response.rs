//! Messages Sieve makes: vacation replies (RFC 5230 §4-5), rejection notices (RFC 5429
//! §2.1, as a simple MDN-like message), mailto notifications (RFC 5436), and header
//! folding and protection for editheader (RFC 5293 §6); also the spamtest/virustest
//! scores (RFC 5235) read from configured headers.
//!
//! Trusts the action values (already validated) but not the original message, whose
//! header values are re-encoded and folded before being copied into a new message. Builders
//! never fail: missing inputs give conservative defaults (and "do not send" for vacation).

use crate::Config;
use crate::actions::Vacation;
use crate::address::{self, Address};
use crate::charset;
use crate::eval::Runtime;
use crate::message::Message;

/// A message to send: envelope and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// MAIL FROM ("" for the null sender).
    pub from: String,
    /// RCPT TO.
    pub to: String,
    /// The message, CRLF line ends.
    pub message: Vec<u8>,
}

/// Whether editheader must leave `name` alone (RFC 5293 §6: Received and Auto-Submitted
/// by default; more by `sieve_editheader_*` settings).
pub fn is_protected_header(cfg: &Config, name: &str, adding: bool) -> bool {
    let lname = name.to_ascii_lowercase();
    if !adding && (lname == "received" || lname == "auto-submitted") {
        return true;
    }
    // Subject can never be protected (Pigeonhole refuses to).
    if lname == "subject" {
        return false;
    }
    let listed = cfg.settings.get("sieve_editheader_header").and_then(|l| {
        l.split_whitespace()
            .find(|h| h.eq_ignore_ascii_case(&lname))
            .map(str::to_string)
    });
    let Some(key_name) = listed else { return false };
    let key = if adding {
        "forbid_add"
    } else {
        "forbid_delete"
    };
    cfg.settings
        .get(&format!("sieve_editheader_header/{key_name}/{key}"))
        .is_some_and(|v| v.trim() == "yes")
}

/// Build the raw value (after the colon) of a header, RFC 2047-encoding non-ASCII and
/// folding at white space so lines stay under 78 characters where possible.
pub fn fold_header(name: &str, value: &str) -> String {
    let value = value.trim_end_matches(['\r', '\n']);
    if value.contains('\n') {
        let mut out = String::from(" ");
        for (i, line) in value.split('\n').enumerate() {
            let line = line.trim_end_matches('\r');
            if i > 0 {
                out.push_str("\r\n");
                if !line.starts_with([' ', '\t']) {
                    out.push(' ');
                }
            }
            out.push_str(line);
        }
        return out;
    }
    let v = if value.is_ascii() {
        value.to_string()
    } else {
        charset::encode_header_word(value)
    };
    let mut out = String::from(" ");
    let mut line_len = name.len() + 2;
    for (i, word) in v.split(' ').enumerate() {
        if i > 0 {
            if line_len + 1 + word.len() > 78 && line_len > name.len() + 2 {
                out.push_str("\r\n ");
                line_len = 1;
            } else {
                out.push(' ');
                line_len += 1;
            }
        }
        out.push_str(word);
        line_len += word.len();
    }
    out
}

fn first_header(m: &Message, name: &str) -> Option<String> {
    m.fields(name).next().map(|h| h.unfolded())
}

fn addr_of(a: &str) -> Option<String> {
    address::parse_list(a).into_iter().find_map(|x| match x {
        Address::Mailbox {
            domain: Some(_), ..
        } => Some(x.addr_spec()),
        _ => None,
    })
}

/// Decide the vacation response (RFC 5230 §4): who, from where, and whether to send.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_vacation(
    rt: &mut Runtime<'_>,
    reason: String,
    subject: Option<String>,
    from: Option<String>,
    addresses: &[String],
    mime: bool,
    handle: String,
    period: u64,
) -> Vacation {
    let msg = &rt.message;
    let sender = address::envelope_spec(&rt.envelope.from).unwrap_or_default();
    let orig_subject = msg
        .header_values("subject")
        .into_iter()
        .next()
        .unwrap_or_default();
    let subject = match subject {
        Some(s) => s,
        None => {
            let dflt = rt
                .cfg
                .settings
                .get("sieve_vacation_default_subject")
                .cloned();
            let tmpl = rt
                .cfg
                .settings
                .get("sieve_vacation_default_subject_template")
                .cloned();
            match (tmpl, dflt) {
                (Some(t), _) if !t.is_empty() => t
                    .replace("%$", &orig_subject)
                    .replace("%{subject}", &orig_subject),
                (_, Some(d)) if !d.is_empty() => d,
                _ => format!("Auto: {orig_subject}"),
            }
        }
    };
    // Pigeonhole limits the subject to 256 characters, marking the cut with an ellipsis.
    let subject = if subject.chars().count() > 256 {
        let mut t: String = subject.chars().take(256).collect();
        t.push('\u{2026}');
        t
    } else {
        subject
    };
    let setting = |k: &str| rt.cfg.settings.get(k).is_some_and(|v| v.trim() == "yes");
    // Our addresses: the envelope recipient, :addresses and the user's address.
    let mut mine: Vec<String> = Vec::new();
    if let Some(u) = &rt.cfg.user_email {
        mine.push(u.clone());
    }
    if let Some(a) = address::envelope_spec(&rt.envelope.to).filter(|a| !a.is_empty()) {
        mine.push(a);
    }
    if setting("sieve_vacation_use_original_recipient")
        && let Some(a) = rt
            .envelope
            .orig_to
            .as_deref()
            .and_then(address::envelope_spec)
            .filter(|a| !a.is_empty())
    {
        mine.push(a);
    }
    for a in addresses {
        if let Some(x) = addr_of(a) {
            mine.push(x);
        }
    }
    let is_mine = |a: &str| mine.iter().any(|m| m.eq_ignore_ascii_case(a));
    // Which of our addresses the message was sent to.
    let mut hit: Option<String> = None;
    for h in ["to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"] {
        for v in msg.header_values(h) {
            for a in address::parse_list(&v) {
                let s = a.addr_spec();
                if hit.is_none()
                    && matches!(
                        a,
                        Address::Mailbox {
                            domain: Some(_),
                            ..
                        }
                    )
                    && is_mine(&s)
                {
                    hit = Some(s);
                }
            }
        }
    }
    let lsender = sender.to_ascii_lowercase();
    let local = lsender.split('@').next().unwrap_or("");
    let auto =
        first_header(msg, "auto-submitted").is_some_and(|v| !v.trim().eq_ignore_ascii_case("no"));
    let precedence = first_header(msg, "precedence").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "bulk" | "list" | "junk"
        )
    });
    let list = [
        "list-id",
        "list-help",
        "list-subscribe",
        "list-unsubscribe",
        "list-post",
        "list-owner",
        "list-archive",
    ]
    .iter()
    .any(|h| msg.fields(h).next().is_some());
    let system_sender = local == "mailer-daemon"
        || local == "listserv"
        || local == "majordomo"
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.contains("-owner")
        || local == "postmaster";
    let sender_is_me = is_mine(&sender);
    let suppress = first_header(msg, "x-auto-response-suppress").is_some_and(|v| {
        v.split(',')
            .any(|t| matches!(t.trim().to_ascii_lowercase().as_str(), "all" | "oof"))
    });
    let dont_check = setting("sieve_vacation_dont_check_recipient")
        || rt
            .cfg
            .settings
            .get("sieve_vacation_check_recipient")
            .is_some_and(|v| v.trim() == "no");
    let send = !sender.is_empty()
        && (hit.is_some() || dont_check)
        && !suppress
        && !auto
        && !precedence
        && !list
        && !system_sender
        && !sender_is_me
        && !rt.host.vacation_responded(&handle, &sender);
    let from_addr = match from {
        Some(f) if !f.is_empty() => f,
        _ => hit
            .clone()
            .or_else(|| mine.first().cloned())
            .unwrap_or_default(),
    };
    let in_reply_to = first_header(msg, "message-id");
    let references = match (first_header(msg, "references"), in_reply_to.clone()) {
        (Some(r), Some(i)) => Some(format!("{r} {i}")),
        (None, Some(i)) => Some(i),
        (r, None) => r,
    };
    // The To field: the sender's own header field when it names the sender.
    let ignore_env = setting("sieve_vacation_to_header_ignore_envelope");
    let mut to_header = format!("<{sender}>");
    let mut recipient = sender.clone();
    for h in ["sender", "from"] {
        if let Some(v) = first_header(msg, h) {
            let decoded = crate::message::decode_rfc2047(&v);
            if let Some(a) = addr_of(&decoded)
                && (ignore_env || a.eq_ignore_ascii_case(&sender))
            {
                to_header = v.clone();
                if ignore_env {
                    recipient = a;
                }
                break;
            }
        }
    }
    let envelope_from = if setting("sieve_vacation_send_from_recipient") {
        address::envelope_spec(&rt.envelope.to).unwrap_or_default()
    } else {
        String::new()
    };
    Vacation {
        recipient,
        to_header,
        from: from_addr,
        subject,
        reason,
        mime,
        handle,
        period,
        in_reply_to,
        references,
        send,
        envelope_from,
    }
}

/// The message to redirect: the (possibly edited) message with an
/// `X-Sieve-Redirected-From` field naming the recipient, for loop detection.
pub fn redirect_message(message: &[u8], recipient: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    if !recipient.is_empty() {
        out.extend_from_slice(format!("X-Sieve-Redirected-From: {recipient}\r\n").as_bytes());
    }
    out.extend_from_slice(message);
    out
}

/// Whether `message` already passed through a redirect by `me` (an
/// `X-Sieve-Redirected-From` field naming it): redirecting again would loop.
pub fn redirect_loop(message: &[u8], me: &str) -> bool {
    let m = Message::parse(message);
    m.header_values("x-sieve-redirected-from")
        .iter()
        .any(|v| addr_of(v).is_some_and(|a| a.eq_ignore_ascii_case(me)))
}

/// Build the vacation reply message.
pub fn vacation_message(v: &Vacation) -> Outgoing {
    let mut m = String::new();
    m.push_str(&format!("From:{}\r\n", fold_header("From", &v.from)));
    m.push_str(&format!("To: {}\r\n", v.to_header));
    m.push_str(&format!(
        "Subject:{}\r\n",
        fold_header("Subject", &v.subject)
    ));
    if let Some(i) = &v.in_reply_to {
        m.push_str(&format!("In-Reply-To: {i}\r\n"));
    }
    if let Some(r) = &v.references {
        m.push_str(&format!("References:{}\r\n", fold_header("References", r)));
    }
    m.push_str("Auto-Submitted: auto-replied (vacation)\r\n");
    m.push_str("Precedence: bulk\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    if v.mime {
        m.push_str(
            &crate::message::to_crlf(v.reason.as_bytes())
                .iter()
                .map(|&b| char::from(b))
                .collect::<String>(),
        );
        let bytes = [m.as_bytes(), b""].concat();
        return Outgoing {
            from: v.envelope_from.clone(),
            to: v.recipient.clone(),
            message: crate::message::to_crlf(&bytes),
        };
    }
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    m.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(&crate::message::to_crlf(v.reason.as_bytes()));
    Outgoing {
        from: v.envelope_from.clone(),
        to: v.recipient.clone(),
        message: bytes,
    }
}

/// Build the rejection notice returned to the sender (RFC 5429 §2.1).
pub fn reject_message(
    reason: &str,
    original: &[u8],
    sender: &str,
    recipient: &str,
    cfg: &Config,
) -> Outgoing {
    let domain = recipient.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let postmaster = cfg
        .settings
        .get("postmaster_address")
        .cloned()
        .unwrap_or_else(|| format!("postmaster@{domain}"));
    let boundary = "cursus-sieve-reject-boundary";
    let orig = Message::parse(original);
    let subj = orig
        .header_values("subject")
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut m = String::new();
    m.push_str(&format!("From: Postmaster <{postmaster}>\r\n"));
    m.push_str(&format!("To: <{sender}>\r\n"));
    m.push_str(&format!(
        "Subject:{}\r\n",
        fold_header("Subject", &format!("Rejected: {subj}"))
    ));
    m.push_str("Auto-Submitted: auto-replied (rejected)\r\n");
    m.push_str("Precedence: bulk\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("Content-Type: multipart/report; report-type=disposition-notification;\r\n\tboundary=\"{boundary}\"\r\n\r\n"));
    m.push_str("This is a MIME-encapsulated message\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"));
    m.push_str(&format!(
        "Your message to <{recipient}> was automatically rejected:\r\n"
    ));
    m.push_str(&String::from_utf8_lossy(&crate::message::to_crlf(
        reason.as_bytes(),
    )));
    m.push_str("\r\n\r\n");
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n"
    ));
    m.push_str("Reporting-UA: Cursus Sieve\r\n");
    m.push_str(&format!("Final-Recipient: rfc822; {recipient}\r\n"));
    m.push_str("Disposition: automatic-action/MDN-sent-automatically; deleted\r\n\r\n");
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
    ));
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(&orig.to_bytes());
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Outgoing {
        from: String::new(),
        to: sender.to_string(),
        message: bytes,
    }
}

/// A parsed `mailto:` URI (RFC 6068): recipients by role and extra header fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mailto {
    /// To recipients as written (display names kept).
    pub to: Vec<String>,
    /// Cc recipients as written.
    pub cc: Vec<String>,
    /// Bcc recipients.
    pub bcc: Vec<String>,
    /// `subject=`
    pub subject: Option<String>,
    /// `body=`
    pub body: Option<String>,
    /// Other header fields.
    pub headers: Vec<(String, String)>,
}

fn split_addrs(v: &str) -> Vec<String> {
    v.split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

/// Parse a `mailto:` URI; `None` when it is not one.
pub fn parse_mailto(uri: &str) -> Option<Mailto> {
    let rest = uri
        .strip_prefix("mailto:")
        .or_else(|| uri.strip_prefix("MAILTO:"))?;
    let (to, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut m = Mailto {
        to: split_addrs(&crate::actions::percent_decode(to)?),
        ..Mailto::default()
    };
    for kv in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k = crate::actions::percent_decode(k)?.to_ascii_lowercase();
        let v = crate::actions::percent_decode(v)?;
        match k.as_str() {
            "to" => m.to.extend(split_addrs(&v)),
            "cc" => m.cc.extend(split_addrs(&v)),
            "bcc" => m.bcc.extend(split_addrs(&v)),
            "subject" => m.subject = Some(v),
            "body" => m.body = Some(v),
            "from"
            | "auto-submitted"
            | "received"
            | "return-path"
            | "message-id"
            | "date"
            | "mime-version"
            | "content-type"
            | "content-transfer-encoding"
            | "sender"
            | "reply-to"
            | "x-sieve" => {}
            _ => m.headers.push((k, v)),
        }
    }
    Some(m)
}

/// Build the messages of a mailto notification (RFC 5436): one per recipient not
/// already in `notified` (which is updated). Nothing is sent about auto-submitted
/// messages (RFC 5436 §2.7).
pub fn notify_messages(
    n: &crate::actions::Notify,
    original: &Message,
    envelope: &crate::Envelope,
    cfg: &Config,
    notified: &mut Vec<String>,
) -> Vec<Outgoing> {
    let Some(uri) = parse_mailto(&n.method) else {
        return Vec::new();
    };
    if first_header(original, "auto-submitted")
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("no"))
    {
        return Vec::new();
    }
    let keep = |list: &[String], notified: &mut Vec<String>| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for a in list {
            let decoded = crate::message::decode_rfc2047(a);
            let Some(spec) = addr_of(&decoded) else {
                continue;
            };
            if notified.iter().any(|x| x.eq_ignore_ascii_case(&spec)) {
                continue;
            }
            notified.push(spec.clone());
            out.push((a.clone(), spec));
        }
        out
    };
    let to = keep(&uri.to, notified);
    let cc = keep(&uri.cc, notified);
    let bcc = keep(&uri.bcc, notified);
    let domain = envelope
        .to
        .rsplit_once('@')
        .map_or("localhost", |(_, d)| d.trim_end_matches('>'));
    let postmaster = cfg
        .settings
        .get("postmaster_address")
        .cloned()
        .unwrap_or_else(|| format!("postmaster@{domain}"));
    let from_header = n
        .from
        .clone()
        .unwrap_or_else(|| format!("Postmaster <{postmaster}>"));
    let env_from = if address::envelope_spec(&envelope.from).is_some_and(|f| f.is_empty()) {
        String::new()
    } else {
        match cfg
            .settings
            .get("sieve_notify_mailto_envelope_from")
            .map(|s| s.trim())
        {
            Some("sender") => address::envelope_spec(&envelope.from).unwrap_or_default(),
            Some("recipient") => address::envelope_spec(&envelope.to).unwrap_or_default(),
            Some("user_email") => cfg.user_email.clone().unwrap_or_else(|| postmaster.clone()),
            Some(s) if s.starts_with('<') => s.trim_matches(['<', '>']).to_string(),
            _ => n
                .from
                .as_deref()
                .and_then(addr_of)
                .unwrap_or_else(|| postmaster.clone()),
        }
    };
    let subject = uri.subject.clone().unwrap_or_else(|| {
        let s = first_header(original, "subject")
            .map(|s| crate::message::decode_rfc2047(&s))
            .unwrap_or_default();
        format!(
            "[SIEVE] New mail notification{}",
            if s.is_empty() {
                String::new()
            } else {
                format!(": {s}")
            }
        )
    });
    let body = uri.body.clone().unwrap_or_else(|| n.message.clone());
    let (prio, imp) = match n.importance {
        1 => ("1 (Highest)", "High"),
        3 => ("5 (Lowest)", "Low"),
        _ => ("3 (Normal)", "Normal"),
    };
    let mut m = String::new();
    m.push_str(&format!("From:{}\r\n", fold_header("From", &from_header)));
    if !to.is_empty() {
        let v: Vec<&str> = to.iter().map(|(a, _)| a.as_str()).collect();
        m.push_str(&format!("To: {}\r\n", v.join(", ")));
    }
    if !cc.is_empty() {
        let v: Vec<&str> = cc.iter().map(|(a, _)| a.as_str()).collect();
        m.push_str(&format!("Cc: {}\r\n", v.join(", ")));
    }
    m.push_str(&format!("Subject:{}\r\n", fold_header("Subject", &subject)));
    for (k, v) in &uri.headers {
        m.push_str(&format!("{k}:{}\r\n", fold_header(k, v)));
    }
    m.push_str("Auto-Submitted: auto-notified; owner-email=\"");
    m.push_str(&address::envelope_spec(&envelope.to).unwrap_or_default());
    m.push_str("\"\r\n");
    m.push_str("X-Sieve: Cursus Sieve\r\n");
    m.push_str(&format!("X-Priority: {prio}\r\nImportance: {imp}\r\n"));
    m.push_str("Precedence: bulk\r\n");
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(&crate::message::to_crlf(body.as_bytes()));
    bytes.extend_from_slice(b"\r\n");
    to.iter()
        .chain(cc.iter())
        .chain(bcc.iter())
        .map(|(_, spec)| Outgoing {
            from: env_from.clone(),
            to: spec.clone(),
            message: bytes.clone(),
        })
        .collect()
}

fn status_header(rt: &Runtime<'_>, prefix: &str) -> Option<(String, Option<regex::Regex>)> {
    let spec = rt
        .cfg
        .settings
        .get(&format!("sieve_{prefix}_status_header"))?;
    match spec.split_once(':') {
        Some((h, re)) => Some((h.trim().to_string(), regex::Regex::new(re.trim()).ok())),
        None => Some((spec.trim().to_string(), None)),
    }
}

fn header_number(rt: &Runtime<'_>, prefix: &str) -> Option<(String, bool)> {
    let (h, re) = status_header(rt, prefix)?;
    let v = rt.message.header_values(&h).into_iter().next()?;
    let v = v.trim().to_string();
    if h.is_empty() {
        return None;
    }
    let s = match re {
        Some(re) => re.captures(&v)?.get(1).map(|m| m.as_str().to_string())?,
        None => v,
    };
    Some((s, true))
}

fn parse_f64(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

/// The spamtest value (RFC 5235 §3.2): "0" when untested, 1..10 otherwise; with
/// `percent`, 0..100.
pub(crate) fn spamtest_value(rt: &Runtime<'_>, percent: bool) -> String {
    let Some((raw, _)) = header_number(rt, "spamtest") else {
        return "0".into();
    };
    let typ = rt
        .cfg
        .settings
        .get("sieve_spamtest_status_type")
        .map_or("score", |s| s.trim());
    let max = rt
        .cfg
        .settings
        .get("sieve_spamtest_score_max_value")
        .and_then(|s| parse_f64(s))
        .or_else(|| {
            let spec = rt.cfg.settings.get("sieve_spamtest_score_max_header")?;
            let (h, re) = spec
                .split_once(':')
                .map_or((spec.as_str(), None), |(h, r)| (h, Some(r)));
            let v = rt.message.header_values(h.trim()).into_iter().next()?;
            let s = match re {
                Some(re) => regex::Regex::new(re.trim())
                    .ok()?
                    .captures(v.trim())?
                    .get(1)?
                    .as_str()
                    .to_string(),
                None => v,
            };
            parse_f64(&s)
        });
    let ratio = match typ {
        "strlen" => {
            let m = max.unwrap_or(10.0);
            if m <= 0.0 {
                return "0".into();
            }
            raw.chars().count() as f64 / m
        }
        "text" => {
            for i in (1..=10).rev() {
                if let Some(t) = rt
                    .cfg
                    .settings
                    .get(&format!("sieve_spamtest_text_value/{i}"))
                    && t.trim() == raw
                {
                    if percent {
                        return format!("{}", ((i - 1) as f64 * 100.0 / 9.0).round() as i64);
                    }
                    return i.to_string();
                }
            }
            return "0".into();
        }
        _ => {
            let Some(v) = parse_f64(&raw) else {
                return "0".into();
            };
            let Some(m) = max else { return "0".into() };
            if m <= 0.0 {
                return "0".into();
            }
            v / m
        }
    };
    scale(ratio, percent, true)
}

fn scale(ratio: f64, percent: bool, spam: bool) -> String {
    let r = ratio.clamp(0.0, 1.0);
    if percent {
        return format!("{}", (r * 100.0).round() as i64);
    }
    if spam {
        format!("{}", 1 + (r * 9.0 + 1e-9).floor() as i64)
    } else {
        format!("{}", 1 + (r * 4.0 + 1e-9).floor() as i64)
    }
}

/// The virustest value (RFC 5235 §3.3): "0" untested, 1 clean .. 5 infected.
pub(crate) fn virustest_value(rt: &Runtime<'_>) -> String {
    let Some((raw, _)) = header_number(rt, "virustest") else {
        return "0".into();
    };
    let typ = rt
        .cfg
        .settings
        .get("sieve_virustest_status_type")
        .map_or("score", String::as_str);
    match typ {
        "text" => {
            for i in (1..=5).rev() {
                if let Some(t) = rt
                    .cfg
                    .settings
                    .get(&format!("sieve_virustest_text_value/{i}"))
                    && t == &raw
                {
                    return i.to_string();
                }
            }
            "0".into()
        }
        "strlen" => {
            let m = rt
                .cfg
                .settings
                .get("sieve_virustest_max_value")
                .and_then(|s| parse_f64(s))
                .unwrap_or(5.0);
            scale(raw.chars().count() as f64 / m, false, false)
        }
        _ => {
            let m = rt
                .cfg
                .settings
                .get("sieve_virustest_max_value")
                .and_then(|s| parse_f64(s))
                .unwrap_or(5.0);
            match parse_f64(&raw) {
                Some(v) if m > 0.0 => scale(v / m, false, false),
                _ => "0".into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding() {
        assert_eq!(fold_header("X", "short"), " short");
        let long = "word ".repeat(30);
        let f = fold_header("Subject", long.trim());
        assert!(f.contains("\r\n "));
        assert!(fold_header("Comment", "unerhört").contains("=?utf-8?b?"));
    }

    #[test]
    fn protected() {
        let c = Config::default();
        assert!(is_protected_header(&c, "Received", false));
        assert!(!is_protected_header(&c, "Subject", false));
    }
}
