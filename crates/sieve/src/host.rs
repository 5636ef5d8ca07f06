//! The host: everything evaluation needs from the world (mailboxes, included scripts,
//! duplicate and vacation memory, the clock, environment items) behind one trait.
//!
//! The interpreter trusts the host's answers but not its scripts: included sources are
//! compiled and checked like any other. Every method has a conservative default so a host
//! implements only what it supports; a host error becomes a runtime error (implicit keep).

use crate::date::DateTime;

/// Where an included script lives (RFC 6609 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScriptLocation {
    /// `:personal` (the default): the user's own scripts.
    Personal,
    /// `:global`: administrator scripts.
    Global,
}

/// What the evaluator asks of the world.
pub trait Host {
    /// Whether `mailbox` exists (mailbox extension, RFC 5490 §3.1).
    fn mailbox_exists(&mut self, mailbox: &str) -> bool {
        let _ = mailbox;
        mailbox.eq_ignore_ascii_case("INBOX")
    }

    /// Whether a mailbox with all the special-use flags exists (RFC 8579); `mailbox`
    /// narrows the check to that mailbox.
    fn special_use_exists(&mut self, mailbox: Option<&str>, uses: &[String]) -> bool {
        let _ = (mailbox, uses);
        false
    }

    /// The source of an included script, `Ok(None)` when it does not exist.
    fn load_script(
        &mut self,
        location: ScriptLocation,
        name: &str,
    ) -> Result<Option<String>, String> {
        let _ = (location, name);
        Ok(None)
    }

    /// Whether the duplicate tracking `key` (handle and id) was seen and still is
    /// within its period (RFC 7352). The evaluator calls [`Host::duplicate_mark`] after.
    fn duplicate_seen(&mut self, key: &str) -> bool {
        let _ = key;
        false
    }

    /// Record `key` as seen for `seconds` (or refresh it, when `last`).
    fn duplicate_mark(&mut self, key: &str, seconds: u64, last: bool) {
        let _ = (key, seconds, last);
    }

    /// Whether a vacation response was sent to `sender` for `handle` within the period
    /// (RFC 5230 §4.2). Recording the response is up to the host after it sends it.
    fn vacation_responded(&mut self, handle: &str, sender: &str) -> bool {
        let _ = (handle, sender);
        false
    }

    /// The current time and local zone.
    fn now(&mut self) -> DateTime {
        DateTime {
            timestamp: 0,
            offset: 0,
        }
    }

    /// An environment item (RFC 5183 §4): domain, host, location, name, phase,
    /// remote-host, remote-ip, version, and vendor items.
    fn environment(&mut self, name: &str) -> Option<String> {
        match name {
            "name" => Some("Cursus Sieve".into()),
            "version" => Some(env!("CARGO_PKG_VERSION").into()),
            "location" => Some("MDA".into()),
            "phase" => Some("during".into()),
            _ => None,
        }
    }

    /// A metadata annotation (RFC 5490): of `mailbox`, or of the server when `None`.
    fn metadata(&mut self, mailbox: Option<&str>, name: &str) -> Option<String> {
        let _ = (mailbox, name);
        None
    }

    /// Run an external program (vnd.dovecot.pipe/filter/execute) and return its
    /// standard output; `Err` when it is unknown, refused, fails or times out.
    fn run_program(
        &mut self,
        request: &crate::program::ProgramRequest<'_>,
    ) -> Result<Vec<u8>, String> {
        Err(format!(
            "program '{}' cannot be run: external programs are not supported",
            request.name
        ))
    }

    /// A debug message from `debug_log`.
    fn debug_log(&mut self, message: &str) {
        let _ = message;
    }
}

/// A host that knows nothing: only INBOX exists, nothing is remembered.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullHost;

impl Host for NullHost {}
