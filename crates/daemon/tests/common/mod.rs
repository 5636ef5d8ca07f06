//! What the daemon's end-to-end tests share: starting cursusd on a configuration in a
//! temporary directory, stopping it when the test ends, the control socket, and waiting.
//! As root the daemon runs in system mode (it becomes the `cursus` user, which
//! scripts/install-test-deps.sh creates); otherwise in single-user mode.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// A running cursusd, killed when dropped.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `config` to DIR/cursus.toml, starts cursusd with its data in DIR/data and its log
/// in DIR/log, and returns once it answers on `port` and its control socket exists.
pub fn start(dir: &Path, port: u16, config: &str) -> Daemon {
    let path = dir.join("cursus.toml");
    std::fs::write(&path, config).expect("config");
    let log = std::fs::File::create(dir.join("log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_cursusd"))
        .arg("-c")
        .arg(&path)
        .arg("-d")
        .arg(dir.join("data"))
        .env("HOME", dir)
        .stderr(log)
        .spawn()
        .expect("cursusd starts");
    let daemon = Daemon(child);
    wait_for("cursusd to start", dir, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && dir.join("data/control.sock").exists()
    });
    daemon
}

/// One command on the control socket; its answer line.
pub fn control(dir: &Path, line: &str) -> String {
    let stream = UnixStream::connect(dir.join("data/control.sock")).expect("control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    (&stream)
        .write_all(format!("{line}\n").as_bytes())
        .expect("write");
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .expect("answer");
    answer.trim_end().to_string()
}

/// Waits up to 20 s for `f`; on timeout fails with the daemon's log.
pub fn wait_for(what: &str, dir: &Path, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
