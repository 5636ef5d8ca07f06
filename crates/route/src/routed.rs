//! What routing decided for one recipient: the final deliveries, the failures, and the
//! trace of every router tried for every address of the redirect tree (what `cursus
//! address test` prints, like `exim -bt`).
//!
//! Pure values; trusts nothing (they are built by [`crate::router`]). Never fails.
//! Attacks stopped: none here; the text rendered for a terminal escapes control characters
//! in addresses and file names (`{:?}`-style), so an address cannot rewrite the screen.

use std::fmt::Write as _;

use cursus_lda::Destination;
use cursus_mail::{EnhancedStatus, OutcomeKind};

/// Who asked for a delivery's destination, for the LDA policy to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// The transport's mailbox template, for the user a router found.
    Mailbox,
    /// A mailbox named by a virtual table.
    Table { router: String },
    /// A `/file` or `|command` in an aliases file.
    Aliases { file: String },
    /// A `/file` or `|command` in an include file named by an aliases file.
    Include { file: String, owner: u32 },
    /// A `/file` or `|command` in a user's .forward (or a file it includes).
    Forward { user: String },
}

impl Authority {
    fn describe(&self) -> String {
        match self {
            Authority::Mailbox => "the transport's mailbox".into(),
            Authority::Table { router } => format!("the table of router {router}"),
            Authority::Aliases { file } => format!("aliases file {file}"),
            Authority::Include { file, owner } => {
                format!("include file {file} (owner uid {owner})")
            }
            Authority::Forward { user } => format!("the .forward of {user}"),
        }
    }
}

/// Where remote mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// These hosts, in order.
    Hosts { hosts: Vec<String>, port: u16 },
    /// The MX hosts of the domain (looked up by the outbound transport).
    Mx { domain: String },
}

/// What a delivery does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Through cursus-lda: `destination` as `user`.
    Local {
        user: String,
        destination: Destination,
        authority: Authority,
    },
    Remote(Remote),
}

impl Target {
    pub fn describe(&self) -> String {
        match self {
            Target::Local {
                user,
                destination,
                authority,
            } => format!("{destination} as {user} (from {})", authority.describe()),
            Target::Remote(Remote::Hosts { hosts, port }) => {
                format!("hosts {} port {port}", hosts.join(", "))
            }
            Target::Remote(Remote::Mx { domain }) => format!("MX hosts of {domain}"),
        }
    }
}

/// One link of a redirect chain: `router` redirected `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub address: String,
    pub router: String,
}

/// A final delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The final address (after redirects).
    pub address: String,
    /// The recipient as given (qualified).
    pub original: String,
    /// The address extension, when the router stripped one.
    pub extension: Option<String>,
    pub transport: String,
    pub target: Target,
    /// The router that decided this delivery.
    pub router: String,
    /// The redirects from the original recipient to `address`.
    pub chain: Vec<Hop>,
}

/// An address that cannot be delivered (permanent) or not now (temporary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub address: String,
    pub original: String,
    pub kind: OutcomeKind,
    pub status: EnhancedStatus,
    pub reason: String,
    /// The redirects that led here, the deciding router last when one decided.
    pub chain: Vec<Hop>,
}

/// What one router did with one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its conditions did not hold (or it is not used in this mode).
    Skipped,
    /// Its driver had nothing for the address.
    Declined,
    /// It decided: a delivery or a redirect.
    Accepted,
    /// It decided the address fails.
    Failed,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Skipped => "skipped",
            Verdict::Declined => "declined",
            Verdict::Accepted => "accepted",
            Verdict::Failed => "failed",
        }
    }
}

/// One router tried for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub router: String,
    pub driver: &'static str,
    pub verdict: Verdict,
    pub why: String,
}

/// One node of the redirect tree: an address (or a file, command or include) with the
/// routers tried for it, what it expanded to, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    pub label: String,
    pub steps: Vec<Step>,
    pub children: Vec<Trace>,
    /// The last word for a leaf: a delivery, a failure, a loop.
    pub end: Option<String>,
}

/// The whole answer for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub recipient: String,
    pub deliveries: Vec<Delivery>,
    pub failures: Vec<Failure>,
    pub trace: Trace,
}

/// The summary of a [`Routed`]: what `cursus address test` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Every branch has a delivery.
    Routable,
    /// Something must wait (a temporary failure).
    Temporary,
    /// Something fails for good.
    Undeliverable,
}

impl Routed {
    /// Temporary if any failure is temporary, else undeliverable if any failed, else
    /// routable.
    pub fn summary(&self) -> Summary {
        if self
            .failures
            .iter()
            .any(|f| f.kind == OutcomeKind::Temporary)
        {
            Summary::Temporary
        } else if !self.failures.is_empty() {
            Summary::Undeliverable
        } else {
            Summary::Routable
        }
    }

    /// The report `cursus address test` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        render_trace(&self.trace, 0, &mut out);
        if !self.deliveries.is_empty() {
            out.push_str("deliveries:\n");
        }
        for d in &self.deliveries {
            let _ = writeln!(
                out,
                "  {} -> {} [router {}, transport {}]",
                escape(&d.address),
                escape(&d.target.describe()),
                d.router,
                d.transport
            );
            if let Some(ext) = &d.extension {
                let _ = writeln!(out, "    extension {}", escape(ext));
            }
            if !d.chain.is_empty() {
                let _ = writeln!(out, "    via {}", chain_text(&d.chain));
            }
        }
        if !self.failures.is_empty() {
            out.push_str("failures:\n");
        }
        for f in &self.failures {
            let kind = match f.kind {
                OutcomeKind::Temporary => "deferred",
                _ => "failed",
            };
            let _ = writeln!(
                out,
                "  {} {kind}: {} {}",
                escape(&f.address),
                f.status,
                escape(&f.reason)
            );
            if !f.chain.is_empty() {
                let _ = writeln!(out, "    via {}", chain_text(&f.chain));
            }
        }
        let summary = match self.summary() {
            Summary::Routable => "routable",
            Summary::Temporary => "deferred (temporary failure)",
            Summary::Undeliverable => "undeliverable",
        };
        let _ = writeln!(out, "result: {summary}");
        out
    }
}

fn chain_text(chain: &[Hop]) -> String {
    chain
        .iter()
        .map(|h| format!("{} ({})", escape(&h.address), h.router))
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn render_trace(t: &Trace, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}{}", escape(&t.label));
    for s in &t.steps {
        let _ = writeln!(
            out,
            "{pad}  router {} ({}): {}: {}",
            s.router,
            s.driver,
            s.verdict.word(),
            escape(&s.why)
        );
    }
    for c in &t.children {
        render_trace(c, depth + 1, out);
    }
    if let Some(end) = &t.end {
        let _ = writeln!(out, "{pad}  => {}", escape(end));
    }
}

/// Control characters shown as escapes.
fn escape(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars().flat_map(char::escape_default).collect()
    } else {
        text.to_string()
    }
}
