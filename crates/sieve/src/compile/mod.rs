//! Compiler: checks the syntax tree (require, known commands, tests and tags, argument
//! counts and types, extension dependencies) and builds the typed [`Script`]; with a
//! loader ([`compile_with_loader`]) it also resolves included scripts (RFC 6609).
//!
//! Trusts the parser's tree. Every problem is reported with `line:column`; the compiler
//! keeps going after an error so a script's author sees all of them at once. Script size,
//! nesting, include depth and include count are bounded by the [`Config`]; include
//! cycles are errors.

use std::collections::BTreeSet;

use crate::Config;
use crate::comparator::Comparator;
use crate::error::{CompileErrors, Diagnostics};
use crate::host::ScriptLocation;
use crate::lexer::Pos;
use crate::matching::{self, MatchType, Matcher, RelOp};
use crate::parser::{self, Arg, CommandNode, StrLit, TestNode};
use crate::script::*;
use crate::validate::{self, Kind, Split, Subject, TagSpec};

mod commands;
mod conditions;
mod strings;

pub use strings::*;

/// Compile a script; on failure, every error found.
pub fn compile(src: &[u8], config: &Config) -> Result<Script, CompileErrors> {
    let (script, diag) = compile_with_diagnostics(src, config);
    match script {
        Some(s) => Ok(s),
        None => Err(CompileErrors(diag.errors)),
    }
}

/// Compile a script and return the diagnostics either way.
pub fn compile_with_diagnostics(src: &[u8], config: &Config) -> (Option<Script>, Diagnostics) {
    let (s, d, _) = compile_inner(src, config, None);
    (s, d)
}

/// Loads an included script's source (`None` when it does not exist).
pub type IncludeLoader<'l> = dyn FnMut(ScriptLocation, &str) -> Option<String> + 'l;

/// Compile a script and every script it includes (RFC 6609), as Pigeonhole does: a
/// missing script (unless `:optional`), a circular include, too deep nesting, too many
/// includes or an included script that does not compile are compile errors.
pub fn compile_with_loader<'l>(
    src: &[u8],
    config: &Config,
    loader: &'l mut IncludeLoader<'l>,
) -> (Option<Script>, Diagnostics) {
    let ctx = IncludeCtx {
        loader,
        stack: Vec::new(),
        done: BTreeSet::new(),
        count: 0,
    };
    let (s, d, _) = compile_inner(src, config, Some(ctx));
    (s, d)
}

/// State of compile-time include resolution.
pub(crate) struct IncludeCtx<'l> {
    loader: &'l mut IncludeLoader<'l>,
    stack: Vec<(ScriptLocation, String)>,
    done: BTreeSet<(ScriptLocation, String)>,
    count: usize,
}

fn compile_inner<'l>(
    src: &[u8],
    config: &Config,
    includes: Option<IncludeCtx<'l>>,
) -> (Option<Script>, Diagnostics, Option<IncludeCtx<'l>>) {
    let mut diag = Diagnostics::default();
    if src.len() > config.max_script_size {
        diag.error(
            Pos::default(),
            format!("script is too large (max {} bytes)", config.max_script_size),
        );
        return (None, diag, includes);
    }
    let tree = parser::parse(src, config.max_nesting, &mut diag);
    if !diag.errors.is_empty() {
        // Like Pigeonhole: a script that does not parse is not validated.
        return (None, diag, includes);
    }
    let mut c = Compiler {
        cfg: config,
        diag,
        exts: BTreeSet::new(),
        loops: Vec::new(),
        includes,
    };
    let body = c.commands(&tree, true);
    let Compiler {
        diag,
        exts,
        includes,
        ..
    } = c;
    if diag.errors.is_empty() {
        let warnings = diag.warnings.clone();
        (
            Some(Script {
                body,
                extensions: exts,
                source: src.to_vec(),
                warnings,
            }),
            diag,
            includes,
        )
    } else {
        (None, diag, includes)
    }
}

/// Compiler state.
pub(crate) struct Compiler<'c, 'l> {
    pub(crate) cfg: &'c Config,
    pub(crate) diag: Diagnostics,
    pub(crate) exts: BTreeSet<String>,
    /// Enclosing foreverypart loops and their names.
    loops: Vec<Option<String>>,
    /// Compile-time include resolution, when a loader was given.
    includes: Option<IncludeCtx<'l>>,
}

fn subj<'a>(name: &'a str, what: &'static str, pos: Pos) -> Subject<'a> {
    Subject { name, what, pos }
}

const TESTS: &[&str] = &[
    "true",
    "false",
    "not",
    "allof",
    "anyof",
    "address",
    "envelope",
    "header",
    "exists",
    "size",
    "body",
    "date",
    "currentdate",
    "string",
    "hasflag",
    "mailboxexists",
    "specialuse_exists",
    "environment",
    "ihave",
    "duplicate",
    "spamtest",
    "virustest",
    "valid_notify_method",
    "notify_method_capability",
    "metadata",
    "metadataexists",
    "servermetadata",
    "servermetadataexists",
];

impl Compiler<'_, '_> {
    /// Resolve an include at compile time (when a loader was given): load and compile
    /// the script, detecting cycles and enforcing the depth and count limits.
    pub(crate) fn resolve_include(
        &mut self,
        location: ScriptLocation,
        name: &str,
        (optional, once): (bool, bool),
        pos: Pos,
    ) {
        let Some(mut ctx) = self.includes.take() else {
            return;
        };
        let key = (location, name.to_string());
        if ctx.stack.contains(&key) && once {
            // `:once` of a script being compiled is fine: it will not run twice.
        } else if ctx.stack.contains(&key) {
            self.err(
                pos,
                format!("include command: circular include of script '{name}'"),
            );
        } else if ctx.stack.len() >= self.cfg.max_include_depth {
            self.err(
                pos,
                format!(
                    "include command: nesting depth limit ({}) exceeded for script '{name}'",
                    self.cfg.max_include_depth
                ),
            );
        } else if !ctx.done.contains(&key) {
            ctx.count += 1;
            if ctx.count > self.cfg.max_includes {
                self.err(
                    pos,
                    format!(
                        "include command: too many included scripts (max {})",
                        self.cfg.max_includes
                    ),
                );
            } else {
                match (ctx.loader)(location, name) {
                    None if optional => {}
                    None => self.err(
                        pos,
                        format!("include command: included script '{name}' does not exist"),
                    ),
                    Some(src) => {
                        ctx.stack.push(key.clone());
                        let (script, diag, back) =
                            compile_inner(src.as_bytes(), self.cfg, Some(ctx));
                        ctx = match back {
                            Some(c) => c,
                            None => return,
                        };
                        ctx.stack.pop();
                        if script.is_none() {
                            for e in diag.errors {
                                self.diag.push(e);
                            }
                            self.err(
                                pos,
                                format!(
                                    "include command: failed to compile included script '{name}'"
                                ),
                            );
                        } else {
                            ctx.done.insert(key);
                        }
                    }
                }
            }
        }
        self.includes = Some(ctx);
    }

    pub(crate) fn has(&self, ext: &str) -> bool {
        self.exts.contains(ext)
    }

    pub(crate) fn err(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diag.error(pos, msg);
    }

    pub(crate) fn split(
        &mut self,
        name: &str,
        what: &'static str,
        pos: Pos,
        args: &[Arg],
        groups: &[&[TagSpec]],
    ) -> Option<Split> {
        let exts = self.exts.clone();
        let has = move |e: &str| exts.contains(e);
        validate::split_args(subj(name, what, pos), args, groups, &has, &mut self.diag)
    }

    pub(crate) fn positional(
        &mut self,
        name: &str,
        what: &'static str,
        pos: Pos,
        s: &Split,
        slots: &[(Kind, &str)],
    ) -> bool {
        validate::check_positional(subj(name, what, pos), s, slots, &mut self.diag)
    }

    /// Turn a string literal into a value: encoded-character and variable references.
    pub(crate) fn value(&mut self, s: &StrLit) -> Value {
        let text = if self.has("encoded-character") {
            match decode_encoded(&s.value) {
                Ok(t) => t,
                Err(e) => {
                    self.err(s.pos, e);
                    s.value.clone()
                }
            }
        } else {
            s.value.clone()
        };
        if self.has("variables") {
            split_variables(&text, self.cfg.max_match_values)
        } else {
            Value::lit(text)
        }
    }

    pub(crate) fn values(&mut self, arg: &Arg) -> Vec<Value> {
        validate::strings(arg)
            .iter()
            .map(|s| self.value(s))
            .collect()
    }

    pub(crate) fn str_value(&mut self, arg: Option<&Arg>) -> Value {
        match arg {
            Some(Arg::Str(s)) => self.value(s),
            Some(Arg::List(l, _)) => l.first().map(|s| self.value(s)).unwrap_or_default(),
            _ => Value::default(),
        }
    }

    fn no_tests(&mut self, name: &str, what: &'static str, pos: Pos, tests: &[TestNode]) -> bool {
        if tests.is_empty() {
            return true;
        }
        self.err(
            pos,
            format!("the {name} {what} accepts no sub-tests, but tests were specified"),
        );
        false
    }

    fn no_block(&mut self, node: &CommandNode) -> bool {
        if node.block.is_none() {
            return true;
        }
        self.err(
            node.pos,
            format!(
                "the {} command does not accept a block, but one was specified",
                node.name
            ),
        );
        false
    }

    /// Build a matcher from comparator and match-type tags.
    pub(crate) fn matcher(&mut self, name: &str, s: &Split) -> Option<Matcher> {
        let mut m = Matcher::default();
        let mut seen_mt: Option<&str> = None;
        let mut ok = true;
        let mut cmp_seen = false;
        for tag in &s.tags {
            let mt = match tag.name.as_str() {
                "is" => MatchType::Is,
                "contains" => MatchType::Contains,
                "matches" => MatchType::Matches,
                "regex" => MatchType::Regex,
                "value" | "count" => {
                    let op = match &tag.arg {
                        Some(Arg::Str(l)) => RelOp::from_name(&l.value),
                        _ => None,
                    };
                    let Some(op) = op else {
                        self.err(
                            tag.pos,
                            format!(
                                "invalid relational match type operator for the :{} match type",
                                tag.name
                            ),
                        );
                        ok = false;
                        continue;
                    };
                    if tag.name == "value" {
                        MatchType::Value(op)
                    } else {
                        MatchType::Count(op)
                    }
                }
                "comparator" => {
                    if cmp_seen {
                        self.err(
                            tag.pos,
                            format!("multiple comparators specified for the {name} test"),
                        );
                        ok = false;
                    }
                    cmp_seen = true;
                    let cname = match &tag.arg {
                        Some(Arg::Str(l)) => l.value.clone(),
                        _ => String::new(),
                    };
                    match Comparator::from_name(&cname) {
                        Some(c) => {
                            if let Some(cap) = c.capability()
                                && !self.has(cap)
                            {
                                self.err(
                                    tag.pos,
                                    format!(
                                        "unknown comparator '{cname}' (missing require \"{cap}\")"
                                    ),
                                );
                                ok = false;
                            }
                            m.comparator = c;
                        }
                        None => {
                            self.err(tag.pos, format!("unknown comparator '{cname}'"));
                            ok = false;
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(prev) = seen_mt {
                self.err(tag.pos, format!("unexpected tagged argument ':{}' for the {name} test: match type :{prev} already specified", tag.name));
                ok = false;
            }
            seen_mt = Some(match mt {
                MatchType::Is => "is",
                MatchType::Contains => "contains",
                MatchType::Matches => "matches",
                MatchType::Regex => "regex",
                MatchType::Value(_) => "value",
                MatchType::Count(_) => "count",
            });
            m.match_type = mt;
        }
        if matches!(
            m.match_type,
            MatchType::Contains | MatchType::Matches | MatchType::Regex
        ) && !m.comparator.supports_substring()
        {
            self.err(
                s.tags.first().map_or(Pos::default(), |t| t.pos),
                format!("the {name} test: comparator does not support the specified match type"),
            );
            ok = false;
        }
        ok.then_some(m)
    }

    /// Check constant regex keys at compile time.
    pub(crate) fn check_keys(&mut self, m: &Matcher, keys: &[Value], pos: Pos) {
        if m.match_type == MatchType::Regex {
            for k in keys {
                if let Some(c) = k.constant()
                    && let Err(e) = matching::compile_regex(&c, m.comparator)
                {
                    self.err(pos, e);
                }
            }
        }
    }

    fn address_part(&mut self, s: &Split) -> AddressPart {
        let mut part = AddressPart::All;
        let mut seen = false;
        for tag in &s.tags {
            let p = match tag.name.as_str() {
                "all" => AddressPart::All,
                "localpart" => AddressPart::LocalPart,
                "domain" => AddressPart::Domain,
                "user" => AddressPart::User,
                "detail" => AddressPart::Detail,
                _ => continue,
            };
            if seen {
                self.err(tag.pos, "multiple address-part tags specified");
            }
            seen = true;
            part = p;
        }
        part
    }

    fn index(&mut self, s: &Split) -> Option<IndexOpt> {
        let index = s.get("index").and_then(|t| match t.arg {
            Some(Arg::Number(n, _)) => Some(n),
            _ => None,
        });
        match (index, s.get("last")) {
            (Some(i), last) => Some(IndexOpt {
                index: i,
                last: last.is_some(),
            }),
            (None, Some(l)) => {
                self.err(
                    l.pos,
                    "the :last tag cannot be specified without the :index tag",
                );
                None
            }
            (None, None) => None,
        }
    }

    fn mime_opts(&mut self, name: &str, s: &Split, allow_option: bool) -> MimeOpts {
        let mut o = MimeOpts {
            mime: s.has("mime"),
            anychild: s.has("anychild"),
            option: None,
        };
        for tag in &s.tags {
            let opt = match tag.name.as_str() {
                "type" => MimeOption::Type,
                "subtype" => MimeOption::Subtype,
                "contenttype" => MimeOption::ContentType,
                "param" => {
                    MimeOption::Param(tag.arg.as_ref().map(|a| self.values(a)).unwrap_or_default())
                }
                _ => continue,
            };
            if !o.mime {
                self.err(
                    tag.pos,
                    format!(
                        "the :{} tag for the {name} test requires the :mime tag",
                        tag.name
                    ),
                );
            } else if !allow_option {
                self.err(
                    tag.pos,
                    format!(
                        "unknown tagged argument ':{}' for the {name} test",
                        tag.name
                    ),
                );
            }
            if o.option.is_some() {
                self.err(
                    tag.pos,
                    format!("multiple mime options specified for the {name} test"),
                );
            }
            o.option = Some(opt);
        }
        if o.anychild
            && !o.mime
            && let Some(t) = s.get("anychild")
        {
            self.err(
                t.pos,
                format!("the :anychild tag for the {name} test requires the :mime tag"),
            );
        }
        o
    }

    fn header_names(&mut self, arg: &Arg, _test: &str) -> Vec<Value> {
        // Invalid names are not errors (Pigeonhole): they simply never match.
        self.values(arg)
    }

    // ---------------------------------------------------------------- commands

    pub(crate) fn commands(&mut self, nodes: &[CommandNode], top: bool) -> Vec<Cmd> {
        let mut out: Vec<Cmd> = Vec::new();
        let mut require_ok = top;
        let mut prev_if = false;
        for node in nodes {
            if node.name == "require" {
                if !require_ok {
                    self.err(node.pos, "the require command can only be placed at top level at the beginning of the script");
                } else {
                    self.require(node);
                }
                prev_if = false;
                continue;
            }
            if require_ok && top {
                self.check_dependencies(node.pos);
            }
            require_ok = false;
            match node.name.as_str() {
                "if" => {
                    if let Some((test, block)) = self.conditional(node) {
                        out.push(Cmd {
                            pos: node.pos,
                            kind: Command::If {
                                branches: vec![(test, block)],
                                otherwise: None,
                            },
                        });
                        prev_if = true;
                    } else {
                        out.push(Cmd {
                            pos: node.pos,
                            kind: Command::If {
                                branches: Vec::new(),
                                otherwise: None,
                            },
                        });
                        prev_if = true;
                    }
                    continue;
                }
                "elsif" | "else" => {
                    if !prev_if {
                        self.err(
                            node.pos,
                            format!(
                                "the {} command must follow an if or elsif command",
                                node.name
                            ),
                        );
                        continue;
                    }
                    if node.name == "elsif" {
                        let branch = self.conditional(node);
                        if let (
                            Some(b),
                            Some(Cmd {
                                kind: Command::If { branches, .. },
                                ..
                            }),
                        ) = (branch, out.last_mut())
                        {
                            branches.push(b);
                        }
                    } else {
                        prev_if = false;
                        let ok = node.args.is_empty()
                            && self.no_tests("else", "command", node.pos, &node.tests);
                        if !node.args.is_empty() {
                            self.err(node.pos, "the else command accepts no arguments");
                        }
                        let Some(block) = &node.block else {
                            self.err(node.pos, "the else command requires a command block");
                            continue;
                        };
                        let body = self.commands(block, false);
                        if let (
                            true,
                            Some(Cmd {
                                kind: Command::If { otherwise, .. },
                                ..
                            }),
                        ) = (ok, out.last_mut())
                        {
                            *otherwise = Some(body);
                        }
                    }
                    continue;
                }
                _ => {}
            }
            prev_if = false;
            if let Some(kind) = self.command(node) {
                out.push(Cmd {
                    pos: node.pos,
                    kind,
                });
            }
        }
        if require_ok && top {
            self.check_dependencies(nodes.last().map_or(Pos::default(), |n| n.pos));
        }
        out
    }

    fn require(&mut self, node: &CommandNode) {
        let Some(s) = self.split("require", "command", node.pos, &node.args, &[]) else {
            return;
        };
        if !self.positional(
            "require",
            "command",
            node.pos,
            &s,
            &[(Kind::StrList, "capabilities")],
        ) {
            return;
        }
        self.no_tests("require", "command", node.pos, &node.tests);
        self.no_block(node);
        let list = validate::strings(&s.positional[0]);
        for lit in &list {
            let name = lit.value.to_ascii_lowercase();
            if self.known_extension(&name) {
                for i in validate::implied(&name) {
                    self.exts.insert((*i).to_string());
                }
                self.exts.insert(name);
            } else {
                self.err(
                    lit.pos,
                    format!("require command: unknown Sieve capability '{}'", lit.value),
                );
            }
        }
    }

    /// Extension dependencies, checked once all require commands are seen.
    fn check_dependencies(&mut self, pos: Pos) {
        if self.has("extracttext") && !self.has("foreverypart") {
            self.err(pos, "require command: the extracttext extension cannot be used without the foreverypart extension");
            self.exts.insert("foreverypart".into());
        }
    }

    pub(crate) fn known_extension(&self, name: &str) -> bool {
        if self.cfg.disabled_extensions.iter().any(|d| d == name) {
            return false;
        }
        if name == "vnd.dovecot.testsuite" {
            return self.cfg.testsuite;
        }
        if name.starts_with("vnd.dovecot.")
            && matches!(
                name,
                "vnd.dovecot.pipe" | "vnd.dovecot.filter" | "vnd.dovecot.execute"
            )
        {
            return self.cfg.extprograms;
        }
        validate::EXTENSIONS.contains(&name)
    }

    fn conditional(&mut self, node: &CommandNode) -> Option<(Test, Vec<Cmd>)> {
        let name = node.name.as_str();
        if !node.args.is_empty() {
            self.err(node.pos, format!("the {name} command accepts no arguments"));
        }
        let Some(block) = &node.block else {
            self.err(
                node.pos,
                format!("the {name} command requires a command block"),
            );
            return None;
        };
        if node.tests.len() != 1 || node.test_list {
            self.err(
                node.pos,
                format!("the {name} command requires exactly one test"),
            );
            let _ = self.commands(block, false);
            return None;
        }
        let tnode = &node.tests[0];
        // ihave: a block guarded by unknown capabilities is not compiled.
        if tnode.name == "ihave"
            && self.has("ihave")
            && let Some(Test::Ihave(false)) = self.test(tnode, 0)
        {
            return Some((
                Test::Ihave(false),
                vec![Cmd {
                    pos: node.pos,
                    kind: Command::Unsupported("ihave".into()),
                }],
            ));
        }
        let test = self.test(tnode, 0);
        let body = self.commands(block, false);
        Some((test?, body))
    }
}

const fn tag(name: &'static str, arg: Option<Kind>, ext: Option<&'static str>) -> TagSpec {
    TagSpec { name, arg, ext }
}

const FLAGS: &[TagSpec] = &[tag("flags", Some(Kind::StrList), Some("imap4flags"))];
const FILEINTO: &[TagSpec] = &[
    tag("copy", None, Some("copy")),
    tag("create", None, Some("mailbox")),
    tag("specialuse", Some(Kind::Str), Some("special-use")),
];
const COPY: &[TagSpec] = &[tag("copy", None, Some("copy"))];
const MODIFIERS: &[TagSpec] = &[
    tag("lower", None, None),
    tag("upper", None, None),
    tag("lowerfirst", None, None),
    tag("upperfirst", None, None),
    tag("quotewildcard", None, None),
    tag("quoteregex", None, Some("regex")),
    tag("encodeurl", None, Some("enotify")),
    tag("length", None, None),
];
const INCLUDE: &[TagSpec] = &[
    tag("personal", None, None),
    tag("global", None, None),
    tag("once", None, None),
    tag("optional", None, None),
];
const LAST: &[TagSpec] = &[tag("last", None, None)];
const INDEX_DH: &[TagSpec] = &[tag("index", Some(Kind::Num), None), tag("last", None, None)];
const NOTIFY: &[TagSpec] = &[
    tag("from", Some(Kind::Str), None),
    tag("importance", Some(Kind::Str), None),
    tag("options", Some(Kind::StrList), None),
    tag("message", Some(Kind::Str), None),
];
const NAME: &[TagSpec] = &[tag("name", Some(Kind::Str), None)];
const FIRST: &[TagSpec] = &[tag("first", Some(Kind::Num), None)];
const VACATION: &[TagSpec] = &[
    tag("days", Some(Kind::Num), None),
    tag("seconds", Some(Kind::Num), Some("vacation-seconds")),
    tag("subject", Some(Kind::Str), None),
    tag("from", Some(Kind::Str), None),
    tag("addresses", Some(Kind::StrList), None),
    tag("mime", None, None),
    tag("handle", Some(Kind::Str), None),
];
const SIZE: &[TagSpec] = &[tag("over", None, None), tag("under", None, None)];
const BODY: &[TagSpec] = &[
    tag("raw", None, None),
    tag("content", Some(Kind::StrList), None),
    tag("text", None, None),
];
const ZONE: &[TagSpec] = &[
    tag("zone", Some(Kind::Str), None),
    tag("originalzone", None, None),
];
const ZONE_CUR: &[TagSpec] = &[tag("zone", Some(Kind::Str), None)];
const DUPLICATE: &[TagSpec] = &[
    tag("handle", Some(Kind::Str), None),
    tag("header", Some(Kind::Str), None),
    tag("uniqueid", Some(Kind::Str), None),
    tag("seconds", Some(Kind::Num), None),
    tag("last", None, None),
];
const PIPE: &[TagSpec] = &[tag("copy", None, Some("copy")), tag("try", None, None)];
const FILTER: &[TagSpec] = &[tag("try", None, None)];
const EXECUTE: &[TagSpec] = &[
    tag("input", Some(Kind::Str), None),
    tag("pipe", None, None),
    tag("output", Some(Kind::Str), None),
];
const PERCENT: &[TagSpec] = &[tag("percent", None, Some("spamtestplus"))];

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(src: &str) -> Vec<String> {
        match compile(src.as_bytes(), &Config::default()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn valid_scripts() {
        for src in [
            "keep;",
            "require \"fileinto\"; if header :contains \"subject\" \"x\" { fileinto \"a\"; } elsif true { stop; } else { discard; }",
            "require [\"variables\", \"relational\", \"comparator-i;ascii-numeric\"]; set \"a\" \"1\"; if string :value \"gt\" :comparator \"i;ascii-numeric\" \"${a}\" \"0\" { keep; }",
            "if size :over 1M { discard; }",
            "if address :domain [\"from\", \"to\"] \"example.com\" { keep; }",
        ] {
            assert!(errs(src).is_empty(), "{src}: {:?}", errs(src));
        }
    }

    #[test]
    fn invalid_scripts() {
        let cases = [
            ("fileinto \"x\";", "1:1", "unknown command 'fileinto'"),
            ("require \"nonsense\";", "1:9", "unknown Sieve capability"),
            (
                "if header :all \"a\" \"b\" { }",
                "1:11",
                "unknown tagged argument ':all' for the header test",
            ),
            (
                "if header \"a\" { }",
                "1:4",
                "requires 2 positional argument(s), but 1",
            ),
            ("if size 5 { }", "1:4", "exactly one of the :over or :under"),
            (
                "keep; require \"fileinto\";",
                "1:7",
                "require command can only be placed",
            ),
            ("elsif true { }", "1:1", "must follow an if"),
            ("header \"a\" \"b\";", "1:1", "use test 'header'"),
        ];
        for (src, pos, want) in cases {
            let e = errs(src);
            assert!(
                e.first()
                    .is_some_and(|e| e.starts_with(pos) && e.contains(want)),
                "{src}: {e:?}"
            );
        }
    }

    #[test]
    fn includes_resolved_at_compile_time() {
        let scripts = [
            ("a", "require \"include\"; include \"b\";"),
            ("b", "require \"include\"; include \"a\";"),
            ("ok", "keep;"),
            ("once", "require \"include\"; include :once \"once\";"),
        ];
        let cases = [
            ("require \"include\"; include \"ok\";", None),
            ("require \"include\"; include :optional \"missing\";", None),
            (
                "require \"include\"; include \"missing\";",
                Some("does not exist"),
            ),
            (
                "require \"include\"; include \"a\";",
                Some("circular include"),
            ),
            ("require \"include\"; include \"once\";", None),
        ];
        for (src, want) in cases {
            let mut loader = |_: ScriptLocation, n: &str| {
                scripts
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| (*v).to_string())
            };
            let (s, d) = compile_with_loader(src.as_bytes(), &Config::default(), &mut loader);
            match want {
                None => assert!(s.is_some(), "{src}: {:?}", d.errors),
                Some(w) => assert!(
                    d.errors.iter().any(|e| e.message.contains(w)),
                    "{src}: {:?}",
                    d.errors
                ),
            }
        }
    }

    #[test]
    fn variables_split() {
        let v = split_variables("a${b}c${1}${x.y}${bad-}", 10);
        assert_eq!(
            v.pieces,
            vec![
                Piece::Lit("a".into()),
                Piece::Var("b".into()),
                Piece::Lit("c".into()),
                Piece::Match(1),
                Piece::Var("x.y".into()),
                Piece::Lit("${bad-}".into())
            ]
        );
    }

    #[test]
    fn encoded_character_table() {
        let cases = [
            ("${hex:40}", "@"),
            ("${hex: 53 69 65 76 65 }", "Sieve"),
            ("${unicode:40}", "@"),
            ("${UNICODE:0000a9}", "©"),
            ("${hex:4}", "${hex:4}"),
            ("$${hex:40}", "$@"),
            ("${hex:}", "${hex:}"),
        ];
        for (i, want) in cases {
            assert_eq!(decode_encoded(i).as_deref(), Ok(want), "{i}");
        }
        assert!(decode_encoded("${unicode:D800}").is_err());
    }
}
