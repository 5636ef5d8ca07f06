//! Dotlocks: `<mailbox>.lock` files created atomically, NFS-safe, with stale-lock removal
//! (mda-interface §4.4), and the retry schedule shared by every lock we wait for.
//!
//! Trusts: the directory descriptor it is given; the pid written in someone else's lock file
//! only as a hint (a lock is removed only when it is old *and* its pid, if any, is dead).
//! Fails: `Busy` when someone else holds a fresh lock, `NotPermitted` when the directory does
//! not let us create files (a `/var/mail` that is `2775 root:mail`; the mbox writer then goes
//! on with its fcntl lock alone, as Dovecot's `dotlock_try` and Python's mailbox do), and
//! [`MailboxError::Io`] otherwise.
//!
//! Each rule and what it stops:
//! * The lock is made by `link()`ing a uniquely named temporary file (created with
//!   O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600) to the lock name; success is `link()` returning 0 or
//!   the temporary file having two links (NFS may lose the reply to a link that worked). Never
//!   `open(O_CREAT)` without O_EXCL: a symlink planted at the lock name would make us create
//!   or truncate a file elsewhere.
//! * Stale removal needs both age (mtime older than the configured time; liblockfile refreshes
//!   mtime) and a dead pid, so a slow but live delivery is never broken into; the lock's
//!   device, inode and change time are compared right before the unlink, so a lock that another process
//!   just replaced is not removed.
//! * Release unlinks the lock only if the name still points at our lock file.

use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::signal::kill;
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{Pid, UnlinkatFlags, linkat, unlinkat};

use crate::error::MailboxError;
use crate::maildir_name::{host, random_bytes};
use crate::safe_open::FILE_MODE;

/// A held dotlock; released by [`Dotlock::release`] or when dropped.
#[derive(Debug)]
pub(crate) struct Dotlock<'a> {
    dir: BorrowedFd<'a>,
    name: String,
    path: PathBuf,
    identity: Identity,
    released: bool,
}

/// What tells one lock file from another: device, inode and change time (an inode number
/// alone is reused at once by many file systems after an unlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl Identity {
    fn of(st: &nix::sys::stat::FileStat) -> Identity {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// The result of one attempt to take a dotlock.
#[derive(Debug)]
pub(crate) enum Attempt<'a> {
    Acquired(Dotlock<'a>),
    /// Someone else holds a lock that is not stale.
    Busy,
    /// The directory does not allow us to create the lock (EACCES, EPERM, EROFS).
    NotPermitted(io::Error),
}

/// Tries once to create `lock_name` in `dir`; `dir_path` is the directory's path for messages.
/// A stale lock found on the way is removed and the attempt repeated.
pub(crate) fn try_lock<'a>(
    dir: BorrowedFd<'a>,
    dir_path: &Path,
    lock_name: &str,
    stale_after: Duration,
) -> Result<Attempt<'a>, MailboxError> {
    let path = dir_path.join(lock_name);
    for _ in 0..3 {
        // A cheap look first, so that polling a held lock creates no files.
        if fstatat(dir, lock_name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
            && !remove_if_stale(dir, lock_name, &path, stale_after)?
        {
            return Ok(Attempt::Busy);
        }
        match create(dir, dir_path, lock_name, &path)? {
            Created::Yes => {
                let st = fstatat(dir, lock_name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| MailboxError::nix("cannot stat", &path, e))?;
                return Ok(Attempt::Acquired(Dotlock {
                    dir,
                    name: lock_name.to_string(),
                    path,
                    identity: Identity::of(&st),
                    released: false,
                }));
            }
            Created::NotPermitted(e) => return Ok(Attempt::NotPermitted(e)),
            Created::Exists => {
                if !remove_if_stale(dir, lock_name, &path, stale_after)? {
                    return Ok(Attempt::Busy);
                }
            }
        }
    }
    Ok(Attempt::Busy)
}

/// Takes `lock_name` in `dir`, retrying until `timeout`; a directory that refuses the lock is
/// an error here (MH folders, where we must be able to create files anyway).
pub(crate) fn lock<'a>(
    dir: BorrowedFd<'a>,
    dir_path: &Path,
    lock_name: &str,
    timeout: Duration,
    stale_after: Duration,
) -> Result<Dotlock<'a>, MailboxError> {
    let mut wait = LockWait::new(timeout);
    loop {
        match try_lock(dir, dir_path, lock_name, stale_after)? {
            Attempt::Acquired(lock) => return Ok(lock),
            Attempt::NotPermitted(e) => {
                return Err(MailboxError::io(
                    "cannot create lock",
                    dir_path.join(lock_name),
                    e,
                ));
            }
            Attempt::Busy => {
                if !wait.pause() {
                    return Err(MailboxError::LockTimeout {
                        path: dir_path.join(lock_name),
                        lock: crate::error::LockKind::Dotlock,
                        waited: wait.waited(),
                    });
                }
            }
        }
    }
}

enum Created {
    Yes,
    Exists,
    NotPermitted(io::Error),
}

fn is_permission(errno: Errno) -> bool {
    matches!(errno, Errno::EACCES | Errno::EPERM | Errno::EROFS)
}

/// The link trick; falls back to a plain O_EXCL create where hard links are not supported.
fn create(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    lock_name: &str,
    path: &Path,
) -> Result<Created, MailboxError> {
    let mut random = [0u8; 4];
    random_bytes(&mut random).map_err(|e| MailboxError::io("cannot lock", path, e))?;
    let tmp = format!(
        ".{lock_name}.{}.{}.{:08x}",
        host(),
        std::process::id(),
        u32::from_be_bytes(random)
    );
    let tmp_path = dir_path.join(&tmp);
    match write_pid_file(dir, &tmp) {
        Ok(()) => {}
        Err(e) if is_permission(e) => return Ok(Created::NotPermitted(e.into())),
        // The temporary name is too long or otherwise impossible: lock without the trick.
        Err(Errno::ENAMETOOLONG) => return create_direct(dir, lock_name, path),
        Err(e) => return Err(MailboxError::nix("cannot create", &tmp_path, e)),
    }
    let linked = linkat(dir, tmp.as_str(), dir, lock_name, AtFlags::empty());
    let result = match linked {
        Ok(()) => Ok(Created::Yes),
        Err(Errno::EEXIST) => Ok(Created::Exists),
        Err(Errno::EPERM | Errno::EOPNOTSUPP | Errno::EMLINK) => {
            // No hard links on this file system.
            let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return create_direct(dir, lock_name, path);
        }
        Err(e) => match fstatat(dir, tmp.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            // The link was made but its reply was lost (NFS).
            Ok(st) if st.st_nlink == 2 => Ok(Created::Yes),
            _ => Err(MailboxError::nix("cannot link lock", path, e)),
        },
    };
    let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    result
}

fn create_direct(
    dir: BorrowedFd<'_>,
    lock_name: &str,
    path: &Path,
) -> Result<Created, MailboxError> {
    match write_pid_file(dir, lock_name) {
        Ok(()) => Ok(Created::Yes),
        Err(Errno::EEXIST) => Ok(Created::Exists),
        Err(e) if is_permission(e) => Ok(Created::NotPermitted(e.into())),
        Err(e) => Err(MailboxError::nix("cannot create", path, e)),
    }
}

/// Creates `name` exclusively and writes our pid into it.
fn write_pid_file(dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::from_bits_truncate(FILE_MODE))?;
    let mut file = std::fs::File::from(fd);
    if let Err(e) = file.write_all(format!("{}\n", std::process::id()).as_bytes()) {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        return Err(e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO));
    }
    Ok(())
}

/// Removes the lock if it is stale; true when it was removed (or vanished) and a new attempt
/// makes sense.
fn remove_if_stale(
    dir: BorrowedFd<'_>,
    lock_name: &str,
    path: &Path,
    stale_after: Duration,
) -> Result<bool, MailboxError> {
    let st = match fstatat(dir, lock_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(true),
        Err(e) => return Err(MailboxError::nix("cannot stat", path, e)),
    };
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
    let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
    if age <= stale_after {
        return Ok(false);
    }
    if let Some(pid) = read_pid(dir, lock_name) {
        // EPERM: the process exists but belongs to someone else.
        if pid > 0 && matches!(kill(Pid::from_raw(pid), None), Ok(()) | Err(Errno::EPERM)) {
            return Ok(false);
        }
    }
    match fstatat(dir, lock_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(now) if Identity::of(&now) == Identity::of(&st) => {
            match unlinkat(dir, lock_name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(true),
                Err(e) if is_permission(e) => Ok(false),
                Err(e) => Err(MailboxError::nix("cannot remove stale lock", path, e)),
            }
        }
        Ok(_) | Err(Errno::ENOENT) => Ok(true),
        Err(e) => Err(MailboxError::nix("cannot stat", path, e)),
    }
}

/// The pid in a lock file, if it holds a decimal number.
fn read_pid(dir: BorrowedFd<'_>, lock_name: &str) -> Option<i32> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(dir, lock_name, flags, Mode::empty()).ok()?;
    let mut text = Vec::new();
    std::fs::File::from(fd)
        .take(32)
        .read_to_end(&mut text)
        .ok()?;
    std::str::from_utf8(&text).ok()?.trim().parse().ok()
}

impl Dotlock<'_> {
    /// Removes the lock file if it is still ours.
    pub(crate) fn release(mut self) -> Result<(), MailboxError> {
        self.released = true;
        self.unlink()
    }

    fn unlink(&self) -> Result<(), MailboxError> {
        match fstatat(self.dir, self.name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if Identity::of(&st) == self.identity => {
                unlinkat(self.dir, self.name.as_str(), UnlinkatFlags::NoRemoveDir)
                    .or_else(|e| if e == Errno::ENOENT { Ok(()) } else { Err(e) })
                    .map_err(|e| MailboxError::nix("cannot remove lock", &self.path, e))
            }
            // Gone or replaced: someone judged it stale; not ours to remove any more.
            _ => Ok(()),
        }
    }
}

impl Drop for Dotlock<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.unlink();
        }
    }
}

/// The retry schedule for locks: random pauses that start at a few milliseconds and grow to
/// at most 50 ms, until a deadline. Short first pauses keep deliveries that only collide with
/// each other fast; the cap keeps a waiting delivery from polling a long-held lock too often.
#[derive(Debug)]
pub(crate) struct LockWait {
    start: Instant,
    timeout: Duration,
    next: Duration,
}

impl LockWait {
    pub(crate) fn new(timeout: Duration) -> LockWait {
        LockWait {
            start: Instant::now(),
            timeout,
            next: Duration::from_millis(2),
        }
    }

    /// Sleeps before the next attempt; false when the time is up (no sleep then).
    pub(crate) fn pause(&mut self) -> bool {
        let waited = self.start.elapsed();
        if waited >= self.timeout {
            return false;
        }
        let mut random = [0u8; 2];
        let jitter = match random_bytes(&mut random) {
            Ok(()) => u64::from(u16::from_be_bytes(random)),
            Err(_) => 32768,
        };
        let max = self.next.as_micros() as u64;
        let sleep = Duration::from_micros(max / 2 + (max / 2) * jitter / 65535);
        std::thread::sleep(sleep.min(self.timeout - waited));
        self.next = (self.next * 2).min(Duration::from_millis(50));
        true
    }

    pub(crate) fn waited(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn dir(path: &Path) -> std::os::fd::OwnedFd {
        crate::safe_open::open_dir(path, false).expect("dir")
    }

    #[test]
    fn lock_is_exclusive_and_released() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fd = dir(tmp.path());
        let stale = Duration::from_secs(300);
        let Attempt::Acquired(lock) =
            try_lock(fd.as_fd(), tmp.path(), "m.lock", stale).expect("try")
        else {
            panic!("not acquired")
        };
        let pid = std::fs::read_to_string(tmp.path().join("m.lock")).expect("read");
        assert_eq!(pid.trim(), std::process::id().to_string());
        assert!(matches!(
            try_lock(fd.as_fd(), tmp.path(), "m.lock", stale).expect("try"),
            Attempt::Busy
        ));
        lock.release().expect("release");
        assert!(!tmp.path().join("m.lock").exists());
        // Only the lock itself was ever left behind: no temporary files.
        assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 0);
    }

    #[test]
    fn release_leaves_a_replaced_lock_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fd = dir(tmp.path());
        let Attempt::Acquired(lock) =
            try_lock(fd.as_fd(), tmp.path(), "m.lock", Duration::from_secs(1)).expect("try")
        else {
            panic!("not acquired")
        };
        std::fs::remove_file(tmp.path().join("m.lock")).expect("rm");
        std::fs::write(tmp.path().join("m.lock"), b"1\n").expect("write");
        drop(lock);
        assert!(tmp.path().join("m.lock").exists());
    }

    #[test]
    fn timeout_on_a_fresh_lock() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fd = dir(tmp.path());
        std::fs::write(tmp.path().join("m.lock"), b"1\n").expect("write");
        let start = Instant::now();
        let err = lock(
            fd.as_fd(),
            tmp.path(),
            "m.lock",
            Duration::from_millis(300),
            Duration::from_secs(300),
        )
        .expect_err("must time out");
        assert!(matches!(err, MailboxError::LockTimeout { .. }), "{err:?}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn wait_schedule_ends_at_the_deadline() {
        let mut wait = LockWait::new(Duration::from_millis(50));
        let start = Instant::now();
        let mut pauses = 0;
        while wait.pause() {
            pauses += 1;
            assert!(pauses < 1000);
        }
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(pauses >= 2);
    }
}
