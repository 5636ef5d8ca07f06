//! cursus-front: the front of cursus-deliver, which MTAs start once per message.
//!
//! It delivers the common case itself (an ordinary user's message into a Maildir, with no
//! configuration, Sieve script or quota: `plan.rs`) and hands everything else to
//! cursus-deliver-full, executed from the directory of its own executable
//! (`/proc/self/exe`), never through PATH or the environment, with argv, environment and
//! standard input untouched. It decides before it reads a byte of the message
//! (`plan::plan`, then `store::prepare`).
//!
//! Why it is its own crate, with no standard library: its start-up is part of every
//! delivery. The release build links it with no C library at all (the `bare` feature of
//! cursus-deliver, `scripts/build-release`): glibc's start-up asks the CPU for its features
//! and cache sizes with about sixty `cpuid` instructions, and where each one traps to the
//! hypervisor (about 5 µs on the test machine) that is 0.3 ms per process, more than the
//! fsyncs of a delivery. So this crate uses only `core` and `alloc`, makes its system calls
//! itself (`sys.rs`), and shares the mail logic with the full program through cursus-mail
//! (the splitter, header fields, addresses, Maildir names, outcomes and the errno table)
//! and through [`envelope`], which the full program uses too. Built normally, with std
//! supplying the entry point, it runs the same code; the tests run both builds.
//!
//! Trusts the same things as the full program: argv, environment and message are hostile.
//! Fails like it: every path ends in an [`Outcome`]; when cursus-deliver-full cannot be
//! executed, 4.3.5 (exit 75) naming the path where it was expected.
//!
//! Attacks stopped:
//! - A program of the user's own run with an installation's privileges: a set-user-ID or
//!   set-group-ID front, hard-linked into a directory next to a planted
//!   `cursus-deliver-full`, would execute it with those privileges. The installation check
//!   runs first and refuses before anything is executed.
//! - A planted `cursus-deliver-full` earlier in PATH, or a path in the environment: the
//!   program is found only beside our own executable.
//! - A mailbox trick (a symlinked `new/`, a Maildir that is not a directory): never handled
//!   here; `store::prepare` sends any such request to the full program's checks.

#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod envelope;
pub mod plan;
pub mod store;
pub mod sys;

use alloc::format;
use alloc::string::String;

use cursus_mail::{Outcome, OutcomeKind, codes};

pub use envelope::{Envelope, EnvelopeArgs};

/// The full program, installed in the same directory as `cursus-deliver`.
pub const FULL_PROGRAM: &str = "cursus-deliver-full";

/// The process as the entry point found it.
pub struct Process<'a> {
    /// argv, argv[0] included.
    pub argv: &'a [&'a [u8]],
    /// The environment, `NAME=value` each.
    pub env: &'a [&'a [u8]],
}

impl<'a> Process<'a> {
    /// The value of an environment variable (the first, as getenv(3)).
    pub fn getenv(&self, name: &str) -> Option<&'a [u8]> {
        self.env.iter().find_map(|entry| {
            entry
                .strip_prefix(name.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
        })
    }
}

/// One run of the front. `hand_over` executes cursus-deliver-full at the path it is given
/// with this process's argv and environment, and returns only when that failed. Returns the
/// exit status.
pub fn run(process: &Process<'_>, hand_over: &dyn Fn(&sys::CPath) -> sys::Errno) -> i32 {
    sys::clean_start();
    let (uid, euid, gid, egid) = sys::ids();
    if uid != euid || gid != egid {
        return unread(&envelope::setuid_refusal());
    }
    let getenv = |name: &str| process.getenv(name);
    let exists = |path: &str, follow: bool| match sys::CPath::new(path.as_bytes()) {
        Some(p) => match sys::stat_mode(sys::Dir::Cwd, &p, !follow) {
            Ok(_) => true,
            Err(sys::Errno(libc::ENOENT)) => false,
            // Path::exists (a script) says no on any error; a configuration file that
            // cannot be looked at is the full program's to report.
            Err(_) => !follow,
        },
        None => true,
    };
    let plan = plan::parse_args(process.argv.get(1..).unwrap_or_default())
        .and_then(|args| plan::plan(args, euid == 0, &getenv, &exists));
    let ready = plan.as_ref().and_then(|p| store::prepare(&p.maildir));
    let (Some(plan), Some(ready)) = (plan, ready) else {
        return unread(&execute_full_program(hand_over));
    };
    let lossy = |name: &str| {
        process
            .getenv(name)
            .map(|v| String::from_utf8_lossy(v).into())
    };
    let outcome = store::deliver(&plan, &ready, &lossy, sys::STDIN);
    report(&outcome, plan.verbose);
    outcome.exit_code()
}

/// Executes the full program beside our own executable; returns the outcome of the
/// failure (4.3.5, exit 75) when it could not be executed.
fn execute_full_program(hand_over: &dyn Fn(&sys::CPath) -> sys::Errno) -> Outcome {
    let exe = match sys::CPath::new(b"/proc/self/exe").map(|p| sys::readlink(&p)) {
        Some(Ok(exe)) => exe,
        Some(Err(e)) => return hand_over_failure("/proc/self/exe", &sys::describe(e)),
        None => return hand_over_failure("/proc/self/exe", "unreadable"),
    };
    let dir = match exe.iter().rposition(|&b| b == b'/') {
        Some(0) | None => &b"/"[..],
        Some(i) => &exe[..i],
    };
    let dir = String::from_utf8_lossy(dir);
    let path = plan::join(&dir, FULL_PROGRAM);
    match sys::CPath::new(path.as_bytes()) {
        Some(c) => hand_over_failure(&path, &sys::describe(hand_over(&c))),
        None => hand_over_failure(&path, "the path contains a NUL byte"),
    }
}

/// The outcome when the full program cannot be executed: a broken installation, so the
/// MTA keeps the message and retries (4.3.5, exit 75).
pub fn hand_over_failure(path: &str, why: &str) -> Outcome {
    Outcome::temporary(
        codes::CONFIG_ERROR,
        format!("cannot run {path}: {why}; install {FULL_PROGRAM} beside cursus-deliver"),
    )
}

/// Ends without a delivery: the message is read to EOF (the MTA expects it consumed), the
/// line printed.
fn unread(outcome: &Outcome) -> i32 {
    store::drain(sys::STDIN);
    report(outcome, false);
    outcome.exit_code()
}

/// Prints the outcome as the MTA reads it, with one write(2) so that concurrent output
/// never splits the line: a failure on standard error; a delivery on standard output only
/// when `verbose` (-v).
pub fn report(outcome: &Outcome, verbose: bool) {
    let line = format!("{outcome}\n");
    if outcome.kind != OutcomeKind::Delivered {
        let _ = sys::write_all(sys::STDERR, line.as_bytes());
    } else if verbose {
        let _ = sys::write_all(sys::STDOUT, line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_full_program_is_a_temporary_failure_naming_the_path() {
        let o = hand_over_failure(
            "/usr/lib/cursus/cursus-deliver-full",
            "No such file or directory",
        );
        assert_eq!(o.exit_code(), 75);
        assert_eq!(
            std::string::ToString::to_string(&o),
            "4.3.5 cannot run /usr/lib/cursus/cursus-deliver-full: No such file or directory; \
             install cursus-deliver-full beside cursus-deliver"
        );
    }

    #[test]
    fn the_environment_is_read_as_getenv_reads_it() {
        let env: [&[u8]; 4] = [b"USERX=no", b"USER=joe", b"USER=second", b"EMPTY="];
        let p = Process {
            argv: &[],
            env: &env,
        };
        assert_eq!(p.getenv("USER"), Some(&b"joe"[..]));
        assert_eq!(p.getenv("EMPTY"), Some(&b""[..]));
        assert_eq!(p.getenv("US"), None);
        assert_eq!(p.getenv("HOME"), None);
    }
}
