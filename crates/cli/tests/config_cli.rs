//! `cursus config check` as an administrator runs it: the real binary on files in a
//! temporary directory. Exit 0 with one "ok" line for a good file; exit 1 with
//! `FILE:LINE:COLUMN: text` and a "did you mean" for a misspelt key, in the daemon's own
//! tables and in the routers alike; exit 1 for a value the daemon refuses.

use std::path::Path;

mod invocation;
use invocation::{Run, cursus};

fn check(file: &Path) -> Run {
    let file = file.to_str().expect("a UTF-8 path");
    cursus(&["config", "check", file], Path::new("/"))
}

/// Writes `text` (DATA stands for a data directory in the temporary directory) to NAME.
fn file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let data = dir.join("data");
    std::fs::write(&path, text.replace("DATA", &data.display().to_string())).expect("write");
    path
}

#[test]
fn a_good_file_is_ok_with_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(
        dir.path(),
        "good.toml",
        "data_dir = \"DATA\"\n[smtp]\nlisten = [\"127.0.0.1:2525\"]\nmail_timeout = 60\n\
         queue_min_free = 0\nverify_remote_recipients = true\n\
         [lmtp]\nlisten = [\"unix:/run/cursus-test/lmtp.sock\"]\n",
    );
    let run = check(&path);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(&format!("{}: ok", path.display()))
            && run.stdout.contains("1 SMTP and 1 LMTP listeners"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn a_misspelt_daemon_key_gets_file_line_and_a_suggestion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(
        dir.path(),
        "typo.toml",
        "data_dir = \"DATA\"\n[smtp]\nlisten = [\"127.0.0.1:2525\"]\nrecipents = 5\n",
    );
    let run = check(&path);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .starts_with(&format!("{}:4:1: unknown key `recipents`", path.display()))
            && run.stderr.contains("did you mean `recipients`?"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("ok"), "{}", run.stdout);
}

#[test]
fn a_misspelt_router_key_gets_file_line_and_a_suggestion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(
        dir.path(),
        "router.toml",
        "data_dir = \"DATA\"\n[smtp]\nlisten = [\"127.0.0.1:2525\"]\n\n[[router]]\nname = \"u\"\n\
         driver = \"localuser\"\nlocal_part = [\"joe\"]\n",
    );
    let run = check(&path);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("{}:8:", path.display()))
            && run.stderr.contains("did you mean `local_parts`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_refused_value_and_a_missing_file_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(
        dir.path(),
        "value.toml",
        "data_dir = \"DATA\"\n[smtp]\nlisten = [\"127.0.0.1:2525\"]\nrcpt_timeout = 0\n",
    );
    let run = check(&path);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("rcpt_timeout must be at least 1 second"),
        "{}",
        run.stderr
    );
    let run = check(&dir.path().join("no-such.toml"));
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("no-such.toml"), "{}", run.stderr);
}
