//! The root service end to end, as root, with real users the test creates: every attack of
//! the cursus-lda issue is tried and must be refused with nothing written, and every
//! positive path delivers as the user. Not root: each test prints `SKIPPED: needs root` and
//! passes, unless CI is set (then it fails), since credential changes and foreign ownership
//! are what is being tested.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cursus_lda::Destination;
use cursus_lda::client::Client;
use cursus_lda::protocol::{Answer, DeliverOptions, Envelope, ErrorCode, Request, encode_request};
use cursus_mail::OutcomeKind;

const USER: &str = "cursus-l1";
const OTHER: &str = "cursus-l2";
const VMAIL: &str = "cursus-lv";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

struct Account {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn account(name: &str) -> Account {
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/usr/sbin/nologin", name])
            .status();
    }
    let u = nix::unistd::User::from_name(name)
        .expect("lookup")
        .expect("user exists");
    let home = u.dir.clone();
    if !home.exists() {
        fs::create_dir_all(&home).expect("home");
        std::os::unix::fs::chown(&home, Some(u.uid.as_raw()), Some(u.gid.as_raw())).expect("chown");
    }
    Account {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home,
    }
}

/// Removes everything the tests put in a home (`also` names one more entry), keeping the
/// home itself.
fn fresh_home(name: &str, also: &str) -> Account {
    let a = account(name);
    for entry in [
        "Maildir",
        "Mail",
        "mbox",
        "mbox.alt",
        "cmd-out",
        ".config",
        ".dovecot.sieve",
        ".forward",
        "x-own",
        "x-own-dir",
        also,
    ] {
        let path = a.home.join(entry);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir_all(&path);
            }
            Ok(_) => {
                let _ = fs::remove_file(&path);
            }
            Err(_) => {}
        }
    }
    a
}

fn chown(path: &Path, a: &Account) {
    std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid)).expect("chown");
}

fn mkdir_as(path: &Path, a: &Account) {
    fs::create_dir_all(path).expect("mkdir");
    chown(path, a);
}

/// Writes the policy file the way an administrator must: not writable by others.
fn write_policy(dir: &Path, text: impl AsRef<[u8]>) {
    let path = dir.join("policy.toml");
    fs::write(&path, text).expect("policy");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// A running `cursus-lda serve` with its own socket and policy.
struct Service {
    dir: tempfile::TempDir,
    child: Child,
    socket: PathBuf,
}

impl Service {
    fn start(policy: &str, extra: &[&str]) -> Service {
        let dir = tempfile::tempdir().expect("tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        write_policy(dir.path(), policy);
        let socket = dir.path().join("lda.sock");
        let log = fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_cursus-lda"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--policy")
            .arg(dir.path().join("policy.toml"))
            .args(["--peer", "nobody"])
            .args(extra)
            .env("CURSUS_TEST_SECRET", "must-not-leak")
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("serve starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The socket file appears at bind(), before listen(): wait for a real answer.
        while !Client::connect(&socket)
            .map(|mut c| c.call(&Request::Ping, None).is_ok())
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "the service did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Service { dir, child, socket }
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn message(&self, text: &str) -> fs::File {
        let path = self.dir.path().join(format!("msg-{}", text.len()));
        fs::write(&path, text).expect("msg");
        fs::File::open(&path).expect("open msg")
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const POLICY: &str = r#"
min_uid = 1000

[[allow]]
name = "home-maildir"
kind = "maildir"
path = "~/Maildir"
subtree = true

[[allow]]
name = "home-mbox"
kind = "mbox"
path = "~/mbox"

[[allow]]
name = "home-mh"
kind = "mh"
path = "~/Mail"
subtree = true
"#;

const MESSAGE: &str = "From: a@example.org\nSubject: hello\n\nbody line\n";

fn deliver_request(user: &str, destination: &str) -> Request {
    Request::Deliver {
        user: user.to_string(),
        destination: destination.parse::<Destination>().expect("destination"),
        envelope: Envelope {
            sender: Some("a@example.org".into()),
            original_recipient: format!("{user}@example.org"),
            final_recipient: format!("{user}@example.org"),
            extension: None,
        },
        options: DeliverOptions {
            fsync: true,
            create_folders: true,
            return_path: true,
        },
    }
}

fn deliver(service: &Service, user: &str, destination: &str) -> Answer {
    let message = service.message(MESSAGE);
    service
        .client()
        .call(&deliver_request(user, destination), Some(message.as_fd()))
        .expect("answer")
}

fn outcome(answer: &Answer) -> (OutcomeKind, String, String) {
    match answer {
        Answer::Outcome { kind, status, text } => (*kind, status.to_string(), text.clone()),
        other => panic!("expected an outcome, got {other:?}"),
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every file below `dir` with its size and mtime, to prove nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = fs::symlink_metadata(e.path()).expect("lstat");
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((
                e.path(),
                m.len(),
                m.mtime_nsec() + m.mtime() * 1_000_000_000,
            ));
        }
    }
    out.sort();
    out
}

/// The tests share the test users' homes, so they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Not root: the test cannot run. It says so on stderr and passes, except under CI (the `CI`
/// variable set), where the tests run as root and a skip would hide every attack test.
fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    // libtest names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a service test");
    // Written to the stderr handle, not with eprintln!, which libtest captures and shows
    // only for failures: the skip must be seen in a normal run.
    let line = format!(
        "SKIPPED: needs root: {test} (credential changes and foreign ownership are what it tests)\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root and CI is set: run the tests as root"
    );
    true
}

macro_rules! root_only {
    () => {
        if skip_unless_root() {
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    };
}

#[test]
fn maildir_delivery_runs_as_the_user_and_adds_trace_headers() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    let dest = format!("maildir:{}/Maildir", a.home.display());
    let (kind, status, text) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!(kind, OutcomeKind::Delivered, "{text}");
    assert_eq!(status, "2.0.0");
    let files = files_in(&a.home.join("Maildir/new"));
    assert_eq!(files.len(), 1, "{files:?}");
    let meta = fs::metadata(&files[0]).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (a.uid, a.gid));
    assert_eq!(meta.mode() & 0o777, 0o600);
    let stored = fs::read_to_string(&files[0]).expect("read");
    assert!(
        stored.starts_with(&format!(
            "Return-Path: <a@example.org>\nDelivered-To: {USER}@example.org\nFrom: a@example.org\n"
        )),
        "{stored}"
    );
    assert!(text.contains(&a.home.display().to_string()), "{text}");
    assert!(svc.log().contains("status=sent"), "{}", svc.log());
}

/// A deliver-many: one child writes every message, each answer in order, each message in
/// its own file owned by the user; a descriptor count that does not match the envelopes,
/// and a batch to a command, are refused with nothing written.
#[test]
fn deliver_many_writes_each_message_and_answers_each() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    let destination: Destination = format!("maildir:{}/Maildir", a.home.display())
        .parse()
        .expect("destination");
    let envelope = |n: usize| Envelope {
        sender: Some("a@example.org".into()),
        original_recipient: format!("{USER}+{n}@example.org"),
        final_recipient: format!("{USER}+{n}@example.org"),
        extension: None,
    };
    let request = |n: usize| Request::DeliverMany {
        user: USER.to_string(),
        destination: destination.clone(),
        envelopes: (0..n).map(envelope).collect(),
        options: DeliverOptions {
            fsync: true,
            create_folders: true,
            return_path: true,
        },
    };
    let messages: Vec<fs::File> = (0..5)
        .map(|n| svc.message(&format!("{MESSAGE}{}", "x".repeat(n))))
        .collect();
    let fds: Vec<_> = messages.iter().map(|m| m.as_fd()).collect();
    let answer = svc.client().call_with(&request(5), &fds).expect("answer");
    let Answer::Outcomes(answers) = answer else {
        panic!("expected outcomes, got {answer:?}");
    };
    assert_eq!(answers.len(), 5);
    for a in &answers {
        assert_eq!(outcome(a).0, OutcomeKind::Delivered, "{a:?}");
    }
    let files = files_in(&a.home.join("Maildir/new"));
    assert_eq!(files.len(), 5, "{files:?}");
    let mut delivered_to: Vec<String> = files
        .iter()
        .map(|f| {
            let meta = fs::metadata(f).expect("stat");
            assert_eq!((meta.uid(), meta.gid()), (a.uid, a.gid));
            let text = fs::read_to_string(f).expect("read");
            text.lines()
                .find_map(|l| l.strip_prefix("Delivered-To: ").map(str::to_string))
                .expect("Delivered-To")
        })
        .collect();
    delivered_to.sort();
    let expected: Vec<String> = (0..5).map(|n| format!("{USER}+{n}@example.org")).collect();
    assert_eq!(delivered_to, expected);
    assert_eq!(svc.log().matches("status=sent").count(), 5, "{}", svc.log());

    // Four envelopes, three descriptors: refused, the connection closed, nothing written.
    let before = snapshot(&a.home);
    let answer = svc
        .client()
        .call_with(&request(4), &fds[..3])
        .expect("answer");
    assert!(
        matches!(
            answer,
            Answer::Error {
                code: ErrorCode::OutOfOrder,
                ..
            }
        ),
        "{answer:?}"
    );
    assert_eq!(snapshot(&a.home), before);
}

#[test]
fn maildir_plus_plus_folder_is_created_with_its_marker() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    // The INBOX must exist for the folder to be recognised as Maildir++.
    let dest = format!("maildir:{}/Maildir", a.home.display());
    assert_eq!(
        outcome(&deliver(&svc, USER, &dest)).0,
        OutcomeKind::Delivered
    );
    let dest = format!("maildir:{}/Maildir/.Lists.rust", a.home.display());
    let (kind, _, text) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!(kind, OutcomeKind::Delivered, "{text}");
    let folder = a.home.join("Maildir/.Lists.rust");
    assert!(folder.join("maildirfolder").is_file());
    assert_eq!(files_in(&folder.join("new")).len(), 1);
    assert_eq!(fs::metadata(&folder).expect("stat").uid(), a.uid);
}

#[test]
fn mbox_and_mh_deliveries() {
    root_only!();
    let a = fresh_home(USER, "Mail");
    let _ = fs::remove_file(a.home.join("mbox"));
    let svc = Service::start(POLICY, &[]);
    let dest = format!("mbox:{}/mbox", a.home.display());
    let (kind, _, text) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!(kind, OutcomeKind::Delivered, "{text}");
    let mbox = fs::read_to_string(a.home.join("mbox")).expect("mbox");
    assert!(mbox.starts_with("From a@example.org "), "{mbox}");
    assert_eq!(
        fs::metadata(a.home.join("mbox")).expect("stat").uid(),
        a.uid
    );

    mkdir_as(&a.home.join("Mail"), &a);
    let dest = format!("mh:{}/Mail/inbox", a.home.display());
    let (kind, _, text) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!(kind, OutcomeKind::Delivered, "{text}");
    assert!(a.home.join("Mail/inbox/1").is_file());
    let seq = fs::read_to_string(a.home.join("Mail/inbox/.mh_sequences")).expect("seq");
    assert!(seq.contains("unseen: 1"), "{seq}");
}

fn command_policy(dir: &Path) -> String {
    format!(
        r#"{POLICY}
[[allow]]
name = "scripts"
kind = "command"
path = "{}/bin"
subtree = true
arguments = true
"#,
        dir.display()
    )
}

fn script(svc: &Service, name: &str, body: &str) -> String {
    let bin = svc.path().join("bin");
    fs::create_dir_all(&bin).expect("bin");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = bin.join(name);
    // Through install(1): a writable descriptor of this threaded process could leak into
    // another test's fork and make the exec fail with ETXTBSY.
    let text = bin.join(format!("{name}.txt"));
    fs::write(&text, format!("#!/bin/sh\n{body}\n")).expect("script");
    let ok = std::process::Command::new("install")
        .arg("-m755")
        .arg(&text)
        .arg(&path)
        .status();
    assert!(ok.expect("install").success());
    path.display().to_string()
}

/// Starts a service whose policy allows scripts under its own directory (the directory is
/// only known after start, so the policy is rewritten; the service reloads it by itself).
fn command_service(extra: &[&str]) -> Service {
    let svc = Service::start(POLICY, extra);
    write_policy(svc.path(), command_policy(svc.path()));
    svc
}

#[test]
fn commands_run_as_the_user_with_a_clean_environment() {
    root_only!();
    let a = fresh_home(USER, "cmd-out");
    mkdir_as(&a.home.join("cmd-out"), &a);
    let svc = command_service(&[]);
    let out = a.home.join("cmd-out/env");
    let prog = script(
        &svc,
        "record",
        &format!(
            "id -u > {0}.uid; env | sort > {0}; cat > {0}.msg",
            out.display()
        ),
    );
    let (kind, _, text) = outcome(&deliver(&svc, USER, &format!("command:{prog}")));
    assert_eq!(kind, OutcomeKind::Delivered, "{text}");
    assert_eq!(
        fs::read_to_string(format!("{}.uid", out.display()))
            .expect("uid")
            .trim(),
        a.uid.to_string()
    );
    let env = fs::read_to_string(&out).expect("env");
    assert!(env.contains("SENDER=a@example.org"), "{env}");
    assert!(
        env.contains(&format!("RECIPIENT={USER}@example.org")),
        "{env}"
    );
    assert!(env.contains(&format!("HOME={}", a.home.display())), "{env}");
    assert!(
        !env.contains("must-not-leak"),
        "the service's environment leaked: {env}"
    );
    let msg = fs::read_to_string(format!("{}.msg", out.display())).expect("msg");
    assert!(msg.ends_with(MESSAGE), "{msg}");
    assert!(msg.starts_with("Return-Path: <a@example.org>\n"), "{msg}");
}

/// The credential drop as the user's program sees it: every uid and gid field (real,
/// effective, saved, filesystem) the user's, the user's group alone, no capability.
#[test]
fn a_command_runs_with_only_the_users_credentials_and_no_capability() {
    root_only!();
    let a = fresh_home(USER, "cmd-out");
    mkdir_as(&a.home.join("cmd-out"), &a);
    let svc = command_service(&[]);
    let out = a.home.join("cmd-out/status");
    let prog = script(
        &svc,
        "status",
        &format!(
            "cat >/dev/null; grep -E '^(Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs):' /proc/self/status > {}",
            out.display()
        ),
    );
    let (kind, _, text) = outcome(&deliver(&svc, USER, &format!("command:{prog}")));
    assert_eq!(kind, OutcomeKind::Delivered, "{text}");
    let status = fs::read_to_string(&out).expect("status");
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    let (u, g) = (a.uid, a.gid);
    assert_eq!(field("Uid"), format!("{u} {u} {u} {u}"), "{status}");
    assert_eq!(field("Gid"), format!("{g} {g} {g} {g}"), "{status}");
    assert_eq!(field("Groups"), g.to_string(), "{status}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(field(set), "0000000000000000", "{set}: {status}");
    }
}

#[test]
fn command_exit_codes_output_and_time_limit() {
    root_only!();
    let _ = account(USER);
    let svc = command_service(&["--command-timeout", "2"]);
    let prog = script(&svc, "tempfail", "echo 4.2.1 try later; exit 75");
    let (kind, status, text) = outcome(&deliver(&svc, USER, &format!("command:{prog}")));
    assert_eq!(
        (kind, status.as_str()),
        (OutcomeKind::Temporary, "4.2.1"),
        "{text}"
    );
    assert!(text.contains("try later"), "{text}");
    let prog = script(&svc, "nouser", "exit 67");
    let (kind, status, _) = outcome(&deliver(&svc, USER, &format!("command:{prog}")));
    assert_eq!((kind, status.as_str()), (OutcomeKind::Permanent, "5.1.1"));
    let prog = script(&svc, "hang", "sleep 60 & sleep 60");
    let started = Instant::now();
    let (kind, _, text) = outcome(&deliver(&svc, USER, &format!("command:{prog}")));
    assert_eq!(kind, OutcomeKind::Temporary, "{text}");
    assert!(text.contains("did not finish"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn the_answer_carries_the_first_4_kb_of_command_output_escaped_into_one_line() {
    root_only!();
    let _ = account(USER);
    let svc = command_service(&[]);
    // A status line, a forged log line, a terminal escape, then 10 000 more bytes.
    let prog = script(
        &svc,
        "chatty",
        "cat >/dev/null; printf '4.2.1 try later\\nfake: status=sent\\033[2J\\n'; \
         head -c 10000 /dev/zero | tr '\\0' y; exit 75",
    );
    let (kind, status, text) = outcome(&deliver(&svc, USER, &format!("command:{prog}")));
    assert_eq!(
        (kind, status.as_str()),
        (OutcomeKind::Temporary, "4.2.1"),
        "{text}"
    );
    assert!(
        text.starts_with(&format!(
            "{prog} exited 75 (temporary failure): try later\\nfake: status=sent\\x1b[2J\\nyyy"
        )),
        "{text}"
    );
    assert!(
        text.ends_with("yyy [output after 4096 bytes dropped]"),
        "{text}"
    );
    let ys = text.matches('y').count();
    assert!(
        (4096 - 40..4096).contains(&ys),
        "the first 4 KB of output, not a line of it: {ys} bytes of it kept"
    );
    assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{text}");
    // The service's log line for it is one line: nothing the command printed starts another.
    let log = svc.log();
    assert!(!log.lines().any(|l| l.starts_with("fake:")), "{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("status=deferred"))
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn virtual_mailboxes_only_as_their_named_user() {
    root_only!();
    let v = account(VMAIL);
    let _ = account(USER);
    let svc = Service::start(POLICY, &[]);
    let tree = svc.path().join("vmail");
    mkdir_as(&tree, &v);
    write_policy(
        svc.path(),
        format!(
            "{POLICY}\n[[allow]]\nname = \"virtual\"\nkind = \"maildir\"\npath = \"{}\"\nsubtree = true\nusers = [\"{VMAIL}\"]\n",
            tree.display()
        ),
    );
    mkdir_as(&tree.join("example.org"), &v);
    let dest = format!("maildir:{}/example.org/joe", tree.display());
    let (kind, _, text) = outcome(&deliver(&svc, VMAIL, &dest));
    assert_eq!(kind, OutcomeKind::Delivered, "{text}");
    let files = files_in(&tree.join("example.org/joe/new"));
    assert_eq!(files.len(), 1);
    assert_eq!(fs::metadata(&files[0]).expect("stat").uid(), v.uid);
    let before = snapshot(&tree);
    let (kind, status, _) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!((kind, status.as_str()), (OutcomeKind::Permanent, "5.7.1"));
    assert_eq!(snapshot(&tree), before);
}

// ---- attacks ----

#[test]
fn a_symlinked_maildir_pointing_into_etc_is_refused() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    let _ = fs::remove_file(a.home.join("Maildir"));
    let target = svc.path().join("etc-like");
    fs::create_dir(&target).expect("dir");
    std::os::unix::fs::symlink(&target, a.home.join("Maildir")).expect("ln");
    let before = snapshot(&target);
    let (kind, _, text) = outcome(&deliver(
        &svc,
        USER,
        &format!("maildir:{}/Maildir", a.home.display()),
    ));
    assert_ne!(kind, OutcomeKind::Delivered, "{text}");
    assert!(text.contains("symbolic link"), "{text}");
    assert_eq!(snapshot(&target), before);
    // Below a symlinked directory (the walk refuses the middle component).
    let _ = fs::remove_file(a.home.join("Mail"));
    std::os::unix::fs::symlink(&target, a.home.join("Mail")).expect("ln");
    let (kind, _, text) = outcome(&deliver(
        &svc,
        USER,
        &format!("mh:{}/Mail/inbox", a.home.display()),
    ));
    assert_eq!(kind, OutcomeKind::Temporary, "{text}");
    assert!(text.contains("symbolic link"), "{text}");
    assert_eq!(snapshot(&target), before);
    fs::remove_file(a.home.join("Mail")).expect("rm");
    fs::remove_file(a.home.join("Maildir")).expect("rm");
}

/// ~/Maildir/new as a symlink to a directory the user could write anyway (their own, and
/// a world-writable one): only the symlink check stands between the delivery and it, so
/// the refusal must name the symlink and nothing may appear there.
#[test]
fn a_symlinked_new_directory_is_refused_even_when_the_user_could_write_its_target() {
    root_only!();
    let a = fresh_home(USER, "x-own-dir");
    let svc = Service::start(POLICY, &[]);
    let own = a.home.join("x-own-dir");
    mkdir_as(&own, &a);
    let open = svc.path().join("open-to-all");
    fs::create_dir(&open).expect("mkdir");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
    for target in [&own, &open] {
        let _ = fs::remove_dir_all(a.home.join("Maildir"));
        for d in ["Maildir", "Maildir/tmp", "Maildir/cur"] {
            mkdir_as(&a.home.join(d), &a);
        }
        std::os::unix::fs::symlink(target, a.home.join("Maildir/new")).expect("ln");
        let before = snapshot(target);
        let (kind, _, text) = outcome(&deliver(
            &svc,
            USER,
            &format!("maildir:{}/Maildir", a.home.display()),
        ));
        assert_ne!(kind, OutcomeKind::Delivered, "{}: {text}", target.display());
        assert!(
            text.contains("symbolic link"),
            "{}: {text}",
            target.display()
        );
        assert_eq!(snapshot(target), before, "{}", target.display());
        assert!(
            files_in(&a.home.join("Maildir/tmp")).is_empty(),
            "a file left in tmp/"
        );
    }
    fs::remove_dir_all(a.home.join("Maildir")).expect("rm");
    fs::remove_dir_all(&own).expect("rm");
}

/// ~/mbox as a symlink to a file the user owns and may write: the user could append to it
/// themselves, but the delivery must not (that is how mail lands in ~/.bashrc or a file
/// the user's programs trust), and the refusal names the symlink. And a hard link to it:
/// refused for its link count.
#[test]
fn symlinked_and_hard_linked_mboxes_are_refused_even_to_the_users_own_files() {
    root_only!();
    let a = fresh_home(USER, "x");
    let svc = Service::start(POLICY, &[]);
    let own = a.home.join("x-own");
    fs::write(&own, "secret\n").expect("own");
    chown(&own, &a);
    fs::set_permissions(&own, fs::Permissions::from_mode(0o600)).expect("chmod");
    let mbox = a.home.join("mbox");
    let _ = fs::remove_file(&mbox);
    std::os::unix::fs::symlink(&own, &mbox).expect("ln");
    let before = snapshot(&a.home);
    let (kind, _, text) = outcome(&deliver(&svc, USER, &format!("mbox:{}", mbox.display())));
    assert_ne!(kind, OutcomeKind::Delivered, "{text}");
    assert!(text.contains("symbolic link"), "{text}");
    assert_eq!(fs::read_to_string(&own).expect("read"), "secret\n");
    assert_eq!(snapshot(&a.home), before, "a file in the home changed");
    fs::remove_file(&mbox).expect("rm");

    // A hard link to the user's own file (another user's file cannot be linked across the
    // protected_hardlinks sysctl, but the check must not rely on that).
    fs::hard_link(&own, &mbox).expect("link");
    let before = snapshot(&a.home);
    let (kind, _, text) = outcome(&deliver(&svc, USER, &format!("mbox:{}", mbox.display())));
    assert_ne!(kind, OutcomeKind::Delivered, "{text}");
    assert!(text.contains("hard links"), "{text}");
    assert_eq!(fs::read_to_string(&own).expect("read"), "secret\n");
    assert_eq!(snapshot(&a.home), before, "a file in the home changed");
    fs::remove_file(&mbox).expect("rm");
    fs::remove_file(&own).expect("rm");
}

#[test]
fn destinations_and_users_outside_the_policy_are_refused() {
    root_only!();
    let a = fresh_home(USER, "x");
    let b = fresh_home(OTHER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    // ~/.bashrc exists for the mbox case to aim at (useradd -m copies it from /etc/skel
    // where there is one).
    let bashrc = a.home.join(".bashrc");
    if !bashrc.exists() {
        fs::write(&bashrc, "# the user's shell start-up file\n").expect("bashrc");
        chown(&bashrc, &a);
    }
    let before_bashrc = fs::read(&bashrc).expect("read");
    let before_home = snapshot(&a.home);
    // /root's own entries only: below it, cargo's and rustup's caches change as others build.
    let root_entries = || -> Vec<(PathBuf, bool, u64, i64)> {
        let mut v: Vec<_> = fs::read_dir("/root")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let m = fs::symlink_metadata(e.path()).ok()?;
                let file = m.is_file();
                let (len, mtime) = if file { (m.len(), m.mtime()) } else { (0, 0) };
                Some((e.path(), file, len, mtime))
            })
            .collect();
        v.sort();
        v
    };
    let before_root = root_entries();
    let cases = [
        (USER, format!("maildir:{}/Maildir", b.home.display())),
        (USER, "maildir:/tmp/cursus-lda-anywhere".to_string()),
        (USER, format!("mbox:{}/.bashrc", a.home.display())),
        ("root", "maildir:/root/Maildir".to_string()),
        ("daemon", "mbox:/var/mail/daemon".to_string()),
        (USER, "command:/bin/sh".to_string()),
    ];
    for (user, dest) in cases {
        let (kind, status, text) = outcome(&deliver(&svc, user, &dest));
        assert_eq!(
            (kind, status.as_str()),
            (OutcomeKind::Permanent, "5.7.1"),
            "{user} {dest}: {text}"
        );
    }
    assert!(!Path::new("/tmp/cursus-lda-anywhere").exists());
    assert!(!b.home.join("Maildir").exists());
    assert_eq!(
        fs::read(&bashrc).expect("read"),
        before_bashrc,
        "~/.bashrc changed"
    );
    assert_eq!(snapshot(&a.home), before_home, "the user's home changed");
    assert_eq!(root_entries(), before_root, "/root changed");
    assert!(
        !Path::new("/root/Maildir").exists()
            || before_root.iter().any(|e| e.0.ends_with("Maildir"))
    );
    let (kind, status, _) = outcome(&deliver(
        &svc,
        "no-such-user-xyz",
        "maildir:/home/x/Maildir",
    ));
    assert_eq!((kind, status.as_str()), (OutcomeKind::Permanent, "5.1.1"));
}

#[test]
fn shell_metacharacters_in_command_arguments_are_refused() {
    root_only!();
    let _ = account(USER);
    let svc = command_service(&[]);
    let marker = svc.path().join("pwned");
    let prog = script(&svc, "echo", "cat >/dev/null; exit 0");
    let dest = format!("command:{prog} ;touch {}", marker.display());
    let (kind, status, text) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!(
        (kind, status.as_str()),
        (OutcomeKind::Permanent, "5.7.1"),
        "{text}"
    );
    assert!(!marker.exists());
}

#[test]
fn dotdot_in_a_path_never_reaches_the_service_logic() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let b = fresh_home(OTHER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    // Build a valid frame and rewrite two bytes of the path into `..`.
    let good = format!("{}/Maildir/zz", a.home.display());
    let mut frame =
        encode_request(&deliver_request(USER, &format!("maildir:{good}"))).expect("frame");
    let at = frame
        .windows(2)
        .position(|w| w == b"zz")
        .expect("path in frame");
    frame[at..at + 2].copy_from_slice(b"..");
    let message = svc.message(MESSAGE);
    let mut client = svc.client();
    client
        .send_raw(&frame, Some(message.as_fd()))
        .expect("send");
    match client.read_answer().expect("answer") {
        Answer::Error { code, text } => {
            assert_eq!(code, ErrorCode::Malformed, "{text}");
            assert!(text.contains(".."), "{text}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(!a.home.join("Maildir").exists());
    assert!(!b.home.join("Maildir").exists());
}

#[test]
fn garbage_truncated_and_oversize_frames_close_the_connection() {
    root_only!();
    let _ = account(USER);
    let svc = Service::start(POLICY, &[]);
    // Garbage.
    let mut c = svc.client();
    c.send_raw(b"\x00\x00\x00\x05\x07garbage", None)
        .expect("send");
    assert!(matches!(c.read_answer(), Ok(Answer::Error { .. })));
    assert!(c.read_answer().is_err(), "the connection must be closed");
    // Oversize length prefix: refused from the first four bytes.
    let mut c = svc.client();
    c.send_raw(b"\x7f\xff\xff\xff\x01\x01", None).expect("send");
    match c.read_answer() {
        Ok(Answer::Error { code, .. }) => assert_eq!(code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    // Truncated: half a ping, then end of stream.
    let mut c = svc.client();
    let ping = encode_request(&Request::Ping).expect("ping");
    c.send_raw(&ping[..3], None).expect("send");
    c.shutdown_write().expect("shutdown");
    assert!(matches!(c.read_answer(), Ok(Answer::Error { .. })));
    // Truncated with the message descriptor attached: half a deliver frame and its fd,
    // then end of stream. An error, and nothing is delivered.
    let a = fresh_home(USER, "Maildir");
    let dest = format!("maildir:{}/Maildir", a.home.display());
    let frame = encode_request(&deliver_request(USER, &dest)).expect("frame");
    let message = svc.message(MESSAGE);
    let mut c = svc.client();
    c.send_raw(&frame[..frame.len() / 2], Some(message.as_fd()))
        .expect("send");
    c.shutdown_write().expect("shutdown");
    match c.read_answer() {
        Ok(Answer::Error { code, text }) => {
            assert_eq!(code, ErrorCode::Malformed, "{text}");
            assert!(text.contains("inside a frame"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.read_answer().is_err(), "the connection must be closed");
    assert!(
        !a.home.join("Maildir").exists(),
        "a truncated request delivered"
    );
    // The service still serves others.
    assert_eq!(
        svc.client().call(&Request::Ping, None).expect("pong"),
        Answer::Pong
    );
}

#[test]
fn descriptors_that_are_not_read_only_regular_files_are_refused() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    let dest = format!("maildir:{}/Maildir", a.home.display());
    let dir = fs::File::open(svc.path()).expect("dir");
    let (pipe_r, _pipe_w) = std::io::pipe().expect("pipe");
    let writable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(svc.path().join("policy.toml"))
        .expect("rw");
    let fds: [(&str, std::os::fd::BorrowedFd<'_>); 3] = [
        ("directory", dir.as_fd()),
        ("pipe", pipe_r.as_fd()),
        ("writing", writable.as_fd()),
    ];
    for (what, fd) in fds {
        let mut c = svc.client();
        match c.call(&deliver_request(USER, &dest), Some(fd)) {
            Ok(Answer::Error { code, text }) => {
                assert_eq!(code, ErrorCode::Refused, "{what}: {text}");
                assert!(text.contains(what), "{what}: {text}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(!a.home.join("Maildir").exists());
    // A request that needs a descriptor without one, and a ping with one.
    let mut c = svc.client();
    match c.call(&deliver_request(USER, &dest), None) {
        Ok(Answer::Error { code, .. }) => assert_eq!(code, ErrorCode::OutOfOrder),
        other => panic!("{other:?}"),
    }
    let msg = svc.message(MESSAGE);
    let mut c = svc.client();
    match c.call(&Request::Ping, Some(msg.as_fd())) {
        Ok(Answer::Error { code, .. }) => assert_eq!(code, ErrorCode::OutOfOrder),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_peer_with_the_wrong_uid_is_refused_even_when_the_socket_is_open() {
    root_only!();
    let _ = account(OTHER);
    let svc = Service::start(POLICY, &[]);
    // First layer: mode 0600 owned by the peer (nobody).
    let meta = fs::metadata(&svc.socket).expect("stat");
    assert_eq!(meta.mode() & 0o777, 0o600);
    // Second layer, tested alone: open the socket to everyone; SO_PEERCRED still refuses.
    fs::set_permissions(&svc.socket, fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = Command::new("setpriv")
        .args(["--reuid", OTHER, "--regid", OTHER, "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_cursus-lda"))
        .args(["request", "--socket"])
        .arg(&svc.socket)
        .arg("ping")
        .output()
        .expect("setpriv runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("Refused"), "{stdout}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        svc.log().contains("not the configured peer"),
        "{}",
        svc.log()
    );
}

#[test]
fn an_unsafe_refinement_file_is_ignored_and_a_safe_one_applies() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let _ = fs::remove_dir_all(a.home.join(".config"));
    let svc = Service::start(POLICY, &[]);
    let config = a.home.join(".config/cursus");
    mkdir_as(&a.home.join(".config"), &a);
    mkdir_as(&config, &a);
    let file = config.join("lda-policy.toml");
    fs::write(&file, "remove = [\"home-maildir\"]\n").expect("refinement");
    chown(&file, &a);
    let dest = format!("maildir:{}/Maildir", a.home.display());
    // World-writable: anyone could have written it; ignored, delivery goes on.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).expect("chmod");
    let (kind, _, text) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!(kind, OutcomeKind::Delivered, "{text}");
    assert!(
        svc.log().contains("writable by group or others"),
        "{}",
        svc.log()
    );
    // Safe: the user removed the rule, so the delivery is refused.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
    let (kind, status, text) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!(
        (kind, status.as_str()),
        (OutcomeKind::Permanent, "5.7.1"),
        "{text}"
    );
    fs::remove_dir_all(a.home.join(".config")).expect("rm");
}

/// Every kind of unsafe refinement file is ignored (the delivery goes on under the system
/// policy, which the refinement would have narrowed) and the log line says which and why.
#[test]
fn refinement_files_owned_by_another_user_symlinked_fifos_or_oversize_are_ignored() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let b = account(OTHER);
    let svc = Service::start(POLICY, &[]);
    let config = a.home.join(".config/cursus");
    mkdir_as(&a.home.join(".config"), &a);
    mkdir_as(&config, &a);
    let file = config.join("lda-policy.toml");
    let dest = format!("maildir:{}/Maildir", a.home.display());
    let refinement = "remove = [\"home-maildir\"]\n";
    let safe_elsewhere = a.home.join("x-own");
    let place = |how: &str| {
        let _ = fs::remove_file(&file);
        match how {
            "another user's" => {
                fs::write(&file, refinement).expect("write");
                chown(&file, &b);
                fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
            }
            "symlink" => {
                // To a file that would itself be safe: the link is the problem.
                fs::write(&safe_elsewhere, refinement).expect("write");
                chown(&safe_elsewhere, &a);
                fs::set_permissions(&safe_elsewhere, fs::Permissions::from_mode(0o600))
                    .expect("chmod");
                std::os::unix::fs::symlink(&safe_elsewhere, &file).expect("ln");
            }
            "fifo" => {
                nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .expect("mkfifo");
                chown(&file, &a);
            }
            "oversize" => {
                let mut text = refinement.to_string();
                text.push_str(&"# padding\n".repeat(7000));
                fs::write(&file, text).expect("write");
                chown(&file, &a);
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
            }
            _ => {
                fs::write(&file, refinement).expect("write");
                chown(&file, &a);
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
            }
        }
    };
    let cases = [
        (
            "another user's",
            format!("it is owned by uid {}, not the user", b.uid),
        ),
        ("symlink", "it is a symbolic link".to_string()),
        ("fifo", "it is not a regular file".to_string()),
        ("oversize", "it is larger than 65536 bytes".to_string()),
    ];
    for (how, why) in cases {
        place(how);
        let (kind, _, text) = outcome(&deliver(&svc, USER, &dest));
        assert_eq!(kind, OutcomeKind::Delivered, "{how}: {text}");
        let expected = format!("ignoring {} of user {USER}: {why}", file.display());
        let log = svc.log();
        assert!(log.contains(&expected), "{how}: no `{expected}` in\n{log}");
    }
    // The same refinement, safe, applies: the test's file really narrows the policy.
    place("safe");
    let (kind, status, text) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!(
        (kind, status.as_str()),
        (OutcomeKind::Permanent, "5.7.1"),
        "{text}"
    );
    fs::remove_dir_all(a.home.join(".config")).expect("rm");
    let _ = fs::remove_file(&safe_elsewhere);
}

#[test]
fn many_users_delivered_concurrently() {
    root_only!();
    let users = [USER, OTHER, VMAIL];
    let homes: Vec<PathBuf> = users
        .iter()
        .map(|u| fresh_home(u, "Maildir").home)
        .collect();
    let svc = Service::start(POLICY, &[]);
    let per_thread = 25;
    std::thread::scope(|s| {
        for t in 0..8 {
            let user = users[t % users.len()];
            let home = homes[t % users.len()].clone();
            let svc = &svc;
            s.spawn(move || {
                let mut client = svc.client();
                let message = svc.message(MESSAGE);
                for _ in 0..per_thread {
                    let dest = format!("maildir:{}/Maildir", home.display());
                    let answer = client
                        .call(&deliver_request(user, &dest), Some(message.as_fd()))
                        .expect("answer");
                    assert_eq!(outcome(&answer).0, OutcomeKind::Delivered);
                }
            });
        }
    });
    let total: usize = homes
        .iter()
        .map(|h| files_in(&h.join("Maildir/new")).len())
        .sum();
    assert_eq!(total, 8 * per_thread);
    for (i, user) in users.iter().enumerate() {
        let expected = (0..8).filter(|t| t % users.len() == i).count() * per_thread;
        assert_eq!(
            files_in(&homes[i].join("Maildir/new")).len(),
            expected,
            "{user}"
        );
    }
}

#[test]
fn a_policy_edit_applies_to_the_next_request_on_an_open_connection() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    let dest = format!("maildir:{}/Maildir", a.home.display());
    let message = svc.message(MESSAGE);
    // One connection for the whole test, as cursusd keeps its connections open.
    let mut client = svc.client();
    let mut ask = || {
        outcome(
            &client
                .call(&deliver_request(USER, &dest), Some(message.as_fd()))
                .expect("answer"),
        )
    };
    assert_eq!(ask().0, OutcomeKind::Delivered);
    write_policy(svc.path(), "min_uid = 1000\n");
    let (kind, status, text) = ask();
    assert_eq!(
        (kind, status.as_str()),
        (OutcomeKind::Permanent, "5.7.1"),
        "the removed destination is still allowed on an open connection: {text}"
    );
    // A broken edit refuses everything (temporary: mail waits) rather than keep the
    // previous policy in force, and says so in the answer and in the log.
    write_policy(svc.path(), format!("{POLICY}\nmin_uid = \"x\"\n"));
    let (kind, status, text) = ask();
    assert_eq!(
        (kind, status.as_str()),
        (OutcomeKind::Temporary, "4.3.5"),
        "{text}"
    );
    assert!(text.contains("does not load"), "{text}");
    assert!(svc.log().contains("does not load"), "{}", svc.log());
    // Fixed: the next request delivers again.
    write_policy(svc.path(), POLICY);
    let (kind, _, text) = ask();
    assert_eq!(kind, OutcomeKind::Delivered, "{text}");
    assert_eq!(files_in(&a.home.join("Maildir/new")).len(), 2);
    // A new connection sees the current policy too.
    write_policy(svc.path(), "min_uid = 1000\n");
    let (kind, status, _) = outcome(&deliver(&svc, USER, &dest));
    assert_eq!((kind, status.as_str()), (OutcomeKind::Permanent, "5.7.1"));
    assert!(svc.log().contains("policy reloaded"), "{}", svc.log());
}

#[test]
fn a_policy_edit_reaches_a_socket_pair_connection() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let dir = tempfile::tempdir().expect("tmp");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    write_policy(dir.path(), POLICY);
    let (mut client, mut child) = socket_pair_service(dir.path());
    let msg_path = dir.path().join("msg");
    fs::write(&msg_path, MESSAGE).expect("msg");
    let msg = fs::File::open(&msg_path).expect("open");
    let dest = format!("maildir:{}/Maildir", a.home.display());
    let mut ask = || {
        outcome(
            &client
                .call(&deliver_request(USER, &dest), Some(msg.as_fd()))
                .expect("answer"),
        )
    };
    assert_eq!(ask().0, OutcomeKind::Delivered);
    write_policy(dir.path(), "min_uid = 1000\n");
    let (kind, status, text) = ask();
    assert_eq!(
        (kind, status.as_str()),
        (OutcomeKind::Permanent, "5.7.1"),
        "{text}"
    );
    assert_eq!(files_in(&a.home.join("Maildir/new")).len(), 1);
    drop(client);
    let _ = child.wait();
}

fn envelope_for(user: &str) -> Envelope {
    Envelope {
        sender: Some("a@example.org".into()),
        original_recipient: format!("{user}@example.org"),
        final_recipient: format!("{user}@example.org"),
        extension: None,
    }
}

#[test]
fn the_users_filter_runs_as_the_user_and_answers_with_decisions() {
    root_only!();
    use cursus_lda::protocol::{FilterDecision, FilterStage};
    let a = fresh_home(USER, "x");
    let svc = Service::start(POLICY, &[]);
    let script = a.home.join(".dovecot.sieve");
    fs::write(
        &script,
        "require \"fileinto\";\nif header :contains \"subject\" \"hello\" { fileinto \"Greetings\"; }\n",
    )
    .expect("script");
    chown(&script, &a);
    // Explicit: CI may run with umask 0 (files would be created 0666).
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).expect("chmod");
    let filter = |stage: FilterStage, message: Option<&fs::File>| {
        svc.client()
            .call(
                &Request::Filter {
                    user: USER.into(),
                    envelope: envelope_for(USER),
                    stage,
                },
                message.map(|m| m.as_fd()),
            )
            .expect("answer")
    };
    // At RCPT the script needs the header: the answer says so and decides nothing.
    match filter(FilterStage::Rcpt, None) {
        Answer::Filter {
            needs_message,
            decisions,
        } => {
            assert!(needs_message);
            assert!(decisions.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let message = svc.message(MESSAGE);
    match filter(FilterStage::Data, Some(&message)) {
        Answer::Filter {
            needs_message,
            decisions,
        } => {
            assert!(!needs_message);
            assert!(
                matches!(decisions.as_slice(), [FilterDecision::FileInto { mailbox, .. }] if mailbox == "Greetings"),
                "{decisions:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A script others can write is never run.
    fs::set_permissions(&script, fs::Permissions::from_mode(0o666)).expect("chmod");
    match filter(FilterStage::Data, Some(&message)) {
        Answer::Outcome { kind, .. } => assert_eq!(kind, OutcomeKind::Temporary),
        other => panic!("{other:?}"),
    }
    fs::remove_file(&script).expect("the test's script is removed, not left at 0666");
    // Never as root.
    let answer = svc
        .client()
        .call(
            &Request::Filter {
                user: "root".into(),
                envelope: envelope_for("root"),
                stage: FilterStage::Rcpt,
            },
            None,
        )
        .expect("answer");
    assert!(
        matches!(
            answer,
            Answer::Error {
                code: ErrorCode::Refused,
                ..
            }
        ),
        "{answer:?}"
    );
}

#[test]
fn read_forward_returns_entries_and_refuses_an_unsafe_file() {
    root_only!();
    use cursus_lda::protocol::ForwardEntry;
    let a = fresh_home(USER, "x");
    let svc = Service::start(POLICY, &[]);
    let forward = a.home.join(".forward");
    fs::write(
        &forward,
        format!("joe@example.org, \\{USER}\n\"|/usr/bin/procmail\"\n"),
    )
    .expect("fwd");
    chown(&forward, &a);
    fs::set_permissions(&forward, fs::Permissions::from_mode(0o644)).expect("chmod");
    let ask = || {
        svc.client()
            .call(&Request::ReadForward { user: USER.into() }, None)
            .expect("answer")
    };
    match ask() {
        Answer::Forward { entries } => assert_eq!(
            entries,
            vec![
                ForwardEntry::Address("joe@example.org".into()),
                ForwardEntry::Local(USER.into()),
                ForwardEntry::Command("/usr/bin/procmail".into()),
            ]
        ),
        other => panic!("{other:?}"),
    }
    fs::set_permissions(&forward, fs::Permissions::from_mode(0o666)).expect("chmod");
    assert!(matches!(
        ask(),
        Answer::Error {
            code: ErrorCode::Refused,
            ..
        }
    ));
    fs::remove_file(&forward).expect("rm");
    assert_eq!(ask(), Answer::Forward { entries: vec![] });
}

/// Starts `cursus-lda serve` on one end of a socket pair, as cursusd does, with the policy
/// in `dir`; returns a client on the other end.
fn socket_pair_service(dir: &Path) -> (Client, Child) {
    let policy = dir.join("policy.toml");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
    // The service gets its end as descriptor 3, as cursusd will pass it.
    let child = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" serve --connection-fd 3 --policy \"$1\" 3<&0 0</dev/null")
        .arg(env!("CARGO_BIN_EXE_cursus-lda"))
        .arg(&policy)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    (Client::from_stream(ours), child)
}

/// `cursus-lda request ...` by hand: what it prints and its exit status for each request.
#[test]
fn the_request_command_sends_deliver_filter_and_read_forward() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    let message = svc.path().join("cli-msg");
    fs::write(&message, MESSAGE).expect("msg");
    let request = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cursus-lda"))
            .arg("request")
            .arg("--socket")
            .arg(&svc.socket)
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let recipient = format!("{USER}@example.org");
    let msg = message.to_str().expect("utf8");
    let dest = format!("maildir:{}/Maildir", a.home.display());
    let deliver = |dest: &str| {
        request(&[
            "deliver",
            "--user",
            USER,
            "--destination",
            dest,
            "--sender",
            "a@example.org",
            "--recipient",
            &recipient,
            "--return-path",
            "--message",
            msg,
        ])
    };
    let (code, out, err) = deliver(&dest);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("delivered 2.0.0 delivered to "), "{out}");
    let files = files_in(&a.home.join("Maildir/new"));
    assert_eq!(files.len(), 1);
    let stored = fs::read_to_string(&files[0]).expect("read");
    assert!(
        stored.starts_with("Return-Path: <a@example.org>\n"),
        "{stored}"
    );
    // Refused by the policy: permanent, exit 69.
    let (code, out, _) = deliver("maildir:/tmp/cursus-lda-cli-anywhere");
    assert_eq!(code, Some(69), "{out}");
    assert!(out.starts_with("permanent 5.7.1 "), "{out}");
    assert!(!Path::new("/tmp/cursus-lda-cli-anywhere").exists());

    // filter, at rcpt (no message) and at data (with one).
    let script = a.home.join(".dovecot.sieve");
    fs::write(&script, "require \"fileinto\";\nif header :contains \"subject\" \"hello\" { fileinto \"Greetings\"; }\n")
        .expect("script");
    chown(&script, &a);
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, out, err) = request(&["filter", "--user", USER, "--recipient", &recipient]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "filter needs_message=true", "{out}");
    let (code, out, err) = request(&[
        "filter",
        "--user",
        USER,
        "--recipient",
        &recipient,
        "--message",
        msg,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("filter needs_message=false\nFileInto"),
        "{out}"
    );
    assert!(out.contains("Greetings"), "{out}");
    fs::remove_file(&script).expect("rm");

    // read-forward.
    let forward = a.home.join(".forward");
    fs::write(&forward, "joe@example.org\n").expect("fwd");
    chown(&forward, &a);
    fs::set_permissions(&forward, fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, out, err) = request(&["read-forward", "--user", USER]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.trim(),
        "forward 1 entries\nAddress(\"joe@example.org\")",
        "{out}"
    );
    // Unsafe .forward: an error answer, exit 1.
    fs::set_permissions(&forward, fs::Permissions::from_mode(0o666)).expect("chmod");
    let (code, out, _) = request(&["read-forward", "--user", USER]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("error Refused"), "{out}");
    fs::remove_file(&forward).expect("rm");
    // No service there: exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_cursus-lda"))
        .args(["request", "--socket"])
        .arg(svc.path().join("no-such.sock"))
        .arg("ping")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_socket_pair_inherited_from_the_parent_is_served_until_it_closes() {
    root_only!();
    let a = fresh_home(USER, "x");
    let dir = tempfile::tempdir().expect("tmp");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    write_policy(dir.path(), POLICY);
    let (mut client, mut child) = socket_pair_service(dir.path());
    assert_eq!(
        client.call(&Request::Ping, None).expect("pong"),
        Answer::Pong
    );
    let msg_path = dir.path().join("msg");
    fs::write(&msg_path, MESSAGE).expect("msg");
    let msg = fs::File::open(&msg_path).expect("open");
    let dest = format!("maildir:{}/Maildir", a.home.display());
    let answer = client
        .call(&deliver_request(USER, &dest), Some(msg.as_fd()))
        .expect("answer");
    assert_eq!(outcome(&answer).0, OutcomeKind::Delivered, "{answer:?}");
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not end with its last connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The race itself, end to end: while deliveries to ~/mbox run, an attacker (the user)
/// keeps exchanging ~/mbox, a single-link file the user owns, with a symlink to a file the
/// user can write outside the allowed destination (renameat2 RENAME_EXCHANGE: the name
/// always exists, the real file always has one link). Some deliveries must land in the real
/// mailbox (so the window is reached, not refused for another reason) and some must be
/// refused because of the swap; the file behind the symlink never changes. The window
/// opened deterministically is `store.rs`'s `an_mbox_swapped_for_a_symlink_between_walk_
/// and_open_is_refused`.
#[test]
fn a_mailbox_swapped_for_a_symlink_while_deliveries_run_never_writes_through_it() {
    root_only!();
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let a = fresh_home(USER, "mbox.alt");
    let svc = Service::start(POLICY, &[]);
    // The victim: the user's own file, which the user may write, outside the policy.
    let victim = a.home.join("x-own");
    fs::write(&victim, "the user's own file, not a mailbox\n").expect("victim");
    chown(&victim, &a);
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = fs::read(&victim).expect("read");
    let mbox = a.home.join("mbox");
    let alt = a.home.join("mbox.alt");
    fs::write(&mbox, "").expect("mbox");
    chown(&mbox, &a);
    fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink(&victim, &alt).expect("ln");
    std::os::unix::fs::lchown(&alt, Some(a.uid), Some(a.gid)).expect("lchown");
    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let message = svc.message(MESSAGE);
    let dest = format!("mbox:{}", mbox.display());
    let (mut landed, mut refused, mut other) = (0usize, 0usize, Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                renameat2(
                    AT_FDCWD,
                    &mbox,
                    AT_FDCWD,
                    &alt,
                    RenameFlags::RENAME_EXCHANGE,
                )
                .expect("exchange");
                swaps.fetch_add(1, Ordering::Relaxed);
                // Vary how long each state lasts so the swap falls at every step of a
                // delivery, from the policy check to the lock.
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let spin = (n >> 16) % 400;
                let until = Instant::now() + Duration::from_micros(u64::from(spin));
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
        });
        let mut client = svc.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (landed < 5 || refused < 5) && Instant::now() < deadline {
            let answer = client
                .call(&deliver_request(USER, &dest), Some(message.as_fd()))
                .expect("answer");
            let (kind, _, text) = outcome(&answer);
            if kind == OutcomeKind::Delivered {
                landed += 1;
            } else if text.contains("symbolic link") || text.contains("changed") {
                refused += 1;
            } else {
                other.push(text);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "{landed} deliveries landed, {refused} refused because of the swap, {} swaps",
        swaps.load(Ordering::Relaxed)
    );
    assert_eq!(
        fs::read(&victim).expect("read"),
        before,
        "the victim changed"
    );
    assert!(other.is_empty(), "refused for another reason: {other:?}");
    assert!(
        landed >= 5,
        "the race window was never passed: {landed} landed"
    );
    assert!(refused >= 5, "the swap was never seen: {refused} refused");
    // Every delivery that said so is in the real mailbox, whichever name it has now.
    let real = [&mbox, &alt]
        .into_iter()
        .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .expect("the real mailbox");
    let stored = fs::read_to_string(real).expect("read");
    assert_eq!(stored.matches("\nbody line\n").count(), landed, "{stored}");
    assert_eq!(fs::metadata(real).expect("stat").nlink(), 1);
    for p in [&mbox, &alt, &victim] {
        let _ = fs::remove_file(p);
    }
}

#[test]
fn a_policy_file_others_can_write_is_never_trusted() {
    root_only!();
    let dir = tempfile::tempdir().expect("tmp");
    write_policy(dir.path(), POLICY);
    let policy = dir.path().join("policy.toml");
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = Command::new(env!("CARGO_BIN_EXE_cursus-lda"))
        .args(["serve", "--socket"])
        .arg(dir.path().join("sock"))
        .arg("--policy")
        .arg(&policy)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(!dir.path().join("sock").exists());
}

/// A Maildir over quota: the answer says when the mailbox was last read (its cur/ time),
/// which the daemon, not allowed into the home, needs to defer or bounce.
#[test]
fn over_quota_answers_say_when_the_maildir_was_last_read() {
    root_only!();
    let a = fresh_home(USER, "Maildir");
    let svc = Service::start(POLICY, &[]);
    let dest = format!("maildir:{}/Maildir", a.home.display());
    assert_eq!(
        outcome(&deliver(&svc, USER, &dest)).0,
        OutcomeKind::Delivered
    );
    let md = a.home.join("Maildir");
    let size = md.join("maildirsize");
    fs::write(&size, "10S\n").expect("maildirsize");
    std::os::unix::fs::chown(&size, Some(a.uid), Some(a.gid)).expect("chown");
    let ok = std::process::Command::new("touch")
        .arg("-d")
        .arg("@1700000000")
        .arg(md.join("cur"))
        .status();
    assert!(ok.expect("touch").success());
    match deliver(&svc, USER, &dest) {
        Answer::OverQuota {
            kind,
            status,
            mailbox_read,
            text,
        } => {
            assert_eq!(kind, OutcomeKind::Permanent, "{text}");
            assert_eq!(status.to_string(), "5.2.2");
            assert_eq!(mailbox_read, 1_700_000_000);
        }
        other => panic!("expected an over-quota answer, got {other:?}"),
    }
    assert_eq!(
        files_in(&md.join("new")).len(),
        1,
        "nothing stored over quota"
    );
}
