//! cursus-mail: the mail types every Cursus program shares.
//!
//! Pure: no I/O, no unsafe code, no panics on input. Parsers here take bytes that may come
//! from anyone on the Internet and return typed values or `None`.

#![forbid(unsafe_code)]
// No operating system here, so the no-libc front of cursus-deliver can use it too.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

/// What std's prelude would give: the allocating types and macros.
mod prelude {
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
    pub use alloc::{format, vec};
}

pub mod address;
pub mod aliases;
pub mod diagnostic;
pub mod dsn;
pub mod forward;
pub mod fromline;
pub mod header;
pub mod maildir_name;
pub mod split;
pub mod status;
pub mod submission;

pub use address::Sender;
pub use status::{EnhancedStatus, ExitCode, Outcome, OutcomeKind, codes};
