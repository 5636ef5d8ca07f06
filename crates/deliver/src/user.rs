//! Who we deliver for: the recipient's account, its home, and the credential change when
//! started as root.
//!
//! Trusts the system user database (getpwnam) and nothing in argv or the environment:
//! `-d`, USER, LOGNAME and HOME only name a candidate, which is checked against the database
//! and the uid we run as.
//!
//! Attacks stopped here:
//! - Delivery as root through a forged or misconfigured `-d root` (a root-owned mailbox
//!   written with attacker text): refused unless the system file sets `allow_root`.
//! - An installation set-user-ID or set-group-ID (a local user runs it with chosen
//!   arguments to write into another account or a group's files, or, through the front's
//!   hand-over to cursus-deliver-full, has a program of their own run with those
//!   privileges): refused when real and effective uid, or real and effective gid, differ.
//! - Writing into another user's home while running as a shared account (Postfix pipe
//!   `user=vmail` with `-d joe` and a home-based destination): refused, since the files
//!   would belong to the wrong uid.

use std::path::PathBuf;

use nix::unistd::{Uid, User};

/// The account a delivery is for.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The name that fills %u/%n/%d: `-d`, else USER/LOGNAME, else our own account name.
    pub name: String,
    /// The home directory, when known.
    pub home: Option<PathBuf>,
    /// The named user is a system account whose uid is ours.
    pub is_self: bool,
    /// `-d` named something not in the user database (a virtual user).
    pub unknown: bool,
}

/// Why the recipient could not be established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    Unknown(String),
    RootRefused,
    RootNeedsUser,
    SetUid,
    Lookup(String),
    Drop(String),
}

/// Looks up a user, mapping lookup failures (NSS down) apart from "no such user".
fn lookup(name: &str) -> Result<Option<User>, UserError> {
    User::from_name(name).map_err(|e| UserError::Lookup(format!("{name}: {e}")))
}

/// Refuses a set-user-ID or set-group-ID installation, whatever the owner.
pub fn check_not_setuid() -> Result<(), UserError> {
    if nix::unistd::getuid() != nix::unistd::geteuid()
        || nix::unistd::getgid() != nix::unistd::getegid()
    {
        return Err(UserError::SetUid);
    }
    Ok(())
}

/// Started as root: becomes the `-d` user for good, before any path or message is read.
/// Returns the recipient; HOME comes from the user database, never from the environment.
pub fn become_recipient(user: Option<&str>, allow_root: bool) -> Result<Recipient, UserError> {
    let name = user.ok_or(UserError::RootNeedsUser)?;
    let pw = lookup(name)?.ok_or_else(|| UserError::Unknown(name.to_string()))?;
    if pw.uid.is_root() && !allow_root {
        return Err(UserError::RootRefused);
    }
    cursus_privsep::become_user(pw.uid.as_raw(), pw.gid.as_raw())
        .map_err(|e| UserError::Drop(e.to_string()))?;
    Ok(Recipient {
        name: name.to_string(),
        home: Some(pw.dir),
        is_self: true,
        unknown: false,
    })
}

/// Not root: works out whom `-d`, USER or LOGNAME names and where their home is.
/// `env` reads one environment variable. The user database is asked for our own entry only
/// when the environment leaves the name or the home unknown (an MTA sets USER and HOME, so
/// a delivery usually costs no NSS lookup).
pub fn resolve_recipient(
    user: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    allow_root: bool,
) -> Result<Recipient, UserError> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() && !allow_root {
        return Err(UserError::RootRefused);
    }
    if let Some(name) = user {
        return Ok(match lookup(name)? {
            Some(pw) => Recipient {
                name: name.to_string(),
                is_self: pw.uid == euid,
                home: Some(pw.dir),
                unknown: false,
            },
            None => Recipient {
                name: name.to_string(),
                home: None,
                is_self: false,
                unknown: true,
            },
        });
    }
    let mut me: Option<Option<User>> = None;
    let mut own_entry = || {
        me.get_or_insert_with(|| User::from_uid(euid).ok().flatten())
            .clone()
    };
    let name = env("USER")
        .or_else(|| env("LOGNAME"))
        .filter(|n| !n.is_empty())
        .or_else(|| own_entry().map(|u| u.name))
        .unwrap_or_else(|| euid.to_string());
    let home = env("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| own_entry().map(|u| u.dir));
    Ok(Recipient {
        name,
        home,
        is_self: true,
        unknown: false,
    })
}

/// Our effective uid, for messages.
pub fn euid() -> Uid {
    nix::unistd::geteuid()
}
