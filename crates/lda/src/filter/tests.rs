//! Tests of the filter as the current user with a temporary home: one script per row and
//! the answer it must give, at DATA and at RCPT, plus the scripts that must be refused
//! before they run.

use super::*;
use cursus_mail::OutcomeKind;
use std::os::unix::fs::PermissionsExt;

const MESSAGE: &str = "From: Ann <ann@example.org>\r\nTo: joe@example.net\r\nSubject: Hello\r\nMessage-ID: <1@example.org>\r\n\r\nHi Joe\r\n";

fn envelope() -> Envelope {
    Envelope {
        sender: Some("ann@example.org".into()),
        original_recipient: "joe+lists@example.net".into(),
        final_recipient: "joe@example.net".into(),
        extension: Some("lists".into()),
    }
}

/// A home holding `script` as ~/.dovecot.sieve, mode 0600.
fn home_with(script: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let path = home.path().join(SCRIPT_NAME);
    std::fs::write(&path, script).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    home
}

fn at_data(home: &Path, message: &str) -> Answer {
    let mut bytes = message.as_bytes();
    run_filter(
        "joe",
        home,
        &envelope(),
        FilterStage::Data,
        Some(&mut bytes),
    )
}

fn at_rcpt(home: &Path) -> Answer {
    run_filter("joe", home, &envelope(), FilterStage::Rcpt, None)
}

fn decided(decisions: Vec<FilterDecision>) -> Answer {
    Answer::Filter {
        needs_message: false,
        decisions,
    }
}

fn keep() -> FilterDecision {
    FilterDecision::Keep { flags: Vec::new() }
}

/// The text of a temporary outcome with status 4.3.5; panics on anything else.
fn config_error(answer: Answer) -> String {
    match answer {
        Answer::Outcome { kind, status, text } => {
            assert_eq!(kind, OutcomeKind::Temporary, "{text}");
            assert_eq!(status.to_string(), "4.3.5", "{text}");
            text
        }
        other => panic!("expected a 4.3.5 outcome, got {other:?}"),
    }
}

#[test]
fn no_script_is_implicit_keep() {
    let home = tempfile::tempdir().expect("tempdir");
    assert_eq!(at_data(home.path(), MESSAGE), decided(vec![keep()]));
    assert_eq!(at_rcpt(home.path()), decided(vec![keep()]));
}

#[test]
fn scripts_become_decisions() {
    let cases: &[(&str, Vec<FilterDecision>)] = &[
        ("keep;", vec![keep()]),
        (
            r#"require ["fileinto", "imap4flags"]; fileinto :flags ["\\Seen", "$Work"] "Lists";"#,
            vec![FilterDecision::FileInto {
                mailbox: "Lists".into(),
                flags: vec!["\\Seen".into(), "$Work".into()],
                create: false,
            }],
        ),
        (
            r#"require ["fileinto", "mailbox", "imap4flags"]; addflag "\\Flagged"; fileinto :create "New"; keep;"#,
            vec![
                FilterDecision::FileInto {
                    mailbox: "New".into(),
                    flags: vec!["\\Flagged".into()],
                    create: true,
                },
                FilterDecision::Keep {
                    flags: vec!["\\Flagged".into()],
                },
            ],
        ),
        (
            r#"require "copy"; redirect :copy "bob@example.com";"#,
            vec![
                FilterDecision::Redirect {
                    address: "bob@example.com".into(),
                    copy: true,
                },
                keep(),
            ],
        ),
        (
            r#"redirect "Bob <bob@example.com>";"#,
            vec![FilterDecision::Redirect {
                address: "bob@example.com".into(),
                copy: false,
            }],
        ),
        (
            r#"require "reject"; reject "I do not want this.";"#,
            vec![FilterDecision::Reject {
                text: "I do not want this.".into(),
            }],
        ),
        (
            r#"require "ereject"; ereject "Go away.";"#,
            vec![FilterDecision::Reject {
                text: "Go away.".into(),
            }],
        ),
        ("discard;", vec![FilterDecision::Discard]),
        (
            r#"if header :contains "subject" "hello" { discard; }"#,
            vec![FilterDecision::Discard],
        ),
        // A runtime error (reject after keep conflicts) is implicit keep only.
        (r#"require "reject"; keep; reject "no";"#, vec![keep()]),
        // Header edits are dropped; the keep stays.
        (
            r#"require "editheader"; addheader "X-Seen" "1";"#,
            vec![keep()],
        ),
        // Notifications are not decisions.
        (
            r#"require "enotify"; notify "mailto:bob@example.com";"#,
            vec![keep()],
        ),
    ];
    for (script, want) in cases {
        let home = home_with(script);
        assert_eq!(
            at_data(home.path(), MESSAGE),
            decided(want.clone()),
            "{script}"
        );
    }
}

#[test]
fn vacation_fields_are_carried() {
    let home = home_with(
        r#"require "vacation"; vacation :days 3 :subject "Away" :from "joe@example.net" :handle "trip" "Back on Monday.";"#,
    );
    assert_eq!(
        at_data(home.path(), MESSAGE),
        decided(vec![
            FilterDecision::Vacation {
                recipient: "ann@example.org".into(),
                from: Some("joe@example.net".into()),
                subject: Some("Away".into()),
                reason: "Back on Monday.".into(),
                period_seconds: 3 * 86400,
                handle: Some("trip".into()),
                mime: false,
            },
            keep(),
        ])
    );
    // Defaults: the subject from the message, the user's address, a week.
    let home = home_with(r#"require ["vacation", "vacation-seconds"]; vacation :mime "x";"#);
    match at_data(home.path(), MESSAGE) {
        Answer::Filter {
            needs_message: false,
            decisions,
        } => match decisions.as_slice() {
            [
                FilterDecision::Vacation {
                    subject,
                    from,
                    period_seconds,
                    mime,
                    ..
                },
                FilterDecision::Keep { .. },
            ] => {
                assert_eq!(subject.as_deref(), Some("Auto: Hello"));
                assert_eq!(from.as_deref(), Some("joe@example.net"));
                assert_eq!(*period_seconds, 7 * 86400);
                assert!(mime);
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_vacation_to_a_list() {
    let home = home_with(r#"require "vacation"; vacation "away";"#);
    let list = format!("List-Id: <rust.example.org>\r\n{MESSAGE}");
    assert_eq!(at_data(home.path(), &list), decided(vec![keep()]));
}

#[test]
fn an_envelope_script_decides_at_rcpt() {
    let home =
        home_with(r#"require "envelope"; if envelope :is "from" "ann@example.org" { discard; }"#);
    assert_eq!(at_rcpt(home.path()), decided(vec![FilterDecision::Discard]));
    let home = home_with(
        r#"require ["envelope", "subaddress", "fileinto"]; if envelope :detail "to" "x" { fileinto "X"; }"#,
    );
    assert_eq!(at_rcpt(home.path()), decided(vec![keep()]));
    let home = home_with(
        r#"require ["environment", "fileinto"]; if environment :is "phase" "pre" { fileinto "Early"; }"#,
    );
    assert_eq!(
        at_rcpt(home.path()),
        decided(vec![FilterDecision::FileInto {
            mailbox: "Early".into(),
            flags: Vec::new(),
            create: false,
        }])
    );
    assert_eq!(at_data(home.path(), MESSAGE), decided(vec![keep()]));
}

#[test]
fn a_message_test_at_rcpt_needs_the_message() {
    let needs = Answer::Filter {
        needs_message: true,
        decisions: Vec::new(),
    };
    for script in [
        r#"if header :contains "subject" "hello" { discard; }"#,
        r#"require "envelope"; if envelope :is "from" "ann@example.org" { if size :over 1M { discard; } }"#,
        r#"if exists "list-id" { discard; }"#,
        r#"require "vacation"; vacation "away";"#,
    ] {
        let home = home_with(script);
        assert_eq!(at_rcpt(home.path()), needs, "{script}");
    }
}

#[test]
fn folders_exist_in_the_users_maildir() {
    let script = r#"require ["mailbox", "fileinto"]; if mailboxexists "Lists" { fileinto "Lists"; } elsif mailboxexists "INBOX" { fileinto :create "Other"; }"#;
    let home = home_with(script);
    assert_eq!(
        at_data(home.path(), MESSAGE),
        decided(vec![FilterDecision::FileInto {
            mailbox: "Other".into(),
            flags: Vec::new(),
            create: true,
        }])
    );
    std::fs::create_dir_all(home.path().join("Maildir/.Lists")).expect("mkdir");
    assert_eq!(
        at_data(home.path(), MESSAGE),
        decided(vec![FilterDecision::FileInto {
            mailbox: "Lists".into(),
            flags: Vec::new(),
            create: false,
        }])
    );
}

#[test]
fn a_script_that_does_not_compile_is_a_temporary_4_3_5_naming_the_line() {
    let home = home_with("require \"fileinto\";\nfileinot \"B\";\n");
    let text = config_error(at_data(home.path(), MESSAGE));
    assert!(text.contains(".dovecot.sieve:2:1"), "{text}");
    let text = config_error(at_rcpt(home.path()));
    assert!(text.contains(".dovecot.sieve:2:1"), "{text}");
}

#[test]
fn a_group_writable_script_is_refused() {
    let home = home_with("discard;");
    let path = home.path().join(SCRIPT_NAME);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).expect("chmod");
    let text = config_error(at_data(home.path(), MESSAGE));
    assert!(text.contains("writable by group or others"), "{text}");
}

#[test]
fn a_symlink_to_a_fifo_is_refused_without_hanging() {
    let home = tempfile::tempdir().expect("tempdir");
    let fifo = home.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
    std::os::unix::fs::symlink("fifo", home.path().join(SCRIPT_NAME)).expect("ln");
    let text = config_error(at_data(home.path(), MESSAGE));
    assert!(text.contains("a FIFO, not a regular file"), "{text}");
}

#[test]
fn a_symlink_to_the_users_own_script_is_followed() {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(home.path().join("sieve")).expect("mkdir");
    let target = home.path().join("sieve/active.sieve");
    std::fs::write(&target, "discard;").expect("write");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::symlink("sieve/active.sieve", home.path().join(SCRIPT_NAME)).expect("ln");
    assert_eq!(
        at_data(home.path(), MESSAGE),
        decided(vec![FilterDecision::Discard])
    );
}

#[test]
fn a_script_owned_by_someone_else_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        return; // Only root can give a file away.
    }
    let home = home_with("discard;");
    let path = home.path().join(SCRIPT_NAME);
    nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let text = config_error(at_data(home.path(), MESSAGE));
    assert!(text.contains("owned by uid 65534"), "{text}");
}

#[test]
fn data_without_the_message_is_temporary() {
    let home = home_with("keep;");
    match run_filter("joe", home.path(), &envelope(), FilterStage::Data, None) {
        Answer::Outcome { kind, .. } => assert_eq!(kind, OutcomeKind::Temporary),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_the_first_part_of_a_huge_message_is_read() {
    // A reader that never ends: the filter must stop at the limit.
    let home = home_with(r#"if size :over 10M { discard; }"#);
    let mut endless = std::io::repeat(b'x');
    let header = b"Subject: big\r\n\r\n";
    let mut reader = header.chain(&mut endless);
    let answer = run_filter(
        "joe",
        home.path(),
        &envelope(),
        FilterStage::Data,
        Some(&mut reader),
    );
    assert_eq!(answer, decided(vec![keep()]));
}

#[test]
fn every_answer_encodes() {
    let home = home_with(r#"require "reject"; reject "x";"#);
    let answer = at_data(home.path(), MESSAGE);
    assert!(encode_answer(&answer).is_ok());
    let long = "y".repeat(crate::protocol::MAX_STRING + 1);
    let home = home_with(&format!("require \"reject\"; reject \"{long}\";"));
    let text = config_error(at_data(home.path(), MESSAGE));
    assert!(text.contains("do not fit"), "{text}");
}
