//! Sieve filtering of one delivery: finding the scripts (administrator scripts before and
//! after the user's active script), reading them, running them in sequence over the message,
//! and reporting script errors where the user can see them.
//!
//! Trusts the user's script as the user's own wish (we run as the user; a script can only
//! do to the user's mail what the user could) and the administrator's scripts only when
//! root or we own them and nobody else can write them. Never fails a delivery: a script that
//! cannot be read, compiled or run stops the sequence, and the message is kept (implicit
//! keep) with the error written to `SCRIPT.log` beside the user's script (as Pigeonhole
//! writes ~/.dovecot.sieve.log) and into the outcome line.
//!
//! Attacks stopped:
//! - An administrator script someone else can write would let them redirect every user's
//!   mail: refused unless owned by root (or us) and not group/other writable.
//! - A script path that is a FIFO or a device (`~/.dovecot.sieve -> /dev/zero`) would hang
//!   or exhaust the delivery: opened non-blocking, must be a regular file, read is bounded
//!   (the checks live in `cursus_mailbox::read_user_file`, shared with cursus-lda).
//! - A message of any size is evaluated from a bounded copy ([`EVALUATION_LIMIT`]).
//! - The log is bounded: past [`LOG_LIMIT`] it is rotated to `SCRIPT.log.0`; it is opened
//!   O_NOFOLLOW, so a planted symlink cannot make us append to another file.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cursus_mailbox::Message;
use cursus_sieve::{Action, Config, Envelope as SieveEnvelope, compile, evaluate};

use crate::config::Settings;
use crate::sieve_host::MdaHost;

/// The largest copy of a message scripts see; past it the body is cut (header intact).
pub const EVALUATION_LIMIT: usize = 10 << 20;
/// The largest script file read.
pub const SCRIPT_LIMIT: usize = 1 << 20;
/// The user's script log is rotated past this size.
pub const LOG_LIMIT: u64 = 64 << 10;

/// Who must own a script file: the user's own script is any file the user can read;
/// an administrator's must belong to root or us and be writable by nobody else.
pub use cursus_mailbox::FileTrust as ScriptTrust;

/// Where a script sits in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Before,
    User,
    After,
}

/// One script to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptFile {
    pub path: PathBuf,
    pub role: Role,
}

/// The scripts of one delivery, in the order they run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptSet {
    pub scripts: Vec<ScriptFile>,
}

impl ScriptSet {
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }
}

/// Finds the scripts: `sieve_before`, the user's active script, `sieve_after`. `home` is
/// the recipient's home when we run as the recipient. The user's script is
/// `~/.dovecot.sieve` (usually a symlink into ~/sieve/) unless `sieve` says otherwise;
/// a missing file is no script.
pub fn find(settings: &Settings, home: Option<&Path>) -> ScriptSet {
    let mut scripts: Vec<ScriptFile> = settings
        .sieve_before
        .iter()
        .map(|p| ScriptFile {
            path: p.clone(),
            role: Role::Before,
        })
        .collect();
    let user = match settings.sieve.as_deref() {
        Some("") => None,
        None => home.map(|h| h.join(cursus_front::plan::USER_SCRIPT)),
        Some(p) => match p.strip_prefix("~/") {
            Some(rel) => home.map(|h| h.join(rel)),
            None => Some(PathBuf::from(p)),
        },
    };
    if let Some(path) = user.filter(|p| p.exists()) {
        scripts.push(ScriptFile {
            path,
            role: Role::User,
        });
    }
    scripts.extend(settings.sieve_after.iter().map(|p| ScriptFile {
        path: p.clone(),
        role: Role::After,
    }));
    ScriptSet { scripts }
}

/// Reads a script file: `Ok(None)` when it does not exist. The checks (and the attacks
/// they stop) are cursus-mailbox's [`cursus_mailbox::read_user_file`], shared with the LDA.
pub fn read_script(path: &Path, trust: ScriptTrust) -> Result<Option<Vec<u8>>, String> {
    cursus_mailbox::read_user_file(path, trust, SCRIPT_LIMIT).map_err(|e| e.to_string())
}

/// The bytes scripts evaluate: trace prefix, header, and the body up to the limit.
/// Returns whether the body was cut.
pub fn evaluation_bytes(message: &Message, limit: usize) -> (Vec<u8>, bool) {
    struct Capped<'a> {
        out: &'a mut Vec<u8>,
        room: usize,
    }
    impl Write for Capped<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::other("evaluation copy full"));
            }
            let n = buf.len().min(self.room);
            self.out.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut out = Vec::with_capacity(
        (message.size() as usize).min(limit) + message.prefix.len() + message.header.len(),
    );
    out.extend_from_slice(&message.prefix);
    out.extend_from_slice(&message.header);
    let room = limit.saturating_sub(out.len());
    let cut = message.body.len() > room as u64;
    let mut capped = Capped {
        out: &mut out,
        room,
    };
    // The copy stops with an error once full; what was copied is what we want.
    let _ = message.body.copy_to(&mut capped);
    (out, cut)
}

/// One action a script took, with the message it applies to when editheader changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub action: Action,
    /// The edited message (as the interpreter returned it) for this action.
    pub edited: Option<Vec<u8>>,
}

/// What the script sequence decided.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Explicit actions of all scripts in order, then the final keep if there is one.
    pub actions: Vec<Taken>,
    /// Things worth saying in the outcome line.
    pub notes: Vec<String>,
    /// A script failed; the message is kept.
    pub failed: bool,
}

/// What every script is run with.
#[derive(Debug)]
pub struct Run<'a> {
    pub config: &'a Config,
    pub envelope: &'a SieveEnvelope,
    pub message: &'a [u8],
    /// A timestamp for log lines.
    pub log_time: &'a str,
    /// Identifies the message in log lines (its Message-ID, else the sender).
    pub log_id: &'a str,
}

/// Runs the sequence. Each script sees the message as delivered to us; a script whose
/// result keeps the message (implicitly or explicitly) passes it on to the next one, and
/// its keep is replaced by the next script's decision; a script that cancels the keep
/// (fileinto, redirect, discard, reject) ends the sequence (Pigeonhole's multiscript
/// rule). Explicit actions of all scripts that ran accumulate. A failure ends the sequence
/// with a keep.
pub fn run(set: &ScriptSet, host: &mut MdaHost<'_>, input: &Run<'_>) -> Evaluation {
    let implicit_keep = || Taken {
        action: Action::Keep {
            flags: Vec::new(),
            implicit: true,
            message: None,
        },
        edited: None,
    };
    let mut eval = Evaluation::default();
    // Before any script runs (or when every script is missing) the message is kept.
    let mut keep = Some(implicit_keep());
    for script in &set.scripts {
        let marks_before = host.marks.len();
        let debug_before = host.debug.len();
        let trust = if script.role == Role::User {
            ScriptTrust::User
        } else {
            ScriptTrust::Administrator
        };
        let errors: Vec<String> = match read_script(&script.path, trust) {
            Ok(None) => {
                if script.role != Role::User {
                    eval.notes.push(format!(
                        "sieve: {} does not exist; skipped",
                        script.path.display()
                    ));
                }
                continue;
            }
            Err(e) => vec![e],
            Ok(Some(source)) => match compile(&source, input.config) {
                Err(errs) => errs
                    .0
                    .iter()
                    .take(20)
                    .map(|e| format!("{}:{e}", script.path.display()))
                    .collect(),
                Ok(compiled) => {
                    match evaluate(&compiled, input.config, host, input.envelope, input.message) {
                        Err(e) => vec![format!("{}:{e}", script.path.display())],
                        Ok(outcome) => {
                            if script.role == Role::User {
                                write_debug(&script.path, &host.debug[debug_before..], input);
                            }
                            keep = None;
                            for action in &outcome.actions {
                                let taken = Taken {
                                    action: action.clone(),
                                    edited: message_index(action)
                                        .and_then(|n| outcome.edited_messages.get(n).cloned()),
                                };
                                if matches!(action, Action::Keep { .. }) {
                                    keep = Some(taken);
                                } else {
                                    eval.actions.push(taken);
                                }
                            }
                            if keep.is_none() {
                                break;
                            }
                            continue;
                        }
                    }
                }
            },
        };
        // The script failed: its duplicate marks are void and the message is kept.
        host.marks.truncate(marks_before);
        eval.failed = true;
        let first = errors.first().cloned().unwrap_or_default();
        if script.role == Role::User {
            // The details are in SCRIPT.log; the outcome line names the first error.
            eval.notes
                .push(match append_log(&script.path, &errors, input) {
                    Ok(_) => format!("sieve error, message kept: {first}"),
                    Err(e) => format!("sieve error, message kept: {first} (log not written: {e})"),
                });
        } else {
            eval.notes
                .push(format!("sieve error, message kept: {first}"));
        }
        keep = Some(implicit_keep());
        break;
    }
    eval.actions.extend(keep);
    eval
}

fn message_index(action: &Action) -> Option<usize> {
    match action {
        Action::Keep { message, .. }
        | Action::FileInto { message, .. }
        | Action::Redirect { message, .. } => *message,
        _ => None,
    }
}

/// `SCRIPT.log` beside a script.
pub fn log_path(script: &Path) -> PathBuf {
    let mut name = script.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

/// Appends the errors of one run to the user's script log, rotating it past
/// [`LOG_LIMIT`]. Returns the log's path.
fn append_log(script: &Path, errors: &[String], input: &Run<'_>) -> io::Result<PathBuf> {
    let mut text = format!(
        "{} {}: script failed, message {} kept in INBOX\n",
        input.log_time,
        script.display(),
        input.log_id
    );
    for e in errors {
        text.push_str(&format!("{} error: {}\n", input.log_time, one_line(e)));
    }
    write_log(&log_path(script), text.as_bytes())
}

fn write_debug(script: &Path, lines: &[String], input: &Run<'_>) {
    if lines.is_empty() {
        return;
    }
    let mut text = String::new();
    for l in lines {
        text.push_str(&format!(
            "{} {}: debug: {}\n",
            input.log_time,
            script.display(),
            one_line(l)
        ));
    }
    let _ = write_log(&log_path(script), text.as_bytes());
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect()
}

fn write_log(path: &Path, text: &[u8]) -> io::Result<PathBuf> {
    let open = || {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)
    };
    let mut file: File = open()?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() + text.len() as u64 > LOG_LIMIT {
        let mut old = path.as_os_str().to_owned();
        old.push(".0");
        std::fs::rename(path, PathBuf::from(old))?;
        file = open()?;
    }
    file.write_all(text)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cursus_mailbox::Spooled;
    use cursus_sieve::DateTime;

    fn message(body: &[u8]) -> Message {
        Message {
            prefix: b"Return-Path: <a@b>\nDelivered-To: joe@example.net\n".to_vec(),
            header: b"Subject: x\n\n".to_vec(),
            body: Spooled::from_bytes(body.to_vec()),
        }
    }

    #[test]
    fn evaluation_copy_is_bounded() {
        let m = message(&[b'y'; 1000]);
        let (all, cut) = evaluation_bytes(&m, 10 << 20);
        assert!(!cut);
        assert_eq!(all.len() as u64, m.size());
        let (part, cut) = evaluation_bytes(&m, 200);
        assert!(cut);
        assert_eq!(part.len(), 200);
        assert!(
            part.starts_with(
                b"Return-Path: <a@b>\nDelivered-To: joe@example.net\nSubject: x\n\nyyy"
            )
        );
    }

    fn settings() -> Settings {
        Settings::default()
    }

    #[test]
    fn scripts_are_found_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path();
        let mut s = settings();
        assert!(find(&s, Some(home)).is_empty());
        std::fs::create_dir(home.join("sieve")).expect("mkdir");
        std::fs::write(home.join("sieve/main.sieve"), "keep;").expect("write");
        std::os::unix::fs::symlink("sieve/main.sieve", home.join(".dovecot.sieve")).expect("ln");
        s.sieve_before = vec!["/b1".into(), "/b2".into()];
        s.sieve_after = vec!["/a1".into()];
        let found = find(&s, Some(home));
        let roles: Vec<_> = found
            .scripts
            .iter()
            .map(|f| (f.path.clone(), f.role))
            .collect();
        assert_eq!(
            roles,
            vec![
                (PathBuf::from("/b1"), Role::Before),
                (PathBuf::from("/b2"), Role::Before),
                (home.join(".dovecot.sieve"), Role::User),
                (PathBuf::from("/a1"), Role::After),
            ]
        );
        s.sieve = Some(String::new());
        assert_eq!(
            find(&s, Some(home)).scripts.len(),
            3,
            "sieve = \"\" turns it off"
        );
        s.sieve = Some("~/sieve/main.sieve".into());
        assert_eq!(
            find(&s, Some(home)).scripts[2].path,
            home.join("sieve/main.sieve")
        );
        assert_eq!(find(&s, None).scripts.len(), 3, "no home, no ~ script");
    }

    #[test]
    fn unreadable_kinds_of_script_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            read_script(&dir.path().join("none"), ScriptTrust::User),
            Ok(None)
        );
        assert!(
            read_script(dir.path(), ScriptTrust::User).is_err(),
            "directory"
        );
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        assert!(
            read_script(&fifo, ScriptTrust::User).is_err(),
            "a FIFO must not hang us"
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; SCRIPT_LIMIT + 1]).expect("write");
        assert!(read_script(&big, ScriptTrust::User).is_err());
        let loose = dir.path().join("loose.sieve");
        std::fs::write(&loose, "keep;").expect("write");
        std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod");
        assert!(read_script(&loose, ScriptTrust::Administrator).is_err());
        assert!(read_script(&loose, ScriptTrust::User).is_ok());
    }

    fn run_sources(sources: &[(&str, Role)]) -> (tempfile::TempDir, Evaluation) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut set = ScriptSet::default();
        for (i, (src, role)) in sources.iter().enumerate() {
            let p = dir.path().join(format!("s{i}.sieve"));
            std::fs::write(&p, src).expect("write");
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .expect("chmod");
            set.scripts.push(ScriptFile {
                path: p,
                role: *role,
            });
        }
        let now = DateTime {
            timestamp: 0,
            offset: 0,
        };
        let memory = crate::vacation::MemoryCell::new(None, 0);
        let mut host = MdaHost::new(None, None, None, &memory, now, "joe@example.net", "h");
        let config = Config::default();
        let envelope = SieveEnvelope {
            from: "alice@example.org".into(),
            to: "joe@example.net".into(),
            ..SieveEnvelope::default()
        };
        let input = Run {
            config: &config,
            envelope: &envelope,
            message: b"From: alice@example.org\nSubject: hi\n\nbody\n",
            log_time: "T",
            log_id: "<1@x>",
        };
        let eval = run(&set, &mut host, &input);
        (dir, eval)
    }

    fn names(eval: &Evaluation) -> Vec<&'static str> {
        eval.actions.iter().map(|t| t.action.name()).collect()
    }

    #[test]
    fn keep_passes_the_message_on_and_a_cancel_ends_the_sequence() {
        let (_d, e) = run_sources(&[
            (
                "require [\"fileinto\", \"copy\"]; fileinto :copy \"A\";",
                Role::Before,
            ),
            ("require \"fileinto\"; fileinto \"B\";", Role::User),
            ("require \"fileinto\"; fileinto \"C\";", Role::After),
        ]);
        assert_eq!(
            names(&e),
            vec!["store", "store"],
            "{:?} {:?}",
            e.actions,
            e.notes
        );
        assert!(!e.failed);
        let (_d, e) = run_sources(&[("keep;", Role::Before), ("discard;", Role::User)]);
        assert_eq!(names(&e), vec!["discard"]);
        let (_d, e) = run_sources(&[("keep;", Role::Before), ("keep;", Role::User)]);
        assert_eq!(names(&e), vec!["keep"], "one keep, not two");
    }

    #[test]
    fn a_broken_user_script_keeps_and_logs_line_and_column() {
        let (dir, e) = run_sources(&[
            (
                "require [\"fileinto\", \"copy\"];\nfileinto :copy \"A\";",
                Role::Before,
            ),
            ("require \"fileinto\";\nfileinot \"B\";\n", Role::User),
        ]);
        assert!(e.failed);
        assert_eq!(names(&e), vec!["store", "keep"]);
        let log = std::fs::read_to_string(dir.path().join("s1.sieve.log")).expect("log");
        assert!(log.contains("s1.sieve:2:1"), "{log}");
        assert!(
            e.notes.iter().any(|n| n.contains("s1.sieve:2:1")),
            "{:?}",
            e.notes
        );
    }

    #[test]
    fn the_log_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.log");
        let line = vec![b'x'; 1000];
        for _ in 0..200 {
            write_log(&p, &line).expect("write");
        }
        assert!(std::fs::metadata(&p).expect("stat").len() <= LOG_LIMIT);
        assert!(dir.path().join("x.log.0").exists());
    }
}
