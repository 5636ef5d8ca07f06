//! Routing: one recipient through the configured routers, in order, redirects expanded in
//! memory (never re-injected), into the final deliveries and failures with a trace.
//!
//! The rules, in the order they apply to each address of the redirect tree:
//! 1. An address without a domain gets `qualify_domain`; the domain is folded to
//!    lowercase, the local part keeps its case (comparisons ignore it).
//! 2. Depth: a chain of more than `max_depth` redirects (aliases, includes and .forward
//!    files each count one) fails that branch with 5.4.6; a recipient that expands to more
//!    than `max_addresses` addresses gets one 5.4.6 failure and the rest of its tree is
//!    not visited (deliveries found before the limit stay).
//! 3. Loops: an address that appears again in its own redirect chain (compared without
//!    case) ends that branch without a delivery; the trace says so. Other branches go on
//!    (so `joe: joe, joe@elsewhere` in an aliases file delivers only to elsewhere: write
//!    `\joe` to keep a copy, as in a .forward). A recipient whose every branch ended this
//!    way fails with 5.4.6. An include file that includes itself ends the same way.
//! 4. Each router in order: skipped when its conditions do not hold, when it is not a
//!    verification router and we verify, or when it redirects and the address came from a
//!    `\user` target; otherwise its driver declines (the next router is tried), delivers,
//!    redirects or fails.
//! 5. A temporary error from the user database, a .forward, a file or a table defers the
//!    address (4.3.0; 4.3.5 for a broken table value) and stops there: it never falls
//!    through to the next router, which could send the mail somewhere else.
//! 6. No router accepts: 5.1.1 user unknown for a local domain, 5.4.4 unroutable for any
//!    other.
//! 7. Identical deliveries (same transport and destination, or same transport and address
//!    for remote ones) are made once.
//!
//! Trusts the validated configuration; trusts nothing in addresses, alias and table
//! values, include files or .forward entries. Fails only as [`Failure`] values.
//!
//! Attacks stopped: redirect loops and fan-out bombs (rules 2 and 3); `/file` and
//! `|command` targets from anywhere but an aliases file (and its includes) or a user's own
//! .forward (a virtual table or an address can only name mailboxes), each carrying the
//! [`Authority`] that asked for it and delivered as the alias `user` or the .forward's
//! owner, so the LDA policy judges who may write where; commands with shell syntax
//! (cursus-lda never runs a shell, so `|cmd > /tmp/x` would otherwise mean something
//! else) and relative programs; `~/` in an aliases file (it has no home).

use std::collections::HashSet;

use cursus_lda::protocol::ForwardEntry;
use cursus_lda::{Destination, MailPath};
use cursus_mail::aliases::Target as AliasTarget;
use cursus_mail::{EnhancedStatus, OutcomeKind, Sender, codes};

use crate::TempError;
use crate::aliases::{AliasFile, FsIncludes, IncludeSource};
use crate::config::{Driver, RouterConfig, RoutingConfig, TableSpec};
use crate::forward::{ForwardSource, HomeForwards};
use crate::routed::{
    Authority, Delivery, Failure, Hop, Remote, Routed, Step, Target, Trace, Verdict,
};
use crate::table::{FlatFile, SqliteTable, Table};
use crate::transport::{Expansion, MailboxTemplate, TransportDriver};
use crate::user::{SystemUsers, User, UserDb};

const TEMPORARY: EnhancedStatus = EnhancedStatus::new(4, 3, 0);
const BAD_SYNTAX: EnhancedStatus = EnhancedStatus::new(5, 1, 3);
const UNROUTABLE: EnhancedStatus = EnhancedStatus::new(5, 4, 4);

/// Characters that make a command line shell syntax rather than a program and arguments
/// (the list `cursus-lda policy generate` refuses too).
const SHELL_SYNTAX: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '*', '?', '[', ']', '{', '}', '!', '~', '\'', '"',
    '\\', '#', '=',
];

/// Everything routing reads from the world.
pub struct World {
    pub users: Box<dyn UserDb + Send + Sync>,
    pub forwards: Box<dyn ForwardSource + Send + Sync>,
    pub includes: Box<dyn IncludeSource + Send + Sync>,
}

impl World {
    /// NSS users, .forward files read directly, include files read as this process: for
    /// single-user mode and `cursus address test`.
    pub fn system() -> World {
        World {
            users: Box::new(SystemUsers),
            forwards: Box::new(HomeForwards),
            includes: Box::new(FsIncludes),
        }
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("World")
    }
}

/// Delivery routing, or verification at RCPT time (only routers with `verify = true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Deliver,
    Verify,
}

enum State {
    None,
    Aliases(AliasFile),
    Table(Box<dyn Table + Send + Sync>),
}

struct Built {
    config: RouterConfig,
    state: State,
}

/// The routers of one configuration, with their files and tables.
pub struct Router {
    config: RoutingConfig,
    world: World,
    routers: Vec<Built>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("source", &self.config.source)
            .field("routers", &self.routers.len())
            .finish()
    }
}

/// What a driver decided.
enum Decision {
    Decline(String),
    Deliver {
        target: Target,
        extension: Option<String>,
        why: String,
    },
    Redirect {
        items: Vec<Item>,
        why: String,
    },
    Fail {
        kind: OutcomeKind,
        status: EnhancedStatus,
        why: String,
    },
}

fn temporary(e: TempError) -> Decision {
    Decision::Fail {
        kind: OutcomeKind::Temporary,
        status: TEMPORARY,
        why: e.0,
    }
}

fn permanent(status: EnhancedStatus, why: impl Into<String>) -> Decision {
    Decision::Fail {
        kind: OutcomeKind::Permanent,
        status,
        why: why.into(),
    }
}

/// One thing a redirect produced.
#[derive(Debug, Clone)]
enum Item {
    /// An address to route from the first router.
    Address(String),
    /// `\user`: route without aliasing or forwarding.
    Local(String),
    /// A file or command: delivered as `user`, by the redirecting router's transport.
    Direct {
        label: String,
        result: Result<Destination, String>,
        user: String,
        authority: Authority,
    },
    /// More items in this file, read by the aliases include source or as `user`.
    Include {
        path: String,
        forward_user: Option<User>,
    },
}

/// A split address.
struct Address {
    /// `local@domain`, domain lowercased.
    full: String,
    local: String,
    domain: String,
}

impl Router {
    /// Builds the routers; no I/O (files and tables are read when used).
    pub fn new(config: RoutingConfig, world: World) -> Router {
        let routers = config
            .routers
            .iter()
            .map(|r| Built {
                config: r.clone(),
                state: match &r.driver {
                    Driver::Aliases { file, optional, .. } => {
                        State::Aliases(AliasFile::new(file.clone(), *optional))
                    }
                    Driver::Virtual { table } => State::Table(match table {
                        TableSpec::File(path) => Box::new(FlatFile::new(path.clone())),
                        TableSpec::Sqlite { path, query } => {
                            Box::new(SqliteTable::new(path.clone(), query.clone()))
                        }
                    }),
                    _ => State::None,
                },
            })
            .collect();
        Router {
            config,
            world,
            routers,
        }
    }

    /// Replaces the table of virtual router `name` (tests, other table kinds).
    pub fn with_table(mut self, name: &str, table: Box<dyn Table + Send + Sync>) -> Router {
        for r in &mut self.routers {
            if r.config.name == name {
                r.state = State::Table(table);
                return self;
            }
        }
        self
    }

    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    /// Reads every aliases file and table now; the problems found, one line each.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for r in &self.routers {
            let result = match &r.state {
                State::Aliases(a) => a.lookup("postmaster").map(|_| ()),
                State::Table(t) => t.check(),
                State::None => Ok(()),
            };
            if let Err(e) = result {
                problems.push(format!("router {}: {e}", r.config.name));
            }
        }
        problems
    }

    /// Routes `recipient` for delivery.
    pub fn route(&self, recipient: &str, sender: &Sender) -> Routed {
        self.route_in(recipient, sender, Mode::Deliver)
    }

    /// Routes `recipient` with the verification routers only (RCPT time).
    pub fn verify(&self, recipient: &str, sender: &Sender) -> Routed {
        self.route_in(recipient, sender, Mode::Verify)
    }

    pub fn route_in(&self, recipient: &str, sender: &Sender, mode: Mode) -> Routed {
        let original = self.qualify(cursus_mail::address::strip_brackets(recipient));
        let mut walk = Walk {
            router: self,
            sender: sender.address().unwrap_or("").to_string(),
            original: original.clone(),
            mode,
            deliveries: Vec::new(),
            failures: Vec::new(),
            seen_targets: HashSet::new(),
            addresses: 0,
            loops: 0,
        };
        let trace = walk.address(&original, false, &[], &[]);
        if walk.deliveries.is_empty() && walk.failures.is_empty() {
            let (status, why) = if walk.loops > 0 {
                (codes::ROUTING_LOOP, "every redirect of this address loops")
            } else {
                (codes::BAD_MAILBOX, "the address redirects to nothing")
            };
            walk.failures.push(Failure {
                address: original.clone(),
                original: original.clone(),
                kind: OutcomeKind::Permanent,
                status,
                reason: why.into(),
                chain: Vec::new(),
            });
        }
        Routed {
            recipient: original,
            deliveries: walk.deliveries,
            failures: walk.failures,
            trace,
        }
    }

    /// `local@domain` with the domain lowercased, or `local@qualify_domain`.
    fn qualify(&self, address: &str) -> String {
        match address.rfind('@') {
            Some(at) => format!("{}@{}", &address[..at], address[at + 1..].to_lowercase()),
            None => format!("{address}@{}", self.config.qualify_domain),
        }
    }

    fn is_local_domain(&self, domain: &str) -> bool {
        self.config.local_domains.iter().any(|d| d == domain)
    }

    /// Whether some router's domain condition takes the domain of `address` (a router
    /// without one takes every domain, except a virtual router, whose table decides): mail
    /// for the domain can be routed here, whatever its local parts. An address no router takes, in a domain none of them names, is
    /// unroutable rather than unknown.
    pub fn routes_domain(&self, address: &str) -> bool {
        let qualified = self.qualify(cursus_mail::address::strip_brackets(address));
        let Some((_, domain)) = qualified.rsplit_once('@') else {
            return false;
        };
        // A virtual router without `domains` takes only the addresses its table lists: it
        // names no domain by itself.
        self.routers
            .iter()
            .any(|b| match &b.config.conditions.domains {
                Some(d) => d.matches(domain),
                None => !matches!(b.config.driver, Driver::Virtual { .. }),
            })
    }

    /// Whether `address` (qualified with `qualify_domain` when it has no domain) is in one
    /// of the `local_domains`; mail for any other domain is relayed.
    pub fn in_local_domain(&self, address: &str) -> bool {
        let qualified = self.qualify(cursus_mail::address::strip_brackets(address));
        qualified
            .rsplit_once('@')
            .is_some_and(|(_, domain)| self.is_local_domain(domain))
    }
}

/// The state of routing one recipient.
struct Walk<'a> {
    router: &'a Router,
    sender: String,
    original: String,
    mode: Mode,
    deliveries: Vec<Delivery>,
    failures: Vec<Failure>,
    /// (transport, destination or address) already delivered.
    seen_targets: HashSet<(String, String)>,
    addresses: usize,
    loops: usize,
}

fn split(full: &str) -> Option<Address> {
    let at = full.rfind('@')?;
    let local = &full[..at];
    let domain = &full[at + 1..];
    if local.is_empty() || domain.is_empty() || full.chars().any(char::is_control) {
        return None;
    }
    Some(Address {
        full: full.to_string(),
        local: local.to_string(),
        domain: domain.to_string(),
    })
}

/// The local part without its extension, and the extension.
fn strip_extension<'l>(local: &'l str, separators: &str) -> (&'l str, Option<&'l str>) {
    match cursus_mail::address::extension(local, separators) {
        Some(ext) => (&local[..local.len() - ext.len() - 1], Some(ext)),
        None => (local, None),
    }
}

/// A `|command` target as a typed command destination.
fn command(text: &str) -> Result<Destination, String> {
    if text.contains(SHELL_SYNTAX) {
        return Err(format!(
            "command {text:?} uses shell syntax; cursus never runs a shell (name a program)"
        ));
    }
    let mut words = text.split_whitespace();
    let program = words.next().unwrap_or("");
    let program = MailPath::parse(program)
        .ok()
        .filter(|p| p.components().next().is_some())
        .ok_or_else(|| format!("command {text:?}: the program must be an absolute path"))?;
    Ok(Destination::Command {
        program,
        args: words.map(str::to_string).collect(),
    })
}

/// A `/file` target from an aliases file (`/dir/` is a maildir).
fn alias_file(text: &str) -> Result<Destination, String> {
    if text.starts_with("~/") {
        return Err(format!(
            "file {text:?}: `~/` means nothing in an aliases file"
        ));
    }
    let (path, maildir) = match text.strip_suffix('/') {
        Some(p) if !p.is_empty() => (p, true),
        _ => (text, false),
    };
    let path = MailPath::parse(path).map_err(|e| format!("file {text:?}: {e}"))?;
    Ok(if maildir {
        Destination::Maildir(path)
    } else {
        Destination::Mbox(path)
    })
}

impl Walk<'_> {
    fn fail(
        &mut self,
        address: &str,
        chain: &[Hop],
        kind: OutcomeKind,
        status: EnhancedStatus,
        why: &str,
    ) -> String {
        self.failures.push(Failure {
            address: address.to_string(),
            original: self.original.clone(),
            kind,
            status,
            reason: why.to_string(),
            chain: chain.to_vec(),
        });
        let word = if kind == OutcomeKind::Temporary {
            "defer"
        } else {
            "fail"
        };
        format!("{word} {status} {why}")
    }

    fn deliver(
        &mut self,
        address: &str,
        chain: &[Hop],
        router: &RouterConfig,
        target: Target,
        extension: Option<String>,
    ) -> String {
        let key = match &target {
            Target::Local { destination, .. } => destination.to_string(),
            Target::Remote(_) => address.to_lowercase(),
        };
        let text = format!(
            "deliver to {} by transport {}",
            target.describe(),
            router.transport
        );
        if !self.seen_targets.insert((router.transport.clone(), key)) {
            return format!("{text} (already delivered by an earlier branch)");
        }
        self.deliveries.push(Delivery {
            address: address.to_string(),
            original: self.original.clone(),
            extension,
            transport: router.transport.clone(),
            target,
            router: router.name.clone(),
            chain: chain.to_vec(),
        });
        text
    }

    /// Routes one address; `ancestors` are the lowercased addresses (and includes) of its
    /// chain, `chain` the hops.
    fn address(
        &mut self,
        full: &str,
        local_only: bool,
        ancestors: &[String],
        chain: &[Hop],
    ) -> Trace {
        let label = if local_only {
            format!("\\{full}")
        } else {
            full.to_string()
        };
        let mut trace = Trace {
            label,
            ..Trace::default()
        };
        let config = &self.router.config;
        self.addresses += 1;
        if self.addresses > config.max_addresses + 1 {
            // The limit was reported once; the rest of the tree is not visited.
            trace.end = Some("not routed: the address limit was reached".into());
            return trace;
        }
        if self.addresses > config.max_addresses {
            let why = format!("expands to more than {} addresses", config.max_addresses);
            trace.end = Some(self.fail(
                full,
                chain,
                OutcomeKind::Permanent,
                codes::ROUTING_LOOP,
                &why,
            ));
            return trace;
        }
        if chain.len() > config.max_depth {
            let why = format!("more than {} levels of redirection", config.max_depth);
            trace.end = Some(self.fail(
                full,
                chain,
                OutcomeKind::Permanent,
                codes::ROUTING_LOOP,
                &why,
            ));
            return trace;
        }
        let folded = full.to_lowercase();
        if !local_only && ancestors.contains(&folded) {
            self.loops += 1;
            trace.end = Some(format!(
                "loop: {full} already appears in its own redirect chain; this branch ends"
            ));
            return trace;
        }
        let Some(address) = split(full) else {
            trace.end = Some(self.fail(
                full,
                chain,
                OutcomeKind::Permanent,
                BAD_SYNTAX,
                "bad address syntax",
            ));
            return trace;
        };
        let router = self.router;
        for built in &router.routers {
            let r = &built.config;
            let skip = |why: String| Step {
                router: r.name.clone(),
                driver: r.driver.name(),
                verdict: Verdict::Skipped,
                why,
            };
            if self.mode == Mode::Verify && !r.verify {
                trace.steps.push(skip("not used to verify".into()));
                continue;
            }
            if local_only && r.driver.redirects() {
                trace
                    .steps
                    .push(skip("a \\user target is not aliased or forwarded".into()));
                continue;
            }
            if let Err(why) = r
                .conditions
                .check(&address.local, &address.domain, &self.sender)
            {
                trace.steps.push(skip(why));
                continue;
            }
            let decision = self.drive(built, &address);
            let step = |verdict, why: String| Step {
                router: r.name.clone(),
                driver: r.driver.name(),
                verdict,
                why,
            };
            match decision {
                Decision::Decline(why) => trace.steps.push(step(Verdict::Declined, why)),
                Decision::Fail { kind, status, why } => {
                    trace.steps.push(step(Verdict::Failed, why.clone()));
                    let mut chain = chain.to_vec();
                    chain.push(Hop {
                        address: full.to_string(),
                        router: r.name.clone(),
                    });
                    trace.end = Some(self.fail(full, &chain, kind, status, &why));
                    return trace;
                }
                Decision::Deliver {
                    target,
                    extension,
                    why,
                } => {
                    trace.steps.push(step(Verdict::Accepted, why));
                    trace.end = Some(self.deliver(full, chain, r, target, extension));
                    return trace;
                }
                Decision::Redirect { items, why } => {
                    trace.steps.push(step(Verdict::Accepted, why));
                    let mut ancestors = ancestors.to_vec();
                    ancestors.push(folded);
                    let mut chain = chain.to_vec();
                    chain.push(Hop {
                        address: full.to_string(),
                        router: r.name.clone(),
                    });
                    if items.is_empty() {
                        trace.end = Some("redirected to nothing".into());
                    }
                    for item in items {
                        let child = self.item(item, r, &ancestors, &chain);
                        trace.children.push(child);
                    }
                    return trace;
                }
            }
        }
        let (status, why) = if router.is_local_domain(&address.domain) {
            (codes::BAD_MAILBOX, "user unknown".to_string())
        } else {
            (
                UNROUTABLE,
                format!("no router accepts domain {}", address.domain),
            )
        };
        trace.end = Some(self.fail(full, chain, OutcomeKind::Permanent, status, &why));
        trace
    }

    /// Routes one redirect item produced by router `r`.
    fn item(&mut self, item: Item, r: &RouterConfig, ancestors: &[String], chain: &[Hop]) -> Trace {
        match item {
            Item::Address(a) => self.address(&self.router.qualify(&a), false, ancestors, chain),
            Item::Local(u) => self.address(&self.router.qualify(&u), true, ancestors, chain),
            Item::Direct {
                label,
                result,
                user,
                authority,
            } => {
                let mut trace = Trace {
                    label: label.clone(),
                    ..Trace::default()
                };
                trace.end = Some(match result {
                    Ok(destination) => {
                        let target = Target::Local {
                            user,
                            destination,
                            authority,
                        };
                        self.deliver(&label, chain, r, target, None)
                    }
                    Err(why) => self.fail(
                        &label,
                        chain,
                        OutcomeKind::Permanent,
                        codes::SYSTEM_STATUS,
                        &why,
                    ),
                });
                trace
            }
            Item::Include { path, forward_user } => {
                let label = format!(":include:{path}");
                let mut trace = Trace {
                    label: label.clone(),
                    ..Trace::default()
                };
                let key = label.to_lowercase();
                if ancestors.contains(&key) {
                    self.loops += 1;
                    trace.end = Some(format!("loop: {label} includes itself; this branch ends"));
                    return trace;
                }
                if chain.len() > self.router.config.max_depth {
                    let why = format!(
                        "more than {} levels of redirection",
                        self.router.config.max_depth
                    );
                    trace.end = Some(self.fail(
                        &label,
                        chain,
                        OutcomeKind::Permanent,
                        codes::ROUTING_LOOP,
                        &why,
                    ));
                    return trace;
                }
                let items = match &forward_user {
                    Some(user) => self.forward_include(user, &path),
                    None => self.alias_include(r, &path),
                };
                let items = match items {
                    Ok(items) => items,
                    Err((kind, status, why)) => {
                        trace.end = Some(self.fail(&label, chain, kind, status, &why));
                        return trace;
                    }
                };
                let mut ancestors = ancestors.to_vec();
                ancestors.push(key);
                let mut chain = chain.to_vec();
                chain.push(Hop {
                    address: label,
                    router: r.name.clone(),
                });
                if items.is_empty() {
                    trace.end = Some("the include file lists nothing".into());
                }
                for item in items {
                    let child = self.item(item, r, &ancestors, &chain);
                    trace.children.push(child);
                }
                trace
            }
        }
    }

    fn alias_include(
        &self,
        r: &RouterConfig,
        path: &str,
    ) -> Result<Vec<Item>, (OutcomeKind, EnhancedStatus, String)> {
        let Driver::Aliases { user, .. } = &r.driver else {
            return Err((
                OutcomeKind::Permanent,
                codes::SYSTEM_STATUS,
                "include outside aliases".into(),
            ));
        };
        let file = self
            .router
            .world
            .includes
            .include(path)
            .map_err(|e| (OutcomeKind::Temporary, TEMPORARY, e.0))?;
        let entries = cursus_mail::forward::parse(&file.text).map_err(|e| {
            (
                OutcomeKind::Temporary,
                codes::CONFIG_ERROR,
                format!(":include:{path} {e}"),
            )
        })?;
        let authority = Authority::Include {
            file: path.to_string(),
            owner: file.owner,
        };
        Ok(entries
            .into_iter()
            .map(|e| alias_item(e.target, user, &authority))
            .collect())
    }

    fn forward_include(
        &self,
        user: &User,
        path: &str,
    ) -> Result<Vec<Item>, (OutcomeKind, EnhancedStatus, String)> {
        let mailpath = MailPath::parse(path).map_err(|e| {
            (
                OutcomeKind::Permanent,
                codes::SYSTEM_STATUS,
                format!(":include:{path}: {e}"),
            )
        })?;
        match self.router.world.forwards.include(user, &mailpath) {
            Ok(Some(entries)) => Ok(entries.into_iter().map(|e| forward_item(e, user)).collect()),
            Ok(None) => Err((
                OutcomeKind::Permanent,
                codes::SYSTEM_STATUS,
                format!(
                    ":include:{path} in a .forward cannot be read as {}",
                    user.name
                ),
            )),
            Err(e) => Err((OutcomeKind::Temporary, TEMPORARY, e.0)),
        }
    }

    /// Runs the driver of `built` on `address`.
    fn drive(&self, built: &Built, address: &Address) -> Decision {
        let r = &built.config;
        let (base, extension) = strip_extension(&address.local, &r.extension_separator);
        let world = &self.router.world;
        match (&r.driver, &built.state) {
            (Driver::Aliases { user, .. }, State::Aliases(file)) => {
                if file.absent() {
                    return Decision::Decline(format!("{} does not exist", file.path()));
                }
                let mut keys = vec![address.local.as_str()];
                if extension.is_some() {
                    keys.push(base);
                }
                for key in keys {
                    match file.lookup(key) {
                        Err(e) => return temporary(e),
                        Ok(None) => {}
                        Ok(Some(targets)) => {
                            let authority = Authority::Aliases { file: file.path() };
                            let shown: Vec<String> = targets.iter().map(target_text).collect();
                            let items = targets
                                .into_iter()
                                .map(|t| alias_item(t, user, &authority))
                                .collect();
                            return Decision::Redirect {
                                items,
                                why: format!("alias {}: {}", key.to_lowercase(), shown.join(", ")),
                            };
                        }
                    }
                }
                Decision::Decline(format!(
                    "no alias {} in {}",
                    address.local.to_lowercase(),
                    file.path()
                ))
            }
            (Driver::Forward, _) => {
                let user = match world.users.user(&base.to_lowercase()) {
                    Err(e) => return temporary(e),
                    Ok(None) => {
                        return Decision::Decline(format!("no local user {}", base.to_lowercase()));
                    }
                    Ok(Some(u)) => u,
                };
                match world.forwards.forward(&user) {
                    Err(e) => temporary(e),
                    Ok(entries) if entries.is_empty() => {
                        Decision::Decline(format!("{} has no .forward", user.name))
                    }
                    Ok(entries) => {
                        let shown: Vec<String> = entries.iter().map(entry_text).collect();
                        Decision::Redirect {
                            why: format!(".forward of {}: {}", user.name, shown.join(", ")),
                            items: entries
                                .into_iter()
                                .map(|e| forward_item(e, &user))
                                .collect(),
                        }
                    }
                }
            }
            (Driver::LocalUser, _) => match world.users.user(&base.to_lowercase()) {
                Err(e) => temporary(e),
                Ok(None) => Decision::Decline(format!("no local user {}", base.to_lowercase())),
                Ok(Some(user)) => {
                    let why = match extension {
                        Some(ext) => format!(
                            "local user {} (uid {}), extension {ext}",
                            user.name, user.uid
                        ),
                        None => format!("local user {} (uid {})", user.name, user.uid),
                    };
                    self.to_transport(r, address, &user, None, extension, why)
                }
            },
            (Driver::Virtual { .. }, State::Table(table)) => {
                let domain = &address.domain;
                let mut keys = vec![address.full.to_lowercase()];
                if extension.is_some() {
                    keys.push(format!("{base}@{domain}").to_lowercase());
                }
                keys.push(format!("@{domain}"));
                for key in &keys {
                    match table.lookup(key) {
                        Err(e) => return temporary(e),
                        Ok(None) => {}
                        Ok(Some(value)) => {
                            return self.virtual_value(r, address, key, &value, extension);
                        }
                    }
                }
                Decision::Decline(format!("no entry for {}", keys.join(" or ")))
            }
            (Driver::ManualRoute { hosts, port }, _) => Decision::Deliver {
                target: Target::Remote(Remote::Hosts {
                    hosts: hosts.clone(),
                    port: *port,
                }),
                extension: None,
                why: format!("relay for {} via {}", address.domain, hosts.join(", ")),
            },
            (Driver::DnsLookup, _) => Decision::Deliver {
                target: Target::Remote(Remote::Mx {
                    domain: address.domain.clone(),
                }),
                extension: None,
                why: format!(
                    "MX lookup for {} (done by the outbound transport)",
                    address.domain
                ),
            },
            _ => permanent(
                codes::SYSTEM_STATUS,
                "router state does not match its driver",
            ),
        }
    }

    /// A virtual table value: `user` or `user KIND:PATH`.
    fn virtual_value(
        &self,
        r: &RouterConfig,
        address: &Address,
        key: &str,
        value: &str,
        extension: Option<&str>,
    ) -> Decision {
        let bad = |why: String| Decision::Fail {
            kind: OutcomeKind::Temporary,
            status: codes::CONFIG_ERROR,
            why: format!("router {}: the value for {key} {why}", r.name),
        };
        let mut words = value.split_whitespace();
        let Some(name) = words.next() else {
            return bad("is empty".into());
        };
        let destination = words.next();
        if words.next().is_some() {
            return bad(format!("{value:?} has more than a user and a destination"));
        }
        if !crate::user::plausible_name(name) {
            return bad(format!("names {name:?}, not a user"));
        }
        let user = match self.router.world.users.user(name) {
            Err(e) => return temporary(e),
            Ok(Some(u)) => u,
            Ok(None) if destination.is_some() => User {
                name: name.into(),
                uid: 0,
                gid: 0,
                home: String::new(),
            },
            Ok(None) => return bad(format!("names user {name}, who does not exist")),
        };
        let template = match destination.map(MailboxTemplate::parse) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(why)) => return bad(why),
        };
        let why = format!("{key} is {value}");
        self.to_transport(r, address, &user, template.as_ref(), extension, why)
    }

    /// The delivery of `address` for `user` through `r`'s transport: a mailbox (the table's
    /// `template`, or the lda transport's) or the transport's hosts.
    fn to_transport(
        &self,
        r: &RouterConfig,
        address: &Address,
        user: &User,
        template: Option<&MailboxTemplate>,
        extension: Option<&str>,
        why: String,
    ) -> Decision {
        let Some(transport) = self.router.config.transport(&r.transport) else {
            return permanent(
                codes::SYSTEM_STATUS,
                format!("no transport {}", r.transport),
            );
        };
        let authority = if template.is_some() {
            Authority::Table {
                router: r.name.clone(),
            }
        } else {
            Authority::Mailbox
        };
        let target = match (&transport.driver, template) {
            (TransportDriver::Lda { mailbox }, template) => {
                let template = template.unwrap_or(mailbox);
                let (base, _) = strip_extension(&address.local, &r.extension_separator);
                let values = Expansion {
                    user: &user.name,
                    home: &user.home,
                    local: &base.to_lowercase(),
                    domain: &address.domain,
                    extension: extension.unwrap_or(""),
                };
                match template.expand(&values) {
                    Ok(destination) => Target::Local {
                        user: user.name.clone(),
                        destination,
                        authority,
                    },
                    Err(e) => {
                        return permanent(codes::SYSTEM_STATUS, format!("mailbox {template}: {e}"));
                    }
                }
            }
            (_, Some(template)) => {
                return Decision::Fail {
                    kind: OutcomeKind::Temporary,
                    status: codes::CONFIG_ERROR,
                    why: format!(
                        "router {}: mailbox {template} needs an lda transport, not {}",
                        r.name, transport.name
                    ),
                };
            }
            (
                TransportDriver::Smtp { hosts, port } | TransportDriver::Lmtp { hosts, port },
                None,
            ) => {
                if hosts.is_empty() {
                    Target::Remote(Remote::Mx {
                        domain: address.domain.clone(),
                    })
                } else {
                    Target::Remote(Remote::Hosts {
                        hosts: hosts.clone(),
                        port: *port,
                    })
                }
            }
        };
        Decision::Deliver {
            target,
            extension: extension.map(str::to_string),
            why,
        }
    }
}

fn target_text(t: &AliasTarget) -> String {
    match t {
        AliasTarget::Address(a) => a.clone(),
        AliasTarget::Local(u) => format!("\\{u}"),
        AliasTarget::File(f) => f.clone(),
        AliasTarget::Command(c) => format!("|{c}"),
        AliasTarget::Include(p) => format!(":include:{p}"),
    }
}

fn entry_text(e: &ForwardEntry) -> String {
    match e {
        ForwardEntry::Address(a) => a.clone(),
        ForwardEntry::Local(u) => format!("\\{u}"),
        ForwardEntry::Mailbox(p) => p.to_string(),
        ForwardEntry::Command(c) => format!("|{c}"),
        ForwardEntry::Include(p) => format!(":include:{p}"),
    }
}

fn alias_item(t: AliasTarget, user: &str, authority: &Authority) -> Item {
    match t {
        AliasTarget::Address(a) => Item::Address(a),
        AliasTarget::Local(u) => Item::Local(u),
        AliasTarget::File(f) => Item::Direct {
            result: alias_file(&f),
            label: f,
            user: user.to_string(),
            authority: authority.clone(),
        },
        AliasTarget::Command(c) => Item::Direct {
            result: command(&c),
            label: format!("|{c}"),
            user: user.to_string(),
            authority: authority.clone(),
        },
        AliasTarget::Include(path) => Item::Include {
            path,
            forward_user: None,
        },
    }
}

fn forward_item(e: ForwardEntry, user: &User) -> Item {
    let authority = Authority::Forward {
        user: user.name.clone(),
    };
    match e {
        ForwardEntry::Address(a) => Item::Address(a),
        ForwardEntry::Local(u) => Item::Local(u),
        ForwardEntry::Mailbox(p) => Item::Direct {
            label: p.to_string(),
            result: Ok(Destination::Mbox(p)),
            user: user.name.clone(),
            authority,
        },
        ForwardEntry::Command(c) => Item::Direct {
            result: command(&c),
            label: format!("|{c}"),
            user: user.name.clone(),
            authority,
        },
        ForwardEntry::Include(p) => Item::Include {
            path: p.to_string(),
            forward_user: Some(user.clone()),
        },
    }
}

#[cfg(test)]
mod tests;
