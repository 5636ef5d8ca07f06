//! mbox delivery: safe open, fcntl + dotlock, one mboxrd entry appended, rollback on failure
//! (mda-interface §4, compatible with Postfix local(8)).
//!
//! Trusts: the mailbox path up to its directory (see `safe_open.rs`); runs as the recipient.
//! Fails: every failure leaves the mailbox as it was: after any write or fsync error the file
//! is truncated back to its original length and fsynced *before* the locks are released
//! (Postfix `mail_copy`: truncating after unlocking could cut off another writer's message).
//! If that truncate fails too, the error is [`MailboxError::Rollback`] (temporary).
//!
//! Order, and what each step stops:
//! 1. `safe_open` (O_NOFOLLOW|O_NONBLOCK, regular, one link, our uid, lstat == fstat): symlink
//!    and hard-link attacks, FIFO denial of service, foreign mailboxes; a new mailbox only
//!    with O_CREAT|O_EXCL, mode 0600.
//! 2. fcntl write lock, then the `.lock` dotlock, both non-blocking; if the second cannot be
//!    had, the first is released and everything restarts after a random pause, until
//!    `lock_timeout` (Debian policy §11.6: fcntl first, dotlock after, never wait holding one).
//!    A directory where we may not create the dotlock (`/var/mail` 2775 root:mail) leaves us
//!    with the fcntl lock alone, and the delivery note says so.
//! 3. Re-check after locking: the mailbox may have been replaced or unlinked while we waited.
//! 4. If the mailbox does not end with a blank line, the missing newlines come first, so our
//!    `From ` line always starts a line after a blank line.
//! 5. Append with O_APPEND, flush, fsync; on error truncate, fsync; then unlink the dotlock
//!    and close (which releases the fcntl lock).

use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::dotlock::{self, Attempt, Dotlock, LockWait};
use crate::error::{LockKind, MailboxError};
use crate::mboxrd;
use crate::message::Message;
use crate::record_lock;
use crate::safe_open::{self, Access, SafeFile};
use crate::stored::Stored;

/// How to deliver into an mbox file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MboxOptions {
    /// Create the file (O_CREAT|O_EXCL, 0600) when missing.
    pub create: bool,
    /// How long to wait for the fcntl lock and the dotlock before a temporary failure.
    pub lock_timeout: Duration,
    /// Also take `<mbox>.lock`.
    pub dotlock: bool,
    /// A `.lock` older than this whose pid (if written) is dead is removed.
    pub stale_dotlock_after: Duration,
    /// fsync the mailbox after writing.
    pub fsync: bool,
}

impl Default for MboxOptions {
    /// Create missing mailboxes, 60 s lock timeout, dotlock on, stale after 300 s, fsync on.
    fn default() -> Self {
        MboxOptions {
            create: true,
            lock_timeout: Duration::from_secs(60),
            dotlock: true,
            stale_dotlock_after: Duration::from_secs(300),
            fsync: true,
        }
    }
}

/// Appends `message` to the mbox at `path` with a `From <sender>  <date>` line; see the file
/// header for the procedure. `envelope_sender`: `None` is the null sender (`MAILER-DAEMON`).
pub fn deliver_mbox(
    path: &Path,
    envelope_sender: Option<&str>,
    message: &Message,
    opts: &MboxOptions,
) -> Result<Stored, MailboxError> {
    let from_line = mboxrd::from_line(envelope_sender, SystemTime::now());
    let mut notes = Vec::new();
    let (dir, name) = safe_open::open_parent(path)?;
    let dir_path: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(file) =
        safe_open::open_or_create_at(dir.as_fd(), &name, path, Access::Append, opts.create)?
    else {
        return Err(MailboxError::io(
            "cannot open mailbox",
            path,
            std::io::Error::from_raw_os_error(nix::errno::Errno::ENOENT as i32),
        ));
    };
    let lock_name = format!("{name}.lock");
    let dotlock = take_locks(
        &file,
        path,
        &dir_path,
        dir.as_fd(),
        &lock_name,
        opts,
        &mut notes,
    )?;
    let result = append_locked(&file, dir.as_fd(), &name, path, &from_line, message, opts);
    if let Some(lock) = dotlock
        && let Err(e) = lock.release()
    {
        notes.push(e.to_string());
    }
    drop(file);
    result.map(|()| Stored::new(path.to_path_buf(), notes))
}

/// Takes the fcntl lock and (if wanted and possible) the dotlock, restarting both while either
/// is held by someone else.
fn take_locks<'a>(
    file: &SafeFile,
    path: &Path,
    dir_path: &Path,
    dir: std::os::fd::BorrowedFd<'a>,
    lock_name: &str,
    opts: &MboxOptions,
    notes: &mut Vec<String>,
) -> Result<Option<Dotlock<'a>>, MailboxError> {
    let mut wait = LockWait::new(opts.lock_timeout);
    loop {
        let locked = record_lock::try_write_lock(file.file.as_fd())
            .map_err(|e| MailboxError::io("cannot lock", path, e))?;
        if !locked {
            if !wait.pause() {
                return Err(MailboxError::LockTimeout {
                    path: path.to_path_buf(),
                    lock: LockKind::Fcntl,
                    waited: wait.waited(),
                });
            }
            continue;
        }
        if !opts.dotlock {
            return Ok(None);
        }
        match dotlock::try_lock(dir, dir_path, lock_name, opts.stale_dotlock_after)? {
            Attempt::Acquired(lock) => return Ok(Some(lock)),
            Attempt::NotPermitted(e) => {
                notes.push(format!(
                    "dotlock {} skipped: {}",
                    dir_path.join(lock_name).display(),
                    crate::errno::describe(&e)
                ));
                return Ok(None);
            }
            Attempt::Busy => {
                record_lock::unlock(file.file.as_fd())
                    .map_err(|e| MailboxError::io("cannot unlock", path, e))?;
                if !wait.pause() {
                    return Err(MailboxError::LockTimeout {
                        path: dir_path.join(lock_name),
                        lock: LockKind::Dotlock,
                        waited: wait.waited(),
                    });
                }
            }
        }
    }
}

/// Everything done while holding the locks; restores the original length on failure.
fn append_locked(
    file: &SafeFile,
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    path: &Path,
    from_line: &str,
    message: &Message,
    opts: &MboxOptions,
) -> Result<(), MailboxError> {
    let st = safe_open::recheck(dir, name, path, file)?;
    let original_len = st.st_size.max(0) as u64;
    let Err(cause) = write_entry(&file.file, original_len, from_line, message, opts.fsync) else {
        return Ok(());
    };
    match file
        .file
        .set_len(original_len)
        .and_then(|()| file.file.sync_all())
    {
        Ok(()) => Err(MailboxError::io("cannot write", path, cause)),
        Err(truncate) => Err(MailboxError::Rollback {
            path: path.to_path_buf(),
            cause,
            truncate,
        }),
    }
}

/// Writes the separator gap and the entry, flushes, fsyncs.
fn write_entry(
    file: &std::fs::File,
    original_len: u64,
    from_line: &str,
    message: &Message,
    fsync: bool,
) -> std::io::Result<()> {
    let gap = separator_gap(file, original_len)?;
    let mut writer = BufWriter::with_capacity(64 * 1024, file);
    let written = writer
        .write_all(gap)
        .and_then(|()| mboxrd::write_entry(&mut writer, from_line, message))
        .and_then(|()| writer.flush());
    // into_parts drops unwritten bytes: dropping a BufWriter would flush them, possibly after
    // the caller's truncate.
    let _ = writer.into_parts();
    written?;
    if fsync {
        file.sync_all()?;
    }
    Ok(())
}

/// The newlines needed so that the mailbox ends with a blank line (nothing for an empty file).
fn separator_gap(file: &std::fs::File, len: u64) -> std::io::Result<&'static [u8]> {
    if len == 0 {
        return Ok(b"");
    }
    let mut tail = [0u8; 2];
    let start = len.saturating_sub(2);
    let want = (len - start) as usize;
    file.read_exact_at(&mut tail[..want], start)?;
    let tail = &tail[..want];
    Ok(match tail {
        b"\n\n" | b"\n" => b"",
        [.., b'\n'] => b"\n",
        _ => b"\n\n",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"\n", b""),
            (b"x\n\n", b""),
            (b"x\n", b"\n"),
            (b"x", b"\n\n"),
            (b"xy", b"\n\n"),
        ];
        for (content, want) in table {
            let tmp = tempfile::NamedTempFile::new().expect("tmp");
            std::fs::write(tmp.path(), content).expect("write");
            let f = std::fs::File::open(tmp.path()).expect("open");
            assert_eq!(
                separator_gap(&f, content.len() as u64).expect("gap"),
                *want,
                "{content:?}"
            );
        }
    }
}
