//! Session tests for the client: server bytes in, client bytes and results out.

use super::*;
use cursus_mail::OutcomeKind;
use std::sync::Arc;

/// What the client did after some input: the bytes it wrote and the other actions.
#[derive(Debug, Default)]
struct Seen {
    sent: String,
    actions: Vec<Action>,
}

fn drain(c: &mut Client) -> Seen {
    let mut seen = Seen::default();
    while let Some(a) = c.poll() {
        match a {
            Action::Send(bytes) => seen.sent.push_str(&String::from_utf8_lossy(&bytes)),
            other => seen.actions.push(other),
        }
    }
    seen
}

fn feed(c: &mut Client, server: &str) -> Seen {
    c.receive(server.as_bytes());
    drain(c)
}

fn message(rcpts: &[&str], body: &str) -> OutgoingMessage {
    OutgoingMessage {
        sender: Some("ann@a.example".into()),
        recipients: rcpts.iter().map(|r| OutgoingRecipient::new(*r)).collect(),
        body: Arc::new(body.as_bytes().to_vec()),
        body_type: Body::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
    }
}

/// A client greeted and ready, with the EHLO keywords given.
fn ready(config: ClientConfig, keywords: &[&str]) -> Client {
    let mut c = Client::new(config);
    let seen = feed(&mut c, "220 mx.b.example ESMTP\r\n");
    assert!(seen.sent.starts_with("EHLO ") || seen.sent.starts_with("LHLO "));
    let mut ehlo = String::from("250");
    if keywords.is_empty() {
        ehlo.push_str(" mx.b.example\r\n");
    } else {
        ehlo.push_str("-mx.b.example\r\n");
        for (i, k) in keywords.iter().enumerate() {
            let sep = if i + 1 == keywords.len() { ' ' } else { '-' };
            ehlo.push_str(&format!("250{sep}{k}\r\n"));
        }
    }
    let seen = feed(&mut c, &ehlo);
    assert_eq!(seen.actions, vec![Action::Ready], "{seen:?}");
    c
}

fn config() -> ClientConfig {
    ClientConfig::new("client.a.example", Protocol::Smtp)
}

fn results(seen: &Seen) -> Vec<(usize, OutcomeKind, String)> {
    seen.actions
        .iter()
        .filter_map(|a| match a {
            Action::Recipient { index, outcome } => {
                Some((*index, outcome.kind, outcome.status.to_string()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn pipelined_transaction_gives_a_result_per_recipient() {
    let mut c = ready(config(), &["PIPELINING", "8BITMIME", "SIZE 100000"]);
    c.send(message(
        &["b@b.example", "c@b.example"],
        "Subject: x\r\n\r\nhi\r\n",
    ))
    .expect("ready");
    let seen = drain(&mut c);
    assert_eq!(
        seen.sent,
        "MAIL FROM:<ann@a.example> SIZE=18\r\nRCPT TO:<b@b.example>\r\nRCPT TO:<c@b.example>\r\nDATA\r\n"
    );
    let seen = feed(
        &mut c,
        "250 2.1.0 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go ahead\r\n",
    );
    assert_eq!(seen.sent, "Subject: x\r\n\r\nhi\r\n.\r\n");
    assert_eq!(
        results(&seen),
        vec![(0, OutcomeKind::Permanent, "5.1.1".into())]
    );
    let seen = feed(&mut c, "250 2.0.0 queued as 1234\r\n");
    assert_eq!(
        results(&seen),
        vec![(1, OutcomeKind::Delivered, "2.0.0".into())]
    );
    assert_eq!(seen.actions[1..], [Action::MessageDone, Action::Ready]);
    // A second message on the same connection.
    c.send(message(&["d@b.example"], "x\r\n")).expect("ready");
    let seen = drain(&mut c);
    assert!(
        seen.sent.starts_with("MAIL FROM:<ann@a.example>"),
        "{}",
        seen.sent
    );
    let seen = feed(&mut c, "250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(seen.sent, "x\r\n.\r\n");
    let seen = feed(&mut c, "451 4.3.0 try later\r\n");
    assert_eq!(
        results(&seen),
        vec![(0, OutcomeKind::Temporary, "4.3.0".into())]
    );
    assert_eq!(c.messages(), 1);
    c.quit();
    assert_eq!(drain(&mut c).sent, "QUIT\r\n");
    assert_eq!(feed(&mut c, "221 bye\r\n").actions, vec![Action::Closed]);
}

#[test]
fn ehlo_refused_falls_back_to_helo_and_commands_go_one_by_one() {
    let mut c = Client::new(config());
    assert_eq!(
        feed(&mut c, "220 old.example\r\n").sent,
        "EHLO client.a.example\r\n"
    );
    let seen = feed(&mut c, "502 5.5.1 what\r\n");
    assert_eq!(seen.sent, "HELO client.a.example\r\n");
    let seen = feed(&mut c, "250 old.example\r\n");
    assert_eq!(seen.actions, vec![Action::Ready]);
    assert!(c.used_helo());
    c.send(message(&["b@b.example", "c@b.example"], ".dot\r\n"))
        .expect("ready");
    assert_eq!(drain(&mut c).sent, "MAIL FROM:<ann@a.example>\r\n");
    assert_eq!(feed(&mut c, "250 ok\r\n").sent, "RCPT TO:<b@b.example>\r\n");
    assert_eq!(feed(&mut c, "250 ok\r\n").sent, "RCPT TO:<c@b.example>\r\n");
    assert_eq!(feed(&mut c, "250 ok\r\n").sent, "DATA\r\n");
    assert_eq!(feed(&mut c, "354 go\r\n").sent, "..dot\r\n.\r\n");
    let seen = feed(&mut c, "250 ok\r\n");
    assert_eq!(results(&seen).len(), 2);
}

#[test]
fn a_host_known_to_fail_ehlo_is_greeted_with_helo() {
    let mut c = Client::new(ClientConfig {
        helo_only: true,
        ..config()
    });
    assert_eq!(
        feed(&mut c, "220 old.example\r\n").sent,
        "HELO client.a.example\r\n"
    );
    assert_eq!(
        feed(&mut c, "250 old.example\r\n").actions,
        vec![Action::Ready]
    );
    assert!(c.used_helo());
    assert!(!c.ehlo_failed());
}

#[test]
fn a_server_that_hangs_up_on_ehlo_is_an_ehlo_failure() {
    let mut c = Client::new(config());
    feed(&mut c, "220 old.example\r\n");
    c.abort("the server closed the connection");
    assert!(c.ehlo_failed());
    let mut c = Client::new(config());
    feed(&mut c, "220 old.example\r\n");
    feed(&mut c, "500 5.5.1 what\r\n");
    assert!(c.ehlo_failed());
    // After STARTTLS the second EHLO is not the host's EHLO problem.
    let mut c = Client::new(config());
    feed(&mut c, "220 old.example\r\n");
    feed(&mut c, "250-old.example\r\n250 STARTTLS\r\n");
    assert_eq!(drain(&mut c).sent, "");
    feed(&mut c, "220 go ahead\r\n");
    c.tls_established();
    drain(&mut c);
    c.abort("the server closed the connection");
    assert!(!c.ehlo_failed());
    // A refused greeting is not about EHLO.
    let mut c = Client::new(config());
    feed(&mut c, "421 busy\r\n");
    assert!(!c.ehlo_failed());
}

#[test]
fn every_recipient_refused_without_pipelining_sends_no_data() {
    let mut c = ready(config(), &[]);
    c.send(message(&["b@b.example"], "x\r\n")).expect("ready");
    drain(&mut c);
    feed(&mut c, "250 ok\r\n");
    let seen = feed(&mut c, "450 4.2.0 mailbox busy\r\n");
    assert_eq!(seen.sent, "RSET\r\n");
    assert_eq!(
        results(&seen),
        vec![(0, OutcomeKind::Temporary, "4.2.0".into())]
    );
    let seen = feed(&mut c, "250 ok\r\n");
    assert_eq!(seen.actions, vec![Action::MessageDone, Action::Ready]);
}

#[test]
fn mail_refused_fails_every_recipient_and_resets() {
    let mut c = ready(config(), &["PIPELINING"]);
    c.send(message(&["b@b.example", "c@b.example"], "x\r\n"))
        .expect("ready");
    drain(&mut c);
    let seen = feed(
        &mut c,
        "553 5.7.1 sender refused\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n",
    );
    assert_eq!(
        results(&seen),
        vec![
            (0, OutcomeKind::Permanent, "5.7.1".into()),
            (1, OutcomeKind::Permanent, "5.7.1".into())
        ]
    );
    assert_eq!(seen.sent, "RSET\r\n");
    let seen = feed(&mut c, "250 ok\r\n");
    assert_eq!(seen.actions, vec![Action::MessageDone, Action::Ready]);
}

#[test]
fn lmtp_gives_one_reply_per_accepted_recipient() {
    let mut c = ready(
        ClientConfig::new("c", Protocol::Lmtp),
        &["PIPELINING", "ENHANCEDSTATUSCODES"],
    );
    c.send(message(&["a@x", "b@x", "c@x"], "x\r\n"))
        .expect("ready");
    drain(&mut c);
    let seen = feed(
        &mut c,
        "250 ok\r\n250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n",
    );
    assert_eq!(
        results(&seen),
        vec![(2, OutcomeKind::Permanent, "5.1.1".into())]
    );
    let seen = feed(&mut c, "250 2.0.0 a ok\r\n452 4.2.2 b over quota\r\n");
    assert_eq!(
        results(&seen),
        vec![
            (0, OutcomeKind::Delivered, "2.0.0".into()),
            (1, OutcomeKind::Temporary, "4.2.2".into())
        ]
    );
    assert_eq!(seen.actions[2..], [Action::MessageDone, Action::Ready]);
}

#[test]
fn bdat_waits_for_recipients_then_sends_one_chunk() {
    let mut c = ready(config(), &["PIPELINING", "CHUNKING", "8BITMIME"]);
    c.send(message(&["b@b.example"], "a\n.b\n")).expect("ready");
    assert_eq!(
        drain(&mut c).sent,
        "MAIL FROM:<ann@a.example>\r\nRCPT TO:<b@b.example>\r\n"
    );
    let seen = feed(&mut c, "250 ok\r\n250 ok\r\n");
    // Canonical line ends, no dot-stuffing with BDAT.
    assert_eq!(seen.sent, "BDAT 7 LAST\r\na\r\n.b\r\n");
    let seen = feed(&mut c, "250 2.0.0 ok\r\n");
    assert_eq!(
        results(&seen),
        vec![(0, OutcomeKind::Delivered, "2.0.0".into())]
    );
}

#[test]
fn peer_lacking_extensions_follows_the_documented_rules() {
    // SMTPUTF8 needed, not offered: 5.6.7, nothing sent.
    let mut c = ready(config(), &["PIPELINING", "8BITMIME"]);
    c.send(message(&["jörg@b.example"], "x\r\n"))
        .expect("ready");
    let seen = drain(&mut c);
    assert_eq!(seen.sent, "");
    assert_eq!(
        results(&seen),
        vec![(0, OutcomeKind::Permanent, "5.6.7".into())]
    );
    assert_eq!(seen.actions[1..], [Action::MessageDone, Action::Ready]);
    // Offered: the SMTPUTF8 parameter.
    let mut c = ready(config(), &["SMTPUTF8"]);
    c.send(message(&["jörg@b.example"], "x\r\n"))
        .expect("ready");
    assert_eq!(drain(&mut c).sent, "MAIL FROM:<ann@a.example> SMTPUTF8\r\n");
    // 8-bit body, no 8BITMIME: sent without BODY by default ...
    let mut c = ready(config(), &[]);
    let mut m = message(&["b@b.example"], "caf\u{e9}\r\n");
    c.send(m.clone()).expect("ready");
    assert_eq!(drain(&mut c).sent, "MAIL FROM:<ann@a.example>\r\n");
    // ... refused with 5.6.3 under EightBitRule::Refuse.
    let mut strict = config();
    strict.eight_bit = EightBitRule::Refuse;
    let mut c = ready(strict, &[]);
    c.send(m.clone()).expect("ready");
    assert_eq!(
        results(&drain(&mut c)),
        vec![(0, OutcomeKind::Permanent, "5.6.3".into())]
    );
    // With 8BITMIME: BODY=8BITMIME.
    let mut c = ready(config(), &["8BITMIME"]);
    c.send(m.clone()).expect("ready");
    assert_eq!(
        drain(&mut c).sent,
        "MAIL FROM:<ann@a.example> BODY=8BITMIME\r\n"
    );
    // Binary content needs BINARYMIME and CHUNKING.
    m.body_type = Body::BinaryMime;
    let mut c = ready(config(), &["8BITMIME", "CHUNKING"]);
    c.send(m.clone()).expect("ready");
    assert_eq!(
        results(&drain(&mut c)),
        vec![(0, OutcomeKind::Permanent, "5.6.3".into())]
    );
    let mut c = ready(config(), &["BINARYMIME", "CHUNKING"]);
    c.send(m).expect("ready");
    assert_eq!(
        drain(&mut c).sent,
        "MAIL FROM:<ann@a.example> BODY=BINARYMIME\r\n"
    );
    // Larger than SIZE: 5.3.4.
    let mut c = ready(config(), &["SIZE 3"]);
    c.send(message(&["b@b.example"], "long\r\n"))
        .expect("ready");
    assert_eq!(
        results(&drain(&mut c)),
        vec![(0, OutcomeKind::Permanent, "5.3.4".into())]
    );
}

#[test]
fn dsn_parameters_pass_only_when_offered() {
    let mut m = message(&["b@b.example"], "x\r\n");
    m.ret = Some(Ret::Headers);
    m.envid = Some("QQ314159".into());
    m.recipients[0].notify = Some("SUCCESS,FAILURE".into());
    m.recipients[0].orcpt = Some("rfc822;b@b.example".into());
    m.sender = None;
    let mut c = ready(config(), &["PIPELINING", "DSN"]);
    c.send(m.clone()).expect("ready");
    assert_eq!(
        drain(&mut c).sent,
        "MAIL FROM:<> RET=HDRS ENVID=QQ314159\r\nRCPT TO:<b@b.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@b.example\r\nDATA\r\n"
    );
    let mut c = ready(config(), &["PIPELINING"]);
    c.send(m).expect("ready");
    assert_eq!(
        drain(&mut c).sent,
        "MAIL FROM:<>\r\nRCPT TO:<b@b.example>\r\nDATA\r\n"
    );
}

#[test]
fn starttls_then_ehlo_again_and_injection_is_refused() {
    let mut c = Client::new(config());
    feed(&mut c, "220 mx\r\n");
    let seen = feed(&mut c, "250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
    assert_eq!(seen.sent, "STARTTLS\r\n");
    let seen = feed(&mut c, "220 2.0.0 go\r\n");
    assert_eq!(seen.actions, vec![Action::StartTls]);
    c.tls_established();
    assert_eq!(drain(&mut c).sent, "EHLO client.a.example\r\n");
    let seen = feed(&mut c, "250-mx\r\n250 PIPELINING\r\n");
    assert_eq!(seen.actions, vec![Action::Ready]);
    assert!(c.is_tls());

    // A server that pipelines a reply behind its 220 is out.
    let mut c = Client::new(config());
    feed(&mut c, "220 mx\r\n");
    feed(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    let seen = feed(&mut c, "220 go\r\n250 injected\r\n");
    assert!(matches!(seen.actions[0], Action::Failed(_)), "{seen:?}");
    assert!(c.is_closed());
}

#[test]
fn starttls_refused_goes_on_in_plaintext_unless_required() {
    let mut c = Client::new(config());
    feed(&mut c, "220 mx\r\n");
    feed(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    let seen = feed(&mut c, "454 4.7.0 TLS not available\r\n");
    assert_eq!(seen.actions, vec![Action::Ready]);
    let mut required = config();
    required.tls = TlsMode::Required;
    let mut c = Client::new(required);
    feed(&mut c, "220 mx\r\n");
    let seen = feed(&mut c, "250 mx\r\n");
    assert_eq!(seen.sent, "QUIT\r\n");
    match &seen.actions[0] {
        Action::Failed(o) => assert_eq!(o.status.to_string(), "4.7.10"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn auth_plain_and_login_only_over_tls() {
    let mut cfg = config();
    cfg.auth = Some(Credentials {
        user: "u".into(),
        password: "p".into(),
    });
    // No TLS: refused before any credential leaves.
    let mut c = Client::new(cfg.clone());
    feed(&mut c, "220 mx\r\n");
    let seen = feed(&mut c, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n");
    assert!(!seen.sent.contains("AUTH"));
    assert!(matches!(seen.actions[0], Action::Failed(_)));
    // Allowed without TLS: PLAIN.
    cfg.auth_without_tls = true;
    let mut c = Client::new(cfg.clone());
    feed(&mut c, "220 mx\r\n");
    let seen = feed(&mut c, "250-mx\r\n250 AUTH LOGIN PLAIN\r\n");
    assert_eq!(seen.sent, "AUTH PLAIN AHUAcA==\r\n");
    assert_eq!(
        feed(&mut c, "235 2.7.0 ok\r\n").actions,
        vec![Action::Ready]
    );
    // LOGIN when PLAIN is not offered.
    let mut c = Client::new(cfg.clone());
    feed(&mut c, "220 mx\r\n");
    assert_eq!(
        feed(&mut c, "250-mx\r\n250 AUTH LOGIN\r\n").sent,
        "AUTH LOGIN\r\n"
    );
    assert_eq!(feed(&mut c, "334 VXNlcm5hbWU6\r\n").sent, "dQ==\r\n");
    assert_eq!(feed(&mut c, "334 UGFzc3dvcmQ6\r\n").sent, "cA==\r\n");
    assert_eq!(feed(&mut c, "235 ok\r\n").actions, vec![Action::Ready]);
    // Bad credentials: a permanent-class failure of the session.
    let mut c = Client::new(cfg);
    feed(&mut c, "220 mx\r\n");
    feed(&mut c, "250-mx\r\n250 AUTH PLAIN\r\n");
    match &feed(&mut c, "535 5.7.8 bad credentials\r\n").actions[0] {
        Action::Failed(o) => assert_eq!(o.status.to_string(), "5.7.8"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn abort_mid_transaction_defers_every_waiting_recipient() {
    let mut c = ready(config(), &["PIPELINING"]);
    c.send(message(&["b@x", "c@x"], "x\r\n")).expect("ready");
    drain(&mut c);
    let seen = feed(&mut c, "250 ok\r\n550 5.1.1 no\r\n");
    assert_eq!(results(&seen).len(), 1);
    c.abort("connection reset");
    let seen = drain(&mut c);
    assert_eq!(
        results(&seen),
        vec![(1, OutcomeKind::Temporary, "4.4.2".into())]
    );
    assert_eq!(seen.actions[1..], [Action::MessageDone, Action::Closed]);
    // A greeting refused: the session fails with the server's reply.
    let mut c = Client::new(config());
    let seen = feed(&mut c, "554 5.3.2 go away\r\n");
    match &seen.actions[0] {
        Action::Failed(o) => assert_eq!(o.kind, OutcomeKind::Permanent),
        other => panic!("{other:?}"),
    }
}

#[test]
fn replies_split_anywhere_parse_the_same() {
    let script = "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
    let mut c = Client::new(config());
    let mut actions = Vec::new();
    for b in script.as_bytes() {
        c.receive(std::slice::from_ref(b));
        actions.extend(drain(&mut c).actions);
    }
    assert_eq!(actions, vec![Action::Ready]);
    assert!(c.capabilities().pipelining && c.capabilities().eight_bit_mime);
}

#[test]
fn reply_text_is_cleaned_and_keeps_the_enhanced_status() {
    let mut c = ready(config(), &[]);
    c.send(message(&["b@x"], "x\r\n")).expect("ready");
    drain(&mut c);
    feed(&mut c, "250 ok\r\n");
    let seen = feed(&mut c, "550-5.1.1 no such\r\n550 5.1.1 user\x07 here\r\n");
    let Action::Recipient { outcome, .. } = &seen.actions[0] else {
        panic!("{seen:?}");
    };
    assert_eq!(outcome.status.to_string(), "5.1.1");
    assert!(!outcome.text.contains('\x07'), "{}", outcome.text);
    assert!(outcome.text.contains("RCPT TO"), "{}", outcome.text);
}

#[test]
fn content_is_canonical_and_dot_stuffed() {
    let table: &[(&str, &str)] = &[
        ("a\r\nb\r\n", "a\r\nb\r\n"),
        ("a\nb", "a\r\nb\r\n"),
        (".\r\n", "..\r\n"),
        ("x\r\n.y\r\n..z\r\n", "x\r\n..y\r\n...z\r\n"),
        ("a\rb\r\n", "a\r\nb\r\n"),
        ("", ""),
    ];
    for (input, want) in table {
        assert_eq!(
            String::from_utf8_lossy(&dot_stuff(input.as_bytes())),
            *want,
            "{input:?}"
        );
    }
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    for (input, want) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), want);
    }
}

#[test]
fn capabilities_parse_keywords_case_insensitively() {
    let c = Capabilities::parse([
        "pipelining",
        "SIZE 52428800",
        "auth login plain",
        "dsn",
        "Chunking",
    ]);
    assert!(c.pipelining && c.dsn && c.chunking && c.auth_login && c.auth_plain);
    assert_eq!(c.size, Some(52_428_800));
}

#[test]
fn probe_resets_an_idle_session() {
    let mut c = ready(config(), &["PIPELINING"]);
    assert!(c.probe());
    assert_eq!(drain(&mut c).sent, "RSET\r\n");
    assert!(!c.is_ready());
    assert_eq!(feed(&mut c, "250 ok\r\n").actions, vec![Action::Ready]);
    assert!(c.is_ready());
    assert!(c.probe());
    drain(&mut c);
    c.abort("the server closed the connection");
    assert!(matches!(drain(&mut c).actions[0], Action::Failed(_)));
}
