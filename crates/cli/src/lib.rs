//! cursus-cli: the `cursus` administration and user tool, as a library so that tests and the
//! man page generator share the argument definitions and the report formats with the binary.
//!
//! Trusts nothing the user passes (scripts, messages, addresses, configurations); the
//! Sieve interpreter bounds what they can cost. Subcommands return text and a status; only `main` prints and
//! exits.

#![forbid(unsafe_code)]

pub mod address_test;
pub mod bench;
pub mod check;
pub mod cli;
pub mod host;
pub mod queue_control;
pub mod queue_list;
pub mod report;
pub mod retry_test;
pub mod sendmail;
pub mod sieve_test;

pub use cli::Cli;
