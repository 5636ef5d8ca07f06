//! Notices end to end: a recipient still deferred past a configured age gets its sender a
//! delay notice (once), and an unknown local user's non-delivery notice carries the text of
//! the administrator's script, which gets the address as one argument. The notices travel
//! like any mail: here to a small SMTP sink standing in for the sender's server.

mod common;
use common::{Daemon, control, free_port, wait_for};

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use std::path::Path;

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An SMTP server that accepts everything and keeps each message's text (its EHLO
/// reply offers only 8BITMIME).
fn sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let (port, seen, _) = sink_with(b"250-sink.test\r\n250 8BITMIME\r\n");
    (port, seen)
}

/// A sink answering EHLO with `ehlo`; also keeps every command line.
#[allow(clippy::type_complexity)]
fn sink_with(ehlo: &'static [u8]) -> (u16, Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let commands = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let heard = commands.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            let heard = heard.clone();
            std::thread::spawn(move || {
                let mut out = stream.try_clone().expect("clone");
                let mut lines = BufReader::new(stream);
                let _ = out.write_all(b"220 sink.test ESMTP\r\n");
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    heard
                        .lock()
                        .expect("lock")
                        .push(line.trim_end().to_string());
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => ehlo,
                        "DATA" => {
                            let _ = out.write_all(b"354 go on\r\n");
                            let mut text = String::new();
                            loop {
                                line.clear();
                                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                text.push_str(&line);
                            }
                            kept.lock().expect("lock").push(text);
                            b"250 2.0.0 kept\r\n"
                        }
                        "QUIT" => {
                            let _ = out.write_all(b"221 bye\r\n");
                            return;
                        }
                        _ => b"250 2.0.0 ok\r\n",
                    };
                    if out.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen, commands)
}

fn start(dir: &Path, port: u16, dead: u16, sink: u16) -> Daemon {
    start_with(dir, port, dead, sink, dead)
}

/// `dsn_sink`: where mail for dsn.test goes.
fn start_with(dir: &Path, port: u16, dead: u16, sink: u16, dsn_sink: u16) -> Daemon {
    let script = dir.join("explain");
    // Through install(1): a writable descriptor of this threaded process could leak into
    // another test's fork and make the exec fail with ETXTBSY.
    let text = dir.join("explain.txt");
    std::fs::write(
        &text,
        "#!/bin/sh\nprintf 'Nobody called %s here; write to sales@localhost.\\n' \"$1\"\n",
    )
    .expect("script");
    let ok = std::process::Command::new("install")
        .arg("-m755")
        .arg(&text)
        .arg(&script)
        .status();
    assert!(ok.expect("install").success());
    common::start(
        dir,
        port,
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:{port}\"]\nverify_local_recipients = false\n\
         [bounce]\ndelay_warnings = [\"1s\"]\nunknown_user_script = \"{}\"\n\
         [routing]\nlocal_domains = [\"localhost\"]\n\
         [[router]]\nname = \"unreachable\"\ndriver = \"manualroute\"\n\
         domains = [\"remote.test\"]\nhosts = [\"127.0.0.1\"]\nport = {dead}\n\
         transport = \"remote\"\n\
         [[router]]\nname = \"senders\"\ndriver = \"manualroute\"\n\
         domains = [\"sender.test\"]\nhosts = [\"127.0.0.1\"]\nport = {sink}\n\
         transport = \"remote\"\n\
         [[router]]\nname = \"dsnhost\"\ndriver = \"manualroute\"\n\
         domains = [\"dsn.test\"]\nhosts = [\"127.0.0.1\"]\nport = {dsn_sink}\n\
         transport = \"remote\"\n\
         [[transport]]\nname = \"remote\"\ndriver = \"smtp\"\n",
            script.display()
        ),
    )
}

/// One message over raw SMTP; the queue id from the 250 reply.
fn send(port: u16, to: &str) -> String {
    send_with(port, to, "")
}

/// With RCPT parameters (` NOTIFY=SUCCESS`).
fn send_with(port: u16, to: &str, params: &str) -> String {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut out = stream.try_clone().expect("clone");
    let mut lines = BufReader::new(stream);
    let mut reply = || {
        loop {
            let mut line = String::new();
            lines.read_line(&mut line).expect("reply");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    };
    reply();
    for command in [
        "EHLO client.test".to_string(),
        "MAIL FROM:<ann@sender.test>".to_string(),
        format!("RCPT TO:<{to}>{params}"),
        "DATA".to_string(),
    ] {
        out.write_all(format!("{command}\r\n").as_bytes())
            .expect("write");
        let r = reply();
        assert!(r.starts_with('2') || r.starts_with('3'), "{command}: {r}");
    }
    out.write_all(b"Subject: the quarterly figures\r\n\r\nbody\r\n.\r\n")
        .expect("write");
    let r = reply();
    assert!(r.starts_with("250"), "{r}");
    let _ = out.write_all(b"QUIT\r\n");
    r.split_whitespace().last().expect("id").to_string()
}

#[test]
fn delay_notice_once_and_unknown_user_text_from_the_script() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (sink_port, seen) = sink();
    let (port, dead) = (free_port(), free_port());
    let _daemon = start(dir, port, dead, sink_port);

    // An unknown local user: the bounce reaches the sender with the script's words.
    send(port, "nobody-here@localhost");
    wait_for("the bounce", dir, || !seen.lock().expect("lock").is_empty());
    let bounce = seen.lock().expect("lock").remove(0);
    assert!(
        bounce.contains("Subject: Undelivered Mail Returned to Sender"),
        "{bounce}"
    );
    assert!(
        bounce.contains("Nobody called nobody-here@localhost here; write to sales@localhost."),
        "{bounce}"
    );
    assert!(
        bounce.contains("Subject: the quarterly figures"),
        "{bounce}"
    );
    assert!(bounce.contains("Status: 5.1.1"), "{bounce}");

    // A deferred recipient: no notice at the first attempt (age 0), one notice at the
    // first attempt after 1 s, and no second one after that.
    let id = send(port, "someone@remote.test");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(seen.lock().expect("lock").is_empty(), "a notice at age 0");
    assert!(control(dir, &format!("flush {id}")).starts_with("ok"));
    wait_for("the delay notice", dir, || {
        !seen.lock().expect("lock").is_empty()
    });
    let notice = seen.lock().expect("lock").remove(0);
    assert!(notice.contains("Subject: Delayed Mail"), "{notice}");
    assert!(notice.contains("Action: delayed"), "{notice}");
    assert!(notice.contains("<someone@remote.test>"), "{notice}");
    assert!(notice.contains("keeps trying until"), "{notice}");
    assert!(
        !notice.contains("\r\nbody\r\n"),
        "a delay notice returns the header only"
    );
    assert!(control(dir, &format!("flush {id}")).starts_with("ok"));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        seen.lock().expect("lock").is_empty(),
        "a second notice for the same age"
    );
}

/// RFC 3461 §4.2: a NOTIFY=SUCCESS recipient relayed to a server without DSN gets its
/// sender a "relayed" notice (the last word it will have); relayed to a server with DSN,
/// the request goes on in the RCPT command and no notice comes from here.
#[test]
fn success_notices_relayed_or_passed_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (sink_port, seen) = sink();
    let (dsn_port, dsn_seen, dsn_commands) =
        sink_with(b"250-dsn.test\r\n250-8BITMIME\r\n250 DSN\r\n");
    let (port, dead) = (free_port(), free_port());
    let _daemon = start_with(dir, port, dead, sink_port, dsn_port);

    // To a server without DSN: the message, then the sender's "relayed" notice.
    send_with(port, "bob@sender.test", " NOTIFY=SUCCESS");
    wait_for("the message and the notice", dir, || {
        seen.lock().expect("lock").len() >= 2
    });
    let texts = seen.lock().expect("lock").clone();
    let notice = texts
        .iter()
        .find(|t| t.contains("Subject: Successful Mail Delivery Report"))
        .unwrap_or_else(|| panic!("no notice in {texts:?}"));
    assert!(notice.contains("Action: relayed"), "{notice}");
    assert!(notice.contains("<bob@sender.test>"), "{notice}");
    assert!(
        notice.contains("does not send delivery receipts"),
        "{notice}"
    );
    seen.lock().expect("lock").clear();

    // To a server with DSN: NOTIFY goes on, and no notice comes from here.
    send_with(port, "carol@dsn.test", " NOTIFY=SUCCESS");
    wait_for("the message", dir, || {
        !dsn_seen.lock().expect("lock").is_empty()
    });
    let rcpt = dsn_commands
        .lock()
        .expect("lock")
        .iter()
        .find(|c| c.starts_with("RCPT"))
        .cloned()
        .expect("a RCPT command");
    assert!(rcpt.contains("NOTIFY=SUCCESS"), "{rcpt}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        seen.lock().expect("lock").is_empty(),
        "a notice for a recipient whose server took the request on"
    );
}
