//! The queue's behaviour through its public API: accept and read back, outcomes, hold and
//! release, expiry and the DSN rule, removal, recovery of every kind of debris, listing
//! and due streams over 20,000 messages.
//!
//! Each test owns a fresh temporary spool; nothing here needs privileges.

mod common;

use std::io::Read;
use std::sync::Arc;

use cursus_mail::{EnhancedStatus, ExitCode, Outcome, Sender, codes};
use cursus_queue::{
    Envelope, Notify, Options, Queue, QueueError, QueueId, Recipient, RecipientState, Schedule,
};
use jiff::{SignedDuration, Timestamp};

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope::new(
        Sender::Address("alice@example.org".into()),
        recipients.iter().map(|r| Recipient::new(*r)).collect(),
    )
}

fn body(n: usize) -> Vec<u8> {
    let mut b = format!("Subject: message {n}\r\n\r\n").into_bytes();
    b.extend((0..2000 + n % 97).map(|i| b'a' + ((i + n) % 26) as u8));
    b.extend_from_slice(b"\r\n");
    b
}

fn unsynced() -> Options {
    Options {
        sync: false,
        ..Options::default()
    }
}

fn read_message(queue: &Queue, id: QueueId) -> Vec<u8> {
    let mut out = Vec::new();
    queue
        .open_message(id)
        .expect("opens")
        .read_to_end(&mut out)
        .expect("reads");
    out
}

fn after(t: Timestamp, minutes: i64) -> Timestamp {
    t.saturating_add(SignedDuration::from_mins(minutes))
        .expect("in range")
}

#[test]
fn accepted_messages_read_back_whole_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = envelope(&["bob@example.net", "carol@example.net"]);
    env.recipients[0].notify = Some(Notify::SUCCESS.union(Notify::FAILURE));
    env.recipients[0].orcpt = Some("rfc822;bob@example.net".into());
    env.envid = Some("ENV1".into());
    let ids: Vec<QueueId> = {
        let queue = Queue::open(dir.path()).expect("opens");
        let ids: Vec<QueueId> = (0..5)
            .map(|n| queue.accept(&env, &body(n)[..]).expect("accepts"))
            .collect();
        let stats = queue.stats();
        assert_eq!(stats.accepted, 5);
        assert_eq!(
            stats.file_syncs, 10,
            "one fdatasync for the message, one for the journal"
        );
        assert_eq!(stats.dir_syncs, 5);
        ids
    };
    let queue = Queue::open(dir.path()).expect("reopens");
    assert_eq!(queue.recovery().messages, 5);
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(read_message(&queue, *id), body(n));
        let m = queue.message(*id).expect("loads");
        assert_eq!(m.envelope, env);
        assert_eq!(m.size, body(n).len() as u64);
        assert_eq!(m.recipients, vec![RecipientState::Pending; 2]);
    }
}

#[test]
fn a_second_open_of_the_same_spool_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _queue = Queue::open(dir.path()).expect("opens");
    assert!(matches!(
        Queue::open(dir.path()),
        Err(QueueError::Locked { .. })
    ));
}

#[test]
fn a_spool_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    assert!(matches!(
        Queue::open(dir.path()),
        Err(QueueError::Unsafe { .. })
    ));
}

#[test]
fn outcomes_are_journaled_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Timestamp::now();
    let id = {
        let queue = Queue::open(dir.path()).expect("opens");
        let id = queue
            .accept(&envelope(&["a@x", "b@x", "c@x"]), &b"hello\r\n"[..])
            .expect("accepts");
        let m = queue
            .record(
                id,
                &[
                    (0, Outcome::delivered("250 2.0.0 ok")),
                    (1, Outcome::temporary(codes::MAILBOX_FULL, "over quota")),
                ],
                now,
            )
            .expect("records");
        assert!(matches!(m.recipients[0], RecipientState::Delivered { .. }));
        assert!(matches!(
            m.recipients[1],
            RecipientState::Deferred { attempts: 1, .. }
        ));
        // A second deferral counts up and waits longer (5 min, then 15 min).
        let m = queue
            .record(
                id,
                &[(1, Outcome::temporary(codes::MAILBOX_FULL, "still over"))],
                after(now, 5),
            )
            .expect("records");
        match &m.recipients[1] {
            RecipientState::Deferred {
                attempts,
                next,
                status,
                text,
                ..
            } => {
                assert_eq!(*attempts, 2);
                assert_eq!(*next, after(now, 20));
                assert_eq!(status.to_string(), "4.2.2");
                assert_eq!(text, "still over");
            }
            other => panic!("not deferred: {other:?}"),
        }
        // A final recipient cannot be changed, an unknown one cannot be named.
        assert!(matches!(
            queue.record(id, &[(0, Outcome::delivered("again"))], now),
            Err(QueueError::AlreadyFinal { index: 0, .. })
        ));
        assert!(matches!(
            queue.record(id, &[(7, Outcome::delivered("x"))], now),
            Err(QueueError::NoSuchRecipient { index: 7, .. })
        ));
        id
    };
    let queue = Queue::open(dir.path()).expect("reopens");
    let m = queue.message(id).expect("loads");
    assert!(matches!(m.recipients[0], RecipientState::Delivered { .. }));
    assert_eq!(m.recipients[1].attempts(), 2);
    assert_eq!(m.recipients[2], RecipientState::Pending);
    // Recipient c is pending (due at once), b at +20 min.
    let due: Vec<_> = queue.due(after(now, 1)).map(|d| d.expect("due")).collect();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].recipients, vec![2]);
    let due: Vec<_> = queue.due(after(now, 21)).map(|d| d.expect("due")).collect();
    assert_eq!(due[0].recipients, vec![1, 2]);
}

#[test]
fn held_messages_are_never_due_until_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(dir.path()).expect("opens");
    let now = Timestamp::now();
    let held = queue
        .accept(&envelope(&["a@x"]), &b"1\r\n"[..])
        .expect("accepts");
    let other = queue
        .accept(&envelope(&["b@x"]), &b"2\r\n"[..])
        .expect("accepts");
    assert!(queue.hold(held, now).expect("holds").held);
    assert!(queue.hold(held, now).expect("holds twice").held);
    let due_ids = |q: &Queue| -> Vec<QueueId> {
        q.due(after(now, 60))
            .map(|d| d.expect("due").message.id)
            .collect()
    };
    assert_eq!(due_ids(&queue), vec![other]);
    drop(queue);
    let queue = Queue::open(dir.path()).expect("reopens");
    assert_eq!(due_ids(&queue), vec![other], "the hold survives a restart");
    assert!(!queue.release(held, now).expect("releases").held);
    assert_eq!(due_ids(&queue), vec![held, other]);
}

#[test]
fn expiry_fails_with_5_4_7_and_a_dsn_is_owed_before_removal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        schedule: Schedule {
            expire_after: SignedDuration::from_hours(1),
            ..Schedule::default()
        },
        ..Options::default()
    };
    let queue = Queue::open_with(dir.path(), options.clone()).expect("opens");
    let mut env = envelope(&["a@x", "b@x"]);
    let received = env.received;
    env.recipients[1].notify = Some(Notify::NEVER);
    let id = queue.accept(&env, &b"x\r\n"[..]).expect("accepts");
    let temp = || Outcome::temporary(codes::SYSTEM_FULL, "disk full");
    queue
        .record(id, &[(0, temp()), (1, temp())], after(received, 10))
        .expect("defers");
    // The next attempt is capped at the expiry time.
    let m = queue
        .record(id, &[(0, temp()), (1, temp())], after(received, 55))
        .expect("defers");
    assert_eq!(
        m.recipients[0].next_attempt(received),
        Some(after(received, 60))
    );
    let m = queue
        .record(id, &[(0, temp()), (1, temp())], after(received, 60))
        .expect("expires");
    for state in &m.recipients {
        match state {
            RecipientState::Failed { status, text, .. } => {
                assert_eq!(status.to_string(), "5.4.7");
                assert!(
                    text.starts_with("message expired after 3 attempts"),
                    "{text}"
                );
                assert!(text.contains("4.3.1 disk full"), "{text}");
            }
            other => panic!("not failed: {other:?}"),
        }
    }
    // Recipient 0 wants the failure reported (NOTIFY absent); 1 said NEVER.
    assert!(m.is_complete());
    assert_eq!(m.dsn_recipients(), vec![0]);
    let due: Vec<_> = queue
        .due(after(received, 61))
        .map(|d| d.expect("due"))
        .collect();
    assert_eq!(due.len(), 1, "complete, owing a DSN: due at once");
    assert!(due[0].recipients.is_empty());
    assert!(matches!(
        queue.finish(id, None, after(received, 61)),
        Err(QueueError::DsnOwed(_))
    ));
    drop(queue);
    // The DSN is still owed after a restart: recovery must not remove the message.
    let queue = Queue::open_with(dir.path(), options).expect("reopens");
    assert_eq!(queue.load_all().expect("loads"), 1);
    assert_eq!(queue.len(), 1);
    let dsn = queue
        .accept(
            &Envelope::new(Sender::Null, vec![Recipient::new("alice@example.org")]),
            &b"bounce\r\n"[..],
        )
        .expect("accepts the DSN");
    queue
        .finish(id, Some(dsn), after(received, 62))
        .expect("finishes");
    assert!(matches!(queue.message(id), Err(QueueError::NotFound(_))));
    assert!(
        !dir.path()
            .join(format!("{:02x}/{id}.msg", id.bucket()))
            .exists()
    );
    // A bounce owes no DSN itself (null sender).
    let m = queue
        .record(
            dsn,
            &[(
                0,
                Outcome::permanent(codes::BAD_MAILBOX, ExitCode::NoUser, "no"),
            )],
            after(received, 63),
        )
        .expect("fails");
    assert!(m.dsn_recipients().is_empty() && m.is_removable());
    queue
        .finish(dsn, None, after(received, 63))
        .expect("finishes");
    assert!(queue.is_empty());
}

#[test]
fn finish_refuses_a_message_with_recipients_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(dir.path()).expect("opens");
    let id = queue
        .accept(&envelope(&["a@x"]), &b"x\r\n"[..])
        .expect("accepts");
    assert!(matches!(
        queue.finish(id, None, Timestamp::now()),
        Err(QueueError::NotComplete(_))
    ));
    queue.delete(id, Timestamp::now()).expect("deletes");
    assert!(matches!(queue.message(id), Err(QueueError::NotFound(_))));
}

/// A crash after the final outcomes were journaled but before the files were unlinked:
/// recovery finishes the removal, so the message is not delivered twice.
#[test]
fn recovery_removes_messages_whose_recipients_are_all_final() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Timestamp::now();
    let (done, deleted, open_id) = {
        let queue = Queue::open(dir.path()).expect("opens");
        let done = queue
            .accept(&envelope(&["a@x"]), &b"1\r\n"[..])
            .expect("accepts");
        queue
            .record(done, &[(0, Outcome::delivered("ok"))], now)
            .expect("records");
        let deleted = queue
            .accept(&envelope(&["a@x"]), &b"2\r\n"[..])
            .expect("accepts");
        let open_id = queue
            .accept(&envelope(&["a@x"]), &b"3\r\n"[..])
            .expect("accepts");
        (done, deleted, open_id)
    };
    // Simulate a crash between the delete record and the unlinks: append the record by hand.
    {
        use std::io::Write;
        let path = dir
            .path()
            .join(format!("{:02x}/{deleted}.jnl", deleted.bucket()));
        let record = cursus_queue::journal::Record::Delete { at: now }.frame();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("opens journal");
        f.write_all(&record).expect("appends");
    }
    let queue = Queue::open(dir.path()).expect("reopens");
    assert_eq!(queue.recovery().messages, 3);
    let listed: Vec<QueueId> = queue.list().map(|m| m.expect("lists").id).collect();
    assert_eq!(listed, vec![open_id]);
    assert_eq!(queue.len(), 1);
    for id in [done, deleted] {
        let bucket = dir.path().join(format!("{:02x}", id.bucket()));
        assert!(!bucket.join(format!("{id}.jnl")).exists());
        assert!(!bucket.join(format!("{id}.msg")).exists());
    }
}

#[test]
fn open_removes_unfinished_accepts_and_leaves_foreign_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kept = {
        let queue = Queue::open(dir.path()).expect("opens");
        queue
            .accept(&envelope(&["a@x"]), &b"x\r\n"[..])
            .expect("accepts")
    };
    let orphan = QueueId::generate();
    let bucket = |id: QueueId| dir.path().join(format!("{:02x}", id.bucket()));
    std::fs::write(bucket(orphan).join(format!("{orphan}.msg")), b"half").expect("writes");
    std::fs::write(dir.path().join(format!("tmp/{orphan}.jnl")), b"junk").expect("writes");
    std::fs::write(bucket(orphan).join("README"), b"not ours").expect("writes");
    let queue = Queue::open(dir.path()).expect("reopens");
    let r = queue.recovery();
    assert_eq!(
        (r.messages, r.tmp_removed, r.orphans_removed, r.foreign),
        (1, 1, 1, 1)
    );
    assert!(!bucket(orphan).join(format!("{orphan}.msg")).exists());
    assert!(bucket(orphan).join("README").exists());
    assert_eq!(queue.message(kept).expect("kept").size, 3);
}

#[test]
fn a_journal_that_does_not_replay_is_quarantined_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let queue = Queue::open(dir.path()).expect("opens");
        queue
            .accept(&envelope(&["a@x"]), &b"x\r\n"[..])
            .expect("accepts")
    };
    let jnl = dir.path().join(format!("{:02x}/{id}.jnl", id.bucket()));
    std::fs::write(&jnl, b"this is not a journal").expect("overwrites");
    let queue = Queue::open(dir.path()).expect("reopens");
    assert!(matches!(queue.message(id), Err(QueueError::Corrupt { .. })));
    assert!(dir.path().join(format!("corrupt/{id}.jnl")).exists());
    assert!(dir.path().join(format!("corrupt/{id}.msg")).exists());
    assert!(queue.is_empty());
}

/// A symlink planted in a bucket under a message's name is not followed.
#[test]
fn a_planted_symlink_is_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let queue = Queue::open(dir.path()).expect("opens");
        queue
            .accept(&envelope(&["a@x"]), &b"x\r\n"[..])
            .expect("accepts")
    };
    let msg = dir.path().join(format!("{:02x}/{id}.msg", id.bucket()));
    std::fs::remove_file(&msg).expect("removes");
    std::os::unix::fs::symlink("/etc/passwd", &msg).expect("symlinks");
    let queue = Queue::open(dir.path()).expect("reopens");
    assert!(queue.open_message(id).is_err());
    assert!(matches!(queue.message(id), Err(QueueError::Corrupt { .. })));
}

/// Recovery of 20,000 messages is a directory scan; list streams them in arrival order and
/// due replays each journal once.
#[test]
fn twenty_thousand_messages_recover_list_and_come_due() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ids = Vec::with_capacity(N);
    {
        let queue = Arc::new(Queue::open_with(dir.path(), unsynced()).expect("opens"));
        let env = envelope(&["a@x", "b@x"]);
        for n in 0..N {
            ids.push(queue.accept(&env, &body(n % 50)[..300]).expect("accepts"));
        }
        // Some held, some finished: the list and due must reflect that after reopen.
        let now = Timestamp::now();
        for id in ids.iter().step_by(1000) {
            queue.hold(*id, now).expect("holds");
        }
        for id in ids.iter().skip(1).step_by(1000) {
            queue
                .record(
                    *id,
                    &[(0, Outcome::delivered("ok")), (1, Outcome::delivered("ok"))],
                    now,
                )
                .expect("records");
        }
    }
    let started = std::time::Instant::now();
    let queue = Queue::open(dir.path()).expect("reopens");
    let open_time = started.elapsed();
    assert_eq!(queue.recovery().messages, N);
    // Directory scan only: generous bound for a debug build on a busy machine.
    assert!(open_time.as_secs() < 10, "open took {open_time:?}");

    let mut listed = 0;
    let mut previous = None;
    let mut held = 0;
    for m in queue.list() {
        let m = m.expect("lists");
        assert!(previous < Some(m.id), "list is in id order");
        previous = Some(m.id);
        held += usize::from(m.held);
        listed += 1;
    }
    assert_eq!(
        listed,
        N - N / 1000,
        "finished messages are removed on the way"
    );
    assert_eq!(held, N / 1000);

    let due = queue
        .due(Timestamp::now())
        .map(|d| d.expect("due"))
        .inspect(|d| assert_eq!(d.recipients, vec![0, 1]))
        .count();
    assert_eq!(due, N - 2 * (N / 1000));
}

#[test]
fn due_streams_while_the_queue_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open_with(dir.path(), unsynced()).expect("opens");
    let env = envelope(&["a@x"]);
    let ids: Vec<QueueId> = (0..1000)
        .map(|n| queue.accept(&env, &body(n)[..]).expect("accepts"))
        .collect();
    let now = Timestamp::now();
    // Deliver each message as the stream yields it: no id comes twice, none is missed.
    let mut seen = Vec::new();
    for due in queue.due(after(now, 1)) {
        let due = due.expect("due");
        queue
            .record(due.message.id, &[(0, Outcome::delivered("ok"))], now)
            .expect("records");
        queue.finish(due.message.id, None, now).expect("finishes");
        seen.push(due.message.id);
    }
    assert_eq!(seen, ids);
    assert!(queue.is_empty());
}

#[test]
fn remove_delivered_removes_only_what_is_complete_and_owes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open_with(dir.path(), unsynced()).expect("opens");
    let now = Timestamp::now();
    let ok = |i| (i, Outcome::delivered("delivered to Maildir"));

    // Every recipient delivered: gone, with no record written.
    let id = queue
        .accept(&envelope(&["a@x", "b@x"]), &body(1)[..])
        .expect("accepts");
    assert!(
        queue
            .remove_delivered(id, &[ok(0), ok(1)], now)
            .expect("asks")
    );
    assert!(matches!(queue.message(id), Err(QueueError::NotFound(_))));

    // One recipient left, or one not delivered: nothing changes.
    let id = queue
        .accept(&envelope(&["a@x", "b@x"]), &body(2)[..])
        .expect("accepts");
    assert!(!queue.remove_delivered(id, &[ok(0)], now).expect("asks"));
    let deferred = (
        1,
        Outcome::temporary(codes::SYSTEM_STATUS, "try again".to_string()),
    );
    assert!(
        !queue
            .remove_delivered(id, &[ok(0), deferred], now)
            .expect("asks")
    );
    let message = queue.message(id).expect("still queued");
    assert!(message.recipients.iter().all(|r| !r.is_final()));

    // NOTIFY=SUCCESS owes a DSN: the outcome must be recorded, not skipped.
    let mut env = envelope(&["a@x"]);
    env.recipients[0].notify = Some(Notify::SUCCESS);
    let id = queue.accept(&env, &body(3)[..]).expect("accepts");
    assert!(!queue.remove_delivered(id, &[ok(0)], now).expect("asks"));
    assert!(queue.message(id).is_ok());
}

/// Queues `message` and removes it as delivered: its message file and journal become
/// spares.
fn deliver_and_remove(queue: &Queue, message: &[u8]) {
    let id = queue.accept(&envelope(&["a@x"]), message).expect("accepts");
    let ok = [(0, Outcome::delivered("ok"))];
    assert!(
        queue
            .remove_delivered(id, &ok, Timestamp::now())
            .expect("removes")
    );
}

#[test]
fn finished_messages_leave_spares_that_later_accepts_reuse_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spares = || common::spares(dir.path());
    let long: Vec<u8> = body(1).into_iter().cycle().take(50_000).collect();
    {
        let queue = Queue::open(dir.path()).expect("opens");
        deliver_and_remove(&queue, &long);
        assert_eq!(spares(), 2);
    }
    // After a reopen the spares are found again and overwritten, cut to the new length.
    let queue = Queue::open(dir.path()).expect("reopens");
    let short = body(2);
    let id = queue
        .accept(&envelope(&["b@x"]), &short[..])
        .expect("accepts");
    assert_eq!(spares(), 0);
    drop(queue);
    let queue = Queue::open(dir.path()).expect("reopens");
    let message = queue.message(id).expect("reads");
    assert_eq!(message.envelope.recipients[0].address, "b@x");
    assert_eq!(read_message(&queue, id), short);
}

/// After a deferral the journal always becomes a spare (nobody but the queue reads it);
/// the message file only when it never left this process: a cursus-lda child given it
/// (`handed_out`), or any delivery by a process before a restart, may still be reading it,
/// and a later accept overwriting the spare would hand that reader another message.
#[test]
fn after_a_deferral_only_files_that_never_left_the_process_become_spares() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spares = || common::spares(dir.path());
    let now = Timestamp::now();
    let later = [(
        0,
        Outcome::temporary(EnhancedStatus::new(4, 4, 1), "no answer"),
    )];
    let ok = [(0, Outcome::delivered("ok"))];
    let queue = Queue::open(dir.path()).expect("opens");

    // Remote only (read in this process): both files are kept.
    let id = queue
        .accept(&envelope(&["a@x"]), &body(1)[..])
        .expect("accepts");
    queue.record(id, &later, now).expect("defers");
    assert!(queue.remove_delivered(id, &ok, now).expect("removes"));
    assert_eq!(spares(), 2);

    // Given to a delivery agent outside: the message file is unlinked.
    let id = queue
        .accept(&envelope(&["a@x"]), &body(2)[..])
        .expect("accepts");
    assert_eq!(spares(), 0, "the accept reused both spares");
    queue.handed_out(id);
    queue.record(id, &later, now).expect("defers");
    assert!(queue.remove_delivered(id, &ok, now).expect("removes"));
    assert_eq!(spares(), 1, "only the journal is kept");

    // Accepted before a restart: whoever had it then may still read it.
    let id = queue
        .accept(&envelope(&["a@x"]), &body(3)[..])
        .expect("accepts");
    queue.record(id, &later, now).expect("defers");
    drop(queue);
    let queue = Queue::open(dir.path()).expect("reopens");
    assert_eq!(spares(), 0);
    assert!(queue.remove_delivered(id, &ok, now).expect("removes"));
    assert_eq!(spares(), 1, "only the journal is kept");
}

/// Files in the spool's directories other than spares (messages, journals, tmp/ debris).
fn queue_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).expect("reads") {
        let entry = entry.expect("entry");
        if !entry.file_type().expect("type").is_dir() || entry.file_name() == "spare" {
            continue;
        }
        for inner in std::fs::read_dir(entry.path()).expect("reads") {
            let path = inner.expect("entry").path();
            if !path.to_string_lossy().ends_with(".spare") {
                out.push(path);
            }
        }
    }
    out
}

/// A message streamed into a draft in pieces is queued exactly as `accept` queues it.
#[test]
fn a_streamed_draft_commits_like_accept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long: Vec<u8> = body(3).into_iter().cycle().take(700_000).collect();
    let env = envelope(&["a@x", "b@x"]);
    let id = {
        let queue = Queue::open(dir.path()).expect("opens");
        let mut draft = queue.begin().expect("begins");
        for piece in long.chunks(4099) {
            std::io::Write::write_all(&mut draft, piece).expect("writes");
        }
        assert_eq!(draft.size(), long.len() as u64);
        let planned = draft.id();
        let id = queue.commit(draft, &env).expect("commits");
        assert_eq!(id, planned);
        id
    };
    let queue = Queue::open(dir.path()).expect("reopens");
    let message = queue.message(id).expect("reads");
    assert_eq!(message.envelope, env);
    assert_eq!(message.size, long.len() as u64);
    assert_eq!(read_message(&queue, id), long);
}

/// RSET, a disconnect or a failed write in the daemon drops the draft: its file goes at
/// once, not at the next open. A spare the draft was writing goes back to the spares if it
/// still fits in one, and is unlinked if the message made it larger.
#[test]
fn a_draft_dropped_uncommitted_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(dir.path()).expect("opens");
    let mut draft = queue.begin().expect("begins");
    std::io::Write::write_all(&mut draft, &body(1)).expect("writes");
    assert_eq!(queue_files(dir.path()).len(), 1);
    drop(draft);
    assert_eq!(queue_files(dir.path()), Vec::<std::path::PathBuf>::new());

    // Two spares (a message file and a journal).
    let long: Vec<u8> = body(1).into_iter().cycle().take(50_000).collect();
    deliver_and_remove(&queue, &long);
    assert_eq!(common::spares(dir.path()), 2);
    let mut draft = queue.begin().expect("begins");
    std::io::Write::write_all(&mut draft, &body(2)).expect("writes");
    drop(draft);
    assert_eq!(
        common::spares(dir.path()),
        2,
        "a small draft's spare is kept"
    );
    let mut draft = queue.begin().expect("begins");
    let huge = vec![b'x'; 300_000];
    std::io::Write::write_all(&mut draft, &huge).expect("writes");
    drop(draft);
    assert_eq!(common::spares(dir.path()), 1, "a grown spare is unlinked");
    assert_eq!(queue_files(dir.path()), Vec::<std::path::PathBuf>::new());
    assert!(queue.is_empty());
}

/// A commit that fails (here: an envelope too large for a journal record) removes the
/// draft's file and leaves nothing in tmp/.
#[test]
fn a_failed_commit_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(dir.path()).expect("opens");
    let mut draft = queue.begin().expect("begins");
    std::io::Write::write_all(&mut draft, &body(1)).expect("writes");
    let mut env = envelope(&["a@x"]);
    env.envid = Some("x".repeat(17 << 20));
    let err = queue.commit(draft, &env);
    assert!(matches!(err, Err(QueueError::EnvelopeTooLarge)), "{err:?}");
    assert_eq!(queue_files(dir.path()), Vec::<std::path::PathBuf>::new());
    assert!(queue.is_empty());
}
