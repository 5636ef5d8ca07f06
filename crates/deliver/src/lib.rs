//! cursus-deliver: deliver one message to one local mailbox as the recipient.
//!
//! The library behind the `cursus-deliver` binary, so tests and the LDA can drive a
//! delivery without a process. Trusts the system configuration and the user database;
//! treats argv, environment and message as hostile. Every delivery ends in an
//! [`cursus_mail::Outcome`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod delivery;
pub mod destination;
pub mod input;
pub mod user;

pub use cli::Args;
pub use delivery::{Env, run};
