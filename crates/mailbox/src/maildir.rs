//! Maildir and Maildir++ delivery: tmp, unique name, link into new/ (mda-interface §3.2-3.3).
//!
//! Trusts: the maildir path up to its last component (the destination policy vetted it);
//! below it nothing: the root is opened with O_DIRECTORY|O_NOFOLLOW and everything else with
//! `*at()` calls relative to it, `tmp`/`new`/`cur` and folders with O_DIRECTORY|O_NOFOLLOW.
//! Fails: without leaving anything behind: the message is written into an unnamed file
//! (O_TMPFILE) in `new/` (or `cur/`), or where that is impossible into a file in `tmp/`
//! that any error unlinks, and a file appears in `new/` (or `cur/`) only complete, fsynced
//! and by one atomic link (or non-replacing rename). Over quota is [`MailboxError::OverQuota`], decided before writing.
//!
//! Checks and what they stop:
//! * A symlinked root, `tmp`, `new`, `cur` or folder is refused (`UnsafeReason::Symlink`): a
//!   user (or a compromised account) pointing `new/` at another user's directory would make a
//!   privileged deliverer write there.
//! * Files are created with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: a planted symlink or file
//!   under our name is never written through; a collision just picks a new name.
//! * `linkat`, never a replacing `rename`: an existing message is never overwritten; EEXIST
//!   picks a new name. Where hard links are impossible, `renameat2(RENAME_NOREPLACE)`.
//! * Folder names only as [`FolderName`] (no `/`, no `..`, no leading dot).

use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, RenameFlags, openat, renameat, renameat2};
use nix::sys::stat::Mode;
use nix::sys::stat::fstatat;
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use crate::error::MailboxError;
use crate::folder::FolderName;
use crate::maildir_name::{final_name, normalize_flags, unique_name, with_flags};
use crate::message::Message;
use crate::quota::{self, QuotaDecision, QuotaLimits};
use crate::safe_open::{self, FILE_MODE};
use crate::stored::Stored;

/// Names tried when one is taken (each new name has 64 fresh random bits, so a second
/// collision means something is wrong).
const NAME_ATTEMPTS: u32 = 5;
/// The empty file that marks a Maildir++ folder.
pub const MAILDIRFOLDER: &str = "maildirfolder";

/// How to deliver into a maildir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaildirOptions {
    /// Create the maildir root and tmp/new/cur (0700) when missing.
    pub create: bool,
    /// Deliver into this Maildir++ folder.
    pub folder: Option<FolderName>,
    /// Create the folder (with its maildirfolder file) when missing; when false and missing,
    /// deliver to INBOX and say so in [`Stored::note`].
    pub autocreate_folder: bool,
    /// Limits from configuration (written as line 1 of maildirsize); `None` = use maildirsize
    /// if present, else no quota.
    pub quota: Option<QuotaLimits>,
    /// Maildir info flags ("FS"); sorted and deduplicated here; non-empty → `cur/name:2,FLAGS`,
    /// empty → `new/`.
    pub flags: String,
    /// fsync the message file before it is linked into new/ (or cur/).
    pub fsync: bool,
    /// Also fsync the new/ (or cur/) directory after the link, so the name survives a
    /// crash too (Dovecot does this; Postfix local(8) and procmail do not).
    pub fsync_directory: bool,
}

impl Default for MaildirOptions {
    /// Create the maildir, INBOX, no folder autocreation, quota from maildirsize, no flags,
    /// fsync on.
    fn default() -> Self {
        MaildirOptions {
            create: true,
            folder: None,
            autocreate_folder: false,
            quota: None,
            flags: String::new(),
            fsync: true,
            fsync_directory: true,
        }
    }
}

/// The three directories of one maildir (the root or a folder).
struct Subdirs {
    path: PathBuf,
    tmp: OwnedFd,
    new: OwnedFd,
    cur: OwnedFd,
}

fn open_subdirs(base: BorrowedFd<'_>, path: &Path, create: bool) -> Result<Subdirs, MailboxError> {
    let open = |name: &str| -> Result<OwnedFd, MailboxError> {
        let sub = path.join(name);
        safe_open::open_dir_at(base, name, &sub, create)?.ok_or_else(|| {
            MailboxError::io(
                "cannot open directory",
                &sub,
                std::io::Error::from_raw_os_error(Errno::ENOENT as i32),
            )
        })
    };
    Ok(Subdirs {
        path: path.to_path_buf(),
        tmp: open("tmp")?,
        new: open("new")?,
        cur: open("cur")?,
    })
}

/// Delivers `message` into the maildir at `root` (or its folder); see the file header.
pub fn deliver_maildir(
    root: &Path,
    message: &Message,
    opts: &MaildirOptions,
) -> Result<Stored, MailboxError> {
    let mut notes = Vec::new();
    let root_fd = safe_open::open_dir(root, opts.create)?;
    let (target, folder) = open_target(root_fd.as_fd(), root, opts, &mut notes)?;

    let (flags, dropped) = normalize_flags(&opts.flags);
    if dropped {
        notes.push("flag characters other than ASCII letters ignored".into());
    }
    let size = message.size();
    let counted = !folder.as_ref().is_some_and(FolderName::is_trash);
    let decision = if counted {
        quota::check(
            root_fd.as_fd(),
            root,
            target.tmp.as_fd(),
            opts.quota,
            size,
            opts.fsync,
            &mut notes,
        )?
    } else {
        QuotaDecision::NoQuota
    };

    let (dest_fd, dest_dir) = if flags.is_empty() {
        (&target.new, "new")
    } else {
        (&target.cur, "cur")
    };
    let dest_path = target.path.join(dest_dir);
    // First choice: an unnamed file in the destination itself, linked in when complete.
    let unnamed = write_unnamed(dest_fd.as_fd(), &dest_path, message, opts.fsync)?;
    let linked = match unnamed {
        Some(file) => link_unnamed(&file, dest_fd.as_fd(), &dest_path, &flags, message)?,
        None => None,
    };
    let final_name = match linked {
        Some(name) => name,
        None => deliver_through_tmp(
            &target,
            dest_fd.as_fd(),
            &dest_path,
            &flags,
            message,
            opts.fsync,
            &mut notes,
        )?,
    };
    // Shared with concurrent deliveries into the same directory by this process: the sync
    // it waits for began after the link above (see directory_sync.rs).
    if opts.fsync_directory
        && let Err(e) = crate::directory_sync::sync_directory(dest_fd.as_fd())
    {
        // The message may not survive a crash; take it back so the retry does not
        // duplicate it (a reader that already moved it makes this unlink a no-op).
        let _ = unlinkat(dest_fd, final_name.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(MailboxError::nix("cannot fsync", dest_path, e));
    }
    if matches!(decision, QuotaDecision::Fits)
        && let Err(e) = quota::record_delivery(root_fd.as_fd(), root, size)
    {
        notes.push(format!("maildirsize not updated: {e}"));
    }
    Ok(Stored::new(dest_path.join(final_name), notes))
}

/// When the Maildir at `maildir` was last read, in seconds since 1970: the modification
/// time of its `cur/`, where a reader moves what it has seen (not followed if a symbolic
/// link). `None` when it cannot be seen.
pub fn last_read(maildir: &Path) -> Option<i64> {
    let modified = std::fs::symlink_metadata(maildir.join("cur"))
        .ok()?
        .modified()
        .ok()?;
    let secs = modified
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    i64::try_from(secs).ok()
}

/// The classic way (where the file system or the kernel has no O_TMPFILE, or /proc is not
/// mounted): a file in `tmp/`, linked into `dest`, then unlinked from `tmp/`.
fn deliver_through_tmp(
    target: &Subdirs,
    dest_fd: BorrowedFd<'_>,
    dest_path: &Path,
    flags: &str,
    message: &Message,
    fsync: bool,
    notes: &mut Vec<String>,
) -> Result<String, MailboxError> {
    let (tmp_name, tmp_path) = write_tmp(target, message, fsync)?;
    let moved = move_into(target, &tmp_name, dest_fd, dest_path, flags, message);
    let final_name = match moved {
        Ok(name) => name,
        Err(e) => {
            let _ = unlinkat(&target.tmp, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
    };
    if let Err(e) = unlinkat(&target.tmp, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir)
        && e != Errno::ENOENT
    {
        notes.push(format!(
            "cannot remove {}: {}",
            tmp_path.display(),
            e.desc()
        ));
    }
    Ok(final_name)
}

/// Writes the message into an unnamed file (O_TMPFILE) in `dest` and fsyncs it; `None`
/// where unnamed files cannot be made there (the caller then uses `tmp/`). Nobody can see
/// or open the file until it is linked, and a crash leaves nothing behind. Saves the
/// `tmp/` entry's creation and removal, and on ext4 without a journal the sync of `tmp/`
/// that fsync does for a newly named file (about 35 µs of a 200 µs fsync here).
fn write_unnamed(
    dest: BorrowedFd<'_>,
    dest_path: &Path,
    message: &Message,
    fsync: bool,
) -> Result<Option<std::fs::File>, MailboxError> {
    let flags = OFlag::O_WRONLY | OFlag::O_TMPFILE | OFlag::O_CLOEXEC;
    let fd = match openat(dest, ".", flags, Mode::from_bits_truncate(FILE_MODE)) {
        Ok(fd) => fd,
        // No O_TMPFILE in this kernel or file system.
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL | Errno::ENOENT) => {
            return Ok(None);
        }
        Err(e) => return Err(MailboxError::nix("cannot create in", dest_path, e)),
    };
    let file = std::fs::File::from(fd);
    write_and_sync(&file, message, fsync)
        .map_err(|e| MailboxError::io("cannot write", dest_path, e))?;
    Ok(Some(file))
}

/// Gives the unnamed file its final name in `dest` (a new unique name on EEXIST) through
/// /proc/self/fd, our own descriptor; `None` when /proc is not there (the caller then
/// writes the message again through `tmp/`). linkat never replaces an existing name.
fn link_unnamed(
    file: &std::fs::File,
    dest: BorrowedFd<'_>,
    dest_path: &Path,
    flags: &str,
    message: &Message,
) -> Result<Option<String>, MailboxError> {
    use std::os::fd::AsRawFd;
    let source = format!("/proc/self/fd/{}", file.as_raw_fd());
    let first = unique_name().map_err(|e| MailboxError::io("cannot name", dest_path, e))?;
    let placed = under_a_free_name(dest_path, flags, message, first, |name| {
        linkat(
            AT_FDCWD,
            source.as_str(),
            dest,
            name,
            AtFlags::AT_SYMLINK_FOLLOW,
        )
    })?;
    match placed {
        Ok(name) => Ok(Some(name)),
        // No /proc (or one we may not look into, hidepid), or no hard links here.
        Err((
            Errno::ENOENT
            | Errno::EACCES
            | Errno::EPERM
            | Errno::EOPNOTSUPP
            | Errno::EXDEV
            | Errno::EMLINK,
            _,
        )) => Ok(None),
        Err((e, name)) => Err(MailboxError::nix(
            "cannot link into",
            dest_path.join(name),
            e,
        )),
    }
}

/// Calls `place` with the final name made from `unique` (size, RFC 822 size, flags) and,
/// while it answers EEXIST, with names made from fresh unique parts. Returns the name
/// used, or the other error `place` gave with the name it was for.
fn under_a_free_name(
    dest_path: &Path,
    flags: &str,
    message: &Message,
    mut unique: String,
    mut place: impl FnMut(&str) -> Result<(), Errno>,
) -> Result<Result<String, (Errno, String)>, MailboxError> {
    for _ in 0..NAME_ATTEMPTS {
        let mut name = final_name(&unique, message.size(), message.rfc822_size());
        if !flags.is_empty() {
            name = with_flags(&name, flags);
        }
        match place(&name) {
            Ok(()) => return Ok(Ok(name)),
            Err(Errno::EEXIST) => {
                unique =
                    unique_name().map_err(|e| MailboxError::io("cannot name", dest_path, e))?;
            }
            Err(e) => return Ok(Err((e, name))),
        }
    }
    Err(MailboxError::NoUniqueName {
        path: dest_path.to_path_buf(),
        attempts: NAME_ATTEMPTS,
    })
}

/// Opens the maildir to deliver into: the root, or the folder (created if allowed, else INBOX
/// with a note). Returns the folder actually used.
fn open_target(
    root_fd: BorrowedFd<'_>,
    root: &Path,
    opts: &MaildirOptions,
    notes: &mut Vec<String>,
) -> Result<(Subdirs, Option<FolderName>), MailboxError> {
    let Some(folder) = &opts.folder else {
        return Ok((open_subdirs(root_fd, root, opts.create)?, None));
    };
    let dir_name = folder.dir_name();
    let folder_path = root.join(&dir_name);
    let Some(folder_fd) =
        safe_open::open_dir_at(root_fd, &dir_name, &folder_path, opts.autocreate_folder)?
    else {
        notes.push(format!(
            "folder {folder} does not exist; delivered to INBOX"
        ));
        return Ok((open_subdirs(root_fd, root, opts.create)?, None));
    };
    let subdirs = open_subdirs(
        folder_fd.as_fd(),
        &folder_path,
        opts.autocreate_folder || opts.create,
    )?;
    if opts.autocreate_folder {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(
            &folder_fd,
            MAILDIRFOLDER,
            flags,
            Mode::from_bits_truncate(FILE_MODE),
        ) {
            Ok(_) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(MailboxError::nix(
                    "cannot create",
                    folder_path.join(MAILDIRFOLDER),
                    e,
                ));
            }
        }
    }
    Ok((subdirs, Some(folder.clone())))
}

/// Creates, writes, fsyncs and closes the file in `tmp/`; returns its name and path. On any
/// error the file is removed.
fn write_tmp(
    target: &Subdirs,
    message: &Message,
    fsync: bool,
) -> Result<(String, PathBuf), MailboxError> {
    let tmp_dir = target.path.join("tmp");
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    for _ in 0..NAME_ATTEMPTS {
        let name = unique_name().map_err(|e| MailboxError::io("cannot name", &tmp_dir, e))?;
        let path = tmp_dir.join(&name);
        let fd = match openat(
            &target.tmp,
            name.as_str(),
            flags,
            Mode::from_bits_truncate(FILE_MODE),
        ) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(MailboxError::nix("cannot create", &path, e)),
        };
        if let Err(e) = write_file(std::fs::File::from(fd), message, fsync) {
            let _ = unlinkat(&target.tmp, name.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(MailboxError::io("cannot write", &path, e));
        }
        return Ok((name, path));
    }
    Err(MailboxError::NoUniqueName {
        path: tmp_dir,
        attempts: NAME_ATTEMPTS,
    })
}

/// Writes every byte (checked), fsyncs (checked), closes (checked): qmail's NFS rules.
fn write_file(file: std::fs::File, message: &Message, fsync: bool) -> std::io::Result<()> {
    write_and_sync(&file, message, fsync)?;
    nix::unistd::close(OwnedFd::from(file)).map_err(std::io::Error::from)
}

/// Writes every byte of `message` (checked) and, with `fsync`, syncs the file.
fn write_and_sync(file: &std::fs::File, message: &Message, fsync: bool) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(64 * 1024, file);
    let written = message.write_to(&mut writer).and_then(|()| writer.flush());
    let _ = writer.into_parts();
    written?;
    if fsync {
        file.sync_all()?;
    }
    Ok(())
}

/// Links the tmp file into `new/` or `cur/` under its final name (a new unique name on
/// EEXIST); falls back to a non-replacing rename where hard links are impossible.
fn move_into(
    target: &Subdirs,
    tmp_name: &str,
    dest: BorrowedFd<'_>,
    dest_path: &Path,
    flags: &str,
    message: &Message,
) -> Result<String, MailboxError> {
    let placed = under_a_free_name(dest_path, flags, message, tmp_name.to_string(), |name| {
        match linkat(&target.tmp, tmp_name, dest, name, AtFlags::empty()) {
            // No hard links here: rename, but never over an existing message.
            Err(Errno::EPERM | Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EMLINK) => {
                rename_noreplace(target.tmp.as_fd(), tmp_name, dest, name)
            }
            other => other,
        }
    })?;
    placed.map_err(|(e, name)| MailboxError::nix("cannot link into", dest_path.join(name), e))
}

/// `renameat2(RENAME_NOREPLACE)`; where the file system does not support the flag, a check
/// that the name is free followed by a plain rename (a race window the link path does not
/// have, taken only on file systems without hard links).
fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
) -> Result<(), Errno> {
    match renameat2(from_dir, from, to_dir, to, RenameFlags::RENAME_NOREPLACE) {
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            match fstatat(to_dir, to, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(_) => Err(Errno::EEXIST),
                Err(Errno::ENOENT) => renameat(from_dir, from, to_dir, to),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            prefix: Vec::new(),
            header: b"Subject: t\n\n".to_vec(),
            body: crate::spool::Spooled::from_bytes(b"body\n".to_vec()),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("reads")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The unnamed file is nowhere until it is linked, then whole under its final name.
    #[test]
    fn an_unnamed_file_appears_only_when_linked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new = dir.path().join("new");
        std::fs::create_dir(&new).expect("mkdir");
        let fd = safe_open::open_dir(&new, false).expect("opens");
        let m = message();
        let Some(file) = write_unnamed(fd.as_fd(), &new, &m, true).expect("writes") else {
            eprintln!("SKIP: no O_TMPFILE on this file system");
            return;
        };
        assert!(names(&new).is_empty(), "visible before the link");
        let name = link_unnamed(&file, fd.as_fd(), &new, "", &m)
            .expect("links")
            .expect("/proc is mounted");
        assert_eq!(names(&new), vec![name.clone()]);
        assert!(name.ends_with(&format!(",S={},W={}", m.size(), m.rfc822_size())));
        assert_eq!(
            std::fs::read(new.join(&name)).expect("reads"),
            b"Subject: t\n\nbody\n"
        );
    }

    /// The fallback through tmp/ (no O_TMPFILE, no /proc) stores the same bytes and leaves
    /// tmp/ empty.
    #[test]
    fn the_way_through_tmp_stores_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root_fd = safe_open::open_dir(dir.path(), true).expect("opens");
        let target = open_subdirs(root_fd.as_fd(), dir.path(), true).expect("subdirs");
        let m = message();
        let mut notes = Vec::new();
        let new = dir.path().join("new");
        let name = deliver_through_tmp(&target, target.new.as_fd(), &new, "", &m, true, &mut notes)
            .expect("delivers");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(&new), vec![name.clone()]);
        assert!(names(&dir.path().join("tmp")).is_empty());
        assert_eq!(
            std::fs::read(new.join(&name)).expect("reads"),
            b"Subject: t\n\nbody\n"
        );
    }
}
