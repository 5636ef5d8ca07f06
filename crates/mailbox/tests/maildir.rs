//! Maildir and Maildir++ delivery against a real file system: names, modes, flags, folders,
//! quota, and the symlink refusals (mda-interface §8 items 4, 5, 6, 10, 13).
//!
//! Trusts: python3's `mailbox` module as an independent reader. Fails: by assertion.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use cursus_mail::OutcomeKind;
use cursus_mailbox::{
    FolderName, MailboxError, MaildirOptions, Message, QuotaLimits, Spooled, UnsafeReason,
    deliver_maildir,
};

fn message(body: &str) -> Message {
    Message {
        prefix: b"Return-Path: <a@example.org>\nDelivered-To: u@example.org\n".to_vec(),
        header: b"Subject: test\nFrom: a@example.org\n\n".to_vec(),
        body: Spooled::from_bytes(body.as_bytes().to_vec()),
    }
}

fn bytes_of(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.write_to(&mut out).expect("write_to");
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn opts() -> MaildirOptions {
    MaildirOptions::default()
}

#[test]
fn delivery_lands_in_new_with_exact_sizes_and_mode() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let m = message("line one\nFrom not quoted in maildir\nno final newline");
    let stored = deliver_maildir(&root, &m, &opts()).expect("deliver");
    assert_eq!(stored.note, None);
    assert_eq!(stored.path.parent(), Some(root.join("new").as_path()));
    let name = stored
        .path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let content = fs::read(&stored.path).expect("read");
    assert_eq!(content, bytes_of(&m));
    let lf = content.iter().filter(|&&b| b == b'\n').count();
    assert!(
        name.ends_with(&format!(",S={},W={}", content.len(), content.len() + lf)),
        "{name} size {} lf {lf}",
        content.len()
    );
    assert!(!name.starts_with('.') && !name.contains(':') && !name.contains('/'));
    let mode = fs::metadata(&stored.path)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for sub in ["tmp", "new", "cur"] {
        let mode = fs::metadata(root.join(sub))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{sub}");
    }
    assert!(names(&root.join("tmp")).is_empty());
    assert!(names(&root.join("cur")).is_empty());
    assert!(
        !root.join("maildirsize").exists(),
        "no quota, no maildirsize"
    );

    // Python's reader sees one message in new/ without flags, byte for byte.
    let script = r#"
import mailbox, sys
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
keys = md.keys()
assert len(keys) == 1, keys
msg = md[keys[0]]
sys.stdout.write(msg.get_subdir() + "|" + msg.get_flags() + "|")
sys.stdout.flush()
sys.stdout.buffer.write(md.get_bytes(keys[0]))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&root)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = b"new||".to_vec();
    want.extend_from_slice(&bytes_of(&m));
    assert_eq!(out.stdout, want);
}

#[test]
fn flags_store_in_cur_sorted_and_deduplicated() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let o = MaildirOptions {
        flags: "SFS".into(),
        ..opts()
    };
    let stored = deliver_maildir(&root, &message("x\n"), &o).expect("deliver");
    assert_eq!(stored.path.parent(), Some(root.join("cur").as_path()));
    let name = stored
        .path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(name.ends_with(":2,FS"), "{name}");
    assert!(names(&root.join("new")).is_empty());
    assert!(names(&root.join("tmp")).is_empty());
}

#[test]
fn folder_is_autocreated_with_maildirfolder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let folder = FolderName::parse("Lists.rust").expect("folder");
    let o = MaildirOptions {
        folder: Some(folder),
        autocreate_folder: true,
        ..opts()
    };
    let stored = deliver_maildir(&root, &message("x\n"), &o).expect("deliver");
    let dir = root.join(".Lists.rust");
    assert_eq!(stored.path.parent(), Some(dir.join("new").as_path()));
    assert_eq!(
        fs::metadata(dir.join("maildirfolder"))
            .expect("maildirfolder")
            .len(),
        0
    );
    assert!(!root.join("maildirfolder").exists());
    for sub in ["tmp", "new", "cur"] {
        assert!(dir.join(sub).is_dir(), "{sub}");
    }
    // A second delivery finds everything in place.
    deliver_maildir(&root, &message("y\n"), &o).expect("deliver again");
    assert_eq!(names(&dir.join("new")).len(), 2);
}

#[test]
fn missing_folder_without_autocreate_goes_to_inbox_with_a_note() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let o = MaildirOptions {
        folder: FolderName::parse("Nope").ok(),
        ..opts()
    };
    let stored = deliver_maildir(&root, &message("x\n"), &o).expect("deliver");
    assert_eq!(stored.path.parent(), Some(root.join("new").as_path()));
    let note = stored.note.expect("note");
    assert!(note.contains("Nope") && note.contains("INBOX"), "{note}");
    assert!(!root.join(".Nope").exists());
}

#[test]
fn symlinked_new_is_refused_and_nothing_is_written_elsewhere() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let victim = tmp.path().join("victim");
    fs::create_dir_all(&victim).expect("victim");
    for sub in ["tmp", "cur"] {
        fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    symlink(&victim, root.join("new")).expect("symlink");
    let err = deliver_maildir(&root, &message("x\n"), &opts()).expect_err("must refuse");
    match &err {
        MailboxError::Unsafe {
            reason: UnsafeReason::Symlink,
            path,
        } => {
            assert_eq!(path, &root.join("new"))
        }
        other => panic!("{other:?}"),
    }
    let outcome = err.outcome();
    assert_eq!(outcome.kind, OutcomeKind::Permanent);
    assert_eq!(outcome.status.to_string(), "5.2.0");
    assert!(names(&victim).is_empty());
    assert!(names(&root.join("tmp")).is_empty());
}

#[test]
fn symlinked_root_and_folder_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let real = tmp.path().join("real");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(real.join(sub)).expect("mkdir");
    }
    let link = tmp.path().join("Maildir");
    symlink(&real, &link).expect("symlink");
    let err = deliver_maildir(&link, &message("x\n"), &opts()).expect_err("root symlink");
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

    symlink(&real, real.join(".Evil")).expect("symlink folder");
    let o = MaildirOptions {
        folder: FolderName::parse("Evil").ok(),
        autocreate_folder: true,
        ..opts()
    };
    let err = deliver_maildir(&real, &message("x\n"), &o).expect_err("folder symlink");
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
    assert!(names(&real.join("new")).is_empty());
}

#[test]
fn missing_maildir_without_create_is_temporary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let o = MaildirOptions {
        create: false,
        ..opts()
    };
    let err = deliver_maildir(&root, &message("x\n"), &o).expect_err("missing");
    assert_eq!(err.outcome().kind, OutcomeKind::Temporary, "{err}");
    assert!(err.to_string().contains("Maildir"), "{err}");
    assert!(!root.exists());
}

fn usage_lines(root: &Path) -> Vec<String> {
    fs::read_to_string(root.join("maildirsize"))
        .expect("maildirsize")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn quota_from_configuration_writes_maildirsize_and_appends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let limits = QuotaLimits {
        bytes: Some(100_000),
        messages: Some(10),
    };
    let o = MaildirOptions {
        quota: Some(limits),
        ..opts()
    };
    let m1 = message("first\n");
    deliver_maildir(&root, &m1, &o).expect("first");
    // Recalculated before the first delivery (empty), then one line appended.
    assert_eq!(
        usage_lines(&root),
        vec![
            "100000S,10C".to_string(),
            "0 0".into(),
            format!("{} 1", m1.size())
        ]
    );
    let m2 = message("second message\n");
    deliver_maildir(&root, &m2, &o).expect("second");
    assert_eq!(
        usage_lines(&root).last().cloned(),
        Some(format!("{} 1", m2.size()))
    );
    assert_eq!(usage_lines(&root).len(), 4);
    // Without configured limits the file's own limits apply.
    deliver_maildir(&root, &message("third\n"), &opts()).expect("third");
    assert_eq!(usage_lines(&root).len(), 5);
    assert!(names(&root.join("tmp")).is_empty());
}

#[test]
fn over_quota_is_refused_before_writing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let m = message("0123456789\n");
    let limits = QuotaLimits {
        bytes: Some(m.size() * 2),
        messages: None,
    };
    let o = MaildirOptions {
        quota: Some(limits),
        ..opts()
    };
    deliver_maildir(&root, &m, &o).expect("first fits");
    deliver_maildir(&root, &m, &o).expect("second fits exactly");
    let err = deliver_maildir(&root, &m, &o).expect_err("third is over");
    assert!(err.is_over_quota(), "{err:?}");
    let outcome = err.outcome();
    assert_eq!(
        (outcome.status.to_string().as_str(), outcome.exit_code()),
        ("5.2.2", 77)
    );
    assert_eq!(names(&root.join("new")).len(), 2);
    assert!(names(&root.join("tmp")).is_empty());

    // Message count limit.
    let o = MaildirOptions {
        quota: Some(QuotaLimits {
            bytes: None,
            messages: Some(2),
        }),
        ..opts()
    };
    let err = deliver_maildir(&root, &m, &o).expect_err("count");
    assert!(err.is_over_quota());
}

#[test]
fn stale_over_quota_file_is_recalculated_and_the_message_fits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    deliver_maildir(&root, &message("x\n"), &opts()).expect("create");
    // A file claiming much more usage than the maildir holds, in two usage lines.
    fs::write(root.join("maildirsize"), "1000S\n900 1\n100 1\n").expect("write");
    let stored = deliver_maildir(&root, &message("y\n"), &opts()).expect("fits after recalc");
    assert!(stored.path.exists());
    let lines = usage_lines(&root);
    assert_eq!(lines[0], "1000S");
    assert_eq!(lines.len(), 3, "{lines:?}");
}

#[test]
fn long_maildirsize_is_recalculated_counting_folders_but_not_trash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let m = message("x\n");
    deliver_maildir(&root, &m, &opts()).expect("inbox");
    let sent = MaildirOptions {
        folder: FolderName::parse("Sent").ok(),
        autocreate_folder: true,
        ..opts()
    };
    deliver_maildir(&root, &m, &sent).expect("sent");
    let trash = MaildirOptions {
        folder: FolderName::parse("Trash").ok(),
        autocreate_folder: true,
        ..opts()
    };
    deliver_maildir(&root, &message("a bigger message in the trash\n"), &trash).expect("trash");
    // A file without a ,S= field is counted by stat().
    fs::write(root.join("cur").join("1.plain"), b"12345").expect("plain");
    let mut text = String::from("1000000S\n");
    while text.len() < 5200 {
        text.push_str("1 1\n");
    }
    fs::write(root.join("maildirsize"), text).expect("write");
    deliver_maildir(&root, &m, &opts()).expect("deliver");
    let lines = usage_lines(&root);
    let expected = 2 * m.size() + 5;
    assert_eq!(
        lines,
        vec![
            "1000000S".to_string(),
            format!("{expected} 3"),
            format!("{} 1", m.size())
        ]
    );
}

#[test]
fn unsafe_maildirsize_is_replaced_not_followed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    deliver_maildir(&root, &message("x\n"), &opts()).expect("create");
    let victim = tmp.path().join("victim");
    fs::write(&victim, "1000S\n").expect("victim");
    symlink(&victim, root.join("maildirsize")).expect("symlink");
    let o = MaildirOptions {
        quota: Some(QuotaLimits {
            bytes: Some(1000),
            messages: None,
        }),
        ..opts()
    };
    let stored = deliver_maildir(&root, &message("y\n"), &o).expect("deliver");
    assert!(stored.note.expect("note").contains("symbolic link"));
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "1000S\n");
    let meta = fs::symlink_metadata(root.join("maildirsize")).expect("meta");
    assert!(meta.file_type().is_file());
}

#[test]
fn many_deliveries_get_distinct_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root: PathBuf = tmp.path().join("Maildir");
    let o = MaildirOptions {
        fsync: false,
        ..opts()
    };
    for i in 0..100 {
        deliver_maildir(&root, &message(&format!("{i}\n")), &o).expect("deliver");
    }
    assert_eq!(names(&root.join("new")).len(), 100);
}
