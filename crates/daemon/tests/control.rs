//! The control socket end to end: a message to an unreachable host stays queued; `hold`,
//! `flush`, `release` and `delete` on the control socket change it; malformed commands get
//! an error and change nothing; a local user other than root and the daemon's own cannot
//! use the socket (the attack: any account holding or deleting other people's queued mail).
//! Needs python3 for the SMTP client; skipped with a note without it.

mod common;
use common::{Daemon, control, free_port, have, wait_for};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// cursusd relaying remote.test to a port where nobody listens.
fn start(dir: &Path, port: u16, dead_port: u16) -> Daemon {
    common::start(
        dir,
        port,
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n\
             [routing]\nlocal_domains = [\"localhost\"]\n\
             [[router]]\nname = \"unreachable\"\ndriver = \"manualroute\"\n\
             domains = [\"remote.test\"]\nhosts = [\"127.0.0.1\"]\nport = {dead_port}\n\
             transport = \"remote\"\n\
             [[transport]]\nname = \"remote\"\ndriver = \"smtp\"\n"
        ),
    )
}

/// Sends one message over SMTP with Python's smtplib; the queue id from the 250 reply.
fn send(port: u16, to: &str) -> String {
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port})\n\
         s.ehlo('client.test')\n\
         s.mail('sender@localhost')\n\
         s.rcpt('{to}')\n\
         code, text = s.data(b'Subject: control test\\r\\n\\r\\nbody\\r\\n')\n\
         print(code, text.decode())\n\
         s.quit()\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.starts_with("250"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace()
        .last()
        .expect("queue id in the reply")
        .to_string()
}

fn journal(dir: &Path, id: &str) -> Option<PathBuf> {
    let queue = dir.join("data/queue");
    for bucket in std::fs::read_dir(&queue).ok()?.flatten() {
        let p = bucket.path().join(format!("{id}.jnl"));
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// Deferrals of `id` the daemon has logged.
fn attempts(dir: &Path, id: &str) -> usize {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("{id}: to=")) && l.contains("status=deferred"))
        .count()
}

#[test]
fn hold_release_flush_delete_through_the_control_socket() {
    if !have("python3") {
        eprintln!("skipped: needs python3");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (port, dead) = (free_port(), free_port());
    let _daemon = start(dir, port, dead);

    assert_eq!(control(dir, "ping"), "ok cursusd");
    let id = send(port, "someone@remote.test");
    let jnl = journal(dir, &id).expect("the message is queued");
    // The first attempt is deferred (nobody listens on the dead port).
    wait_for("the first attempt", dir, || attempts(dir, &id) == 1);

    // Malformed commands change nothing.
    assert!(control(dir, "hold").starts_with("error"), "hold without id");
    assert!(control(dir, "hold ../../etc/passwd").starts_with("error"));
    assert!(control(dir, "frobnicate").starts_with("error unknown command"));
    assert!(control(dir, "delete 0000000000000000000Z").starts_with("error"));
    assert!(journal(dir, &id).is_some());

    let held = control(dir, &format!("hold {id}"));
    assert!(held.starts_with("ok hold"), "{held}");
    let size_held = std::fs::metadata(&jnl).expect("journal").len();
    // A held message is not tried, even when every message is flushed.
    assert!(control(dir, "flush").starts_with("ok flush: 0 message"));
    let flushed = control(dir, &format!("flush {id}"));
    assert!(flushed.starts_with("ok flush: 1"), "{flushed}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::metadata(&jnl).expect("journal").len(), size_held);

    // Released, it is tried at once (another record).
    let released = control(dir, &format!("release {id}"));
    assert!(released.starts_with("ok release"), "{released}");
    wait_for("the attempt after release", dir, || attempts(dir, &id) == 2);
    assert!(std::fs::metadata(&jnl).expect("journal").len() > size_held);

    // Another local user cannot reach the socket (or is refused by its uid).
    if nix::unistd::geteuid().is_root() && have("setpriv") {
        let sock = dir.join("data/control.sock");
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c"])
            .arg(format!(
                "import socket\n\
                 s = socket.socket(socket.AF_UNIX)\n\
                 try:\n    s.connect('{}')\n    s.sendall(b'delete {id}\\n')\n    print(s.recv(100))\n\
                 except OSError as e:\n    print('refused', e)\n",
                sock.display()
            ))
            .output()
            .expect("setpriv runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("ok"),
            "nobody used the control socket: {text}"
        );
        assert!(journal(dir, &id).is_some(), "nobody deleted a message");
    }

    let deleted = control(dir, &format!("delete {id}"));
    assert!(deleted.starts_with("ok delete"), "{deleted}");
    wait_for("the message to leave the queue", dir, || {
        journal(dir, &id).is_none()
    });
}
