//! POSIX record locks (fcntl) on a whole mailbox file, the lock mutt, Dovecot and Postfix
//! take on Linux (mda-interface §4.4).
//!
//! Trusts: the kernel. Uses open-file-description locks (F_OFD_SETLK, Linux 3.15+) when
//! available: they conflict with the classic F_SETLK locks of other processes exactly like
//! those do, but they also exclude other descriptors of the *same* process (two threads
//! delivering at once) and are not dropped when some unrelated descriptor of the same file is
//! closed, two traps of classic POSIX locks. Falls back to F_SETLK where OFD locks are missing.
//! Fails: `Ok(false)` when another holder has the lock (EAGAIN/EACCES), `Err` otherwise.
//! The lock is released when the descriptor is closed.

use std::io;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

/// A write lock over the whole file (start 0, length 0 = to the end, whatever it becomes).
fn whole_file_write_lock() -> libc::flock {
    libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        // Must be 0 for OFD locks.
        l_pid: 0,
    }
}

/// Tries once to take an exclusive lock on the whole file; `Ok(false)` when it is held.
pub(crate) fn try_write_lock(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let lock = whole_file_write_lock();
    let result = match fcntl(fd, FcntlArg::F_OFD_SETLK(&lock)) {
        Err(Errno::EINVAL) => fcntl(fd, FcntlArg::F_SETLK(&lock)),
        other => other,
    };
    match result {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Releases the lock taken by [`try_write_lock`] on this descriptor (closing it does too).
pub(crate) fn unlock(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut lock = whole_file_write_lock();
    lock.l_type = libc::F_UNLCK as libc::c_short;
    match fcntl(fd, FcntlArg::F_OFD_SETLK(&lock)) {
        Err(Errno::EINVAL) => fcntl(fd, FcntlArg::F_SETLK(&lock)),
        other => other,
    }
    .map(drop)
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn two_descriptors_in_one_process_exclude_each_other() {
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        let a = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tmp.path())
            .expect("a");
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tmp.path())
            .expect("b");
        assert!(try_write_lock(a.as_fd()).expect("lock a"));
        assert!(!try_write_lock(b.as_fd()).expect("lock b"));
        unlock(a.as_fd()).expect("unlock a");
        assert!(try_write_lock(b.as_fd()).expect("lock b after a unlocked"));
        assert!(!try_write_lock(a.as_fd()).expect("lock a again"));
        drop(b);
        assert!(try_write_lock(a.as_fd()).expect("lock a after b closed"));
    }
}
