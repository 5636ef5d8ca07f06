//! Validation machinery: the extension registry (names, implied extensions) and the
//! argument checker that splits a command's arguments into tagged and positional ones and
//! checks counts and types against a signature.
//!
//! Trusts the parser's tree shape only. Every mismatch becomes a compile error naming the
//! command, the argument and what was expected (wording close to Pigeonhole's, so scripts'
//! authors see familiar messages); nothing here panics.

use crate::error::Diagnostics;
use crate::lexer::Pos;
use crate::parser::{Arg, StrLit};

/// Capabilities this implementation knows. `vnd.dovecot.testsuite` is only accepted when
/// the configuration enables the testsuite.
pub const EXTENSIONS: &[&str] = &[
    "fileinto",
    "reject",
    "ereject",
    "envelope",
    "encoded-character",
    "variables",
    "vacation",
    "vacation-seconds",
    "relational",
    "subaddress",
    "copy",
    "imap4flags",
    "body",
    "date",
    "index",
    "mailbox",
    "include",
    "editheader",
    "duplicate",
    "environment",
    "ihave",
    "regex",
    "spamtest",
    "spamtestplus",
    "virustest",
    "mime",
    "foreverypart",
    "extracttext",
    "enotify",
    "special-use",
    "mboxmetadata",
    "servermetadata",
    "comparator-i;octet",
    "comparator-i;ascii-casemap",
    "comparator-i;ascii-numeric",
    "comparator-i;unicode-casemap",
    "vnd.dovecot.debug",
    "vnd.dovecot.environment",
    "vnd.dovecot.pipe",
    "vnd.dovecot.filter",
    "vnd.dovecot.execute",
];

/// Extensions implied by requiring another one.
pub fn implied(ext: &str) -> &'static [&'static str] {
    match ext {
        "vacation-seconds" => &["vacation"],
        "spamtestplus" => &["spamtest"],
        "vnd.dovecot.environment" => &["environment", "variables"],
        _ => &[],
    }
}

/// What kind of value an argument slot takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A single string.
    Str,
    /// A string or a string list.
    StrList,
    /// A number.
    Num,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::StrList => "a string list",
            Kind::Num => "a number",
        }
    }

    /// Whether `arg` fits this kind.
    pub fn accepts(self, arg: &Arg) -> bool {
        matches!(
            (self, arg),
            (Kind::Str, Arg::Str(_))
                | (Kind::StrList, Arg::Str(_) | Arg::List(..))
                | (Kind::Num, Arg::Number(..))
        )
    }
}

/// Describe an argument's type for error messages.
pub fn arg_type(arg: &Arg) -> &'static str {
    match arg {
        Arg::Tag(..) => "a tag",
        Arg::Number(..) => "a number",
        Arg::Str(_) => "a string",
        Arg::List(..) => "a string list",
    }
}

/// One allowed tag: its name, the argument it takes, and the extension it needs.
#[derive(Debug, Clone, Copy)]
pub struct TagSpec {
    /// Tag name without the colon.
    pub name: &'static str,
    /// The argument the tag takes.
    pub arg: Option<Kind>,
    /// The extension that must be required for it.
    pub ext: Option<&'static str>,
}

const fn t(name: &'static str, arg: Option<Kind>, ext: Option<&'static str>) -> TagSpec {
    TagSpec { name, arg, ext }
}

/// :comparator
pub const COMPARATOR: &[TagSpec] = &[t("comparator", Some(Kind::Str), None)];
/// Match types.
pub const MATCH: &[TagSpec] = &[
    t("is", None, None),
    t("contains", None, None),
    t("matches", None, None),
    t("regex", None, Some("regex")),
    t("value", Some(Kind::Str), Some("relational")),
    t("count", Some(Kind::Str), Some("relational")),
];
/// Address parts.
pub const ADDRESS_PART: &[TagSpec] = &[
    t("all", None, None),
    t("localpart", None, None),
    t("domain", None, None),
    t("user", None, Some("subaddress")),
    t("detail", None, Some("subaddress")),
];
/// :index / :last
pub const INDEX: &[TagSpec] = &[
    t("index", Some(Kind::Num), Some("index")),
    t("last", None, Some("index")),
];
/// mime tags for header/address/exists.
pub const MIME: &[TagSpec] = &[
    t("mime", None, Some("mime")),
    t("anychild", None, Some("mime")),
    t("type", None, Some("mime")),
    t("subtype", None, Some("mime")),
    t("contenttype", None, Some("mime")),
    t("param", Some(Kind::StrList), Some("mime")),
];

/// A tag found in the arguments, with its argument.
#[derive(Debug, Clone)]
pub struct FoundTag {
    /// Name.
    pub name: String,
    /// Where.
    pub pos: Pos,
    /// Its argument, if it takes one.
    pub arg: Option<Arg>,
}

/// Split arguments of a command or test.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// Tags in order.
    pub tags: Vec<FoundTag>,
    /// Positional arguments in order.
    pub positional: Vec<Arg>,
}

impl Split {
    /// Whether a tag is present.
    pub fn has(&self, name: &str) -> bool {
        self.tags.iter().any(|t| t.name == name)
    }

    /// The tag's entry, if present.
    pub fn get(&self, name: &str) -> Option<&FoundTag> {
        self.tags.iter().find(|t| t.name == name)
    }
}

/// What is being validated, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Command or test name.
    pub name: &'a str,
    /// "test" or "command".
    pub what: &'static str,
    /// Where.
    pub pos: Pos,
}

/// Split `args` by the allowed tag groups. `has_ext` says whether an extension is
/// required. Returns `None` after reporting an error.
pub fn split_args(
    subject: Subject<'_>,
    args: &[Arg],
    groups: &[&[TagSpec]],
    has_ext: &dyn Fn(&str) -> bool,
    diag: &mut Diagnostics,
) -> Option<Split> {
    let mut out = Split::default();
    let mut ok = true;
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        match arg {
            Arg::Tag(name, pos) => {
                let spec = groups
                    .iter()
                    .flat_map(|g| g.iter())
                    .find(|s| s.name == name && s.ext.is_none_or(has_ext));
                let Some(spec) = spec else {
                    diag.error(
                        *pos,
                        format!(
                            "unknown tagged argument ':{name}' for the {} {} ({})",
                            subject.name, subject.what, subject.name
                        ),
                    );
                    ok = false;
                    continue;
                };
                let tag_arg = match spec.arg {
                    None => None,
                    Some(kind) => match it.peek() {
                        Some(a) if kind.accepts(a) => it.next().cloned(),
                        Some(a) => {
                            diag.error(
                                a.pos(),
                                format!(
                                    "the :{name} tag for the {} {} requires {} as argument, but {} was found",
                                    subject.name,
                                    subject.what,
                                    kind.describe(),
                                    arg_type(a)
                                ),
                            );
                            ok = false;
                            it.next();
                            continue;
                        }
                        None => {
                            diag.error(
                                *pos,
                                format!(
                                    "the :{name} tag for the {} {} requires {} as argument, but none was found",
                                    subject.name,
                                    subject.what,
                                    kind.describe()
                                ),
                            );
                            ok = false;
                            continue;
                        }
                    },
                };
                out.tags.push(FoundTag {
                    name: name.clone(),
                    pos: *pos,
                    arg: tag_arg,
                });
            }
            other => out.positional.push(other.clone()),
        }
    }
    ok.then_some(out)
}

/// Check positional arguments against `(kind, description)` slots.
pub fn check_positional(
    subject: Subject<'_>,
    split: &Split,
    slots: &[(Kind, &str)],
    diag: &mut Diagnostics,
) -> bool {
    let n = split.positional.len();
    if n != slots.len() {
        let pos = split
            .positional
            .get(slots.len())
            .map_or(subject.pos, Arg::pos);
        diag.error(
            pos,
            format!(
                "the {} {} requires {} positional argument(s), but {} were specified",
                subject.name,
                subject.what,
                slots.len(),
                n
            ),
        );
        return false;
    }
    let mut ok = true;
    for (i, ((kind, desc), arg)) in slots.iter().zip(&split.positional).enumerate() {
        if !kind.accepts(arg) {
            diag.error(
                arg.pos(),
                format!(
                    "the {} {} expects {} as positional argument {} ({}), but {} was found",
                    subject.name,
                    subject.what,
                    kind.describe(),
                    i + 1,
                    desc,
                    arg_type(arg)
                ),
            );
            ok = false;
        }
    }
    ok
}

/// The strings of a string or string-list argument.
pub fn strings(arg: &Arg) -> Vec<StrLit> {
    match arg {
        Arg::Str(s) => vec![s.clone()],
        Arg::List(l, _) => l.clone(),
        _ => Vec::new(),
    }
}

/// Whether `name` is a valid variable identifier (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_identifier(name: &str) -> bool {
    let mut c = name.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reports_unknown_tags() {
        let mut d = Diagnostics::default();
        let args = vec![Arg::Tag("all".into(), Pos::default())];
        let s = Subject {
            name: "header",
            what: "test",
            pos: Pos::default(),
        };
        assert!(split_args(s, &args, &[MATCH], &|_| true, &mut d).is_none());
        assert!(
            d.errors[0]
                .message
                .contains("unknown tagged argument ':all' for the header test")
        );
    }

    #[test]
    fn identifiers() {
        for (s, ok) in [
            ("a", true),
            ("_a1", true),
            ("1a", false),
            ("", false),
            ("a.b", false),
        ] {
            assert_eq!(is_identifier(s), ok, "{s}");
        }
    }
}
