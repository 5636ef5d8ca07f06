//! cursus-mailbox: Maildir, Maildir++, mbox and MH writers with locks, quota and safe opens.
//!
//! Runs as the recipient: the process (the MDA, or the LDA's per-delivery child) has already
//! become the user, and every file it creates is the user's. Trusts the mailbox path the
//! caller hands in up to its last component (the destination policy vetted it) and nothing
//! below or beside it: see `safe_open.rs` for the checks and the attacks each one stops.
//! Small files the user or the administrator configure (Sieve scripts) are read through
//! `user_file.rs`, with its own checks (owner, mode, file type, size).
//! Fails with [`MailboxError`], which names the path and maps to a delivery [`Outcome`]
//! through one errno table (`errno.rs`); a failed delivery leaves no partial message behind.
//!
//! [`Outcome`]: cursus_mail::Outcome

#![forbid(unsafe_code)]

mod directory_sync;
mod dotlock;
pub mod errno;
pub mod error;
pub mod folder;
pub mod input;
pub mod maildir;
pub mod maildir_name;
pub mod mbox;
pub mod mboxrd;
pub mod message;
pub mod mh;
pub mod quota;
mod record_lock;
mod safe_open;
pub mod spool;
pub mod stored;
pub mod user_file;

pub use errno::{ErrnoClass, outcome_for_io};
pub use error::{FileKind, LockKind, MailboxError, UnsafeReason};
pub use folder::{FolderName, InvalidFolder};
pub use maildir::{MaildirOptions, deliver_maildir};
pub use mbox::{MboxOptions, deliver_mbox};
pub use message::Message;
pub use mh::{MhOptions, deliver_mh};
pub use quota::{MaildirSize, QuotaLimits, QuotaUsage};
pub use spool::{SpoolWriter, Spooled};
pub use stored::Stored;
pub use user_file::{FileTrust, UserFileError, read_user_file};
