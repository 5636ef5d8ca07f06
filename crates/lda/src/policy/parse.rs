//! Reading the destination policy: the system file and a user's refinement file, both TOML,
//! parsed and validated in one pass into [`Policy`] rules.
//!
//! Trusts nothing in the text: unknown keys, misspelt kinds, relative or `..` paths,
//! unknown `${...}` variables, duplicate rule names, options that make no sense for the
//! rule's kind, and (in a user's file) anything outside that user's home are refused.
//! Fails with [`PolicyErrors`]: every problem found, each with `file:line:col` and, for a
//! misspelt word, a suggestion. Never touches the filesystem; the caller reads the file and
//! (for a user's file) checks its owner and mode first.
//!
//! Attacks stopped: a typo that silently widens or disables a rule (unknown keys are errors,
//! not ignored); a user's file that grants destinations outside the home, names commands, or
//! names users to escape the uid floor (only the system file may).

use std::fmt;

use cursus_mail::diagnostic::{line_col, suggest, unknown_field as unknown_key};
use serde::Deserialize;
use toml::Spanned;

use super::{Anchor, Origin, Policy, Rule, RuleKind, Template};
use crate::destination::MailPath;

/// The uid floor when the file does not set `min_uid`.
pub const DEFAULT_MIN_UID: u32 = 1000;

const SYSTEM_KEYS: &[&str] = &["min_uid", "allow"];
const USER_KEYS: &[&str] = &["remove", "allow"];
const KINDS: &[&str] = &["maildir", "mbox", "mh", "command"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemFile {
    min_uid: Option<u32>,
    #[serde(default)]
    allow: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    #[serde(default)]
    remove: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    kind: Spanned<String>,
    path: Spanned<String>,
    #[serde(default)]
    subtree: bool,
    users: Option<Spanned<Vec<String>>>,
    arguments: Option<Spanned<bool>>,
}

/// One problem in a policy file, with where it is and, when we can tell, what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub source: String,
    /// 1-based line and column.
    pub line: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

/// Every problem found in one file (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

struct Errors<'a> {
    text: &'a str,
    source: &'a str,
    found: Vec<PolicyError>,
}

impl Errors<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        self.found.push(PolicyError {
            source: self.source.to_string(),
            line: Some(line_col(self.text, span.start)),
            message: message.into(),
        });
    }
}

/// Parses and validates the system policy; `source` names the file in errors.
pub fn parse_system(text: &str, source: &str) -> Result<Policy, PolicyErrors> {
    let file: SystemFile = from_toml(text, source, SYSTEM_KEYS)?;
    let mut errors = Errors {
        text,
        source,
        found: Vec::new(),
    };
    let mut rules: Vec<Rule> = Vec::new();
    for (i, raw) in file.allow.into_iter().enumerate() {
        if let Some(rule) = validate_rule(raw, i, &mut errors, None) {
            if rules.iter().any(|r| r.name == rule.name) {
                let (line, _) = rule.origin.line();
                errors.found.push(PolicyError {
                    source: source.to_string(),
                    line: Some((line, 1)),
                    message: format!("a rule named `{}` is already defined", rule.name),
                });
            }
            rules.push(rule);
        }
    }
    if !errors.found.is_empty() {
        return Err(PolicyErrors(errors.found));
    }
    Ok(Policy {
        source: source.to_string(),
        min_uid: file.min_uid.unwrap_or(DEFAULT_MIN_UID),
        rules,
    })
}

/// Parses `user`'s refinement file against the system policy and returns the policy that
/// holds for that user: the rules it names under `remove` are marked removed, its own rules
/// are appended and apply to `user` only. The caller has already checked the file's owner
/// and mode (not here: this module does no I/O).
pub fn parse_user(
    system: &Policy,
    user: &str,
    text: &str,
    source: &str,
) -> Result<Policy, PolicyErrors> {
    let file: UserFile = from_toml(text, source, USER_KEYS)?;
    let mut errors = Errors {
        text,
        source,
        found: Vec::new(),
    };
    let mut policy = system.clone();
    for name in file.remove {
        let span = name.span();
        let name = name.into_inner();
        match policy
            .rules
            .iter_mut()
            .find(|r| r.name == name && matches!(r.origin, Origin::System { .. }))
        {
            Some(rule) => rule.removed_by = Some(source.to_string()),
            None => {
                let names: Vec<&str> = system.rules.iter().map(|r| r.name.as_str()).collect();
                let message = match suggest(&name, &names) {
                    Some(s) => format!("no system rule named `{name}`; did you mean `{s}`?"),
                    None => format!(
                        "no system rule named `{name}`; the system rules are: {}",
                        names.join(", ")
                    ),
                };
                errors.at(span, message);
            }
        }
    }
    for (i, raw) in file.allow.into_iter().enumerate() {
        if let Some(rule) = validate_rule(raw, i, &mut errors, Some(user)) {
            if policy.rules.iter().any(|r| r.name == rule.name) {
                let (line, _) = rule.origin.line();
                errors.found.push(PolicyError {
                    source: source.to_string(),
                    line: Some((line, 1)),
                    message: format!("a rule named `{}` is already defined", rule.name),
                });
            }
            policy.rules.push(rule);
        }
    }
    if !errors.found.is_empty() {
        return Err(PolicyErrors(errors.found));
    }
    Ok(policy)
}

fn from_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    source: &str,
    top_keys: &[&str],
) -> Result<T, PolicyErrors> {
    toml::from_str::<T>(text).map_err(|e| {
        let line = e.span().map(|span| line_col(text, span.start));
        let mut message = e.message().trim().to_string();
        if let Some(unknown) = unknown_key(&message) {
            // serde lists the keys the table knows after "expected"; fall back to ours.
            let listed: Vec<&str> = message
                .split_once("expected")
                .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
                .unwrap_or_default();
            let known: &[&str] = if listed.is_empty() { top_keys } else { &listed };
            message = match suggest(&unknown, known) {
                Some(s) => format!("unknown key `{unknown}`; did you mean `{s}`?"),
                None => format!("unknown key `{unknown}`; known keys: {}", known.join(", ")),
            };
        }
        PolicyErrors(vec![PolicyError {
            source: source.to_string(),
            line,
            message,
        }])
    })
}

/// Validates one `[[allow]]` table; `owner` is the user for a refinement file's rules.
fn validate_rule(
    raw: Spanned<RawRule>,
    index: usize,
    errors: &mut Errors<'_>,
    owner: Option<&str>,
) -> Option<Rule> {
    let table_span = raw.span();
    let (line, _) = line_col(errors.text, table_span.start);
    let raw = raw.into_inner();
    let before = errors.found.len();

    let name = match &raw.name {
        Some(n) => {
            let valid = !n.get_ref().is_empty()
                && n.get_ref().len() <= 64
                && n.get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                errors.at(
                    n.span(),
                    "a rule name is 1 to 64 letters, digits, `-` or `_`",
                );
            }
            n.get_ref().clone()
        }
        None => format!("allow-{}", index + 1),
    };

    let kind = match raw.kind.get_ref().as_str() {
        "maildir" => Some(RuleKind::Maildir),
        "mbox" => Some(RuleKind::Mbox),
        "mh" => Some(RuleKind::Mh),
        "command" => Some(RuleKind::Command),
        other => {
            let message = match suggest(other, KINDS) {
                Some(s) => format!("unknown kind `{other}`; did you mean `{s}`?"),
                None => format!("unknown kind `{other}`; use maildir, mbox, mh or command"),
            };
            errors.at(raw.kind.span(), message);
            None
        }
    };

    let template = match Template::parse(raw.path.get_ref()) {
        Ok(t) => Some(t),
        Err(message) => {
            errors.at(raw.path.span(), message);
            None
        }
    };

    if let (Some(kind), Some(template)) = (kind, &template) {
        if kind == RuleKind::Command && template.anchor == Anchor::Home {
            errors.at(
                raw.path.span(),
                "a command must be named by an absolute path, not one in the user's home",
            );
        }
        if owner.is_some() {
            if kind == RuleKind::Command {
                errors.at(
                    raw.kind.span(),
                    "a user's file may not allow commands; ask the administrator to list them",
                );
            }
            if template.anchor != Anchor::Home || template.rest.is_empty() {
                errors.at(
                    raw.path.span(),
                    "a user's file may only allow destinations inside the home: write `~/...`",
                );
            }
            if template.rest.contains("${user}") {
                errors.at(
                    raw.path.span(),
                    "`${user}` is for the system file; write the path itself",
                );
            }
        }
    }
    if let Some(users) = &raw.users {
        if owner.is_some() {
            errors.at(
                users.span(),
                "a user's file may not name users; its rules apply to its owner only",
            );
        } else if users.get_ref().is_empty() {
            errors.at(
                users.span(),
                "`users` is empty: leave it out, or name users",
            );
        } else if let Some(bad) = users.get_ref().iter().find(|u| !super::valid_user(u)) {
            errors.at(users.span(), format!("{bad:?} is not a valid user name"));
        }
    }
    if let Some(arguments) = &raw.arguments
        && kind.is_some_and(|k| k != RuleKind::Command)
    {
        errors.at(
            arguments.span(),
            "`arguments` applies only to rules of kind `command`",
        );
    }

    if errors.found.len() != before {
        return None;
    }
    let origin = match owner {
        None => Origin::System {
            source: errors.source.to_string(),
            line,
        },
        Some(user) => Origin::User {
            source: errors.source.to_string(),
            line,
            user: user.to_string(),
        },
    };
    Some(Rule {
        name,
        origin,
        kind: kind?,
        template: template?,
        subtree: raw.subtree,
        users: raw.users.map(Spanned::into_inner),
        arguments: raw.arguments.is_some_and(|a| *a.get_ref()),
        removed_by: None,
    })
}

impl Template {
    /// Reads `~`, `~/rel/${user}`, or `/abs/${user}/...`; a trailing `/` is allowed and
    /// dropped. Returns a message on error.
    fn parse(text: &str) -> Result<Template, String> {
        let trimmed = if text.len() > 1 {
            text.strip_suffix('/').unwrap_or(text)
        } else {
            text
        };
        let (anchor, rest) = if trimmed == "~" {
            (Anchor::Home, "")
        } else if let Some(rest) = trimmed.strip_prefix("~/") {
            (Anchor::Home, rest)
        } else if let Some(rest) = trimmed.strip_prefix('/') {
            (Anchor::Root, rest)
        } else {
            return Err(format!(
                "{text:?} is neither absolute (`/...`) nor in the user's home (`~/...`)"
            ));
        };
        let mut probe = rest.to_string();
        let mut scan = rest;
        while let Some(at) = scan.find("${") {
            let after = &scan[at..];
            if !after.starts_with("${user}") {
                let end = after.find('}').map_or(after.len(), |e| e + 1);
                return Err(format!(
                    "unknown variable `{}`; the only variable is `${{user}}`",
                    &after[..end]
                ));
            }
            scan = &after["${user}".len()..];
        }
        probe = probe.replace("${user}", "u");
        if probe.contains('$') {
            return Err("a `$` that is not `${user}`".to_string());
        }
        MailPath::parse(&format!("/{probe}")).map_err(|e| format!("{text:?}: {e}"))?;
        // Attack stopped: a rule for `/` or `~` lets the MTA append "mail" to any file,
        // such as /etc/passwd or ~/.ssh/authorized_keys.
        if rest.is_empty() {
            return Err(format!(
                "{text:?} would allow the whole {}; name a directory inside it",
                if anchor == Anchor::Home {
                    "home directory"
                } else {
                    "filesystem"
                }
            ));
        }
        Ok(Template {
            anchor,
            rest: rest.to_string(),
        })
    }
}

#[cfg(test)]
mod manual {
    /// Every key the parser accepts is documented in cursus-lda-policy(5).
    #[test]
    fn the_man_page_names_every_key_and_kind() {
        let page = include_str!("../../../../docs/man/cursus-lda-policy.5");
        let rule_keys = ["name", "kind", "path", "subtree", "users", "arguments"];
        for key in super::SYSTEM_KEYS
            .iter()
            .chain(super::USER_KEYS)
            .chain(super::KINDS)
            .chain(rule_keys.iter())
        {
            assert!(
                page.contains(&format!(".B {key}"))
                    || page.contains(&format!("\"{key}\""))
                    || page.contains(&format!("[[{key}]]")),
                "cursus-lda-policy.5 does not document `{key}`"
            );
        }
    }
}
