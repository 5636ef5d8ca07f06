//! Which requests the front delivers itself: decided from argv and the environment, and a
//! few `stat`s, before a byte of the message is read.
//!
//! The common case is an ordinary user's message into a Maildir (`~/Maildir` or
//! `--maildir DIR`) with `-f`, `-a`, `-r`, an empty `-m`, `-e`, `-k`, `-v`, no configuration
//! file, no Sieve script. Anything else (`-d`, `-c`, `-o`, `-p`, a folder, mbox or MH, root,
//! `--help`, an unknown or repeated option, a missing HOME or USER, a configuration file, a
//! script) is cursus-deliver-full's, with argv, environment and standard input untouched.
//! The conditions mirror the full program's steps for this request, so that under them it
//! would do nothing but what the front does: no configuration file (the default settings
//! hold: `maildir:~/Maildir`, fsync of the file and of `new/`, no size limit, no quota
//! unless a `maildirsize` says so, which `store::prepare` checks); the recipient named by
//! USER or LOGNAME and the home by an absolute HOME (no user database lookup); no Sieve
//! script as the full program looks for it.
//!
//! A request the front would read differently from the full program's parser (`-fX`,
//! `-f=X`, `-f -a X`, a repeated option, bytes that are not UTF-8) is not the common case,
//! so the full program's parser decides, and refuses what it refuses.

use alloc::string::String;

use crate::envelope::EnvelopeArgs;

/// The system configuration file of cursus-deliver.
pub const SYSTEM_CONFIG: &str = "/etc/cursus/deliver.toml";
/// The user's configuration file, under the home.
pub const USER_CONFIG: &str = ".config/cursus/deliver.toml";
/// The user's active Sieve script, under the home (usually a symlink into ~/sieve/).
pub const USER_SCRIPT: &str = ".dovecot.sieve";
/// The default destination, under the home.
pub const DEFAULT_MAILDIR: &str = "Maildir";

/// A command line of the common case: what the front understands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommonArgs<'a> {
    pub envelope: EnvelopeArgs<'a>,
    /// `--maildir DIR` (absolute), else the default destination.
    pub maildir: Option<&'a str>,
    /// `-v`/`--verbose`: the outcome line on success too.
    pub verbose: bool,
}

/// Reads the arguments (argv without argv[0]) when they are the common case: each option
/// at most once, a value as the next argument (or `--maildir=DIR`), UTF-8, not starting
/// with `-`. `None` means the full program's parser must decide (anything else, including
/// forms it accepts such as `-fX`, and every usage error).
pub fn parse_args<'a>(args: &[&'a [u8]]) -> Option<CommonArgs<'a>> {
    let mut out = CommonArgs::default();
    let mut seen: [&str; 8] = [""; 8];
    let mut count = 0;
    let mut once = |name: &'static str| {
        if seen[..count].contains(&name) {
            return None;
        }
        seen[count] = name;
        count += 1;
        Some(())
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let arg = core::str::from_utf8(arg).ok()?;
        let mut value = || {
            rest.next()
                .and_then(|v| core::str::from_utf8(v).ok())
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
                out.maildir = Some(value()?).filter(|d| d.starts_with('/'));
                out.maildir?;
            }
            other => {
                let dir = other.strip_prefix("--maildir=")?;
                once("--maildir")?;
                out.maildir = Some(dir).filter(|d| d.starts_with('/'));
                out.maildir?;
            }
        }
    }
    Some(out)
}

/// A delivery the front makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    pub envelope: EnvelopeArgs<'a>,
    pub verbose: bool,
    /// The Maildir, as the full program would choose it.
    pub maildir: String,
    /// USER (else LOGNAME), as the full program names the recipient.
    pub recipient_name: String,
}

/// What the plan needs to know of the file system: whether anything is at an absolute
/// path. `follow` says whether a final symlink is followed (a dangling one then counts as
/// nothing, as the full program's `Path::exists` sees a Sieve script); without it, a
/// symlink counts, and so does an error other than "no such file" (the full program reports
/// it).
pub type Exists<'f> = &'f dyn Fn(&str, bool) -> bool;

/// Decides whether the common case holds. `root` is whether we run as uid 0; `getenv`
/// reads one environment variable. `None`: hand the request to the full program.
pub fn plan<'a>(
    args: CommonArgs<'a>,
    root: bool,
    getenv: &dyn Fn(&str) -> Option<&'a [u8]>,
    exists: Exists<'_>,
) -> Option<Plan<'a>> {
    if root {
        return None;
    }
    // As the full program reads them: USER, else LOGNAME, and not empty.
    let name = getenv("USER").or_else(|| getenv("LOGNAME"))?;
    let recipient_name = core::str::from_utf8(name).ok().filter(|n| !n.is_empty())?;
    let home = core::str::from_utf8(getenv("HOME")?).ok()?;
    if !home.starts_with('/') {
        return None;
    }
    if exists(SYSTEM_CONFIG, false) || exists(&join(home, USER_CONFIG), false) {
        return None;
    }
    if exists(&join(home, USER_SCRIPT), true) {
        return None;
    }
    let maildir = match args.maildir {
        Some(dir) => dir.into(),
        None => join(home, DEFAULT_MAILDIR),
    };
    Some(Plan {
        envelope: args.envelope,
        verbose: args.verbose,
        maildir,
        recipient_name: recipient_name.into(),
    })
}

/// `dir/name` as `Path::join` makes it: no second `/` after a `dir` that ends with one.
pub fn join(dir: &str, name: &str) -> String {
    let mut out = String::with_capacity(dir.len() + 1 + name.len());
    out.push_str(dir);
    if !dir.ends_with('/') {
        out.push('/');
    }
    out.push_str(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::vec::Vec;

    fn b(args: &[&'static str]) -> Vec<&'static [u8]> {
        args.iter().map(|a| a.as_bytes()).collect()
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
                    maildir: Some("/m/d"),
                    verbose: true,
                },
            ),
            (
                &["--maildir=/m", "-v"],
                CommonArgs {
                    maildir: Some("/m"),
                    verbose: true,
                    ..CommonArgs::default()
                },
            ),
        ];
        for (argv, want) in cases {
            assert_eq!(parse_args(&b(argv)), Some(*want), "{argv:?}");
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
            assert_eq!(parse_args(&b(argv)), None, "{argv:?}");
        }
        let not_utf8: [&[u8]; 2] = [b"-f", b"a\xff@b"];
        assert_eq!(parse_args(&not_utf8), None);
    }

    /// A process's surroundings: its environment and the paths where something is.
    struct World {
        env: HashMap<&'static str, &'static str>,
        /// (path, is a dangling symlink)
        files: Vec<(std::string::String, bool)>,
    }

    impl World {
        fn new() -> World {
            World {
                env: HashMap::from([("USER", "joe"), ("HOME", "/home/joe")]),
                files: Vec::new(),
            }
        }

        fn plan(&self, args: CommonArgs<'static>, root: bool) -> Option<Plan<'static>> {
            let env = self.env.clone();
            let getenv = move |k: &str| env.get(k).map(|v| v.as_bytes());
            let exists = |p: &str, follow: bool| {
                self.files
                    .iter()
                    .any(|(f, dangling)| f == p && !(follow && *dangling))
            };
            plan(args, root, &getenv, &exists)
        }
    }

    #[test]
    fn the_common_case_needs_a_plain_environment() {
        let mut w = World::new();
        let p = w.plan(CommonArgs::default(), false).expect("common case");
        assert_eq!(p.maildir, "/home/joe/Maildir");
        assert_eq!(p.recipient_name, "joe");
        assert!(w.plan(CommonArgs::default(), true).is_none(), "root");
        let args = CommonArgs {
            maildir: Some("/srv/mail/joe"),
            ..CommonArgs::default()
        };
        assert_eq!(
            w.plan(args, false).expect("--maildir").maildir,
            "/srv/mail/joe"
        );

        w.env.insert("HOME", "/home/joe/");
        assert_eq!(
            w.plan(CommonArgs::default(), false).expect("slash").maildir,
            "/home/joe/Maildir"
        );

        // LOGNAME stands in for USER; an empty USER does not fall back to it (the full
        // program then asks the user database).
        w.env.remove("USER");
        w.env.insert("LOGNAME", "joe2");
        assert_eq!(
            w.plan(CommonArgs::default(), false)
                .expect("LOGNAME")
                .recipient_name,
            "joe2"
        );
        w.env.insert("USER", "");
        assert!(w.plan(CommonArgs::default(), false).is_none(), "USER empty");
        w.env.remove("USER");
        w.env.remove("LOGNAME");
        assert!(w.plan(CommonArgs::default(), false).is_none(), "no USER");

        let mut w = World::new();
        w.env.insert("HOME", "relative");
        assert!(
            w.plan(CommonArgs::default(), false).is_none(),
            "HOME relative"
        );
        w.env.remove("HOME");
        assert!(w.plan(CommonArgs::default(), false).is_none(), "no HOME");
    }

    #[test]
    fn configuration_and_scripts_go_to_the_full_program() {
        for file in [
            "/etc/cursus/deliver.toml",
            "/home/joe/.config/cursus/deliver.toml",
            "/home/joe/.dovecot.sieve",
        ] {
            let mut w = World::new();
            w.files.push((file.into(), false));
            assert!(w.plan(CommonArgs::default(), false).is_none(), "{file}");
        }
        // A dangling script link is no script (the full program's Path::exists).
        let mut w = World::new();
        w.files.push(("/home/joe/.dovecot.sieve".into(), true));
        assert!(w.plan(CommonArgs::default(), false).is_some());
        // A dangling configuration link is the full program's to report.
        let mut w = World::new();
        w.files
            .push(("/home/joe/.config/cursus/deliver.toml".into(), true));
        assert!(w.plan(CommonArgs::default(), false).is_none());
    }
}
