//! cursus-privsep: credential changes and process hygiene, the only unsafe code in Cursus.
//!
//! Trusts its callers to pass a uid/gid they resolved from the system's user database; it
//! trusts nothing about the state it inherited (file descriptors, signal dispositions,
//! umask). Every function either succeeds completely or returns an error; a credential
//! change that cannot be verified afterwards is an error, never a warning.
//!
//! Attacks it stops:
//! - A delivery agent started as root that keeps a way back to root (saved set-user-ID, a
//!   supplementary group such as `mail` or `disk`): [`become_user`] clears supplementary
//!   groups, sets real, effective and saved IDs, and then proves ([`prove_dropped`]) that
//!   `setuid(0)` and `setgid(0)` fail.
//! - Capabilities kept across the uid change (a parent that set PR_SET_KEEPCAPS or the
//!   SECBIT_KEEP_CAPS securebit, which fork and exec inherit): the permitted set survives
//!   setuid, and a later capset(2) would make CAP_DAC_OVERRIDE or CAP_SETUID effective
//!   again although `setuid(0)` fails at the check; [`prove_dropped`] requires the
//!   permitted, effective and ambient sets in /proc/self/status to be empty.
//! - A raw setuid in a threaded process changes one thread only (Linux per-thread
//!   credentials): [`become_user`] refuses to run when the process has more than one thread.
//! - Descriptors leaked by the parent (Exim passes its own, e.g. fd 251) reaching a user's
//!   filter or command: [`close_inherited_descriptors`].
//! - A file-size limit set by the MTA (Postfix `mailbox_size_limit`) killing us with
//!   SIGXFSZ mid-write instead of giving EFBIG we can roll back: [`ignore_sigxfsz`].
//! - A fork in a threaded process leaving a child with locks held by threads that no longer
//!   exist (and a credential change that only covers one thread): [`fork_process`] refuses
//!   when the process has more than one thread.
//! - Descriptors and peer identities across a unix socket: see `passing.rs`.

#![allow(unsafe_code)] // reason: the one crate allowed unsafe code; each block has a SAFETY note

pub mod passing;

use std::fmt;
use std::io;

use nix::unistd::{Gid, Uid};

/// Why a credential change failed.
#[derive(Debug)]
pub enum PrivsepError {
    Threaded(usize),
    Call {
        call: &'static str,
        source: nix::Error,
    },
    NotDropped {
        detail: String,
    },
}

impl fmt::Display for PrivsepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivsepError::Threaded(n) => {
                write!(
                    f,
                    "refusing to change credentials in a process with {n} threads"
                )
            }
            PrivsepError::Call { call, source } => write!(f, "{call} failed: {source}"),
            PrivsepError::NotDropped { detail } => {
                write!(f, "privileges not fully dropped: {detail}")
            }
        }
    }
}

impl std::error::Error for PrivsepError {}

fn call(call: &'static str) -> impl FnOnce(nix::Error) -> PrivsepError {
    move |source| PrivsepError::Call { call, source }
}

/// The number of threads in this process, from /proc/self/stat (field 20, `num_threads`),
/// else from /proc/self/status (1 when neither says).
///
/// /proc/self/stat comes first because it is read with one read(2) into a fixed buffer
/// and the kernel formats far less for it; cursus-lda asks twice per delivery (before the
/// fork and before the credential change), and the status file took about 16 reads each
/// time.
pub fn thread_count() -> usize {
    threads_from_stat().unwrap_or_else(threads_from_status)
}

fn threads_from_stat() -> Option<usize> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open("/proc/self/stat")
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    parse_stat_threads(buf.get(..n)?)
}

/// `pid (comm) state ppid ...`: the command name may hold spaces and parentheses, so the
/// fields are counted after the last `)`; `num_threads` is the 18th of those (field 20).
fn parse_stat_threads(stat: &[u8]) -> Option<usize> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    rest.split_ascii_whitespace().nth(17)?.parse().ok()
}

fn threads_from_status() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Threads:")
                    .map(|v| v.trim().parse::<usize>())
            })
        })
        .and_then(Result::ok)
        .unwrap_or(1)
}

/// Becomes `uid`/`gid` for good: supplementary groups set to `gid` alone (as Postfix and
/// OpenSMTPD do for deliveries), then gid, then uid, real, effective and saved; then
/// verifies with getresuid/getresgid and proves there is no way back to root.
pub fn become_user(uid: u32, gid: u32) -> Result<(), PrivsepError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(PrivsepError::Threaded(threads));
    }
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setgroups(&[gid]).map_err(call("setgroups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(call("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(call("setresuid"))?;
    prove_dropped(uid.as_raw(), gid.as_raw())
}

/// Proves the process is `uid`/`gid` for good: real, effective and saved IDs, no other
/// group, and (unless `uid` is root) `setuid(0)` and `setgid(0)` fail and no capability is
/// permitted, effective or ambient. [`become_user`] calls it last; it is public so that a
/// test can show each way back being caught.
pub fn prove_dropped(uid: u32, gid: u32) -> Result<(), PrivsepError> {
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    let r = nix::unistd::getresuid().map_err(call("getresuid"))?;
    let g = nix::unistd::getresgid().map_err(call("getresgid"))?;
    if [r.real, r.effective, r.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err(PrivsepError::NotDropped {
            detail: format!(
                "uid {}/{}/{} gid {}/{}/{}",
                r.real, r.effective, r.saved, g.real, g.effective, g.saved
            ),
        });
    }
    let groups = nix::unistd::getgroups().map_err(call("getgroups"))?;
    if groups.iter().any(|g| *g != gid) {
        return Err(PrivsepError::NotDropped {
            detail: format!("groups {groups:?}"),
        });
    }
    if uid.is_root() {
        return Ok(());
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivsepError::NotDropped {
            detail: "setuid(0) succeeded".into(),
        });
    }
    if nix::unistd::setgid(Gid::from_raw(0)).is_ok() {
        return Err(PrivsepError::NotDropped {
            detail: "setgid(0) succeeded".into(),
        });
    }
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|e| PrivsepError::NotDropped {
            detail: format!("cannot read /proc/self/status to check capabilities: {e}"),
        })?;
    for set in ["CapPrm", "CapEff", "CapAmb"] {
        match capability_set(&status, set) {
            Some(0) => {}
            Some(bits) => {
                return Err(PrivsepError::NotDropped {
                    detail: format!("capabilities kept: {set} {bits:016x}"),
                });
            }
            // CapAmb appeared in Linux 4.3; an older kernel has no ambient set to keep.
            None if set == "CapAmb" => {}
            None => {
                return Err(PrivsepError::NotDropped {
                    detail: format!("/proc/self/status has no {set} line"),
                });
            }
        }
    }
    Ok(())
}

/// A capability set's bits from /proc/self/status (`CapEff:\t0000000000000000`).
fn capability_set(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(':')?;
        u64::from_str_radix(value.trim(), 16).ok()
    })
}

/// Which side of a fork this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The parent, with the child's process id.
    Parent(nix::unistd::Pid),
    Child,
}

/// Forks a single-threaded process. The child is an exact copy that may go on running Rust
/// code (allocate, open files, change credentials), which is only sound because no other
/// thread can hold a lock or be mid-allocation at the fork.
pub fn fork_process() -> Result<Forked, PrivsepError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(PrivsepError::Threaded(threads));
    }
    // SAFETY: the process has exactly one thread (checked above; none is started between
    // the check and the fork by this single-threaded caller), so the child inherits no lock
    // held by another thread and may run any code, not only async-signal-safe functions.
    match unsafe { nix::unistd::fork() }.map_err(call("fork"))? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Ends the calling (forked child) process at once with `code`, running no destructors and
/// no atexit handlers that belong to the parent's state (buffered output, temp files).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Starts `command` with `fds` as its descriptors 3, 4, ... (everything else close-on-exec
/// as usual): how cursusd hands cursus-lda the socket-pair ends it serves.
pub fn spawn_with_fds(
    command: &mut std::process::Command,
    fds: Vec<std::os::fd::OwnedFd>,
) -> io::Result<std::process::Child> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: the closure runs in the child between fork and exec and calls only dup, dup2
    // and fcntl, which are async-signal-safe; it allocates nothing (`raw` was built before).
    unsafe {
        command.pre_exec(move || {
            // First move every source above the target range so dup2 never clobbers one
            // that is still to be placed.
            let base = 3 + raw.len() as i32;
            let mut moved = [0i32; 64];
            for (i, fd) in raw.iter().enumerate().take(64) {
                let new = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, base + 64);
                if new < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[i] = new;
            }
            for (i, fd) in moved.iter().enumerate().take(raw.len().min(64)) {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn();
    drop(fds);
    child
}

/// Ignores SIGXFSZ so that exceeding a file-size limit makes write(2) fail with EFBIG,
/// which the writer turns into a rollback and a "mailbox full" outcome.
pub fn ignore_sigxfsz() -> io::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: installing SIG_IGN runs no handler code, so no async-signal-safety concern
    // arises; we are single-threaded at start-up.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Resets SIGPIPE to be ignored (Rust's runtime already does this; an MTA may have changed
/// the inherited mask) so a closed output pipe is an EPIPE error, never a silent death.
pub fn ignore_sigpipe() -> io::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: as for ignore_sigxfsz: SIG_IGN installs no handler code.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Ignores SIGHUP, so a service whose terminal or supervisor hangs up keeps running (it
/// notices configuration edits by itself).
pub fn ignore_signal_hangup() -> io::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: as for ignore_sigxfsz: SIG_IGN installs no handler code.
    unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Closes every descriptor from 3 upwards that the parent left open.
pub fn close_inherited_descriptors() -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; nothing in this process owns a descriptor
    // above 2 yet (called first thing in main, before any file is opened).
    let rc = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.9: walk /proc/self/fd instead.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: as above; EBADF for the directory fd already closed is harmless.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Sets the umask so every file and directory we create is private unless we say otherwise.
pub fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// The first thing a program an MTA starts does: closes the descriptors it inherited, sets
/// the private umask, and ignores SIGXFSZ and SIGPIPE (each above says why). Best effort:
/// a failure here leaves the process no worse than it was started.
pub fn clean_start() {
    let _ = close_inherited_descriptors();
    private_umask();
    let _ = ignore_sigxfsz();
    let _ = ignore_sigpipe();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_threads_field_is_found_after_the_last_parenthesis() {
        let line =
            b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 7 0 12345 1000 200";
        assert_eq!(parse_stat_threads(line), Some(7));
        assert_eq!(parse_stat_threads(b"4242 (x) S 1"), None);
        assert_eq!(parse_stat_threads(b"garbage"), None);
        assert!(threads_from_stat().is_some_and(|n| n >= 1));
    }

    #[test]
    fn capability_sets_are_read_from_proc_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t0000000000000000\n";
        assert_eq!(capability_set(status, "CapPrm"), Some(0x1ff_ffff_ffff));
        assert_eq!(capability_set(status, "CapEff"), Some(0));
        assert_eq!(capability_set(status, "CapAmb"), None);
        assert_eq!(capability_set("CapEff:\tzz\n", "CapEff"), None);
    }

    #[test]
    fn thread_count_sees_test_threads() {
        // The test harness runs tests on worker threads: more than one thread exists.
        let handle =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(thread_count() >= 2);
        assert!(matches!(
            become_user(65534, 65534),
            Err(PrivsepError::Threaded(_))
        ));
        handle.join().ok();
    }
}
