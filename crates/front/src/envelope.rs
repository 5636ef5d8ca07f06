//! The envelope of one delivery and the trace fields it puts in front of the message:
//! shared by the front and cursus-deliver-full (`delivery.rs`), so both store the same
//! bytes and answer a loop the same way.
//!
//! Trusts nothing: arguments, environment and header all come from outside.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use cursus_mail::address::strip_brackets;
use cursus_mail::header::{trace_prefix, trace_state};
use cursus_mail::{ExitCode, Outcome, Sender, codes};

/// The envelope of this delivery, from arguments, then environment, then the message.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub sender: Sender,
    pub original_recipient: String,
    pub final_recipient: String,
}

/// What the command line says about the envelope (`-f`, `-a`, `-r`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvelopeArgs<'a> {
    pub sender: Option<&'a str>,
    pub original_recipient: Option<&'a str>,
    pub final_recipient: Option<&'a str>,
}

impl Envelope {
    /// Arguments first, then SENDER, ORIGINAL_RECIPIENT and RECIPIENT from `getenv`, then
    /// the message's `From ` line for the sender and `recipient_name` (with this host's
    /// name, asked of `hostname` only then, when it has no domain) for the final recipient.
    pub fn gather(
        args: &EnvelopeArgs<'_>,
        getenv: &dyn Fn(&str) -> Option<String>,
        from_line_sender: Option<&str>,
        recipient_name: &str,
        hostname: &dyn Fn() -> String,
    ) -> Self {
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let sender = args
            .sender
            .map(str::to_string)
            .or_else(|| getenv("SENDER"))
            .or_else(|| from_line_sender.map(str::to_string))
            .map_or(Sender::Null, |s| Sender::parse(&s));
        let original = nonempty(args.original_recipient.map(str::to_string))
            .or_else(|| nonempty(getenv("ORIGINAL_RECIPIENT")));
        let final_rcpt = nonempty(args.final_recipient.map(str::to_string))
            .or_else(|| nonempty(getenv("RECIPIENT")))
            .or_else(|| original.clone())
            .unwrap_or_else(|| {
                if recipient_name.contains('@') {
                    recipient_name.to_string()
                } else {
                    format!("{recipient_name}@{}", hostname())
                }
            });
        let final_recipient = strip_brackets(&final_rcpt).to_string();
        let original_recipient = original.map_or_else(
            || final_recipient.clone(),
            |o| strip_brackets(&o).to_string(),
        );
        Envelope {
            sender,
            original_recipient,
            final_recipient,
        }
    }

    /// The Delivered-To loop check (5.4.6, exit 65), then the Return-Path and Delivered-To
    /// fields to put in front of `header` (none the MTA already put there for this
    /// delivery), with the empty line a message that `starts_with_body` needs after them.
    pub fn trace(&self, header: &[u8], starts_with_body: bool) -> Result<Vec<u8>, Outcome> {
        let state = trace_state(header, Some(&self.final_recipient));
        if state.looped {
            return Err(Outcome::permanent(
                codes::ROUTING_LOOP,
                ExitCode::DataErr,
                format!("mail forwarding loop for {}", self.final_recipient),
            ));
        }
        let mut prefix = trace_prefix(
            &state,
            &self.sender.return_path(),
            Some(&self.final_recipient),
        );
        if starts_with_body {
            prefix.push(b'\n');
        }
        Ok(prefix)
    }
}

/// The host name as the recipient's domain: `localhost` when there is none.
pub fn host_or_localhost(raw: Vec<u8>) -> String {
    String::from_utf8(raw)
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// An empty message is refused (5.6.0, exit 65).
pub fn empty_message() -> Outcome {
    Outcome::permanent(codes::MEDIA_ERROR, ExitCode::DataErr, "empty message")
}

/// A set-user-ID or set-group-ID installation is refused before anything else (5.7.0,
/// exit 77): it would run a user's request with an installation's privileges.
pub fn setuid_refusal() -> Outcome {
    Outcome::permanent(
        codes::SECURITY,
        ExitCode::NoPerm,
        "cursus-deliver must not be installed set-user-ID or set-group-ID; the MTA runs it as the recipient",
    )
}
