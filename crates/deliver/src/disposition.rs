//! Carrying out what the Sieve scripts decided for one message: the stores (keep, fileinto),
//! then the messages handed to sendmail (redirect, rejection notice, vacation, notify), then
//! the duplicate memory, and one outcome.
//!
//! Trusts the action list from the interpreter (already merged and limited) but not the
//! names and addresses in it: folder names become [`FolderName`]s or INBOX, addresses are
//! checked again by `sendmail.rs`. Fails safe, in this order of priority:
//! - The message is never lost. A fileinto that cannot be used (bad name, missing folder
//!   without :create, a failed write) falls back to INBOX; only when no copy could be
//!   stored anywhere does the delivery fail, with the mailbox's own outcome.
//! - Stores come before sends: a redirect always sends the message as we stored it (with
//!   our Delivered-To, so a redirect loop comes back to us and is caught as 5.4.6), and a
//!   sendmail failure after a copy was stored is a note, not a failure (a retry would store
//!   a second copy). When nothing was stored (a redirect without :copy, an MDN rejection), a
//!   sendmail failure is a temporary failure (exit 75): the MTA keeps the message and tries
//!   again. Redirects go first among the sends, so such a retry never repeats a vacation
//!   response or a notification.
//! - Vacation responses are sent only with a working response memory, and recorded only
//!   after sendmail accepted them. Duplicate marks are recorded only when the delivery did
//!   not fail temporarily, so a retry is not mistaken for a duplicate.
//!
//! Attacks stopped: a script's fileinto "../../x" or "a/b" never becomes a path (it is
//! refused by [`FolderName`] and the message goes to INBOX); editheader cannot remove or
//! forge the trace fields we add (they are put back on top of every stored or redirected
//! copy); no notice is ever sent to the null sender (a bounce must not bounce).

use std::io::Write;
use std::path::Path;

use cursus_mail::{ExitCode, Outcome, OutcomeKind, codes};
use cursus_mailbox::{FolderName, Message};
use cursus_sieve::{Action, Config, Envelope as SieveEnvelope, Notify, Vacation};

use crate::config::{Settings, SieveReject};
use crate::delivery::{Envelope, StoreRequest, mailbox_failure, write_mailbox};
use crate::destination::Destination;
use crate::filter::{self, EVALUATION_LIMIT, Evaluation, ScriptSet};
use crate::response::{self, Outgoing, Rejection, Stamp};
use crate::sendmail::Sendmail;
use crate::sieve_host::{DuplicateMark, MdaHost, local_now};
use crate::vacation::MemoryCell;

/// Everything about this delivery the scripts and their actions need.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub destination: &'a Destination,
    /// The default mailbox (`-m`, extension folders), `None` for INBOX.
    pub default_folder: Option<FolderName>,
    pub default_autocreate: bool,
    pub settings: &'a Settings,
    pub envelope: &'a Envelope,
    /// The recipient's home, when we run as the recipient.
    pub home: Option<&'a Path>,
    pub host_name: &'a str,
}

/// Runs the scripts over `message` and carries out the result.
pub fn filter_and_deliver(d: &Delivery<'_>, scripts: &ScriptSet, message: &mut Message) -> Outcome {
    let now = local_now();
    let log_time = jiff::ZonedDateTime::now()
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let mut notes = Vec::new();
    let memory = MemoryCell::new(d.home, now.timestamp);
    let config = Config {
        subaddress_separator: d.settings.recipient_delimiter.clone(),
        user_email: Some(d.envelope.final_recipient.clone()),
        ..Config::default()
    };
    let envelope = SieveEnvelope {
        from: d.envelope.sender.address().unwrap_or_default().to_string(),
        to: d.envelope.final_recipient.clone(),
        orig_to: Some(d.envelope.original_recipient.clone()),
        auth: None,
    };
    let (bytes, cut) = filter::evaluation_bytes(message, EVALUATION_LIMIT);
    if cut {
        notes.push(format!(
            "sieve saw the header and the first {} MiB of the message",
            EVALUATION_LIMIT >> 20
        ));
    }
    let log_id = response::header_value(&message.header, "Message-ID")
        .unwrap_or_else(|| format!("from {}", d.envelope.sender.return_path()));
    let maildir = match d.destination {
        Destination::Maildir(root) => Some(root.clone()),
        _ => None,
    };
    let mut host = MdaHost::new(
        maildir,
        d.home,
        d.settings.sieve_global_dir.clone(),
        &memory,
        now,
        &d.envelope.final_recipient,
        d.host_name,
    );
    let run = filter::Run {
        config: &config,
        envelope: &envelope,
        message: &bytes,
        log_time: &log_time,
        log_id: &log_id,
    };
    let eval = filter::run(scripts, &mut host, &run);
    drop(bytes);
    let marks = std::mem::take(&mut host.marks);
    drop(host);
    notes.extend(eval.notes.iter().cloned());
    let outcome = carry_out(d, eval, message, &memory, now.timestamp, notes);
    if outcome.kind != OutcomeKind::Temporary
        && !marks.is_empty()
        && let Ok(m) = memory.get()
    {
        for DuplicateMark { id, seconds, last } in marks {
            let _ = m.mark_duplicate(&id, now.timestamp, seconds, last);
        }
    }
    outcome
}

/// One copy to store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Store {
    /// `None`: INBOX (the maildir root, or the mbox/MH mailbox itself).
    folder: Option<FolderName>,
    create: bool,
    /// Maildir info flags.
    flags: String,
    edited: Option<Vec<u8>>,
}

/// The actions sorted by kind, folders resolved.
#[derive(Debug, Default)]
struct Plan {
    stores: Vec<Store>,
    redirects: Vec<(String, Option<Vec<u8>>)>,
    reject: Option<String>,
    vacation: Option<Vacation>,
    notifies: Vec<Notify>,
    discard: bool,
}

fn plan(d: &Delivery<'_>, eval: Evaluation, notes: &mut Vec<String>) -> Plan {
    let mut p = Plan::default();
    let mut dropped_flags: Vec<String> = Vec::new();
    for taken in eval.actions {
        match taken.action {
            Action::Keep { flags, .. } => {
                let (flags, dropped) = maildir_flags(&flags);
                dropped_flags.extend(dropped);
                add_store(
                    &mut p.stores,
                    Store {
                        folder: d.default_folder.clone(),
                        create: d.default_autocreate,
                        flags,
                        edited: taken.edited,
                    },
                );
            }
            Action::FileInto {
                mailbox,
                flags,
                create,
                ..
            } => {
                let (flags, dropped) = maildir_flags(&flags);
                dropped_flags.extend(dropped);
                let (folder, create) = resolve_folder(d, &mailbox, create, notes);
                add_store(
                    &mut p.stores,
                    Store {
                        folder,
                        create,
                        flags,
                        edited: taken.edited,
                    },
                );
            }
            Action::Redirect { address, .. } => {
                if !p
                    .redirects
                    .iter()
                    .any(|(a, _)| a.eq_ignore_ascii_case(&address))
                {
                    p.redirects.push((address, taken.edited));
                }
            }
            Action::Reject { reason, .. } => p.reject = Some(reason),
            Action::Discard => p.discard = true,
            Action::Vacation(v) => p.vacation = Some(v),
            Action::Notify(n) => p.notifies.push(n),
        }
    }
    if !dropped_flags.is_empty() {
        dropped_flags.sort();
        dropped_flags.dedup();
        notes.push(format!(
            "IMAP keywords {} not stored (Maildir keeps only system flags)",
            dropped_flags.join(" ")
        ));
    }
    p
}

/// Copies to the same mailbox are one copy (RFC 5228 §4.2: a keep and a fileinto "INBOX"
/// store the message once); their flags are merged.
fn add_store(stores: &mut Vec<Store>, new: Store) {
    if let Some(old) = stores.iter_mut().find(|s| s.folder == new.folder) {
        let mut flags: Vec<char> = old.flags.chars().chain(new.flags.chars()).collect();
        flags.sort_unstable();
        flags.dedup();
        old.flags = flags.into_iter().collect();
        old.create |= new.create;
        if new.edited.is_some() {
            old.edited = new.edited;
        }
        return;
    }
    stores.push(new);
}

/// The folder a fileinto names, or INBOX (`None`) with a note when it cannot be used.
fn resolve_folder(
    d: &Delivery<'_>,
    mailbox: &str,
    create: bool,
    notes: &mut Vec<String>,
) -> (Option<FolderName>, bool) {
    if FolderName::is_inbox(mailbox) {
        return (None, false);
    }
    let Destination::Maildir(root) = d.destination else {
        notes.push(format!(
            "fileinto {mailbox:?}: the mailbox has no folders; delivered to it"
        ));
        return (None, false);
    };
    match FolderName::parse(mailbox) {
        Err(e) => {
            notes.push(format!("fileinto {mailbox:?}: delivered to INBOX ({e})"));
            (None, false)
        }
        Ok(folder) => {
            let create = create || d.settings.folder_autocreate;
            let exists =
                std::fs::symlink_metadata(root.join(folder.dir_name())).is_ok_and(|m| m.is_dir());
            if exists || create {
                (Some(folder), create)
            } else {
                notes.push(format!(
                    "folder {folder} does not exist; delivered to INBOX"
                ));
                (None, false)
            }
        }
    }
}

/// IMAP system flags as Maildir info letters (sorted); keywords are returned apart.
pub fn maildir_flags(flags: &[String]) -> (String, Vec<String>) {
    let mut letters = Vec::new();
    let mut dropped = Vec::new();
    for flag in flags.iter().flat_map(|f| f.split_whitespace()) {
        let letter = match flag.to_ascii_lowercase().as_str() {
            "\\seen" => 'S',
            "\\answered" => 'R',
            "\\flagged" => 'F',
            "\\deleted" => 'T',
            "\\draft" => 'D',
            _ => {
                dropped.push(flag.chars().filter(|c| !c.is_control()).take(64).collect());
                continue;
            }
        };
        letters.push(letter);
    }
    letters.sort_unstable();
    letters.dedup();
    (letters.into_iter().collect(), dropped)
}

/// The top of a message (our trace fields, then the header section) as editheader left
/// it: our fields are put back first, exactly once. `None` when the edit cannot be applied
/// safely (the header section was too large to be complete).
pub fn edited_top(edited: &[u8], message: &Message) -> Option<Vec<u8>> {
    let complete = message.body.is_empty()
        || [message.prefix.as_slice(), message.header.as_slice()]
            .concat()
            .ends_with(b"\n\n");
    if !complete {
        return None;
    }
    let text: Vec<u8> = {
        let mut out = Vec::with_capacity(edited.len());
        let mut i = 0;
        while let Some(&b) = edited.get(i) {
            if b == b'\r' && edited.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            out.push(b);
            i += 1;
        }
        out
    };
    let mut head = match text.windows(2).position(|w| w == b"\n\n") {
        Some(i) => text[..i + 2].to_vec(),
        None if message.body.is_empty() => {
            let mut all = text;
            if !all.ends_with(b"\n") {
                all.push(b'\n');
            }
            all
        }
        None => return None,
    };
    let ours: Vec<&[u8]> = message
        .prefix
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| *l != b"\n")
        .collect();
    for line in &ours {
        let at_line_start = |i: usize| i == 0 || head[i - 1] == b'\n';
        if let Some(i) = (0..head.len().saturating_sub(line.len() - 1))
            .find(|&i| head[i..].starts_with(line) && at_line_start(i))
        {
            head.drain(i..i + line.len());
        }
    }
    let mut top: Vec<u8> = ours.concat();
    top.extend_from_slice(&head);
    Some(top)
}

/// The stores, then the sends, then the outcome.
fn carry_out(
    d: &Delivery<'_>,
    eval: Evaluation,
    message: &mut Message,
    memory: &MemoryCell,
    now: i64,
    mut notes: Vec<String>,
) -> Outcome {
    let p = plan(d, eval, &mut notes);
    let sender = d.envelope.sender.address().map(str::to_string);

    // 1. Stores, falling back to INBOX.
    let mut stored: Vec<String> = Vec::new();
    let mut inbox_done = false;
    let mut last_failure: Option<Outcome> = None;
    let mut queue = p.stores.clone();
    let mut i = 0;
    while let Some(store) = queue.get(i).cloned() {
        i += 1;
        if store.folder.is_none() && inbox_done {
            continue;
        }
        let top = store.edited.as_deref().and_then(|e| {
            let top = edited_top(e, message);
            if top.is_none() {
                notes.push("header edits not applied (header section incomplete)".into());
            }
            top
        });
        let request = StoreRequest {
            folder: store.folder.clone(),
            autocreate: store.create,
            flags: store.flags.clone(),
        };
        let result = with_top(message, top, |m| {
            write_mailbox(d.destination, m, sender.as_deref(), d.settings, &request)
        });
        match result {
            Ok(s) => {
                if store.folder.is_none() || s.note.as_deref().is_some_and(|n| n.contains("INBOX"))
                {
                    inbox_done = true;
                }
                if let Some(n) = s.note {
                    notes.push(n);
                }
                stored.push(s.path.display().to_string());
            }
            Err(e) => {
                let failure = mailbox_failure(&e, d.settings);
                if store.folder.is_some() {
                    notes.push(format!("{}; delivered to INBOX", failure.text));
                    if !queue.iter().skip(i).any(|s| s.folder.is_none()) {
                        queue.push(Store {
                            folder: None,
                            create: false,
                            flags: store.flags.clone(),
                            edited: store.edited.clone(),
                        });
                    }
                }
                last_failure = Some(failure);
            }
        }
    }
    if stored.is_empty()
        && let Some(failure) = last_failure
    {
        // Nothing stored anywhere: the mailbox's outcome, and nothing is sent.
        return failure;
    }
    let kept = !stored.is_empty();

    // 2. Sends: redirects first (their failure may still defer the delivery).
    let sendmail = Sendmail::new(d.settings.sendmail.clone());
    let stamp = Stamp::now(d.host_name);
    let mut redirected = Vec::new();
    for (address, edited) in &p.redirects {
        let top = edited.as_deref().and_then(|e| edited_top(e, message));
        let msg: &Message = message;
        let write = |w: &mut dyn Write| match &top {
            Some(t) => {
                w.write_all(t)?;
                msg.body.copy_to(w)
            }
            None => msg.write_to(w),
        };
        match sendmail.send(sender.as_deref(), std::slice::from_ref(address), &write) {
            Ok(()) => redirected.push(address.clone()),
            Err(e) if !kept => {
                return Outcome::temporary(
                    codes::SYSTEM_STATUS,
                    format!("redirect to {address} failed: {e}"),
                );
            }
            Err(e) => notes.push(format!("redirect to {address} failed: {e}")),
        }
    }
    let mut rejected_by_exit = None;
    if let Some(reason) = &p.reject {
        match (d.settings.sieve_reject, sender.as_deref()) {
            (SieveReject::Exit, _) => rejected_by_exit = Some(reason.clone()),
            (SieveReject::Mdn, None) => {
                notes.push("rejected; no notice to the null sender".into());
            }
            (SieveReject::Mdn, Some(to)) => {
                let notice = response::rejection(
                    &Rejection {
                        reason,
                        sender: to,
                        original_recipient: &d.envelope.original_recipient,
                        final_recipient: &d.envelope.final_recipient,
                        header: &message.header,
                    },
                    &stamp,
                );
                match send(&sendmail, &notice) {
                    Ok(()) => notes.push(format!("rejected; notice sent to {to}")),
                    Err(e) if !kept => {
                        return Outcome::temporary(
                            codes::SYSTEM_STATUS,
                            format!("sending the rejection notice to {to} failed: {e}"),
                        );
                    }
                    Err(e) => notes.push(format!("rejection notice to {to} failed: {e}")),
                }
            }
        }
    }
    if let Some(v) = &p.vacation {
        match memory.get() {
            Err(e) => notes.push(format!("vacation not sent: no response memory ({e})")),
            Ok(_) if !v.send => notes.push("vacation not due".into()),
            Ok(m) => {
                let reply = response::vacation(v, &Stamp::now(d.host_name));
                match send(&sendmail, &reply) {
                    Ok(()) => {
                        if let Err(e) = m.record_response(&v.handle, &v.recipient, now, v.period) {
                            notes.push(format!("vacation sent but not remembered: {e}"));
                        } else {
                            notes.push(format!("vacation sent to {}", v.recipient));
                        }
                    }
                    Err(e) => notes.push(format!("vacation to {} failed: {e}", v.recipient)),
                }
            }
        }
    }
    let automatic = response::header_value(&message.header, "Auto-Submitted")
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("no"));
    for n in &p.notifies {
        if automatic {
            // RFC 5436 §2.7: no notifications about automatically submitted mail.
            notes.push("notify skipped for Auto-Submitted mail".into());
            continue;
        }
        match response::notification(
            n,
            &message.header,
            &d.envelope.final_recipient,
            &Stamp::now(d.host_name),
        ) {
            Ok(out) => {
                if let Err(e) = send(&sendmail, &out) {
                    notes.push(format!("notify {} failed: {e}", n.method));
                }
            }
            Err(e) => notes.push(format!("notify not sent: {e}")),
        }
    }

    // 3. The outcome.
    if let Some(reason) = rejected_by_exit {
        // One line for the MTA's bounce: line breaks and runs of blanks become one space.
        let reason = reason
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let text = if reason.is_empty() {
            "rejected by the recipient's Sieve script".to_string()
        } else {
            reason
        };
        return Outcome::permanent(codes::DELIVERY_NOT_AUTHORIZED, ExitCode::NoPerm, text);
    }
    let mut text = if kept {
        format!("delivered to {}", stored.join(" and "))
    } else if !redirected.is_empty() {
        format!("redirected to {}", redirected.join(", "))
    } else if p.reject.is_some() {
        "rejected by Sieve".to_string()
    } else {
        "discarded by Sieve".to_string()
    };
    if kept && !redirected.is_empty() {
        text.push_str(&format!(", redirected to {}", redirected.join(", ")));
    }
    if !notes.is_empty() {
        text.push_str(&format!(" ({})", notes.join("; ")));
    }
    Outcome::delivered(text)
}

fn send(sendmail: &Sendmail, out: &Outgoing) -> Result<(), crate::sendmail::SendError> {
    let bytes = &out.message;
    sendmail.send(
        out.sender.as_deref(),
        &out.recipients,
        &|w: &mut dyn Write| w.write_all(bytes),
    )
}

/// Runs `f` with the message's prefix and header replaced by `top` (our trace fields and
/// the edited header), then restores them.
fn with_top<T>(message: &mut Message, top: Option<Vec<u8>>, f: impl FnOnce(&Message) -> T) -> T {
    let Some(top) = top else {
        return f(message);
    };
    let prefix = std::mem::replace(&mut message.prefix, top);
    let header = std::mem::take(&mut message.header);
    let result = f(message);
    message.prefix = prefix;
    message.header = header;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use cursus_mailbox::Spooled;

    #[test]
    fn imap_flags_to_maildir_letters() {
        let (letters, dropped) = maildir_flags(&[
            "\\Seen".into(),
            "\\flagged \\Answered".into(),
            "$Junk".into(),
            "\\Deleted".into(),
            "\\Draft".into(),
            "\\Recent".into(),
            "\\Seen".into(),
        ]);
        assert_eq!(letters, "DFRST");
        assert_eq!(dropped, vec!["$Junk".to_string(), "\\Recent".to_string()]);
    }

    fn message(prefix: &[u8], header: &[u8], body: &[u8]) -> Message {
        Message {
            prefix: prefix.to_vec(),
            header: header.to_vec(),
            body: Spooled::from_bytes(body.to_vec()),
        }
    }

    #[test]
    fn edited_header_keeps_our_trace_fields_on_top_once() {
        let m = message(
            b"Return-Path: <a@b>\nDelivered-To: joe@example.net\n",
            b"Subject: x\n\n",
            b"body\n",
        );
        let edited = b"X-Spam: yes\r\nReturn-Path: <a@b>\r\nDelivered-To: joe@example.net\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(
            edited_top(edited, &m).as_deref(),
            Some(
                &b"Return-Path: <a@b>\nDelivered-To: joe@example.net\nX-Spam: yes\nSubject: x\n\n"
                    [..]
            )
        );
        // deleteheader "Delivered-To" cannot remove our loop marker.
        let edited = b"Return-Path: <a@b>\nSubject: x\n\nbody\n";
        assert_eq!(
            edited_top(edited, &m).as_deref(),
            Some(&b"Return-Path: <a@b>\nDelivered-To: joe@example.net\nSubject: x\n\n"[..])
        );
        // A message that starts with its body: our prefix carries the separator.
        let m = message(b"Return-Path: <a@b>\n\n", b"", b"text\n");
        assert_eq!(
            edited_top(b"X-A: 1\nReturn-Path: <a@b>\n\ntext\n", &m).as_deref(),
            Some(&b"Return-Path: <a@b>\nX-A: 1\n\n"[..])
        );
        // An incomplete (over-long) header section: edits are not applied.
        let m = message(
            b"Return-Path: <a@b>\n",
            b"X-Long: aaaa\n",
            b"more header\n\nbody\n",
        );
        assert_eq!(edited_top(b"X-A: 1\n\nbody", &m), None);
    }
}
