//! cursus-lda: the privileged local delivery agent's pure foundations.
//!
//! The destination policy (what may be delivered where, as whom) and the binary
//! request/answer frames spoken between cursusd and cursus-lda. Neither module does I/O:
//! the service that reads sockets, switches users and opens mailboxes builds on them.
//! Two modules do read files: `forward` (a user's ~/.forward, opened without following
//! symlinks and checked after opening) and `generate` (`policy generate`, which reads the
//! aliases file and users' .forward files with the same checks).
//! Trusts nothing it is handed: policy text, requests and frames are all checked here, and
//! every check's documentation names the attack it stops. Fails with typed errors; never
//! panics on input.

#![forbid(unsafe_code)]

pub mod cli;
pub mod destination;
pub mod forward;
pub mod generate;
pub mod policy;
pub mod protocol;

pub use cli::Args;
pub use destination::{Destination, MailPath, MailboxKind, PathError};
pub use policy::{Decision, Policy, Refusal, Request, check};
