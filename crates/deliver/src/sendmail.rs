//! Handing a message to the MTA: the configured sendmail-compatible program, run as
//! `PROGRAM [ARGS] -i -f SENDER -- RECIPIENT...` with the message on its standard input.
//!
//! Trusts the program named by the administrator (system file or `-o`; never the user's
//! file). Does not trust the addresses: they come from the envelope and from Sieve scripts.
//! Fails with a [`SendError`] (cannot start, refused address, nonzero exit, killed, timed
//! out); the caller decides whether that fails the delivery.
//!
//! Attacks stopped:
//! - No shell ever sees an address (argv only), so `a@b;rm -rf ~` is just a bad address.
//! - `--` ends option processing and addresses starting with `-` are refused outright, so
//!   a recipient or sender such as `-oQ/tmp` or `-C/tmp/evil.cf` never becomes an option
//!   (Postfix sendmail(1) SECURITY: "system-arguments -- user-arguments").
//! - Addresses with control characters or spaces are refused (header and argument
//!   injection into MTAs that re-parse them).
//! - The child gets a fixed environment, no inherited descriptors beyond its pipes, and a
//!   time limit; its output never reaches our stdout or stderr, which belong to the MTA.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long the program may take to accept one message.
const TIME_LIMIT: Duration = Duration::from_secs(120);
/// Most bytes of the program's error output kept for the log line.
const STDERR_KEPT: usize = 512;

/// A sendmail-compatible program.
#[derive(Debug, Clone)]
pub struct Sendmail {
    argv: Vec<String>,
    time_limit: Duration,
}

/// Why a message could not be handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// An address we will not put on a command line.
    BadAddress(String),
    /// The program could not be started or fed.
    Io(String),
    /// The program ended unsuccessfully: its exit status and first line of error output.
    Failed(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::BadAddress(a) => write!(f, "refusing address {a:?}"),
            SendError::Io(e) => f.write_str(e),
            SendError::Failed(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for SendError {}

/// An envelope address fit for argv: non-empty, no leading `-`, no whitespace or control
/// characters, at most 512 bytes.
pub fn usable_address(address: &str) -> bool {
    !address.is_empty()
        && address.len() <= 512
        && !address.starts_with('-')
        && !address.chars().any(|c| c.is_control() || c.is_whitespace())
}

impl Sendmail {
    /// `argv` is the configured program and its fixed arguments.
    pub fn new(argv: Vec<String>) -> Sendmail {
        Sendmail {
            argv,
            time_limit: TIME_LIMIT,
        }
    }

    /// Sends the bytes `write` produces from `sender` (`None`: the null sender, passed as
    /// `-f <>` as Dovecot does; Postfix's sendmail queues that with an empty sender) to
    /// `recipients`.
    pub fn send(
        &self,
        sender: Option<&str>,
        recipients: &[String],
        write: &(dyn Fn(&mut dyn Write) -> io::Result<()> + Sync),
    ) -> Result<(), SendError> {
        let Some(program) = self.argv.first() else {
            return Err(SendError::Io("no sendmail program configured".into()));
        };
        if recipients.is_empty() {
            return Err(SendError::BadAddress(String::new()));
        }
        for a in recipients.iter().map(String::as_str).chain(sender) {
            if !usable_address(a) {
                return Err(SendError::BadAddress(a.to_string()));
            }
        }
        let mut cmd = Command::new(program);
        cmd.args(&self.argv[1..])
            .args(["-i", "-f", sender.unwrap_or("<>"), "--"])
            .args(recipients)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so a time-out kills whatever it started too.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| SendError::Io(format!("cannot run {program}: {e}")))?;
        let errors = read_errors(child.stderr.take());
        let stdin = child.stdin.take();
        let (fed, status) = std::thread::scope(|scope| {
            let writer = scope.spawn(move || match stdin {
                Some(mut stdin) => {
                    let mut out = io::BufWriter::new(&mut stdin);
                    write(&mut out).and_then(|()| out.flush())
                }
                None => Err(io::Error::other("no pipe to the program")),
            });
            // Killing the group on time-out closes the pipe, which ends a blocked writer.
            let status = wait_limited(&mut child, self.time_limit);
            let fed = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("writer panicked")));
            (fed, status)
        });
        let first_line = errors
            .recv_timeout(Duration::from_secs(2))
            .map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        match status {
            Ok(s) if s.success() => match fed {
                Ok(()) => Ok(()),
                // It exited 0 without reading everything: it did not take the message.
                Err(e) => Err(SendError::Io(format!("writing to {program}: {e}"))),
            },
            Ok(s) => Err(SendError::Failed(format!(
                "{program} {}{first_line}",
                describe(s)
            ))),
            Err(e) => Err(SendError::Failed(format!("{program}: {e}{first_line}"))),
        }
    }
}

/// Collects the first [`STDERR_KEPT`] bytes of the program's error output on a detached
/// thread (a grandchild that keeps the pipe open must not hold up the delivery).
fn read_errors(stderr: Option<std::process::ChildStderr>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut err) = stderr {
            let mut buf = [0u8; 4096];
            loop {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = STDERR_KEPT.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
        }
        let _ = tx.send(kept);
    });
    rx
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "failed".to_string(),
    }
}

/// Waits for the child, killing its process group past `limit`.
fn wait_limited(child: &mut std::process::Child, limit: Duration) -> io::Result<ExitStatus> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() >= limit {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {} seconds", limit.as_secs()),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &std::path::Path, body: &str) -> String {
        let p = dir.join("sendmail");
        // Written by a child (install), never through a descriptor of this threaded
        // process: another test's fork could inherit it and make exec fail (ETXTBSY).
        std::fs::write(dir.join("sendmail.txt"), format!("#!/bin/sh\n{body}\n")).expect("write");
        let ok = std::process::Command::new("install")
            .arg("-m755")
            .arg(dir.join("sendmail.txt"))
            .arg(&p)
            .status();
        assert!(ok.expect("install").success());
        p.display().to_string()
    }

    fn bytes(data: &'static [u8]) -> impl Fn(&mut dyn Write) -> io::Result<()> + Sync {
        move |w: &mut dyn Write| w.write_all(data)
    }

    #[test]
    fn argv_and_stdin_reach_the_program() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let prog = script(
            dir.path(),
            &format!(
                "for a in \"$@\"; do echo \"[$a]\"; done > {0}.argv; cat > {0}.msg",
                out.display()
            ),
        );
        let s = Sendmail::new(vec![prog, "-oi".into()]);
        s.send(
            None,
            &["a@example.org".into()],
            &bytes(b"Subject: x\n\nhi\n"),
        )
        .expect("sent");
        let argv = std::fs::read_to_string(dir.path().join("out.argv")).expect("argv");
        assert_eq!(argv, "[-oi]\n[-i]\n[-f]\n[<>]\n[--]\n[a@example.org]\n");
        let msg = std::fs::read(dir.path().join("out.msg")).expect("msg");
        assert_eq!(msg, b"Subject: x\n\nhi\n");
    }

    #[test]
    fn failures_are_reported_with_the_first_error_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prog = script(
            dir.path(),
            "cat >/dev/null; echo 'queue file write error' >&2; exit 75",
        );
        let e = Sendmail::new(vec![prog])
            .send(
                Some("s@example.org"),
                &["a@example.org".into()],
                &bytes(b"x\n"),
            )
            .expect_err("fails");
        assert!(
            e.to_string()
                .contains("exited with status 75: queue file write error"),
            "{e}"
        );
        let e = Sendmail::new(vec!["/nonexistent/sendmail".into()])
            .send(None, &["a@example.org".into()], &bytes(b"x\n"))
            .expect_err("fails");
        assert!(matches!(e, SendError::Io(_)), "{e}");
    }

    #[test]
    fn hostile_addresses_never_reach_argv() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("ran");
        let prog = script(dir.path(), &format!("touch {}", marker.display()));
        let s = Sendmail::new(vec![prog]);
        for bad in ["-oQ/tmp", "a b@c", "a@b\nBcc: x@y", "", "-C/tmp/x.cf"] {
            let e = s
                .send(None, &[bad.to_string()], &bytes(b"x\n"))
                .expect_err(bad);
            assert!(matches!(e, SendError::BadAddress(_)), "{bad:?}: {e}");
            let e = s
                .send(Some(bad), &["a@example.org".into()], &bytes(b"x\n"))
                .expect_err(bad);
            assert!(matches!(e, SendError::BadAddress(_)), "{bad:?}: {e}");
        }
        assert!(!marker.exists());
    }

    #[test]
    fn a_hung_program_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prog = script(dir.path(), "cat >/dev/null; sleep 30");
        let mut s = Sendmail::new(vec![prog]);
        s.time_limit = Duration::from_millis(300);
        let start = Instant::now();
        let e = s
            .send(None, &["a@example.org".into()], &bytes(b"x\n"))
            .expect_err("times out");
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
