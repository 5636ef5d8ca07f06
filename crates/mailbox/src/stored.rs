//! Where a delivered message now lives, and anything the delivery wants the log to say.
//!
//! Trusts: the writers that build it. Fails: never; a `Stored` exists only after a delivery
//! succeeded (the message is on disk, fsynced when asked).

use std::path::PathBuf;

/// A successful delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The message file (maildir, MH) or the mailbox (mbox).
    pub path: PathBuf,
    /// Something worth logging that did not fail the delivery ("folder X does not exist;
    /// delivered to INBOX", "dotlock skipped: ...", "maildirsize not updated: ..."). One line.
    pub note: Option<String>,
}

impl Stored {
    pub(crate) fn new(path: PathBuf, notes: Vec<String>) -> Stored {
        let note = (!notes.is_empty()).then(|| cursus_mail::status::one_line(notes.join("; ")));
        Stored { path, note }
    }
}
