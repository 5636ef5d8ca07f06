//! Reading a user's ~/.forward for the MTA: open it without following symlinks, check
//! what was opened, parse it ([`cursus_mail::forward`]) and answer with the targets as
//! data ([`Answer::Forward`]); the MTA routes them and asks the policy for each delivery.
//!
//! [`read_forward`] runs in a process that has already become the user (so the kernel's
//! permission checks are the user's); [`open_checked`] is also used by `policy generate`,
//! which runs as root and passes `root_may_own = false`. Trusts the home directory and uid
//! it is given (they come from the LDA's own user database lookup) and nothing in the file.
//!
//! Fails as an answer, never a panic: a missing file is an empty list; an unsafe file is
//! ignored and the answer says so ([`ErrorCode::Refused`]); an unreadable or malformed one
//! defers the mail (temporary, 4.3.5 for a syntax error, with its line) so the user can fix
//! it without mail being lost or sent where it should not go.
//!
//! Attacks stopped (each check in [`open_checked`] says which): a `.forward` that is a
//! symlink to another user's file (O_NOFOLLOW), a FIFO or device hanging or confusing the
//! reader (O_NONBLOCK, then regular files only), a file someone else wrote (owner check), a
//! file others can write (group/world-writable refused), a hard link to a root-owned file
//! planted in the home, and a huge file making the reader allocate (64 KiB cap, enforced
//! again while reading in case it grew after fstat).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use cursus_mail::forward::{self, Target};
use cursus_mail::{OutcomeKind, codes};
use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::destination::MailPath;
use crate::protocol::{self, Answer, ErrorCode, ForwardEntry, MAX_LIST};

/// The largest .forward read, in bytes.
pub const MAX_FORWARD_SIZE: u64 = 64 * 1024;

/// Why a .forward is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsafe {
    Symlink,
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
    Owner {
        found: u32,
        want: u32,
    },
    /// Group- or world-writable (the mode bits).
    Writable {
        mode: u32,
    },
    /// A root-owned file with more than one link.
    HardLinked {
        links: u64,
    },
    TooLarge {
        size: u64,
    },
}

impl fmt::Display for Unsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsafe::Symlink => write!(f, "it is a symbolic link"),
            Unsafe::NotRegular(what) => write!(f, "it is a {what}, not a regular file"),
            Unsafe::Owner { found, want } => {
                write!(f, "it is owned by uid {found}, not {want}")
            }
            Unsafe::Writable { mode } => write!(
                f,
                "it is group- or world-writable (mode {:04o})",
                mode & 0o7777
            ),
            Unsafe::HardLinked { links } => {
                write!(f, "it is owned by root and has {links} hard links")
            }
            Unsafe::TooLarge { size } => {
                write!(f, "it is {size} bytes (at most {MAX_FORWARD_SIZE})")
            }
        }
    }
}

/// Why [`open_checked`] gave no text.
#[derive(Debug)]
pub enum OpenError {
    Unsafe(Unsafe),
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Unsafe(u) => write!(f, "{u}"),
            OpenError::Io(e) => write!(f, "{e}"),
        }
    }
}

fn file_kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Opens `path` and returns its bytes if it is a safe .forward for `uid`; `Ok(None)` when
/// it does not exist.
///
/// Checks, each stopping an attack:
/// 1. O_NOFOLLOW: a `.forward` that is a symlink to another user's file (or to
///    /etc/shadow, read by a root caller) is refused, not followed;
/// 2. O_NONBLOCK, then fstat on the opened descriptor: a FIFO (or device) would hang the
///    reader forever; only regular files are read, and the checks apply to what was
///    opened, not to a name that can be swapped between a stat and an open;
/// 3. the owner is `uid` (or root, when `root_may_own`): a file someone else placed in a
///    writable home does not redirect this user's mail;
/// 4. not group- or world-writable (the sendmail and Postfix rule): others could add a
///    `|command` that runs as the user;
/// 5. a root-owned file has one link: a hard link to a root file planted in the home is
///    not read as the user's .forward;
/// 6. at most [`MAX_FORWARD_SIZE`] bytes, by fstat and again while reading: a huge file
///    making the reader allocate.
pub fn open_checked(
    path: &Path,
    uid: u32,
    root_may_own: bool,
) -> Result<Option<Vec<u8>>, OpenError> {
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
            return Err(OpenError::Unsafe(Unsafe::Symlink));
        }
        Err(e) => return Err(OpenError::Io(e)),
    };
    let meta = file.metadata().map_err(OpenError::Io)?;
    check_metadata(&meta, uid, root_may_own).map_err(OpenError::Unsafe)?;
    read_capped(file).map(Some)
}

fn check_metadata(meta: &std::fs::Metadata, uid: u32, root_may_own: bool) -> Result<(), Unsafe> {
    let t = meta.file_type();
    if t.is_symlink() {
        return Err(Unsafe::Symlink);
    }
    if !t.is_file() {
        return Err(Unsafe::NotRegular(file_kind(t)));
    }
    let owner = meta.uid();
    if owner != uid && !(root_may_own && owner == 0) {
        return Err(Unsafe::Owner {
            found: owner,
            want: uid,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Unsafe::Writable { mode: meta.mode() });
    }
    if owner == 0 && owner != uid && meta.nlink() > 1 {
        return Err(Unsafe::HardLinked {
            links: meta.nlink(),
        });
    }
    if meta.len() > MAX_FORWARD_SIZE {
        return Err(Unsafe::TooLarge { size: meta.len() });
    }
    Ok(())
}

fn read_capped(file: File) -> Result<Vec<u8>, OpenError> {
    let mut bytes = Vec::new();
    file.take(MAX_FORWARD_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(OpenError::Io)?;
    if bytes.len() as u64 > MAX_FORWARD_SIZE {
        return Err(OpenError::Unsafe(Unsafe::TooLarge {
            size: bytes.len() as u64,
        }));
    }
    Ok(bytes)
}

/// Why a target could not become a [`ForwardEntry`].
fn path_entry(text: &str, home: &Path) -> Result<MailPath, String> {
    let full = match text.strip_prefix("~/") {
        Some(rest) => {
            let home = home
                .to_str()
                .ok_or_else(|| "the home directory is not UTF-8".to_string())?;
            format!("{}/{rest}", home.trim_end_matches('/'))
        }
        None => text.to_string(),
    };
    MailPath::parse(&full).map_err(|e| format!("{full:?}: {e}"))
}

/// Parses .forward text into entries; `Err` is one line of text naming the line.
pub fn entries(text: &str, home: &Path) -> Result<Vec<ForwardEntry>, String> {
    let parsed = forward::parse(text).map_err(|e| e.to_string())?;
    parsed
        .into_iter()
        .map(|entry| {
            let at = |why: String| format!("line {}: {why}", entry.line);
            Ok(match entry.target {
                Target::Address(a) => ForwardEntry::Address(a),
                Target::Local(u) => ForwardEntry::Local(u),
                Target::Command(c) => ForwardEntry::Command(c),
                Target::File(f) => ForwardEntry::Mailbox(
                    path_entry(&f, home)
                        .map_err(|e| at(format!("a file must be an absolute path: {e}")))?,
                ),
                Target::Include(f) => ForwardEntry::Include(
                    path_entry(&f, home)
                        .map_err(|e| at(format!(":include: needs an absolute path: {e}")))?,
                ),
            })
        })
        .collect()
}

fn temporary(text: String) -> Answer {
    Answer::Outcome {
        kind: OutcomeKind::Temporary,
        status: codes::CONFIG_ERROR,
        text,
    }
}

/// Reads `home/.forward` for `uid`, in a process that is already that user, and answers
/// with its targets ([`Answer::Forward`], empty when there is no file), a refusal when the
/// file is unsafe (it is ignored), or a temporary 4.3.x outcome when it cannot be read or
/// parsed. See [`open_checked`] for the checks and the attacks they stop.
pub fn read_forward(home: &Path, uid: u32) -> Answer {
    let bytes = match open_checked(&home.join(".forward"), uid, true) {
        Ok(None) => return Answer::Forward { entries: vec![] },
        Ok(Some(bytes)) => bytes,
        Err(OpenError::Unsafe(why)) => {
            return Answer::Error {
                code: ErrorCode::Refused,
                text: format!("~/.forward is ignored because it is unsafe: {why}"),
            };
        }
        Err(OpenError::Io(e)) => {
            return Answer::Outcome {
                kind: OutcomeKind::Temporary,
                status: codes::SYSTEM_STATUS.as_temporary(),
                text: format!("cannot read ~/.forward: {e}"),
            };
        }
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            return temporary(format!("~/.forward line {line}: not UTF-8"));
        }
    };
    let entries = match entries(text, home) {
        Ok(entries) => entries,
        Err(why) => return temporary(format!("~/.forward {why}")),
    };
    if entries.len() > MAX_LIST {
        return temporary(format!(
            "~/.forward lists {} targets; at most {MAX_LIST} can be handed to the MTA",
            entries.len()
        ));
    }
    let answer = Answer::Forward { entries };
    // The frame limits are the last word: an answer that cannot be sent is a deferral
    // with a reason, not a broken connection.
    match protocol::encode_answer(&answer) {
        Ok(_) => answer,
        Err(e) => temporary(format!("~/.forward cannot be answered: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    fn outcome_text(answer: &Answer) -> (&'static str, String) {
        match answer {
            Answer::Forward { entries } => ("forward", format!("{entries:?}")),
            Answer::Error { code, text } => {
                assert_eq!(*code, ErrorCode::Refused);
                ("refused", text.clone())
            }
            Answer::Outcome { kind, status, text } => {
                assert_eq!(*kind, OutcomeKind::Temporary);
                ("temporary", format!("{status} {text}"))
            }
            other => ("other", format!("{other:?}")),
        }
    }

    fn write(home: &Path, text: &[u8], mode: u32) {
        let path = home.join(".forward");
        std::fs::write(&path, text).expect("write .forward");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn good_files_answer_with_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path();
        let h = home.to_str().expect("utf-8 temp path");
        assert_eq!(
            read_forward(home, uid()),
            Answer::Forward { entries: vec![] }
        );
        write(
            home,
            b"\\joe, joe@elsewhere.example\n# comment\n\"|/usr/bin/procmail -f-\"\n~/archive\n/var/mail/joe\n:include:~/list\n",
            0o644,
        );
        let want = vec![
            ForwardEntry::Local("joe".into()),
            ForwardEntry::Address("joe@elsewhere.example".into()),
            ForwardEntry::Command("/usr/bin/procmail -f-".into()),
            ForwardEntry::Mailbox(MailPath::parse(&format!("{h}/archive")).expect("path")),
            ForwardEntry::Mailbox(MailPath::parse("/var/mail/joe").expect("path")),
            ForwardEntry::Include(MailPath::parse(&format!("{h}/list")).expect("path")),
        ];
        assert_eq!(read_forward(home, uid()), Answer::Forward { entries: want });
    }

    #[test]
    fn bad_files_are_refused_or_deferred() {
        let many = [b'x', b'\n'].repeat(MAX_LIST + 1);
        let huge = vec![b'#'; MAX_FORWARD_SIZE as usize + 1];
        // (what, contents, mode, uid asked for, expected class, expected text fragment)
        type Row<'a> = (&'a str, &'a [u8], u32, u32, &'a str, &'a str);
        let rows: Vec<Row<'_>> = vec![
            (
                "world-writable",
                b"joe\n",
                0o646,
                uid(),
                "refused",
                "world-writable",
            ),
            (
                "group-writable",
                b"joe\n",
                0o664,
                uid(),
                "refused",
                "mode 0664",
            ),
            (
                "syntax",
                b"joe\n\"|/bin/x\n",
                0o644,
                uid(),
                "temporary",
                "4.3.5 ~/.forward line 2",
            ),
            (
                "relative file",
                b"joe\nMail/in\n",
                0o644,
                uid(),
                "temporary",
                "line 2: a file must be an absolute path",
            ),
            (
                "dot-dot file",
                b"/var/mail/../../etc/passwd\n",
                0o644,
                uid(),
                "temporary",
                "line 1: a file must",
            ),
            (
                "not utf-8",
                b"joe\n\xff\n",
                0o644,
                uid(),
                "temporary",
                "line 2: not UTF-8",
            ),
            (
                "too many for a frame",
                &many,
                0o644,
                uid(),
                "temporary",
                "at most 64",
            ),
            (
                "too large",
                &huge,
                0o644,
                uid(),
                "refused",
                "bytes (at most 65536)",
            ),
        ];
        for (what, text, mode, asked, class, fragment) in rows {
            let dir = tempfile::tempdir().expect("tempdir");
            write(dir.path(), text, mode);
            let answer = read_forward(dir.path(), asked);
            let (got, message) = outcome_text(&answer);
            assert_eq!(got, class, "{what}: {message}");
            assert!(message.contains(fragment), "{what}: {message}");
            protocol::encode_answer(&answer).expect("every answer can be sent");
        }
    }

    #[test]
    fn someone_elses_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), b"joe\n", 0o644);
        // As root the file can be given away; otherwise it is ours and we ask for another
        // uid. Either way the owner is neither the user asked for nor root.
        let (owner, asked) = if uid() == 0 {
            (4242, 4243)
        } else {
            (uid(), uid() + 1)
        };
        if uid() == 0 {
            std::os::unix::fs::chown(dir.path().join(".forward"), Some(owner), None)
                .expect("chown");
        }
        let (class, text) = outcome_text(&read_forward(dir.path(), asked));
        assert_eq!(class, "refused");
        assert!(
            text.ends_with(&format!("owned by uid {owner}, not {asked}")),
            "{text}"
        );
    }

    #[test]
    fn a_symlink_or_fifo_is_refused_without_following_or_hanging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "joe\n").expect("write");
        symlink(&target, dir.path().join(".forward")).expect("symlink");
        let answer = read_forward(dir.path(), uid());
        assert_eq!(
            outcome_text(&answer),
            (
                "refused",
                "~/.forward is ignored because it is unsafe: it is a symbolic link".into()
            )
        );

        let dir = tempfile::tempdir().expect("tempdir");
        nix::unistd::mkfifo(
            &dir.path().join(".forward"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        let answer = read_forward(dir.path(), uid());
        assert_eq!(
            outcome_text(&answer),
            (
                "refused",
                "~/.forward is ignored because it is unsafe: it is a FIFO, not a regular file"
                    .into()
            )
        );

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join(".forward")).expect("mkdir");
        let (class, _) = outcome_text(&read_forward(dir.path(), uid()));
        assert_eq!(class, "refused");
    }
}
