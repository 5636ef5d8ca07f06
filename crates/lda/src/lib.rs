//! cursus-lda: the privileged local delivery agent's foundations.
//!
//! The destination policy (what may be delivered where, as whom) and the binary
//! request/answer frames spoken between cursusd and cursus-lda; neither does I/O. The
//! filter (`filter.rs`) runs the user's Sieve script in the child that has become the
//! user and answers with decisions as data. The service that reads sockets, switches users
//! and opens mailboxes builds on them.
//! Trusts nothing it is handed: policy text, requests and frames are all checked here, and
//! every check's documentation names the attack it stops. Fails with typed errors; never
//! panics on input.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod command;
pub mod destination;
pub mod filter;
pub mod policy;
pub mod protocol;
pub mod service;
pub mod store;
pub mod walk;

pub use cli::Args;
pub use destination::{Destination, MailPath, MailboxKind, PathError};
pub use filter::run_filter;
pub use policy::{Decision, Policy, Refusal, Request, check};
