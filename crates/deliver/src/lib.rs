//! cursus-deliver: deliver one message to one local mailbox as the recipient.
//!
//! The library behind the `cursus-deliver` front and the `cursus-deliver-full` program
//! (cursus-front says which one does what), so tests and the LDA can drive a delivery without
//! a process. Trusts the system configuration and the user database;
//! treats argv, environment and message as hostile; runs the user's and the administrator's
//! Sieve scripts when there are any. Every delivery ends in an [`cursus_mail::Outcome`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod delivery;
pub mod destination;
pub mod disposition;
pub mod filter;
pub use cursus_mailbox::input;
pub mod response;
pub mod sendmail;
pub mod sieve_host;
pub mod user;
pub mod vacation;

pub use cli::Args;
pub use delivery::{Env, run};
