//! mbox delivery against a real file system: format, safe-open refusals, locks held by other
//! processes, stale dotlocks, and rollback when a write fails (mda-interface §8 items 6, 8,
//! 9, 10).
//!
//! Trusts: python3 (its `mailbox` module as an independent reader, `fcntl.lockf` as another
//! process holding a POSIX lock). Fails: by assertion. The rollback test re-runs this test
//! binary as a child with a small RLIMIT_FSIZE, so the limit never touches the other tests.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cursus_mail::OutcomeKind;
use cursus_mailbox::{
    FileKind, LockKind, MailboxError, MboxOptions, Message, Spooled, UnsafeReason, deliver_mbox,
};

fn message(header: &str, body: &str) -> Message {
    Message {
        prefix: b"Return-Path: <a@example.org>\n".to_vec(),
        header: header.as_bytes().to_vec(),
        body: Spooled::from_bytes(body.as_bytes().to_vec()),
    }
}

fn opts() -> MboxOptions {
    MboxOptions {
        lock_timeout: Duration::from_secs(5),
        ..MboxOptions::default()
    }
}

#[test]
fn two_deliveries_make_a_well_formed_mboxrd_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    let m1 = message(
        "Subject: one\nStatus: RO\nX-UID: 7\n\n",
        "From here on\n>From there\nend",
    );
    let stored = deliver_mbox(&path, Some("a@example.org"), &m1, &opts()).expect("first");
    assert_eq!(stored.path, path);
    assert_eq!(
        fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let m2 = message("Subject: two\n\n", "body two\n");
    deliver_mbox(&path, None, &m2, &opts()).expect("second");
    assert!(!tmp.path().join("mbox.lock").exists());

    let text = fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(lines[0].starts_with("From a@example.org  "), "{}", lines[0]);
    assert_eq!(lines[0].len(), "From a@example.org  ".len() + 24);
    let rest = text.split_once('\n').expect("line").1;
    let second_from = rest
        .find("\nFrom MAILER-DAEMON  ")
        .expect("second From_ line");
    assert_eq!(
        &rest[..second_from + 1],
        "Return-Path: <a@example.org>\nSubject: one\n\n>From here on\n>>From there\nend\n\n"
    );
    assert!(text.ends_with("Return-Path: <a@example.org>\nSubject: two\n\nbody two\n\n"));

    let script = r#"
import mailbox, sys
mb = mailbox.mbox(sys.argv[1], create=False)
msgs = list(mb)
print(len(msgs))
for m in msgs:
    print(m["Subject"], m.get("Status"), m.get_from().split()[0])
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2\none None a@example.org\ntwo None MAILER-DAEMON\n"
    );
}

#[test]
fn existing_mailbox_without_blank_line_gets_one_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    fs::write(
        &path,
        "From x  Thu Jan  1 00:00:00 1970\nSubject: old\n\nold body",
    )
    .expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    deliver_mbox(
        &path,
        Some("b@example.org"),
        &message("Subject: new\n\n", "new\n"),
        &opts(),
    )
    .expect("deliver");
    let text = fs::read_to_string(&path).expect("read");
    assert!(
        text.contains("old body\n\nFrom b@example.org  "),
        "{text:?}"
    );
}

#[test]
fn symlinked_mailbox_is_refused_permanently() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let victim = tmp.path().join("passwd");
    fs::write(&victim, "root:x:0:0\n").expect("victim");
    let path = tmp.path().join("mbox");
    symlink(&victim, &path).expect("symlink");
    let err = deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &opts()).expect_err("refuse");
    assert!(
        matches!(
            err,
            MailboxError::Unsafe {
                reason: UnsafeReason::Symlink,
                ..
            }
        ),
        "{err:?}"
    );
    let outcome = err.outcome();
    assert_eq!(
        (outcome.kind, outcome.status.to_string()),
        (OutcomeKind::Permanent, "5.2.0".into())
    );
    assert_eq!(outcome.exit_code(), 77);
    assert!(
        err.to_string().contains(path.to_str().expect("utf8")),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&victim).expect("read"), "root:x:0:0\n");

    // A dangling symlink is not created through either.
    let dangling = tmp.path().join("dangling");
    symlink(tmp.path().join("created-elsewhere"), &dangling).expect("symlink");
    deliver_mbox(&dangling, None, &message("S: x\n\n", "b\n"), &opts()).expect_err("refuse");
    assert!(!tmp.path().join("created-elsewhere").exists());
}

#[test]
fn hard_linked_mailbox_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let other = tmp.path().join("other-users-file");
    fs::write(&other, "secret\n").expect("write");
    let path = tmp.path().join("mbox");
    fs::hard_link(&other, &path).expect("link");
    let err = deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &opts()).expect_err("refuse");
    assert!(
        matches!(
            err,
            MailboxError::Unsafe {
                reason: UnsafeReason::HardLinks(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.outcome().kind, OutcomeKind::Permanent);
    assert_eq!(fs::read_to_string(&other).expect("read"), "secret\n");
}

#[test]
fn fifo_at_the_mailbox_path_returns_promptly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let start = Instant::now();
    let err = deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &opts()).expect_err("refuse");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(
            err,
            MailboxError::Unsafe {
                reason: UnsafeReason::NotRegular(FileKind::Fifo),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn mailbox_owned_by_someone_else_is_deferred() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to chown a file to another user");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    fs::write(&path, "").expect("write");
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
    let err = deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &opts()).expect_err("refuse");
    assert!(
        matches!(
            err,
            MailboxError::Unsafe {
                reason: UnsafeReason::WrongOwner { owner: 65534, .. },
                ..
            }
        ),
        "{err:?}"
    );
    let outcome = err.outcome();
    assert_eq!(
        (outcome.kind, outcome.status.to_string()),
        (OutcomeKind::Temporary, "4.2.0".into())
    );
    assert_eq!(fs::metadata(&path).expect("meta").len(), 0);
}

#[test]
fn missing_mailbox_without_create_is_temporary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    let o = MboxOptions {
        create: false,
        ..opts()
    };
    let err = deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &o).expect_err("missing");
    assert_eq!(err.outcome().kind, OutcomeKind::Temporary);
    assert!(!path.exists());
}

/// Starts python3 holding a POSIX write lock on `path` for `seconds`; returns once it holds it.
fn hold_fcntl_lock(path: &Path, seconds: f64) -> Child {
    let script = "import fcntl, sys, time\n\
                  f = open(sys.argv[1], 'r+')\n\
                  fcntl.lockf(f, fcntl.LOCK_EX)\n\
                  print('locked', flush=True)\n\
                  time.sleep(float(sys.argv[2]))\n";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .arg(seconds.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "locked");
    child
}

#[test]
fn fcntl_lock_held_by_another_process_times_out_as_temporary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    fs::write(&path, "").expect("write");
    let mut holder = hold_fcntl_lock(&path, 30.0);
    let o = MboxOptions {
        lock_timeout: Duration::from_millis(700),
        ..opts()
    };
    let start = Instant::now();
    let result = deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &o);
    let elapsed = start.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    let err = result.expect_err("must time out");
    assert!(
        matches!(
            err,
            MailboxError::LockTimeout {
                lock: LockKind::Fcntl,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let outcome = err.outcome();
    assert_eq!(
        (outcome.kind, outcome.status.to_string()),
        (OutcomeKind::Temporary, "4.2.0".into())
    );
    assert_eq!(fs::metadata(&path).expect("meta").len(), 0);
    assert!(
        !tmp.path().join("mbox.lock").exists(),
        "no dotlock left behind"
    );
}

#[test]
fn delivery_waits_for_a_short_fcntl_lock() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    fs::write(&path, "").expect("write");
    let mut holder = hold_fcntl_lock(&path, 0.5);
    let start = Instant::now();
    let result = deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &opts());
    let _ = holder.wait();
    result.expect("delivered after the lock was released");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert!(fs::metadata(&path).expect("meta").len() > 0);
}

#[test]
fn fresh_dotlock_makes_us_wait_then_time_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    fs::write(&path, "").expect("write");
    // A live pid (ours) in a fresh lock: never stale.
    fs::write(
        tmp.path().join("mbox.lock"),
        format!("{}\n", std::process::id()),
    )
    .expect("lock");
    let o = MboxOptions {
        lock_timeout: Duration::from_millis(500),
        ..opts()
    };
    let start = Instant::now();
    let err = deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &o).expect_err("timeout");
    assert!(
        matches!(
            err,
            MailboxError::LockTimeout {
                lock: LockKind::Dotlock,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(
        tmp.path().join("mbox.lock").exists(),
        "someone else's lock is left alone"
    );
    assert_eq!(fs::metadata(&path).expect("meta").len(), 0);

    // Old but its pid is alive: still not stale.
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(tmp.path().join("mbox.lock"))
        .and_then(|f| f.set_modified(old))
        .expect("age the lock");
    let o = MboxOptions {
        stale_dotlock_after: Duration::from_secs(60),
        ..o
    };
    let err = deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &o).expect_err("timeout");
    assert!(matches!(err, MailboxError::LockTimeout { .. }), "{err:?}");
}

#[test]
fn stale_dotlock_with_dead_pid_is_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    fs::write(&path, "").expect("write");
    let mut dead = Command::new("true").spawn().expect("true");
    let dead_pid = dead.id();
    dead.wait().expect("wait");
    let lock = tmp.path().join("mbox.lock");
    fs::write(&lock, format!("{dead_pid}\n")).expect("lock");
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&lock)
        .and_then(|f| f.set_modified(old))
        .expect("age");
    let o = MboxOptions {
        stale_dotlock_after: Duration::from_secs(60),
        ..opts()
    };
    deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &o).expect("stale lock broken");
    assert!(!lock.exists());
    assert!(fs::metadata(&path).expect("meta").len() > 0);

    // The same old lock without any pid is stale too.
    fs::write(&lock, "").expect("lock");
    fs::File::options()
        .write(true)
        .open(&lock)
        .and_then(|f| f.set_modified(old))
        .expect("age");
    deliver_mbox(&path, None, &message("S: x\n\n", "b\n"), &o).expect("stale lock broken");
    assert!(!lock.exists());
}

const CHILD_ENV: &str = "CURSUS_MAILBOX_ROLLBACK_CHILD";

/// Runs only as the child of `mbox_is_truncated_back_when_a_write_fails`: limits the file
/// size, blocks SIGXFSZ (so the write fails with EFBIG instead of killing us), delivers a
/// message too big for the limit and prints the outcome.
#[test]
fn rollback_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut set = SigSet::empty();
    set.add(Signal::SIGXFSZ);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).expect("sigmask");
    let len = fs::metadata(&path).expect("meta").len();
    let (_, hard) = getrlimit(Resource::RLIMIT_FSIZE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_FSIZE, len + 1000, hard).expect("setrlimit");
    let body = "x".repeat(100_000);
    let result = deliver_mbox(
        Path::new(&path),
        None,
        &message("S: big\n\n", &body),
        &opts(),
    );
    match result {
        Ok(_) => println!("RESULT delivered"),
        Err(e) => println!("RESULT {} {}", e.outcome().status, e.is_over_quota()),
    }
}

#[test]
fn mbox_is_truncated_back_when_a_write_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    let original = "From x  Thu Jan  1 00:00:00 1970\nSubject: old\n\nold\n\n";
    fs::write(&path, original).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "rollback_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .output()
        .expect("child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // EFBIG: mailbox full, permanent 5.2.2 (not an over-quota condition of ours).
    assert!(stdout.contains("RESULT 5.2.2 false"), "{stdout}");
    assert_eq!(fs::read_to_string(&path).expect("read"), original);
    assert!(!tmp.path().join("mbox.lock").exists());
}
