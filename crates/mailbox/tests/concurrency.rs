//! Many deliveries at once into one maildir, one mbox and one MH folder: every message must
//! be present exactly once, whole (mda-interface §8 item 7).
//!
//! Trusts: python3's `mailbox` module as an independent mbox reader. Fails: by assertion.
//! Threads of one process exercise the in-process cases (OFD record locks, the dotlock, the
//! process-wide name counter); the lock tests in mbox.rs cover other processes.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cursus_mailbox::{
    MaildirOptions, MboxOptions, Message, MhOptions, Spooled, deliver_maildir, deliver_mbox,
    deliver_mh,
};

const THREADS: usize = 8;
const PER_THREAD: usize = 200;

fn message(thread: usize, i: usize) -> Message {
    // Bodies with From lines and no final newline on some, so quoting and separators are
    // exercised under contention too.
    let body = if i.is_multiple_of(3) {
        format!("id {thread}-{i}\nFrom the middle\nlast line without newline")
    } else {
        format!("id {thread}-{i}\nbody\n")
    };
    Message {
        prefix: format!("X-Id: {thread}-{i}\n").into_bytes(),
        header: b"Subject: load\n\n".to_vec(),
        body: Spooled::from_bytes(body.into_bytes()),
    }
}

/// Runs `deliver` for every (thread, i) on THREADS threads.
fn hammer(deliver: impl Fn(&Message) + Send + Sync + 'static) {
    let deliver = Arc::new(deliver);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let deliver = Arc::clone(&deliver);
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    deliver(&message(t, i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
}

/// Counts of each `X-Id` value in the given texts; asserts each appears exactly once.
fn assert_each_once(ids: impl Iterator<Item = String>) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), THREADS * PER_THREAD);
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dups.is_empty(), "{dups:?}");
}

fn x_id(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("X-Id: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no X-Id in {text:?}"))
}

#[test]
fn parallel_maildir_deliveries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("Maildir");
    let r = root.clone();
    hammer(move |m| {
        let o = MaildirOptions {
            fsync: false,
            ..MaildirOptions::default()
        };
        deliver_maildir(&r, m, &o).expect("deliver");
    });
    let files: Vec<_> = fs::read_dir(root.join("new"))
        .expect("ls")
        .map(|e| e.expect("e").path())
        .collect();
    assert_eq!(files.len(), THREADS * PER_THREAD);
    assert_each_once(
        files
            .iter()
            .map(|p| x_id(&fs::read_to_string(p).expect("read"))),
    );
    assert_eq!(fs::read_dir(root.join("tmp")).expect("ls").count(), 0);
}

#[test]
fn parallel_mbox_deliveries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mbox");
    let p = path.clone();
    hammer(move |m| {
        let o = MboxOptions {
            fsync: false,
            lock_timeout: Duration::from_secs(120),
            ..MboxOptions::default()
        };
        deliver_mbox(&p, Some("load@example.org"), m, &o).expect("deliver");
    });
    let text = fs::read_to_string(&path).expect("read");
    let separators = text.lines().filter(|l| l.starts_with("From ")).count();
    assert_eq!(separators, THREADS * PER_THREAD);
    // Every separator after the first follows a blank line.
    assert_eq!(
        text.matches("\n\nFrom load@example.org  ").count(),
        THREADS * PER_THREAD - 1
    );
    assert_each_once(text.split("\nFrom load@example.org  ").map(x_id));
    assert!(!tmp.path().join("mbox.lock").exists());
    python_counts(&path);
}

fn python_counts(path: &Path) {
    let script = r#"
import mailbox, sys
ids = sorted(m["X-Id"] for m in mailbox.mbox(sys.argv[1], create=False))
print(len(ids), len(set(ids)))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = THREADS * PER_THREAD;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{n} {n}")
    );
}

#[test]
fn parallel_mh_deliveries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("inbox");
    let f = folder.clone();
    hammer(move |m| {
        let o = MhOptions {
            fsync: false,
            lock_timeout: Duration::from_secs(120),
            ..MhOptions::default()
        };
        deliver_mh(&f, m, &o).expect("deliver");
    });
    let n = THREADS * PER_THREAD;
    let mut numbers: Vec<usize> = fs::read_dir(&folder)
        .expect("ls")
        .filter_map(|e| {
            e.expect("e")
                .file_name()
                .to_str()
                .and_then(|s| s.parse().ok())
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=n).collect::<Vec<_>>());
    assert_each_once(
        numbers
            .iter()
            .map(|k| x_id(&fs::read_to_string(folder.join(k.to_string())).expect("read"))),
    );
    assert_eq!(
        fs::read_to_string(folder.join(".mh_sequences")).expect("seq"),
        format!("unseen: 1-{n}\n")
    );
}
