//! MH folder delivery: the next message number, an exclusive create, and the `unseen`
//! sequence in `.mh_sequences`.
//!
//! Trusts: the folder path up to its last component (opened with O_NOFOLLOW|O_DIRECTORY; a
//! symlinked folder is refused); the numeric names in the folder only as numbers.
//! Fails: nothing is left behind: a message file that could not be written completely is
//! removed. The lock (`.mh_sequences.lock`, a dotlock, since `.mh_sequences` itself is replaced
//! by rename and cannot carry an fcntl lock) times out as a temporary failure. Failing to
//! update `.mh_sequences` after the message is safely stored does not fail the delivery; the
//! note says so.
//!
//! Security: message files are created with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600 (a
//! pre-planted symlink or file under the next number is never written through, we move on to
//! the next number); `.mh_sequences` is read only through the safe-open checks and replaced by
//! rename, so a symlink or hard link planted there is replaced, never written through.

use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::dir::Dir;
use nix::fcntl::{OFlag, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

use crate::dotlock;
use crate::error::MailboxError;
use crate::maildir_name::unique_name;
use crate::message::Message;
use crate::safe_open::{self, Access};
use crate::stored::Stored;

/// The sequences file of an MH folder.
pub const MH_SEQUENCES: &str = ".mh_sequences";
/// The sequence new messages are added to (nmh's default `Unseen-Sequence`).
pub const UNSEEN: &str = "unseen";
const LOCK_NAME: &str = ".mh_sequences.lock";
/// A lock older than this whose pid is dead is removed.
const STALE_LOCK: Duration = Duration::from_secs(300);
/// Numbers tried after the first one is taken.
const NUMBER_ATTEMPTS: u32 = 100;
/// Longest `.mh_sequences` we read.
const MAX_SEQUENCES: u64 = 1 << 20;

/// How to deliver into an MH folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MhOptions {
    /// Create the folder (0700) when missing.
    pub create: bool,
    /// fsync the message and the folder.
    pub fsync: bool,
    /// How long to wait for `.mh_sequences.lock`.
    pub lock_timeout: Duration,
}

impl Default for MhOptions {
    /// Create missing folders, fsync on, 60 s lock timeout.
    fn default() -> Self {
        MhOptions {
            create: true,
            fsync: true,
            lock_timeout: Duration::from_secs(60),
        }
    }
}

/// Stores `message` as the next number in the MH folder `folder` and adds it to `unseen`.
pub fn deliver_mh(
    folder: &Path,
    message: &Message,
    opts: &MhOptions,
) -> Result<Stored, MailboxError> {
    let dir = safe_open::open_dir(folder, opts.create)?;
    let lock = dotlock::lock(
        dir.as_fd(),
        folder,
        LOCK_NAME,
        opts.lock_timeout,
        STALE_LOCK,
    )?;
    let mut notes = Vec::new();
    let number = store(dir.as_fd(), folder, message, opts)?;
    if let Err(e) = add_unseen(dir.as_fd(), folder, number, opts.fsync, &mut notes) {
        notes.push(format!("{MH_SEQUENCES} not updated: {e}"));
    }
    if let Err(e) = lock.release() {
        notes.push(e.to_string());
    }
    Ok(Stored::new(folder.join(number.to_string()), notes))
}

/// Writes the message under the next free number; returns the number.
fn store(
    dir: BorrowedFd<'_>,
    folder: &Path,
    message: &Message,
    opts: &MhOptions,
) -> Result<u64, MailboxError> {
    let mut number = highest_number(dir, folder)?.saturating_add(1);
    for _ in 0..NUMBER_ATTEMPTS {
        let name = number.to_string();
        let path = folder.join(&name);
        let Some(file) = safe_open::create_at(dir, &name, &path, Access::AppendOnly)? else {
            number = number.saturating_add(1);
            continue;
        };
        let written = write_message(file.file, message, opts.fsync)
            .map_err(|e| MailboxError::io("cannot write", &path, e))
            .and_then(|()| {
                if opts.fsync {
                    fsync(dir).map_err(|e| MailboxError::nix("cannot fsync", folder, e))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = written {
            let _ = unlinkat(dir, name.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        return Ok(number);
    }
    Err(MailboxError::NoUniqueName {
        path: folder.to_path_buf(),
        attempts: NUMBER_ATTEMPTS,
    })
}

/// Writes, flushes, fsyncs and closes (checked) a message file.
fn write_message(file: std::fs::File, message: &Message, fsync: bool) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(64 * 1024, &file);
    let written = message.write_to(&mut writer).and_then(|()| writer.flush());
    let _ = writer.into_parts();
    written?;
    if fsync {
        file.sync_all()?;
    }
    nix::unistd::close(OwnedFd::from(file)).map_err(std::io::Error::from)
}

/// The largest all-digit name in the folder, 0 when there is none.
fn highest_number(dir: BorrowedFd<'_>, folder: &Path) -> Result<u64, MailboxError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut d = Dir::openat(dir, ".", flags, Mode::empty())
        .map_err(|e| MailboxError::nix("cannot open directory", folder, e))?;
    let mut highest = 0u64;
    for entry in d.iter() {
        let entry = entry.map_err(|e| MailboxError::nix("cannot read directory", folder, e))?;
        let name = entry.file_name().to_bytes();
        if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
            let value = std::str::from_utf8(name)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            highest = highest.max(value.unwrap_or(0));
        }
    }
    Ok(highest)
}

/// Adds `number` to the unseen sequence: read, edit, write a temporary file, rename.
fn add_unseen(
    dir: BorrowedFd<'_>,
    folder: &Path,
    number: u64,
    fsync: bool,
    notes: &mut Vec<String>,
) -> Result<(), MailboxError> {
    let path = folder.join(MH_SEQUENCES);
    let old = match safe_open::open_existing_at(dir, MH_SEQUENCES, &path, Access::Read) {
        Ok(Some(file)) => {
            let mut bytes = Vec::new();
            file.file
                .take(MAX_SEQUENCES)
                .read_to_end(&mut bytes)
                .map_err(|e| MailboxError::io("cannot read", &path, e))?;
            bytes
        }
        Ok(None) => Vec::new(),
        Err(MailboxError::Unsafe { reason, .. }) => {
            notes.push(format!("{MH_SEQUENCES} {reason}; replaced"));
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let new = add_to_sequence(&old, UNSEEN, number);
    let tmp = format!(
        "{MH_SEQUENCES}.{}",
        unique_name().map_err(|e| MailboxError::io("cannot name", folder, e))?
    );
    let tmp_path = folder.join(&tmp);
    let Some(mut file) = safe_open::create_at(dir, &tmp, &tmp_path, Access::AppendOnly)? else {
        return Err(MailboxError::NoUniqueName {
            path: tmp_path,
            attempts: 1,
        });
    };
    let result = file
        .file
        .write_all(&new)
        .and_then(|()| if fsync { file.file.sync_all() } else { Ok(()) })
        .map_err(|e| MailboxError::io("cannot write", &tmp_path, e))
        .and_then(|()| {
            renameat(dir, tmp.as_str(), dir, MH_SEQUENCES)
                .map_err(|e| MailboxError::nix("cannot rename", &tmp_path, e))
        });
    if result.is_err() {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Adds `number` to the sequence `name` in the text of a `.mh_sequences` file, writing that
/// sequence's line with ranges (`unseen: 1-3 7`). Other lines, including continuation lines
/// of other sequences, are kept byte for byte; words that are not numbers or ranges are
/// dropped from the edited sequence.
pub fn add_to_sequence(text: &[u8], name: &str, number: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 32);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut found = false;
    let mut in_target = false;
    let mut insert_at = None;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let value: &[u8] = if matches!(line.first(), Some(b' ' | b'\t')) {
            if !in_target {
                out.extend_from_slice(line);
                continue;
            }
            line
        } else {
            in_target = false;
            match line.iter().position(|&b| b == b':') {
                Some(colon) if !found && line[..colon].trim_ascii() == name.as_bytes() => {
                    found = true;
                    in_target = true;
                    insert_at = Some(out.len());
                    &line[colon + 1..]
                }
                _ => {
                    out.extend_from_slice(line);
                    continue;
                }
            }
        };
        ranges.extend(
            value
                .split(|b| b.is_ascii_whitespace())
                .filter_map(parse_range),
        );
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    ranges.push((number, number));
    let line = format!("{name}: {}\n", format_ranges(ranges));
    match insert_at {
        Some(at) => {
            out.splice(at..at, line.into_bytes());
        }
        None => out.extend_from_slice(line.as_bytes()),
    }
    out
}

fn parse_range(word: &[u8]) -> Option<(u64, u64)> {
    let word = std::str::from_utf8(word).ok()?;
    if word.is_empty() {
        return None;
    }
    let (a, b) = word.split_once('-').unwrap_or((word, word));
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

/// Sorted, merged ranges: `1-3 7`.
fn format_ranges(mut ranges: Vec<(u64, u64)>) -> String {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_edit_table() {
        let table: &[(&str, u64, &str)] = &[
            ("", 1, "unseen: 1\n"),
            ("unseen: 1 2\n", 3, "unseen: 1-3\n"),
            ("unseen: 1-3\n", 7, "unseen: 1-3 7\n"),
            ("unseen: 7 1-3\n", 5, "unseen: 1-3 5 7\n"),
            ("unseen: 1-3 5\n", 4, "unseen: 1-5\n"),
            (
                "cur: 4\nunseen: 2\nflagged: 1\n",
                3,
                "cur: 4\nunseen: 2-3\nflagged: 1\n",
            ),
            ("cur: 4\n", 1, "cur: 4\nunseen: 1\n"),
            ("cur: 4", 1, "cur: 4\nunseen: 1\n"),
            (
                "unseen: 1\n 2 3\ncur: 2\n  9\n",
                4,
                "unseen: 1-4\ncur: 2\n  9\n",
            ),
            ("unseen: x 2-1 0 5\n", 6, "unseen: 5-6\n"),
            ("unseen:\n", 10, "unseen: 10\n"),
            ("unseenx: 1\n", 2, "unseenx: 1\nunseen: 2\n"),
        ];
        for (input, number, want) in table {
            let got = add_to_sequence(input.as_bytes(), UNSEEN, *number);
            assert_eq!(String::from_utf8_lossy(&got), *want, "{input:?} + {number}");
        }
    }
}
