//! Opening mailbox files and directories without being tricked: Postfix `safe_open()`
//! semantics on top of directory file descriptors.
//!
//! Trusts: the directory path the caller hands in (the destination policy of the LDA, or the
//! user's own configuration for the MDA) up to its last component; symlinks *above* the
//! mailbox (`/home -> /usr/home`) are followed, the mailbox itself and every directory we open
//! below it never are. Trusts the kernel's `fstat` of an open descriptor.
//! Fails: with [`MailboxError::Unsafe`] naming the check that failed, or
//! [`MailboxError::Io`] for system call errors; nothing is created or changed when a check fails.
//!
//! Each check and the attack it stops:
//! * `O_NOFOLLOW` on every open, and on directories `O_DIRECTORY|O_NOFOLLOW`: a mailbox
//!   replaced by a symlink to `/etc/passwd` or to another user's mailbox, and the hardlinked
//!   symlink of CVE-2008-2936 (a hard link to a root-owned symlink is still a symlink); for
//!   maildirs, a `new/` or folder pointed at another user's directory.
//! * `O_NONBLOCK` on open: a FIFO planted at the mailbox path would block the open (or the
//!   write) for ever, a denial of service; with O_NONBLOCK the open returns and the type check
//!   below refuses it.
//! * `S_ISREG` after open: FIFOs, sockets and devices (`/dev/null`, a tape) are not mailboxes.
//! * `st_nlink == 1`: a hard link from the mailbox path to another user's file, so that
//!   delivery appends to it (Exim CVE-2010-2023, world-writable sticky spool directories).
//! * owner == effective uid: a mailbox pre-created by someone else (another user in a shared
//!   spool directory) would receive the recipient's mail (Postfix
//!   `strict_mailbox_ownership`, 2008-07-25); refused as temporary, an administrator may fix it.
//! * `lstat` of the name compared with `fstat` of the descriptor (device, inode, mode, link
//!   count): the name was swapped between our checks and the open, or an inode was recycled
//!   while the open was delayed (Olaf Kirch, 2000).
//! * again after locking ([`recheck`]): the mailbox was replaced or unlinked while we waited
//!   for the lock (a POP daemon rewriting it), so we would write into an orphan.
//! * New files only with `O_CREAT|O_EXCL` (which never follows a symlink, even a dangling one)
//!   and mode 0600.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, OFlag, fcntl, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat, mkdirat};
use nix::unistd::geteuid;

use crate::error::{FileKind, MailboxError, UnsafeReason};

/// Mode for directories we create (maildir, folders, MH folders).
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode for files we create (messages, mailboxes, lock files).
pub(crate) const FILE_MODE: u32 = 0o600;

/// How a mailbox file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read only (maildirsize, .mh_sequences).
    Read,
    /// Read and append (mbox; read access to look at the last bytes).
    Append,
    /// Write only, appending (maildirsize usage lines).
    AppendOnly,
}

impl Access {
    fn flags(self) -> OFlag {
        match self {
            Access::Read => OFlag::O_RDONLY,
            Access::Append => OFlag::O_RDWR | OFlag::O_APPEND,
            Access::AppendOnly => OFlag::O_WRONLY | OFlag::O_APPEND,
        }
    }
}

/// A file opened by the safe-open rules, with the status it was checked against.
#[derive(Debug)]
pub(crate) struct SafeFile {
    pub file: File,
    pub stat: FileStat,
}

/// Opens the directory `path`, refusing a symlink or non-directory as its last component.
/// With `create`, missing directories (and missing parents) are made with mode 0700.
pub(crate) fn open_dir(path: &Path, create: bool) -> Result<OwnedFd, MailboxError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match nix::fcntl::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) if create => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(path)
                .map_err(|e| MailboxError::io("cannot create directory", path, e))?;
            nix::fcntl::open(path, flags, Mode::empty())
                .map_err(|e| dir_open_error(nix::fcntl::AT_FDCWD, path.as_os_str(), path, e))
        }
        Err(e) => Err(dir_open_error(
            nix::fcntl::AT_FDCWD,
            path.as_os_str(),
            path,
            e,
        )),
    }
}

/// Opens the directory `name` inside `dir` (`path` is its full path, for messages),
/// refusing a symlink or non-directory. With `create`, a missing one is made with mode 0700.
/// Returns `Ok(None)` when it is missing and `create` is false.
pub(crate) fn open_dir_at(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    create: bool,
) -> Result<Option<OwnedFd>, MailboxError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => return Ok(Some(fd)),
        Err(Errno::ENOENT) if create => {}
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(dir_open_error(dir, name, path, e)),
    }
    match mkdirat(dir, name, Mode::from_bits_truncate(DIR_MODE)) {
        // EEXIST: a concurrent delivery made it first; the open below checks what it is.
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(MailboxError::nix("cannot create directory", path, e)),
    }
    openat(dir, name, flags, Mode::empty())
        .map(Some)
        .map_err(|e| dir_open_error(dir, name, path, e))
}

/// Turns a failed directory open into a precise error: a symlink or a non-directory is an
/// unsafe path, anything else an I/O error.
fn dir_open_error<P: ?Sized + nix::NixPath>(
    dir: BorrowedFd<'_>,
    name: &P,
    path: &Path,
    errno: Errno,
) -> MailboxError {
    if matches!(errno, Errno::ELOOP | Errno::ENOTDIR)
        && let Ok(st) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
    {
        return match FileKind::from_mode(st.st_mode) {
            FileKind::Symlink => MailboxError::unsafe_path(UnsafeReason::Symlink, path),
            FileKind::Directory => MailboxError::nix("cannot open directory", path, errno),
            other => MailboxError::unsafe_path(UnsafeReason::NotDirectory(other), path),
        };
    }
    MailboxError::nix("cannot open directory", path, errno)
}

/// Opens the existing file `name` in `dir` and checks it. `Ok(None)` when it does not exist.
pub(crate) fn open_existing_at(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    access: Access,
) -> Result<Option<SafeFile>, MailboxError> {
    let flags = access.flags() | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(MailboxError::unsafe_path(UnsafeReason::Symlink, path)),
        Err(Errno::EISDIR) => {
            return Err(MailboxError::unsafe_path(
                UnsafeReason::NotRegular(FileKind::Directory),
                path,
            ));
        }
        // A FIFO opened write-only without a reader.
        Err(Errno::ENXIO) => {
            return Err(MailboxError::unsafe_path(
                UnsafeReason::NotRegular(FileKind::Fifo),
                path,
            ));
        }
        Err(e) => return Err(MailboxError::nix("cannot open", path, e)),
    };
    let stat = check_open(dir, name, path, &fd)?;
    clear_nonblock(&fd, path)?;
    Ok(Some(SafeFile {
        file: File::from(fd),
        stat,
    }))
}

/// Creates the new file `name` in `dir` with O_CREAT|O_EXCL and mode 0600 and checks it.
/// `Ok(None)` when the name already exists.
pub(crate) fn create_at(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    access: Access,
) -> Result<Option<SafeFile>, MailboxError> {
    let flags = access.flags()
        | OFlag::O_CREAT
        | OFlag::O_EXCL
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC;
    let fd = match openat(dir, name, flags, Mode::from_bits_truncate(FILE_MODE)) {
        Ok(fd) => fd,
        Err(Errno::EEXIST) => return Ok(None),
        Err(e) => return Err(MailboxError::nix("cannot create", path, e)),
    };
    let stat = check_open(dir, name, path, &fd)?;
    clear_nonblock(&fd, path)?;
    Ok(Some(SafeFile {
        file: File::from(fd),
        stat,
    }))
}

/// Postfix's "O_CREAT without O_EXCL": open the existing file; if there is none and `create`
/// is set, create it exclusively; if someone else created it in between, open theirs (and
/// check it like any other existing file). `Ok(None)` when missing and `create` is false.
pub(crate) fn open_or_create_at(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    access: Access,
    create: bool,
) -> Result<Option<SafeFile>, MailboxError> {
    for _ in 0..5 {
        if let Some(file) = open_existing_at(dir, name, path, access)? {
            return Ok(Some(file));
        }
        if !create {
            return Ok(None);
        }
        if let Some(file) = create_at(dir, name, path, access)? {
            return Ok(Some(file));
        }
    }
    Err(MailboxError::unsafe_path(UnsafeReason::Changed, path))
}

/// The checks on a freshly opened descriptor; see the file header for the attack each stops.
fn check_open(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    fd: &OwnedFd,
) -> Result<FileStat, MailboxError> {
    let st = fstat(fd).map_err(|e| MailboxError::nix("cannot fstat", path, e))?;
    check_status(&st, path)?;
    // lstat/fstat comparison: the name must still be this very file.
    let lst = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(lst) => lst,
        Err(Errno::ENOENT) => return Err(MailboxError::unsafe_path(UnsafeReason::Changed, path)),
        Err(e) => return Err(MailboxError::nix("cannot lstat", path, e)),
    };
    if FileKind::from_mode(lst.st_mode) == FileKind::Symlink {
        return Err(MailboxError::unsafe_path(UnsafeReason::Symlink, path));
    }
    if !same_file(&st, &lst) {
        return Err(MailboxError::unsafe_path(UnsafeReason::Changed, path));
    }
    Ok(st)
}

/// Type, link count and owner of an open mailbox file.
fn check_status(st: &FileStat, path: &Path) -> Result<(), MailboxError> {
    let kind = FileKind::from_mode(st.st_mode);
    if kind != FileKind::Regular {
        // FIFO denial of service, devices, sockets, directories.
        return Err(MailboxError::unsafe_path(
            UnsafeReason::NotRegular(kind),
            path,
        ));
    }
    if st.st_nlink != 1 {
        // Hard link to another user's file (CVE-2010-2023).
        #[allow(
            clippy::unnecessary_cast,
            reason = "nlink_t is not u64 on every target"
        )]
        let links = st.st_nlink as u64;
        return Err(MailboxError::unsafe_path(
            UnsafeReason::HardLinks(links),
            path,
        ));
    }
    let euid = geteuid().as_raw();
    if st.st_uid != euid {
        // A mailbox owned by someone else (strict_mailbox_ownership).
        return Err(MailboxError::unsafe_path(
            UnsafeReason::WrongOwner {
                owner: st.st_uid,
                expected: euid,
            },
            path,
        ));
    }
    Ok(())
}

/// After taking the locks: the descriptor still has one link and the name still points at it
/// (the mailbox was not replaced or deleted while we waited).
pub(crate) fn recheck(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    file: &SafeFile,
) -> Result<FileStat, MailboxError> {
    let st = fstat(file.file.as_fd()).map_err(|e| MailboxError::nix("cannot fstat", path, e))?;
    if st.st_dev != file.stat.st_dev || st.st_ino != file.stat.st_ino {
        return Err(MailboxError::unsafe_path(UnsafeReason::Changed, path));
    }
    if st.st_nlink != 1 {
        // nlink 0: unlinked while we waited; 2+: hard-linked while we waited.
        return Err(MailboxError::unsafe_path(UnsafeReason::Changed, path));
    }
    check_status(&st, path)?;
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(lst) if same_file(&st, &lst) => Ok(st),
        Ok(_) | Err(Errno::ENOENT) => Err(MailboxError::unsafe_path(UnsafeReason::Changed, path)),
        Err(e) => Err(MailboxError::nix("cannot lstat", path, e)),
    }
}

fn same_file(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev
        && a.st_ino == b.st_ino
        && a.st_mode == b.st_mode
        && a.st_nlink == b.st_nlink
}

/// O_NONBLOCK was only for the open (a FIFO cannot hang it); writes to a regular file ignore it,
/// but it is cleared so nothing downstream sees a short write as EAGAIN.
fn clear_nonblock(fd: &OwnedFd, path: &Path) -> Result<(), MailboxError> {
    let flags =
        fcntl(fd, FcntlArg::F_GETFL).map_err(|e| MailboxError::nix("cannot fcntl", path, e))?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| MailboxError::nix("cannot fcntl", path, e))?;
    Ok(())
}

/// Splits a mailbox path into its directory (opened, symlinks above it followed) and its last
/// component.
pub(crate) fn open_parent(path: &Path) -> Result<(OwnedFd, String), MailboxError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| {
            MailboxError::io(
                "invalid mailbox path",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "no UTF-8 file name"),
            )
        })?;
    let parent: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(&parent, flags, Mode::empty())
        .map_err(|e| MailboxError::nix("cannot open directory", &parent, e))?;
    Ok((fd, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir_fd(path: &Path) -> OwnedFd {
        open_dir(path, false).expect("open dir")
    }

    #[test]
    fn existing_regular_file_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("m"), b"x").expect("write");
        let fd = dir_fd(dir.path());
        let f = open_existing_at(fd.as_fd(), "m", &dir.path().join("m"), Access::Append)
            .expect("open")
            .expect("exists");
        assert_eq!(f.stat.st_size, 1);
        assert!(
            open_existing_at(fd.as_fd(), "nope", dir.path(), Access::Read)
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn symlink_hardlink_fifo_and_directory_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, b"secret").expect("write");
        symlink(&target, dir.path().join("sym")).expect("symlink");
        std::fs::hard_link(&target, dir.path().join("hard")).expect("link");
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        std::fs::create_dir(dir.path().join("dir")).expect("mkdir");
        let fd = dir_fd(dir.path());
        let cases: &[(&str, UnsafeReason)] = &[
            ("sym", UnsafeReason::Symlink),
            ("hard", UnsafeReason::HardLinks(2)),
            ("fifo", UnsafeReason::NotRegular(FileKind::Fifo)),
            ("dir", UnsafeReason::NotRegular(FileKind::Directory)),
        ];
        for (name, want) in cases {
            for access in [Access::Read, Access::Append, Access::AppendOnly] {
                match open_existing_at(fd.as_fd(), name, &dir.path().join(name), access) {
                    Err(MailboxError::Unsafe { reason, .. }) => {
                        assert_eq!(reason, *want, "{name} {access:?}")
                    }
                    other => panic!("{name} {access:?}: {other:?}"),
                }
            }
        }
        assert_eq!(std::fs::read(&target).expect("read"), b"secret");
    }

    #[test]
    fn create_is_exclusive_and_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let fd = dir_fd(dir.path());
        let path = dir.path().join("new");
        let f = create_at(fd.as_fd(), "new", &path, Access::Append)
            .expect("create")
            .expect("new");
        assert_eq!(
            f.file.metadata().expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert!(
            create_at(fd.as_fd(), "new", &path, Access::Append)
                .expect("ok")
                .is_none()
        );
        // A dangling symlink is not followed by O_CREAT|O_EXCL.
        symlink(dir.path().join("elsewhere"), dir.path().join("dangling")).expect("symlink");
        assert!(
            create_at(fd.as_fd(), "dangling", &path, Access::Append)
                .expect("ok")
                .is_none()
        );
        assert!(!dir.path().join("elsewhere").exists());
    }

    #[test]
    fn symlinked_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("real")).expect("mkdir");
        symlink(dir.path().join("real"), dir.path().join("link")).expect("symlink");
        std::fs::write(dir.path().join("file"), b"").expect("write");
        let fd = dir_fd(dir.path());
        match open_dir_at(fd.as_fd(), "link", &dir.path().join("link"), true) {
            Err(MailboxError::Unsafe {
                reason: UnsafeReason::Symlink,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        match open_dir_at(fd.as_fd(), "file", &dir.path().join("file"), true) {
            Err(MailboxError::Unsafe {
                reason: UnsafeReason::NotDirectory(FileKind::Regular),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        match open_dir(&dir.path().join("link"), true) {
            Err(MailboxError::Unsafe {
                reason: UnsafeReason::Symlink,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            open_dir_at(fd.as_fd(), "missing", dir.path(), false)
                .expect("ok")
                .is_none()
        );
        assert!(
            open_dir_at(fd.as_fd(), "made", dir.path(), true)
                .expect("ok")
                .is_some()
        );
    }

    #[test]
    fn recheck_sees_a_replaced_mailbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m");
        std::fs::write(&path, b"old").expect("write");
        let fd = dir_fd(dir.path());
        let f = open_existing_at(fd.as_fd(), "m", &path, Access::Append)
            .expect("open")
            .expect("some");
        recheck(fd.as_fd(), "m", &path, &f).expect("unchanged");
        std::fs::write(dir.path().join("m2"), b"new").expect("write");
        std::fs::rename(dir.path().join("m2"), &path).expect("rename");
        match recheck(fd.as_fd(), "m", &path, &f) {
            Err(MailboxError::Unsafe {
                reason: UnsafeReason::Changed,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}
