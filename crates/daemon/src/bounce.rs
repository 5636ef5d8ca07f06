//! Delivery status notifications as the daemon sends them: non-delivery reports when
//! recipients fail, delay notices when a recipient is still deferred at a configured age
//! (`[bounce] delay_warnings`), and success reports for NOTIFY=SUCCESS; the first part
//! from the administrator's templates when given, and for unknown local users the text of
//! the administrator's script.
//!
//! Trusts the queue and the configuration. The script is the administrator's program: it
//! runs without a shell, with an empty environment but PATH, stdin closed, as the daemon's
//! user, for at most [`SCRIPT_SECONDS`], and only its first [`SCRIPT_OUTPUT`] bytes are used
//! (attack stopped: a recipient address crafted to inject shell commands or to make a
//! bounce huge; the address is one argument, never parsed by a shell).
//!
//! Never a bounce of a bounce: nothing is sent for a message from the null sender, and
//! every notice goes from the null sender.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cursus_mail::dsn::{self, Action, RecipientReport, Templates};
use cursus_mail::{EnhancedStatus, Sender};
use cursus_queue::{
    Envelope, Notify, Queue, QueueId, QueuedMessage, Recipient, RecipientState, Relay,
};
use jiff::Timestamp;

use crate::config::BounceSettings;
use crate::log;

/// The longest an unknown-user script may run.
pub const SCRIPT_SECONDS: u64 = 10;
/// The most bytes of its output used.
pub const SCRIPT_OUTPUT: usize = 4096;

/// What the engine needs to write notices.
#[derive(Debug, Clone, Default)]
pub struct Bounces {
    pub templates: Templates,
    pub unknown_user_script: Option<PathBuf>,
    /// Ages in seconds, ascending.
    pub delay_warnings: Vec<u64>,
    /// Local domains: a 5.1.1 there is an unknown local user.
    pub local_domains: Vec<String>,
    /// The retry rules, for the give-up time a delay notice announces.
    pub retry: Option<crate::retry::Rules>,
}

impl Bounces {
    /// Reads the templates the settings name (failed.txt, delayed.txt, delivered.txt in the
    /// directory; each optional) and checks their variables.
    pub fn load(settings: &BounceSettings) -> Result<Bounces, String> {
        let mut templates = Templates::default();
        if let Some(dir) = &settings.templates {
            if !dir.is_dir() {
                return Err(format!(
                    "bounce templates: {} is not a directory",
                    dir.display()
                ));
            }
            for (name, slot) in [
                ("failed.txt", &mut templates.failed),
                ("delayed.txt", &mut templates.delayed),
                ("delivered.txt", &mut templates.delivered),
            ] {
                let path = dir.join(name);
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        Templates::check(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                        *slot = Some(text);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
        }
        if let Some(script) = &settings.unknown_user_script {
            let meta = std::fs::metadata(script)
                .map_err(|e| format!("unknown_user_script {}: {e}", script.display()))?;
            if !meta.is_file() {
                return Err(format!(
                    "unknown_user_script {}: not a regular file",
                    script.display()
                ));
            }
        }
        Ok(Bounces {
            templates,
            unknown_user_script: settings.unknown_user_script.clone(),
            delay_warnings: settings.delay_warnings.clone(),
            local_domains: Vec::new(),
            retry: None,
        })
    }

    /// Whether a delay notice is due for a recipient deferred at `now` whose previous
    /// attempt was at `previous` (its arrival for the first): some configured age lies in
    /// (previous, now]. A crash between the notice and the outcome's record can repeat a
    /// notice, never lose mail.
    pub fn delay_due(&self, received: Timestamp, previous: Timestamp, now: Timestamp) -> bool {
        let age = |t: Timestamp| t.duration_since(received).as_secs();
        let (from, to) = (age(previous), age(now));
        self.delay_warnings.iter().any(|&w| {
            let w = i64::try_from(w).unwrap_or(i64::MAX);
            from < w && w <= to
        })
    }

    /// The script's explanation for an unknown local user, if a script is configured and
    /// it succeeds.
    pub fn explain_unknown(&self, address: &str) -> Option<String> {
        let script = self.unknown_user_script.as_ref()?;
        match run_script(script, address) {
            Ok(text) if !text.trim().is_empty() => Some(text),
            Ok(_) => None,
            Err(e) => {
                log::line(&format!(
                    "unknown_user_script {}: {e}; the built-in text is used",
                    script.display()
                ));
                None
            }
        }
    }
}

fn run_script(script: &Path, address: &str) -> Result<String, String> {
    let mut child = Command::new(script)
        .arg(address)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no output pipe")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout
            .by_ref()
            .take(SCRIPT_OUTPUT as u64)
            .read_to_end(&mut out);
        // Drain the rest so the script is not stopped by a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        out
    });
    let deadline = Instant::now() + Duration::from_secs(SCRIPT_SECONDS);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {SCRIPT_SECONDS}s: killed"));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Whether the sender asked to hear about delays for this recipient: NOTIFY=DELAY, or no
/// NOTIFY at all (RFC 3461 §4.1 leaves the default to the MTA; we warn).
pub fn wants_delay_notice(rcpt: &Recipient) -> bool {
    rcpt.notify.is_none_or(|n| n.contains(Notify::DELAY))
}

fn date(t: Timestamp) -> String {
    t.to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// One recipient's line for a notice, from its state in the queue.
pub fn report_for(
    bounces: &Bounces,
    message: &QueuedMessage,
    index: usize,
) -> Option<RecipientReport> {
    let state = message.recipients.get(index)?;
    let rcpt = message.envelope.recipients.get(index)?;
    let (action, status, text) = match state {
        RecipientState::Failed { status, text, .. } => (Action::Failed, *status, text.clone()),
        RecipientState::Delivered {
            status,
            text,
            relay,
            ..
        } => {
            let action = if *relay == Relay::WithoutDsn {
                Action::Relayed
            } else {
                Action::Delivered
            };
            (action, *status, text.clone())
        }
        RecipientState::Deferred { status, text, .. } => (Action::Delayed, *status, text.clone()),
        RecipientState::Pending => return None,
    };
    let remote = text.contains("(in reply to ");
    let unknown_local = action == Action::Failed
        && status == EnhancedStatus::new(5, 1, 1)
        && !remote
        && rcpt.address.rsplit_once('@').is_some_and(|(_, d)| {
            bounces
                .local_domains
                .iter()
                .any(|l| l.eq_ignore_ascii_case(d))
        });
    let (remote_mta, diagnostic) = match remote.then(|| split_remote(&text)).flatten() {
        Some((host, reply)) => (Some(host), reply),
        None => (None, text),
    };
    Some(RecipientReport {
        final_recipient: rcpt.address.clone(),
        original_recipient: rcpt.orcpt.clone(),
        action,
        status,
        diagnostic,
        remote_mta,
        explanation: if unknown_local {
            bounces.explain_unknown(&rcpt.address)
        } else {
            None
        },
    })
}

/// The SMTP client's outcome text, `host[address]:port: reply (in reply to COMMAND)`,
/// split into the host (for Remote-MTA) and the reply (for `Diagnostic-Code: smtp;`).
fn split_remote(text: &str) -> Option<(String, String)> {
    let (relay, reply) = text.split_once(": ")?;
    let (host, rest) = relay.split_once('[')?;
    if host.is_empty() || !rest.contains("]:") || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), reply.to_string()))
}

/// Builds the notice for `reports` about `message` and queues it from the null sender to
/// the message's sender; its queue id.
pub fn queue_notice(
    queue: &Queue,
    hostname: &str,
    bounces: &Bounces,
    message: &QueuedMessage,
    reports: &[RecipientReport],
    give_up: Option<Timestamp>,
) -> Result<QueueId, String> {
    let Some(to) = message.envelope.sender.address() else {
        return Err("no bounce of a bounce".to_string());
    };
    let mut original = Vec::new();
    if let Ok(mut f) = queue.open_message(message.id) {
        let _ = f
            .by_ref()
            .take(dsn::MAX_RETURNED as u64 + 1)
            .read_to_end(&mut original);
    }
    let delayed = reports.iter().all(|r| r.action == Action::Delayed);
    let unique = format!("{}.{}", message.id, if delayed { "delay" } else { "dsn" });
    let give_up = give_up.map(date);
    let body = dsn::build(&dsn::Report {
        reporting_mta: hostname,
        to,
        envid: message.envelope.envid.as_deref(),
        queue_id: &message.id.to_string(),
        arrival_date: &date(message.envelope.received),
        date: &date(Timestamp::now()),
        recipients: reports,
        original: &original,
        // A delay notice carries the header only: the message is still on its way.
        return_full: !delayed && message.envelope.ret == Some(cursus_queue::Ret::Full),
        unique: &unique,
        templates: Some(&bounces.templates),
        give_up: give_up.as_deref(),
    });
    let mut envelope = Envelope::new(Sender::Null, vec![Recipient::new(to)]);
    envelope.client.protocol = "local".to_string();
    queue
        .accept(&envelope, &body[..])
        .map_err(|e| e.to_string())
}

impl Bounces {
    /// When a recipient deferred with `outcome` will be given up, by the retry rule that
    /// applies: for the delay notice's "until".
    pub fn give_up(
        &self,
        envelope: &Envelope,
        rcpt: &Recipient,
        outcome: &cursus_mail::Outcome,
    ) -> Option<Timestamp> {
        self.retry
            .as_ref()?
            .give_up(envelope, &rcpt.address, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + secs).expect("time")
    }

    #[test]
    fn a_delay_notice_is_due_once_per_configured_age() {
        let b = Bounces {
            delay_warnings: vec![3600, 86_400],
            ..Bounces::default()
        };
        let r = at(0);
        assert!(!b.delay_due(r, at(0), at(300)));
        assert!(b.delay_due(r, at(3000), at(3600)));
        assert!(b.delay_due(r, at(3000), at(7200)));
        assert!(!b.delay_due(r, at(3600), at(7200)), "already told at 1 h");
        assert!(b.delay_due(r, at(80_000), at(90_000)));
        assert!(!Bounces::default().delay_due(r, at(0), at(1_000_000)));
    }

    #[test]
    fn the_script_gets_the_address_as_one_argument_and_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("explain");
        // Each version is written through install(1) so that no descriptor of this
        // threaded process can leak into another test's fork and make exec fail (ETXTBSY).
        let put = |body: &str| {
            let text = dir.path().join("explain.txt");
            std::fs::write(&text, body).expect("write");
            let ok = std::process::Command::new("install")
                .arg("-m755")
                .arg(&text)
                .arg(&script)
                .status();
            assert!(ok.expect("install").success());
        };
        put("#!/bin/sh\nprintf 'No one called %s works here.\\n' \"$1\"\n");
        let b = Bounces {
            unknown_user_script: Some(script.clone()),
            ..Bounces::default()
        };
        let text = b
            .explain_unknown("x$(touch /tmp/pwned)@example.org")
            .expect("text");
        assert_eq!(
            text,
            "No one called x$(touch /tmp/pwned)@example.org works here.\n"
        );
        // A failing script gives no text (the built-in explanation is used).
        put("#!/bin/sh\nexit 3\n");
        assert!(b.explain_unknown("a@example.org").is_none());
        // A huge output is cut.
        put("#!/bin/sh\nyes | head -c 100000\n");
        let text = b.explain_unknown("a@example.org").expect("text");
        assert_eq!(text.len(), SCRIPT_OUTPUT);
    }

    #[test]
    fn a_remote_reply_gives_remote_mta_and_an_smtp_diagnostic() {
        assert_eq!(
            split_remote(
                "mx.example.org[192.0.2.1]:25: 550 5.1.1 no such user (in reply to RCPT TO)"
            ),
            Some((
                "mx.example.org".to_string(),
                "550 5.1.1 no such user (in reply to RCPT TO)".to_string()
            ))
        );
        assert_eq!(split_remote("user unknown"), None);
        assert_eq!(split_remote("connect to x: refused"), None);
    }

    #[test]
    fn templates_are_checked_when_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("failed.txt"),
            "Sorry ${sender}: ${recipients}",
        )
        .expect("write");
        let settings = BounceSettings {
            templates: Some(dir.path().to_path_buf()),
            ..BounceSettings::default()
        };
        let b = Bounces::load(&settings).expect("loads");
        assert!(b.templates.failed.is_some() && b.templates.delayed.is_none());
        std::fs::write(dir.path().join("delayed.txt"), "Hi ${recipient}").expect("write");
        let e = Bounces::load(&settings).expect_err("unknown variable");
        assert!(
            e.contains("delayed.txt") && e.contains("${recipient}"),
            "{e}"
        );
    }
}
