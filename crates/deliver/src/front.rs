//! The front of cursus-deliver: the common delivery made at once, everything else handed
//! to cursus-deliver-full.
//!
//! cursus-deliver is started once per message, so its start-up is part of every delivery.
//! The `cursus-deliver` binary is therefore this small front: it links no argument parser,
//! no TOML, no Sieve interpreter, no SQLite and no time-zone code, asks the user database
//! nothing (so it can be linked statically), and delivers the common case itself: an
//! ordinary user's message into a Maildir (`~/Maildir` or `--maildir DIR`) with `-f`, `-a`,
//! `-r`, an empty `-m`, `-e`, `-k`, `-v`, no configuration file, no Sieve script and no
//! `maildirsize`. It decides before it reads a byte of the message. Anything else (`-d`,
//! `-c`, `-o`, `-p`, a folder, mbox or MH, root, `--help`, an unknown or repeated option, a
//! missing HOME or USER, a configuration file, a script, a quota) goes to
//! `cursus-deliver-full`, executed from the directory of our own executable
//! (`/proc/self/exe`), never through PATH or the environment, with argv, environment and
//! standard input untouched.
//!
//! The common case runs through the same library functions as the full program, with the
//! same default settings (`delivery.rs`: reading, size limit, envelope, trace headers and
//! the Delivered-To loop check, Maildir options, outcome), so both store the same bytes and
//! answer with the same line and exit code; `tests/front.rs` runs the two side by side.
//!
//! Trusts the same things as the full program: argv, environment and message are hostile.
//! Fails like it: every path ends in an [`Outcome`]; when cursus-deliver-full cannot be
//! executed, 4.3.5 (exit 75) naming the path where it was expected.
//!
//! Attacks stopped:
//! - A program of the user's own run with an installation's privileges: a set-user-ID or
//!   set-group-ID front, hard-linked into a directory next to a planted
//!   `cursus-deliver-full`, would execute it with those privileges. The installation check
//!   (`delivery::installation_refusal`) runs first and refuses before anything is executed.
//! - A planted `cursus-deliver-full` earlier in PATH, or a path in the environment: the
//!   program is found only beside our own executable.
//! - A request the front would read differently from the full program's parser (`-fX`,
//!   `-f=X`, `-f -a X`, a repeated option, bytes that are not UTF-8): not the common case,
//!   so the full program's parser decides, and refuses what it refuses.

use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cursus_mail::{Outcome, codes};
use cursus_mailbox::deliver_maildir;
use cursus_mailbox::quota::MAILDIRSIZE;
use nix::errno::Errno;

use crate::config::{self, Settings};
use crate::delivery::{
    Envelope, EnvelopeArgs, StoreRequest, add_trace, check_size, maildir_options, read_input,
    spill_dir, stored_outcome,
};
use crate::destination::{self, Destination, TemplateValues};
use crate::filter;

/// The full program, installed in the same directory as `cursus-deliver`.
pub const FULL_PROGRAM: &str = "cursus-deliver-full";

/// A command line of the common case: what the front understands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommonArgs<'a> {
    pub envelope: EnvelopeArgs<'a>,
    /// `--maildir DIR` (absolute), else the default destination.
    pub maildir: Option<&'a Path>,
    /// `-v`/`--verbose`: the outcome line on success too.
    pub verbose: bool,
}

/// Reads the arguments (argv without argv[0]) when they are the common case: each option
/// at most once, a value as the next argument (or `--maildir=DIR`), UTF-8, not starting
/// with `-`. `None` means the full program's parser must decide (anything else, including
/// forms it accepts such as `-fX`, and every usage error).
pub fn parse_args(args: &[OsString]) -> Option<CommonArgs<'_>> {
    let mut out = CommonArgs::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut once = |name: &'static str| {
        if seen.contains(&name) {
            return None;
        }
        seen.push(name);
        Some(())
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let arg = arg.to_str()?;
        let mut value = || {
            rest.next()
                .and_then(|v| v.to_str())
                .filter(|v| !v.starts_with('-'))
        };
        match arg {
            "-f" => {
                once("-f")?;
                out.envelope.sender = Some(value()?);
            }
            "-a" => {
                once("-a")?;
                out.envelope.original_recipient = Some(value()?);
            }
            "-r" => {
                once("-r")?;
                out.envelope.final_recipient = Some(value()?);
            }
            // `-m ${extension}` with no extension: INBOX. A folder is the full program's.
            "-m" => {
                once("-m")?;
                if !value()?.is_empty() {
                    return None;
                }
            }
            "-e" => once("-e")?,
            "-k" => once("-k")?,
            "-v" | "--verbose" => {
                once("-v")?;
                out.verbose = true;
            }
            "--maildir" => {
                once("--maildir")?;
                out.maildir = Some(maildir_value(value()?)?);
            }
            other => {
                let dir = other.strip_prefix("--maildir=")?;
                once("--maildir")?;
                out.maildir = Some(maildir_value(dir)?);
            }
        }
    }
    Some(out)
}

fn maildir_value(dir: &str) -> Option<&Path> {
    Some(Path::new(dir)).filter(|p| p.is_absolute())
}

/// A delivery the front makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    pub envelope: EnvelopeArgs<'a>,
    pub verbose: bool,
    /// The Maildir, as the full program would choose it.
    pub maildir: PathBuf,
    /// USER (else LOGNAME), as the full program names the recipient.
    pub recipient_name: String,
    /// Where a large message spills while it is read.
    pub spill_dir: PathBuf,
}

/// Decides whether the common case holds, before any input is read. `root` is whether we
/// run as uid 0; `getenv` reads one environment variable; `present` says whether anything
/// is at a path ([`present`]). `None`: hand the request to the full program.
///
/// The conditions mirror the full program's steps for this request, so that under them it
/// would do nothing but what [`deliver`] does: no system or user configuration file (the
/// default settings hold); the recipient named by USER or LOGNAME and the home by an
/// absolute HOME (no user database lookup); the default destination `maildir:~/Maildir`
/// (or `--maildir`); no Sieve script as `filter::find` looks for them; no `maildirsize`
/// (quotas are the full program's).
pub fn plan<'a>(
    args: CommonArgs<'a>,
    settings: &Settings,
    root: bool,
    getenv: &dyn Fn(&str) -> Option<OsString>,
    present: &dyn Fn(&Path) -> bool,
) -> Option<Plan<'a>> {
    if root {
        return None;
    }
    // As user::resolve_recipient reads them: USER, else LOGNAME, and not empty.
    let name = getenv("USER").or_else(|| getenv("LOGNAME"))?;
    let recipient_name = name.into_string().ok().filter(|n| !n.is_empty())?;
    let home = PathBuf::from(getenv("HOME")?.into_string().ok()?);
    if !home.is_absolute() {
        return None;
    }
    if present(Path::new(config::SYSTEM_CONFIG)) || present(&config::user_config_path(&home)) {
        return None;
    }
    let maildir = match args.maildir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let values = TemplateValues {
                user: &recipient_name,
                home: Some(&home),
            };
            match destination::expand(&settings.destination, &values) {
                Ok(Destination::Maildir(dir)) => dir,
                _ => return None,
            }
        }
    };
    if !filter::find(settings, Some(&home)).is_empty() || present(&maildir.join(MAILDIRSIZE)) {
        return None;
    }
    let lossy = |k: &str| lossy_env(&getenv, k);
    Some(Plan {
        envelope: args.envelope,
        verbose: args.verbose,
        maildir,
        recipient_name,
        spill_dir: spill_dir(&lossy),
    })
}

/// The common delivery: the full program's steps 5 to 8 with the default settings. Reads
/// `input` to EOF.
pub fn deliver(
    plan: &Plan<'_>,
    settings: &Settings,
    getenv: &dyn Fn(&str) -> Option<String>,
    input: &mut dyn Read,
) -> Outcome {
    let message = match read_input(input, &plan.spill_dir).and_then(|m| check_size(m, settings)) {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };
    let envelope = Envelope::gather(
        &plan.envelope,
        getenv,
        message.from_line_sender.as_deref(),
        &plan.recipient_name,
    );
    let message = match add_trace(message, &envelope) {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };
    let written = deliver_maildir(
        &plan.maildir,
        &message,
        &maildir_options(settings, &StoreRequest::default()),
    );
    stored_outcome(written, None, settings)
}

/// An environment variable decoded as the full program decodes its environment.
pub fn lossy_env(getenv: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Option<String> {
    getenv(name).map(|v| v.to_string_lossy().into_owned())
}

/// Whether anything is at `path`, a dangling symlink included; an error other than "no
/// such file" (EACCES, ENOTDIR) counts as present, so the full program reports it.
pub fn present(path: &Path) -> bool {
    !matches!(nix::sys::stat::lstat(path), Err(Errno::ENOENT))
}

/// Where the full program must be: beside our own executable.
pub fn full_program() -> Result<PathBuf, Outcome> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| hand_over_failure(Path::new("/proc/self/exe"), &e.to_string()))?;
    Ok(exe
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join(FULL_PROGRAM))
}

/// Executes cursus-deliver-full with our argv (argv[0] included) and environment; standard
/// input is untouched. Returns only when that failed: 4.3.5, exit 75.
pub fn hand_over(argv: &[OsString]) -> Outcome {
    let path = match full_program() {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return hand_over_failure(&path, "the path contains a NUL byte");
    };
    // argv strings come from the kernel's NUL-terminated array: they hold no NUL.
    let c_args: Vec<CString> = argv
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    match nix::unistd::execv(&c_path, &c_args) {
        Err(e) => hand_over_failure(&path, e.desc()),
        Ok(never) => match never {},
    }
}

/// The outcome when the full program cannot be executed: a broken installation, so the
/// MTA keeps the message and retries (4.3.5, exit 75).
pub fn hand_over_failure(path: &Path, why: &str) -> Outcome {
    Outcome::temporary(
        codes::CONFIG_ERROR,
        format!(
            "cannot run {}: {why}; install {FULL_PROGRAM} beside cursus-deliver",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn common_command_lines_are_understood() {
        let cases: &[(&[&str], CommonArgs<'_>)] = &[
            (&[], CommonArgs::default()),
            (
                &["-f", "a@b", "-a", "u+x@h", "-m", "", "-e", "-k"],
                CommonArgs {
                    envelope: EnvelopeArgs {
                        sender: Some("a@b"),
                        original_recipient: Some("u+x@h"),
                        final_recipient: None,
                    },
                    ..CommonArgs::default()
                },
            ),
            (
                &["-f", "", "-r", "u@h", "--maildir", "/m/d", "--verbose"],
                CommonArgs {
                    envelope: EnvelopeArgs {
                        sender: Some(""),
                        original_recipient: None,
                        final_recipient: Some("u@h"),
                    },
                    maildir: Some(Path::new("/m/d")),
                    verbose: true,
                },
            ),
            (
                &["--maildir=/m", "-v"],
                CommonArgs {
                    maildir: Some(Path::new("/m")),
                    verbose: true,
                    ..CommonArgs::default()
                },
            ),
        ];
        for (argv, want) in cases {
            let argv = os(argv);
            assert_eq!(parse_args(&argv), Some(*want), "{argv:?}");
        }
    }

    #[test]
    fn anything_else_goes_to_the_full_program() {
        for argv in [
            &["-d", "joe"][..],
            &["-c", "/etc/x.toml"],
            &["-o", "fsync=none"],
            &["-p", "/tmp/msg"],
            &["-m", "Lists"],
            &["-m", "INBOX"],
            &["--mbox", "/var/mail/joe"],
            &["--mh", "/m"],
            &["--help"],
            &["-h"],
            &["--version"],
            &["-V"],
            &["--no-such-flag"],
            &["-x"],
            &["joe"],
            &["--"],
            // forms clap reads but the front does not
            &["-fa@b"],
            &["-f=a@b"],
            &["-ev"],
            // OpenSMTPD's quoting pitfall and other values that look like options
            &["-f", "-a", "x"],
            &["-f", "-"],
            &["-f"],
            &["-f", "a", "-f", "b"],
            &["-v", "--verbose"],
            &["-e", "-e"],
            &["--maildir", "relative/dir"],
            &["--maildir", ""],
            &["--maildir="],
            &["--maildir", "/a", "--maildir=/b"],
            &["--verbose=yes"],
        ] {
            assert_eq!(parse_args(&os(argv)), None, "{argv:?}");
        }
        use std::os::unix::ffi::OsStringExt;
        let not_utf8 = vec![
            OsString::from("-f"),
            OsString::from_vec(b"a\xff@b".to_vec()),
        ];
        assert_eq!(parse_args(&not_utf8), None);
    }

    /// A process's surroundings: its environment and the paths where something is.
    struct World {
        env: HashMap<&'static str, String>,
        files: Vec<PathBuf>,
    }

    impl World {
        fn new(home: &Path) -> World {
            World {
                env: HashMap::from([
                    ("USER", "joe".to_string()),
                    ("HOME", home.display().to_string()),
                ]),
                files: Vec::new(),
            }
        }

        fn plan(&self, args: CommonArgs<'static>, root: bool) -> Option<Plan<'static>> {
            let getenv = |k: &str| self.env.get(k).map(OsString::from);
            let present = |p: &Path| self.files.iter().any(|f| f == p);
            plan(args, &Settings::default(), root, &getenv, &present)
        }
    }

    #[test]
    fn the_common_case_needs_a_plain_environment() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let mut w = World::new(h);
        let p = w.plan(CommonArgs::default(), false).expect("common case");
        assert_eq!(p.maildir, h.join("Maildir"));
        assert_eq!(p.recipient_name, "joe");
        assert_eq!(p.spill_dir, PathBuf::from("/tmp"));
        assert!(w.plan(CommonArgs::default(), true).is_none(), "root");
        let args = CommonArgs {
            maildir: Some(Path::new("/srv/mail/joe")),
            ..CommonArgs::default()
        };
        assert_eq!(
            w.plan(args, false).expect("--maildir").maildir,
            PathBuf::from("/srv/mail/joe")
        );

        w.env.insert("TMPDIR", "/var/tmp".into());
        let p = w.plan(CommonArgs::default(), false).expect("common case");
        assert_eq!(p.spill_dir, PathBuf::from("/var/tmp"));

        // LOGNAME stands in for USER; an empty USER does not fall back to it (the full
        // program then asks the user database).
        w.env.remove("USER");
        w.env.insert("LOGNAME", "joe2".into());
        assert_eq!(
            w.plan(CommonArgs::default(), false)
                .expect("LOGNAME")
                .recipient_name,
            "joe2"
        );
        w.env.insert("USER", String::new());
        assert!(w.plan(CommonArgs::default(), false).is_none(), "USER empty");
        w.env.remove("USER");
        w.env.remove("LOGNAME");
        assert!(w.plan(CommonArgs::default(), false).is_none(), "no USER");

        let mut w = World::new(h);
        w.env.insert("HOME", "relative".into());
        assert!(
            w.plan(CommonArgs::default(), false).is_none(),
            "HOME relative"
        );
        w.env.remove("HOME");
        assert!(w.plan(CommonArgs::default(), false).is_none(), "no HOME");
    }

    #[test]
    fn configuration_scripts_and_quota_go_to_the_full_program() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        for file in [
            PathBuf::from("/etc/cursus/deliver.toml"),
            h.join(".config/cursus/deliver.toml"),
            h.join("Maildir/maildirsize"),
        ] {
            let mut w = World::new(h);
            w.files.push(file.clone());
            assert!(
                w.plan(CommonArgs::default(), false).is_none(),
                "{}",
                file.display()
            );
        }
        let w = World::new(h);
        let args = CommonArgs {
            maildir: Some(Path::new("/srv/m")),
            ..CommonArgs::default()
        };
        let mut w2 = World::new(h);
        w2.files.push(PathBuf::from("/srv/m/maildirsize"));
        assert!(w.plan(args, false).is_some());
        assert!(w2.plan(args, false).is_none(), "maildirsize in --maildir");
        // The user's Sieve script, found the way the full program finds it.
        std::fs::write(h.join(".dovecot.sieve"), b"keep;\n").expect("write");
        assert!(w.plan(CommonArgs::default(), false).is_none(), "Sieve");
    }

    #[test]
    fn a_missing_full_program_is_a_temporary_failure_naming_the_path() {
        let o = hand_over_failure(
            Path::new("/usr/lib/cursus/cursus-deliver-full"),
            "No such file or directory",
        );
        assert_eq!(o.exit_code(), 75);
        assert_eq!(
            o.to_string(),
            "4.3.5 cannot run /usr/lib/cursus/cursus-deliver-full: No such file or directory; \
             install cursus-deliver-full beside cursus-deliver"
        );
        let path = full_program().expect("/proc/self/exe");
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(FULL_PROGRAM)
        );
    }
}
