//! STARTTLS end to end: cursusd with a certificate offers STARTTLS, a real TLS client
//! (Python's ssl) upgrades and delivers, commands pipelined in plaintext after STARTTLS are
//! never executed (the CVE-2011-0411 class), and SIGHUP reloads the certificate. Needs
//! `openssl` (to make a certificate) and `python3`; skipped with a note without them.

mod common;
use common::{Daemon, free_port, have};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn certificate(dir: &Path, cn: &str) {
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
}

fn start(dir: &Path, port: u16) -> Daemon {
    common::start(
        dir,
        port,
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n[tls]\ncertificate = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\n",
            dir.display()
        ),
    )
}

const CLIENT: &str = r#"
import smtplib, ssl, socket, sys
port = int(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", port)
s.ehlo()
assert s.has_extn("starttls"), "STARTTLS not offered"
s.starttls(context=ctx)
s.ehlo()
assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
s.sendmail("a@example.org", ["tls@localhost"], "Subject: over tls\r\n\r\nsecret\r\n")
s.quit()
# Plaintext commands pipelined after STARTTLS must be thrown away.
raw = socket.create_connection(("127.0.0.1", port))
f = raw.makefile("rb")
f.readline()
raw.sendall(b"EHLO x\r\n")
while True:
    line = f.readline()
    if line[3:4] == b" ": break
raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<injected@localhost>\r\n")
assert f.readline().startswith(b"220"), "no 220 to STARTTLS"
t = ctx.wrap_socket(raw, server_hostname="localhost")
tf = t.makefile("rb")
t.sendall(b"EHLO y\r\n")
while True:
    line = tf.readline()
    if line[3:4] == b" ": break
t.sendall(b"RCPT TO:<again@localhost>\r\n")
reply = tf.readline()
assert reply.startswith(b"503"), "pipelined MAIL survived the handshake: %r" % reply
t.sendall(b"QUIT\r\n")
print("ok")
"#;

#[test]
fn starttls_delivers_drops_pipelined_plaintext_and_reloads_on_sighup() {
    if !have("openssl") || !have("python3") {
        eprintln!("skipped: needs openssl and python3");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    certificate(dir.path(), "first.example");
    let port = free_port();
    let daemon = if nix::unistd::geteuid().is_root() {
        // Run cursusd as `nobody` in single-user mode.
        Command::new("chown")
            .args(["-R", "nobody"])
            .arg(dir.path())
            .status()
            .expect("chown");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let config = dir.path().join("cursus.toml");
        std::fs::write(
            &config,
            format!(
                "[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n[tls]\ncertificate = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\n",
                dir.path().display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        Command::new("chown")
            .args(["nobody"])
            .arg(dir.path().join("log"))
            .arg(&config)
            .status()
            .expect("chown");
        let child = Command::new("setpriv")
            .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_cursusd"))
            .arg("-c")
            .arg(&config)
            .arg("-d")
            .arg(dir.path().join("data"))
            .env("HOME", dir.path())
            .stderr(log)
            .spawn()
            .expect("cursusd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "cursusd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon(child)
    } else {
        start(dir.path(), port)
    };
    let out = Command::new("python3")
        .arg("-c")
        .arg(CLIENT)
        .arg(port.to_string())
        .output()
        .expect("python runs");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\n{}\nlog:\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Delivered, with the trace field saying ESMTPS, and nothing for the injected recipient.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mailbox = dir.path().join("data/mail/tls/Maildir/new");
    while std::fs::read_dir(&mailbox).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "not delivered; log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = std::fs::read_dir(&mailbox)
        .expect("dir")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    let text = std::fs::read_to_string(file).expect("read");
    assert!(text.contains("with ESMTPS"), "{text}");
    assert!(!dir.path().join("data/mail/injected").exists());
    // SIGHUP: a new certificate is loaded without a restart.
    certificate(dir.path(), "second.example");
    let _ = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(dir.path())
        .status();
    let pid = std::fs::read_to_string(dir.path().join("data/cursusd.pid")).expect("pid");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.trim().parse().expect("pid")),
        nix::sys::signal::Signal::SIGHUP,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        if log.contains("TLS certificate reloaded") {
            break;
        }
        assert!(Instant::now() < deadline, "no reload; log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(daemon);
}
