//! Why a delivery into a mailbox failed, with the path it failed on, and the outcome it means.
//!
//! Trusts: the values the writers put in; no message content is ever stored in an error, so
//! the one-line text is safe to put into a bounce to a possibly forged sender.
//! Fails: never; [`MailboxError::outcome`] always answers. I/O errors go through the single
//! errno table in `errno.rs`; refusals for security reasons are permanent when the file itself
//! is wrong (a symlink, hard links, not a regular file: waiting will not fix an attack) and
//! temporary when an administrator may repair it or a race may end (wrong owner, as Postfix's
//! `strict_mailbox_ownership`; a file that changed under us).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use cursus_mail::{ExitCode, Outcome, codes};

use crate::errno::{self, ErrnoClass};
use crate::quota::{QuotaLimits, QuotaUsage};

/// What kind of object was found where a mailbox file or directory was expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Symlink,
    Regular,
    Unknown,
}

impl FileKind {
    /// The kind encoded in an `st_mode` value.
    pub(crate) fn from_mode(mode: u32) -> FileKind {
        match mode & 0o170000 {
            0o040000 => FileKind::Directory,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            0o120000 => FileKind::Symlink,
            0o100000 => FileKind::Regular,
            _ => FileKind::Unknown,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Symlink => "a symbolic link",
            FileKind::Regular => "a regular file",
            FileKind::Unknown => "an unknown file type",
        })
    }
}

/// Why a mailbox path was refused by the safe-open checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsafeReason {
    /// The last component is a symbolic link (symlink to /etc/passwd; CVE-2008-2936).
    Symlink,
    /// The file has more than one name (hard link to another user's file; CVE-2010-2023).
    HardLinks(u64),
    /// Not a regular file (a FIFO that would hang us, a device, a socket).
    NotRegular(FileKind),
    /// A directory was expected (maildir `tmp`/`new`/`cur`, a folder, an MH folder).
    NotDirectory(FileKind),
    /// Owned by someone other than the delivering user.
    WrongOwner { owner: u32, expected: u32 },
    /// The path and the opened file are not the same object any more (lstat/open race, or a
    /// mailbox replaced while we waited for the lock).
    Changed,
}

impl fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsafeReason::Symlink => f.write_str("is a symbolic link"),
            UnsafeReason::HardLinks(n) => write!(f, "has {n} hard links"),
            UnsafeReason::NotRegular(kind) => write!(f, "is {kind}, not a regular file"),
            UnsafeReason::NotDirectory(kind) => write!(f, "is {kind}, not a directory"),
            UnsafeReason::WrongOwner { owner, expected } => {
                write!(f, "is owned by uid {owner}, not by uid {expected}")
            }
            UnsafeReason::Changed => f.write_str("changed unexpectedly while being opened"),
        }
    }
}

/// Which lock could not be taken in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// A POSIX record lock (fcntl) on the mailbox file.
    Fcntl,
    /// A `.lock` file next to the mailbox (or `.mh_sequences.lock` in an MH folder).
    Dotlock,
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Fcntl => "fcntl lock",
            LockKind::Dotlock => "dotlock",
        })
    }
}

/// A failed delivery into a mailbox. Every variant names the path it concerns.
#[derive(Debug)]
pub enum MailboxError {
    /// A system call failed; `action` says what we were doing ("cannot write", ...).
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The path failed a safe-open check.
    Unsafe { reason: UnsafeReason, path: PathBuf },
    /// The Maildir++ quota (maildirsize) does not allow this message; `path` is the maildir.
    OverQuota {
        path: PathBuf,
        usage: QuotaUsage,
        limits: QuotaLimits,
        message_size: u64,
    },
    /// A lock was held by someone else for longer than the configured timeout.
    LockTimeout {
        path: PathBuf,
        lock: LockKind,
        waited: Duration,
    },
    /// Writing failed and truncating the mailbox back to its old length failed too: a partial
    /// message may remain (the next delivery still starts on a fresh line).
    Rollback {
        path: PathBuf,
        cause: io::Error,
        truncate: io::Error,
    },
    /// No unused file name was found after `attempts` tries (maildir names, MH numbers).
    NoUniqueName { path: PathBuf, attempts: u32 },
}

impl MailboxError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        MailboxError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn nix(action: &'static str, path: impl Into<PathBuf>, errno: nix::Error) -> Self {
        MailboxError::Io {
            action,
            path: path.into(),
            source: io::Error::from(errno),
        }
    }

    pub(crate) fn unsafe_path(reason: UnsafeReason, path: impl Into<PathBuf>) -> Self {
        MailboxError::Unsafe {
            reason,
            path: path.into(),
        }
    }

    /// The path this error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            MailboxError::Io { path, .. }
            | MailboxError::Unsafe { path, .. }
            | MailboxError::OverQuota { path, .. }
            | MailboxError::LockTimeout { path, .. }
            | MailboxError::Rollback { path, .. }
            | MailboxError::NoUniqueName { path, .. } => path,
        }
    }

    /// The delivery outcome this error means (Postfix `mbox_dsn` rules; see `errno.rs`).
    pub fn outcome(&self) -> Outcome {
        let text = self.to_string();
        match self {
            MailboxError::Io {
                source,
                action,
                path,
            } => errno::outcome_for_io(source, &format!("{action} {}", path.display())),
            MailboxError::Unsafe { reason, .. } => match reason {
                UnsafeReason::WrongOwner { .. } | UnsafeReason::Changed => {
                    Outcome::temporary(codes::MAILBOX_STATUS, text)
                }
                UnsafeReason::Symlink
                | UnsafeReason::HardLinks(_)
                | UnsafeReason::NotRegular(_)
                | UnsafeReason::NotDirectory(_) => {
                    Outcome::permanent(codes::MAILBOX_STATUS, ExitCode::NoPerm, text)
                }
            },
            MailboxError::OverQuota { .. } => {
                Outcome::permanent(codes::MAILBOX_FULL, ExitCode::NoPerm, text)
            }
            MailboxError::LockTimeout { .. } => Outcome::temporary(codes::MAILBOX_STATUS, text),
            MailboxError::Rollback { .. } | MailboxError::NoUniqueName { .. } => {
                Outcome::temporary(codes::SYSTEM_STATUS, text)
            }
        }
    }

    /// True for the Maildir++ quota and for the file system's own quota (EDQUOT), the two
    /// "mailbox full" conditions a configuration may want to defer instead of bounce.
    pub fn is_over_quota(&self) -> bool {
        match self {
            MailboxError::OverQuota { .. } => true,
            MailboxError::Io { source, .. } => {
                source.raw_os_error() == Some(nix::errno::Errno::EDQUOT as i32)
            }
            _ => false,
        }
    }

    /// True when the error is a temporary condition (the MTA should retry).
    pub fn is_temporary(&self) -> bool {
        self.outcome().kind == cursus_mail::OutcomeKind::Temporary
    }

    /// The errno class of an I/O error, if this is one.
    pub fn errno_class(&self) -> Option<ErrnoClass> {
        match self {
            MailboxError::Io { source, .. } => Some(errno::classify(source)),
            MailboxError::Rollback { cause, .. } => Some(errno::classify(cause)),
            _ => None,
        }
    }
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxError::Io {
                action,
                path,
                source,
            } => {
                write!(
                    f,
                    "{action} {}: {}",
                    path.display(),
                    errno::describe(source)
                )
            }
            MailboxError::Unsafe { reason, path } => {
                write!(f, "refusing mailbox {}: it {reason}", path.display())
            }
            MailboxError::OverQuota {
                path,
                usage,
                limits,
                message_size,
            } => {
                write!(
                    f,
                    "mailbox {} is over quota: {} bytes in {} messages",
                    path.display(),
                    usage.bytes,
                    usage.messages
                )?;
                match (limits.bytes, limits.messages) {
                    (Some(b), Some(c)) => write!(f, " (limit {b} bytes, {c} messages)")?,
                    (Some(b), None) => write!(f, " (limit {b} bytes)")?,
                    (None, Some(c)) => write!(f, " (limit {c} messages)")?,
                    (None, None) => {}
                }
                write!(f, ", message of {message_size} bytes")
            }
            MailboxError::LockTimeout { path, lock, waited } => {
                write!(
                    f,
                    "cannot take the {lock} on {} within {} ms",
                    path.display(),
                    waited.as_millis()
                )
            }
            MailboxError::Rollback {
                path,
                cause,
                truncate,
            } => write!(
                f,
                "cannot write {}: {}; truncating it back also failed: {}",
                path.display(),
                errno::describe(cause),
                errno::describe(truncate)
            ),
            MailboxError::NoUniqueName { path, attempts } => {
                write!(
                    f,
                    "no unused file name in {} after {attempts} attempts",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for MailboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MailboxError::Io { source, .. } => Some(source),
            MailboxError::Rollback { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cursus_mail::OutcomeKind;
    use nix::errno::Errno;

    fn io(errno: Errno) -> MailboxError {
        MailboxError::io(
            "cannot write",
            "/var/mail/u",
            io::Error::from_raw_os_error(errno as i32),
        )
    }

    #[test]
    fn outcomes_follow_the_brief() {
        let table: Vec<(MailboxError, &str, OutcomeKind, i32)> = vec![
            (io(Errno::EAGAIN), "4.2.0", OutcomeKind::Temporary, 75),
            (io(Errno::ENOSPC), "4.3.1", OutcomeKind::Temporary, 75),
            (io(Errno::EDQUOT), "5.2.2", OutcomeKind::Permanent, 77),
            (io(Errno::EFBIG), "5.2.2", OutcomeKind::Permanent, 77),
            (io(Errno::EROFS), "4.2.0", OutcomeKind::Temporary, 75),
            (io(Errno::EIO), "4.3.0", OutcomeKind::Temporary, 75),
            (
                MailboxError::unsafe_path(UnsafeReason::Symlink, "/m"),
                "5.2.0",
                OutcomeKind::Permanent,
                77,
            ),
            (
                MailboxError::unsafe_path(UnsafeReason::HardLinks(2), "/m"),
                "5.2.0",
                OutcomeKind::Permanent,
                77,
            ),
            (
                MailboxError::unsafe_path(UnsafeReason::NotRegular(FileKind::Fifo), "/m"),
                "5.2.0",
                OutcomeKind::Permanent,
                77,
            ),
            (
                MailboxError::unsafe_path(
                    UnsafeReason::WrongOwner {
                        owner: 1,
                        expected: 2,
                    },
                    "/m",
                ),
                "4.2.0",
                OutcomeKind::Temporary,
                75,
            ),
            (
                MailboxError::unsafe_path(UnsafeReason::Changed, "/m"),
                "4.2.0",
                OutcomeKind::Temporary,
                75,
            ),
            (
                MailboxError::LockTimeout {
                    path: "/m".into(),
                    lock: LockKind::Fcntl,
                    waited: Duration::from_secs(1),
                },
                "4.2.0",
                OutcomeKind::Temporary,
                75,
            ),
            (
                MailboxError::OverQuota {
                    path: "/m".into(),
                    usage: QuotaUsage {
                        bytes: 10,
                        messages: 1,
                    },
                    limits: QuotaLimits {
                        bytes: Some(10),
                        messages: None,
                    },
                    message_size: 5,
                },
                "5.2.2",
                OutcomeKind::Permanent,
                77,
            ),
        ];
        for (error, status, kind, exit) in table {
            let outcome = error.outcome();
            assert_eq!(outcome.status.to_string(), status, "{error}");
            assert_eq!(outcome.kind, kind, "{error}");
            assert_eq!(outcome.exit_code(), exit, "{error}");
            let line = error.to_string();
            assert!(
                line.contains("/m") || line.contains("/var/mail/u"),
                "{line}"
            );
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn over_quota_is_recognised() {
        assert!(io(Errno::EDQUOT).is_over_quota());
        assert!(!io(Errno::ENOSPC).is_over_quota());
        let quota = MailboxError::OverQuota {
            path: "/m".into(),
            usage: QuotaUsage::default(),
            limits: QuotaLimits::default(),
            message_size: 1,
        };
        assert!(quota.is_over_quota());
    }
}
