//! cursus-route: where each recipient's mail goes. Routers tried in order (aliases, the
//! user's .forward, local users, virtual tables, manual relays, MX lookup), each with
//! conditions and a transport; redirects expanded in memory into a final list of typed
//! deliveries, failures and the trace of every decision (for `cursus address test`).
//!
//! Synchronous and without privilege: everything that touches the world (the user
//! database, a user's .forward, `:include:` files, lookup tables) goes through a trait, so
//! the daemon supplies its own (the LDA reads .forward as the user) and tests supply maps.
//! Trusts the configuration it was built from (already validated, see [`config`]) and
//! nothing else: addresses come from SMTP clients, alias and table values from files that
//! may be wrong, .forward entries from users. Fails with values: a routing problem is a
//! [`Failure`] with an enhanced status (temporary ones defer, never fall through to the next
//! router); a configuration problem is a [`ConfigError`] with `file:line:col`.
//!
//! Attacks stopped, each documented where it is checked: redirect loops and fan-out bombs
//! ([`router`]), file and command targets from anywhere but aliases and .forward ([`router`]),
//! local parts climbing out of a templated path ([`transport`]), regular expressions that
//! match more than the administrator wrote ([`pattern`]).

#![forbid(unsafe_code)]

pub mod aliases;
pub mod config;
pub mod forward;
pub mod pattern;
pub mod retry;
pub mod routed;
pub mod router;
pub mod table;
pub mod transport;
pub mod user;

use std::fmt;

pub use aliases::{FsIncludes, IncludeFile, IncludeSource};
pub use config::{ConfigError, RouterConfig, RoutingConfig};
pub use forward::{ForwardSource, HomeForwards, MapForwards};
pub use routed::{
    Authority, Delivery, Failure, Hop, Remote, Routed, Step, Summary, Target, Trace, Verdict,
};
pub use router::{Mode, Router, World};
pub use table::{FlatFile, MapTable, SqliteTable, Table};
pub use transport::{Transport, TransportDriver};
pub use user::{MapUsers, SystemUsers, User, UserDb};

/// A lookup that could not be answered now (a file unreadable, a database locked, NSS
/// unreachable): the mail waits and is routed again later (4.3.0), it never falls through
/// to the next router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempError(pub String);

impl TempError {
    pub fn new(why: impl Into<String>) -> Self {
        TempError(why.into())
    }
}

impl fmt::Display for TempError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TempError {}
