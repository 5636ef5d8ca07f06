//! The spool directory: its layout, the safety checks on it, and the scan that recovery
//! starts from.
//!
//! ```text
//! <root>/lock          flock(2): one queue process per spool
//! <root>/tmp/          journals being written; emptied at every open
//! <root>/00 .. ff/     buckets: <ID>.msg (the message bytes) and <ID>.jnl (its journal),
//!                      and <ID>.msg.spare, <ID>.jnl.spare: files kept for reuse, see below
//! <root>/corrupt/      files that did not replay, kept for a human
//! <root>/spare/        spares of earlier versions (`s<N>`), reused like the others
//! ```
//!
//! Spares: a finished message's two files are renamed to `<name>.spare` in their bucket
//! instead of unlinked, and the next accept overwrites them and renames them into the
//! current bucket instead of creating new files. Creating and freeing inodes is the costliest part of a short-lived spool file
//! (on ext4 without a journal every create also scans past the inodes freed in the last
//! minute, `recently_deleted()`), and overwriting a file whose blocks are allocated makes
//! its fdatasync a data write. A spare's content means nothing: it is never read, it is
//! cut to the new length before its sync, and it gets a queue name only by the same rename
//! after the sync that a new file would get. The spares found at open are reused.
//!
//! Trusts the file system to keep a rename atomic and to make a directory entry durable
//! when the directory is fsynced. Trusts nobody else with the spool: [`check_owner`] refuses
//! a root not owned by the process's user or writable by group or others (a local user who
//! could write there could plant messages, or swap a file for a symlink to make the queue
//! read or unlink something else), every file is created with O_EXCL and mode 0600 and
//! opened with O_NOFOLLOW (a planted symlink fails the open instead of being followed).
//! Names that are not a canonical queue id plus `.msg` or `.jnl` are left alone and never
//! turned into paths.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::QueueError;
use crate::id::{ID_LEN, QueueId};

pub const MESSAGE_SUFFIX: &str = ".msg";
pub const JOURNAL_SUFFIX: &str = ".jnl";
/// Added to a finished message's file names when they are kept for reuse in their bucket.
pub const SPARE_SUFFIX: &str = ".spare";

/// Paths inside one spool.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn corrupt(&self) -> PathBuf {
        self.root.join("corrupt")
    }

    pub fn spare_dir(&self) -> PathBuf {
        self.root.join("spare")
    }

    pub fn spare(&self, n: u64) -> PathBuf {
        self.spare_dir().join(format!("s{n}"))
    }

    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub fn bucket(&self, bucket: u8) -> PathBuf {
        self.root.join(format!("{bucket:02x}"))
    }

    pub fn message(&self, id: QueueId) -> PathBuf {
        self.bucket(id.bucket())
            .join(format!("{id}{MESSAGE_SUFFIX}"))
    }

    pub fn journal(&self, id: QueueId) -> PathBuf {
        self.bucket(id.bucket())
            .join(format!("{id}{JOURNAL_SUFFIX}"))
    }

    pub fn tmp_journal(&self, id: QueueId) -> PathBuf {
        self.tmp().join(format!("{id}{JOURNAL_SUFFIX}"))
    }
}

/// Refuses a spool root that someone else could write into.
pub fn check_owner(root: &Path) -> Result<(), QueueError> {
    let meta = fs::symlink_metadata(root).map_err(|e| QueueError::io("stat", root, e))?;
    let unsafe_because = |reason: &str| QueueError::Unsafe {
        path: root.to_path_buf(),
        reason: reason.to_string(),
    };
    if !meta.is_dir() {
        return Err(unsafe_because("not a directory (or a symbolic link)"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(unsafe_because("not owned by the queue's user"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_because("writable by group or others"));
    }
    Ok(())
}

/// Creates a directory (mode 0700) unless it exists.
pub fn ensure_dir(path: &Path) -> Result<(), QueueError> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path).map_err(|e| QueueError::io("stat", path, e))?;
            if meta.is_dir() {
                Ok(())
            } else {
                Err(QueueError::Unsafe {
                    path: path.to_path_buf(),
                    reason: "not a directory (or a symbolic link)".into(),
                })
            }
        }
        Err(e) => Err(QueueError::io("mkdir", path, e)),
    }
}

/// Opens a directory for fsync.
pub fn open_dir(path: &Path) -> Result<File, QueueError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| QueueError::io("open directory", path, e))
}

/// Creates a new file for writing: O_EXCL, mode 0600, no symlink followed.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Opens an existing file without following a symlink, for reading or for appending.
pub fn open_existing(path: &Path, append: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    if append {
        options.append(true);
    }
    options
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// What one bucket holds, by name.
#[derive(Debug, Default)]
pub struct BucketScan {
    /// Ids with both files: queued messages.
    pub complete: Vec<QueueId>,
    /// `.msg` without `.jnl`: an accept that never reached its rename.
    pub orphan_messages: Vec<QueueId>,
    /// `.jnl` without `.msg`: only a non-ordering file system after a crash can leave this,
    /// and only for an accept whose directory sync never finished.
    pub orphan_journals: Vec<QueueId>,
    /// Files of finished messages kept for reuse (`<id>.msg.spare`, `<id>.jnl.spare`).
    pub spares: Vec<(PathBuf, u64)>,
    /// Names that are not ours, or ids filed in the wrong bucket: left alone.
    pub foreign: usize,
}

/// Lists one bucket: names only, no file is opened.
pub fn scan_bucket(dir: &Path, bucket: u8) -> Result<BucketScan, QueueError> {
    let mut messages = Vec::new();
    let mut journals = Vec::new();
    let mut scan = BucketScan::default();
    let entries = fs::read_dir(dir).map_err(|e| QueueError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| QueueError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            scan.foreign += 1;
            continue;
        };
        let parsed = name
            .get(..ID_LEN)
            .and_then(QueueId::parse)
            .filter(|id| id.bucket() == bucket);
        let suffix = name.get(ID_LEN..);
        let spare = suffix
            .and_then(|s| s.strip_suffix(SPARE_SUFFIX))
            .is_some_and(|s| s == MESSAGE_SUFFIX || s == JOURNAL_SUFFIX);
        match (parsed, suffix) {
            (Some(id), Some(MESSAGE_SUFFIX)) => messages.push(id),
            (Some(id), Some(JOURNAL_SUFFIX)) => journals.push(id),
            (Some(_), Some(_)) if spare => match entry.metadata() {
                Ok(meta) if meta.is_file() => scan.spares.push((entry.path(), meta.blocks() * 512)),
                _ => scan.foreign += 1,
            },
            _ => scan.foreign += 1,
        }
    }
    messages.sort_unstable();
    journals.sort_unstable();
    // Merge the two sorted lists.
    let (mut m, mut j) = (
        messages.into_iter().peekable(),
        journals.into_iter().peekable(),
    );
    loop {
        match (m.peek().copied(), j.peek().copied()) {
            (Some(a), Some(b)) if a == b => {
                scan.complete.push(a);
                m.next();
                j.next();
            }
            (Some(a), Some(b)) if a < b => {
                scan.orphan_messages.push(a);
                m.next();
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                scan.orphan_journals.push(b);
                j.next();
            }
            (Some(a), None) => {
                scan.orphan_messages.push(a);
                m.next();
            }
            (None, None) => break,
        }
    }
    Ok(scan)
}

/// Opens a spare for overwriting: no symlink followed, never created.
pub fn open_spare(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`): a spare becoming a
/// queue file must never replace one.
pub fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        from,
        nix::fcntl::AT_FDCWD,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(io::Error::from)
}

/// Lists `spare/` (spares of earlier versions): the number and allocated bytes of each
/// regular file named `s<N>`;
/// anything else there is removed (only the queue writes into it).
pub fn scan_spares(layout: &Layout) -> Result<Vec<(u64, u64)>, QueueError> {
    let dir = layout.spare_dir();
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).map_err(|e| QueueError::io("read directory", &dir, e))? {
        let entry = entry.map_err(|e| QueueError::io("read directory", &dir, e))?;
        let number = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix('s'))
            .and_then(|n| n.parse::<u64>().ok());
        let meta = entry.metadata().ok().filter(|m| m.is_file());
        match (number, meta) {
            (Some(n), Some(meta)) => found.push((n, meta.blocks() * 512)),
            _ => {
                let _ = remove_file(&entry.path());
            }
        }
    }
    Ok(found)
}

/// Removes a file, treating "already gone" as done.
pub fn remove_file(path: &Path) -> Result<(), QueueError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(QueueError::io("unlink", path, e)),
    }
}

/// Empties `tmp/`: whatever is there belongs to an accept that never returned.
pub fn clear_tmp(layout: &Layout) -> Result<usize, QueueError> {
    let dir = layout.tmp();
    let mut removed = 0;
    for entry in fs::read_dir(&dir).map_err(|e| QueueError::io("read directory", &dir, e))? {
        let entry = entry.map_err(|e| QueueError::io("read directory", &dir, e))?;
        remove_file(&entry.path())?;
        removed += 1;
    }
    Ok(removed)
}
