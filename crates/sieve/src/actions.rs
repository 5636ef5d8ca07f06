//! The result of an evaluation: the action list, implicit keep, and the rules that merge
//! duplicate actions and refuse conflicting ones (RFC 5228 §4, RFC 5429 §2.1, RFC 5230 §4.7).
//!
//! Trusts the evaluator to pass expanded, validated values. Limits (total actions,
//! redirects, notifications) are enforced here; exceeding one or combining actions that
//! cannot go together is a runtime error, so the caller falls back to implicit keep.

use crate::address;

/// A vacation response to send (RFC 5230).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vacation {
    /// Who gets the response (the envelope sender of the message).
    pub recipient: String,
    /// The To field of the response (the sender's own From/Sender field when it names
    /// the same address).
    pub to_header: String,
    /// The From address of the response (`:from`, or the user's address).
    pub from: String,
    /// Subject of the response.
    pub subject: String,
    /// The reason text (a MIME entity when `mime`).
    pub reason: String,
    /// `:mime`: the reason is a MIME part.
    pub mime: bool,
    /// Handle for the response memory.
    pub handle: String,
    /// How long to wait before responding again to the same sender, in seconds.
    pub period: u64,
    /// Message-ID of the message being answered, for In-Reply-To and References.
    pub in_reply_to: Option<String>,
    /// References of the message being answered.
    pub references: Option<String>,
    /// False when RFC 5230 §4 says not to respond (the action is still listed).
    pub send: bool,
    /// MAIL FROM of the response: empty (the null sender) unless configured to be the
    /// recipient's address.
    pub envelope_from: String,
}

/// A notification (RFC 5435).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Method URI (only `mailto:` is supported).
    pub method: String,
    /// `:from`
    pub from: Option<String>,
    /// Importance 1 (high) to 3 (low), default 2.
    pub importance: u8,
    /// `:options`
    pub options: Vec<String>,
    /// The message text.
    pub message: String,
}

/// One action of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Store into the default mailbox.
    Keep {
        /// IMAP flags to set.
        flags: Vec<String>,
        /// Whether this is the implicit keep.
        implicit: bool,
        /// Index into [`Outcome::edited_messages`] when editheader changed the message.
        message: Option<usize>,
    },
    /// Store into a mailbox.
    FileInto {
        /// Mailbox name (UTF-8).
        mailbox: String,
        /// IMAP flags to set.
        flags: Vec<String>,
        /// `:copy` (does not cancel implicit keep).
        copy: bool,
        /// `:create` the mailbox if missing.
        create: bool,
        /// `:specialuse` fallback (RFC 8579).
        special_use: Option<String>,
        /// Index into [`Outcome::edited_messages`].
        message: Option<usize>,
    },
    /// Forward to an address.
    Redirect {
        /// The addr-spec.
        address: String,
        /// `:copy`
        copy: bool,
        /// Index into [`Outcome::edited_messages`].
        message: Option<usize>,
    },
    /// Refuse the message.
    Reject {
        /// The reason.
        reason: String,
        /// ereject: refuse in the SMTP transaction if possible.
        extended: bool,
    },
    /// Silently drop (cancels implicit keep).
    Discard,
    /// Send a vacation response.
    Vacation(Vacation),
    /// Send a notification.
    Notify(Notify),
}

/// A `pipe` action (vnd.dovecot.pipe). Kept beside the [`Action`] list, not in it, until
/// the delivery agent handles it; only scripts compiled with `Config::extprograms` can
/// produce one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeAction {
    /// Program name.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// `:copy` (does not cancel implicit keep).
    pub copy: bool,
    /// `:try`: failure does not fail the result.
    pub try_: bool,
    /// Index into the edited messages of the result.
    pub message: Option<usize>,
}

impl Action {
    /// Pigeonhole's name for the action ("store" for fileinto).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Keep { .. } => "keep",
            Action::FileInto { .. } => "store",
            Action::Redirect { .. } => "redirect",
            Action::Reject { .. } => "reject",
            Action::Discard => "discard",
            Action::Vacation(_) => "vacation",
            Action::Notify(_) => "notify",
        }
    }
}

/// What an evaluation decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The actions in the order they were taken; the implicit keep, if it applies, is
    /// the last one and is marked `implicit`.
    pub actions: Vec<Action>,
    /// Messages as changed by editheader, referred to by the actions.
    pub edited_messages: Vec<Vec<u8>>,
}

impl Outcome {
    /// Whether the message ends up in the default mailbox (explicitly or implicitly).
    pub fn keeps(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Keep { .. }))
    }
}

/// Limits the result enforces.
#[derive(Debug, Clone, Copy)]
pub struct ActionLimits {
    /// Total actions.
    pub max_actions: usize,
    /// Redirects.
    pub max_redirects: usize,
    /// Notifications.
    pub max_notifications: usize,
}

/// The result under construction.
#[derive(Debug, Clone, Default)]
pub struct ResultSet {
    /// Actions so far (no implicit keep).
    pub actions: Vec<Action>,
    /// Whether implicit keep is still in force.
    pub implicit_keep: bool,
    /// Edited message snapshots.
    pub edited: Vec<Vec<u8>>,
    /// Pipe actions (vnd.dovecot.pipe), in order.
    pub pipes: Vec<PipeAction>,
}

fn same_mailbox(a: &str, b: &str) -> bool {
    let inbox = |s: &str| s.eq_ignore_ascii_case("INBOX");
    a == b || (inbox(a) && inbox(b))
}

impl ResultSet {
    /// A fresh result: implicit keep in force.
    pub fn new() -> Self {
        ResultSet {
            actions: Vec::new(),
            implicit_keep: true,
            edited: Vec::new(),
            pipes: Vec::new(),
        }
    }

    /// Snapshot an edited message, reusing the previous identical snapshot.
    pub fn snapshot(&mut self, bytes: Vec<u8>) -> usize {
        if let Some(i) = self.edited.iter().position(|m| *m == bytes) {
            return i;
        }
        self.edited.push(bytes);
        self.edited.len() - 1
    }

    /// Add an action, merging duplicates and refusing conflicts.
    pub fn add(&mut self, action: Action, limits: &ActionLimits) -> Result<(), String> {
        // Conflicts with reject (RFC 5429 §2.1: reject vs. keep/fileinto/redirect/vacation).
        let is_reject = matches!(action, Action::Reject { .. });
        let delivers = |a: &Action| {
            matches!(
                a,
                Action::Keep { .. } | Action::FileInto { .. } | Action::Vacation(_)
            ) || matches!(a, Action::Redirect { copy: false, .. })
        };
        if is_reject {
            if let Some(other) = self
                .actions
                .iter()
                .find(|a| delivers(a) || matches!(a, Action::Reject { .. }))
            {
                let what = if matches!(other, Action::Reject { .. }) {
                    "another reject"
                } else {
                    other.name()
                };
                return Err(format!(
                    "reject action conflicts with earlier {what} action"
                ));
            }
        } else if delivers(&action)
            && self
                .actions
                .iter()
                .any(|a| matches!(a, Action::Reject { .. }))
        {
            return Err(format!(
                "{} action conflicts with earlier reject action",
                action.name()
            ));
        }
        // Duplicates.
        match &action {
            Action::Keep { flags, message, .. } => {
                for a in &mut self.actions {
                    let inbox = match a {
                        Action::FileInto { mailbox, .. } => same_mailbox(mailbox, "INBOX"),
                        Action::Keep { .. } => true,
                        _ => false,
                    };
                    if !inbox {
                        continue;
                    }
                    match a {
                        Action::Keep {
                            flags: f,
                            message: m,
                            ..
                        } => {
                            *f = flags.clone();
                            *m = *message;
                        }
                        Action::FileInto {
                            flags: f,
                            message: m,
                            copy,
                            ..
                        } => {
                            *f = flags.clone();
                            *m = *message;
                            *copy = false;
                        }
                        _ => {}
                    }
                    self.implicit_keep = false;
                    return Ok(());
                }
            }
            Action::FileInto {
                mailbox,
                flags,
                copy,
                message,
                ..
            } => {
                for a in &mut self.actions {
                    let hit = match a {
                        Action::FileInto { mailbox: m, .. } => same_mailbox(m, mailbox),
                        Action::Keep { .. } => same_mailbox(mailbox, "INBOX"),
                        _ => false,
                    };
                    if hit {
                        match a {
                            Action::FileInto {
                                flags: f,
                                copy: c,
                                message: m,
                                ..
                            } => {
                                *f = flags.clone();
                                *c = *c && *copy;
                                *m = *message;
                            }
                            Action::Keep {
                                flags: f,
                                message: m,
                                ..
                            } => {
                                *f = flags.clone();
                                *m = *message;
                            }
                            _ => {}
                        }
                        if !copy {
                            self.implicit_keep = false;
                        }
                        return Ok(());
                    }
                }
            }
            Action::Redirect { address, copy, .. } => {
                for a in &mut self.actions {
                    if let Action::Redirect {
                        address: x,
                        copy: c,
                        ..
                    } = a
                        && x.eq_ignore_ascii_case(address)
                    {
                        *c = *c && *copy;
                        if !copy {
                            self.implicit_keep = false;
                        }
                        return Ok(());
                    }
                }
                let redirects = self
                    .actions
                    .iter()
                    .filter(|a| matches!(a, Action::Redirect { .. }))
                    .count();
                if redirects >= limits.max_redirects {
                    return Err("number of redirect actions exceeds policy limit".into());
                }
            }
            Action::Discard => {
                self.implicit_keep = false;
                if self.actions.iter().any(|a| matches!(a, Action::Discard)) {
                    return Ok(());
                }
            }
            Action::Vacation(_) => {
                if self
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Vacation(_)))
                {
                    return Err("duplicate vacation action not allowed".into());
                }
            }
            Action::Notify(n) => {
                if limits.max_notifications == 0 {
                    return Err("local policy prohibits the use of a notify action".into());
                }
                let same = self.actions.iter().any(|a| match a {
                    Action::Notify(o) => o.method == n.method && o.message == n.message,
                    _ => false,
                });
                if same {
                    return Ok(());
                }
                let count = self
                    .actions
                    .iter()
                    .filter(|a| matches!(a, Action::Notify(_)))
                    .count();
                if count >= limits.max_notifications {
                    return Err("number of notify actions exceeds policy limit".into());
                }
            }
            Action::Reject { .. } => {}
        }
        if self.actions.len() >= limits.max_actions {
            return Err("total number of actions exceeds policy limit".into());
        }
        match &action {
            Action::Keep { .. } | Action::Reject { .. } => self.implicit_keep = false,
            Action::FileInto { copy: false, .. } | Action::Redirect { copy: false, .. } => {
                self.implicit_keep = false
            }
            _ => {}
        }
        self.actions.push(action);
        Ok(())
    }

    /// Add a pipe action (duplicates merged; counts toward the action limit).
    pub fn add_pipe(&mut self, pipe: PipeAction, limits: &ActionLimits) -> Result<(), String> {
        if self
            .pipes
            .iter()
            .any(|p| p.program == pipe.program && p.args == pipe.args)
        {
            return Ok(());
        }
        if self.actions.len() + self.pipes.len() >= limits.max_actions {
            return Err("total number of actions exceeds policy limit".into());
        }
        if !pipe.copy {
            self.implicit_keep = false;
        }
        self.pipes.push(pipe);
        Ok(())
    }

    /// Finish: the action list with the implicit keep appended when it applies.
    pub fn finish(&self, final_message: Option<usize>) -> Outcome {
        let mut actions = self.actions.clone();
        if self.implicit_keep {
            actions.push(Action::Keep {
                flags: Vec::new(),
                implicit: true,
                message: final_message,
            });
        }
        Outcome {
            actions,
            edited_messages: self.edited.clone(),
        }
    }
}

/// Normalise a redirect address to an addr-spec; `None` when it is not a valid address.
pub fn normalize_redirect(addr: &str) -> Option<String> {
    match address::parse_one(addr) {
        address::Address::Mailbox {
            local,
            domain: Some(d),
        } => Some(
            address::Address::Mailbox {
                local,
                domain: Some(d),
            }
            .addr_spec(),
        ),
        _ => None,
    }
}

/// Percent-decode a URI component.
pub fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let h = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The recipients of a `mailto:` URI (RFC 6068), or an error naming the problem.
pub fn mailto_recipients(uri: &str) -> Result<Vec<String>, String> {
    let (scheme, rest) = uri.split_once(':').ok_or("missing scheme")?;
    if !scheme.eq_ignore_ascii_case("mailto") {
        return Err(format!("unsupported notification method '{scheme}'"));
    }
    let (to, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut out = Vec::new();
    let to = percent_decode(to).ok_or("invalid percent-encoding")?;
    for part in to.split(',').filter(|p| !p.trim().is_empty()) {
        out.push(normalize_redirect(part).ok_or_else(|| format!("invalid recipient '{part}'"))?);
    }
    for kv in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k = percent_decode(k).ok_or("invalid percent-encoding")?;
        let v = percent_decode(v).ok_or("invalid percent-encoding")?;
        if !crate::compile::valid_field_name(&k) {
            return Err(format!("invalid header name '{k}'"));
        }
        if k.eq_ignore_ascii_case("to") {
            for a in v.split(',') {
                out.push(normalize_redirect(a).ok_or_else(|| format!("invalid recipient '{a}'"))?);
            }
        }
    }
    if out.is_empty() {
        return Err("no recipients".into());
    }
    Ok(out)
}

/// Check a notification method URI.
pub fn check_notify_uri(uri: &str) -> Result<(), String> {
    mailto_recipients(uri).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> ActionLimits {
        ActionLimits {
            max_actions: 32,
            max_redirects: 4,
            max_notifications: 12,
        }
    }

    fn fileinto(m: &str, copy: bool) -> Action {
        Action::FileInto {
            mailbox: m.into(),
            flags: vec![],
            copy,
            create: false,
            special_use: None,
            message: None,
        }
    }

    #[test]
    fn duplicates_and_implicit_keep() {
        let mut r = ResultSet::new();
        r.add(fileinto("A", true), &lim()).expect("ok");
        assert!(r.implicit_keep);
        r.add(fileinto("A", false), &lim()).expect("ok");
        assert_eq!(r.actions.len(), 1);
        assert!(!r.implicit_keep);
        r.add(
            Action::Keep {
                flags: vec![],
                implicit: false,
                message: None,
            },
            &lim(),
        )
        .expect("ok");
        r.add(fileinto("inbox", false), &lim()).expect("ok");
        assert_eq!(r.actions.len(), 2);
    }

    #[test]
    fn reject_conflicts() {
        let mut r = ResultSet::new();
        r.add(
            Action::Keep {
                flags: vec![],
                implicit: false,
                message: None,
            },
            &lim(),
        )
        .expect("ok");
        assert!(
            r.add(
                Action::Reject {
                    reason: "x".into(),
                    extended: false
                },
                &lim()
            )
            .is_err()
        );
    }

    #[test]
    fn redirect_limit() {
        let mut r = ResultSet::new();
        for i in 0..4 {
            r.add(
                Action::Redirect {
                    address: format!("a{i}@x"),
                    copy: false,
                    message: None,
                },
                &lim(),
            )
            .expect("ok");
        }
        assert!(
            r.add(
                Action::Redirect {
                    address: "b@x".into(),
                    copy: false,
                    message: None
                },
                &lim()
            )
            .is_err()
        );
    }

    #[test]
    fn mailto() {
        assert_eq!(
            mailto_recipients("mailto:a@b.c?subject=x").as_deref(),
            Ok(&["a@b.c".to_string()][..])
        );
        assert!(mailto_recipients("xmpp:a@b").is_err());
        assert!(mailto_recipients("mailto:").is_err());
    }
}
