//! Reading a small configuration file from a user's home or an administrator's directory
//! (a Sieve script, an included script) without being hung, flooded or fooled by it.
//!
//! Trusts: the path up to its last component, and symlinks all the way (the usual
//! `~/.dovecot.sieve -> sieve/active.sieve` layout must keep working): every check below
//! is made with `fstat` on the opened descriptor, so it applies to the file actually read,
//! wherever the name pointed. Trusts the kernel's `fstat`.
//! Fails: with a typed [`UserFileError`] naming the path and the failed check; a missing
//! file is `Ok(None)`, not an error. Nothing is written.
//!
//! Each check and the attack it stops:
//! * `O_NONBLOCK` on open: a FIFO planted at the path (or a symlink to one) would block the
//!   open for ever, a denial of service of the delivery; with O_NONBLOCK the open returns
//!   and the type check refuses it.
//! * `S_ISREG` after open: `~/.dovecot.sieve -> /dev/zero` (an endless read), a device or a
//!   socket; only regular files are read.
//! * The size limit, enforced by the read itself (at most `limit + 1` bytes are read): a
//!   huge file, or one growing while we read it, exhausting the memory of the delivery.
//! * Owner, for [`FileTrust::OwnedByUser`] and [`FileTrust::Administrator`]: a file
//!   another user placed or hard-linked where we look (a shared home, a world-writable
//!   directory on the path) would let them decide where this user's mail goes, e.g.
//!   redirect all of it to themselves.
//! * Not writable by group or others, for the same two levels: a file the owner made
//!   group-writable lets every member of the group rewrite the filter (and, for an
//!   administrator script, every user's filter).

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::FileKind;

/// Who may own (and write) a file for it to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileTrust {
    /// Any regular file this process can read. For a process that already runs as the
    /// user reading the user's own file: it can do nothing the user could not (cursus-deliver
    /// reads `~/.dovecot.sieve` this way, as Dovecot does).
    User,
    /// Owned by this process's effective user and not writable by group or others. For
    /// files whose decisions leave the process (the LDA answers the MTA with redirects).
    OwnedByUser,
    /// Owned by root or by this process's effective user, and not writable by group or
    /// others: administrator scripts that run for every user.
    Administrator,
}

/// Why a file was not read.
#[derive(Debug)]
pub enum UserFileError {
    /// A system call failed; `action` says which ("cannot open", ...).
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Not a regular file (a FIFO, a device, a directory, a socket).
    NotRegular { path: PathBuf, kind: FileKind },
    /// Owned by someone the trust level does not accept.
    WrongOwner {
        path: PathBuf,
        owner: u32,
        /// Who may own it, in words ("uid 1000", "root or uid 1000").
        expected: String,
    },
    /// Writable by group or others.
    Writable { path: PathBuf, mode: u32 },
    /// Larger than the limit.
    TooLarge { path: PathBuf, limit: usize },
}

impl UserFileError {
    /// The path this error is about.
    pub fn path(&self) -> &Path {
        match self {
            UserFileError::Io { path, .. }
            | UserFileError::NotRegular { path, .. }
            | UserFileError::WrongOwner { path, .. }
            | UserFileError::Writable { path, .. }
            | UserFileError::TooLarge { path, .. } => path,
        }
    }

    /// Whether the file was refused by a safety check (as opposed to a failed system call).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, UserFileError::Io { .. })
    }
}

impl fmt::Display for UserFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserFileError::Io {
                action,
                path,
                source,
            } => write!(f, "{action} {}: {source}", path.display()),
            UserFileError::NotRegular { path, kind } => {
                write!(f, "{} is {kind}, not a regular file", path.display())
            }
            UserFileError::WrongOwner {
                path,
                owner,
                expected,
            } => write!(
                f,
                "{} is owned by uid {owner}, not by {expected}; refusing to use it",
                path.display()
            ),
            UserFileError::Writable { path, mode } => write!(
                f,
                "{} is writable by group or others (mode {:o}); refusing to use it",
                path.display(),
                mode & 0o7777
            ),
            UserFileError::TooLarge { path, limit } => {
                write!(f, "{} is larger than {limit} bytes", path.display())
            }
        }
    }
}

impl std::error::Error for UserFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UserFileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads the file at `path` (following symlinks) if it passes the checks for `trust` and
/// holds at most `limit` bytes; `Ok(None)` when it does not exist.
pub fn read_user_file(
    path: &Path,
    trust: FileTrust,
    limit: usize,
) -> Result<Option<Vec<u8>>, UserFileError> {
    let io_error = |action, source| UserFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot open", e)),
    };
    let meta = file.metadata().map_err(|e| io_error("cannot stat", e))?;
    if !meta.is_file() {
        return Err(UserFileError::NotRegular {
            path: path.to_path_buf(),
            kind: FileKind::from_mode(meta.mode()),
        });
    }
    if trust != FileTrust::User {
        let euid = nix::unistd::geteuid().as_raw();
        let owner_ok = meta.uid() == euid || (trust == FileTrust::Administrator && meta.uid() == 0);
        if !owner_ok {
            return Err(UserFileError::WrongOwner {
                path: path.to_path_buf(),
                owner: meta.uid(),
                expected: match trust {
                    FileTrust::Administrator if euid != 0 => format!("root or uid {euid}"),
                    FileTrust::Administrator => "root".to_string(),
                    _ => format!("uid {euid}"),
                },
            });
        }
        if meta.mode() & 0o022 != 0 {
            return Err(UserFileError::Writable {
                path: path.to_path_buf(),
                mode: meta.mode(),
            });
        }
    }
    let mut bytes = Vec::new();
    (&file)
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("cannot read", e))?;
    if bytes.len() > limit {
        return Err(UserFileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const LIMIT: usize = 1 << 10;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn missing_is_none_and_a_plain_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        for trust in [
            FileTrust::User,
            FileTrust::OwnedByUser,
            FileTrust::Administrator,
        ] {
            assert!(matches!(read_user_file(&p, trust, LIMIT), Ok(None)));
        }
        std::fs::write(&p, "keep;").expect("write");
        chmod(&p, 0o644);
        for trust in [
            FileTrust::User,
            FileTrust::OwnedByUser,
            FileTrust::Administrator,
        ] {
            assert_eq!(
                read_user_file(&p, trust, LIMIT).expect("read"),
                Some(b"keep;".to_vec())
            );
        }
    }

    #[test]
    fn a_symlink_is_followed_and_its_target_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("target"), "keep;").expect("write");
        chmod(&dir.path().join("target"), 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("target", &link).expect("ln");
        assert!(matches!(
            read_user_file(&link, FileTrust::OwnedByUser, LIMIT),
            Ok(Some(_))
        ));
        chmod(&dir.path().join("target"), 0o620);
        let e = read_user_file(&link, FileTrust::OwnedByUser, LIMIT).expect_err("writable");
        assert!(matches!(e, UserFileError::Writable { .. }), "{e}");
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_hanging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).expect("ln");
        for (p, kind) in [
            (&fifo, FileKind::Fifo),
            (&link, FileKind::Fifo),
            (&dir.path().to_path_buf(), FileKind::Directory),
            (&PathBuf::from("/dev/zero"), FileKind::CharDevice),
        ] {
            match read_user_file(p, FileTrust::User, LIMIT) {
                Err(UserFileError::NotRegular { kind: k, .. }) => assert_eq!(k, kind),
                other => panic!("{}: {other:?}", p.display()),
            }
        }
    }

    #[test]
    fn group_or_world_writable_is_refused_unless_any_file_will_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        std::fs::write(&p, "keep;").expect("write");
        for mode in [0o660, 0o602, 0o666] {
            chmod(&p, mode);
            assert!(read_user_file(&p, FileTrust::User, LIMIT).is_ok());
            for trust in [FileTrust::OwnedByUser, FileTrust::Administrator] {
                let e = read_user_file(&p, trust, LIMIT).expect_err("refused");
                assert!(e.to_string().contains("writable by group or others"), "{e}");
                assert!(e.is_refusal());
            }
        }
    }

    #[test]
    fn a_foreign_owner_is_refused() {
        if !geteuid_is_root() {
            return; // Needs root to give a file away.
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        std::fs::write(&p, "keep;").expect("write");
        chmod(&p, 0o644);
        nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        assert!(read_user_file(&p, FileTrust::User, LIMIT).is_ok());
        for trust in [FileTrust::OwnedByUser, FileTrust::Administrator] {
            let e = read_user_file(&p, trust, LIMIT).expect_err("refused");
            assert!(
                matches!(e, UserFileError::WrongOwner { owner: 65534, .. }),
                "{e}"
            );
        }
    }

    fn geteuid_is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn the_size_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'#'; LIMIT]).expect("write");
        assert!(read_user_file(&p, FileTrust::User, LIMIT).is_ok());
        std::fs::write(&p, vec![b'#'; LIMIT + 1]).expect("write");
        assert!(matches!(
            read_user_file(&p, FileTrust::User, LIMIT),
            Err(UserFileError::TooLarge { .. })
        ));
    }
}
