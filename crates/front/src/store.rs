//! The front's Maildir delivery: opened before the message is read, written as it is read.
//!
//! [`prepare`] runs before the first byte of input. It opens the Maildir and its `tmp`,
//! `new` and `cur` (each `O_DIRECTORY|O_NOFOLLOW`, relative to the one before), checks that
//! there is no `maildirsize`, and makes an unnamed file (`O_TMPFILE`, mode 0600) in `new/`.
//! Anything but that clean case (a missing Maildir to create, a symlink or a non-directory to
//! refuse, a quota, no `O_TMPFILE`, a permission error) answers `None`, and the request goes
//! to cursus-deliver-full with standard input untouched, which creates, refuses or reports
//! exactly as it always does. So the front never has to say why a mailbox is unusable.
//!
//! [`deliver`] then reads the input through cursus-mail's `Splitter` (the full program's
//! rules for line ends, the `From ` line and the header section), puts the trace fields in
//! front once the header section is complete (after the Delivered-To loop check), writes the
//! body as it comes, fsyncs the file, links it into `new/` under its unique name (a new one
//! on EEXIST; never replacing a name) through `/proc/self/fd`, and fsyncs `new/`. A file
//! appears in `new/` only complete and synced; on a failure before the link nothing is left
//! (the unnamed file goes with the process); when the sync of `new/` fails the name is
//! taken back, so the MTA's retry does not duplicate the message. The input is read to EOF
//! on every path.
//!
//! The checks and the attacks they stop are cursus-mailbox's (`maildir.rs`, `safe_open.rs`):
//! - `O_NOFOLLOW|O_DIRECTORY` on the Maildir and every directory below it: a `new/` (or the
//!   Maildir) pointed at another user's directory would make the deliverer write there.
//! - an unnamed file, then `linkat`: nothing can be planted under our name, nothing is
//!   overwritten, and no reader sees a partial message.
//!
//! Where hard links cannot be made (`linkat` answers EPERM, EOPNOTSUPP, EXDEV, EMLINK, or
//! ENOENT/EACCES without /proc), the message is copied from the unnamed file into a new file
//! in `tmp/` (`O_CREAT|O_EXCL|O_NOFOLLOW`), synced, and renamed into `new/` without replacing
//! (`RENAME_NOREPLACE`), as the full program does.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use cursus_mail::maildir_name::{escape_host, final_name, unique_from};
use cursus_mail::split::Splitter;
use cursus_mail::status::ErrnoClass;
use cursus_mail::{Outcome, codes};

use crate::envelope::{Envelope, empty_message, host_or_localhost};
use crate::plan::{Plan, join};
use crate::sys::{self, CPath, Dir, Errno, Fd};

/// The file that holds a Maildir++ quota; its presence makes the delivery the full
/// program's.
pub const MAILDIRSIZE: &str = "maildirsize";
/// Names tried when one is taken (each new name has 64 fresh random bits).
const NAME_ATTEMPTS: u64 = 5;
/// Bytes read from standard input at a time.
const CHUNK: usize = 64 << 10;

/// A Maildir opened for one delivery, with the unnamed file the message goes into.
pub struct Ready {
    /// The Maildir's path, as given (for the outcome text).
    root: String,
    tmp: Fd,
    new: Fd,
    file: Fd,
}

/// Opens the Maildir and an unnamed file in its `new/`; `None` unless everything is as in
/// the common case (see the module header).
pub fn prepare(maildir: &str) -> Option<Ready> {
    let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let root = sys::openat(Dir::Cwd, &CPath::new(maildir.as_bytes())?, dir_flags, 0).ok()?;
    let sub = |name: &[u8]| sys::openat(Dir::Fd(&root), &CPath::new(name)?, dir_flags, 0).ok();
    let (tmp, new, _cur) = (sub(b"tmp")?, sub(b"new")?, sub(b"cur")?);
    match sys::stat_mode(Dir::Fd(&root), &CPath::new(MAILDIRSIZE.as_bytes())?, true) {
        Err(Errno(libc::ENOENT)) => {}
        _ => return None,
    }
    let file = sys::openat(
        Dir::Fd(&new),
        &CPath::new(b".")?,
        libc::O_RDWR | libc::O_TMPFILE | libc::O_CLOEXEC,
        0o600,
    )
    .ok()?;
    Some(Ready {
        root: maildir.into(),
        tmp,
        new,
        file,
    })
}

/// What was written into the unnamed file.
struct Written {
    size: u64,
    lfs: u64,
}

/// Reads the message from `input` and delivers it into `ready`; see the module header.
pub fn deliver(
    plan: &Plan<'_>,
    ready: &Ready,
    getenv: &dyn Fn(&str) -> Option<String>,
    input: i32,
) -> Outcome {
    let new_path = join(&ready.root, "new");
    // Asked once: the recipient's domain when it has none, and the Maildir name's host.
    let node = sys::nodename();
    let written = match write_message(plan, ready, getenv, input, &new_path, &node) {
        Ok(w) => w,
        Err(outcome) => return outcome,
    };
    if let Err(e) = sys::fsync(&ready.file) {
        return failure("cannot write", &new_path, e);
    }
    let name = match link(ready, &new_path, &written, &node) {
        Ok(name) => name,
        Err(outcome) => return outcome,
    };
    if let Err(e) = sys::fsync(&ready.new) {
        // The message may not survive a crash; take it back so the retry does not
        // duplicate it (a reader that already moved it makes this a no-op).
        if let Some(c) = CPath::new(name.as_bytes()) {
            let _ = sys::unlinkat(Dir::Fd(&ready.new), &c);
        }
        return failure("cannot fsync", &new_path, e);
    }
    Outcome::delivered(format!("delivered to {}", join(&new_path, &name)))
}

/// Reads the input to EOF, writing trace fields, header and body into the unnamed file.
/// Whatever fails, the rest of the input is still read.
fn write_message(
    plan: &Plan<'_>,
    ready: &Ready,
    getenv: &dyn Fn(&str) -> Option<String>,
    input: i32,
    new_path: &str,
    node: &[u8],
) -> Result<Written, Outcome> {
    let mut splitter: Splitter<Vec<u8>> = Splitter::new(Vec::new());
    let mut buf = alloc::vec![0u8; CHUNK];
    let mut scratch = Vec::new();
    let mut out = Output {
        fd: ready.file.raw(),
        written: Written { size: 0, lfs: 0 },
        head_done: false,
        failed: None,
    };
    loop {
        let n = match sys::read(input, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                drain(input);
                return Err(Outcome::temporary(
                    codes::SYSTEM_STATUS,
                    format!("reading the message: {}", sys::describe(e)),
                ));
            }
        };
        let Ok(()) = splitter.feed_raw(&buf[..n], &mut scratch);
        if !splitter.in_body() {
            continue;
        }
        // Taken out and put back emptied: the same buffer serves every read.
        let mut body = core::mem::take(splitter.body_mut());
        if out.head_done {
            out.put(&body);
        } else {
            // The header section is complete: the trace fields can be decided.
            out.head_done = true;
            let envelope = envelope(plan, getenv, splitter.from_line_sender(), node);
            match envelope.trace(splitter.header(), splitter.starts_with_body()) {
                Ok(prefix) => out.put_all(&[&prefix, splitter.header(), &body]),
                Err(outcome) => out.failed = Some(Failed::Outcome(outcome)),
            }
        }
        body.clear();
        *splitter.body_mut() = body;
    }
    let Ok(split) = splitter.finish();
    if out.failed.is_none() {
        if !out.head_done {
            if split.header.is_empty() && split.body.is_empty() {
                return Err(empty_message());
            }
            let envelope = envelope(plan, getenv, split.from_line_sender.as_deref(), node);
            match envelope.trace(&split.header, split.starts_with_body) {
                Ok(prefix) => out.put_all(&[&prefix, &split.header, &split.body]),
                Err(outcome) => out.failed = Some(Failed::Outcome(outcome)),
            }
        } else {
            out.put(&split.body);
        }
    }
    match out.failed {
        None => Ok(out.written),
        Some(Failed::Outcome(o)) => Err(o),
        Some(Failed::Write(e)) => Err(failure("cannot write", new_path, e)),
    }
}

enum Failed {
    /// The loop check refused the message.
    Outcome(Outcome),
    /// A write failed.
    Write(Errno),
}

/// The unnamed file being written, with what went into it.
struct Output {
    fd: i32,
    written: Written,
    head_done: bool,
    failed: Option<Failed>,
}

impl Output {
    fn put(&mut self, data: &[u8]) {
        self.put_all(&[data]);
    }

    /// Writes the parts with one write(2) for a small message.
    fn put_all(&mut self, parts: &[&[u8]]) {
        if self.failed.is_some() {
            return;
        }
        let joined;
        let data: &[u8] = if parts.len() == 1 {
            parts[0]
        } else {
            joined = parts.concat();
            &joined
        };
        if data.is_empty() {
            return;
        }
        match sys::write_all(self.fd, data) {
            Ok(()) => {
                self.written.size += data.len() as u64;
                self.written.lfs += data.iter().filter(|&&b| b == b'\n').count() as u64;
            }
            Err(e) => self.failed = Some(Failed::Write(e)),
        }
    }
}

/// The envelope as the full program gathers it.
fn envelope(
    plan: &Plan<'_>,
    getenv: &dyn Fn(&str) -> Option<String>,
    from_line_sender: Option<&str>,
    node: &[u8],
) -> Envelope {
    Envelope::gather(
        &plan.envelope,
        getenv,
        from_line_sender,
        &plan.recipient_name,
        &|| host_or_localhost(node.to_vec()),
    )
}

/// Gives the unnamed file its final name in `new/`.
fn link(ready: &Ready, new_path: &str, written: &Written, node: &[u8]) -> Result<String, Outcome> {
    let source = format!("/proc/self/fd/{}", ready.file.raw());
    let source = CPath::new(source.as_bytes()).ok_or_else(|| no_name(new_path))?;
    let host = escape_host(node);
    let pid = sys::getpid();
    for n in 1..=NAME_ATTEMPTS {
        let mut random = [0u8; 8];
        if let Err(e) = sys::getrandom(&mut random) {
            return Err(failure("cannot name", new_path, e));
        }
        let (secs, micros) = sys::now();
        let unique = unique_from(secs, micros, pid, n, u64::from_be_bytes(random), &host);
        let name = final_name(&unique, written.size, written.size + written.lfs);
        let target = CPath::new(name.as_bytes()).ok_or_else(|| no_name(new_path))?;
        let linked = sys::linkat(
            Dir::Cwd,
            &source,
            Dir::Fd(&ready.new),
            &target,
            libc::AT_SYMLINK_FOLLOW,
        );
        match linked {
            Ok(()) => return Ok(name),
            Err(Errno(libc::EEXIST)) => continue,
            Err(Errno(
                libc::ENOENT
                | libc::EACCES
                | libc::EPERM
                | libc::EOPNOTSUPP
                | libc::EXDEV
                | libc::EMLINK,
            )) => return through_tmp(ready, &name, &target, written),
            Err(e) => return Err(failure("cannot link into", &join(new_path, &name), e)),
        }
    }
    Err(no_name(new_path))
}

/// Where the unnamed file cannot be linked: a copy in `tmp/`, synced, renamed into `new/`
/// without replacing anything, under the name already chosen (a name taken meanwhile is a
/// temporary failure: the MTA's retry picks another).
fn through_tmp(
    ready: &Ready,
    name: &str,
    target: &CPath,
    written: &Written,
) -> Result<String, Outcome> {
    let tmp_path = join(&ready.root, "tmp");
    let new_path = join(&ready.root, "new");
    let tmp = sys::openat(
        Dir::Fd(&ready.tmp),
        target,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0o600,
    )
    .map_err(|e| failure("cannot create", &join(&tmp_path, name), e))?;
    let copied = copy(&ready.file, &tmp, written.size).and_then(|()| sys::fsync(&tmp));
    let moved = copied
        .map_err(|e| failure("cannot write", &tmp_path, e))
        .and_then(|()| {
            sys::rename_noreplace(Dir::Fd(&ready.tmp), target, Dir::Fd(&ready.new), target)
                .map_err(|e| failure("cannot link into", &join(&new_path, name), e))
        });
    if moved.is_err() {
        let _ = sys::unlinkat(Dir::Fd(&ready.tmp), target);
    }
    moved.map(|()| name.into())
}

/// Copies `size` bytes of `from` (from its start) to `to`.
fn copy(from: &Fd, to: &Fd, size: u64) -> sys::Result<()> {
    let mut buf = alloc::vec![0u8; CHUNK];
    let mut offset = 0;
    while offset < size {
        let n = sys::pread(from, &mut buf, offset)?;
        if n == 0 {
            return Err(Errno(libc::EIO));
        }
        sys::write_all(to.raw(), &buf[..n])?;
        offset += n as u64;
    }
    Ok(())
}

/// Reads and discards the rest of the input, so the MTA never sees its write fail because
/// we exited early.
pub fn drain(input: i32) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = sys::read(input, &mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn no_name(new_path: &str) -> Outcome {
    Outcome::temporary(
        codes::SYSTEM_STATUS,
        format!("no unused file name in {new_path} after {NAME_ATTEMPTS} attempts"),
    )
}

/// A failed system call as the full program words it (`{action} {path}: {description}`),
/// classified by the shared errno table.
pub fn failure(action: &str, path: &str, e: Errno) -> Outcome {
    ErrnoClass::from_raw(e.0).outcome(format!("{action} {path}: {}", sys::describe(e)))
}
