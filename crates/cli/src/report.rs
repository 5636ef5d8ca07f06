//! The action report of `cursus sieve test`, laid out like Pigeonhole's sieve-test(1) so
//! that users who know one recognise the other:
//!
//! ```text
//!
//! Performed actions:
//!
//!  * store message in folder: Junk
//!
//! Implicit keep:
//!
//!   (none)
//!
//! ```
//!
//! Trusts the outcome the interpreter returned; only formats it. Cannot fail. Lines that
//! Pigeonhole does not print (the vacation recipient, a suppressed vacation response, the
//! ereject mode, a special-use fallback) use the same ` * ` / `+ ` / `=> ` markers.

use std::fmt::Write as _;

use cursus_sieve::{Action, Notify, Outcome, Vacation};

/// Renders `outcome` in sieve-test's layout; `default_mailbox` is where keep stores.
pub fn render(outcome: &Outcome, default_mailbox: &str) -> String {
    let (implicit, explicit): (Vec<&Action>, Vec<&Action>) = outcome
        .actions
        .iter()
        .partition(|a| matches!(a, Action::Keep { implicit: true, .. }));
    let mut out = String::from("\nPerformed actions:\n\n");
    section(&mut out, &explicit, default_mailbox);
    out.push_str("\nImplicit keep:\n\n");
    section(&mut out, &implicit, default_mailbox);
    out.push('\n');
    out
}

/// The report of a run that failed: nothing performed, the message kept.
pub fn render_failed(default_mailbox: &str) -> String {
    let keep = Action::Keep {
        flags: Vec::new(),
        implicit: true,
        message: None,
    };
    render(
        &Outcome {
            actions: vec![keep],
            edited_messages: Vec::new(),
        },
        default_mailbox,
    )
}

fn section(out: &mut String, actions: &[&Action], default_mailbox: &str) {
    if actions.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    for action in actions {
        action_lines(out, action, default_mailbox);
    }
}

fn side_effect(out: &mut String, text: &str) {
    let _ = writeln!(out, "        + {text}");
}

fn flags_line(out: &mut String, flags: &[String]) {
    if !flags.is_empty() {
        side_effect(out, &format!("add IMAP flags: {}", flags.join(" ")));
    }
}

fn action_lines(out: &mut String, action: &Action, default_mailbox: &str) {
    match action {
        Action::Keep { flags, .. } => {
            let _ = writeln!(out, " * store message in folder: {default_mailbox}");
            flags_line(out, flags);
        }
        Action::FileInto {
            mailbox,
            flags,
            copy,
            create,
            special_use,
            ..
        } => {
            let _ = writeln!(out, " * store message in folder: {mailbox}");
            if let Some(use_) = special_use {
                side_effect(out, &format!("use special-use mailbox: {use_}"));
            }
            if *create {
                side_effect(out, "create mailbox if it does not exist");
            }
            flags_line(out, flags);
            if *copy {
                side_effect(out, "preserve implicit keep");
            }
        }
        Action::Redirect { address, copy, .. } => {
            let _ = writeln!(out, " * redirect message to: <{address}>");
            if *copy {
                side_effect(out, "preserve implicit keep");
            }
        }
        Action::Reject { reason, extended } => {
            let _ = writeln!(out, " * reject message with reason: {reason}");
            if *extended {
                side_effect(out, "in the SMTP transaction when possible (ereject)");
            }
        }
        Action::Discard => out.push_str(" * discard\n"),
        Action::Vacation(v) => vacation_lines(out, v),
        Action::Notify(n) => notify_lines(out, n),
    }
}

fn vacation_lines(out: &mut String, v: &Vacation) {
    out.push_str(" * send vacation message:\n");
    let _ = writeln!(out, "    => seconds : {}", v.period);
    if !v.subject.is_empty() {
        let _ = writeln!(out, "    => subject : {}", v.subject);
    }
    if !v.from.is_empty() {
        let _ = writeln!(out, "    => from    : {}", v.from);
    }
    let _ = writeln!(out, "    => to      : {}", v.recipient);
    let _ = writeln!(out, "    => handle  : {}", v.handle);
    if v.mime {
        let _ = writeln!(out, "    => mime    : yes");
    }
    if !v.send {
        let _ = writeln!(
            out,
            "    => send    : no (RFC 5230 section 4.5/4.6: no response to this message)"
        );
    }
    out.push_str("\nSTART MESSAGE\n");
    out.push_str(&v.reason);
    if !v.reason.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("END MESSAGE\n");
}

fn notify_lines(out: &mut String, n: &Notify) {
    let scheme = n.method.split_once(':').map_or("", |(s, _)| s);
    let _ = writeln!(out, " * send notification with method '{scheme}:':");
    let _ = writeln!(out, "    => importance   : {}", n.importance);
    if let Some(from) = &n.from {
        let _ = writeln!(out, "    => from         : {from}");
    }
    let _ = writeln!(out, "    => subject      : {}", n.message);
    if !n.options.is_empty() {
        let _ = writeln!(out, "    => options      : {}", n.options.join(" "));
    }
    out.push_str("    => recipients   :\n");
    match cursus_sieve::actions::mailto_recipients(&n.method) {
        Ok(rcpts) => {
            for r in rcpts {
                let _ = writeln!(out, "       + To: {r}");
            }
        }
        Err(_) => {
            let _ = writeln!(out, "       + URI: {}", n.method);
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fileinto(mailbox: &str, copy: bool) -> Action {
        Action::FileInto {
            mailbox: mailbox.into(),
            flags: Vec::new(),
            copy,
            create: false,
            special_use: None,
            message: None,
        }
    }

    #[test]
    fn layout_matches_sieve_test() {
        let outcome = Outcome {
            actions: vec![
                fileinto("Junk", false),
                Action::Redirect {
                    address: "a@b.c".into(),
                    copy: true,
                    message: None,
                },
                Action::Discard,
            ],
            edited_messages: Vec::new(),
        };
        assert_eq!(
            render(&outcome, "INBOX"),
            "\nPerformed actions:\n\n \
             * store message in folder: Junk\n \
             * redirect message to: <a@b.c>\n        + preserve implicit keep\n \
             * discard\n\nImplicit keep:\n\n  (none)\n\n"
        );
    }

    #[test]
    fn implicit_keep_goes_to_its_own_section() {
        let outcome = Outcome {
            actions: vec![
                fileinto("A", true),
                Action::Keep {
                    flags: vec!["\\Seen".into()],
                    implicit: true,
                    message: None,
                },
            ],
            edited_messages: Vec::new(),
        };
        assert_eq!(
            render(&outcome, "INBOX"),
            "\nPerformed actions:\n\n \
             * store message in folder: A\n        + preserve implicit keep\n\n\
             Implicit keep:\n\n \
             * store message in folder: INBOX\n        + add IMAP flags: \\Seen\n\n"
        );
    }

    #[test]
    fn failed_run_keeps() {
        assert_eq!(
            render_failed("INBOX"),
            "\nPerformed actions:\n\n  (none)\n\nImplicit keep:\n\n \
             * store message in folder: INBOX\n\n"
        );
    }
}
