//! One delivery, carried out by the LDA's forked child after it has become the user: the
//! user's refinement of the policy, the policy check, the walk to the mailbox's directory,
//! the message read from the descriptor the MTA passed, the trace headers, and the write
//! through the same mailbox code as cursus-deliver (or the command, see `command.rs`).
//!
//! Trusts the system policy (root's file, parsed by the service), the user database entry
//! the service looked up (uid, home), and nothing in the request; the refinement file only
//! when the user owns it and no one else can write it. Never fails: every path ends in an
//! [`Outcome`], temporary for anything an administrator or the user can fix.
//!
//! Attacks stopped (besides those of `policy.rs`, `walk.rs` and cursus-mailbox's
//! `safe_open.rs`, which all run here):
//! - A refinement file someone else can write (group- or world-writable, or owned by another
//!   user, or a symlink to one) adding destinations in the user's name: ignored and logged.
//! - A refinement file that is a FIFO or a device hanging or flooding the child: opened
//!   O_NONBLOCK, refused unless a regular file, read up to [`MAX_REFINEMENT`] bytes.
//! - A mail loop through this mailbox: a `Delivered-To:` for this recipient already in the
//!   header is a permanent 5.4.6 (RFC 9228 §4), never another copy.
//! - A message descriptor read with `read(2)` moving the MTA's shared file offset: the
//!   message is read with positional reads only.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use cursus_mail::header::{trace_prefix, trace_state};
use cursus_mail::{ExitCode, Outcome, codes};
use cursus_mailbox::input::{self, ReadMessage};
use cursus_mailbox::{
    FolderName, MaildirOptions, MboxOptions, Message, MhOptions, deliver_maildir, deliver_mbox,
    deliver_mh,
};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::command::{self, CommandJob};
use crate::destination::{Destination, MailPath};
use crate::policy::{self, Anchor, Decision, Policy, Request};
use crate::protocol::{DeliverOptions, Envelope};
use crate::walk;

/// Where a user's refinement file lives, relative to the home directory.
pub const REFINEMENT: &str = ".config/cursus/lda-policy.toml";
/// The largest refinement file read.
pub const MAX_REFINEMENT: u64 = 64 * 1024;

/// Everything the child needs for one delivery.
#[derive(Debug)]
pub struct Job<'a> {
    pub user: &'a str,
    pub uid: u32,
    pub home: &'a str,
    pub system: &'a Policy,
    pub destination: &'a Destination,
    pub envelope: &'a Envelope,
    pub options: DeliverOptions,
    pub message: &'a File,
    pub command_timeout: Duration,
}

/// Runs the delivery as the (already assumed) user. `log` receives notes for the service's
/// log (an ignored refinement file).
pub fn deliver(job: &Job<'_>, log: &mut dyn FnMut(String)) -> Outcome {
    let policy = match refined_policy(job, log) {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    let request = Request {
        user: job.user,
        uid: job.uid,
        home: job.home,
        destination: job.destination,
    };
    let rule = match policy::check(&policy, &request) {
        Decision::Allowed { rule, .. } => rule,
        Decision::Refused { reason, .. } => return refused(&reason.to_string()),
    };
    let message = match read_message(job.message) {
        Ok(m) => m,
        Err(e) => {
            return Outcome::temporary(
                codes::SYSTEM_STATUS,
                format!(
                    "reading the message: {}",
                    cursus_mailbox::errno::describe(&e)
                ),
            );
        }
    };
    let state = trace_state(&message.header, Some(&job.envelope.final_recipient));
    if state.looped {
        return Outcome::permanent(
            codes::ROUTING_LOOP,
            ExitCode::DataErr,
            format!("mail forwarding loop for {}", job.envelope.final_recipient),
        );
    }
    let mut trace = state;
    if !job.options.return_path {
        trace.has_return_path = true;
    }
    let return_path = format!("<{}>", job.envelope.sender.as_deref().unwrap_or(""));
    let mut prefix = trace_prefix(&trace, &return_path, Some(&job.envelope.final_recipient));
    if message.starts_with_body {
        prefix.push(b'\n');
    }
    let stored = Message {
        prefix,
        header: message.header,
        body: message.body,
    };
    if let Destination::Command { program, args } = job.destination {
        return command::run(&CommandJob {
            program,
            args,
            user: job.user,
            home: job.home,
            envelope: job.envelope,
            message: &stored,
            timeout: job.command_timeout,
        });
    }
    let Some(anchor) = anchor_for(&policy, &rule, job) else {
        return Outcome::temporary(
            codes::CONFIG_ERROR,
            format!("rule `{rule}` gives no directory to start the walk from"),
        );
    };
    write(job, &anchor, &stored)
}

fn refused(reason: &str) -> Outcome {
    Outcome::permanent(
        codes::DELIVERY_NOT_AUTHORIZED,
        ExitCode::NoPerm,
        format!("delivery not authorized by the destination policy: {reason}"),
    )
}

/// The system policy refined by the user's own file, when that file is safe.
fn refined_policy(job: &Job<'_>, log: &mut dyn FnMut(String)) -> Result<Policy, Outcome> {
    let path = Path::new(job.home).join(REFINEMENT);
    match read_refinement(&path, job.uid) {
        Ok(None) => Ok(job.system.clone()),
        Ok(Some(text)) => {
            let source = path.display().to_string();
            policy::parse_user(job.system, job.user, &text, &source).map_err(|e| {
                Outcome::temporary(
                    codes::CONFIG_ERROR,
                    format!("the user's policy refinement has errors: {e}"),
                )
            })
        }
        Err(why) => {
            log(format!(
                "ignoring {} of user {}: {why}",
                path.display(),
                job.user
            ));
            Ok(job.system.clone())
        }
    }
}

/// Reads the refinement file when it is safe: `Ok(None)` when there is none, `Err(why)`
/// when it exists but must be ignored.
pub fn read_refinement(path: &Path, uid: u32) -> Result<Option<String>, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        // ENOTDIR: ~/.config is a file; EACCES: not ours to read. Either way, no refinement.
        Err(nix::errno::Errno::ENOTDIR) => return Ok(None),
        Err(nix::errno::Errno::ELOOP) => return Err("it is a symbolic link".into()),
        Err(e) => return Err(format!("cannot open it: {}", e.desc())),
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.uid() != uid {
        return Err(format!("it is owned by uid {}, not the user", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "it is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    if meta.len() > MAX_REFINEMENT {
        return Err(format!("it is larger than {MAX_REFINEMENT} bytes"));
    }
    let mut text = String::new();
    file.take(MAX_REFINEMENT)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(Some(text))
}

/// The directory the walk starts from: the user's home for `~` rules (everything the user
/// controls is walked without symlinks), the rule's own directory for `/` rules when the
/// destination lies below it, else that directory's parent.
fn anchor_for(policy: &Policy, rule: &str, job: &Job<'_>) -> Option<MailPath> {
    let rule = policy.rules.iter().find(|r| r.name == rule)?;
    let target = job.destination.path();
    match rule.template.anchor {
        Anchor::Home => MailPath::parse(job.home).ok(),
        Anchor::Root => {
            let root = MailPath::parse("/").ok()?;
            let base = root
                .join(&rule.template.rest.replace("${user}", job.user))
                .ok()?;
            if target.is_strictly_below(&base) {
                Some(base)
            } else {
                base.parent()
            }
        }
    }
}

fn write(job: &Job<'_>, anchor: &MailPath, stored: &Message) -> Outcome {
    let (target, folder) = match job.destination {
        Destination::Maildir(path) => split_folder(path),
        _ => (job.destination.path().clone(), None),
    };
    let reached = match walk::reach(anchor, &target, job.options.create_folders) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::temporary(
                codes::MAILBOX_STATUS,
                format!("unsafe or missing mailbox path: {e}"),
            );
        }
    };
    #[cfg(test)]
    tests::between_walk_and_open();
    let through = reached.fd_path();
    let fsync = job.options.fsync;
    let sender = job.envelope.sender.as_deref();
    let result = match job.destination {
        Destination::Maildir(_) => {
            let opts = MaildirOptions {
                create: true,
                folder,
                autocreate_folder: job.options.create_folders,
                quota: None,
                flags: String::new(),
                fsync,
                fsync_directory: fsync,
            };
            deliver_maildir(&through, stored, &opts)
        }
        Destination::Mbox(_) => {
            let opts = MboxOptions {
                fsync,
                ..MboxOptions::default()
            };
            deliver_mbox(&through, sender, stored, &opts)
        }
        Destination::Mh(_) => {
            let opts = MhOptions {
                create: job.options.create_folders,
                fsync,
                lock_timeout: Duration::from_secs(60),
            };
            deliver_mh(&through, stored, &opts)
        }
        Destination::Command { .. } => {
            return Outcome::temporary(
                codes::SYSTEM_STATUS,
                "internal error: a command reached the mailbox writer",
            );
        }
    };
    let real = |text: String| text.replace(&reached.fd_prefix(), &reached.directory_path);
    match result {
        Ok(s) => Outcome::delivered(real(format!("delivered to {}", s.path.display()))),
        Err(e) => {
            let mut outcome = e.outcome();
            outcome.text = real(outcome.text);
            outcome
        }
    }
}

/// A maildir destination whose last component starts with `.` (`~/Maildir/.Lists.rust`) is
/// a Maildir++ folder of its parent: the walk goes to the parent (the maildir root), and the
/// folder is created there with its `maildirfolder` file, quota counted at the root.
fn split_folder(path: &MailPath) -> (MailPath, Option<FolderName>) {
    let name = path.components().last().unwrap_or("");
    if let Some(dotted) = name.strip_prefix('.')
        && !dotted.is_empty()
        && let Ok(folder) = FolderName::parse(dotted)
        && let Some(parent) = path.parent()
    {
        return (parent, Some(folder));
    }
    (path.clone(), None)
}

/// Reads the message from the descriptor with positional reads, so the MTA's file offset
/// is never moved; CRLF becomes LF and a leading `From ` line is dropped, as in
/// cursus-deliver.
fn read_message(file: &File) -> io::Result<ReadMessage> {
    let mut reader = PositionalReader::new(file);
    input::read_message(&mut reader, Path::new("/tmp"))
}

/// Reads a file from its start with `pread`, leaving the shared file offset alone.
pub struct PositionalReader<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> PositionalReader<'a> {
    pub fn new(file: &'a File) -> Self {
        PositionalReader { file, offset: 0 }
    }
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use cursus_mail::OutcomeKind;

    thread_local! {
        /// What a test does between the walk and the mailbox open: the race window of a
        /// mailbox swapped between check and open, made deterministic.
        static HOOK: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
    }

    pub(super) fn between_walk_and_open() {
        HOOK.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f();
            }
        });
    }

    fn me() -> (u32, String) {
        let uid = nix::unistd::geteuid();
        let name = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into());
        (uid.as_raw(), name)
    }

    /// A home with ~/mbox and ~/Maildir allowed for this process's own user (named, so
    /// that root may run it too), a file of the user's outside them (`x-own`, writable by
    /// the user: only the checks keep it safe), and a message.
    struct Home {
        dir: tempfile::TempDir,
        policy: Policy,
        message: File,
        user: String,
        uid: u32,
    }

    impl Home {
        fn new() -> Home {
            let dir = tempfile::tempdir().expect("tmp");
            let (uid, user) = me();
            let text = format!(
                "min_uid = 1000\n\
                 [[allow]]\nname = \"mbox\"\nkind = \"mbox\"\npath = \"~/mbox\"\nusers = [\"{user}\"]\n\
                 [[allow]]\nname = \"maildir\"\nkind = \"maildir\"\npath = \"~/Maildir\"\nsubtree = true\nusers = [\"{user}\"]\n"
            );
            let policy = policy::parse_system(&text, "test").expect("policy");
            fs::write(dir.path().join("x-own"), "the user's own file\n").expect("own");
            fs::set_permissions(dir.path().join("x-own"), fs::Permissions::from_mode(0o600))
                .expect("chmod");
            fs::create_dir(dir.path().join("x-own-dir")).expect("own dir");
            fs::write(dir.path().join("msg"), "From: a@example.org\n\nbody\n").expect("msg");
            let message = File::open(dir.path().join("msg")).expect("open");
            Home {
                dir,
                policy,
                message,
                user,
                uid,
            }
        }

        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }

        fn deliver(&self, destination: &str) -> Outcome {
            let home = self.dir.path().to_str().expect("utf8");
            let destination: Destination =
                destination.replace("~", home).parse().expect("destination");
            let envelope = Envelope {
                sender: Some("a@example.org".into()),
                original_recipient: "u@example.org".into(),
                final_recipient: "u@example.org".into(),
                extension: None,
            };
            let job = Job {
                user: &self.user,
                uid: self.uid,
                home,
                system: &self.policy,
                destination: &destination,
                envelope: &envelope,
                options: DeliverOptions {
                    fsync: false,
                    create_folders: false,
                    return_path: true,
                },
                message: &self.message,
                command_timeout: Duration::from_secs(5),
            };
            deliver(&job, &mut |_| {})
        }
    }

    fn with_hook<T>(hook: impl FnMut() + 'static, run: impl FnOnce() -> T) -> T {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
        let result = run();
        HOOK.with(|h| *h.borrow_mut() = None);
        result
    }

    /// The policy check and the walk have passed for ~/mbox, a single-link file the user
    /// owns; then, before the open, the user swaps ~/mbox for a symlink to a file they can
    /// write outside the allowed destination. The open must not follow it.
    #[test]
    fn an_mbox_swapped_for_a_symlink_between_walk_and_open_is_refused() {
        let home = Home::new();
        fs::write(home.path("mbox"), "").expect("mbox");
        let before = fs::read(home.path("x-own")).expect("read");
        let (mbox, real, victim) = (
            home.path("mbox"),
            home.path("mbox.real"),
            home.path("x-own"),
        );
        let mut swaps = 0;
        let o = with_hook(
            move || {
                fs::rename(&mbox, &real).expect("rename");
                symlink(&victim, &mbox).expect("ln");
                swaps += 1;
                assert_eq!(swaps, 1);
            },
            || home.deliver("mbox:~/mbox"),
        );
        assert_ne!(o.kind, OutcomeKind::Delivered, "{}", o.text);
        assert!(o.text.contains("symbolic link"), "{}", o.text);
        assert_eq!(fs::read(home.path("x-own")).expect("read"), before);
        assert_eq!(fs::read(home.path("mbox.real")).expect("read"), b"");
        // Without the swap the same delivery lands: the window was the only difference.
        fs::remove_file(home.path("mbox")).expect("rm");
        fs::rename(home.path("mbox.real"), home.path("mbox")).expect("mv");
        let o = home.deliver("mbox:~/mbox");
        assert_eq!(o.kind, OutcomeKind::Delivered, "{}", o.text);
    }

    /// The same window for a Maildir: its new/ (or the Maildir itself) swapped for a
    /// symlink to a directory the user can write.
    #[test]
    fn a_maildir_or_its_new_swapped_for_a_symlink_between_walk_and_open_is_refused() {
        for swapped in ["Maildir/new", "Maildir"] {
            let home = Home::new();
            for d in ["Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] {
                fs::create_dir(home.path(d)).expect("mkdir");
            }
            let (name, aside, victim) = (
                home.path(swapped),
                home.path("swapped-aside"),
                home.path("x-own-dir"),
            );
            let o = with_hook(
                move || {
                    fs::rename(&name, &aside).expect("rename");
                    symlink(&victim, &name).expect("ln");
                },
                || home.deliver("maildir:~/Maildir"),
            );
            assert!(home.path("swapped-aside").is_dir(), "the swap did not run");
            assert_ne!(o.kind, OutcomeKind::Delivered, "{swapped}: {}", o.text);
            assert!(o.text.contains("symbolic link"), "{swapped}: {}", o.text);
            assert_eq!(
                fs::read_dir(home.path("x-own-dir")).expect("ls").count(),
                0,
                "{swapped}: written through the symlink"
            );
        }
    }

    #[test]
    fn read_refinement_reads_only_a_safe_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let (uid, _) = me();
        let path = |n: &str| dir.path().join(n);
        let safe = path("safe");
        fs::write(&safe, "remove = []\n").expect("write");
        fs::set_permissions(&safe, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_refinement(&safe, uid),
            Ok(Some("remove = []\n".to_string()))
        );
        assert_eq!(read_refinement(&path("missing"), uid), Ok(None));
        // ~/.config is a file, not a directory: no refinement either.
        assert_eq!(read_refinement(&safe.join("below"), uid), Ok(None));

        let writable = path("writable");
        fs::write(&writable, "").expect("write");
        fs::set_permissions(&writable, fs::Permissions::from_mode(0o620)).expect("chmod");
        symlink(&safe, path("link")).expect("ln");
        nix::unistd::mkfifo(
            &path("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        fs::create_dir(path("dir")).expect("mkdir");
        let big = path("big");
        fs::write(&big, vec![b'#'; MAX_REFINEMENT as usize + 1]).expect("write");
        fs::set_permissions(&big, fs::Permissions::from_mode(0o600)).expect("chmod");
        let cases: &[(&std::path::Path, u32, &str)] = &[
            (&safe, uid.wrapping_add(1), "owned by uid"),
            (&writable, uid, "writable by group or others (mode 620)"),
            (&path("link"), uid, "symbolic link"),
            // Opened O_NONBLOCK: a FIFO without a writer does not hang the child.
            (&path("fifo"), uid, "not a regular file"),
            (&path("dir"), uid, "not a regular file"),
            (&big, uid, &format!("larger than {MAX_REFINEMENT} bytes")),
        ];
        for (file, uid, why) in cases {
            match read_refinement(file, *uid) {
                Err(got) => assert!(got.contains(why), "{}: {got}", file.display()),
                other => panic!("{}: {other:?}", file.display()),
            }
        }
    }
}
