//! Table tests of the frames: round trips of every request and answer, one row per malformed
//! input with the typed error it must give, and property tests that round trips hold and
//! arbitrary bytes never panic.

use super::*;
use cursus_mail::codes;
use proptest::prelude::*;

fn path(s: &str) -> MailPath {
    MailPath::parse(s).expect("valid path")
}

fn envelope() -> Envelope {
    Envelope {
        sender: Some("ann@example.org".into()),
        original_recipient: "joe+lists@example.net".into(),
        final_recipient: "joe@example.net".into(),
        extension: Some("lists".into()),
    }
}

fn requests() -> Vec<Request> {
    vec![
        Request::Deliver {
            user: "joe".into(),
            destination: Destination::Maildir(path("/home/joe/Maildir")),
            envelope: envelope(),
            options: DeliverOptions {
                fsync: true,
                create_folders: false,
                return_path: true,
            },
        },
        Request::Deliver {
            user: "joe".into(),
            destination: Destination::Mbox(path("/var/mail/joe")),
            envelope: Envelope {
                sender: None,
                extension: None,
                ..envelope()
            },
            options: DeliverOptions::default(),
        },
        Request::Deliver {
            user: "joe".into(),
            destination: Destination::Mh(path("/home/joe/Mail/inbox")),
            envelope: envelope(),
            options: DeliverOptions::default(),
        },
        Request::Deliver {
            user: "joe".into(),
            destination: Destination::Command {
                program: path("/usr/bin/procmail"),
                args: vec!["-a".into(), "lists".into()],
            },
            envelope: envelope(),
            options: DeliverOptions::default(),
        },
        Request::Filter {
            user: "joe".into(),
            envelope: envelope(),
            stage: FilterStage::Rcpt,
        },
        Request::Filter {
            user: "joe".into(),
            envelope: envelope(),
            stage: FilterStage::Data,
        },
        Request::ReadForward { user: "joe".into() },
        Request::Ping,
        Request::DeliverMany {
            user: "joe".into(),
            destination: Destination::Maildir(path("/home/joe/Maildir")),
            envelopes: vec![
                envelope(),
                Envelope {
                    sender: None,
                    ..envelope()
                },
            ],
            options: DeliverOptions::default(),
        },
    ]
}

fn answers() -> Vec<Answer> {
    vec![
        Answer::Outcome {
            kind: OutcomeKind::Delivered,
            status: codes::DELIVERED,
            text: "delivered to maildir".into(),
        },
        Answer::Outcome {
            kind: OutcomeKind::Temporary,
            status: codes::SYSTEM_FULL,
            text: "disk full".into(),
        },
        Answer::Outcome {
            kind: OutcomeKind::Permanent,
            status: codes::DELIVERY_NOT_AUTHORIZED,
            text: "refused by policy".into(),
        },
        Answer::OverQuota {
            kind: OutcomeKind::Permanent,
            status: codes::MAILBOX_FULL,
            text: "mailbox over quota".into(),
            mailbox_read: 1_700_000_000,
        },
        Answer::Filter {
            needs_message: false,
            decisions: vec![
                FilterDecision::Keep { flags: vec![] },
                FilterDecision::FileInto {
                    mailbox: "Lists/rust".into(),
                    flags: vec!["\\Seen".into()],
                    create: true,
                },
                FilterDecision::Redirect {
                    address: "ann@example.org".into(),
                    copy: true,
                },
                FilterDecision::Reject {
                    text: "no thanks".into(),
                },
                FilterDecision::Discard,
                FilterDecision::Vacation {
                    recipient: "ann@example.org".into(),
                    from: None,
                    subject: Some("Away".into()),
                    reason: "Back on Monday.\r\n".into(),
                    period_seconds: 7 * 86400,
                    handle: Some("h1".into()),
                    mime: false,
                },
            ],
        },
        Answer::Filter {
            needs_message: true,
            decisions: vec![],
        },
        Answer::Forward {
            entries: vec![
                ForwardEntry::Address("joe@elsewhere.example".into()),
                ForwardEntry::Mailbox(path("/home/joe/mbox")),
                ForwardEntry::Command("/usr/bin/procmail".into()),
                ForwardEntry::Include(path("/home/joe/list")),
                ForwardEntry::Local("joe".into()),
            ],
        },
        Answer::Pong,
        Answer::Error {
            code: ErrorCode::Malformed,
            text: "frame ends inside user".into(),
        },
        Answer::Outcomes(vec![
            Answer::Outcome {
                kind: OutcomeKind::Delivered,
                status: codes::DELIVERED,
                text: "delivered to maildir".into(),
            },
            Answer::OverQuota {
                kind: OutcomeKind::Temporary,
                status: codes::MAILBOX_FULL.as_temporary(),
                text: "mailbox over quota".into(),
                mailbox_read: 1_700_000_000,
            },
        ]),
    ]
}

fn decoded<T: fmt::Debug>(d: Result<Decoded<T>, FrameError>) -> (T, usize) {
    match d {
        Ok(Decoded::Frame { value, consumed }) => (value, consumed),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn requests_round_trip() {
    for request in requests() {
        let bytes = encode_request(&request).expect("encode");
        let (value, consumed) = decoded(decode_request(&bytes));
        assert_eq!(value, request);
        assert_eq!(consumed, bytes.len());
    }
}

#[test]
fn answers_round_trip() {
    for answer in answers() {
        let bytes = encode_answer(&answer).expect("encode");
        let (value, consumed) = decoded(decode_answer(&bytes));
        assert_eq!(value, answer);
        assert_eq!(consumed, bytes.len());
    }
}

#[test]
fn batches_are_mailboxes_of_one_to_sixteen_messages() {
    let many = |destination: Destination, n: usize| Request::DeliverMany {
        user: "joe".into(),
        destination,
        envelopes: vec![envelope(); n],
        options: DeliverOptions::default(),
    };
    let maildir = || Destination::Maildir(path("/home/joe/Maildir"));
    assert_eq!(many(maildir(), 16).descriptors(), 16);
    for n in [0, MAX_BATCH + 1] {
        assert_eq!(
            encode_request(&many(maildir(), n)),
            Err(FrameError::ListTooLong {
                field: "envelopes",
                length: n,
                max: MAX_BATCH
            })
        );
    }
    // A command runs once per request (its own time limit and output): never batched,
    // whoever encodes the frame.
    let command = Destination::Command {
        program: path("/usr/bin/procmail"),
        args: vec![],
    };
    assert!(matches!(
        encode_request(&many(command.clone(), 2)),
        Err(FrameError::InvalidValue {
            field: "destination kind",
            ..
        })
    ));
    // The same frame made by hand: deliver-many to a command is refused when decoded.
    let env = cat(&[&[1], &s("a@b"), &s("c@d"), &s("c@d"), &[0]]);
    let forged = frame(
        0x05,
        &cat(&[
            &s("joe"),
            &[4],
            &s("/usr/bin/procmail"),
            &[0, 0],
            &[0, 1],
            &env,
            &[0],
        ]),
    );
    assert!(matches!(
        decode_request(&forged),
        Err(FrameError::InvalidValue {
            field: "destination kind",
            ..
        })
    ));
    let to_maildir = frame(
        0x05,
        &cat(&[
            &s("joe"),
            &[1],
            &s("/home/joe/Maildir"),
            &[0, 1],
            &env,
            &[0],
        ]),
    );
    assert!(matches!(
        decode_request(&to_maildir),
        Ok(Decoded::Frame {
            value: Request::DeliverMany { .. },
            ..
        })
    ));
    // And an answer with more outcomes than a batch can hold is refused.
    let outcome = Answer::Outcome {
        kind: OutcomeKind::Delivered,
        status: codes::DELIVERED,
        text: "ok".into(),
    };
    assert!(encode_answer(&Answer::Outcomes(vec![outcome.clone(); MAX_BATCH + 1])).is_err());
    assert!(encode_answer(&Answer::Outcomes(vec![Answer::Pong])).is_err());
}

#[test]
fn ping_is_six_bytes() {
    assert_eq!(
        encode_request(&Request::Ping).expect("encode"),
        [0, 0, 0, 2, VERSION, 0x04]
    );
}

#[test]
fn two_frames_in_one_buffer_decode_one_at_a_time() {
    let mut bytes = encode_request(&Request::Ping).expect("encode");
    let second = encode_request(&Request::ReadForward { user: "joe".into() }).expect("encode");
    bytes.extend_from_slice(&second);
    let (first, used) = decoded(decode_request(&bytes));
    assert_eq!(first, Request::Ping);
    let (next, _) = decoded(decode_request(&bytes[used..]));
    assert_eq!(next, Request::ReadForward { user: "joe".into() });
}

#[test]
fn every_prefix_of_a_frame_needs_more() {
    for request in requests() {
        let bytes = encode_request(&request).expect("encode");
        for cut in 0..bytes.len() {
            match decode_request(&bytes[..cut]) {
                Ok(Decoded::NeedMore { at_least }) => {
                    assert!(at_least > cut && at_least <= bytes.len(), "{cut}")
                }
                other => panic!("prefix {cut} of {request:?}: {other:?}"),
            }
        }
    }
}

/// A frame with the given type and payload and a correct length prefix.
fn frame(frame_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
    v.push(VERSION);
    v.push(frame_type);
    v.extend_from_slice(payload);
    v
}

fn s(text: &str) -> Vec<u8> {
    let mut v = (text.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(text.as_bytes());
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn malformed_requests_give_typed_errors() {
    let env = cat(&[&[1], &s("a@b"), &s("c@d"), &s("c@d"), &[0]]);
    let table: Vec<(&str, Vec<u8>, FrameError)> = vec![
        (
            "oversize length prefix",
            vec![0xff, 0xff, 0xff, 0xff],
            FrameError::Oversize {
                length: 0xffff_ffff + 4,
                max: MAX_FRAME,
            },
        ),
        (
            "one byte over the limit",
            ((MAX_FRAME - 3) as u32).to_be_bytes().to_vec(),
            FrameError::Oversize {
                length: MAX_FRAME + 1,
                max: MAX_FRAME,
            },
        ),
        (
            "empty body",
            vec![0, 0, 0, 0],
            FrameError::Truncated { field: "version" },
        ),
        (
            "no type",
            vec![0, 0, 0, 1, VERSION],
            FrameError::Truncated { field: "type" },
        ),
        (
            "unknown version",
            vec![0, 0, 0, 2, 9, 0x04],
            FrameError::UnsupportedVersion(9),
        ),
        (
            "unknown type",
            frame(0x7f, &[]),
            FrameError::UnknownType(0x7f),
        ),
        (
            "an answer type sent as a request",
            frame(0x84, &[]),
            FrameError::UnknownType(0x84),
        ),
        (
            "trailing bytes",
            frame(0x04, &[0]),
            FrameError::TrailingBytes { count: 1 },
        ),
        (
            "string past the frame",
            frame(0x03, &[0, 9, b'j']),
            FrameError::Truncated { field: "user" },
        ),
        (
            "string length cut",
            frame(0x03, &[0]),
            FrameError::Truncated { field: "user" },
        ),
        (
            "string over the limit",
            frame(0x03, &((MAX_STRING + 1) as u16).to_be_bytes()),
            FrameError::StringTooLong {
                field: "user",
                length: MAX_STRING + 1,
                max: MAX_STRING,
            },
        ),
        (
            "not UTF-8",
            frame(0x03, &[0, 2, 0xc3, 0x28]),
            FrameError::InvalidUtf8 { field: "user" },
        ),
        (
            "unknown destination kind",
            frame(0x01, &cat(&[&s("joe"), &[9]])),
            FrameError::InvalidValue {
                field: "destination kind",
                why: "unknown kind 9".into(),
            },
        ),
        (
            "relative path",
            frame(0x01, &cat(&[&s("joe"), &[2], &s("var/mail/joe")])),
            FrameError::BadPath {
                field: "destination path",
                error: PathError::Relative,
            },
        ),
        (
            "dot-dot path",
            frame(
                0x01,
                &cat(&[&s("joe"), &[2], &s("/var/mail/../../etc/passwd")]),
            ),
            FrameError::BadPath {
                field: "destination path",
                error: PathError::DotDotComponent,
            },
        ),
        (
            "NUL in path",
            frame(0x01, &cat(&[&s("joe"), &[1], &s("/home/joe\0/x")])),
            FrameError::BadPath {
                field: "destination path",
                error: PathError::Nul,
            },
        ),
        (
            "too many arguments",
            frame(
                0x01,
                &cat(&[
                    &s("joe"),
                    &[4],
                    &s("/usr/bin/x"),
                    &((MAX_LIST + 1) as u16).to_be_bytes(),
                ]),
            ),
            FrameError::ListTooLong {
                field: "command arguments",
                length: MAX_LIST + 1,
                max: MAX_LIST,
            },
        ),
        (
            "bad option tag",
            frame(0x01, &cat(&[&s("joe"), &[2], &s("/var/mail/joe"), &[7]])),
            FrameError::InvalidValue {
                field: "sender",
                why: "option tag 7".into(),
            },
        ),
        (
            "unknown option bits",
            frame(
                0x01,
                &cat(&[&s("joe"), &[2], &s("/var/mail/joe"), &env, &[0x80]]),
            ),
            FrameError::InvalidValue {
                field: "options",
                why: "unknown option bits 0x80".into(),
            },
        ),
        (
            "options missing",
            frame(0x01, &cat(&[&s("joe"), &[2], &s("/var/mail/joe"), &env])),
            FrameError::Truncated { field: "options" },
        ),
        (
            "unknown stage",
            frame(0x02, &cat(&[&s("joe"), &env, &[3]])),
            FrameError::InvalidValue {
                field: "stage",
                why: "unknown stage 3".into(),
            },
        ),
    ];
    for (what, bytes, want) in table {
        assert_eq!(decode_request(&bytes), Err(want), "{what}");
    }
}

#[test]
fn a_local_forward_entry_has_tag_5() {
    let answer = Answer::Forward {
        entries: vec![ForwardEntry::Local("joe".into())],
    };
    let bytes = encode_answer(&answer).expect("encode");
    let want = frame(0x83, &cat(&[&[0, 1, 5], &s("joe")]));
    assert_eq!(bytes, want);
    assert_eq!(decoded(decode_answer(&want)), (answer, want.len()));
}

#[test]
fn malformed_answers_give_typed_errors() {
    let table: Vec<(&str, Vec<u8>, FrameError)> = vec![
        (
            "unknown outcome kind",
            frame(0x81, &[4]),
            FrameError::InvalidValue {
                field: "outcome kind",
                why: "unknown kind 4".into(),
            },
        ),
        (
            "bad status",
            frame(0x81, &cat(&[&[1], &s("2.0")])),
            FrameError::InvalidValue {
                field: "status",
                why: "\"2.0\" is not an enhanced status code".into(),
            },
        ),
        (
            "status class disagrees with kind",
            frame(0x81, &cat(&[&[1], &s("5.7.1"), &s("x")])),
            FrameError::InvalidValue {
                field: "status",
                why: "5.7.1 does not agree with Delivered".into(),
            },
        ),
        (
            "two-line outcome text",
            frame(0x81, &cat(&[&[3], &s("5.7.1"), &s("no\r\nX-Injected: 1")])),
            FrameError::InvalidValue {
                field: "outcome text",
                why: "contains a control character (it must be one line)".into(),
            },
        ),
        (
            "unknown decision",
            frame(0x82, &[0, 0, 1, 9]),
            FrameError::InvalidValue {
                field: "decision",
                why: "unknown decision 9".into(),
            },
        ),
        (
            "bad boolean",
            frame(0x82, &[2, 0, 0]),
            FrameError::InvalidValue {
                field: "needs message",
                why: "boolean byte 2".into(),
            },
        ),
        (
            "decision list cut",
            frame(0x82, &[0, 0, 2, 5]),
            FrameError::Truncated { field: "decision" },
        ),
        (
            "too many forward entries",
            frame(0x83, &((MAX_LIST + 1) as u16).to_be_bytes()),
            FrameError::ListTooLong {
                field: "forward entries",
                length: MAX_LIST + 1,
                max: MAX_LIST,
            },
        ),
        (
            "forward mailbox not absolute",
            frame(0x83, &cat(&[&[0, 1, 2], &s("mbox")])),
            FrameError::BadPath {
                field: "forward entry",
                error: PathError::Relative,
            },
        ),
        (
            "unknown forward entry kind",
            frame(0x83, &cat(&[&[0, 1, 6], &s("joe")])),
            FrameError::InvalidValue {
                field: "forward entry kind",
                why: "unknown kind 6".into(),
            },
        ),
        (
            "unknown error code",
            frame(0x85, &cat(&[&[0], &s("x")])),
            FrameError::InvalidValue {
                field: "error code",
                why: "unknown code 0".into(),
            },
        ),
        (
            "a request type sent as an answer",
            frame(0x04, &[]),
            FrameError::UnknownType(0x04),
        ),
        (
            "pong with trailing bytes",
            frame(0x84, &[1, 2]),
            FrameError::TrailingBytes { count: 2 },
        ),
    ];
    for (what, bytes, want) in table {
        assert_eq!(decode_answer(&bytes), Err(want), "{what}");
    }
}

#[test]
fn encoding_refuses_what_decoding_would() {
    let long = "x".repeat(MAX_STRING + 1);
    assert_eq!(
        encode_request(&Request::ReadForward { user: long }),
        Err(FrameError::StringTooLong {
            field: "user",
            length: MAX_STRING + 1,
            max: MAX_STRING
        })
    );
    let many = vec!["a".to_string(); MAX_LIST + 1];
    assert!(matches!(
        encode_answer(&Answer::Filter {
            needs_message: false,
            decisions: vec![FilterDecision::Keep { flags: many }],
        }),
        Err(FrameError::ListTooLong { .. })
    ));
    // Enough maximal strings to pass the frame limit.
    let big = "y".repeat(MAX_STRING);
    let entries = (0..20)
        .map(|_| ForwardEntry::Address(big.clone()))
        .collect();
    assert!(matches!(
        encode_answer(&Answer::Forward { entries }),
        Err(FrameError::Oversize { .. })
    ));
    assert!(matches!(
        encode_answer(&Answer::Outcome {
            kind: OutcomeKind::Delivered,
            status: codes::DELIVERY_NOT_AUTHORIZED,
            text: String::new(),
        }),
        Err(FrameError::InvalidValue {
            field: "status",
            ..
        })
    ));
    assert!(matches!(
        encode_answer(&Answer::Error {
            code: ErrorCode::Internal,
            text: "a\nb".into(),
        }),
        Err(FrameError::InvalidValue { .. })
    ));
}

// ---- properties ----

fn arb_text() -> impl Strategy<Value = String> {
    "[ -~]{0,24}"
}

fn arb_path() -> impl Strategy<Value = MailPath> {
    "(/[a-zA-Z0-9._+-]{1,8}){0,5}".prop_filter_map("normalised", |s| {
        let s = if s.is_empty() { "/".to_string() } else { s };
        MailPath::parse(&s).ok()
    })
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        proptest::option::of(arb_text()),
        arb_text(),
        arb_text(),
        proptest::option::of(arb_text()),
    )
        .prop_map(|(sender, o, f, extension)| Envelope {
            sender,
            original_recipient: o,
            final_recipient: f,
            extension,
        })
}

fn arb_destination() -> impl Strategy<Value = Destination> {
    prop_oneof![
        arb_path().prop_map(Destination::Maildir),
        arb_path().prop_map(Destination::Mbox),
        arb_path().prop_map(Destination::Mh),
        (arb_path(), proptest::collection::vec(".{0,8}", 0..6))
            .prop_map(|(program, args)| Destination::Command { program, args }),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            ".{0,16}",
            arb_destination(),
            arb_envelope(),
            any::<(bool, bool, bool)>()
        )
            .prop_map(
                |(user, destination, envelope, (a, b, c))| Request::Deliver {
                    user,
                    destination,
                    envelope,
                    options: DeliverOptions {
                        fsync: a,
                        create_folders: b,
                        return_path: c,
                    },
                }
            ),
        (".{0,16}", arb_envelope(), any::<bool>()).prop_map(|(user, envelope, rcpt)| {
            Request::Filter {
                user,
                envelope,
                stage: if rcpt {
                    FilterStage::Rcpt
                } else {
                    FilterStage::Data
                },
            }
        }),
        ".{0,16}".prop_map(|user| Request::ReadForward { user }),
        Just(Request::Ping),
        (
            ".{0,16}",
            prop_oneof![
                arb_path().prop_map(Destination::Maildir),
                arb_path().prop_map(Destination::Mbox),
                arb_path().prop_map(Destination::Mh),
            ],
            proptest::collection::vec(arb_envelope(), 1..=MAX_BATCH),
        )
            .prop_map(|(user, destination, envelopes)| Request::DeliverMany {
                user,
                destination,
                envelopes,
                options: DeliverOptions::default(),
            }),
    ]
}

fn arb_decision() -> impl Strategy<Value = FilterDecision> {
    let flags = || proptest::collection::vec(arb_text(), 0..4);
    prop_oneof![
        flags().prop_map(|flags| FilterDecision::Keep { flags }),
        (arb_text(), flags(), any::<bool>()).prop_map(|(mailbox, flags, create)| {
            FilterDecision::FileInto {
                mailbox,
                flags,
                create,
            }
        }),
        (arb_text(), any::<bool>())
            .prop_map(|(address, copy)| FilterDecision::Redirect { address, copy }),
        ".{0,40}".prop_map(|text| FilterDecision::Reject { text }),
        Just(FilterDecision::Discard),
        (
            arb_text(),
            proptest::option::of(arb_text()),
            proptest::option::of(arb_text()),
            ".{0,40}",
            any::<u32>(),
            proptest::option::of(arb_text()),
            any::<bool>()
        )
            .prop_map(
                |(recipient, from, subject, reason, period_seconds, handle, mime)| {
                    FilterDecision::Vacation {
                        recipient,
                        from,
                        subject,
                        reason,
                        period_seconds,
                        handle,
                        mime,
                    }
                }
            ),
    ]
}

fn arb_answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        (0u8..3, 0u16..1000, 0u16..1000, arb_text()).prop_map(|(k, subject, detail, text)| {
            let (kind, class) = match k {
                0 => (OutcomeKind::Delivered, 2),
                1 => (OutcomeKind::Temporary, 4),
                _ => (OutcomeKind::Permanent, 5),
            };
            Answer::Outcome {
                kind,
                status: EnhancedStatus::new(class, subject, detail),
                text,
            }
        }),
        (
            any::<bool>(),
            proptest::collection::vec(arb_decision(), 0..6)
        )
            .prop_map(|(needs_message, decisions)| Answer::Filter {
                needs_message,
                decisions,
            }),
        proptest::collection::vec(
            prop_oneof![
                arb_text().prop_map(ForwardEntry::Address),
                arb_path().prop_map(ForwardEntry::Mailbox),
                arb_text().prop_map(ForwardEntry::Command),
                arb_path().prop_map(ForwardEntry::Include),
                arb_text().prop_map(ForwardEntry::Local),
            ],
            0..6
        )
        .prop_map(|entries| Answer::Forward { entries }),
        Just(Answer::Pong),
        proptest::collection::vec(
            (any::<bool>(), arb_text(), any::<u32>()).prop_map(|(over, text, read)| {
                if over {
                    Answer::OverQuota {
                        kind: OutcomeKind::Temporary,
                        status: EnhancedStatus::new(4, 2, 2),
                        text,
                        mailbox_read: read,
                    }
                } else {
                    Answer::Outcome {
                        kind: OutcomeKind::Delivered,
                        status: EnhancedStatus::new(2, 0, 0),
                        text,
                    }
                }
            }),
            1..=MAX_BATCH
        )
        .prop_map(Answer::Outcomes),
        (1u8..=5, arb_text()).prop_map(|(c, text)| Answer::Error {
            code: match c {
                1 => ErrorCode::Malformed,
                2 => ErrorCode::UnsupportedVersion,
                3 => ErrorCode::OutOfOrder,
                4 => ErrorCode::Refused,
                _ => ErrorCode::Internal,
            },
            text,
        }),
    ]
}

proptest! {
    #[test]
    fn any_request_round_trips(request in arb_request()) {
        let bytes = encode_request(&request).expect("encode");
        prop_assert_eq!(
            decode_request(&bytes),
            Ok(Decoded::Frame { value: request, consumed: bytes.len() })
        );
    }

    #[test]
    fn any_answer_round_trips(answer in arb_answer()) {
        let bytes = encode_answer(&answer).expect("encode");
        prop_assert_eq!(
            decode_answer(&bytes),
            Ok(Decoded::Frame { value: answer, consumed: bytes.len() })
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_answer(&bytes);
    }

    #[test]
    fn arbitrary_payloads_behind_a_valid_header_never_panic(
        frame_type in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let bytes = frame(frame_type, &payload);
        let _ = decode_answer(&bytes);
        let need_more = matches!(decode_request(&bytes), Ok(Decoded::NeedMore { .. }));
        prop_assert!(!need_more, "a complete frame asked for more bytes");
    }

    #[test]
    fn flipping_one_byte_never_panics(request in arb_request(), at in any::<usize>(), to in any::<u8>()) {
        let mut bytes = encode_request(&request).expect("encode");
        let i = at % bytes.len();
        bytes[i] = to;
        let _ = decode_request(&bytes);
    }
}
