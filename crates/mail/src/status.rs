//! Delivery outcomes: enhanced status codes (RFC 3463) and the sysexits an MDA returns.
//!
//! Trusts nothing: `EnhancedStatus::parse` accepts only `class.subject.detail` with the
//! ranges RFC 3463 allows. A delivery never fails with an error type; it ends in an
//! [`Outcome`], which says delivered, temporary or permanent, with a status and one line of
//! text that is safe to show in a bounce.

use crate::prelude::*;

use core::fmt;

/// An RFC 3463 enhanced status code such as `5.2.2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// Builds a status; `class` must be 2, 4 or 5 and subject/detail at most 999.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        assert!(
            class == 2 || class == 4 || class == 5,
            "status class must be 2, 4 or 5"
        );
        assert!(
            subject <= 999 && detail <= 999,
            "status subject/detail out of range"
        );
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// Parses `X.Y.Z` (RFC 3463 §2: class 2/4/5, 1-3 digit subject and detail).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        // RFC 3463: subject and detail are "0" / (%x31-39 0*2digit): no leading zero, so
        // each code has one spelling (a peer's "5.01.0" is not an enhanced status code, and
        // what we decode we write back unchanged).
        let digits = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s.len() == 1 || !s.starts_with('0'))
        };
        if !digits(class, 1) || !digits(subject, 3) || !digits(detail, 3) {
            return None;
        }
        let class: u8 = class.parse().ok()?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(EnhancedStatus {
            class,
            subject: subject.parse().ok()?,
            detail: detail.parse().ok()?,
        })
    }

    pub const fn class(self) -> u8 {
        self.class
    }

    /// The same subject and detail with the class changed to temporary (4).
    pub const fn as_temporary(self) -> Self {
        EnhancedStatus { class: 4, ..self }
    }

    /// The same subject and detail with the class changed to permanent (5).
    pub const fn as_permanent(self) -> Self {
        EnhancedStatus { class: 5, ..self }
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Well-known codes, named for what they say (RFC 3463 §3).
pub mod codes {
    use super::EnhancedStatus;
    pub const DELIVERED: EnhancedStatus = EnhancedStatus::new(2, 0, 0);
    pub const BAD_MAILBOX: EnhancedStatus = EnhancedStatus::new(5, 1, 1);
    pub const MAILBOX_STATUS: EnhancedStatus = EnhancedStatus::new(5, 2, 0);
    pub const MAILBOX_DISABLED: EnhancedStatus = EnhancedStatus::new(5, 2, 1);
    pub const MAILBOX_FULL: EnhancedStatus = EnhancedStatus::new(5, 2, 2);
    pub const MESSAGE_TOO_LARGE: EnhancedStatus = EnhancedStatus::new(5, 2, 3);
    pub const SYSTEM_STATUS: EnhancedStatus = EnhancedStatus::new(5, 3, 0);
    pub const SYSTEM_FULL: EnhancedStatus = EnhancedStatus::new(4, 3, 1);
    pub const CONFIG_ERROR: EnhancedStatus = EnhancedStatus::new(4, 3, 5);
    pub const ROUTING_LOOP: EnhancedStatus = EnhancedStatus::new(5, 4, 6);
    pub const SYNTAX_ERROR: EnhancedStatus = EnhancedStatus::new(5, 5, 2);
    pub const INVALID_ARGUMENTS: EnhancedStatus = EnhancedStatus::new(5, 5, 4);
    pub const MEDIA_ERROR: EnhancedStatus = EnhancedStatus::new(5, 6, 0);
    pub const SECURITY: EnhancedStatus = EnhancedStatus::new(5, 7, 0);
    pub const DELIVERY_NOT_AUTHORIZED: EnhancedStatus = EnhancedStatus::new(5, 7, 1);
}

/// Whether a delivery happened, may be retried, or never will.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    Delivered,
    Temporary,
    Permanent,
}

/// What an MDA or transport exits with (sysexits.h); chosen so every MTA agrees on the class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    Usage = 64,
    DataErr = 65,
    NoUser = 67,
    Software = 70,
    TempFail = 75,
    NoPerm = 77,
    Config = 78,
}

/// The end of one delivery attempt: a kind, an enhanced status and one line of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub status: EnhancedStatus,
    pub text: String,
    /// The sysexits code for a permanent failure; temporary failures always exit 75, since
    /// 75 is the only code every MTA treats as temporary (mda-interface §2).
    pub exit: ExitCode,
}

impl Outcome {
    pub fn delivered(text: impl Into<String>) -> Self {
        Outcome {
            kind: OutcomeKind::Delivered,
            status: codes::DELIVERED,
            text: one_line(text.into()),
            exit: ExitCode::Ok,
        }
    }

    /// A temporary failure; the status is forced to class 4.
    pub fn temporary(status: EnhancedStatus, text: impl Into<String>) -> Self {
        Outcome {
            kind: OutcomeKind::Temporary,
            status: status.as_temporary(),
            text: one_line(text.into()),
            exit: ExitCode::TempFail,
        }
    }

    /// A permanent failure with the sysexits code that carries it; the status is forced to
    /// class 5.
    pub fn permanent(status: EnhancedStatus, exit: ExitCode, text: impl Into<String>) -> Self {
        debug_assert!(!matches!(exit, ExitCode::Ok | ExitCode::TempFail));
        Outcome {
            kind: OutcomeKind::Permanent,
            status: status.as_permanent(),
            text: one_line(text.into()),
            exit,
        }
    }

    pub fn is_delivered(&self) -> bool {
        self.kind == OutcomeKind::Delivered
    }

    pub fn exit_code(&self) -> i32 {
        self.exit as i32
    }
}

impl fmt::Display for Outcome {
    /// `X.Y.Z text`: the line an MTA puts into its log and bounce.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

/// Makes text safe for one diagnostic line: control characters become spaces, length is
/// capped at 200 bytes on a character boundary (Postfix keeps 4096 bytes of output, but a
/// bounce line should stay short and must never carry message content).
pub fn one_line(text: String) -> String {
    const MAX: usize = 200;
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>();
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// What kind of failure an errno is, before it becomes an [`Outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrnoClass {
    /// EAGAIN, EWOULDBLOCK, ESTALE: the mailbox is busy or an NFS handle went stale.
    Busy,
    /// ENOSPC: the file system is full.
    NoSpace,
    /// EDQUOT, EFBIG: the user's disk quota or file size limit is reached.
    MailboxFull,
    /// EACCES, EPERM, EROFS: permissions or a read-only mount; an administrator can fix it.
    Permission,
    /// ENOENT, ENOTDIR: the mailbox or a directory above it is missing.
    Missing,
    /// Anything else, including errors that carry no errno.
    Other,
}

impl ErrnoClass {
    /// Sorts an errno number (the operating system's, from `libc`) into its class: the one
    /// table, for cursus-mailbox's I/O errors and the front's system calls alike.
    pub fn from_raw(raw: i32) -> ErrnoClass {
        match raw {
            libc::EAGAIN | libc::ESTALE => ErrnoClass::Busy,
            libc::ENOSPC => ErrnoClass::NoSpace,
            libc::EDQUOT | libc::EFBIG => ErrnoClass::MailboxFull,
            libc::EACCES | libc::EPERM | libc::EROFS => ErrnoClass::Permission,
            libc::ENOENT | libc::ENOTDIR => ErrnoClass::Missing,
            _ => ErrnoClass::Other,
        }
    }

    /// The outcome of a failed system call of this class; `text` says what was being done,
    /// with the system's description of the error (Postfix `mbox_dsn()`, mda-interface §2:
    /// EAGAIN/ESTALE defer with 4.2.0, ENOSPC defers with 4.3.1, EDQUOT/EFBIG bounce with
    /// 5.2.2 and EX_NOPERM, permission errors and a missing mailbox defer with 4.2.0, and
    /// everything else defers with 4.3.0). The one place that decides whether an I/O error
    /// is temporary or permanent.
    pub fn outcome(self, text: String) -> Outcome {
        match self {
            ErrnoClass::Busy | ErrnoClass::Permission | ErrnoClass::Missing => {
                Outcome::temporary(codes::MAILBOX_STATUS, text)
            }
            ErrnoClass::NoSpace => Outcome::temporary(codes::SYSTEM_FULL, text),
            ErrnoClass::MailboxFull => {
                Outcome::permanent(codes::MAILBOX_FULL, ExitCode::NoPerm, text)
            }
            ErrnoClass::Other => Outcome::temporary(codes::SYSTEM_STATUS, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_rfc3463_forms_only() {
        let table: &[(&str, Option<&str>)] = &[
            ("5.2.2", Some("5.2.2")),
            ("4.3.0", Some("4.3.0")),
            ("2.0.0", Some("2.0.0")),
            ("5.123.456", Some("5.123.456")),
            ("3.0.0", None),
            ("5.2", None),
            ("5.2.2.1", None),
            ("5..2", None),
            ("5.1234.1", None),
            ("5.0.0", Some("5.0.0")),
            ("5.01.0", None),
            ("2.044.9", None),
            ("5.1.00", None),
            ("05.1.1", None),
            ("x.2.2", None),
            ("", None),
        ];
        for (input, want) in table {
            let got = EnhancedStatus::parse(input).map(|s| s.to_string());
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn outcome_forces_the_class_and_exit() {
        let t = Outcome::temporary(codes::MAILBOX_FULL, "over quota");
        assert_eq!(t.to_string(), "4.2.2 over quota");
        assert_eq!(t.exit_code(), 75);
        let p = Outcome::permanent(codes::SYSTEM_FULL, ExitCode::NoPerm, "x");
        assert_eq!(p.status.to_string(), "5.3.1");
        assert_eq!(p.exit_code(), 77);
    }

    #[test]
    fn one_line_strips_controls_and_caps_length() {
        assert_eq!(one_line("a\nb\tc\r".into()), "a b c ");
        let long = "é".repeat(300);
        let cut = one_line(long);
        assert!(cut.len() <= 200);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
