//! `cursus sieve check` and `cursus sieve test` as a user runs them: the real binary on
//! script and message files in a temporary directory, asserting the whole output.

use std::path::PathBuf;
use std::process::Command;

mod invocation;
use invocation::cursus;

const MESSAGE: &str = "Return-Path: <owner-rust@lists.example.org>\n\
From: Alice Example <alice@example.org>\n\
To: bob+lists@example.net\n\
List-Id: Rust users <rust-users.lists.example.org>\n\
Subject: [rust-users] lifetimes again\n\
X-Spam-Flag: NO\n\
\n\
Hello.\n";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

#[test]
fn check_reports_ok_for_good_scripts() {
    let f = Files::new();
    f.write("a.sieve", "require \"fileinto\";\nfileinto \"Junk\";\n");
    f.write("b.sieve", "keep;\n");
    let r = cursus(&["sieve", "check", "a.sieve", "b.sieve"], f.dir.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "a.sieve: ok\nb.sieve: ok\n");
}

#[test]
fn check_reports_errors_with_line_and_column() {
    let f = Files::new();
    f.write("good.sieve", "keep;\n");
    f.write(
        "bad.sieve",
        "require \"fileinto\";\nif header :is \"subject\" \"x\" {\n  fileinto \"A\"\n}\n",
    );
    f.write("unknown.sieve", "keep;\n  vacation \"away\";\n");
    let r = cursus(
        &[
            "sieve",
            "check",
            "good.sieve",
            "bad.sieve",
            "unknown.sieve",
            "missing.sieve",
        ],
        f.dir.path(),
    );
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"good.sieve: ok"), "{}", r.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("bad.sieve:4:1: error: ")),
        "{}",
        r.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("unknown.sieve:2:3: error: ") && l.contains("vacation")),
        "{}",
        r.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("missing.sieve: error: cannot read: ")),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("bad.sieve: ok"));
}

#[test]
fn test_prints_actions_like_sieve_test() {
    let f = Files::new();
    f.write(
        "filter.sieve",
        "require [\"fileinto\", \"envelope\", \"subaddress\"];\n\
         if header :contains \"list-id\" \"rust-users\" { fileinto \"Lists.rust\"; stop; }\n\
         keep;\n",
    );
    f.write("msg.eml", MESSAGE);
    let r = cursus(&["sieve", "test", "filter.sieve", "msg.eml"], f.dir.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "\nPerformed actions:\n\n * store message in folder: Lists.rust\n\n\
         Implicit keep:\n\n  (none)\n\n"
    );
    assert_eq!(r.stderr, "");
}

#[test]
fn test_shows_the_implicit_keep_and_copies() {
    let f = Files::new();
    f.write(
        "copy.sieve",
        "require [\"fileinto\", \"copy\"];\nfileinto :copy \"Archive\";\nredirect :copy \"x@example.com\";\n",
    );
    f.write("msg.eml", &MESSAGE.replace('\n', "\r\n"));
    let r = cursus(&["sieve", "test", "copy.sieve", "msg.eml"], f.dir.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "\nPerformed actions:\n\n \
         * store message in folder: Archive\n        + preserve implicit keep\n \
         * redirect message to: <x@example.com>\n        + preserve implicit keep\n\n\
         Implicit keep:\n\n * store message in folder: INBOX\n\n"
    );
}

#[test]
fn test_uses_the_envelope_flags() {
    let f = Files::new();
    f.write(
        "env.sieve",
        "require [\"fileinto\", \"envelope\", \"subaddress\"];\n\
         if envelope :detail \"to\" \"lists\" { fileinto \"by-detail\"; }\n\
         if envelope :is \"from\" \"\" { discard; }\n",
    );
    f.write("msg.eml", MESSAGE);
    let r = cursus(
        &[
            "sieve",
            "test",
            "--from",
            "<>",
            "--to",
            "bob+lists@example.net",
            "env.sieve",
            "msg.eml",
        ],
        f.dir.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "\nPerformed actions:\n\n * store message in folder: by-detail\n * discard\n\n\
         Implicit keep:\n\n  (none)\n\n"
    );
}

#[test]
fn test_answers_mailboxexists_from_the_flags() {
    let f = Files::new();
    f.write(
        "mb.sieve",
        "require [\"fileinto\", \"mailbox\"];\n\
         if mailboxexists \"Lists.rust\" { fileinto \"Lists.rust\"; } else { fileinto \"Other\"; }\n",
    );
    f.write("msg.eml", MESSAGE);
    let with = cursus(
        &[
            "sieve",
            "test",
            "--mailbox-exists",
            "Lists.rust",
            "mb.sieve",
            "msg.eml",
        ],
        f.dir.path(),
    );
    assert!(
        with.stdout
            .contains(" * store message in folder: Lists.rust\n"),
        "{}",
        with.stdout
    );
    let without = cursus(&["sieve", "test", "mb.sieve", "msg.eml"], f.dir.path());
    assert!(
        without
            .stdout
            .contains(" * store message in folder: Other\n"),
        "{}",
        without.stdout
    );
}

#[test]
fn test_of_a_script_that_does_not_compile_fails() {
    let f = Files::new();
    f.write("bad.sieve", "fileinto \"x\";\n");
    f.write("msg.eml", MESSAGE);
    let r = cursus(&["sieve", "test", "bad.sieve", "msg.eml"], f.dir.path());
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.starts_with("bad.sieve:1:1: error: "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.ends_with("bad.sieve: error: compile failed\n"),
        "{}",
        r.stderr
    );
}

#[test]
fn test_of_a_failing_script_keeps_the_message() {
    let f = Files::new();
    // Five redirects: over the default limit of four, a run-time error.
    f.write(
        "many.sieve",
        "redirect \"a@x.org\"; redirect \"b@x.org\"; redirect \"c@x.org\";\n\
         redirect \"d@x.org\"; redirect \"e@x.org\";\n",
    );
    f.write("msg.eml", MESSAGE);
    let r = cursus(&["sieve", "test", "many.sieve", "msg.eml"], f.dir.path());
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        "\nPerformed actions:\n\n  (none)\n\n\
         Implicit keep:\n\n * store message in folder: INBOX\n\n"
    );
    assert!(r.stderr.contains("many.sieve:"), "{}", r.stderr);
    assert!(
        r.stderr.contains("resolved with implicit keep"),
        "{}",
        r.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    let f = Files::new();
    let r = cursus(&["sieve", "test", "only-one-arg"], f.dir.path());
    assert_eq!(r.code, 2);
    let r = cursus(&["sieve", "check"], f.dir.path());
    assert_eq!(r.code, 2);
}

/// Found by the fuzz target sieve_parse_run: a lone "/" (not a comment) made the lexer
/// return the same error token forever, so `sieve check` never finished.
#[test]
fn check_of_a_lone_slash_terminates() {
    let f = Files::new();
    f.write("slash.sieve", "keep;\n/\nkeep;\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cursus"))
        .args(["sieve", "check", "slash.sieve"])
        .current_dir(f.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run cursus");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait for cursus") {
            assert_eq!(status.code(), Some(1));
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("cursus sieve check did not finish on a lone '/'");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read stdout");
    assert!(out.starts_with("slash.sieve:2:1: error: "), "{out}");
}
