//! Delivering to an allow-listed command: the program is executed directly (never through
//! a shell) as the user, with the message on stdin, the standard MDA environment and
//! nothing else, a time limit, and its exit status mapped through sysexits as Postfix's
//! pipe(8) and local(8) do.
//!
//! Runs in the delivery child after it became the user and after the policy allowed the
//! exact program and arguments. Trusts the program (the administrator listed it); trusts
//! nothing it prints. Never fails: every path ends in an [`Outcome`].
//!
//! Attacks stopped:
//! - Shell injection through an argument or the envelope: no shell is ever involved; argv
//!   is passed as separate strings (and `policy.rs` refuses metacharacters as well).
//! - The MTA's or the LDA's environment leaking into the user's program (`LD_PRELOAD`,
//!   `IFS`, credentials in variables): the environment is cleared and rebuilt from a fixed
//!   list with values from the envelope and the user database.
//! - A command that never exits, or forks a child that keeps the output pipe open, holding
//!   the delivery slot for ever: a time limit, then SIGKILL to the command's whole process
//!   group; the delivery is temporary.
//! - A command flooding output into the root service's memory or logs: only the first
//!   [`OUTPUT_KEPT`] bytes are kept, the rest is read and dropped (the answer says so).
//! - A command forging log lines or bounce text with its output (a newline followed by a
//!   fake `status=sent` line, terminal escapes, a bidi override hiding text): the output
//!   reaches the answer through [`escape_output`], one line of printable ASCII where line
//!   ends read `\n`, other control and non-ASCII bytes `\xNN`, and `\` itself `\\`.
//! - Descriptors of the LDA (the MTA connection, the queue file) reaching the program: all
//!   are close-on-exec; the program sees only stdin, stdout and stderr.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cursus_mail::{EnhancedStatus, ExitCode, Outcome, codes};
use cursus_mailbox::Message;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::destination::MailPath;
use crate::protocol::Envelope;

/// Bytes of the command's output kept for the answer.
pub const OUTPUT_KEPT: usize = 4096;

/// A command delivery.
#[derive(Debug)]
pub struct CommandJob<'a> {
    pub program: &'a MailPath,
    pub args: &'a [String],
    pub user: &'a str,
    pub home: &'a str,
    pub envelope: &'a Envelope,
    pub message: &'a Message,
    pub timeout: Duration,
}

/// The environment a delivered-to program sees (Postfix local(8)'s names, which procmail,
/// maildrop and cursus-deliver read).
pub fn environment(job: &CommandJob<'_>) -> Vec<(&'static str, String)> {
    let recipient = &job.envelope.final_recipient;
    let (local, domain) = match recipient.rsplit_once('@') {
        Some((l, d)) => (l.to_string(), d.to_string()),
        None => (recipient.clone(), String::new()),
    };
    let mut env = vec![
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("HOME", job.home.to_string()),
        ("USER", job.user.to_string()),
        ("LOGNAME", job.user.to_string()),
        ("SHELL", "/bin/sh".to_string()),
        ("SENDER", job.envelope.sender.clone().unwrap_or_default()),
        ("RECIPIENT", recipient.clone()),
        (
            "ORIGINAL_RECIPIENT",
            job.envelope.original_recipient.clone(),
        ),
        ("LOCAL", local),
        ("DOMAIN", domain),
    ];
    if let Some(ext) = &job.envelope.extension {
        env.push(("EXTENSION", ext.clone()));
    }
    env
}

/// Runs the command and maps its end to an outcome.
pub fn run(job: &CommandJob<'_>) -> Outcome {
    let (mut reader, writer) = match io::pipe() {
        Ok(p) => p,
        Err(e) => return Outcome::temporary(codes::SYSTEM_STATUS, format!("pipe: {e}")),
    };
    let stderr = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return Outcome::temporary(codes::SYSTEM_STATUS, format!("pipe: {e}")),
    };
    let mut child = match Command::new(job.program.as_str())
        .args(job.args)
        .env_clear()
        .envs(environment(job))
        .current_dir(job.home)
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(stderr)
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Outcome::temporary(
                codes::SYSTEM_STATUS,
                format!("cannot run {}: {e}", job.program),
            );
        }
    };
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + job.timeout;
    let mut stdin = child.stdin.take();
    let output = std::thread::scope(|scope| {
        if let Some(mut input) = stdin.take() {
            // The command may exit without reading everything (EPIPE): that is its choice,
            // judged by its exit status, so write errors are not delivery errors.
            scope.spawn(move || {
                let _ = job.message.write_to(&mut input);
                let _ = input.flush();
            });
        }
        collect_output(&mut reader, deadline)
    });
    let timed_out = output.is_none();
    if timed_out {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    }
    let status = child.wait();
    let output = output.unwrap_or_default();
    if timed_out {
        return Outcome::temporary(
            EnhancedStatus::new(4, 3, 0),
            format!(
                "{} did not finish within {} s",
                job.program,
                job.timeout.as_secs()
            ),
        );
    }
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => outcome_for_exit(job.program.as_str(), code, &output),
            (None, Some(sig)) => with_full_text(
                Outcome::temporary(EnhancedStatus::new(4, 3, 0), ""),
                with_output(
                    format!("{} was killed by signal {sig}", job.program),
                    &output.text(),
                ),
            ),
            (None, None) => Outcome::temporary(codes::SYSTEM_STATUS, "command ended oddly"),
        },
        Err(e) => Outcome::temporary(codes::SYSTEM_STATUS, format!("wait: {e}")),
    }
}

/// What a command printed: the first [`OUTPUT_KEPT`] bytes of its stdout and stderr
/// (one pipe, in the order written), and whether it printed more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub kept: Vec<u8>,
    pub more: bool,
}

impl Output {
    pub fn new(kept: &[u8], more: bool) -> Output {
        Output {
            kept: kept.to_vec(),
            more,
        }
    }

    /// The kept output as one escaped line (see [`escape_output`]), blank lines and spaces
    /// around it trimmed, with a note when more was dropped.
    pub fn text(&self) -> String {
        let trimmed = self.kept.trim_ascii();
        let mut text = escape_output(trimmed);
        if self.more {
            text.push_str(&format!(" [output after {OUTPUT_KEPT} bytes dropped]"));
        }
        text
    }
}

/// Reads the pipe until every writer closed it or the deadline passes (`None`). Keeps the
/// first [`OUTPUT_KEPT`] bytes and notes whether there was more.
fn collect_output(reader: &mut io::PipeReader, deadline: Instant) -> Option<Output> {
    let mut out = Output::default();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ms = u16::try_from(left.as_millis().min(10_000)).unwrap_or(10_000);
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Some(out),
        }
        match reader.read(&mut chunk) {
            Ok(0) => return Some(out),
            Ok(n) => {
                let room = OUTPUT_KEPT.saturating_sub(out.kept.len());
                out.kept.extend_from_slice(&chunk[..n.min(room)]);
                out.more |= n > room;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Some(out),
        }
    }
}

/// A command's output as one line of printable ASCII, for answers, logs and bounces:
/// printable ASCII stays, `\` becomes `\\`, line feed, carriage return and tab become
/// `\n`, `\r`, `\t`, and every other byte (control characters, DEL, and each byte of
/// non-ASCII text) becomes `\xNN`. Nothing a command prints can start a new log line, move
/// a terminal's cursor, reorder text with a bidi control, or break a bounce's line.
pub fn escape_output(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => text.push_str("\\\\"),
            b'\n' => text.push_str("\\n"),
            b'\r' => text.push_str("\\r"),
            b'\t' => text.push_str("\\t"),
            0x20..=0x7e => text.push(char::from(b)),
            _ => text.push_str(&format!("\\x{b:02x}")),
        }
    }
    text
}

fn with_output(text: String, output: &str) -> String {
    if output.is_empty() {
        text
    } else {
        format!("{text}: {output}")
    }
}

/// Maps an exit code as Postfix's sys_exits table does (mda-interface §2), with one
/// difference: temporary is only 71 and 75. Output starting with an enhanced status code of
/// the right class overrides the code's status (Postfix ≥ 2.3). The text is the status
/// first (`PROGRAM exited CODE (MEANING)`), then the kept output, escaped.
pub fn outcome_for_exit(program: &str, code: i32, output: &Output) -> Outcome {
    if code == 0 {
        return Outcome::delivered(format!("delivered to command {program}"));
    }
    let (status, meaning, temporary) = match code {
        64 => ((5, 3, 0), "command line usage error", false),
        65 => ((5, 6, 0), "data format error", false),
        66 => ((5, 3, 0), "cannot open input", false),
        67 => ((5, 1, 1), "user unknown", false),
        68 => ((5, 1, 2), "host name unknown", false),
        69 => ((5, 3, 0), "service unavailable", false),
        70 => ((5, 3, 0), "internal software error", false),
        71 => ((4, 3, 0), "system resource problem", true),
        72 => ((5, 3, 0), "critical OS file missing", false),
        73 => ((5, 2, 0), "cannot create output file", false),
        74 => ((5, 3, 0), "input/output error", false),
        75 => ((4, 3, 0), "temporary failure", true),
        76 => ((5, 5, 0), "remote error in protocol", false),
        77 => ((5, 7, 0), "permission denied", false),
        78 => ((5, 3, 5), "local configuration error", false),
        _ => ((5, 3, 0), "unknown mail system error", false),
    };
    let mut status = EnhancedStatus::new(status.0, status.1, status.2);
    let mut detail = output.text();
    if let Some((first, rest)) = detail.split_once(' ')
        && let Some(given) = EnhancedStatus::parse(first)
        && (given.class() == 4) == temporary
    {
        status = given;
        detail = rest.to_string();
    }
    let text = with_output(format!("{program} exited {code} ({meaning})"), &detail);
    let outcome = if temporary {
        Outcome::temporary(status, text.clone())
    } else {
        let exit = if code == 67 {
            ExitCode::NoUser
        } else {
            ExitCode::NoPerm
        };
        Outcome::permanent(status, exit, text.clone())
    };
    with_full_text(outcome, text)
}

/// The outcome with `text` in full. `Outcome`'s constructors cut text to one short line for
/// bounces (cursus-mail's `one_line`); the answer carries the command's kept output whole,
/// which is one line of printable ASCII already ([`escape_output`]). cursusd cuts it again
/// for its own log and bounces; cursus-lda's log line and `cursus-lda request` show it all.
fn with_full_text(mut outcome: Outcome, text: String) -> Outcome {
    debug_assert!(text.bytes().all(|b| !b.is_ascii_control()));
    outcome.text = text;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use cursus_mail::OutcomeKind;

    fn out(text: &str) -> Output {
        Output::new(text.as_bytes(), false)
    }

    #[test]
    fn exit_codes_map_like_postfix() {
        let cases = [
            (0, OutcomeKind::Delivered, "2.0.0"),
            (75, OutcomeKind::Temporary, "4.3.0"),
            (71, OutcomeKind::Temporary, "4.3.0"),
            (67, OutcomeKind::Permanent, "5.1.1"),
            (77, OutcomeKind::Permanent, "5.7.0"),
            (78, OutcomeKind::Permanent, "5.3.5"),
            (1, OutcomeKind::Permanent, "5.3.0"),
            (100, OutcomeKind::Permanent, "5.3.0"),
        ];
        for (code, kind, status) in cases {
            let o = outcome_for_exit("/usr/bin/x", code, &Output::default());
            assert_eq!(o.kind, kind, "exit {code}");
            assert_eq!(o.status.to_string(), status, "exit {code}");
        }
    }

    #[test]
    fn an_enhanced_status_in_the_output_refines_the_code() {
        let o = outcome_for_exit("/usr/bin/x", 77, &out("5.2.2 mailbox full"));
        assert_eq!(o.status.to_string(), "5.2.2");
        assert!(o.text.ends_with("mailbox full"), "{}", o.text);
        // A class that contradicts the exit code is not believed.
        let o = outcome_for_exit("/usr/bin/x", 75, &out("5.1.1 nope"));
        assert_eq!(o.status.to_string(), "4.3.0");
    }

    #[test]
    fn output_is_escaped_into_one_printable_line() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain text", "plain text"),
            (b"a\nstatus=sent", "a\\nstatus=sent"),
            (b"cr\r\nlf", "cr\\r\\nlf"),
            (b"tab\there", "tab\\there"),
            (b"back\\slash", "back\\\\slash"),
            (b"\x1b[31mred", "\\x1b[31mred"),
            (b"nul\x00del\x7f", "nul\\x00del\\x7f"),
            ("bidi \u{202e}x".as_bytes(), "bidi \\xe2\\x80\\xaex"),
            (b"\xff\xfe", "\\xff\\xfe"),
        ];
        for (input, want) in cases {
            let got = escape_output(input);
            assert_eq!(got, *want, "{input:?}");
            assert!(got.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{got:?}");
        }
    }

    #[test]
    fn the_answer_keeps_the_status_first_then_all_kept_output() {
        let mut printed = b"\n\n4.2.1 try later\nsecond line\n".to_vec();
        printed.extend(std::iter::repeat_n(b'x', OUTPUT_KEPT - printed.len()));
        let o = outcome_for_exit("/usr/bin/x", 75, &Output::new(&printed, true));
        assert_eq!(o.status.to_string(), "4.2.1");
        assert!(
            o.text.starts_with(
                "/usr/bin/x exited 75 (temporary failure): try later\\nsecond line\\nxxx"
            ),
            "{}",
            o.text
        );
        assert!(
            o.text
                .ends_with(&format!("xxx [output after {OUTPUT_KEPT} bytes dropped]")),
            "{}",
            o.text
        );
        assert!(!o.text.chars().any(char::is_control));
        // The answer frame carries all of it.
        let answer = crate::protocol::Answer::Outcome {
            kind: o.kind,
            status: o.status,
            text: o.text.clone(),
        };
        let bytes = crate::protocol::encode_answer(&answer).expect("fits a frame");
        assert!(matches!(
            crate::protocol::decode_answer(&bytes),
            Ok(crate::protocol::Decoded::Frame { value, .. }) if value == answer
        ));
    }

    #[test]
    fn the_longest_escaped_output_fits_an_answer() {
        let o = outcome_for_exit(
            &format!("/{}", "p".repeat(crate::protocol::MAX_STRING - 1)),
            1,
            &Output::new(&[0u8; OUTPUT_KEPT], true),
        );
        assert!(
            o.text.len() <= crate::protocol::MAX_TEXT,
            "{}",
            o.text.len()
        );
        let answer = crate::protocol::Answer::Outcome {
            kind: o.kind,
            status: o.status,
            text: o.text,
        };
        crate::protocol::encode_answer(&answer).expect("fits a frame");
    }
}
