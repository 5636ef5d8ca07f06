//! The one table that turns an operating-system error into a delivery outcome.
//!
//! Trusts: nothing but the errno value inside an `io::Error`; errors without one (short
//! writes, unexpected end of file) fall into the default class.
//! Fails: never; every error maps to some outcome, and the default is temporary (4.3.0), so an
//! unknown condition is retried by the MTA rather than bounced.
//!
//! The rules copy Postfix `mbox_dsn()` (mda-interface §2): EAGAIN/ESTALE defer with 4.2.0,
//! ENOSPC defers with 4.3.1 (the disk may be cleaned up), EDQUOT/EFBIG bounce with 5.2.2 and
//! EX_NOPERM (the mailbox is full, as Courier deliverquota and dovecot-lda say), permission
//! errors defer with 4.2.0 because an administrator can fix them, a missing mailbox defers with
//! 4.2.0 (an unmounted home directory must not bounce mail), and everything else defers with
//! 4.3.0.

use std::io;

use cursus_mail::Outcome;
use nix::errno::Errno;

pub use cursus_mail::status::ErrnoClass;

/// Sorts an I/O error into its [`ErrnoClass`].
pub fn classify(error: &io::Error) -> ErrnoClass {
    let Some(raw) = error.raw_os_error() else {
        return ErrnoClass::Other;
    };
    ErrnoClass::from_raw(raw)
}

/// Maps an I/O error to a delivery outcome. `context` says what was being done and names the
/// path (for example `"cannot write /home/u/Maildir/tmp/x"`); it becomes the outcome text,
/// followed by the system's description of the error. This is the only place that decides
/// whether an I/O error is temporary or permanent.
pub fn outcome_for_io(error: &io::Error, context: &str) -> Outcome {
    classify(error).outcome(format!("{context}: {}", describe(error)))
}

/// The error's description without Rust's " (os error N)" suffix, which means nothing to the
/// reader of a bounce.
pub fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(raw) => Errno::from_raw(raw).desc().to_string(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cursus_mail::OutcomeKind;

    #[test]
    fn errno_table_matches_postfix_mbox_dsn() {
        let table: &[(Errno, &str, OutcomeKind, i32)] = &[
            (Errno::EAGAIN, "4.2.0", OutcomeKind::Temporary, 75),
            (Errno::ESTALE, "4.2.0", OutcomeKind::Temporary, 75),
            (Errno::ENOSPC, "4.3.1", OutcomeKind::Temporary, 75),
            (Errno::EDQUOT, "5.2.2", OutcomeKind::Permanent, 77),
            (Errno::EFBIG, "5.2.2", OutcomeKind::Permanent, 77),
            (Errno::EACCES, "4.2.0", OutcomeKind::Temporary, 75),
            (Errno::EPERM, "4.2.0", OutcomeKind::Temporary, 75),
            (Errno::EROFS, "4.2.0", OutcomeKind::Temporary, 75),
            (Errno::ENOENT, "4.2.0", OutcomeKind::Temporary, 75),
            (Errno::EIO, "4.3.0", OutcomeKind::Temporary, 75),
            (Errno::ELOOP, "4.3.0", OutcomeKind::Temporary, 75),
        ];
        for (errno, status, kind, exit) in table {
            let error = io::Error::from_raw_os_error(*errno as i32);
            let outcome = outcome_for_io(&error, "cannot write /m");
            assert_eq!(outcome.status.to_string(), *status, "{errno}");
            assert_eq!(outcome.kind, *kind, "{errno}");
            assert_eq!(outcome.exit_code(), *exit, "{errno}");
            assert!(
                outcome.text.starts_with("cannot write /m: "),
                "{}",
                outcome.text
            );
            assert!(!outcome.text.contains("os error"), "{}", outcome.text);
        }
    }

    #[test]
    fn errors_without_errno_are_temporary() {
        let error = io::Error::new(io::ErrorKind::WriteZero, "short write");
        let outcome = outcome_for_io(&error, "x");
        assert_eq!(outcome.status.to_string(), "4.3.0");
        assert_eq!(outcome.text, "x: short write");
    }
}
