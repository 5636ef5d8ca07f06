//! The front (`cursus-deliver`) against the full program (`cursus-deliver-full`): the same
//! request gives the same exit code, the same line, and the same files, whether the front
//! delivers it itself or hands it over. And the hand-over itself: only the program beside
//! the front's own executable is run, never one found through PATH, the environment or
//! argv[0]; a missing one is 4.3.5 (exit 75); a privileged installation runs nothing.
//!
//! Each case runs three times in three fresh homes: the front as built (with
//! cursus-deliver-full beside it), the full program directly (with the same argv[0]), and a
//! copy of the front alone in a directory: that copy delivers the common case and answers
//! 4.3.5 for everything it must hand over, which shows which way each case went.
//!
//! Every test runs for each build of the front: the one cargo builds (std gives it its
//! entry point) and, when `CURSUS_DELIVER_FRONT` names it, the one shipped (scripts/
//! build-release: no C library; cursus-deliver-full must be beside it). Under CI the second
//! is required.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const FRONT: &str = env!("CARGO_BIN_EXE_cursus-deliver");
const FULL: &str = env!("CARGO_BIN_EXE_cursus-deliver-full");

/// The builds of the front under test (see the file header).
fn fronts() -> Vec<PathBuf> {
    let mut all = vec![PathBuf::from(FRONT)];
    match std::env::var_os("CURSUS_DELIVER_FRONT") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "CURSUS_DELIVER_FRONT={} is not a file",
                p.display()
            );
            all.push(p);
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("under CI, CURSUS_DELIVER_FRONT must name the shipped front (scripts/test)")
        }
        None => {
            eprintln!("NOTE: CURSUS_DELIVER_FRONT not set: only the cargo-built front is tested")
        }
    }
    all
}

/// The name deliveries run under (USER).
fn user_name() -> String {
    if is_root() {
        USER.to_string()
    } else {
        std::env::var("USER").unwrap_or_else(|_| "tester".to_string())
    }
}

/// A directory anyone can enter, owned by the test runner, removed at drop.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("cursus-front-bin")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Copies a file with install(1): a writable descriptor of this threaded process could leak
/// into another test's fork and make an exec of the copy fail with ETXTBSY.
fn install(from: &Path, to: &Path, mode: &str) {
    let ok = Command::new("install")
        .arg("-m")
        .arg(mode)
        .arg(from)
        .arg(to)
        .status()
        .expect("install");
    assert!(ok.success(), "install {} {}", from.display(), to.display());
}

/// An executable shell script, through install(1).
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let src = dir.join(format!("{name}.txt"));
    std::fs::write(&src, text).expect("write script");
    let p = dir.join(name);
    install(&src, &p, "0755");
    std::fs::remove_file(src).expect("rm");
    p
}

/// A copy of `front` alone in a directory: no cursus-deliver-full beside it.
fn lone_front(front: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = open_dir();
    let p = dir.path().join("cursus-deliver");
    install(front, &p, "0755");
    (dir, p)
}

/// How the system file stands: the front hands everything over while it exists.
fn system_config_present() -> bool {
    Path::new("/etc/cursus/deliver.toml").exists()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    /// The front delivers (or refuses) itself.
    Front,
    /// The front hands the request to cursus-deliver-full.
    Full,
}

struct Case {
    name: &'static str,
    /// Arguments; `%H` stands for the home directory.
    args: Vec<OsString>,
    env: Vec<(&'static str, &'static str)>,
    unset: Vec<&'static str>,
    input: Vec<u8>,
    setup: fn(&Scratch),
    as_root: bool,
    route: Route,
}

impl Case {
    fn new(name: &'static str, args: &[&str], route: Route) -> Case {
        Case {
            name,
            args: args.iter().map(OsString::from).collect(),
            env: Vec::new(),
            unset: Vec::new(),
            input: MESSAGE.to_vec(),
            // The front delivers only into an existing Maildir.
            setup: if route == Route::Front {
                maildir
            } else {
                |_| {}
            },
            as_root: false,
            route,
        }
    }

    fn env(mut self, k: &'static str, v: &'static str) -> Case {
        self.env.push((k, v));
        self
    }

    fn input(mut self, input: &[u8]) -> Case {
        self.input = input.to_vec();
        self
    }

    fn setup(mut self, f: fn(&Scratch)) -> Case {
        self.setup = f;
        self
    }

    /// The files of a home that `setup` prepared and nothing touched.
    fn prepared(&self) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
        let s = Scratch::new();
        (self.setup)(&s);
        tree(s.dir.path())
    }

    /// Runs `program` (with argv[0] = the front's path, as the front passes it on) in a
    /// fresh home prepared by `setup`, and returns what it did.
    fn run(&self, program: &Path) -> Seen {
        let s = Scratch::new();
        (self.setup)(&s);
        let home = s.dir.path();
        let mut cmd = Command::new(program);
        cmd.arg0(FRONT);
        let text = home.as_os_str().as_encoded_bytes();
        for a in &self.args {
            let bytes = a.as_encoded_bytes();
            let replaced = match bytes.windows(2).position(|w| w == b"%H") {
                Some(i) => [&bytes[..i], text, &bytes[i + 2..]].concat(),
                None => bytes.to_vec(),
            };
            cmd.arg(OsString::from_vec(replaced));
        }
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home)
            .env("TMPDIR", home)
            .env(
                "USER",
                if self.as_root {
                    "root".into()
                } else {
                    user_name()
                },
            )
            .env("LOGNAME", "someone-else");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.unset {
            cmd.env_remove(k);
        }
        if is_root() && !self.as_root {
            let (uid, gid) = delivery_ids();
            cmd.uid(uid).gid(gid);
        }
        let out = run(cmd, &self.input);
        let clean = |b: &[u8]| normalize(&String::from_utf8_lossy(b), home);
        Seen {
            code: code(&out),
            stdout: clean(&out.stdout),
            stderr: clean(&out.stderr),
            files: tree(home),
        }
    }
}

/// What one run did.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    code: i32,
    stdout: String,
    stderr: String,
    /// Every entry under the home: relative path (Maildir unique names replaced) to mode
    /// and content (`None` for a directory).
    files: BTreeMap<String, (u32, Option<Vec<u8>>)>,
}

/// Replaces the home and Maildir unique names in output text.
fn normalize(text: &str, home: &Path) -> String {
    let text = text.replace(&home.display().to_string(), "<HOME>");
    text.split(' ')
        .map(|word| {
            let (dir, name) = word.rsplit_once('/').unwrap_or(("", word));
            if dir.ends_with("/new") || dir.ends_with("/cur") || dir.ends_with("/tmp") {
                format!("{dir}/{}", unique_free(name))
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `<sec>.M<usec>P<pid>Q<n>R<rand>.<host>,S=..,W=..[:2,FLAGS]` without the unique part:
/// `<unique>,S=..,W=..`.
fn unique_free(name: &str) -> String {
    match name.split_once(',') {
        Some((_, sizes)) => format!("<unique>,{sizes}"),
        None => "<unique>".to_string(),
    }
}

fn tree(home: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![home.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("readdir").flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(home).expect("under home");
            let parent = rel.parent().map(|p| p.display().to_string());
            let name = rel
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let in_maildir_subdir = parent
                .as_deref()
                .is_some_and(|p| p.ends_with("new") || p.ends_with("cur") || p.ends_with("tmp"));
            let key = match (parent, in_maildir_subdir) {
                (Some(p), true) => format!("{p}/{}", unique_free(&name)),
                (Some(p), false) if !p.is_empty() => format!("{p}/{name}"),
                _ => name,
            };
            let mode = meta.mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                let target = normalize(&target.display().to_string(), home);
                out.insert(key, (0, Some(format!("-> {target}").into_bytes())));
            } else if meta.is_dir() {
                out.insert(key, (mode, None));
                todo.push(path);
            } else {
                let mut content = std::fs::read(&path).expect("read");
                if key.ends_with("mbox") {
                    content = without_from_dates(&content);
                }
                assert!(
                    out.insert(key.clone(), (mode, Some(content))).is_none(),
                    "two files as {key}"
                );
            }
        }
    }
    out
}

/// An mbox with the date of each `From ` line cut (the two runs are seconds apart).
fn without_from_dates(mbox: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in mbox.split_inclusive(|&b| b == b'\n') {
        match line.strip_prefix(b"From ") {
            Some(rest) => {
                let sender = rest.split(|&b| b == b' ').next().unwrap_or_default();
                out.extend_from_slice(b"From ");
                out.extend_from_slice(sender);
                out.push(b'\n');
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// A Maildir at ~/Maildir, with tmp, new and cur.
fn maildir(s: &Scratch) {
    maildir_at(s, "Maildir");
}

fn maildir_at(s: &Scratch, at: &str) {
    for d in ["tmp", "new", "cur"] {
        s.mkdir(&format!("{at}/{d}"));
    }
}

fn cases() -> Vec<Case> {
    use Route::{Front, Full};
    let lf = message_lf();
    let mut from_line = b"From bounce@example.org  Sun Nov 22 08:59:06 2026\r\n".to_vec();
    from_line.extend_from_slice(MESSAGE);
    let mut looped = b"Received: from a by b\nDelivered-To: Joe@Example.NET\n".to_vec();
    looped.extend_from_slice(&lf);
    let mut prepended =
        b"Return-Path: <alice@example.org>\nDelivered-To: joe@example.net\n".to_vec();
    prepended.extend_from_slice(&lf);
    let mut not_utf8 = Case::new("an argument that is not UTF-8", &["-f"], Full);
    not_utf8
        .args
        .push(OsString::from_vec(b"a\xff@example.org".to_vec()));
    let mut no_user = Case::new("no USER or LOGNAME (the user database)", &[], Full);
    no_user.unset = vec!["USER", "LOGNAME"];

    // Larger than one read of the input (64 KB): the body, and the header section, arrive
    // in pieces, with CRLFs split between reads.
    let mut big_body = b"Subject: big\r\n\r\n".to_vec();
    while big_body.len() < 300_000 {
        big_body.extend_from_slice(b"From a line that needs no quoting in a Maildir\r\n.\r\n");
    }
    let mut big_header = Vec::new();
    let mut n = 0;
    while big_header.len() < 150_000 {
        big_header.extend_from_slice(format!("X-Pad-{n}: {}\r\n", "p".repeat(70)).as_bytes());
        n += 1;
    }
    big_header.extend_from_slice(b"Delivered-To: other@example.net\r\n\r\nbody\r\n");
    let mut big_looped = big_header.clone();
    big_looped.splice(0..0, b"Delivered-To: joe@example.net\r\n".iter().copied());

    let mut cases = vec![
        // The common case: the front delivers.
        Case::new("no arguments", &[], Front),
        Case::new(
            "Postfix mailbox_command",
            &[
                "-f",
                "alice@example.org",
                "-a",
                "joe+x@example.net",
                "-m",
                "",
            ],
            Front,
        ),
        Case::new(
            "dovecot-lda letters",
            &[
                "-e",
                "-k",
                "-f",
                "",
                "-a",
                "joe@example.net",
                "-r",
                "joe@example.net",
            ],
            Front,
        ),
        Case::new("verbose", &["-v", "-f", "a@example.org"], Front),
        Case::new(
            "--verbose and --maildir=",
            &["--verbose", "--maildir=%H/Box"],
            Front,
        )
        .setup(|s| maildir_at(s, "Box")),
        Case::new(
            "--maildir",
            &["--maildir", "%H/Other", "-r", "joe@x"],
            Front,
        )
        .setup(|s| maildir_at(s, "Other")),
        Case::new("CRLF input", &["-f", "a@b"], Front),
        Case::new("LF input", &["-f", "a@b"], Front).input(&lf),
        Case::new("a From_ line gives the sender", &[], Front).input(&from_line),
        Case::new("the MTA prepended the trace fields", &[], Front)
            .env("SENDER", "alice@example.org")
            .env("RECIPIENT", "joe@example.net")
            .input(&prepended),
        Case::new("OpenSMTPD environment", &[], Front)
            .env("SENDER", "")
            .env("ORIGINAL_RECIPIENT", "joe+lists@example.net")
            .env("RECIPIENT", "joe@example.net"),
        Case::new("Delivered-To loop", &["-r", "joe@example.net"], Front).input(&looped),
        Case::new("empty message", &[], Front).input(b""),
        Case::new("a 300 KB body", &["-f", "a@b"], Front).input(&big_body),
        Case::new("a 150 KB header section", &["-r", "joe@example.net"], Front).input(&big_header),
        Case::new(
            "a loop in a 150 KB header",
            &["-r", "joe@example.net"],
            Front,
        )
        .input(&big_looped),
        Case::new("only a From_ line", &[], Front).input(b"From a@b  Sun Nov 22 08:59:06 2026\n"),
        Case::new("no header", &["-f", "a@b"], Front).input(b"just text\nmore\n"),
        Case::new("NUL bytes and no final newline", &[], Front)
            .input(b"Subject: nul\n\nbin\0ary\0"),
        // The first delivery creates the Maildir: the full program's.
        Case::new("no Maildir yet", &["-f", "a@b"], Full),
        Case::new("a Maildir without cur/", &["-f", "a@b"], Full).setup(|s| {
            s.mkdir("Maildir/tmp");
            s.mkdir("Maildir/new");
        }),
        Case::new(
            "--maildir that does not exist",
            &["--maildir", "%H/None"],
            Full,
        ),
        Case::new("a Maildir that is a file", &[], Full).setup(|s| {
            s.file("Maildir", b"not a directory\n");
        }),
        // Refusals are the full program's too.
        Case::new("a symlinked new/ is refused", &[], Full).setup(|s| {
            s.mkdir("Maildir/tmp");
            s.mkdir("Maildir/cur");
            s.mkdir("elsewhere");
            std::os::unix::fs::symlink(s.path("elsewhere"), s.path("Maildir/new"))
                .expect("symlink");
        }),
        // Everything else: cursus-deliver-full decides.
        Case::new("-m folder", &["-m", "Lists.rust"], Full),
        Case::new("-m INBOX", &["-m", "INBOX"], Full),
        Case::new("--mbox", &["-f", "a@b", "--mbox", "%H/mbox"], Full),
        Case::new("--mh", &["--mh", "%H/Mail/inbox"], Full),
        Case::new("-o fsync=none", &["-o", "fsync=none"], Full),
        Case::new("-c", &["-c", "/dev/null"], Full),
        Case::new("-p", &["-p", "%H/no-such-message"], Full),
        Case::new("-d unknown", &["-d", "no-such-user-xyz"], Full),
        Case::new("--help", &["--help"], Full),
        Case::new("--version", &["--version"], Full),
        Case::new("a bad flag", &["--bogus"], Full),
        Case::new("OpenSMTPD's -f -a pitfall", &["-f", "-a", "x@y"], Full),
        Case::new("-fX", &["-fa@b"], Full),
        Case::new("a repeated option", &["-f", "a@b", "-f", "c@d"], Full),
        Case::new("a Sieve script", &[], Full).setup(|s| {
            s.file(
                ".dovecot.sieve",
                b"require \"fileinto\";\nfileinto \"Lists\";\n",
            );
        }),
        Case::new("maildirsize", &["-f", "a@b"], Full).setup(|s| {
            maildir(s);
            s.file("Maildir/maildirsize", b"100000S\n0 0\n");
        }),
        Case::new("a user configuration", &[], Full).setup(|s| {
            s.file(
                ".config/cursus/deliver.toml",
                b"destination = \"maildir:~/Mail\"\n",
            );
        }),
        Case::new("a broken user configuration", &[], Full).setup(|s| {
            s.file(".config/cursus/deliver.toml", b"destinaton = 1\n");
        }),
        Case::new("a dangling ~/.dovecot.sieve", &[], Front).setup(|s| {
            maildir(s);
            std::os::unix::fs::symlink(s.path("sieve/none.sieve"), s.path(".dovecot.sieve"))
                .expect("symlink");
        }),
        Case::new("USER empty", &[], Full).env("USER", ""),
        not_utf8,
        no_user,
    ];
    if is_root() {
        let mut root = Case::new("root", &[], Full);
        root.as_root = true;
        cases.push(root);
    }
    cases
}

#[test]
fn front_and_full_program_agree() {
    for front in fronts() {
        front_and_full_program_agree_for(&front);
    }
}

fn front_and_full_program_agree_for(front_bin: &Path) {
    let (_lone_dir, lone) = lone_front(front_bin);
    let common_case_possible = !system_config_present();
    if !common_case_possible {
        eprintln!("NOTE: /etc/cursus/deliver.toml exists: every case is handed over");
    }
    for case in cases() {
        let front = case.run(front_bin);
        let full = case.run(Path::new(FULL));
        assert_eq!(
            front,
            full,
            "{}: front {} (left) and full program differ",
            case.name,
            front_bin.display()
        );

        let alone = case.run(&lone);
        let route = if common_case_possible {
            case.route
        } else {
            Route::Full
        };
        match route {
            Route::Front => assert_eq!(alone, full, "{}: the front alone differs", case.name),
            Route::Full => {
                assert_eq!(alone.code, 75, "{}: {}", case.name, alone.stderr);
                assert!(
                    alone.stderr.starts_with("4.3.5 cannot run "),
                    "{}: {}",
                    case.name,
                    alone.stderr
                );
                assert_eq!(
                    alone.files,
                    case.prepared(),
                    "{}: handed over, yet something was written",
                    case.name
                );
            }
        }
    }
}

#[test]
fn a_missing_full_program_is_4_3_5_naming_the_path() {
    for front in fronts() {
        a_missing_full_program_is_4_3_5_for(&front);
    }
}

fn a_missing_full_program_is_4_3_5_for(front: &Path) {
    let (dir, lone) = lone_front(front);
    let s = Scratch::new();
    let mut cmd = Command::new(&lone);
    cmd.env_clear().env("HOME", s.dir.path()).arg("--help");
    if is_root() {
        let (uid, gid) = delivery_ids();
        cmd.uid(uid).gid(gid);
    }
    // A message larger than a pipe buffer: the front reads it to EOF before it answers.
    let big = vec![b'x'; 1 << 20];
    let out = run(cmd, &big);
    assert_eq!(code(&out), 75);
    assert_eq!(
        stderr(&out),
        format!(
            "4.3.5 cannot run {}/cursus-deliver-full: No such file or directory; \
             install cursus-deliver-full beside cursus-deliver\n",
            dir.path().display()
        )
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_full_program_is_never_found_through_path_environment_or_argv0() {
    for front in fronts() {
        never_found_through_path_environment_or_argv0(&front);
    }
}

fn never_found_through_path_environment_or_argv0(front: &Path) {
    // A planted cursus-deliver-full (and cursus-deliver) in a directory the attacker
    // controls, named by PATH, by variables a careless front might read, and by argv[0].
    let (lone_dir, lone) = lone_front(front);
    let planted = open_dir();
    let marker = planted.path().join("ran");
    let text = format!("#!/bin/sh\ntouch {}\nexit 0\n", marker.display());
    script(planted.path(), "cursus-deliver-full", &text);
    script(planted.path(), "cursus-deliver", &text);
    std::fs::set_permissions(planted.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let s = Scratch::new();
    let fake = planted.path().join("cursus-deliver-full");
    let mut cmd = Command::new(&lone);
    cmd.arg0(planted.path().join("cursus-deliver"))
        .arg("--help")
        .env_clear()
        .env("PATH", planted.path())
        .env("HOME", s.dir.path())
        .env("USER", user_name())
        .env("CURSUS_DELIVER_FULL", &fake)
        .env("CURSUS_LIBEXEC", planted.path())
        .env("_", &fake);
    if is_root() {
        let (uid, gid) = delivery_ids();
        cmd.uid(uid).gid(gid);
    }
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{}/cursus-deliver-full",
            lone_dir.path().display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "a planted program was executed");
}

#[test]
fn the_hand_over_passes_arguments_environment_and_message_unchanged() {
    for front in fronts() {
        the_hand_over_passes_everything_unchanged(&front);
    }
}

fn the_hand_over_passes_everything_unchanged(front: &Path) {
    // A stand-in for cursus-deliver-full beside a copy of the front records what it got.
    let (dir, lone) = lone_front(front);
    let out_dir = open_dir();
    std::fs::set_permissions(out_dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let o = out_dir.path().display();
    script(
        dir.path(),
        "cursus-deliver-full",
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {o}/argv\n\
             env > {o}/env\ncat > {o}/stdin\nexit 0\n"
        ),
    );
    let s = Scratch::new();
    let mut cmd = Command::new(&lone);
    cmd.args(["-m", "Lists", "-f", "", "--", "x y"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", s.dir.path())
        .env("USER", user_name())
        .env("SENDER", "alice@example.org")
        .env("ODD", "a\u{1}b");
    if is_root() {
        let (uid, gid) = delivery_ids();
        cmd.uid(uid).gid(gid);
    }
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let argv = std::fs::read_to_string(out_dir.path().join("argv")).expect("argv");
    assert_eq!(argv, "-m\nLists\n-f\n\n--\nx y\n");
    let env = std::fs::read_to_string(out_dir.path().join("env")).expect("env");
    for want in ["SENDER=alice@example.org", "ODD=a\u{1}b", "USER="] {
        assert!(env.lines().any(|l| l.starts_with(want)), "{want} in {env}");
    }
    assert_eq!(
        std::fs::read(out_dir.path().join("stdin")).expect("stdin"),
        MESSAGE,
        "the message reaches the full program untouched"
    );
}

#[test]
fn a_privileged_installation_runs_nothing() {
    // Attack: a set-user-ID or set-group-ID front hard-linked (or copied by its owner) next
    // to a program of the attacker's would execute that program with the installation's
    // privileges. Both programs refuse such an installation before reading anything.
    if !is_root() {
        eprintln!("SKIP a_privileged_installation_runs_nothing: needs root");
        return;
    }
    for (front_bin, (name, mode)) in fronts()
        .iter()
        .flat_map(|f| [("set-user-ID", "4755"), ("set-group-ID", "2755")].map(|m| (f.clone(), m)))
    {
        let dir = open_dir();
        let marker = dir.path().join("ran");
        script(
            dir.path(),
            "cursus-deliver-full",
            &format!("#!/bin/sh\ntouch {}\nexit 0\n", marker.display()),
        );
        let front = dir.path().join("cursus-deliver");
        install(&front_bin, &front, mode);
        let full = dir.path().join("full");
        install(Path::new(FULL), &full, mode);
        if nix::sys::statvfs::statvfs(dir.path())
            .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID))
        {
            eprintln!("SKIP a_privileged_installation_runs_nothing: nosuid mount");
            return;
        }
        let s = Scratch::new();
        for (program, args) in [
            (&front, &[][..]),
            (&front, &["--help"][..]),
            (&full, &["--help"][..]),
        ] {
            let mut cmd = Command::new(program);
            cmd.args(args)
                .env_clear()
                .env("HOME", s.dir.path())
                .env("USER", USER);
            let (uid, gid) = delivery_ids();
            cmd.uid(uid).gid(gid);
            let out = run(cmd, MESSAGE);
            assert_eq!(code(&out), 77, "{name} {args:?}: {}", stderr(&out));
            assert_eq!(
                stderr(&out),
                "5.7.0 cursus-deliver must not be installed set-user-ID or set-group-ID; \
                 the MTA runs it as the recipient\n",
                "{name} {args:?}"
            );
        }
        assert!(!marker.exists(), "{name}: the planted program ran");
        assert!(
            !s.path("Maildir").exists(),
            "{name}: something was delivered"
        );
        let meta = std::fs::metadata(&front).expect("stat");
        assert_ne!(meta.mode() & 0o6000, 0, "{name}: the bit is set");
    }
}

/// The symbol names of a binary, from nm(1); `None` when nm is not installed.
fn symbols(binary: &str) -> Option<String> {
    let out = Command::new("nm").arg(binary).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_front_links_no_parser_configuration_sieve_sqlite_or_user_database() {
    // What the front must not pay for at start-up, and what would make a static build
    // unsafe (glibc's NSS functions: getpwnam, getpwuid and friends).
    let (Some(front), Some(full)) = (symbols(FRONT), symbols(FULL)) else {
        eprintln!("SKIP the_front_links_no_...: nm not installed");
        return;
    };
    for name in [
        "clap",
        "toml",
        "cursus_sieve",
        "rusqlite",
        "sqlite3",
        "jiff",
        "getpwnam",
        "getpwuid",
        "getgrnam",
        "getaddrinfo",
    ] {
        assert!(!front.contains(name), "the front links {name}");
    }
    // The check sees symbols at all: the full program has them.
    for name in ["clap", "cursus_sieve", "getpwnam"] {
        assert!(
            full.contains(name),
            "cursus-deliver-full should link {name}"
        );
    }
}

#[test]
fn the_common_case_executes_nothing_and_reads_no_user_database() {
    // The front: one execve (its own), no /etc/passwd, nsswitch.conf or NSS module. The
    // full program, with USER and HOME set, no user database either.
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIP the_common_case_executes_nothing...: strace not installed");
        return;
    }
    if system_config_present() {
        eprintln!("SKIP the_common_case_executes_nothing...: /etc/cursus/deliver.toml exists");
        return;
    }
    let fronts = fronts();
    for program in fronts.iter().map(PathBuf::as_path).chain([Path::new(FULL)]) {
        let s = Scratch::new();
        // An existing Maildir: the first delivery, which creates it, is the full program's.
        maildir(&s);
        let log = open_dir();
        std::fs::set_permissions(log.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let trace = log.path().join("trace");
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-e", "trace=execve,open,openat", "-o"])
            .arg(&trace)
            .arg(program)
            .args(["-f", "alice@example.org", "-a", "joe@example.net"]);
        as_recipient(&mut cmd, &s);
        let out = run(cmd, MESSAGE);
        let shown = program.display();
        assert_eq!(code(&out), 0, "{shown}: {}", stderr(&out));
        assert_eq!(files(&s.path("Maildir/new")).len(), 1, "{shown}");
        let text = std::fs::read_to_string(&trace).expect("trace");
        if program != Path::new(FULL) {
            let execs = text.lines().filter(|l| l.contains("execve(")).count();
            assert_eq!(execs, 1, "{text}");
        }
        for name in ["passwd", "nsswitch", "libnss", "/etc/group"] {
            assert!(!text.contains(name), "{shown}: {name} opened:\n{text}");
        }
    }
}

#[test]
fn without_proc_the_front_delivers_through_tmp() {
    // Where the unnamed file cannot be linked by its /proc/self/fd name (no /proc, or one
    // hidden from us), the front copies it into tmp/ and renames that into new/ without
    // replacing anything: the message arrives whole, once, with nothing left in tmp/.
    if !is_root() {
        eprintln!(
            "SKIP without_proc_the_front_delivers_through_tmp: needs root (a mount namespace)"
        );
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("SKIP without_proc_the_front_delivers_through_tmp: unshare not installed");
        return;
    }
    let (uid, gid) = delivery_ids();
    for front in fronts() {
        let normal = Scratch::new();
        maildir(&normal);
        let covered = Scratch::new();
        maildir(&covered);
        for (s, hide_proc) in [(&normal, false), (&covered, true)] {
            let hide = if hide_proc {
                "mount -t tmpfs none /proc && "
            } else {
                ""
            };
            let mut cmd = Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(format!(
                    "{hide}exec setpriv --reuid={uid} --regid={gid} --clear-groups \"$0\" \"$@\""
                ))
                .arg(&front)
                .args(["-f", "alice@example.org"])
                .env_clear()
                .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
                .env("HOME", s.dir.path())
                .env("USER", USER);
            let out = run(cmd, MESSAGE);
            assert_eq!(code(&out), 0, "{}: {}", front.display(), stderr(&out));
            assert!(files(&s.path("Maildir/tmp")).is_empty(), "tmp/ left behind");
        }
        let stored = |s: &Scratch| {
            let new = files(&s.path("Maildir/new"));
            assert_eq!(new.len(), 1, "{}", front.display());
            let name = new[0]
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let size = name.split(",S=").nth(1).map(str::to_string);
            (std::fs::read(&new[0]).expect("read"), size)
        };
        assert_eq!(stored(&covered), stored(&normal), "{}", front.display());
    }
}

/// A front or the full program delivering into a fresh home with a ready Maildir, as the
/// delivery user; standard input is the caller's.
fn common_case(program: &Path, s: &Scratch) -> Command {
    maildir(s);
    let mut cmd = Command::new(program);
    cmd.arg0(FRONT).args(["-f", "alice@example.org"]);
    as_recipient(&mut cmd, s);
    cmd
}

/// What an MTA gives the delivery: a clean environment naming the user and the home, and
/// (when the tests run as root) the delivery user's ids.
fn as_recipient(cmd: &mut Command, s: &Scratch) {
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", s.dir.path())
        .env("USER", user_name());
    if is_root() {
        let (uid, gid) = delivery_ids();
        cmd.uid(uid).gid(gid);
    }
}

#[test]
fn killed_while_reading_the_front_leaves_nothing_visible() {
    // The front writes the message into its unnamed file as it reads it: killed half-way,
    // nothing may appear in new/ or stay in tmp/ (the file goes with the process).
    use std::io::Write;
    for front in fronts() {
        let s = Scratch::new();
        let mut cmd = common_case(&front, &s);
        cmd.stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"Subject: half\r\n\r\n").expect("write");
        for _ in 0..64 {
            stdin.write_all(&[b'y'; 16384]).expect("write");
        }
        // Still reading: the pipe is open and the message not ended.
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "{}",
            front.display()
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(
            files(&s.path("Maildir/new")).is_empty(),
            "{}",
            front.display()
        );
        assert!(
            files(&s.path("Maildir/tmp")).is_empty(),
            "{}",
            front.display()
        );
    }
}

#[test]
fn a_read_error_is_answered_as_the_full_program_answers_it() {
    // Standard input that cannot be read (here a directory: EISDIR): 4.3.0, exit 75, the
    // same line from both, and nothing stored.
    let fronts = fronts();
    let mut seen = Vec::new();
    for program in fronts.iter().map(PathBuf::as_path).chain([Path::new(FULL)]) {
        let s = Scratch::new();
        let mut cmd = common_case(program, &s);
        let dir = std::fs::File::open(s.dir.path()).expect("open dir");
        let out = cmd.stdin(dir).output().expect("run");
        assert_eq!(code(&out), 75, "{}: {}", program.display(), stderr(&out));
        assert!(
            files(&s.path("Maildir/new")).is_empty(),
            "{}",
            program.display()
        );
        seen.push(stderr(&out));
    }
    assert_eq!(seen[0], "4.3.0 reading the message: Is a directory\n");
    assert!(seen.iter().all(|l| *l == seen[0]), "{seen:?}");
}
