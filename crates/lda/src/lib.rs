//! cursus-lda: the privileged local delivery agent's foundations.
//!
//! The destination policy (what may be delivered where, as whom) and the binary
//! request/answer frames spoken between cursusd and cursus-lda (`policy`, `protocol`: no
//! I/O); the root service (`service`) that listens, checks peers and forks one child per
//! request; what that child does once it has become the user: a mailbox delivery
//! (`store`, `walk`), a command (`command`), the user's Sieve filter as data (`filter`), the
//! user's .forward as data (`forward`); the client library (`client`); and
//! `policy generate` (`generate`), which reads the aliases file and users' .forward files.
//! Trusts nothing it is handed: policy text, requests and frames are all checked here, and
//! every check's documentation names the attack it stops. Fails with typed errors; never
//! panics on input.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod command;
pub mod destination;
pub mod filter;
pub mod forward;
pub mod generate;
pub mod policy;
pub mod protocol;
pub mod service;
pub mod store;
pub mod walk;

pub use cli::Args;
pub use destination::{Destination, MailPath, MailboxKind, PathError};
pub use filter::run_filter;
pub use policy::{Decision, Policy, Refusal, Request, check};
