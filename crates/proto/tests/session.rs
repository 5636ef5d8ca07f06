//! Session tests: bytes in, replies and events out, as tables (STYLE.md "session tests that
//! feed bytes into the protocol state machine").
//!
//! Trusts: only the public API. Covers oracles.md §2 groups 1-7 as far as a state machine
//! can (no sockets here): ordering, syntax, limits, DATA transparency and smuggling,
//! extensions (PIPELINING, CHUNKING, DSN, SMTPUTF8, STARTTLS), and reply format.

mod harness;

use cursus_proto::{
    Answer, AnswerError, Config, Disconnect, EnhancedStatus, Event, InputError, Limits, Output,
    Protocol, Reply, Session, State, Timeout,
};
use harness::{Driver, Policy, transcript};

const EHLO: &str = "250-mx.example|250-PIPELINING|250-SIZE 10240000|250-8BITMIME|250-BINARYMIME|250-CHUNKING|250-DSN|250-ENHANCEDSTATUSCODES|250 SMTPUTF8";
const GREETING: &str = "220 mx.example ESMTP Cursus";

fn check(name: &str, input: &[u8], want: &[&str]) {
    let got = transcript(input);
    let want: Vec<String> = std::iter::once(GREETING)
        .chain(want.iter().copied())
        .map(String::from)
        .collect();
    assert_eq!(got, want, "case {name}");
}

#[test]
fn commands_table() {
    let table: &[(&str, &[u8], &[&str])] = &[
        (
            "one message",
            b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@mx.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
            &[
                EHLO,
                "MAIL a@b.example",
                "250 2.1.0 Ok",
                "RCPT u@mx.example",
                "250 2.1.5 Ok",
                "DATASTART",
                "354 End data with <CR><LF>.<CR><LF>",
                "DATA Subject: x\\r\\n\\r\\nhi\\r\\n",
                "END 18",
                "250 2.0.0 Ok: queued as Q1",
                "221 2.0.0 mx.example closing connection",
                "QUIT",
            ],
        ),
        ("HELO", b"HELO c.example\r\n", &["250 mx.example"]),
        ("HELO without a name", b"HELO\r\n", &["501 5.5.4 Syntax: HELO domain"]),
        ("EHLO without a name", b"EHLO\r\n", &["501 5.5.4 Syntax: EHLO domain"]),
        (
            "MAIL before EHLO",
            b"MAIL FROM:<a@b.example>\r\n",
            &["503 5.5.1 Error: send HELO/EHLO first"],
        ),
        (
            "RCPT before MAIL",
            b"HELO c\r\nRCPT TO:<u@x.example>\r\n",
            &["250 mx.example", "503 5.5.1 Error: need MAIL command"],
        ),
        (
            "DATA before MAIL",
            b"HELO c\r\nDATA\r\n",
            &["250 mx.example", "503 5.5.1 Error: need MAIL command"],
        ),
        (
            "DATA without RCPT",
            b"HELO c\r\nMAIL FROM:<>\r\nDATA\r\n",
            &[
                "250 mx.example",
                "MAIL <>",
                "250 2.1.0 Ok",
                "503 5.5.1 Error: need RCPT command",
            ],
        ),
        (
            "nested MAIL",
            b"HELO c\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n",
            &[
                "250 mx.example",
                "MAIL <>",
                "250 2.1.0 Ok",
                "503 5.5.1 Error: nested MAIL command",
            ],
        ),
        (
            "EHLO twice resets the transaction",
            b"HELO c\r\nMAIL FROM:<>\r\nHELO d\r\nRCPT TO:<u@x.example>\r\n",
            &[
                "250 mx.example",
                "MAIL <>",
                "250 2.1.0 Ok",
                "RESET",
                "250 mx.example",
                "503 5.5.1 Error: need MAIL command",
            ],
        ),
        (
            "unknown command",
            b"FOO bar\r\n",
            &["500 5.5.2 Error: command not recognized"],
        ),
        ("empty line", b"\r\n", &["500 5.5.2 Error: command not recognized"]),
        (
            "VRFY, EXPN, HELP, NOOP, RSET",
            b"VRFY root\r\nEXPN staff\r\nHELP\r\nNOOP\r\nRSET\r\n",
            &[
                "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
                "502 5.5.1 Error: EXPN not implemented",
                "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS",
                "250 2.0.0 Ok",
                "250 2.0.0 Ok",
            ],
        ),
        (
            "AUTH and ETRN are not implemented",
            b"AUTH PLAIN AGEAYg==\r\nETRN example.org\r\n",
            &[
                "502 5.5.1 Error: command not implemented",
                "502 5.5.1 Error: command not implemented",
            ],
        ),
        (
            "STARTTLS not offered",
            b"EHLO c\r\nSTARTTLS\r\n",
            &[EHLO, "502 5.5.1 Error: command not implemented"],
        ),
        (
            "LHLO is not SMTP",
            b"LHLO c\r\n",
            &["500 5.5.2 Error: command not recognized"],
        ),
        (
            "verbs are case-insensitive; a space after the colon is tolerated",
            b"ehlo c\r\nmAiL fRoM: <a@b.example>\r\nrcpt to: <u@x.example>\r\n",
            &[
                EHLO,
                "MAIL a@b.example",
                "250 2.1.0 Ok",
                "RCPT u@x.example",
                "250 2.1.5 Ok",
            ],
        ),
        (
            "postmaster without a domain is a recipient",
            b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n",
            &[
                "250 mx.example",
                "MAIL <>",
                "250 2.1.0 Ok",
                "RCPT postmaster",
                "250 2.1.5 Ok",
            ],
        ),
        (
            "postmaster is not a sender; <> is not a recipient",
            b"HELO c\r\nMAIL FROM:<postmaster>\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<>\r\n",
            &[
                "250 mx.example",
                "501 5.1.7 Error: bad sender address syntax",
                "MAIL a@b.example",
                "250 2.1.0 Ok",
                "501 5.1.3 Error: bad recipient address syntax",
            ],
        ),
        (
            "source routes are dropped",
            b"HELO c\r\nMAIL FROM:<@relay.example:a@b.example>\r\nRCPT TO:<@r1.example,@r2.example:u@x.example>\r\n",
            &[
                "250 mx.example",
                "MAIL a@b.example",
                "250 2.1.0 Ok",
                "RCPT u@x.example",
                "250 2.1.5 Ok",
            ],
        ),
        (
            "quoted local parts arrive dequoted; address literals are kept",
            b"HELO c\r\nMAIL FROM:<\"a b\"@b.example>\r\nRCPT TO:<\"x@y\"@c.example>\r\nRCPT TO:<u@[127.0.0.1]>\r\nRCPT TO:<u@[IPv6:::1]> NOTIFY=NEVER\r\nRCPT TO:<u@[999.0.0.1]>\r\nRCPT TO:<u@[x]>\r\n",
            &[
                "250 mx.example",
                "MAIL a b@b.example",
                "250 2.1.0 Ok",
                "RCPT x@y@c.example",
                "250 2.1.5 Ok",
                "RCPT u@[127.0.0.1]",
                "250 2.1.5 Ok",
                "RCPT u@[IPv6:::1] RcptParams { notify: Some(Never), orcpt: None }",
                "250 2.1.5 Ok",
                "501 5.1.3 Error: bad recipient address syntax",
                "501 5.1.3 Error: bad recipient address syntax",
            ],
        ),
        (
            "a missing <> is a syntax error",
            b"HELO c\r\nMAIL FROM:a@b.example\r\n",
            &[
                "250 mx.example",
                "501 5.5.4 Syntax: MAIL FROM:<reverse-path> [parameters]",
            ],
        ),
        (
            "SIZE over the limit",
            b"EHLO c\r\nMAIL FROM:<a@b.example> SIZE=10240001\r\nMAIL FROM:<a@b.example> SIZE=10240000\r\n",
            &[
                EHLO,
                "552 5.3.4 Error: message size exceeds fixed limit",
                "MAIL a@b.example MailParams { size: Some(10240000), body: None, smtputf8: false, ret: None, envid: None }",
                "250 2.1.0 Ok",
            ],
        ),
        (
            "unknown and unadvertised parameters",
            b"EHLO c\r\nMAIL FROM:<a@b.example> FOO=BAR\r\nMAIL FROM:<a@b.example> REQUIRETLS\r\nMAIL FROM:<a@b.example> BODY=9BIT\r\n",
            &[
                EHLO,
                "555 5.5.4 Error: unsupported parameter FOO=BAR",
                "555 5.5.4 Error: unsupported parameter REQUIRETLS",
                "501 5.5.4 Error: invalid BODY parameter",
            ],
        ),
        (
            "MAIL and RCPT parameters are typed",
            b"EHLO c\r\nMAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1\r\nRCPT TO:<u@x.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+40x.example\r\nRCPT TO:<v@x.example> NOTIFY=NEVER\r\n",
            &[
                EHLO,
                "MAIL a@b.example MailParams { size: None, body: Some(EightBitMime), smtputf8: true, ret: Some(Headers), envid: Some(\"QQ+1\") }",
                "250 2.1.0 Ok",
                "RCPT u@x.example RcptParams { notify: Some(On { success: true, failure: false, delay: true }), orcpt: Some(\"u@x.example\") }",
                "250 2.1.5 Ok",
                "RCPT v@x.example RcptParams { notify: Some(Never), orcpt: None }",
                "250 2.1.5 Ok",
            ],
        ),
        (
            "non-ASCII addresses need SMTPUTF8",
            "EHLO c\r\nMAIL FROM:<jörg@b.example>\r\nMAIL FROM:<jörg@b.example> SMTPUTF8\r\nRCPT TO:<δοκιμή@x.example>\r\n".as_bytes(),
            &[
                EHLO,
                "553 5.6.7 Error: non-ASCII address needs SMTPUTF8",
                "MAIL jörg@b.example MailParams { size: None, body: None, smtputf8: true, ret: None, envid: None }",
                "250 2.1.0 Ok",
                "RCPT δοκιμή@x.example",
                "250 2.1.5 Ok",
            ],
        ),
        (
            "bare CR or NUL in a command",
            b"NOOP a\rb\r\nNOOP \x00\r\n",
            &[
                "500 5.5.2 Error: bare CR or NUL in command",
                "500 5.5.2 Error: bare CR or NUL in command",
            ],
        ),
        (
            "commands may end in a bare LF",
            b"HELO c\nNOOP\n",
            &["250 mx.example", "250 2.0.0 Ok"],
        ),
        (
            "RSET clears the transaction",
            b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@x.example>\r\nRSET\r\nDATA\r\nRCPT TO:<u@x.example>\r\n",
            &[
                "250 mx.example",
                "MAIL a@b.example",
                "250 2.1.0 Ok",
                "RCPT u@x.example",
                "250 2.1.5 Ok",
                "RESET",
                "250 2.0.0 Ok",
                "503 5.5.1 Error: need MAIL command",
                "503 5.5.1 Error: need MAIL command",
            ],
        ),
    ];
    for (name, input, want) in table {
        check(name, input, want);
    }
}

#[test]
fn pipelined_batch_in_one_read_answers_in_order() {
    let mut d = Driver::new(
        Config::new("mx.example", Protocol::Smtp),
        Policy {
            refuse_unknown: true,
            ..Policy::default()
        },
    );
    d.feed(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@x.example>\r\nRCPT TO:<unknown@x.example>\r\nRCPT TO:<v@x.example>\r\nDATA\r\n",
    );
    d.feed(b"body\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<unknown2@x.example>\r\nDATA\r\nQUIT\r\n");
    assert_eq!(
        d.transcript[1..],
        [
            EHLO,
            "MAIL a@b.example",
            "250 2.1.0 Ok",
            "RCPT u@x.example",
            "250 2.1.5 Ok",
            "RCPT unknown@x.example",
            "550 5.1.1 Error: no such user",
            "RCPT v@x.example",
            "250 2.1.5 Ok",
            "DATASTART",
            "354 End data with <CR><LF>.<CR><LF>",
            "DATA body\\r\\n",
            "END 6",
            "250 2.0.0 Ok: queued as Q1",
            "MAIL <>",
            "250 2.1.0 Ok",
            "RCPT unknown2@x.example",
            "550 5.1.1 Error: no such user",
            "554 5.5.1 Error: no valid recipients",
            "221 2.0.0 mx.example closing connection",
            "QUIT",
        ]
    );
}

#[test]
fn session_waits_for_answers_and_keeps_pipelined_input() {
    let mut s = Session::new(Config::new("mx.example", Protocol::Smtp));
    s.greeting();
    s.receive(b"HELO c\r\nMAIL FROM:<a@b.example>\r\nNOOP\r\n")
        .expect("greeted");
    assert!(matches!(s.poll(), Some(Output::Reply(_))));
    assert!(matches!(s.poll(), Some(Output::Event(Event::Mail { .. }))));
    assert_eq!(s.poll(), None, "waits for the answer");
    assert_eq!(s.state(), State::Waiting);
    assert_eq!(s.timeout(), Timeout::Mail);
    assert!(!s.wants_input());
    s.accept().expect("pending MAIL");
    let replies: Vec<String> = std::iter::from_fn(|| s.poll())
        .map(|o| match o {
            Output::Reply(r) => r.to_string(),
            Output::Event(e) => format!("{e:?}"),
        })
        .collect();
    assert_eq!(replies, ["250 2.1.0 Ok\r\n", "250 2.0.0 Ok\r\n"]);
    assert_eq!(s.state(), State::Mail);
    assert!(s.wants_input());
}

#[test]
fn answer_misuse_is_an_error_and_changes_nothing() {
    let mut s = Session::new(Config::new("mx.example", Protocol::Smtp));
    s.greeting();
    assert_eq!(s.accept(), Err(AnswerError::NothingPending));
    s.receive(b"HELO c\r\nMAIL FROM:<>\r\n").expect("greeted");
    while s.poll().is_some() {}
    let ok = Reply::new(250, EnhancedStatus::new(2, 0, 0), "fine");
    assert_eq!(s.refuse(ok), Err(AnswerError::WrongClass));
    let no = Reply::new(550, EnhancedStatus::new(5, 7, 1), "no");
    assert_eq!(
        s.answer(Answer::AcceptWith(no.clone())),
        Err(AnswerError::WrongClass)
    );
    assert_eq!(
        s.answer(Answer::PerRecipient(vec![])),
        Err(AnswerError::NotPerRecipient)
    );
    s.refuse(no).expect("still pending");
    assert_eq!(
        s.poll(),
        Some(Output::Reply(Reply::new(
            550,
            EnhancedStatus::new(5, 7, 1),
            "no"
        )))
    );
    assert_eq!(s.state(), State::Ready);
}

#[test]
fn dot_unstuffing_and_empty_message() {
    check(
        "dots",
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nDATA\r\n..leading\r\n.\r\n.\r\nDATA\r\n",
        &[
            "250 mx.example",
            "MAIL <>",
            "250 2.1.0 Ok",
            "RCPT u@x.example",
            "250 2.1.5 Ok",
            "DATASTART",
            "354 End data with <CR><LF>.<CR><LF>",
            "DATA .leading\\r\\n",
            "END 10",
            "250 2.0.0 Ok: queued as Q1",
            "500 5.5.2 Error: command not recognized",
            "503 5.5.1 Error: need MAIL command",
        ],
    );
    check(
        "empty message",
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nDATA\r\n.\r\n",
        &[
            "250 mx.example",
            "MAIL <>",
            "250 2.1.0 Ok",
            "RCPT u@x.example",
            "250 2.1.5 Ok",
            "DATASTART",
            "354 End data with <CR><LF>.<CR><LF>",
            "END 0",
            "250 2.0.0 Ok: queued as Q1",
        ],
    );
}

/// SMTP smuggling (oracles.md §2, group 4): none of these end DATA. The smuggled MAIL/RCPT/
/// DATA after them is content, never a command; the message is refused at the real end.
#[test]
fn smuggling_variants_never_end_data_and_refuse_the_message() {
    let variants: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\n.\r",
        b"\r\n.\rX",
        b"\r\n\n.\r\n",
        b"\r\n\r.\r\n",
    ];
    for v in variants {
        let mut input =
            b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@x.example>\r\nDATA\r\nSubject: one\r\n\r\nhello"
                .to_vec();
        input.extend_from_slice(v);
        input.extend_from_slice(
            b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@x.example>\r\nDATA\r\nSubject: forged\r\n\r\n.\r\nNOOP\r\n",
        );
        let got = transcript(&input);
        let smuggled = got
            .iter()
            .any(|l| l.contains("admin@bank.example") && l.starts_with("MAIL"));
        assert!(!smuggled, "variant {v:?}: smuggled MAIL seen: {got:#?}");
        let tail: Vec<&str> = got.iter().map(String::as_str).skip(8).collect();
        assert_eq!(
            tail.iter()
                .filter(|l| !l.starts_with("DATA "))
                .copied()
                .collect::<Vec<_>>(),
            [
                "ABANDON BareNewline",
                "550 5.6.0 Error: bare CR or LF in message content (send CRLF line ends)",
                "250 2.0.0 Ok",
            ],
            "variant {v:?}: {got:#?}"
        );
    }
}

#[test]
fn nul_before_the_dot_is_content_not_the_end() {
    check(
        "NUL dot",
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nDATA\r\na\r\n\x00.\r\nb\r\n.\r\n",
        &[
            "250 mx.example",
            "MAIL <>",
            "250 2.1.0 Ok",
            "RCPT u@x.example",
            "250 2.1.5 Ok",
            "DATASTART",
            "354 End data with <CR><LF>.<CR><LF>",
            "DATA a\\r\\n\\x00.\\r\\nb\\r\\n",
            "END 10",
            "250 2.0.0 Ok: queued as Q1",
        ],
    );
}

#[test]
fn message_over_the_size_limit_is_refused_at_its_end() {
    let mut d = Driver::with_limits(Limits {
        message_size: 10,
        ..Limits::default()
    });
    d.feed(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nDATA\r\n");
    d.feed(b"0123456789\r\nmore\r\n.\r\nNOOP\r\n");
    assert_eq!(
        d.transcript[7..],
        [
            "354 End data with <CR><LF>.<CR><LF>",
            "DATA 0123456789",
            "ABANDON TooBig",
            "552 5.3.4 Error: message size exceeds fixed limit",
            "250 2.0.0 Ok",
        ]
    );
    // Exactly at the limit is fine.
    let mut d = Driver::with_limits(Limits {
        message_size: 10,
        ..Limits::default()
    });
    d.feed(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nDATA\r\n01234567\r\n.\r\n");
    assert_eq!(
        d.transcript.last().map(String::as_str),
        Some("250 2.0.0 Ok: queued as Q1")
    );
}

#[test]
fn data_start_refused_by_the_daemon() {
    let mut d = Driver::new(
        Config::new("mx.example", Protocol::Smtp),
        Policy {
            disk_full: true,
            ..Policy::default()
        },
    );
    d.feed(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nDATA\r\nRCPT TO:<v@x.example>\r\n");
    assert_eq!(
        d.transcript[6..],
        [
            "DATASTART",
            "452 4.3.1 Error: insufficient system storage",
            "503 5.5.1 Error: need MAIL command",
        ]
    );
}

#[test]
fn bdat_carries_binary_unchanged() {
    let body: &[u8] = b"\x00\xff\r\n.\r\n\nbare\rcr\r\n";
    let mut input = format!(
        "EHLO c\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<u@x.example>\r\nBDAT {}\r\n",
        7
    )
    .into_bytes();
    input.extend_from_slice(&body[..7]);
    input.extend_from_slice(format!("BDAT {} LAST\r\n", body.len() - 7).as_bytes());
    input.extend_from_slice(&body[7..]);
    input.extend_from_slice(b"QUIT\r\n");
    let got = transcript(&input);
    assert_eq!(
        got[2..],
        [
            "MAIL a@b.example MailParams { size: None, body: Some(BinaryMime), smtputf8: false, ret: None, envid: None }",
            "250 2.1.0 Ok",
            "RCPT u@x.example",
            "250 2.1.5 Ok",
            "DATASTART",
            "DATA \\x00\\xff\\r\\n.\\r\\n",
            "250 2.0.0 7 octets received",
            "DATA \\nbare\\rcr\\r\\n",
            "END 17",
            "250 2.0.0 Ok: queued as Q1",
            "221 2.0.0 mx.example closing connection",
            "QUIT",
        ]
    );
}

#[test]
fn bdat_table() {
    let table: &[(&str, &[u8], &[&str])] = &[
        (
            "BDAT 0 LAST",
            b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nBDAT 0 LAST\r\n",
            &[
                "250 mx.example",
                "MAIL <>",
                "250 2.1.0 Ok",
                "RCPT u@x.example",
                "250 2.1.5 Ok",
                "DATASTART",
                "END 0",
                "250 2.0.0 Ok: queued as Q1",
            ],
        ),
        (
            "BDAT without MAIL: the chunk is read and dropped, not run as commands",
            b"HELO c\r\nBDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n",
            &[
                "250 mx.example",
                "503 5.5.1 Error: need MAIL command",
                "250 2.0.0 Ok",
            ],
        ),
        (
            "BDAT text with a bare LF is refused after its chunk; the transaction ends",
            b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nBDAT 3\r\na\nbBDAT 1 LAST\r\nc",
            &[
                "250 mx.example",
                "MAIL <>",
                "250 2.1.0 Ok",
                "RCPT u@x.example",
                "250 2.1.5 Ok",
                "DATASTART",
                "DATA a\\n",
                "ABANDON BareNewline",
                "550 5.6.0 Error: bare CR or LF in message content (send CRLF line ends)",
                "503 5.5.1 Error: need MAIL command",
            ],
        ),
        (
            "BDAT text ending in a bare CR is refused",
            b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nBDAT 2 LAST\r\na\r",
            &[
                "250 mx.example",
                "MAIL <>",
                "250 2.1.0 Ok",
                "RCPT u@x.example",
                "250 2.1.5 Ok",
                "DATASTART",
                "DATA a\\r",
                "ABANDON BareNewline",
                "550 5.6.0 Error: bare CR or LF in message content (send CRLF line ends)",
            ],
        ),
        (
            "DATA is refused for BINARYMIME, and after BDAT",
            b"HELO c\r\nMAIL FROM:<> BODY=BINARYMIME\r\nRCPT TO:<u@x.example>\r\nDATA\r\nBDAT 1\r\nxDATA\r\n",
            &[
                "250 mx.example",
                "MAIL <> MailParams { size: None, body: Some(BinaryMime), smtputf8: false, ret: None, envid: None }",
                "250 2.1.0 Ok",
                "RCPT u@x.example",
                "250 2.1.5 Ok",
                "503 5.5.1 Error: BODY=BINARYMIME requires BDAT",
                "DATASTART",
                "DATA x",
                "250 2.0.0 1 octets received",
                "503 5.5.1 Error: DATA after BDAT",
            ],
        ),
        (
            "BDAT over the size limit ends the transaction",
            b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nBDAT 10240001\r\n",
            &[
                "250 mx.example",
                "MAIL <>",
                "250 2.1.0 Ok",
                "RCPT u@x.example",
                "250 2.1.5 Ok",
                "DATASTART",
            ],
        ),
    ];
    for (name, input, want) in table {
        check(name, input, want);
    }
}

#[test]
fn bdat_too_big_is_discarded_then_refused() {
    let mut d = Driver::with_limits(Limits {
        message_size: 4,
        ..Limits::default()
    });
    d.feed(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nBDAT 6\r\n123456BDAT 1 LAST\r\nxNOOP\r\n");
    assert_eq!(
        d.transcript[6..],
        [
            "DATASTART",
            "DATA 1234",
            "ABANDON TooBig",
            "552 5.3.4 Error: message size exceeds fixed limit",
            "503 5.5.1 Error: need MAIL command",
            "250 2.0.0 Ok",
        ]
    );
}

#[test]
fn recipient_limit_answers_452() {
    let mut d = Driver::with_limits(Limits {
        recipients: 2,
        ..Limits::default()
    });
    d.feed(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\nRCPT TO:<c@x.example>\r\n");
    assert_eq!(
        d.transcript.last().map(String::as_str),
        Some("452 4.5.3 Error: too many recipients")
    );
    let t = d.session.transaction().expect("a transaction");
    assert_eq!(t.recipients.len(), 2);
}

#[test]
fn message_limit_closes_the_connection() {
    let mut d = Driver::with_limits(Limits {
        messages: 1,
        ..Limits::default()
    });
    d.feed(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@x.example>\r\nDATA\r\nx\r\n.\r\nMAIL FROM:<>\r\nNOOP\r\n");
    assert_eq!(
        d.transcript[d.transcript.len() - 2..],
        [
            "421 4.7.0 mx.example Error: too many messages in one connection",
            "DISCONNECT TooManyMessages",
        ]
    );
    assert!(d.session.is_closed());
    assert_eq!(d.session.receive(b"NOOP\r\n"), Err(InputError::Closed));
}

#[test]
fn too_many_errors_disconnect_with_421() {
    let mut d = Driver::with_limits(Limits {
        errors: 3,
        ..Limits::default()
    });
    d.feed(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(
        d.transcript[1..],
        [
            "500 5.5.2 Error: command not recognized",
            "500 5.5.2 Error: command not recognized",
            "500 5.5.2 Error: command not recognized",
            "421 4.7.0 mx.example Error: too many errors",
            "DISCONNECT TooManyErrors",
        ]
    );
}

#[test]
fn long_command_line_is_refused_whole() {
    let mut d = Driver::with_limits(Limits {
        command_line: 512,
        ..Limits::default()
    });
    let mut input = b"NOOP ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 600));
    input.extend_from_slice(b"\r\nNOOP\r\n");
    // Exactly 512 octets with CRLF is allowed.
    input.extend_from_slice(b"NOOP ");
    input.extend(std::iter::repeat_n(b'y', 505));
    input.extend_from_slice(b"\r\n");
    d.feed_chunks(&input, &[7, 100, 3]);
    assert_eq!(
        d.transcript[1..],
        [
            "500 5.5.2 Error: line too long",
            "250 2.0.0 Ok",
            "250 2.0.0 Ok"
        ]
    );
}

/// CVE-2011-0411 class: commands pipelined after STARTTLS in plaintext are never run.
#[test]
fn starttls_discards_pipelined_plaintext_and_resets() {
    let mut config = Config::new("mx.example", Protocol::Smtp);
    config.starttls = true;
    let mut d = Driver::new(config, Policy::default());
    d.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\nMAIL FROM:<evil@b.example>\r\nRCPT TO:<u@x.example>\r\n");
    assert_eq!(
        d.transcript[1],
        format!("{EHLO}|250 STARTTLS").replace("250 SMTPUTF8|", "250-SMTPUTF8|")
    );
    assert_eq!(
        d.transcript[2..],
        [
            "MAIL a@b.example",
            "250 2.1.0 Ok",
            "RESET",
            "220 2.0.0 Ready to start TLS",
            "STARTTLS",
        ]
    );
    assert_eq!(d.session.state(), State::TlsHandshake);
    // More plaintext before the handshake ends: dropped too.
    d.feed(b"RCPT TO:<u@x.example>\r\n");
    assert_eq!(d.transcript.len(), 7);
    d.session.tls_started();
    assert!(d.session.tls_active());
    d.feed(b"MAIL FROM:<a@b.example>\r\nEHLO c\r\nSTARTTLS\r\n");
    assert_eq!(
        d.transcript[7..],
        [
            "503 5.5.1 Error: send HELO/EHLO first",
            EHLO,
            "503 5.5.1 Error: TLS already active",
        ]
    );
}

#[test]
fn early_talker_is_refused() {
    let mut s = Session::new(Config::new("mx.example", Protocol::Smtp));
    assert!(!s.greeting_sent());
    assert_eq!(s.timeout(), Timeout::Initial);
    assert_eq!(s.state(), State::Connected);
    assert_eq!(s.receive(b""), Ok(()), "a read of nothing is not talking");
    assert_eq!(s.receive(b"EHLO spam\r\n"), Err(InputError::EarlyTalker));
    let out: Vec<Output> = std::iter::from_fn(|| s.poll()).collect();
    assert_eq!(
        out,
        [
            Output::Reply(Reply::new(
                554,
                EnhancedStatus::new(5, 5, 1),
                "mx.example Error: SMTP protocol synchronization (talked before the greeting)"
            )),
            Output::Event(Event::Disconnect(Disconnect::EarlyTalker)),
        ]
    );
    assert!(s.is_closed());
}

#[test]
fn shutdown_answers_421() {
    let mut d = Driver::smtp();
    d.feed(b"HELO c\r\nMAIL FROM:<>\r\n");
    d.session.shutdown();
    d.drain();
    assert_eq!(
        d.transcript[d.transcript.len() - 2..],
        [
            "421 4.3.2 mx.example Service shutting down, closing connection",
            "DISCONNECT Shutdown",
        ]
    );
    assert!(d.session.transaction().is_none());
}

#[test]
fn timeout_follows_the_state() {
    let mut s = Session::new(Config::new("mx.example", Protocol::Smtp));
    s.greeting();
    let mut seen = vec![(s.state(), s.timeout())];
    let steps: &[&[u8]] = &[
        b"HELO c\r\n",
        b"MAIL FROM:<>\r\n",
        b"RCPT TO:<u@x.example>\r\n",
        b"DATA\r\n",
        b"text\r\n",
        b".\r\n",
    ];
    for step in steps {
        s.receive(step).expect("greeted");
        loop {
            match s.poll() {
                Some(Output::Event(Event::Mail { .. } | Event::Rcpt { .. })) => {
                    seen.push((s.state(), s.timeout()));
                    s.accept().expect("pending");
                }
                Some(Output::Event(Event::DataStart)) => {
                    seen.push((s.state(), s.timeout()));
                    s.accept().expect("pending");
                }
                Some(Output::Event(Event::DataEnd { .. })) => {
                    seen.push((s.state(), s.timeout()));
                    s.accept().expect("pending");
                }
                Some(_) => {}
                None => break,
            }
        }
        seen.push((s.state(), s.timeout()));
    }
    use State as S;
    use Timeout as T;
    assert_eq!(
        seen,
        [
            (S::Greeted, T::Initial),
            (S::Ready, T::Mail),
            (S::Waiting, T::Mail),
            (S::Mail, T::Rcpt),
            (S::Waiting, T::Rcpt),
            (S::Rcpt, T::Rcpt),
            (S::Waiting, T::DataInitiation),
            (S::Data, T::DataBlock),
            (S::Data, T::DataBlock),
            (S::Waiting, T::DataTermination),
            (S::Ready, T::Mail),
        ]
    );
}

fn lmtp() -> Driver {
    Driver::new(
        Config::new("mx.example", Protocol::Lmtp),
        Policy {
            refuse_unknown: true,
            lmtp_per_recipient: true,
            ..Policy::default()
        },
    )
}

#[test]
fn lmtp_answers_once_per_accepted_recipient() {
    let mut d = lmtp();
    d.feed(b"HELO c\r\nEHLO c\r\nLHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@x.example>\r\nRCPT TO:<unknown@x.example>\r\nRCPT TO:<full@x.example>\r\nDATA\r\nhi\r\n.\r\n");
    assert_eq!(d.transcript[0], "220 mx.example LMTP Cursus");
    assert_eq!(
        d.transcript[1..],
        [
            "500 5.5.1 Error: this is LMTP, send LHLO",
            "500 5.5.1 Error: this is LMTP, send LHLO",
            EHLO,
            "MAIL a@b.example",
            "250 2.1.0 Ok",
            "RCPT u@x.example",
            "250 2.1.5 Ok",
            "RCPT unknown@x.example",
            "550 5.1.1 Error: no such user",
            "RCPT full@x.example",
            "250 2.1.5 Ok",
            "DATASTART",
            "354 End data with <CR><LF>.<CR><LF>",
            "DATA hi\\r\\n",
            "END 4",
            "250 2.0.0 <u@x.example> delivered",
            "452 4.2.2 <full@x.example> mailbox full",
        ]
    );
}

#[test]
fn lmtp_session_errors_at_the_end_repeat_per_recipient() {
    let mut d = lmtp();
    d.feed(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nRCPT TO:<v@x.example>\r\nBDAT 2 LAST\r\na\n");
    let bare = "550 5.6.0 Error: bare CR or LF in message content (send CRLF line ends)";
    assert_eq!(d.transcript[d.transcript.len() - 2..], [bare, bare]);
}

#[test]
fn lmtp_per_recipient_count_is_checked() {
    let mut s = Session::new(Config::new("mx.example", Protocol::Lmtp));
    s.greeting();
    s.receive(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@x.example>\r\nRCPT TO:<v@x.example>\r\nDATA\r\n.\r\n")
        .expect("greeted");
    loop {
        match s.poll() {
            Some(Output::Event(Event::DataEnd { .. })) => break,
            Some(Output::Event(_)) => s.accept().expect("pending"),
            Some(Output::Reply(_)) => {}
            None => panic!("no DataEnd"),
        }
    }
    let ok = Reply::new(250, EnhancedStatus::new(2, 0, 0), "ok");
    assert_eq!(
        s.answer(Answer::PerRecipient(vec![ok.clone()])),
        Err(AnswerError::WrongCount {
            expected: 2,
            got: 1
        })
    );
    s.accept().expect("pending");
    let replies: Vec<Output> = std::iter::from_fn(|| s.poll()).collect();
    assert_eq!(replies.len(), 2, "one reply per recipient: {replies:?}");
}
