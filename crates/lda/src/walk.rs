//! Reaching a destination's directory without following a symlink the user could plant:
//! the anchor (the user's home, or the fixed directory of a system rule) is opened as the
//! administrator configured it, and every component below it is opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` (or, on kernels
//! before 5.6, one `O_NOFOLLOW|O_DIRECTORY` open per component). The mailbox writer then
//! works inside the directory descriptor through `/proc/self/fd/N/NAME`, which names that
//! exact directory whatever happens to the path afterwards; it refuses a symlink as the last
//! component itself.
//!
//! Runs in the delivery child, after it has become the user, so every open is checked by
//! the kernel against the user's own permissions too. Trusts the anchor path (it comes from
//! the user database or the root-owned policy), nothing below it. Fails with a
//! [`WalkError`] that says which component was refused.
//!
//! Attacks stopped:
//! - `~/Maildir -> /etc` or `~/mail -> /home/other`: a symlinked directory anywhere between
//!   the anchor and the mailbox (ELOOP under RESOLVE_NO_SYMLINKS; the fallback opens each
//!   component with O_NOFOLLOW).
//! - A directory swapped for a symlink after the policy check: the walk happens at open
//!   time on descriptors, so there is no path left to swap once a component is open.
//! - `/proc/self/root`-style magic links and `..` escaping the anchor: RESOLVE_BENEATH and
//!   RESOLVE_NO_MAGICLINKS (and the policy's lexical check before: paths have no `..`).

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::Mode;

use crate::destination::MailPath;

/// Why a destination's directory could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError {
    /// The target is not strictly below the anchor (a bug in the caller, refused anyway).
    NotBelow { anchor: String, target: String },
    /// A component is a symlink (or a magic link) the walk will not follow.
    Symlink { path: String },
    /// A component is missing.
    Missing { path: String },
    /// A component is not a directory.
    NotDirectory { path: String },
    /// Any other error opening a component.
    Open { path: String, errno: Errno },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::NotBelow { anchor, target } => {
                write!(f, "{target} is not below {anchor}")
            }
            WalkError::Symlink { path } => {
                write!(f, "{path} is or passes through a symbolic link")
            }
            WalkError::Missing { path } => write!(f, "{path} does not exist"),
            WalkError::NotDirectory { path } => write!(f, "{path} is not a directory"),
            WalkError::Open { path, errno } => write!(f, "cannot open {path}: {}", errno.desc()),
        }
    }
}

impl std::error::Error for WalkError {}

impl WalkError {
    /// Whether retrying later could help (a missing directory may be created by the user;
    /// a symlink is a policy violation the administrator or the user must fix either way,
    /// so it is temporary too, as Postfix treats unsafe mailboxes: mail waits, it is not
    /// bounced because of a local mistake).
    pub fn is_temporary(&self) -> bool {
        !matches!(self, WalkError::NotBelow { .. })
    }
}

/// The directory that holds a mailbox, held open, and the mailbox's name inside it.
#[derive(Debug)]
pub struct Reached {
    pub directory: OwnedFd,
    /// The directory's path as text, for messages.
    pub directory_path: String,
    /// The last component of the target.
    pub name: String,
}

impl Reached {
    /// A path naming the mailbox through the held directory descriptor.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/self/fd/{}/{}",
            self.directory.as_raw_fd(),
            self.name
        ))
    }

    /// The prefix [`fd_path`](Self::fd_path) uses, to put the real path back in messages.
    pub fn fd_prefix(&self) -> String {
        format!("/proc/self/fd/{}", self.directory.as_raw_fd())
    }
}

/// Opens `target`'s parent directory, starting at `anchor` and following no symlink below
/// it. `target` must lie strictly below `anchor`. With `create`, missing directories between
/// the anchor and the target are made (mode 0700, as the user), each opened without
/// following symlinks right after it is made.
pub fn reach(anchor: &MailPath, target: &MailPath, create: bool) -> Result<Reached, WalkError> {
    if !target.is_strictly_below(anchor) {
        return Err(WalkError::NotBelow {
            anchor: anchor.to_string(),
            target: target.to_string(),
        });
    }
    let skip = anchor.components().count();
    let below: Vec<&str> = target.components().skip(skip).collect();
    let Some((name, middle)) = below.split_last() else {
        return Err(WalkError::NotBelow {
            anchor: anchor.to_string(),
            target: target.to_string(),
        });
    };
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let anchor_fd = open(anchor.as_str(), dir_flags, Mode::empty())
        .map_err(|errno| open_error(anchor.as_str(), errno))?;
    let mut directory_path = anchor.to_string();
    for c in middle {
        directory_path.push('/');
        directory_path.push_str(c);
    }
    let directory = if middle.is_empty() {
        anchor_fd
    } else {
        let relative = middle.join("/");
        let how = OpenHow::new().flags(dir_flags).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        match openat2(anchor_fd.as_fd(), relative.as_str(), how) {
            Ok(fd) => fd,
            Err(Errno::ENOSYS) => walk_nofollow(anchor_fd, anchor, middle, create)?,
            Err(Errno::ENOENT) if create => walk_nofollow(anchor_fd, anchor, middle, create)?,
            Err(errno) => return Err(open_error(&directory_path, errno)),
        }
    };
    Ok(Reached {
        directory,
        directory_path,
        name: (*name).to_string(),
    })
}

/// One O_NOFOLLOW open per component: the fallback for kernels without openat2, and the
/// walk that creates missing directories.
fn walk_nofollow(
    start: OwnedFd,
    anchor: &MailPath,
    middle: &[&str],
    create: bool,
) -> Result<OwnedFd, WalkError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut current = start;
    let mut path = anchor.to_string();
    for c in middle {
        path.push('/');
        path.push_str(c);
        if create {
            match nix::sys::stat::mkdirat(current.as_fd(), *c, Mode::from_bits_truncate(0o700)) {
                // EEXIST: it is there (or something is: the open below checks what).
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => return Err(open_error(&path, errno)),
            }
        }
        current = match openat(current.as_fd(), *c, flags, Mode::empty()) {
            Ok(fd) => fd,
            // O_NOFOLLOW|O_DIRECTORY on a symlink fails with ENOTDIR on Linux, not ELOOP:
            // look at what the name is before calling it "not a directory".
            Err(Errno::ENOTDIR) if is_symlink(&current, c) => {
                return Err(WalkError::Symlink { path });
            }
            Err(errno) => return Err(open_error(&path, errno)),
        };
    }
    Ok(current)
}

fn is_symlink(dir: &OwnedFd, name: &str) -> bool {
    nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map(|st| st.st_mode & 0o170000 == 0o120000)
        .unwrap_or(false)
}

fn open_error(path: &str, errno: Errno) -> WalkError {
    let path = path.to_string();
    match errno {
        // ELOOP: a symlink under RESOLVE_NO_SYMLINKS or O_NOFOLLOW; EXDEV: a magic link or
        // an escape under RESOLVE_BENEATH.
        Errno::ELOOP | Errno::EXDEV => WalkError::Symlink { path },
        Errno::ENOENT => WalkError::Missing { path },
        Errno::ENOTDIR => WalkError::NotDirectory { path },
        errno => WalkError::Open { path, errno },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(s: &str) -> MailPath {
        MailPath::parse(s).expect("path")
    }

    #[test]
    fn reaches_a_nested_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().to_str().expect("utf8");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        let r = reach(&mp(base), &mp(&format!("{base}/a/b/Maildir")), false).expect("reach");
        assert_eq!(r.name, "Maildir");
        assert_eq!(r.directory_path, format!("{base}/a/b"));
        std::fs::create_dir(r.fd_path()).expect("mkdir through fd path");
        assert!(dir.path().join("a/b/Maildir").is_dir());
    }

    #[test]
    fn the_anchor_itself_holds_the_mailbox() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().to_str().expect("utf8");
        let r = reach(&mp(base), &mp(&format!("{base}/mbox")), false).expect("reach");
        assert_eq!(r.directory_path, base);
    }

    #[test]
    fn a_symlinked_directory_below_the_anchor_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("mail")).expect("ln");
        let base = dir.path().to_str().expect("utf8");
        let err = reach(&mp(base), &mp(&format!("{base}/mail/inbox")), true).expect_err("symlink");
        assert!(matches!(err, WalkError::Symlink { .. }), "{err:?}");
        let err = walk_nofollow(
            open(base, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).expect("open"),
            &mp(base),
            &["mail"],
            false,
        )
        .expect_err("symlink");
        assert!(matches!(err, WalkError::Symlink { .. }), "{err:?}");
    }

    #[test]
    fn targets_not_below_the_anchor_are_refused() {
        assert!(matches!(
            reach(&mp("/home/joe"), &mp("/home/joe"), false),
            Err(WalkError::NotBelow { .. })
        ));
        assert!(matches!(
            reach(&mp("/home/joe"), &mp("/home/joe2/Maildir"), false),
            Err(WalkError::NotBelow { .. })
        ));
    }

    #[test]
    fn missing_directories_are_made_when_asked() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().to_str().expect("utf8");
        let r = reach(&mp(base), &mp(&format!("{base}/a/b/Maildir")), true).expect("reach");
        assert_eq!(r.directory_path, format!("{base}/a/b"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("a/b"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "made private: {mode:o}");
    }

    #[test]
    fn missing_and_non_directory_components_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().to_str().expect("utf8");
        std::fs::write(dir.path().join("file"), b"x").expect("write");
        assert!(matches!(
            reach(&mp(base), &mp(&format!("{base}/nope/x")), false),
            Err(WalkError::Missing { .. })
        ));
        assert!(matches!(
            reach(&mp(base), &mp(&format!("{base}/file/x")), true),
            Err(WalkError::NotDirectory { .. })
        ));
    }
}
