//! The destination policy: which destinations cursus-lda may deliver to, as which user.
//! The LDA's only authority; it never reads the MTA's configuration.
//!
//! Trusts the system policy file (root's) for every rule, a user's refinement file only to
//! remove system rules for that user and add mailboxes inside that user's home, and nothing
//! in a [`Request`]: the user name, uid, home and destination come from the MTA (the user
//! database lookup happens in the caller) and are checked here. Pure: no filesystem access;
//! paths are compared lexically on normalised absolute paths, and the delivery child
//! repeats the checks on what it actually opens. Never fails: [`check`] returns a
//! [`Decision`] naming the rule that allowed the request or the reason it was refused.
//!
//! Attacks stopped (each check's doc comment says which): a compromised or misrouting MTA
//! asking for `/etc/passwd`, another user's mailbox, a path climbing out with `..`, a
//! sibling directory that shares a prefix, a delivery as root or a system account, a
//! command not on the list, a shell metacharacter smuggled into an argument, and a user
//! name built to climb out of `/var/mail`.

pub mod parse;

use std::fmt;

use crate::destination::{Destination, MailPath, PathError};

pub use parse::{DEFAULT_MIN_UID, PolicyError, PolicyErrors, parse_system, parse_user};

/// The most arguments a command destination may carry.
pub const MAX_ARGUMENTS: usize = 32;
/// The longest single command argument.
pub const MAX_ARGUMENT_LEN: usize = 1024;

/// A loaded, validated policy (the system file, possibly refined for one user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The file the system rules came from.
    pub source: String,
    /// Users below this uid get only rules that name them.
    pub min_uid: u32,
    pub rules: Vec<Rule>,
}

/// Where a rule was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    System {
        source: String,
        line: usize,
    },
    /// A user's refinement file: the rule applies to `user` only and never names anyone.
    User {
        source: String,
        line: usize,
        user: String,
    },
}

impl Origin {
    pub fn line(&self) -> (usize, &str) {
        match self {
            Origin::System { source, line } | Origin::User { source, line, .. } => (*line, source),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, source) = self.line();
        write!(f, "{source}:{line}")
    }
}

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Maildir,
    Mbox,
    Mh,
    Command,
}

impl RuleKind {
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Maildir => "maildir",
            RuleKind::Mbox => "mbox",
            RuleKind::Mh => "mh",
            RuleKind::Command => "command",
        }
    }

    fn of(destination: &Destination) -> RuleKind {
        match destination {
            Destination::Maildir(_) => RuleKind::Maildir,
            Destination::Mbox(_) => RuleKind::Mbox,
            Destination::Mh(_) => RuleKind::Mh,
            Destination::Command { .. } => RuleKind::Command,
        }
    }
}

/// Whether a path pattern starts at the user's home or at `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Home,
    Root,
}

/// A path pattern as written (`~/Maildir`, `/var/mail/${user}`), checked at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub anchor: Anchor,
    /// The part after `~/` or `/`, possibly empty, possibly containing `${user}`.
    pub rest: String,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.anchor, self.rest.is_empty()) {
            (Anchor::Home, true) => write!(f, "~"),
            (Anchor::Home, false) => write!(f, "~/{}", self.rest),
            (Anchor::Root, _) => write!(f, "/{}", self.rest),
        }
    }
}

/// One allowed destination pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub origin: Origin,
    pub kind: RuleKind,
    pub template: Template,
    /// Mailboxes: the path and everything below it. Commands: every program directly or
    /// indirectly inside the directory (the smrsh idea), never the directory itself.
    pub subtree: bool,
    /// Only these users; naming a user also lifts the uid floor and the root refusal for
    /// them. `None`: every user at or above the floor.
    pub users: Option<Vec<String>>,
    /// Commands only: whether arguments may follow the program.
    pub arguments: bool,
    /// Set when a user's refinement file removed this rule (names that file).
    pub removed_by: Option<String>,
}

/// One delivery to check. The user name and destination come from the MTA and are not
/// trusted; `uid` and `home` must come from the LDA's own user database lookup of `user`,
/// never from the request (else the MTA could claim uid 1000 for `root`).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub user: &'a str,
    pub uid: u32,
    /// The home directory from the user database, as text.
    pub home: &'a str,
    pub destination: &'a Destination,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The user name could not be a single path component.
    BadUserName,
    /// uid 0 and no rule names this user.
    Root,
    /// Below `min_uid` and no rule names this user.
    BelowUidFloor { uid: u32, min_uid: u32 },
    /// A command argument is unsafe (index, what is wrong).
    UnsafeArgument { index: usize, why: &'static str },
    /// No rule allows the destination.
    NotListed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadUserName => write!(f, "the user name is not a safe path component"),
            Refusal::Root => write!(f, "delivery as root needs a rule that names the user"),
            Refusal::BelowUidFloor { uid, min_uid } => write!(
                f,
                "uid {uid} is below min_uid {min_uid} and no rule names the user"
            ),
            Refusal::UnsafeArgument { index, why } => {
                write!(f, "command argument {index} {why}")
            }
            Refusal::NotListed => write!(f, "no rule allows this destination"),
        }
    }
}

/// Why one rule did not allow a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    Removed { by: String },
    OtherKind,
    OtherUsers,
    NoHome(String),
    Outside { allowed: String, subtree: bool },
    ArgumentsNotAllowed,
    NeedsNaming,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::Removed { by } => write!(f, "removed by {by}"),
            Miss::OtherKind => write!(f, "another kind of destination"),
            Miss::OtherUsers => write!(f, "for other users only"),
            Miss::NoHome(why) => write!(f, "the home directory is unusable: {why}"),
            Miss::Outside { allowed, subtree } => {
                if *subtree {
                    write!(f, "not at or below {allowed}")
                } else {
                    write!(f, "not {allowed}")
                }
            }
            Miss::ArgumentsNotAllowed => write!(f, "the rule allows no arguments"),
            Miss::NeedsNaming => write!(f, "the uid needs a rule that names the user"),
        }
    }
}

/// The answer to [`check`], with enough detail for `policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        rule: String,
        origin: Origin,
    },
    Refused {
        reason: Refusal,
        /// Each rule considered and why it did not apply, in file order.
        misses: Vec<(String, Origin, Miss)>,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed { rule, origin } => {
                write!(f, "allowed by rule `{rule}` ({origin})")
            }
            Decision::Refused { reason, misses } => {
                write!(f, "refused: {reason}")?;
                for (rule, origin, miss) in misses {
                    write!(f, "\n  rule `{rule}` ({origin}): {miss}")?;
                }
                Ok(())
            }
        }
    }
}

/// Whether `user` can stand for itself inside a path: 1 to 32 bytes of letters, digits,
/// `.`, `_`, `-` (not first), not `.` or `..`.
///
/// Attack stopped: a user name such as `../etc/passwd` or `a/b` expanding
/// `/var/mail/${user}` to a path outside `/var/mail`.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 32
        && user != "."
        && user != ".."
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Characters a command argument may not contain.
const SHELL_META: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '*', '?', '[', ']', '{', '}', '!', '~', '\'', '"',
    '\\', '#', ' ', '\t',
];

/// Checks one command argument.
///
/// Attack stopped: an argument carrying `; rm -rf ~` or `$(...)` that becomes a command if
/// anything between us and the program ever runs a shell (a wrapper script, an `exec $@`);
/// a NUL that truncates the argument at exec; an argument long enough to fail the exec
/// after the check passed. We never use a shell; this is the second layer.
fn argument_problem(arg: &str) -> Option<&'static str> {
    if arg.len() > MAX_ARGUMENT_LEN {
        return Some("is too long");
    }
    if arg.contains('\0') {
        return Some("contains a NUL byte");
    }
    if arg.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    if arg.contains(SHELL_META) {
        return Some("contains a shell metacharacter or space");
    }
    None
}

/// The home directory as a path rules may be anchored at.
///
/// Attack stopped: a user whose home is `/` (or a relative or `..` path) turning `~` rules
/// into "anywhere on the system".
fn home_path(home: &str) -> Result<MailPath, String> {
    let path = MailPath::parse(home).map_err(|e: PathError| e.to_string())?;
    if path.components().next().is_none() {
        return Err("the home directory is `/`".to_string());
    }
    Ok(path)
}

/// Expands a rule's template for this request.
fn expand(template: &Template, user: &str, home: &str) -> Result<MailPath, Miss> {
    let base = match template.anchor {
        Anchor::Home => home_path(home).map_err(Miss::NoHome)?,
        Anchor::Root => MailPath::parse("/").map_err(|e| Miss::NoHome(e.to_string()))?,
    };
    let rest = template.rest.replace("${user}", user);
    base.join(&rest)
        .map_err(|e| Miss::NoHome(format!("the rule expands to a bad path: {e}")))
}

/// Decides whether `request` may be delivered under `policy`. First matching rule wins.
///
/// Checks, in order, each stopping an attack:
/// 1. the user name is a safe path component ([`valid_user`]);
/// 2. a command's arguments are bounded and free of shell syntax ([`argument_problem`]);
/// 3. for each rule not removed: the destination's kind is the rule's kind (a mailbox rule
///    never lets the MTA run a program, and an mbox rule never makes the LDA write a
///    maildir tree where an mbox is expected);
/// 4. the rule is for this user (a `vmail` tree is never written as `joe`, and a user's
///    refinement never applies to another user);
/// 5. the destination lies at or below the rule's expanded path, compared component by
///    component on normalised paths (no `..`, no `/srv/vmailx` for `/srv/vmail`, no other
///    user's home since `~` is the requesting user's own);
/// 6. a command with arguments needs a rule that allows them;
/// 7. uid 0 and uids below `min_uid` need a system rule naming the user, so a rule meant for
///    people never makes the LDA write as root, `daemon` or `bin`.
pub fn check(policy: &Policy, request: &Request<'_>) -> Decision {
    let refused = |reason| Decision::Refused {
        reason,
        misses: Vec::new(),
    };
    if !valid_user(request.user) {
        return refused(Refusal::BadUserName);
    }
    if let Destination::Command { args, .. } = request.destination {
        if args.len() > MAX_ARGUMENTS {
            return refused(Refusal::UnsafeArgument {
                index: MAX_ARGUMENTS + 1,
                why: "is one too many",
            });
        }
        for (i, arg) in args.iter().enumerate() {
            if let Some(why) = argument_problem(arg) {
                return refused(Refusal::UnsafeArgument { index: i + 1, why });
            }
        }
    }
    let kind = RuleKind::of(request.destination);
    let target = request.destination.path();
    let privileged = request.uid == 0 || request.uid < policy.min_uid;
    let mut misses = Vec::new();
    for rule in &policy.rules {
        match rule_applies(rule, request, kind, target, privileged) {
            Ok(()) => {
                return Decision::Allowed {
                    rule: rule.name.clone(),
                    origin: rule.origin.clone(),
                };
            }
            Err(miss) => misses.push((rule.name.clone(), rule.origin.clone(), miss)),
        }
    }
    let reason = if request.uid == 0 {
        Refusal::Root
    } else if request.uid < policy.min_uid {
        Refusal::BelowUidFloor {
            uid: request.uid,
            min_uid: policy.min_uid,
        }
    } else {
        Refusal::NotListed
    };
    Decision::Refused { reason, misses }
}

fn rule_applies(
    rule: &Rule,
    request: &Request<'_>,
    kind: RuleKind,
    target: &MailPath,
    privileged: bool,
) -> Result<(), Miss> {
    if let Some(by) = &rule.removed_by {
        return Err(Miss::Removed { by: by.clone() });
    }
    if rule.kind != kind {
        return Err(Miss::OtherKind);
    }
    let named = match &rule.origin {
        Origin::User { user, .. } => {
            if user != request.user {
                return Err(Miss::OtherUsers);
            }
            false
        }
        Origin::System { .. } => match &rule.users {
            Some(users) if !users.iter().any(|u| u == request.user) => {
                return Err(Miss::OtherUsers);
            }
            Some(_) => true,
            None => false,
        },
    };
    let allowed = expand(&rule.template, request.user, request.home)?;
    let inside = match (rule.subtree, kind) {
        (false, _) => *target == allowed,
        (true, RuleKind::Command) => target.is_strictly_below(&allowed),
        (true, _) => target.is_at_or_below(&allowed),
    };
    if !inside {
        return Err(Miss::Outside {
            allowed: allowed.to_string(),
            subtree: rule.subtree,
        });
    }
    if let Destination::Command { args, .. } = request.destination
        && !args.is_empty()
        && !rule.arguments
    {
        return Err(Miss::ArgumentsNotAllowed);
    }
    if privileged && !named {
        return Err(Miss::NeedsNaming);
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// The defaults: what `policy generate` starts from, and what the service uses when no
/// policy file exists.
pub const DEFAULTS: &str = r#"# The defaults: each user's ~/Maildir and everything below it, and the spool mailbox
# /var/mail/<user>.
[[allow]]
name = "home-maildir"
kind = "maildir"
path = "~/Maildir"
subtree = true

[[allow]]
name = "var-mail"
kind = "mbox"
path = "/var/mail/${user}"
"#;
