//! Rendering generated cases as Sieve source and RFC 5322 messages.
//!
//! Trusts the grammar to give values from its fixed vocabularies; quotes every string, so no
//! value can break out of its string literal. Cannot fail.

use std::fmt::Write as _;

use super::grammar::{COPY_TARGETS, Cmd, Match, MatchType, Message, Part, Test};

pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

pub(crate) fn string_list(items: &[impl AsRef<str>]) -> String {
    if let [one] = items {
        return quote(one.as_ref());
    }
    let quoted: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

#[derive(Default)]
pub(crate) struct Requires {
    fileinto: bool,
    envelope: bool,
    copy: bool,
    variables: bool,
    subaddress: bool,
}

impl Requires {
    fn list(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (used, name) in [
            (self.fileinto, "fileinto"),
            (self.envelope, "envelope"),
            (self.copy, "copy"),
            (self.variables, "variables"),
            (self.subaddress, "subaddress"),
        ] {
            if used {
                out.push(name);
            }
        }
        out
    }
}

pub(crate) fn render_match(out: &mut String, m: &Match) {
    out.push_str(match m.match_type {
        MatchType::Is => " :is",
        MatchType::Contains => " :contains",
        MatchType::Matches => " :matches",
    });
    if m.octet {
        out.push_str(" :comparator \"i;octet\"");
    }
}

pub(crate) fn render_part(out: &mut String, p: Part, req: &mut Requires) {
    out.push_str(match p {
        Part::All => " :all",
        Part::Local => " :localpart",
        Part::Domain => " :domain",
        Part::User => " :user",
        Part::Detail => " :detail",
    });
    if matches!(p, Part::User | Part::Detail) {
        req.subaddress = true;
    }
}

pub(crate) fn render_test(out: &mut String, t: &Test, req: &mut Requires) {
    match t {
        Test::Header(m, names) => {
            out.push_str("header");
            render_match(out, m);
            let _ = write!(out, " {} {}", string_list(names), string_list(&m.keys));
        }
        Test::Address(m, p, names) => {
            out.push_str("address");
            render_part(out, *p, req);
            render_match(out, m);
            let _ = write!(out, " {} {}", string_list(names), string_list(&m.keys));
        }
        Test::Envelope(m, p, names) => {
            req.envelope = true;
            out.push_str("envelope");
            render_part(out, *p, req);
            render_match(out, m);
            let _ = write!(out, " {} {}", string_list(names), string_list(&m.keys));
        }
        Test::Exists(names) => {
            let _ = write!(out, "exists {}", string_list(names));
        }
        Test::Size { over, limit } => {
            let _ = write!(
                out,
                "size {} {limit}",
                if *over { ":over" } else { ":under" }
            );
        }
        Test::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Test::Not(inner) => {
            out.push_str("not ");
            render_test(out, inner, req);
        }
        Test::AllOf(tests) | Test::AnyOf(tests) => {
            out.push_str(if matches!(t, Test::AllOf(_)) {
                "allof("
            } else {
                "anyof("
            });
            for (i, t) in tests.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_test(out, t, req);
            }
            out.push(')');
        }
    }
}

pub(crate) fn render_block(out: &mut String, cmds: &[Cmd], depth: usize, req: &mut Requires) {
    let indent = "    ".repeat(depth);
    for cmd in cmds {
        out.push_str(&indent);
        match cmd {
            Cmd::If {
                branches,
                otherwise,
            } => {
                for (i, (test, body)) in branches.iter().enumerate() {
                    out.push_str(if i == 0 { "if " } else { " elsif " });
                    render_test(out, test, req);
                    out.push_str(" {\n");
                    render_block(out, body, depth + 1, req);
                    out.push_str(&indent);
                    out.push('}');
                }
                if let Some(body) = otherwise {
                    out.push_str(" else {\n");
                    render_block(out, body, depth + 1, req);
                    out.push_str(&indent);
                    out.push('}');
                }
                out.push('\n');
            }
            Cmd::FileInto(mailbox) => {
                req.fileinto = true;
                req.variables |= mailbox.contains("${");
                let copy = copy_tag(mailbox, req);
                let _ = writeln!(out, "fileinto {copy}{};", quote(mailbox));
            }
            Cmd::Redirect(address) => {
                let copy = copy_tag(address, req);
                let _ = writeln!(out, "redirect {copy}{};", quote(address));
            }
            Cmd::Keep => out.push_str("keep;\n"),
            Cmd::Discard => out.push_str("discard;\n"),
            Cmd::Stop => out.push_str("stop;\n"),
            Cmd::Set {
                name,
                modifier,
                value,
            } => {
                req.variables = true;
                let modifier = modifier.map(|m| format!("{m} ")).unwrap_or_default();
                let _ = writeln!(out, "set {modifier}{} {};", quote(name), quote(value));
            }
        }
    }
}

pub(crate) fn copy_tag(target: &str, req: &mut Requires) -> &'static str {
    if COPY_TARGETS.contains(&target) {
        req.copy = true;
        ":copy "
    } else {
        ""
    }
}

pub(crate) fn render_script(cmds: &[Cmd]) -> String {
    let mut req = Requires::default();
    let mut body = String::new();
    render_block(&mut body, cmds, 0, &mut req);
    let list = req.list();
    if list.is_empty() {
        body
    } else {
        format!("require {};\n{body}", string_list(&list))
    }
}

pub(crate) fn render_message(m: &Message) -> Vec<u8> {
    let mut lines = vec![
        format!("From: {}", m.from),
        format!("To: {}", m.to.join(", ")),
    ];
    if let Some(cc) = m.cc {
        lines.push(format!("Cc: {cc}"));
    }
    lines.push(format!("Subject: {}", m.subject));
    if let Some(l) = m.list_id {
        lines.push(format!("List-Id: {l}"));
    }
    if let Some(s) = m.spam_flag {
        lines.push(format!("X-Spam-Flag: {s}"));
    }
    for l in &m.labels {
        lines.push(format!("X-Label: {l}"));
    }
    lines.push("Message-ID: <oracle-1@example.org>".into());
    lines.push("Date: Sat, 22 Nov 2025 07:00:00 +0000".into());
    lines.push(String::new());
    lines.push("Hello, this is the body of the message.".into());
    lines.push("It has a few lines.".into());
    // Values may hold folded lines ("\n "): one line end everywhere.
    let mut out = lines.join("\n");
    out.push('\n');
    if m.crlf {
        out = out.replace('\n', "\r\n");
    }
    out.into_bytes()
}
