//! cursus-mail: the mail types every Cursus program shares.
//!
//! Pure: no I/O, no unsafe code, no panics on input. Parsers here take bytes that may come
//! from anyone on the Internet and return typed values or `None`.

#![forbid(unsafe_code)]

pub mod address;
pub mod aliases;
pub mod diagnostic;
pub mod dsn;
pub mod forward;
pub mod fromline;
pub mod header;
pub mod status;
pub mod submission;

pub use address::Sender;
pub use status::{EnhancedStatus, ExitCode, Outcome, OutcomeKind, codes};
