//! `cursus sieve test`: compile a script, evaluate it against one message and envelope, and
//! report the actions in sieve-test(1)'s layout.
//!
//! Trusts nothing in the script or the message (the interpreter bounds both); trusts the
//! flags for the envelope and the mail store. Performs no I/O itself: the caller reads the
//! files and prints the [`TrialOutput`]. A compile or run-time failure is an output with a
//! failed status, never an error: at run time the message would be kept, and the report
//! says so.

use cursus_mail::address::Sender;
use cursus_mail::header;
use cursus_sieve::{Config, Envelope};

use crate::check::diagnostic;
use crate::cli::EnvelopeArgs;
use crate::host::CommandLineHost;
use crate::report;

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialStatus {
    /// The script ran; the report lists its actions.
    Success,
    /// The script did not compile; nothing ran.
    CompileFailed,
    /// The script failed while running; the message is kept.
    RuntimeFailed,
}

/// What a trial prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialOutput {
    /// The action report (empty when the script did not compile).
    pub stdout: String,
    /// Diagnostics, one per line.
    pub stderr: String,
    /// How it ended.
    pub status: TrialStatus,
}

/// The header section of `message`: up to the first empty line (LF or CRLF).
fn header_section(message: &[u8]) -> &[u8] {
    let mut end = 0;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line == b"\n" || line == b"\r\n" {
            break;
        }
        end += line.len();
    }
    message.get(..end).unwrap_or(message)
}

/// The first address in a header field value: the text in angle brackets, else the first
/// word.
fn first_address(value: &str) -> Option<String> {
    let inner = match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => value.get(open + 1..close)?,
        _ => value
            .split(|c: char| c == ',' || c.is_whitespace())
            .find(|w| !w.is_empty())?,
    };
    Some(inner.trim().to_string())
}

fn header_address(message: &[u8], name: &str) -> Option<String> {
    header::fields(header_section(message))
        .find(|f| f.is(name))
        .and_then(|f| first_address(&f.value_str()))
}

/// The envelope from the flags, with sieve-test(1)'s defaults from the message: the sender
/// from Return-Path, Sender or From, else sender@example.com; the recipient from Envelope-To
/// or To, else recipient@example.com.
pub fn envelope(args: &EnvelopeArgs, message: &[u8]) -> Envelope {
    let from = match &args.from {
        Some(f) => Sender::parse(f).address().unwrap_or("").to_string(),
        None => ["Return-Path", "Sender", "From"]
            .iter()
            .find_map(|name| header_address(message, name))
            .unwrap_or_else(|| "sender@example.com".into()),
    };
    let to = match &args.to {
        Some(t) => cursus_mail::address::strip_brackets(t).to_string(),
        None => ["Envelope-To", "To"]
            .iter()
            .find_map(|name| header_address(message, name))
            .unwrap_or_else(|| "recipient@example.com".into()),
    };
    Envelope {
        from,
        to,
        orig_to: args
            .orig_to
            .as_deref()
            .map(|a| cursus_mail::address::strip_brackets(a).to_string()),
        auth: None,
    }
}

/// Compiles `script` (named `script_name` in diagnostics) and evaluates it against
/// `message`.
pub fn run(
    script_name: &str,
    script: &[u8],
    message: &[u8],
    args: &EnvelopeArgs,
    config: &Config,
) -> TrialOutput {
    let mut stderr = String::new();
    let compiled = match cursus_sieve::compile(script, config) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors.0 {
                stderr.push_str(&diagnostic(script_name, "error", e));
                stderr.push('\n');
            }
            stderr.push_str(&format!("{script_name}: error: compile failed\n"));
            return TrialOutput {
                stdout: String::new(),
                stderr,
                status: TrialStatus::CompileFailed,
            };
        }
    };
    for w in &compiled.warnings {
        stderr.push_str(&diagnostic(script_name, "warning", w));
        stderr.push('\n');
    }
    let envelope = envelope(args, message);
    let mut host = CommandLineHost::new(args.mailbox_exists.clone());
    match cursus_sieve::evaluate(&compiled, config, &mut host, &envelope, message) {
        Ok(outcome) => TrialOutput {
            stdout: report::render(&outcome, &args.default_mailbox),
            stderr,
            status: TrialStatus::Success,
        },
        Err(e) => {
            let as_compile_error = cursus_sieve::CompileError::new(e.pos, e.message);
            stderr.push_str(&diagnostic(script_name, "error", &as_compile_error));
            stderr.push('\n');
            stderr.push_str(&format!(
                "{script_name}: error: evaluation failed; resolved with implicit keep\n"
            ));
            TrialOutput {
                stdout: report::render_failed(&args.default_mailbox),
                stderr,
                status: TrialStatus::RuntimeFailed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Return-Path: <bounce@lists.example.org>\r\n\
        From: Alice <alice@example.org>\r\n\
        To: bob@example.net, carol@example.net\r\n\
        Subject: hi\r\n\r\nbody\r\n";

    #[test]
    fn envelope_defaults_come_from_the_message() {
        let env = envelope(&EnvelopeArgs::default(), MESSAGE);
        assert_eq!(env.from, "bounce@lists.example.org");
        assert_eq!(env.to, "bob@example.net");
        assert_eq!(env.orig_to, None);
        let no_return_path = &MESSAGE[b"Return-Path: <bounce@lists.example.org>\r\n".len()..];
        assert_eq!(
            envelope(&EnvelopeArgs::default(), no_return_path).from,
            "alice@example.org"
        );
        assert_eq!(
            envelope(&EnvelopeArgs::default(), b"\r\nSubject: in the body\r\n").to,
            "recipient@example.com"
        );
        assert_eq!(
            envelope(&EnvelopeArgs::default(), b"\r\nSubject: in the body\r\n").from,
            "sender@example.com"
        );
    }

    #[test]
    fn envelope_flags_win_and_null_sender_is_empty() {
        let args = EnvelopeArgs {
            from: Some("<>".into()),
            to: Some("<me@example.net>".into()),
            orig_to: Some("alias@example.net".into()),
            ..EnvelopeArgs::default()
        };
        let env = envelope(&args, MESSAGE);
        assert_eq!(env.from, "");
        assert_eq!(env.to, "me@example.net");
        assert_eq!(env.orig_to.as_deref(), Some("alias@example.net"));
    }

    #[test]
    fn compile_failure_prints_positions_and_no_report() {
        let out = run(
            "s.sieve",
            b"if foo { stop; }\n",
            MESSAGE,
            &EnvelopeArgs::default(),
            &Config::default(),
        );
        assert_eq!(out.status, TrialStatus::CompileFailed);
        assert!(out.stdout.is_empty());
        assert!(out.stderr.starts_with("s.sieve:1:"), "{}", out.stderr);
    }
}
