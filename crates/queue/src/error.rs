//! The queue's error type: what failed, on which path or queue id, and why.
//!
//! Every I/O error carries the operation and the path; the daemon maps them to SMTP replies
//! (`is_disk_full` → 452 4.3.1, anything else during accept → 451 4.3.0) and logs the rest.
//! Nothing here panics.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::fault::Step;
use crate::id::QueueId;
use crate::journal::ReplayError;

#[derive(Debug)]
pub enum QueueError {
    /// A system call failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Another process has the queue open (the lock file is taken).
    Locked { path: PathBuf },
    /// The spool directory is not ours alone: wrong owner, or writable by group or others.
    Unsafe { path: PathBuf, reason: String },
    /// No such message (never accepted, or already removed).
    NotFound(QueueId),
    /// The message's files do not make sense; they were moved to `corrupt/`.
    Corrupt { id: QueueId, reason: String },
    /// The caller named a recipient the envelope does not have.
    NoSuchRecipient { id: QueueId, index: usize },
    /// The caller tried to change a recipient that is already delivered or failed.
    AlreadyFinal { id: QueueId, index: usize },
    /// `finish` on a message with recipients still to deliver.
    NotComplete(QueueId),
    /// `finish` without a DSN on a message that owes one.
    DsnOwed(QueueId),
    /// The envelope does not fit in one journal record.
    EnvelopeTooLarge,
    /// An earlier directory sync failed: the queue refuses to promise durability until it
    /// is reopened (after an fsync error the kernel may have dropped the dirty pages).
    Poisoned,
    /// A fault-injection hook stopped the operation at this step (tests only).
    Injected(Step),
}

impl QueueError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        QueueError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The disk or the quota is full: the SMTP answer is 452 and a later try may work.
    pub fn is_disk_full(&self) -> bool {
        match self {
            QueueError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(e) if e == nix::libc::ENOSPC || e == nix::libc::EDQUOT
            ),
            _ => false,
        }
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Io { op, path, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            QueueError::Locked { path } => {
                write!(
                    f,
                    "{}: the queue is in use by another process",
                    path.display()
                )
            }
            QueueError::Unsafe { path, reason } => write!(f, "{}: {reason}", path.display()),
            QueueError::NotFound(id) => write!(f, "{id}: not in the queue"),
            QueueError::Corrupt { id, reason } => {
                write!(f, "{id}: corrupt, moved to corrupt/: {reason}")
            }
            QueueError::NoSuchRecipient { id, index } => {
                write!(f, "{id}: no recipient number {index}")
            }
            QueueError::AlreadyFinal { id, index } => {
                write!(f, "{id}: recipient number {index} is already final")
            }
            QueueError::NotComplete(id) => write!(f, "{id}: recipients remain to deliver"),
            QueueError::DsnOwed(id) => write!(f, "{id}: a delivery status notification is owed"),
            QueueError::EnvelopeTooLarge => f.write_str("envelope too large for the journal"),
            QueueError::Poisoned => {
                f.write_str("an earlier directory sync failed; reopen the queue")
            }
            QueueError::Injected(step) => write!(f, "fault injected at {step:?}"),
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueueError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<(QueueId, ReplayError)> for QueueError {
    fn from((id, e): (QueueId, ReplayError)) -> Self {
        QueueError::Corrupt {
            id,
            reason: e.to_string(),
        }
    }
}
