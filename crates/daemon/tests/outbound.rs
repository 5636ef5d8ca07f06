//! The outbound transports against an in-process fake server on 127.0.0.1:0 (and a unix
//! socket for LMTP): per-recipient outcomes, several recipients per transaction, connection
//! reuse, the per-destination connection limit, AUTH, a server that never greets, BDAT.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cursus_mail::OutcomeKind;
use cursus_proto::transaction::Body;
use cursus_proto::{OutgoingMessage, OutgoingRecipient};
use cursusd::remote::{Group, GroupResult, Outbound, Settings};
use cursusd::routing::NextHop;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// What the fake server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    messages: Mutex<Vec<(Vec<String>, Vec<u8>)>>,
    commands: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Behaviour {
    keywords: Vec<&'static str>,
    lmtp: bool,
    greet: bool,
    /// Delay before each end-of-data reply (to hold connections open).
    hold: Duration,
    /// Hang up without a word after this many messages.
    close_after: Option<usize>,
    /// Recipients per transaction; more get 452 4.5.3.
    max_rcpts: usize,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            keywords: vec![
                "PIPELINING",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "SIZE 1000000",
            ],
            lmtp: false,
            greet: true,
            hold: Duration::ZERO,
            close_after: None,
            max_rcpts: 100,
        }
    }
}

/// A recipient's fate by its local part: `bad*` 550, `busy*` 450, others 250.
fn rcpt_reply(line: &str) -> &'static str {
    let addr = line
        .split_once('<')
        .map(|(_, r)| r)
        .unwrap_or("")
        .to_ascii_lowercase();
    if addr.starts_with("bad") {
        "550 5.1.1 no such user\r\n"
    } else if addr.starts_with("busy") {
        "450 4.2.1 mailbox busy\r\n"
    } else {
        "250 2.1.5 ok\r\n"
    }
}

async fn session<S>(stream: S, b: Behaviour, seen: Arc<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let open = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_open.fetch_max(open, Ordering::SeqCst);
    seen.connections.fetch_add(1, Ordering::SeqCst);
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    if !b.greet {
        tokio::time::sleep(Duration::from_secs(30)).await;
        return;
    }
    let _ = w.write_all(b"220 fake.test ESMTP\r\n").await;
    let mut rcpts: Vec<String> = Vec::new();
    let mut accepted = 0;
    let mut served = 0;
    let mut hang_up = false;
    loop {
        let mut line = String::new();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        seen.commands
            .lock()
            .expect("lock")
            .push(line.trim_end().to_string());
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("LHLO") {
            let mut s = String::from("250-fake.test\r\n");
            for (i, k) in b.keywords.iter().enumerate() {
                let sep = if i + 1 == b.keywords.len() { ' ' } else { '-' };
                s.push_str(&format!("250{sep}{k}\r\n"));
            }
            if b.keywords.is_empty() {
                s = "250 fake.test\r\n".into();
            }
            s
        } else if upper.starts_with("AUTH PLAIN") {
            // \0user\0secret
            if line.trim_end().ends_with("AHVzZXIAc2VjcmV0") {
                "235 2.7.0 ok\r\n".into()
            } else {
                "535 5.7.8 bad\r\n".into()
            }
        } else if upper.starts_with("MAIL") {
            rcpts.clear();
            accepted = 0;
            "250 2.1.0 ok\r\n".into()
        } else if upper.starts_with("RCPT") && accepted >= b.max_rcpts {
            "452 4.5.3 too many recipients\r\n".into()
        } else if upper.starts_with("RCPT") {
            let reply = rcpt_reply(&line);
            rcpts.push(line.trim_end().to_string());
            if reply.starts_with('2') {
                accepted += 1;
            }
            reply.into()
        } else if upper.starts_with("DATA") {
            if accepted == 0 {
                "554 5.5.1 no valid recipients\r\n".into()
            } else {
                let _ = w.write_all(b"354 go\r\n").await;
                let mut body = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if r.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    body.extend_from_slice(&l);
                }
                tokio::time::sleep(b.hold).await;
                seen.messages
                    .lock()
                    .expect("lock")
                    .push((rcpts.clone(), body));
                served += 1;
                hang_up = b.close_after.is_some_and(|n| served > n);
                if b.lmtp {
                    let mut s = String::new();
                    for r in rcpts.iter().filter(|r| rcpt_reply(r).starts_with('2')) {
                        if r.contains("quota") {
                            s.push_str("452 4.2.2 over quota\r\n");
                        } else {
                            s.push_str("250 2.0.0 delivered\r\n");
                        }
                    }
                    s
                } else {
                    "250 2.0.0 queued\r\n".into()
                }
            }
        } else if upper.starts_with("BDAT") {
            let n: usize = upper
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; n];
            if r.read_exact(&mut body).await.is_err() {
                break;
            }
            seen.messages
                .lock()
                .expect("lock")
                .push((rcpts.clone(), body));
            "250 2.0.0 queued\r\n".into()
        } else if upper.starts_with("RSET") {
            "250 2.0.0 ok\r\n".into()
        } else if upper.starts_with("QUIT") {
            let _ = w.write_all(b"221 2.0.0 bye\r\n").await;
            break;
        } else {
            "500 5.5.2 what\r\n".into()
        };
        if w.write_all(reply.as_bytes()).await.is_err() || hang_up {
            break;
        }
    }
    seen.open.fetch_sub(1, Ordering::SeqCst);
}

async fn tcp_server(b: Behaviour) -> (u16, Arc<Seen>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            tokio::spawn(session(stream, b.clone(), s.clone()));
        }
    });
    (port, seen)
}

fn settings() -> Settings {
    Settings {
        // Never asked: every host below is an IP literal or a socket.
        resolver: Some("127.0.0.1:9".parse().expect("addr")),
        helo_name: Some("client.test".into()),
        idle: Duration::from_secs(30),
        ..Settings::default()
    }
}

fn message(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        sender: Some("ann@a.test".into()),
        recipients: Vec::new(),
        body: Arc::new(body.as_bytes().to_vec()),
        body_type: Body::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
    }
}

fn hop(host: String, lmtp: bool) -> NextHop {
    NextHop {
        lmtp,
        hosts: vec![host],
        port: 25,
        domain: "b.test".into(),
    }
}

fn group(hop: NextHop, rcpts: &[&str]) -> Group {
    Group {
        next_hop: hop,
        recipients: rcpts.iter().map(|r| OutgoingRecipient::new(*r)).collect(),
    }
}

async fn deliver(o: &Arc<Outbound>, m: OutgoingMessage, groups: Vec<Group>) -> Vec<GroupResult> {
    let o = o.clone();
    tokio::task::spawn_blocking(move || o.deliver_blocking(&m, groups))
        .await
        .expect("join")
}

fn kinds(r: &GroupResult) -> Vec<OutcomeKind> {
    r.outcomes.iter().map(|o| o.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_recipient_outcomes_and_connection_reuse() {
    let (port, seen) = tcp_server(Behaviour::default()).await;
    let o = Arc::new(Outbound::new(settings(), "client.test").expect("outbound"));
    let h = hop(format!("127.0.0.1:{port}"), false);
    let r = deliver(
        &o,
        message("Subject: one\r\n\r\n.leading dot\r\n"),
        vec![group(
            h.clone(),
            &["ok@b.test", "bad@b.test", "busy@b.test", "ok2@b.test"],
        )],
    )
    .await;
    assert_eq!(
        kinds(&r[0]),
        vec![
            OutcomeKind::Delivered,
            OutcomeKind::Permanent,
            OutcomeKind::Temporary,
            OutcomeKind::Delivered
        ]
    );
    assert!(!r[0].reused);
    assert!(
        r[0].outcomes[1].text.contains("5.1.1"),
        "{:?}",
        r[0].outcomes[1]
    );
    assert!(
        r[0].relay.contains(&format!("127.0.0.1]:{port}")),
        "{}",
        r[0].relay
    );
    // The second message takes the cached connection.
    let r = deliver(&o, message("x\r\n"), vec![group(h, &["ok@b.test"])]).await;
    assert_eq!(kinds(&r[0]), vec![OutcomeKind::Delivered]);
    assert!(r[0].reused);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    let messages = seen.messages.lock().expect("lock");
    assert_eq!(messages.len(), 2);
    // One transaction for the four recipients, dot-stuffed on the wire, unstuffed by us here.
    assert_eq!(messages[0].0.len(), 4);
    assert!(
        String::from_utf8_lossy(&messages[0].1).contains("\r\n..leading dot\r\n"),
        "{:?}",
        String::from_utf8_lossy(&messages[0].1)
    );
    let commands = seen.commands.lock().expect("lock");
    assert!(commands.iter().any(|c| c == "EHLO client.test"));
}

/// At shutdown the cached connection is ended with QUIT, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_connections_get_quit_at_shutdown() {
    let (port, seen) = tcp_server(Behaviour::default()).await;
    let o = Arc::new(Outbound::new(settings(), "client.test").expect("outbound"));
    let h = hop(format!("127.0.0.1:{port}"), false);
    let r = deliver(&o, message("x\r\n"), vec![group(h, &["ok@b.test"])]).await;
    assert_eq!(kinds(&r[0]), vec![OutcomeKind::Delivered]);
    assert!(
        !seen
            .commands
            .lock()
            .expect("lock")
            .iter()
            .any(|c| c == "QUIT")
    );
    assert_eq!(o.quit_idle(Duration::from_secs(2)).await, 1);
    assert!(
        seen.commands
            .lock()
            .expect("lock")
            .iter()
            .any(|c| c == "QUIT")
    );
    assert_eq!(o.idle_connections(), 0);
    assert_eq!(o.quit_idle(Duration::from_secs(2)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_over_a_unix_socket_answers_per_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lmtp.sock");
    let l = tokio::net::UnixListener::bind(&path).expect("bind");
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let b = Behaviour {
        lmtp: true,
        ..Behaviour::default()
    };
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            tokio::spawn(session(stream, b.clone(), s.clone()));
        }
    });
    let o = Arc::new(Outbound::new(settings(), "client.test").expect("outbound"));
    let h = hop(format!("unix:{}", path.display()), true);
    let r = deliver(
        &o,
        message("x\r\n"),
        vec![group(h, &["a@b.test", "bad@b.test", "quota@b.test"])],
    )
    .await;
    assert_eq!(
        kinds(&r[0]),
        vec![
            OutcomeKind::Delivered,
            OutcomeKind::Permanent,
            OutcomeKind::Temporary
        ]
    );
    let commands = seen.commands.lock().expect("lock");
    assert!(commands[0].starts_with("LHLO"), "{commands:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destination_limit_holds_under_parallel_messages() {
    let (port, seen) = tcp_server(Behaviour {
        hold: Duration::from_millis(150),
        ..Behaviour::default()
    })
    .await;
    let mut s = settings();
    s.connections_per_destination = 2;
    let o = Arc::new(Outbound::new(s, "client.test").expect("outbound"));
    let h = hop(format!("127.0.0.1:{port}"), false);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let o = o.clone();
        let g = group(h.clone(), &["ok@b.test"]);
        tasks.push(tokio::spawn(async move {
            deliver(&o, message(&format!("n {i}\r\n")), vec![g]).await
        }));
    }
    for t in tasks {
        let r = t.await.expect("join");
        assert_eq!(kinds(&r[0]), vec![OutcomeKind::Delivered]);
    }
    assert_eq!(seen.max_open.load(Ordering::SeqCst), 2);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(seen.messages.lock().expect("lock").len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_greets_is_a_temporary_failure() {
    let (port, _seen) = tcp_server(Behaviour {
        greet: false,
        ..Behaviour::default()
    })
    .await;
    let mut s = settings();
    s.timeouts.greeting = Duration::from_secs(1);
    let o = Arc::new(Outbound::new(s, "client.test").expect("outbound"));
    let started = std::time::Instant::now();
    let r = deliver(
        &o,
        message("x\r\n"),
        vec![group(
            hop(format!("127.0.0.1:{port}"), false),
            &["ok@b.test"],
        )],
    )
    .await;
    assert_eq!(kinds(&r[0]), vec![OutcomeKind::Temporary]);
    assert!(
        r[0].outcomes[0].text.contains("4.5.3.2.1"),
        "{:?}",
        r[0].outcomes[0]
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nobody listening: refused, temporary.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let r = deliver(
        &o,
        message("x\r\n"),
        vec![group(
            hop(format!("127.0.0.1:{port}"), false),
            &["ok@b.test"],
        )],
    )
    .await;
    assert_eq!(kinds(&r[0]), vec![OutcomeKind::Temporary]);
    assert_eq!(r[0].outcomes[0].status.to_string(), "4.4.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_auth_and_bdat() {
    let (port, seen) = tcp_server(Behaviour {
        keywords: vec!["PIPELINING", "CHUNKING", "AUTH PLAIN LOGIN"],
        ..Behaviour::default()
    })
    .await;
    let mut s = settings();
    s.auth.push(cursusd::remote::HostAuth {
        host: "127.0.0.1".into(),
        user: "user".into(),
        password: "secret".into(),
        without_tls: true,
    });
    let o = Arc::new(Outbound::new(s, "client.test").expect("outbound"));
    let r = deliver(
        &o,
        message("a\r\n.b\r\n"),
        vec![group(
            hop(format!("127.0.0.1:{port}"), false),
            &["ok@b.test"],
        )],
    )
    .await;
    assert_eq!(kinds(&r[0]), vec![OutcomeKind::Delivered], "{:?}", r[0]);
    {
        let commands = seen.commands.lock().expect("lock");
        assert!(
            commands.iter().any(|c| c.starts_with("AUTH PLAIN")),
            "{commands:?}"
        );
        assert!(commands.iter().any(|c| c == "BDAT 7 LAST"), "{commands:?}");
        assert_eq!(seen.messages.lock().expect("lock")[0].1, b"a\r\n.b\r\n");
    }

    // Without `without_tls`, credentials never go out in plaintext.
    let (port, seen) = tcp_server(Behaviour {
        keywords: vec!["AUTH PLAIN"],
        ..Behaviour::default()
    })
    .await;
    let mut s = settings();
    s.auth.push(cursusd::remote::HostAuth {
        host: "127.0.0.1".into(),
        user: "user".into(),
        password: "secret".into(),
        without_tls: false,
    });
    let o = Arc::new(Outbound::new(s, "client.test").expect("outbound"));
    let r = deliver(
        &o,
        message("x\r\n"),
        vec![group(
            hop(format!("127.0.0.1:{port}"), false),
            &["ok@b.test"],
        )],
    )
    .await;
    assert_eq!(kinds(&r[0]), vec![OutcomeKind::Temporary]);
    assert_eq!(r[0].outcomes[0].status.to_string(), "4.7.10");
    assert!(
        !seen
            .commands
            .lock()
            .expect("lock")
            .iter()
            .any(|c| c.starts_with("AUTH"))
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it (openssl), in `dir`.
fn ca_and_certificate(dir: &std::path::Path) -> bool {
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("write");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Cursus test CA",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.pem",
        "-subj",
        "/CN=127.0.0.1",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "req.pem",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "cert.pem",
        "-extfile",
        "ext.cnf",
    ])
}

/// Offers STARTTLS; after the handshake the fake session goes on over TLS.
async fn tls_server(dir: &std::path::Path) -> (u16, Arc<Seen>) {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::CertificateDer::pem_file_iter(dir.join("cert.pem"))
            .expect("cert")
            .collect::<Result<_, _>>()
            .expect("cert");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(b"220 tls.test ESMTP\r\n").await;
                // Plaintext part, read byte by byte so nothing after STARTTLS is buffered.
                loop {
                    let mut line = Vec::new();
                    let mut b = [0u8; 1];
                    while stream.read_exact(&mut b).await.is_ok() {
                        line.push(b[0]);
                        if b[0] == b'\n' {
                            break;
                        }
                    }
                    let text = String::from_utf8_lossy(&line).to_ascii_uppercase();
                    if text.starts_with("EHLO") {
                        let _ = stream
                            .write_all(b"250-tls.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
                            .await;
                    } else if text.starts_with("STARTTLS") {
                        let _ = stream.write_all(b"220 2.0.0 go ahead\r\n").await;
                        break;
                    } else {
                        return;
                    }
                }
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                session_after_tls(tls, s).await;
            });
        }
    });
    (port, seen)
}

/// The fake session without the greeting (after STARTTLS the client says EHLO first).
async fn session_after_tls<S>(stream: S, seen: Arc<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        seen.commands
            .lock()
            .expect("lock")
            .push(line.trim_end().to_string());
        let up = line.to_ascii_uppercase();
        let reply: &[u8] = if up.starts_with("EHLO") {
            b"250-tls.test\r\n250 PIPELINING\r\n"
        } else if up.starts_with("MAIL") || up.starts_with("RCPT") || up.starts_with("RSET") {
            b"250 2.0.0 ok\r\n"
        } else if up.starts_with("DATA") {
            let _ = w.write_all(b"354 go\r\n").await;
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                    return;
                }
                if l == b".\r\n" {
                    break;
                }
            }
            seen.messages
                .lock()
                .expect("lock")
                .push((Vec::new(), Vec::new()));
            b"250 2.0.0 queued over TLS\r\n"
        } else if up.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"500 what\r\n"
        };
        if w.write_all(reply).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_records_the_certificate_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    if !ca_and_certificate(dir.path()) {
        eprintln!("SKIP: openssl could not make a test certificate");
        return;
    }
    let (port, seen) = tls_server(dir.path()).await;
    let h = hop(format!("127.0.0.1:{port}"), false);
    // Our CA configured: verified.
    let mut s = settings();
    s.tls_ca_file = Some(dir.path().join("ca.pem"));
    let o = Arc::new(Outbound::new(s, "client.test").expect("outbound"));
    let r = deliver(&o, message("x\r\n"), vec![group(h.clone(), &["ok@b.test"])]).await;
    assert_eq!(kinds(&r[0]), vec![OutcomeKind::Delivered], "{:?}", r[0]);
    assert!(r[0].tls.contains("TLS"), "{}", r[0].tls);
    assert!(r[0].tls.ends_with(" verified"), "{}", r[0].tls);
    // Mozilla's roots only: delivered anyway (opportunistic), recorded as not verified.
    let o = Arc::new(Outbound::new(settings(), "client.test").expect("outbound"));
    let r = deliver(&o, message("x\r\n"), vec![group(h, &["ok@b.test"])]).await;
    assert_eq!(kinds(&r[0]), vec![OutcomeKind::Delivered], "{:?}", r[0]);
    assert!(r[0].tls.contains("not verified"), "{}", r[0].tls);
    assert!(r[0].tls.contains("UnknownIssuer"), "{}", r[0].tls);
    assert_eq!(seen.messages.lock().expect("lock").len(), 2);
    // EHLO again after the handshake.
    assert_eq!(
        seen.commands
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.starts_with("EHLO"))
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_connection_closed_by_the_server_is_replaced() {
    // The server takes one message per connection and then hangs up silently (the next
    // MAIL finds the socket closed: no reply, so the message was never seen).
    let (port, seen) = tcp_server(Behaviour {
        close_after: Some(0),
        ..Behaviour::default()
    })
    .await;
    let o = Arc::new(Outbound::new(settings(), "client.test").expect("outbound"));
    let h = hop(format!("127.0.0.1:{port}"), false);
    for i in 0..3 {
        let r = deliver(
            &o,
            message(&format!("m{i}\r\n")),
            vec![group(h.clone(), &["ok@b.test"])],
        )
        .await;
        assert_eq!(
            kinds(&r[0]),
            vec![OutcomeKind::Delivered],
            "message {i}: {:?}",
            r[0]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.messages.lock().expect("lock").len(), 3);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
}

/// docs/examples/smarthost.toml is read by both parsers (its password file swapped for one
/// that exists here).
#[test]
fn the_smarthost_example_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("relay.pass");
    std::fs::write(&pass, "secret\n").expect("write");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/smarthost.toml");
    let text = std::fs::read_to_string(path)
        .expect("example")
        .replace("/etc/cursus/relay.pass", &pass.display().to_string());
    let config = cursusd::config::Config::parse(&text, "smarthost.toml", dir.path())
        .expect("the daemon's parser takes it");
    let auth = config
        .outbound
        .auth_for("smtp.provider.example")
        .expect("credentials");
    assert_eq!(auth.password, "secret");
    assert!(!auth.without_tls);
    cursus_route::RoutingConfig::parse(&text, "smarthost.toml").expect("routing takes it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_recipients_go_in_further_transactions() {
    let (port, seen) = tcp_server(Behaviour {
        max_rcpts: 2,
        ..Behaviour::default()
    })
    .await;
    let o = Arc::new(Outbound::new(settings(), "client.test").expect("outbound"));
    let rcpts = ["a@b.test", "bad@b.test", "c@b.test", "d@b.test", "e@b.test"];
    let r = deliver(
        &o,
        message("x\r\n"),
        vec![group(hop(format!("127.0.0.1:{port}"), false), &rcpts)],
    )
    .await;
    assert_eq!(
        kinds(&r[0]),
        vec![
            OutcomeKind::Delivered,
            OutcomeKind::Permanent,
            OutcomeKind::Delivered,
            OutcomeKind::Delivered,
            OutcomeKind::Delivered
        ],
        "{:?}",
        r[0]
    );
    // a+c, then d+e: two transactions on one connection.
    let messages = seen.messages.lock().expect("lock");
    assert_eq!(messages.len(), 2);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}
