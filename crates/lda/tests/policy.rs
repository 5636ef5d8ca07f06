//! `cursus-lda policy check` and `policy explain`, run as the binary: exit statuses, the
//! `FILE: ok` line, errors with file:line:col, and decisions naming the rule or the reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const POLICY: &str = r#"min_uid = 1000

[[allow]]
name = "home-maildir"
kind = "maildir"
path = "~/Maildir"
subtree = true

[[allow]]
name = "spool"
kind = "mbox"
path = "/var/mail/${user}"

[[allow]]
name = "procmail"
kind = "command"
path = "/usr/bin/procmail"
arguments = true
"#;

fn lda(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cursus-lda"))
        .args(args)
        .output()
        .expect("run cursus-lda")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_a_valid_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "lda.toml", POLICY);
    let out = lda(&["policy", "check", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}: ok\n", file.display()));
}

#[test]
fn check_reports_every_error_with_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = "[[allow]]\nkind = \"maildri\"\npath = \"Maildir\"\n";
    let file = write(dir.path(), "bad.toml", bad);
    let name = file.display().to_string();
    let out = lda(&["policy", "check", &name]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{name}:2:8: unknown kind `maildri`; did you mean `maildir`?"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{name}:3:8: \"Maildir\" is neither")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn check_suggests_a_misspelt_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "bad.toml", "min_udi = 500\n");
    let name = file.display().to_string();
    let out = lda(&["policy", "check", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("{name}:1:1: unknown key `min_udi`; did you mean `min_uid`?\n")
    );
}

#[test]
fn check_a_user_refinement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = write(dir.path(), "lda.toml", POLICY);
    let good = write(dir.path(), "good.toml", "remove = [\"spool\"]\n");
    let bad = write(dir.path(), "bad.toml", "remove = [\"spol\"]\n");
    let sys = system.to_str().expect("utf-8");
    let out = lda(&[
        "policy",
        "check",
        "--refines",
        sys,
        "--user",
        "joe",
        good.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = lda(&[
        "policy",
        "check",
        "--refines",
        sys,
        "--user",
        "joe",
        bad.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("did you mean `spool`?"));
}

#[test]
fn check_of_a_missing_file_cannot_answer() {
    let out = lda(&["policy", "check", "/nonexistent/lda.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"));
}

fn explain(policy: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "policy",
        "explain",
        "--policy",
        policy.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    lda(&args)
}

#[test]
fn explain_names_the_allowing_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "lda.toml", POLICY);
    let table: &[(&str, &str)] = &[
        ("maildir:/home/joe/Maildir", "home-maildir"),
        ("maildir:/home/joe/Maildir/.Lists", "home-maildir"),
        ("mbox:/var/mail/joe", "spool"),
        ("command:/usr/bin/procmail", "procmail"),
    ];
    for (dest, rule) in table {
        let out = explain(
            &file,
            &["--uid", "1000", "--home", "/home/joe", "joe", dest],
        );
        assert_eq!(out.status.code(), Some(0), "{dest}: {}", text(&out.stdout));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(&format!("allowed by rule `{rule}` ({}:", file.display())),
            "{stdout}"
        );
        assert!(
            stdout.contains("user joe (uid 1000, home /home/joe)"),
            "{stdout}"
        );
    }
}

#[test]
fn explain_says_why_it_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "lda.toml", POLICY);
    let table: &[(&str, &str)] = &[
        (
            "mbox:/etc/passwd",
            "refused: no rule allows this destination",
        ),
        ("mbox:/var/mail/ann", "rule `spool`"),
        ("command:/bin/sh", "refused: no rule allows"),
        ("command:/usr/bin/procmail ;id", "shell metacharacter"),
    ];
    for (dest, want) in table {
        let out = explain(
            &file,
            &["--uid", "1000", "--home", "/home/joe", "joe", dest],
        );
        assert_eq!(out.status.code(), Some(1), "{dest}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains(want), "{dest}: {stdout}");
    }
}

#[test]
fn explain_looks_the_user_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "lda.toml", POLICY);
    // root exists everywhere: uid 0 and home /root come from the user database.
    let out = explain(&file, &["root", "maildir:/root/Maildir"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("user root (uid 0, home /root)"), "{stdout}");
    assert!(
        stdout.contains("refused: delivery as root needs a rule that names the user"),
        "{stdout}"
    );
}

#[test]
fn explain_of_an_unknown_user_or_bad_destination_cannot_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "lda.toml", POLICY);
    let out = explain(&file, &["no-such-user-cursus", "mbox:/var/mail/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no such user"),
        "{}",
        text(&out.stderr)
    );
    let out = explain(&file, &["root", "/var/mail/root"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("KIND:PATH"));
    let out = explain(&file, &["root", "mbox:/var/mail/../../etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`..` component"));
}

#[test]
fn explain_applies_a_refinement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "lda.toml", POLICY);
    let user = write(
        dir.path(),
        "joe.toml",
        "remove = [\"spool\"]\n[[allow]]\nname = \"inbox\"\nkind = \"mbox\"\npath = \"~/mailbox\"\n",
    );
    let refine = [
        "--refinement",
        user.to_str().expect("utf-8"),
        "--uid",
        "1000",
        "--home",
        "/home/joe",
        "joe",
    ];
    let mut args = refine.to_vec();
    args.push("mbox:/var/mail/joe");
    let out = explain(&file, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("removed by"),
        "{}",
        text(&out.stdout)
    );
    let mut args = refine.to_vec();
    args.push("mbox:/home/joe/mailbox");
    let out = explain(&file, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("allowed by rule `inbox`"));
}
