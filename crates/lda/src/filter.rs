//! The `filter` request: run the user's Sieve script (`~/.dovecot.sieve`) over one
//! recipient's envelope, and at DATA over the message, and answer with the decisions as
//! data for the MTA to carry out (DESIGN.md, "The delivery request").
//!
//! Runs in the LDA's per-request child that has already become the user: it trusts the
//! process credentials, the home directory it is handed (from the password database) and
//! the cursus-sieve interpreter; it trusts nothing in the script, the message or the
//! envelope beyond what the interpreter accepts. It performs no action itself: a redirect,
//! a rejection or a vacation response is a decision in the answer, never a message sent.
//!
//! How it fails, always with an answer:
//! - No script: implicit keep (`Keep` with no flags).
//! - A script that cannot be read, fails a safety check, or does not compile: a temporary
//!   outcome 4.3.5 naming the script, and for a compile error its line and column
//!   (`/home/joe/.dovecot.sieve:3:1: ...`). The MTA then keeps the message, as cursus-deliver
//!   does with a broken script, and logs the line; the user's script is never half-run.
//! - A runtime error (a limit, a conflict such as reject after keep): implicit keep, as
//!   RFC 5228 §2.10.6 says.
//! - The message cannot be read at DATA: the temporary outcome of the I/O error.
//! - Decisions that do not fit in one answer frame (a reason longer than the protocol's
//!   string limit): a temporary 4.3.5 outcome, so the message is kept rather than the
//!   decision silently changed.
//!
//! What the answer cannot say, and what happens to it:
//! - Header edits (editheader): dropped. The MTA stores and redirects the message as
//!   received; the answer carries decisions, not a message.
//! - `notify`: dropped; it never changes where the message goes.
//! - `fileinto :specialuse`: the named mailbox is used (RFC 8579's fallback).
//! - A vacation response that RFC 5230 §4 says not to send (a list, a bounce, an
//!   auto-submitted message, not addressed to the user) is not answered at all.
//! - Duplicate and vacation memory belong to the MTA: here `duplicate` is never true (the
//!   message is kept rather than lost) and a vacation response is always "not yet sent";
//!   the decision carries its handle and period, and the MTA checks and records its own
//!   memory before it sends anything.
//!
//! At RCPT there is no message. The script runs against an empty message, and the
//! interpreter reports whether the evaluation read the message in any way
//! ([`cursus_sieve::evaluate_tracking`]). If it did, the answer is `needs_message` with no
//! decisions, and the MTA asks again at DATA; if it did not, the decisions depend on the
//! envelope alone and are final.
//!
//! Checks on the script and the attack each stops (the rules are cursus-mailbox's
//! [`read_user_file`] with [`FileTrust::OwnedByUser`], the same code cursus-deliver uses for
//! its scripts, but stricter about the owner, because these decisions leave the process):
//! - Opened non-blocking and must be a regular file after open (`fstat`): a FIFO or
//!   device at `~/.dovecot.sieve`, directly or through a symlink, would hang the child or
//!   feed it for ever.
//! - The final symlink is followed (the usual `~/.dovecot.sieve -> sieve/active.sieve`
//!   layout), and every check is made on what was opened, not on the name.
//! - Owned by the user: a script someone else placed or hard-linked into the home would
//!   decide where this user's mail goes (redirect it all to them).
//! - Not writable by group or others: every member of the group could rewrite the filter.
//! - At most [`SCRIPT_LIMIT`] bytes: memory exhaustion by a huge file.
//! - The message is evaluated from its first [`EVALUATION_LIMIT`] bytes only, as
//!   cursus-deliver does: a huge message cannot exhaust memory.
//! - Folder names for `mailbox_exists` go through [`FolderName`] and are looked up without
//!   following a symlink: `mailboxexists "../../etc"` probes nothing outside ~/Maildir.

use std::io::Read;
use std::path::{Path, PathBuf};

use cursus_mail::{Outcome, codes};
use cursus_mailbox::{FileTrust, FolderName, UserFileError, outcome_for_io, read_user_file};
use cursus_sieve::{Action, Config, DateTime, Host, compile, evaluate_tracking};

use crate::protocol::{Answer, Envelope, FilterDecision, FilterStage, encode_answer};

/// The user's active script, relative to the home directory (Pigeonhole's default).
pub const SCRIPT_NAME: &str = ".dovecot.sieve";
/// The largest script read, in bytes (cursus-deliver's limit).
pub const SCRIPT_LIMIT: usize = 1 << 20;
/// The most bytes of the message a script sees (cursus-deliver's limit).
pub const EVALUATION_LIMIT: usize = 10 << 20;

/// Runs the user's filter for one recipient. Call it as the user (after the credential
/// switch); `home` is the user's home directory. `message` is read at [`FilterStage::Data`]
/// and ignored at [`FilterStage::Rcpt`].
pub fn run_filter(
    user: &str,
    home: &Path,
    envelope: &Envelope,
    stage: FilterStage,
    message: Option<&mut dyn Read>,
) -> Answer {
    let path = home.join(SCRIPT_NAME);
    let source = match read_user_file(&path, FileTrust::OwnedByUser, SCRIPT_LIMIT) {
        Ok(None) => return implicit_keep(),
        Ok(Some(source)) => source,
        Err(e) => return script_refused(user, &e),
    };
    let config = Config {
        user_email: Some(envelope.final_recipient.clone()),
        ..Config::default()
    };
    let script = match compile(&source, &config) {
        Ok(script) => script,
        Err(errors) => {
            let first = errors
                .0
                .first()
                .map_or_else(|| "does not compile".to_string(), ToString::to_string);
            return outcome(Outcome::temporary(
                codes::CONFIG_ERROR,
                format!(
                    "sieve script {}:{first} (user {user}; message kept)",
                    path.display()
                ),
            ));
        }
    };
    let bytes = match (stage, message) {
        (FilterStage::Rcpt, _) => Vec::new(),
        (FilterStage::Data, None) => {
            return outcome(Outcome::temporary(
                codes::SYSTEM_STATUS,
                format!("filter for user {user} at DATA came without the message"),
            ));
        }
        (FilterStage::Data, Some(reader)) => {
            let mut bytes = Vec::new();
            if let Err(e) = reader.take(EVALUATION_LIMIT as u64).read_to_end(&mut bytes) {
                return outcome(outcome_for_io(
                    &e,
                    &format!("cannot read the message for user {user}"),
                ));
            }
            bytes
        }
    };
    let sieve_envelope = cursus_sieve::Envelope {
        from: envelope.sender.clone().unwrap_or_default(),
        to: envelope.final_recipient.clone(),
        orig_to: Some(envelope.original_recipient.clone()),
        auth: None,
    };
    let mut host = FilterHost::new(home, stage, &envelope.final_recipient);
    let evaluation = evaluate_tracking(&script, &config, &mut host, &sieve_envelope, &bytes);
    if stage == FilterStage::Rcpt && evaluation.message_accessed {
        return Answer::Filter {
            needs_message: true,
            decisions: Vec::new(),
        };
    }
    let answer = match evaluation.result {
        // RFC 5228 §2.10.6: a runtime error means implicit keep.
        Err(_) => implicit_keep(),
        Ok(result) => Answer::Filter {
            needs_message: false,
            decisions: result.actions.into_iter().filter_map(decision).collect(),
        },
    };
    match encode_answer(&answer) {
        Ok(_) => answer,
        Err(e) => outcome(Outcome::temporary(
            codes::CONFIG_ERROR,
            format!(
                "sieve script {}: its decisions do not fit in an answer ({e}); message kept",
                path.display()
            ),
        )),
    }
}

/// The answer "keep the message in the default mailbox".
fn implicit_keep() -> Answer {
    Answer::Filter {
        needs_message: false,
        decisions: vec![FilterDecision::Keep { flags: Vec::new() }],
    }
}

fn outcome(o: Outcome) -> Answer {
    Answer::Outcome {
        kind: o.kind,
        status: o.status,
        text: o.text,
    }
}

/// A script that could not be read or failed a safety check: the MTA keeps the message.
fn script_refused(user: &str, error: &UserFileError) -> Answer {
    match error {
        UserFileError::Io { source, .. } => outcome(outcome_for_io(
            source,
            &format!("sieve script of user {user} not used"),
        )),
        refusal => outcome(Outcome::temporary(
            codes::CONFIG_ERROR,
            format!("sieve script not used: {refusal} (user {user}; message kept)"),
        )),
    }
}

/// One interpreter action as a decision; `None` for what the answer cannot say (see the
/// file header).
fn decision(action: Action) -> Option<FilterDecision> {
    Some(match action {
        Action::Keep { flags, .. } => FilterDecision::Keep { flags },
        Action::FileInto {
            mailbox,
            flags,
            create,
            ..
        } => FilterDecision::FileInto {
            mailbox,
            flags,
            create,
        },
        Action::Redirect { address, copy, .. } => FilterDecision::Redirect { address, copy },
        Action::Reject { reason, .. } => FilterDecision::Reject { text: reason },
        Action::Discard => FilterDecision::Discard,
        Action::Vacation(v) if v.send => FilterDecision::Vacation {
            recipient: v.recipient,
            from: Some(v.from).filter(|f| !f.is_empty()),
            subject: Some(v.subject),
            reason: v.reason,
            period_seconds: u32::try_from(v.period).unwrap_or(u32::MAX),
            handle: Some(v.handle),
            mime: v.mime,
        },
        Action::Vacation(_) | Action::Notify(_) => return None,
    })
}

/// The world as the filter sees it: the user's maildir folders, the clock and the
/// environment. Memory of duplicates and vacation responses is the MTA's (file header).
struct FilterHost {
    maildir: PathBuf,
    stage: FilterStage,
    domain: String,
    host: String,
    now: DateTime,
}

impl FilterHost {
    fn new(home: &Path, stage: FilterStage, recipient: &str) -> Self {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_string());
        let domain = recipient
            .rsplit_once('@')
            .map_or_else(|| host.clone(), |(_, d)| d.to_string());
        let zoned = jiff::ZonedDateTime::now();
        FilterHost {
            maildir: home.join("Maildir"),
            stage,
            domain,
            host,
            now: DateTime {
                timestamp: zoned.timestamp().as_second(),
                offset: zoned.offset().seconds() / 60,
            },
        }
    }
}

impl Host for FilterHost {
    /// INBOX always exists (a keep can always be stored); a folder exists when its
    /// Maildir++ directory `~/Maildir/.NAME` is a directory (not a symlink to one).
    fn mailbox_exists(&mut self, mailbox: &str) -> bool {
        if FolderName::is_inbox(mailbox) {
            return true;
        }
        let Ok(folder) = FolderName::parse(mailbox) else {
            return false;
        };
        std::fs::symlink_metadata(self.maildir.join(folder.dir_name())).is_ok_and(|m| m.is_dir())
    }

    /// Never seen: the MTA owns the duplicate memory; keeping beats discarding.
    fn duplicate_seen(&mut self, _key: &str) -> bool {
        false
    }

    /// Not responded: the decision goes to the MTA, which checks its own memory.
    fn vacation_responded(&mut self, _handle: &str, _sender: &str) -> bool {
        false
    }

    fn now(&mut self) -> DateTime {
        self.now
    }

    fn environment(&mut self, name: &str) -> Option<String> {
        match name {
            "domain" => Some(self.domain.clone()),
            "host" => Some(self.host.clone()),
            "location" => Some("MDA".into()),
            "phase" => Some(
                match self.stage {
                    FilterStage::Rcpt => "pre",
                    FilterStage::Data => "during",
                }
                .into(),
            ),
            "name" => Some("Cursus".into()),
            "version" => Some(env!("CARGO_PKG_VERSION").into()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
