//! The hints as the engine and the outbound client use them, on an in-memory database with
//! a clock the tests move.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use cursus_mail::{EnhancedStatus, Outcome, OutcomeKind, Sender};
use cursus_queue::{Envelope, QueueId, Recipient};
use cursus_route::retry::RetryRules;
use jiff::Timestamp;

use super::store::Store;
use super::{Hints, Settings};
use crate::routing::NextHop;

const T0: i64 = 1_800_000_000;
const HOUR: i64 = 3600;

struct Clock(Arc<AtomicI64>);

impl Clock {
    fn set(&self, t: i64) {
        self.0.store(t, Ordering::SeqCst);
    }
}

fn hints(rules: &str) -> (Hints, Clock) {
    let now = Arc::new(AtomicI64::new(T0));
    let read = now.clone();
    let rules = RetryRules::parse(rules, "test", 5 * 86_400).expect("rules");
    let h = Hints::with_store(
        Store::in_memory().expect("db"),
        Settings::default(),
        rules,
        Box::new(move || read.load(Ordering::SeqCst)),
    );
    (h, Clock(now))
}

fn envelope(to: &str, received: i64) -> Envelope {
    Envelope {
        received: Timestamp::from_second(received).expect("time"),
        ..Envelope::new(
            Sender::Address("ann@a.example".into()),
            vec![Recipient::new(to)],
        )
    }
}

fn mx(domain: &str) -> NextHop {
    NextHop {
        lmtp: false,
        hosts: Vec::new(),
        port: 25,
        domain: domain.into(),
    }
}

fn timeout() -> Outcome {
    Outcome::temporary(
        EnhancedStatus::new(4, 4, 2),
        "mx.slow.example[192.0.2.1]:25: timed out: no answer for 300s (while waiting for the greeting)",
    )
}

fn refused(host: &str) -> Outcome {
    Outcome::temporary(
        EnhancedStatus::new(4, 4, 1),
        format!("connect to {host}[192.0.2.9]:25: Connection refused (os error 111)"),
    )
}

#[test]
fn bounce_at_once_after_a_recent_timeout_bounce_until_a_delivery_succeeds() {
    let (h, clock) = hints(
        "[[retry]]\npattern = \"slow.example\"\nerrors = [\"timeout\"]\nschedule = \"F,1h,10m\"\n",
    );
    let hop = mx("slow.example");
    let id = QueueId::generate();
    // The first message times out for its whole lifetime (1 h): the rule bounces it, and
    // the hints remember.
    let first = envelope("joe@slow.example", T0);
    clock.set(T0 + 30 * 60);
    let mut o = timeout();
    h.remote(id, &first, 0, &hop, "joe@slow.example", "-", &mut o);
    assert_eq!(o.kind, OutcomeKind::Temporary, "before the lifetime");
    clock.set(T0 + HOUR);
    let mut o = timeout();
    h.remote(id, &first, 0, &hop, "joe@slow.example", "-", &mut o);
    assert_eq!(
        o.kind,
        OutcomeKind::Temporary,
        "the queue bounces it, not the hints"
    );
    // A new message an hour later: its first timeout bounces at once.
    clock.set(T0 + 2 * HOUR);
    let second = envelope("joe@slow.example", T0 + 2 * HOUR);
    let mut o = timeout();
    h.remote(
        QueueId::generate(),
        &second,
        0,
        &hop,
        "joe@slow.example",
        "-",
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Permanent);
    assert_eq!(o.status.to_string(), "5.4.7");
    assert!(
        o.text.contains("bounced after timing out 1h ago"),
        "{}",
        o.text
    );
    assert!(o.text.contains("last error: 4.4.2"), "{}", o.text);
    // Another address at the same place, or a greylisting reply: the rule decides.
    let mut o = timeout();
    h.remote(
        QueueId::generate(),
        &second,
        0,
        &hop,
        "ann@slow.example",
        "-",
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Temporary);
    let mut o = Outcome::temporary(
        EnhancedStatus::new(4, 7, 1),
        "450 greylisted (in reply to RCPT TO)",
    );
    h.remote(
        QueueId::generate(),
        &second,
        0,
        &hop,
        "joe@slow.example",
        "mx.slow.example[192.0.2.1]:25",
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Temporary);
    // A delivery there clears it.
    let mut ok = Outcome::delivered("250 ok");
    h.remote(
        QueueId::generate(),
        &second,
        0,
        &hop,
        "joe@slow.example",
        "mx.slow.example[192.0.2.1]:25",
        &mut ok,
    );
    let mut o = timeout();
    h.remote(
        QueueId::generate(),
        &second,
        0,
        &hop,
        "joe@slow.example",
        "-",
        &mut o,
    );
    assert_eq!(
        o.kind,
        OutcomeKind::Temporary,
        "delivered since: retried again"
    );
}

#[test]
fn the_memory_of_a_timeout_bounce_ends() {
    let (h, clock) =
        hints("[[retry]]\npattern = \"*\"\nerrors = [\"timeout\"]\nschedule = \"F,1h,10m\"\n");
    let hop = mx("slow.example");
    clock.set(T0 + HOUR);
    let mut o = timeout();
    h.remote(
        QueueId::generate(),
        &envelope("x@slow.example", T0),
        0,
        &hop,
        "x@slow.example",
        "-",
        &mut o,
    );
    // One day later (the default memory) and a second: forgotten.
    let later = T0 + HOUR + 86_400 + 1;
    clock.set(later);
    let mut o = timeout();
    h.remote(
        QueueId::generate(),
        &envelope("x@slow.example", later),
        0,
        &hop,
        "x@slow.example",
        "-",
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Temporary);
}

#[test]
fn a_domain_without_mx_that_always_refuses_is_given_up_early() {
    let (h, clock) = hints("");
    let hop = mx("nomx.example");
    let e = envelope("x@nomx.example", T0);
    let id = QueueId::generate();
    let attempt = |at: i64| {
        clock.set(at);
        let failure = refused("nomx.example");
        h.not_connected(&hop, true, &failure);
        let mut o = failure;
        h.remote(id, &e, 0, &hop, "x@nomx.example", "-", &mut o);
        o
    };
    assert_eq!(attempt(T0 + 1).kind, OutcomeKind::Temporary);
    assert_eq!(attempt(T0 + HOUR).kind, OutcomeKind::Temporary);
    let o = attempt(T0 + 2 * HOUR);
    assert_eq!(
        o.kind,
        OutcomeKind::Permanent,
        "2 h: the default no-MX lifetime"
    );
    assert!(o.text.contains("nomx.example has no MX"), "{}", o.text);

    // The same with MX hosts: the rule's 5 days.
    let (h, clock) = hints("");
    let hop = mx("mx.example");
    clock.set(T0 + 3 * HOUR);
    let failure = refused("mx1.mx.example");
    h.not_connected(&hop, false, &failure);
    let mut o = failure;
    h.remote(
        id,
        &envelope("x@mx.example", T0),
        0,
        &hop,
        "x@mx.example",
        "-",
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Temporary);

    // A connection that was answered in between: not every attempt was refused.
    let (h, clock) = hints("");
    let hop = mx("nomx.example");
    clock.set(T0 + 1);
    h.not_connected(&hop, true, &refused("nomx.example"));
    clock.set(T0 + HOUR);
    h.connected(&hop, true);
    clock.set(T0 + 2 * HOUR);
    let failure = refused("nomx.example");
    h.not_connected(&hop, true, &failure);
    let mut o = failure;
    h.remote(
        id,
        &envelope("x@nomx.example", T0),
        0,
        &hop,
        "x@nomx.example",
        "-",
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Temporary);
}

#[test]
fn reaching_a_destination_starts_the_messages_waiting_for_it() {
    let (h, clock) = hints("");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    h.set_kick(tx);
    let hop = mx("late.example");
    let (a, b, c) = (
        QueueId::generate(),
        QueueId::generate(),
        QueueId::generate(),
    );
    for id in [a, b] {
        let mut o = refused("mx.late.example");
        h.remote(
            id,
            &envelope("x@late.example", T0),
            0,
            &hop,
            "x@late.example",
            "-",
            &mut o,
        );
    }
    // Another destination reached: nothing starts.
    clock.set(T0 + 60);
    let mut ok = Outcome::delivered("250 ok");
    h.remote(
        c,
        &envelope("y@other.example", T0),
        0,
        &mx("other.example"),
        "y@other.example",
        "mx.other.example[192.0.2.3]:25",
        &mut ok,
    );
    assert!(rx.try_recv().is_err());
    // The late one answers for c: a and b start now.
    let mut ok = Outcome::delivered("250 ok");
    h.remote(
        c,
        &envelope("x@late.example", T0 + 60),
        0,
        &hop,
        "x@late.example",
        "mx.late.example[192.0.2.2]:25",
        &mut ok,
    );
    let mut started = vec![rx.try_recv().expect("a"), rx.try_recv().expect("b")];
    started.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(started, want);
    assert!(rx.try_recv().is_err(), "each once");
    // Taken off the list: the next delivery starts nothing.
    let mut ok = Outcome::delivered("250 ok");
    h.remote(
        c,
        &envelope("x@late.example", T0 + 60),
        0,
        &hop,
        "x@late.example",
        "mx.late.example[192.0.2.2]:25",
        &mut ok,
    );
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_host_that_failed_ehlo_gets_helo_for_a_while() {
    let (h, clock) = hints("");
    assert!(!h.helo_only("old.example"));
    h.failed_ehlo("Old.Example", "500 what");
    assert!(h.helo_only("old.example"));
    clock.set(T0 + 7 * 86_400);
    assert!(
        !h.helo_only("old.example"),
        "tried with EHLO again after helo_memory"
    );
}

#[test]
fn over_quota_is_deferred_while_the_maildir_is_read_and_bounced_when_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("mkdir");
    }
    let read = cursus_mailbox::maildir::last_read(&maildir).expect("cur/ is visible");
    let (h, clock) = hints("");
    let destination = format!("maildir:{}", maildir.display())
        .parse::<cursus_lda::Destination>()
        .expect("dest");
    // What the store says: 5.2.2 at once (Maildir++ quota, EDQUOT), or 4.2.2.
    let full = || {
        Outcome::permanent(
            EnhancedStatus::new(5, 2, 2),
            cursus_mail::ExitCode::NoPerm,
            "maildirsize: the quota does not allow this message",
        )
    };
    let full_temporary = || Outcome::temporary(EnhancedStatus::new(4, 2, 2), "mailbox full");
    // Read an hour ago: deferred, and the `quota` retry rule schedules it.
    clock.set(read + HOUR);
    let mut o = full();
    h.local(
        QueueId::generate(),
        "u@localhost",
        &destination,
        None,
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Temporary);
    assert_eq!(o.status.to_string(), "4.2.2");
    assert_eq!(
        crate::retry::classify(&o),
        cursus_route::retry::ErrorClass::Quota
    );
    assert!(o.text.contains("being read (last 1h ago)"), "{}", o.text);
    let mut o = full_temporary();
    h.local(
        QueueId::generate(),
        "u@localhost",
        &destination,
        None,
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Temporary);
    // Not read for 8 days (the default is 7): bounced with 5.2.2.
    clock.set(read + 8 * 86_400);
    let mut o = full_temporary();
    h.local(
        QueueId::generate(),
        "u@localhost",
        &destination,
        None,
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Permanent);
    assert_eq!(o.status.to_string(), "5.2.2");
    assert!(o.text.contains("not been read for 8d"), "{}", o.text);
    let mut o = full();
    h.local(
        QueueId::generate(),
        "u@localhost",
        &destination,
        None,
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Permanent);
    assert!(o.text.ends_with("not been read for 8d"), "{}", o.text);
    // Cannot be seen (an mbox, or a Maildir the daemon may not look into): the last
    // observation counts; without one, the outcome stands as the store gave it.
    let gone = "mbox:/nonexistent/u"
        .parse::<cursus_lda::Destination>()
        .expect("dest");
    let mut o = full_temporary();
    h.local(QueueId::generate(), "u@localhost", &gone, None, &mut o);
    assert_eq!(
        o.kind,
        OutcomeKind::Permanent,
        "the observation stored earlier"
    );
    let mut o = full_temporary();
    h.local(QueueId::generate(), "v@localhost", &gone, None, &mut o);
    assert_eq!(o.kind, OutcomeKind::Temporary);
    let mut o = full();
    h.local(QueueId::generate(), "v@localhost", &gone, None, &mut o);
    assert_eq!(o.kind, OutcomeKind::Permanent);
    // What cursus-lda saw (system mode: the daemon may not look into the home) counts
    // for a mailbox the daemon cannot see: read an hour ago, deferred; 8 days, bounced.
    let mut o = full();
    let now = read + 8 * 86_400;
    h.local(
        QueueId::generate(),
        "w@localhost",
        &gone,
        Some(now - HOUR),
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Temporary, "{}", o.text);
    let mut o = full_temporary();
    h.local(
        QueueId::generate(),
        "w@localhost",
        &gone,
        Some(now - 8 * 86_400),
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Permanent, "{}", o.text);
    // Anything else is left alone.
    let mut o = Outcome::delivered("ok");
    h.local(
        QueueId::generate(),
        "u@localhost",
        &destination,
        None,
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Delivered);
}

#[test]
fn a_damaged_file_is_recreated_and_delivery_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(super::FILE),
        b"not a database, not at all".repeat(400),
    )
    .expect("write");
    let rules = RetryRules::defaults(86_400);
    let h = Hints::open(
        dir.path(),
        Settings::default(),
        crate::retry::Rules::new(rules.clone()),
    );
    h.failed_ehlo("old.example", "500");
    assert!(h.helo_only("old.example"));
    assert!(dir.path().join("hints.db.bad").exists());
    // A directory where the file should be: no hints, and no panic either.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join(super::FILE)).expect("mkdir");
    std::fs::write(dir.path().join("hints.db.bad"), b"x").expect("write");
    let h = Hints::open(
        dir.path(),
        Settings::default(),
        crate::retry::Rules::new(rules),
    );
    h.failed_ehlo("old.example", "500");
    assert!(!h.helo_only("old.example"));
    let mut o = timeout();
    h.remote(
        QueueId::generate(),
        &envelope("a@b.example", T0),
        0,
        &mx("b.example"),
        "a@b.example",
        "-",
        &mut o,
    );
    assert_eq!(o.kind, OutcomeKind::Temporary);
    h.tidy();
}

#[test]
fn explain_names_the_hints_that_change_the_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(super::FILE);
    {
        let (store, _) = Store::open(&path).expect("db");
        store
            .address_timeout_bounce("joe@slow.example", T0)
            .expect("w");
        store.domain_refused("slow.example", true, T0).expect("w");
        store.set_helo_only("mx.slow.example", T0).expect("w");
    }
    let lines = super::explain::explain(
        &path,
        &Settings::default(),
        "joe@slow.example",
        cursus_route::retry::ErrorClass::Timeout,
        T0 + HOUR,
    )
    .expect("explain");
    let text = lines.join("\n");
    assert!(text.contains("bounced after timing out 1h ago"), "{text}");
    assert!(text.contains("bounces at once"), "{text}");
    assert!(text.contains("domain slow.example: no MX"), "{text}");
    assert!(
        text.contains("host mx.slow.example: failed EHLO 1h ago"),
        "{text}"
    );
}
