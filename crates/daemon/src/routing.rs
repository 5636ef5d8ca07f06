//! What the daemon asks of routing, as a trait: verify a recipient at RCPT time, and route
//! it to deliveries. The routers themselves (aliases, forward, localuser, virtual, ...) live
//! in cursus-route; `router_adapter.rs` plugs them in.
//!
//! Trusts the routers' answers. Pure interface; no I/O here.

use cursus_lda::Destination;
use cursus_mail::{Outcome, Sender};

/// The answer at RCPT time.
#[derive(Debug, Clone)]
pub enum Verified {
    /// A local recipient the routers accept.
    Local,
    /// A domain this host does not handle: relaying.
    Remote,
    /// Refused: unknown user (5.1.1) or a router's refusal.
    Refused(Outcome),
    /// A lookup failed: try again later (4xx).
    Deferred(Outcome),
}

/// One delivery a recipient expands to.
#[derive(Debug, Clone)]
pub enum Routed {
    Local {
        /// The address this delivery is for (after aliases).
        address: String,
        /// The local user the delivery runs as.
        user: String,
        destination: Destination,
        /// The address extension (`joe+lists` gives `lists`).
        extension: Option<String>,
        router: String,
        transport: String,
    },
    Remote {
        address: String,
        router: String,
        transport: String,
        /// Where the transport takes it.
        next_hop: NextHop,
    },
    Failed {
        address: String,
        router: String,
        outcome: Outcome,
    },
}

/// Where a remote delivery goes: the transport's protocol and the hosts (or the MX hosts
/// of a domain). Deliveries with the same next hop share transactions and connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    /// LMTP (a mail store) rather than SMTP.
    pub lmtp: bool,
    /// Host names, IP literals or `unix:/path` sockets, in order; empty: the MX hosts of
    /// `domain`.
    pub hosts: Vec<String>,
    pub port: u16,
    /// The recipient domain whose MX hosts to use; empty when `hosts` are given.
    pub domain: String,
}

/// Routing as the daemon uses it.
pub trait Routes: Send + Sync + 'static {
    fn verify(&self, recipient: &str, sender: &Sender) -> Verified;
    /// Whether the recipient's domain is one of the local domains (mail for any other
    /// domain is relayed, and verified at RCPT only with `verify_remote_recipients`).
    fn in_local_domain(&self, recipient: &str) -> bool;
    /// Whether some router (not only the verification ones) takes the recipient's domain:
    /// asked when no verification router accepted an address of another domain, to tell an
    /// unknown address from a domain nothing here routes.
    fn routes_domain(&self, recipient: &str) -> bool;
    /// Every delivery `recipient` expands to (aliases and forwards expanded in memory).
    /// A temporary failure of routing itself is `Err` (the recipient is deferred).
    fn route(&self, recipient: &str, sender: &Sender) -> Result<Vec<Routed>, Outcome>;
}
