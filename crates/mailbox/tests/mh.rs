//! MH delivery against a real file system: numbering, the unseen sequence, the lock, and the
//! refusal of a symlinked folder.
//!
//! Trusts: nothing but the file system. Fails: by assertion.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::{Duration, Instant};

use cursus_mailbox::{
    LockKind, MailboxError, Message, MhOptions, Spooled, UnsafeReason, deliver_mh,
};

fn message(body: &str) -> Message {
    Message {
        prefix: b"Delivered-To: u@example.org\n".to_vec(),
        header: b"Subject: mh\n\n".to_vec(),
        body: Spooled::from_bytes(body.as_bytes().to_vec()),
    }
}

fn opts() -> MhOptions {
    MhOptions {
        lock_timeout: Duration::from_secs(5),
        ..MhOptions::default()
    }
}

#[test]
fn numbers_follow_the_highest_and_unseen_is_updated() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("inbox");
    let first = deliver_mh(&folder, &message("one\n"), &opts()).expect("first");
    assert_eq!(first.path, folder.join("1"));
    assert_eq!(
        fs::read(&first.path).expect("read"),
        b"Delivered-To: u@example.org\nSubject: mh\n\none\n"
    );
    assert_eq!(
        fs::metadata(&first.path)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        fs::read_to_string(folder.join(".mh_sequences")).expect("seq"),
        "unseen: 1\n"
    );

    // Gaps, leading zeros and non-numeric names.
    fs::write(folder.join("07"), "").expect("07");
    fs::write(folder.join("abc"), "").expect("abc");
    fs::write(folder.join("12x"), "").expect("12x");
    fs::write(folder.join(".mh_sequences"), "cur: 1\nunseen: 1-3 5\n").expect("seq");
    let next = deliver_mh(&folder, &message("two\n"), &opts()).expect("next");
    assert_eq!(next.path, folder.join("8"));
    assert_eq!(next.note, None);
    assert_eq!(
        fs::read_to_string(folder.join(".mh_sequences")).expect("seq"),
        "cur: 1\nunseen: 1-3 5 8\n"
    );
    let again = deliver_mh(&folder, &message("three\n"), &opts()).expect("again");
    assert_eq!(again.path, folder.join("9"));
    assert_eq!(
        fs::read_to_string(folder.join(".mh_sequences")).expect("seq"),
        "cur: 1\nunseen: 1-3 5 8-9\n"
    );
    assert!(!folder.join(".mh_sequences.lock").exists());
    let leftovers: Vec<_> = fs::read_dir(&folder)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mh_sequences."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn symlinked_folder_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let real = tmp.path().join("real");
    fs::create_dir(&real).expect("mkdir");
    let link = tmp.path().join("inbox");
    symlink(&real, &link).expect("symlink");
    let err = deliver_mh(&link, &message("x\n"), &opts()).expect_err("refuse");
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
    assert_eq!(fs::read_dir(&real).expect("ls").count(), 0);
}

#[test]
fn symlinked_sequences_file_is_replaced_not_written_through() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("inbox");
    fs::create_dir(&folder).expect("mkdir");
    let victim = tmp.path().join("victim");
    fs::write(&victim, "keep\n").expect("victim");
    symlink(&victim, folder.join(".mh_sequences")).expect("symlink");
    let stored = deliver_mh(&folder, &message("x\n"), &opts()).expect("deliver");
    assert!(stored.note.expect("note").contains("symbolic link"));
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "keep\n");
    assert_eq!(
        fs::read_to_string(folder.join(".mh_sequences")).expect("seq"),
        "unseen: 1\n"
    );
}

#[test]
fn held_sequences_lock_times_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("inbox");
    fs::create_dir(&folder).expect("mkdir");
    fs::write(
        folder.join(".mh_sequences.lock"),
        format!("{}\n", std::process::id()),
    )
    .expect("lock");
    let o = MhOptions {
        lock_timeout: Duration::from_millis(400),
        ..opts()
    };
    let start = Instant::now();
    let err = deliver_mh(&folder, &message("x\n"), &o).expect_err("timeout");
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
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(err.is_temporary());
    assert!(!folder.join("1").exists());
}

#[test]
fn missing_folder_without_create_is_temporary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = MhOptions {
        create: false,
        ..opts()
    };
    let err = deliver_mh(&tmp.path().join("nope"), &message("x\n"), &o).expect_err("missing");
    assert!(err.is_temporary(), "{err}");
}
