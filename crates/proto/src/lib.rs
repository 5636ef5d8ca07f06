//! cursus-proto: the server side of SMTP (RFC 5321) and LMTP (RFC 2033) as a state machine,
//! and the client side ([`Client`], client.rs: what cursusd's outbound transports drive).
//!
//! Pure: no I/O, no async runtime, no unsafe code. cursusd's listener reads bytes, hands them
//! to a [`Session`], writes the [`Reply`]s it gets back and decides on the [`Event`]s (MAIL,
//! RCPT, message start and end). Command and parameter syntax is parsed by smtp-proto; the
//! state machine, the DATA decoder and every limit are ours.
//!
//! Trusts: nothing from the client; the daemon for configuration and answers.
//! Fails: client errors become SMTP replies; daemon misuse is an [`AnswerError`].
//! Attacks stopped: SMTP smuggling (only CRLF.CRLF ends DATA, bare CR/LF refuses the
//! message), STARTTLS command injection, early talkers, resource exhaustion through
//! [`Limits`], reply injection. NOTES.md has the rules and the state table.
//!
//! ```
//! use cursus_proto::{Answer, Config, Event, Output, Protocol, Session};
//!
//! let mut s = Session::new(Config::new("mx.example", Protocol::Smtp));
//! let _greeting = s.greeting();
//! s.receive(b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n").unwrap();
//! while let Some(out) = s.poll() {
//!     match out {
//!         Output::Reply(reply) => { /* write reply.to_bytes() */ let _ = reply; }
//!         Output::Event(Event::Mail { .. }) => s.answer(Answer::Accept).unwrap(),
//!         Output::Event(_) => {}
//!     }
//! }
//! ```

#![forbid(unsafe_code)]

pub mod capabilities;
pub mod client;
pub mod content;
mod data;
pub mod limits;
pub mod reply;
pub mod session;
pub mod timeout;
pub mod transaction;

pub use client::{
    Action, Capabilities, Client, ClientConfig, ClientError, Credentials, EightBitRule,
    OutgoingMessage, OutgoingRecipient, ServerReply, TlsMode,
};
pub use cursus_mail::EnhancedStatus;
pub use limits::Limits;
pub use reply::Reply;
pub use session::{
    Abandon, Answer, AnswerError, Config, Disconnect, Event, InputError, Output, Protocol, Session,
    State,
};
pub use timeout::{Timeout, Timeouts};
pub use transaction::{Body, MailParams, Notify, RcptParams, Recipient, Ret, Sender, Transaction};
