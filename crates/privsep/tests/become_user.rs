//! The credential drop, proved in forked children of this single-threaded test program (no
//! libtest harness: `fork_process` and `become_user` refuse a threaded process). As root,
//! `become_user` must leave every uid and gid field, the groups and the capability sets the
//! user's, and `prove_dropped` must catch each way back to root a careless drop leaves: a
//! saved uid 0, a saved gid 0, a supplementary group 0, capabilities kept with
//! PR_SET_KEEPCAPS. Not root: prints SKIPPED and passes, unless CI is set (then it fails,
//! since CI runs as root and a skip there would hide a broken check).

use std::process::ExitCode;

use cursus_privsep::{Forked, PrivsepError, become_user, exit_child, fork_process, prove_dropped};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Gid, Uid};

/// nobody/nogroup on Debian and most Linux systems; any unprivileged ids would do.
const UID: u32 = 65534;
const GID: u32 = 65534;

/// Runs `check` in a forked child; its `Err` text is printed there, its result is the
/// child's exit status.
fn in_child(name: &str, check: impl FnOnce() -> Result<(), String>) -> bool {
    match fork_process().expect("fork") {
        Forked::Child => {
            let code = match check() {
                Ok(()) => 0,
                Err(why) => {
                    eprintln!("FAILED {name}: {why}");
                    1
                }
            };
            exit_child(code)
        }
        Forked::Parent(pid) => {
            let ok = matches!(waitpid(pid, None), Ok(WaitStatus::Exited(_, 0)));
            eprintln!("{} {name}", if ok { "ok" } else { "FAILED" });
            ok
        }
    }
}

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn the_drop_leaves_only_the_user() -> Result<(), String> {
    become_user(UID, GID).map_err(|e| e.to_string())?;
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let want = [
        ("Uid", format!("{UID} {UID} {UID} {UID}")),
        ("Gid", format!("{GID} {GID} {GID} {GID}")),
        ("Groups", GID.to_string()),
        ("CapPrm", "0000000000000000".to_string()),
        ("CapEff", "0000000000000000".to_string()),
        ("CapAmb", "0000000000000000".to_string()),
    ];
    for (name, value) in want {
        let got = field(&status, name);
        if got != value {
            return Err(format!("{name}: {got:?}, want {value:?}"));
        }
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok()
        || nix::unistd::seteuid(Uid::from_raw(0)).is_ok()
    {
        return Err("root regained".into());
    }
    Ok(())
}

/// Drops by hand with one mistake, then expects `prove_dropped` to refuse, naming it.
fn caught(mistake: impl FnOnce() -> nix::Result<()>, named: &str) -> Result<(), String> {
    mistake().map_err(|e| format!("setting up the mistake: {e}"))?;
    match prove_dropped(UID, GID) {
        Err(PrivsepError::NotDropped { detail }) if detail.contains(named) => Ok(()),
        other => Err(format!("not caught (wanted {named:?}): {other:?}")),
    }
}

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (the credential drop cannot be tested as a user)");
        return if std::env::var_os("CI").is_some() {
            eprintln!("CI is set: a skipped privilege test is a failure there");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let (u, g) = (Uid::from_raw(UID), Gid::from_raw(GID));
    let results = [
        in_child(
            "become_user leaves only the user",
            the_drop_leaves_only_the_user,
        ),
        in_child("a saved uid 0 is caught", || {
            caught(
                || {
                    nix::unistd::setgroups(&[g])?;
                    nix::unistd::setresgid(g, g, g)?;
                    nix::unistd::setresuid(u, u, Uid::from_raw(0))
                },
                "uid",
            )
        }),
        in_child("a saved gid 0 is caught", || {
            caught(
                || {
                    nix::unistd::setgroups(&[g])?;
                    nix::unistd::setresgid(g, g, Gid::from_raw(0))?;
                    nix::unistd::setresuid(u, u, u)
                },
                "gid",
            )
        }),
        in_child("a supplementary group 0 is caught", || {
            caught(
                || {
                    nix::unistd::setgroups(&[g, Gid::from_raw(0)])?;
                    nix::unistd::setresgid(g, g, g)?;
                    nix::unistd::setresuid(u, u, u)
                },
                "groups",
            )
        }),
        in_child("capabilities kept across setuid are caught", || {
            caught(
                || {
                    nix::sys::prctl::set_keepcaps(true)?;
                    nix::unistd::setgroups(&[g])?;
                    nix::unistd::setresgid(g, g, g)?;
                    nix::unistd::setresuid(u, u, u)
                },
                "CapPrm",
            )
        }),
    ];
    if results.iter().all(|ok| *ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
