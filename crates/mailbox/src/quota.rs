//! Maildir++ quota: reading, summing, recalculating and appending to `maildirsize`, as Courier
//! and Dovecot do (mda-interface §3.3, Courier README.maildirquota).
//!
//! Trusts: the `,S=<size>` field of message file names (Courier and Dovecot write it; a wrong
//! value is the reader's problem too), and `maildirsize` only after the safe-open checks. A
//! `maildirsize` that fails them (a symlink, hard links, wrong owner) or does not parse is not
//! followed or believed: it is recalculated and replaced by rename, which replaces the name,
//! never the file it pointed to.
//! Fails: [`MailboxError::OverQuota`] when the message does not fit (permanent 5.2.2 unless the
//! caller says otherwise); I/O errors while scanning the maildir. Failing to write the new
//! `maildirsize` or to append the usage line does not fail a delivery: the next delivery
//! recalculates, and the problem is reported in the delivery note.
//!
//! The file: line 1 is the quota (`<bytes>S,<count>C`, either part optional, 0 = unlimited);
//! every further line is `<bytes> <count>` (negative for removals). Recalculate when the file
//! is missing, 5120 bytes or longer, unreadable, or when the message would not fit and the file
//! has more than one usage line or is at least 15 minutes old. Recalculation scans `new/` and
//! `cur/` of the maildir and of every folder except `.Trash`, and is redone if a directory
//! changed during the scan.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, renameat};
use nix::sys::stat::{Mode, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::MailboxError;
use crate::maildir_name::{size_from_name, unique_name};
use crate::safe_open::{self, Access};

/// The name of the quota file in the maildir root.
pub const MAILDIRSIZE: &str = "maildirsize";
/// A maildirsize this long or longer is recalculated (Courier's 5120-byte buffer).
pub const MAILDIRSIZE_MAX: u64 = 5120;
/// Age after which an over-quota maildirsize is recalculated before refusing.
const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// Recalculation attempts while directories keep changing under the scan.
const SCAN_ATTEMPTS: u32 = 3;

/// Quota limits; `None` (or 0 in the file) means no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub bytes: Option<u64>,
    pub messages: Option<u64>,
}

impl QuotaLimits {
    /// Parses line 1 of maildirsize: comma-separated `<n>S` and `<n>C`. `None` if malformed.
    pub fn parse(line: &str) -> Option<QuotaLimits> {
        let mut limits = QuotaLimits::default();
        let line = line.trim();
        if line.is_empty() {
            return Some(limits);
        }
        for item in line.split(',') {
            let item = item.trim();
            // The kind letter must be ASCII, which also makes the split a char boundary.
            if !item.as_bytes().last()?.is_ascii() {
                return None;
            }
            let (digits, kind) = item.split_at(item.len() - 1);
            let value: u64 = digits.parse().ok()?;
            let value = (value > 0).then_some(value);
            match kind {
                "S" => limits.bytes = value,
                "C" => limits.messages = value,
                _ => return None,
            }
        }
        Some(limits)
    }

    /// Line 1 of maildirsize (without the newline), as Courier writes it.
    pub fn to_line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.bytes.filter(|&b| b > 0) {
            parts.push(format!("{b}S"));
        }
        if let Some(c) = self.messages.filter(|&c| c > 0) {
            parts.push(format!("{c}C"));
        }
        if parts.is_empty() {
            "0S".to_string()
        } else {
            parts.join(",")
        }
    }

    /// True when neither limit is set (or both are 0).
    pub fn is_unlimited(&self) -> bool {
        self.bytes.unwrap_or(0) == 0 && self.messages.unwrap_or(0) == 0
    }

    /// True when `usage` plus one message of `size` bytes exceeds a limit.
    pub fn exceeded_by(&self, usage: QuotaUsage, size: u64) -> bool {
        let over_bytes = self
            .bytes
            .is_some_and(|limit| limit > 0 && usage.bytes.saturating_add(size) > limit);
        let over_count = self
            .messages
            .is_some_and(|limit| limit > 0 && usage.messages.saturating_add(1) > limit);
        over_bytes || over_count
    }
}

/// Bytes and messages in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    pub bytes: u64,
    pub messages: u64,
}

/// A parsed maildirsize file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaildirSize {
    pub limits: QuotaLimits,
    /// The sum of all usage lines, negative sums clamped to 0.
    pub usage: QuotaUsage,
    /// Number of usage lines (lines after the first).
    pub usage_lines: usize,
}

impl MaildirSize {
    /// Parses the whole file. `None` when line 1 or any usage line is malformed (the caller
    /// recalculates). Blank lines are ignored.
    pub fn parse(bytes: &[u8]) -> Option<MaildirSize> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split('\n');
        let limits = QuotaLimits::parse(lines.next()?)?;
        let (mut total_bytes, mut total_count, mut usage_lines) = (0i64, 0i64, 0usize);
        for line in lines {
            let mut fields = line.split_ascii_whitespace();
            let Some(b) = fields.next() else { continue };
            let c = fields.next()?;
            if fields.next().is_some() {
                return None;
            }
            total_bytes = total_bytes.saturating_add(b.parse::<i64>().ok()?);
            total_count = total_count.saturating_add(c.parse::<i64>().ok()?);
            usage_lines += 1;
        }
        let usage = QuotaUsage {
            bytes: u64::try_from(total_bytes).unwrap_or(0),
            messages: u64::try_from(total_count).unwrap_or(0),
        };
        Some(MaildirSize {
            limits,
            usage,
            usage_lines,
        })
    }
}

/// What the quota check decided for one delivery.
#[derive(Debug)]
pub(crate) enum QuotaDecision {
    /// No quota applies; do not touch maildirsize.
    NoQuota,
    /// The message fits; append its usage line after the delivery.
    Fits,
}

/// The state of maildirsize on disk.
enum FileState {
    Missing,
    /// Present but its usage is not to be believed (unsafe, unreadable, malformed, too long);
    /// `limits` is line 1 when it could be read and parsed.
    Unusable {
        why: String,
        limits: Option<QuotaLimits>,
    },
    Parsed {
        size: MaildirSize,
        age: Duration,
    },
}

fn read_maildirsize(root: BorrowedFd<'_>, root_path: &Path) -> Result<FileState, MailboxError> {
    let path = root_path.join(MAILDIRSIZE);
    let file = match safe_open::open_existing_at(root, MAILDIRSIZE, &path, Access::Read) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(FileState::Missing),
        Err(MailboxError::Unsafe { reason, .. }) => {
            return Ok(FileState::Unusable {
                why: format!("maildirsize {reason}"),
                limits: None,
            });
        }
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    (&file.file)
        .take(MAILDIRSIZE_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| MailboxError::io("cannot read", &path, e))?;
    let first_line = || {
        let line = bytes.split(|&b| b == b'\n').next()?;
        QuotaLimits::parse(std::str::from_utf8(line).ok()?)
    };
    if bytes.len() as u64 >= MAILDIRSIZE_MAX {
        return Ok(FileState::Unusable {
            why: "maildirsize is too long".into(),
            limits: first_line(),
        });
    }
    let Some(size) = MaildirSize::parse(&bytes) else {
        return Ok(FileState::Unusable {
            why: "maildirsize is malformed".into(),
            limits: first_line(),
        });
    };
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(file.stat.st_mtime.max(0) as u64);
    let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
    Ok(FileState::Parsed { size, age })
}

/// Decides whether a message of `size` bytes may be delivered into the maildir `root`.
/// `configured` are the limits from configuration (they replace line 1 of the file); `None`
/// uses the file's own limits, or no quota when there is no file. `tmp` is a `tmp/` directory
/// of the same maildir for writing a recalculated file. Notes for the delivery go to `notes`.
pub(crate) fn check(
    root: BorrowedFd<'_>,
    root_path: &Path,
    tmp: BorrowedFd<'_>,
    configured: Option<QuotaLimits>,
    size: u64,
    fsync: bool,
    notes: &mut Vec<String>,
) -> Result<QuotaDecision, MailboxError> {
    let state = read_maildirsize(root, root_path)?;
    let limits = match (&configured, &state) {
        (Some(limits), _) => *limits,
        (None, FileState::Parsed { size, .. }) => size.limits,
        (
            None,
            FileState::Unusable {
                limits: Some(limits),
                ..
            },
        ) => *limits,
        // No configuration and no quota line to believe: no quota.
        (None, _) => return Ok(QuotaDecision::NoQuota),
    };
    if limits.is_unlimited() {
        return Ok(QuotaDecision::NoQuota);
    }
    let usage = match state {
        FileState::Parsed { size: parsed, age }
            if configured.is_none_or(|c| c.to_line() == parsed.limits.to_line()) =>
        {
            if limits.exceeded_by(parsed.usage, size)
                && (parsed.usage_lines > 1 || age >= STALE_AFTER)
            {
                // Over quota by a file that may be out of date: count again before refusing.
                recalculate_and_store(root, root_path, tmp, limits, fsync, notes)?
            } else {
                parsed.usage
            }
        }
        FileState::Unusable { why, .. } => {
            notes.push(format!("{why}; recalculated"));
            recalculate_and_store(root, root_path, tmp, limits, fsync, notes)?
        }
        // Missing, or the configured limits differ from line 1.
        _ => recalculate_and_store(root, root_path, tmp, limits, fsync, notes)?,
    };
    if limits.exceeded_by(usage, size) {
        return Err(MailboxError::OverQuota {
            path: root_path.to_path_buf(),
            usage,
            limits,
            message_size: size,
        });
    }
    Ok(QuotaDecision::Fits)
}

/// Appends `"<size> 1\n"` to maildirsize with one write on an O_APPEND descriptor.
pub(crate) fn record_delivery(
    root: BorrowedFd<'_>,
    root_path: &Path,
    size: u64,
) -> Result<(), MailboxError> {
    let path = root_path.join(MAILDIRSIZE);
    let Some(mut file) = safe_open::open_existing_at(root, MAILDIRSIZE, &path, Access::AppendOnly)?
    else {
        return Ok(());
    };
    let line = format!("{size} 1\n");
    let written = file
        .file
        .write(line.as_bytes())
        .map_err(|e| MailboxError::io("cannot append to", &path, e))?;
    if written != line.len() {
        return Err(MailboxError::io(
            "cannot append to",
            &path,
            std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
        ));
    }
    Ok(())
}

/// Recalculates and writes a new maildirsize (tmp + rename). A failed write is only noted.
fn recalculate_and_store(
    root: BorrowedFd<'_>,
    root_path: &Path,
    tmp: BorrowedFd<'_>,
    limits: QuotaLimits,
    fsync: bool,
    notes: &mut Vec<String>,
) -> Result<QuotaUsage, MailboxError> {
    let (usage, stable) = recalculate(root, root_path)?;
    if !stable {
        // Directories kept changing: use the numbers but leave no file claiming them, so the
        // next delivery scans again (Courier removes the file in this case).
        let _ = unlinkat(root, MAILDIRSIZE, UnlinkatFlags::NoRemoveDir);
        notes.push("maildir changed during quota recalculation".into());
        return Ok(usage);
    }
    if let Err(e) = store(root, root_path, tmp, limits, usage, fsync) {
        notes.push(format!("maildirsize not updated: {e}"));
    }
    Ok(usage)
}

fn store(
    root: BorrowedFd<'_>,
    root_path: &Path,
    tmp: BorrowedFd<'_>,
    limits: QuotaLimits,
    usage: QuotaUsage,
    fsync: bool,
) -> Result<(), MailboxError> {
    let name = unique_name().map_err(|e| MailboxError::io("cannot name", root_path, e))?;
    let tmp_path = root_path.join("tmp").join(&name);
    let Some(mut file) = safe_open::create_at(tmp, &name, &tmp_path, Access::AppendOnly)? else {
        return Err(MailboxError::NoUniqueName {
            path: tmp_path,
            attempts: 1,
        });
    };
    let text = format!("{}\n{} {}\n", limits.to_line(), usage.bytes, usage.messages);
    let result = file
        .file
        .write_all(text.as_bytes())
        .and_then(|()| if fsync { file.file.sync_all() } else { Ok(()) })
        .map_err(|e| MailboxError::io("cannot write", &tmp_path, e))
        .and_then(|()| {
            renameat(tmp, name.as_str(), root, MAILDIRSIZE)
                .map_err(|e| MailboxError::nix("cannot rename", &tmp_path, e))
        });
    if result.is_err() {
        let _ = unlinkat(tmp, name.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Scans the maildir; returns the usage and whether the directories stayed unchanged.
pub fn recalculate(
    root: BorrowedFd<'_>,
    root_path: &Path,
) -> Result<(QuotaUsage, bool), MailboxError> {
    let mut last = QuotaUsage::default();
    for _ in 0..SCAN_ATTEMPTS {
        let (usage, stable) = scan(root, root_path)?;
        if stable {
            return Ok((usage, true));
        }
        last = usage;
    }
    Ok((last, false))
}

/// One scan of `new/` and `cur/` of the root and of every folder except `.Trash`.
fn scan(root: BorrowedFd<'_>, root_path: &Path) -> Result<(QuotaUsage, bool), MailboxError> {
    let mut usage = QuotaUsage::default();
    let mut stable = true;
    let mut bases: Vec<String> = vec![".".to_string()];
    bases.extend(
        list(root, ".", root_path)?
            .into_iter()
            .filter(|n| n.starts_with('.') && n != "." && n != ".." && n != ".Trash"),
    );
    for base in bases {
        let base_path = root_path.join(&base);
        // A folder that is a symlink or not a directory is skipped, never followed.
        let base_fd = if base == "." {
            None
        } else {
            match safe_open::open_dir_at(root, &base, &base_path, false) {
                Ok(Some(fd)) => Some(fd),
                Ok(None) | Err(MailboxError::Unsafe { .. }) => continue,
                Err(e) => return Err(e),
            }
        };
        let base_fd = base_fd.as_ref().map(|fd| fd.as_fd()).unwrap_or(root);
        for sub in ["new", "cur"] {
            let sub_path = base_path.join(sub);
            let dir = match safe_open::open_dir_at(base_fd, sub, &sub_path, false) {
                Ok(Some(fd)) => fd,
                Ok(None) | Err(MailboxError::Unsafe { .. }) => continue,
                Err(e) => return Err(e),
            };
            let before =
                fstat(&dir).map_err(|e| MailboxError::nix("cannot fstat", &sub_path, e))?;
            for name in list(dir.as_fd(), ".", &sub_path)? {
                if name.starts_with('.') {
                    continue;
                }
                let bytes = match size_from_name(&name) {
                    Some(bytes) => bytes,
                    None => match fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) => st.st_size.max(0) as u64,
                        // Moved or deleted by a reader during the scan.
                        Err(Errno::ENOENT) => continue,
                        Err(e) => {
                            return Err(MailboxError::nix("cannot stat", sub_path.join(&name), e));
                        }
                    },
                };
                usage.bytes = usage.bytes.saturating_add(bytes);
                usage.messages += 1;
            }
            let after = fstat(&dir).map_err(|e| MailboxError::nix("cannot fstat", &sub_path, e))?;
            if (before.st_mtime, before.st_mtime_nsec) != (after.st_mtime, after.st_mtime_nsec) {
                stable = false;
            }
        }
    }
    Ok((usage, stable))
}

/// The names in a directory (without `.` and `..`).
fn list(dir: BorrowedFd<'_>, name: &str, path: &Path) -> Result<Vec<String>, MailboxError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut d = Dir::openat(dir, name, flags, Mode::empty())
        .map_err(|e| MailboxError::nix("cannot open directory", path, e))?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(|e| MailboxError::nix("cannot read directory", path, e))?;
        let Ok(n) = entry.file_name().to_str() else {
            continue;
        };
        if n != "." && n != ".." {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_print() {
        type Limits = Option<(Option<u64>, Option<u64>)>;
        let table: &[(&str, Limits, &str)] = &[
            (
                "10000000S,1000C",
                Some((Some(10_000_000), Some(1000))),
                "10000000S,1000C",
            ),
            ("1000C,500S", Some((Some(500), Some(1000))), "500S,1000C"),
            ("5S", Some((Some(5), None)), "5S"),
            ("7C", Some((None, Some(7))), "7C"),
            ("0S", Some((None, None)), "0S"),
            ("", Some((None, None)), "0S"),
            ("10X", None, ""),
            ("S", None, ""),
            ("-5S", None, ""),
            ("12", None, ""),
            ("5é", None, ""),
            ("é", None, ""),
            ("5S,", None, ""),
        ];
        for (line, want, printed) in table {
            let got = QuotaLimits::parse(line);
            assert_eq!(got.map(|l| (l.bytes, l.messages)), *want, "{line:?}");
            if let Some(l) = got {
                assert_eq!(l.to_line(), *printed, "{line:?}");
            }
        }
    }

    #[test]
    fn maildirsize_sums_lines() {
        let file = b"1000S,10C\n100 2\n  40 1\n-30 -1\n\n";
        let parsed = MaildirSize::parse(file).expect("parse");
        assert_eq!(
            parsed.limits,
            QuotaLimits {
                bytes: Some(1000),
                messages: Some(10)
            }
        );
        assert_eq!(
            parsed.usage,
            QuotaUsage {
                bytes: 110,
                messages: 2
            }
        );
        assert_eq!(parsed.usage_lines, 3);
        // Negative totals clamp to zero.
        let parsed = MaildirSize::parse(b"5S\n-10 -3\n").expect("parse");
        assert_eq!(parsed.usage, QuotaUsage::default());
        for bad in [
            &b"5S\n1\n"[..],
            b"5S\n1 x\n",
            b"5S\n1 2 3\n",
            b"5Q\n",
            b"\xff\n",
        ] {
            assert!(MaildirSize::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn over_quota_rules() {
        let limits = QuotaLimits {
            bytes: Some(100),
            messages: Some(3),
        };
        let usage = QuotaUsage {
            bytes: 90,
            messages: 2,
        };
        assert!(!limits.exceeded_by(usage, 10));
        assert!(limits.exceeded_by(usage, 11));
        assert!(limits.exceeded_by(
            QuotaUsage {
                bytes: 0,
                messages: 3
            },
            1
        ));
        assert!(!QuotaLimits::default().exceeded_by(usage, u64::MAX));
    }
}
