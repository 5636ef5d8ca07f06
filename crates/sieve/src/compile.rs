//! Compiler: checks the syntax tree (require, known commands, tests and tags, argument
//! counts and types, extension dependencies) and builds the typed [`Script`].
//!
//! Trusts the parser's tree. Every problem is reported with `line:column`; the compiler
//! keeps going after an error so a script's author sees all of them at once. Script size
//! and nesting are bounded by the [`Config`].

use std::collections::BTreeSet;

use crate::Config;
use crate::comparator::Comparator;
use crate::error::{CompileError, CompileErrors, Diagnostics};
use crate::lexer::Pos;
use crate::matching::{self, MatchType, Matcher, RelOp};
use crate::parser::{self, Arg, CommandNode, StrLit, TestNode};
use crate::script::*;
use crate::validate::{self, Kind, Split, Subject, TagSpec};

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
    let mut diag = Diagnostics::default();
    if src.len() > config.max_script_size {
        diag.error(Pos::default(), format!("script is too large (max {} bytes)", config.max_script_size));
        return (None, diag);
    }
    let tree = parser::parse(src, config.max_nesting, &mut diag);
    if !diag.errors.is_empty() {
        // Like Pigeonhole: a script that does not parse is not validated.
        return (None, diag);
    }
    let mut c = Compiler { cfg: config, diag, exts: BTreeSet::new(), loops: Vec::new() };
    let body = c.commands(&tree, true);
    let Compiler { diag, exts, .. } = c;
    if diag.errors.is_empty() {
        let warnings = diag.warnings.clone();
        (Some(Script { body, extensions: exts, source: src.to_vec(), warnings }), diag)
    } else {
        (None, diag)
    }
}

/// Compiler state.
pub(crate) struct Compiler<'c> {
    pub(crate) cfg: &'c Config,
    pub(crate) diag: Diagnostics,
    pub(crate) exts: BTreeSet<String>,
    /// Enclosing foreverypart loops and their names.
    loops: Vec<Option<String>>,
}

fn subj<'a>(name: &'a str, what: &'static str, pos: Pos) -> Subject<'a> {
    Subject { name, what, pos }
}

const TESTS: &[&str] = &[
    "true", "false", "not", "allof", "anyof", "address", "envelope", "header", "exists", "size", "body", "date",
    "currentdate", "string", "hasflag", "mailboxexists", "specialuse_exists", "environment", "ihave", "duplicate",
    "spamtest", "virustest", "valid_notify_method", "notify_method_capability", "metadata", "metadataexists",
    "servermetadata", "servermetadataexists",
];

impl Compiler<'_> {
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

    pub(crate) fn positional(&mut self, name: &str, what: &'static str, pos: Pos, s: &Split, slots: &[(Kind, &str)]) -> bool {
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
        validate::strings(arg).iter().map(|s| self.value(s)).collect()
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
        self.err(pos, format!("the {name} {what} accepts no sub-tests, but tests were specified"));
        false
    }

    fn no_block(&mut self, node: &CommandNode) -> bool {
        if node.block.is_none() {
            return true;
        }
        self.err(node.pos, format!("the {} command does not accept a block, but one was specified", node.name));
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
                        self.err(tag.pos, format!("invalid relational match type operator for the :{} match type", tag.name));
                        ok = false;
                        continue;
                    };
                    if tag.name == "value" { MatchType::Value(op) } else { MatchType::Count(op) }
                }
                "comparator" => {
                    if cmp_seen {
                        self.err(tag.pos, format!("multiple comparators specified for the {name} test"));
                        ok = false;
                    }
                    cmp_seen = true;
                    let cname = match &tag.arg {
                        Some(Arg::Str(l)) => l.value.clone(),
                        _ => String::new(),
                    };
                    match Comparator::from_name(&cname) {
                        Some(c) => {
                            if let Some(cap) = c.capability() {
                                if !self.has(cap) {
                                    self.err(tag.pos, format!("unknown comparator '{cname}' (missing require \"{cap}\")"));
                                    ok = false;
                                }
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
        if matches!(m.match_type, MatchType::Contains | MatchType::Matches | MatchType::Regex)
            && !m.comparator.supports_substring()
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
                if let Some(c) = k.constant() {
                    if let Err(e) = matching::compile_regex(&c, m.comparator) {
                        self.err(pos, e);
                    }
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
            (Some(i), last) => Some(IndexOpt { index: i, last: last.is_some() }),
            (None, Some(l)) => {
                self.err(l.pos, "the :last tag cannot be specified without the :index tag");
                None
            }
            (None, None) => None,
        }
    }

    fn mime_opts(&mut self, name: &str, s: &Split, allow_option: bool) -> MimeOpts {
        let mut o = MimeOpts { mime: s.has("mime"), anychild: s.has("anychild"), option: None };
        for tag in &s.tags {
            let opt = match tag.name.as_str() {
                "type" => MimeOption::Type,
                "subtype" => MimeOption::Subtype,
                "contenttype" => MimeOption::ContentType,
                "param" => MimeOption::Param(tag.arg.as_ref().map(|a| self.values(a)).unwrap_or_default()),
                _ => continue,
            };
            if !o.mime {
                self.err(tag.pos, format!("the :{} tag for the {name} test requires the :mime tag", tag.name));
            } else if !allow_option {
                self.err(tag.pos, format!("unknown tagged argument ':{}' for the {name} test", tag.name));
            }
            if o.option.is_some() {
                self.err(tag.pos, format!("multiple mime options specified for the {name} test"));
            }
            o.option = Some(opt);
        }
        if o.anychild && !o.mime {
            if let Some(t) = s.get("anychild") {
                self.err(t.pos, format!("the :anychild tag for the {name} test requires the :mime tag"));
            }
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
            require_ok = false;
            match node.name.as_str() {
                "if" => {
                    if let Some((test, block)) = self.conditional(node) {
                        out.push(Cmd { pos: node.pos, kind: Command::If { branches: vec![(test, block)], otherwise: None } });
                        prev_if = true;
                    } else {
                        out.push(Cmd { pos: node.pos, kind: Command::If { branches: Vec::new(), otherwise: None } });
                        prev_if = true;
                    }
                    continue;
                }
                "elsif" | "else" => {
                    if !prev_if {
                        self.err(node.pos, format!("the {} command must follow an if or elsif command", node.name));
                        continue;
                    }
                    if node.name == "elsif" {
                        let branch = self.conditional(node);
                        if let (Some(b), Some(Cmd { kind: Command::If { branches, .. }, .. })) = (branch, out.last_mut()) {
                            branches.push(b);
                        }
                    } else {
                        prev_if = false;
                        let ok = node.args.is_empty() && self.no_tests("else", "command", node.pos, &node.tests);
                        if !node.args.is_empty() {
                            self.err(node.pos, "the else command accepts no arguments");
                        }
                        let Some(block) = &node.block else {
                            self.err(node.pos, "the else command requires a command block");
                            continue;
                        };
                        let body = self.commands(block, false);
                        if let (true, Some(Cmd { kind: Command::If { otherwise, .. }, .. })) = (ok, out.last_mut()) {
                            *otherwise = Some(body);
                        }
                    }
                    continue;
                }
                _ => {}
            }
            prev_if = false;
            if let Some(kind) = self.command(node) {
                out.push(Cmd { pos: node.pos, kind });
            }
        }
        out
    }

    fn require(&mut self, node: &CommandNode) {
        let Some(s) = self.split("require", "command", node.pos, &node.args, &[]) else { return };
        if !self.positional("require", "command", node.pos, &s, &[(Kind::StrList, "capabilities")]) {
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
                self.err(lit.pos, format!("require command: unknown Sieve capability '{}'", lit.value));
            }
        }
        if self.has("extracttext") && !self.has("foreverypart") {
            self.err(node.pos, "require command: the extracttext extension cannot be used without the foreverypart extension");
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
        validate::EXTENSIONS.contains(&name)
    }

    fn conditional(&mut self, node: &CommandNode) -> Option<(Test, Vec<Cmd>)> {
        let name = node.name.as_str();
        if !node.args.is_empty() {
            self.err(node.pos, format!("the {name} command accepts no arguments"));
        }
        let Some(block) = &node.block else {
            self.err(node.pos, format!("the {name} command requires a command block"));
            return None;
        };
        if node.tests.len() != 1 || node.test_list {
            self.err(node.pos, format!("the {name} command requires exactly one test"));
            let _ = self.commands(block, false);
            return None;
        }
        let tnode = &node.tests[0];
        // ihave: a block guarded by unknown capabilities is not compiled.
        if tnode.name == "ihave" && self.has("ihave") {
            if let Some(Test::Ihave(false)) = self.test(tnode, 0) {
                return Some((Test::Ihave(false), vec![Cmd { pos: node.pos, kind: Command::Unsupported("ihave".into()) }]));
            }
        }
        let test = self.test(tnode, 0);
        let body = self.commands(block, false);
        Some((test?, body))
    }

    fn command(&mut self, node: &CommandNode) -> Option<Command> {
        let name = node.name.as_str();
        let pos = node.pos;
        if self.has("vnd.dovecot.testsuite") {
            if let Some(r) = crate::testsuite::compile_command(self, node) {
                return r;
            }
        }
        let known = match name {
            "stop" | "keep" | "discard" | "redirect" => true,
            "fileinto" => self.has("fileinto"),
            "reject" => self.has("reject"),
            "ereject" => self.has("ereject"),
            "set" => self.has("variables"),
            "vacation" => self.has("vacation"),
            "setflag" | "addflag" | "removeflag" => self.has("imap4flags"),
            "include" | "return" | "global" => self.has("include"),
            "addheader" | "deleteheader" => self.has("editheader"),
            "notify" => self.has("enotify"),
            "foreverypart" | "break" => self.has("foreverypart"),
            "extracttext" => self.has("extracttext"),
            "debug_log" => self.has("vnd.dovecot.debug"),
            "error" => self.has("ihave"),
            "pipe" => self.has("vnd.dovecot.pipe"),
            "filter" => self.has("vnd.dovecot.filter"),
            "execute" => self.has("vnd.dovecot.execute"),
            _ => false,
        };
        if !known {
            if TESTS.contains(&name) {
                self.err(pos, format!("unknown command '{name}': '{name}' is a test; use test '{name}' as a test, not as a command"));
            } else {
                self.err(pos, format!("unknown command '{name}' (possibly a missing require)"));
            }
            if let Some(b) = &node.block {
                let _ = self.commands(b, false);
            }
            return None;
        }
        if name != "foreverypart" {
            if !self.no_block(node) {
                return None;
            }
        }
        if !self.no_tests(name, "command", pos, &node.tests) {
            return None;
        }
        let args = &node.args;
        match name {
            "stop" | "discard" | "return" => {
                let s = self.split(name, "command", pos, args, &[])?;
                if !self.positional(name, "command", pos, &s, &[]) {
                    return None;
                }
                Some(match name {
                    "stop" => Command::Stop,
                    "discard" => Command::Discard,
                    _ => Command::Return,
                })
            }
            "keep" => {
                let s = self.split(name, "command", pos, args, &[FLAGS])?;
                if !self.positional(name, "command", pos, &s, &[]) {
                    return None;
                }
                Some(Command::Keep { flags: self.flags_tag(&s) })
            }
            "fileinto" => {
                let s = self.split(name, "command", pos, args, &[FLAGS, FILEINTO])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "folder")]) {
                    return None;
                }
                let mailbox = self.str_value(s.positional.first());
                if let Some(c) = mailbox.constant() {
                    if let Err(e) = check_mailbox_name(&c) {
                        self.err(pos, format!("fileinto command: invalid folder name '{}' specified: {e}", c.escape_default()));
                    }
                }
                let special_use = s.get("specialuse").map(|t| self.str_value(t.arg.as_ref()));
                Some(Command::FileInto {
                    mailbox,
                    copy: s.has("copy"),
                    create: s.has("create"),
                    flags: self.flags_tag(&s),
                    special_use,
                })
            }
            "redirect" => {
                let s = self.split(name, "command", pos, args, &[COPY])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "address")]) {
                    return None;
                }
                let address = self.str_value(s.positional.first());
                if let Some(c) = address.constant() {
                    if crate::actions::normalize_redirect(&c).is_none() {
                        self.err(pos, format!("redirect command: specified redirect address '{c}' is invalid"));
                    }
                }
                Some(Command::Redirect { address, copy: s.has("copy") })
            }
            "reject" | "ereject" => {
                let s = self.split(name, "command", pos, args, &[])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "reason")]) {
                    return None;
                }
                let reason = self.str_value(s.positional.first());
                Some(Command::Reject { reason, extended: name == "ereject" })
            }
            "set" => {
                let s = self.split(name, "command", pos, args, &[MODIFIERS])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "name"), (Kind::Str, "value")]) {
                    return None;
                }
                let vname = self.var_name(s.positional.first(), pos)?;
                let value = self.str_value(s.positional.get(1));
                let modifiers = self.modifiers(&s)?;
                Some(Command::Set { name: vname, value, modifiers })
            }
            "vacation" => self.vacation(node),
            "setflag" | "addflag" | "removeflag" => {
                let s = self.split(name, "command", pos, args, &[])?;
                let op = match name {
                    "setflag" => FlagOp::Set,
                    "addflag" => FlagOp::Add,
                    _ => FlagOp::Remove,
                };
                match s.positional.len() {
                    1 => {
                        if !self.positional(name, "command", pos, &s, &[(Kind::StrList, "flag list")]) {
                            return None;
                        }
                        let flags = self.values(&s.positional[0]);
                        Some(Command::Flags { op, var: None, flags })
                    }
                    2 => {
                        if !self.positional(name, "command", pos, &s, &[(Kind::Str, "variable name"), (Kind::StrList, "flag list")]) {
                            return None;
                        }
                        if !self.has("variables") {
                            self.err(pos, format!("the {name} command: variable argument requires the variables extension"));
                            return None;
                        }
                        let var = self.var_name(s.positional.first(), pos)?;
                        let flags = self.values(&s.positional[1]);
                        Some(Command::Flags { op, var: Some(var), flags })
                    }
                    _ => {
                        self.positional(name, "command", pos, &s, &[(Kind::StrList, "flag list")]);
                        None
                    }
                }
            }
            "include" => {
                let s = self.split(name, "command", pos, args, &[INCLUDE])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "script name")]) {
                    return None;
                }
                if s.has("personal") && s.has("global") {
                    self.err(pos, "include command: :personal and :global cannot both be specified");
                    return None;
                }
                let Some(Arg::Str(lit)) = s.positional.first() else { return None };
                let sname = lit.value.clone();
                if sname.is_empty() || sname.contains('/') || sname.chars().any(char::is_control) {
                    self.err(pos, format!("include command: invalid script name '{}'", sname.escape_default()));
                    return None;
                }
                Some(Command::Include { global: s.has("global"), once: s.has("once"), optional: s.has("optional"), name: sname })
            }
            "global" => {
                let s = self.split(name, "command", pos, args, &[])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::StrList, "variable names")]) {
                    return None;
                }
                if !self.has("variables") {
                    self.err(pos, "the global command requires the variables extension");
                    return None;
                }
                let mut names = Vec::new();
                for lit in validate::strings(&s.positional[0]) {
                    if !validate::is_identifier(&lit.value) {
                        self.err(lit.pos, format!("global command: invalid variable name '{}'", lit.value));
                    } else {
                        names.push(lit.value.to_ascii_lowercase());
                    }
                }
                Some(Command::Global(names))
            }
            "addheader" => {
                let s = self.split(name, "command", pos, args, &[LAST])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "field name"), (Kind::Str, "value")]) {
                    return None;
                }
                let fname = self.str_value(s.positional.first());
                let value = self.str_value(s.positional.get(1));
                if let Some(c) = fname.constant() {
                    if !valid_field_name(&c) {
                        self.err(pos, format!("addheader command: specified field name '{c}' is invalid"));
                    }
                }
                if let Some(c) = value.constant() {
                    if c.chars().any(|ch| ch == '\0') || !valid_field_value(&c) {
                        self.err(pos, format!("addheader command: specified value '{c}' is invalid"));
                    } else if c.len() > self.cfg.max_header_size {
                        self.err(pos, format!("addheader command: header value is too large (max {} bytes)", self.cfg.max_header_size));
                    }
                }
                Some(Command::AddHeader { last: s.has("last"), name: fname, value })
            }
            "deleteheader" => {
                let s = self.split(name, "command", pos, args, &[INDEX_DH, validate::COMPARATOR, validate::MATCH])?;
                if s.positional.is_empty() || s.positional.len() > 2 {
                    self.positional(name, "command", pos, &s, &[(Kind::Str, "field name"), (Kind::StrList, "value patterns")]);
                    return None;
                }
                if !validate::Kind::Str.accepts(&s.positional[0]) {
                    self.positional(name, "command", pos, &s, &[(Kind::Str, "field name")]);
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let index = match (s.get("index"), s.get("last")) {
                    (Some(t), last) => match t.arg {
                        Some(Arg::Number(n, _)) => Some(IndexOpt { index: n, last: last.is_some() }),
                        _ => None,
                    },
                    (None, Some(l)) => {
                        self.err(l.pos, "deleteheader: the :last tag cannot be specified without the :index tag");
                        return None;
                    }
                    _ => None,
                };
                let fname = self.str_value(s.positional.first());
                if let Some(c) = fname.constant() {
                    if !valid_field_name(&c) {
                        self.err(pos, format!("deleteheader command: specified field name '{c}' is invalid"));
                    }
                }
                let patterns = s.positional.get(1).map(|a| self.values(a)).unwrap_or_default();
                self.check_keys(&m, &patterns, pos);
                Some(Command::DeleteHeader { index, m, name: fname, patterns })
            }
            "notify" => {
                if self.cfg.max_notifications == 0 {
                    self.err(pos, "notify command: local policy prohibits the use of a notify action");
                    return None;
                }
                let s = self.split(name, "command", pos, args, &[NOTIFY])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "method")]) {
                    return None;
                }
                let method = self.str_value(s.positional.first());
                if let Some(c) = method.constant() {
                    if let Err(e) = crate::actions::check_notify_uri(&c) {
                        self.err(pos, format!("notify command: invalid method '{c}': {e}"));
                    }
                }
                let from = s.get("from").map(|t| self.str_value(t.arg.as_ref()));
                let importance = s.get("importance").map(|t| self.str_value(t.arg.as_ref()));
                if let Some(c) = importance.as_ref().and_then(Value::constant) {
                    if !matches!(c.as_str(), "1" | "2" | "3") {
                        self.err(pos, format!("notify command: invalid :importance value '{c}'"));
                    }
                }
                let options = s.get("options").and_then(|t| t.arg.as_ref()).map(|a| self.values(a)).unwrap_or_default();
                let message = s.get("message").map(|t| self.str_value(t.arg.as_ref()));
                Some(Command::Notify(Box::new(NotifyCmd { from, importance, options, message, method })))
            }
            "foreverypart" => {
                let s = self.split(name, "command", pos, args, &[NAME])?;
                if !self.positional(name, "command", pos, &s, &[]) {
                    return None;
                }
                let Some(block) = &node.block else {
                    self.err(pos, "the foreverypart command requires a command block");
                    return None;
                };
                let lname = s.get("name").map(|t| self.str_value(t.arg.as_ref()).constant().unwrap_or_default());
                if self.loops.len() >= crate::eval::MAX_FOREVERYPART_DEPTH {
                    self.err(pos, format!("foreverypart loops nested deeper than {} levels", crate::eval::MAX_FOREVERYPART_DEPTH));
                    return None;
                }
                self.loops.push(lname.clone());
                let body = self.commands(block, false);
                self.loops.pop();
                Some(Command::ForEveryPart { name: lname, body })
            }
            "break" => {
                let s = self.split(name, "command", pos, args, &[NAME])?;
                if !self.positional(name, "command", pos, &s, &[]) {
                    return None;
                }
                let lname = s.get("name").map(|t| self.str_value(t.arg.as_ref()).constant().unwrap_or_default());
                let inside = match &lname {
                    None => !self.loops.is_empty(),
                    Some(n) => self.loops.iter().any(|l| l.as_deref() == Some(n.as_str())),
                };
                if !inside {
                    self.err(pos, "the break command is not placed inside a foreverypart loop (with that name)");
                    return None;
                }
                Some(Command::Break { name: lname })
            }
            "extracttext" => {
                let s = self.split(name, "command", pos, args, &[MODIFIERS, FIRST])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "variable name")]) {
                    return None;
                }
                if !self.has("variables") {
                    self.err(pos, "the extracttext command requires the variables extension");
                    return None;
                }
                if self.loops.is_empty() {
                    self.err(pos, "the extracttext command is not placed inside a foreverypart loop");
                    return None;
                }
                let vname = self.var_name(s.positional.first(), pos)?;
                let first = s.get("first").and_then(|t| match t.arg {
                    Some(Arg::Number(n, _)) => Some(n),
                    _ => None,
                });
                let modifiers = self.modifiers(&s)?;
                Some(Command::ExtractText { first, modifiers, name: vname })
            }
            "pipe" => {
                let s = self.split(name, "command", pos, args, &[PIPE])?;
                let (program, pargs) = self.program_args(name, "command", pos, &s)?;
                Some(Command::Pipe { program, args: pargs, copy: s.has("copy"), try_: s.has("try") })
            }
            "filter" | "execute" => Some(Command::Program(self.program_call(name, "command", pos, args)?)),
            "error" => {
                let s = self.split(name, "command", pos, args, &[])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "message")]) {
                    return None;
                }
                Some(Command::Error(self.str_value(s.positional.first())))
            }
            "debug_log" => {
                let s = self.split(name, "command", pos, args, &[])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "message")]) {
                    return None;
                }
                Some(Command::DebugLog(self.str_value(s.positional.first())))
            }
            _ => None,
        }
    }

    /// Program name and argument list of pipe/filter/execute.
    fn program_args(&mut self, name: &str, what: &'static str, pos: Pos, s: &Split) -> Option<(Value, Vec<Value>)> {
        let slots: &[(Kind, &str)] = if s.positional.len() >= 2 {
            &[(Kind::Str, "program-name"), (Kind::StrList, "arguments")]
        } else {
            &[(Kind::Str, "program-name")]
        };
        if !self.positional(name, what, pos, s, slots) {
            return None;
        }
        let program = self.str_value(s.positional.first());
        if let Some(c) = program.constant() {
            if !crate::program::valid_program_name(&c) {
                self.err(pos, format!("{name} {what}: invalid program name '{}'", c.escape_default()));
                return None;
            }
        }
        let pargs = s.positional.get(1).map(|a| self.values(a)).unwrap_or_default();
        for a in &pargs {
            if let Some(c) = a.constant() {
                if !crate::program::valid_program_arg(&c) {
                    self.err(pos, format!("{name} {what}: invalid program argument '{}'", c.escape_default()));
                    return None;
                }
            }
        }
        Some((program, pargs))
    }

    fn program_call(&mut self, name: &str, what: &'static str, pos: Pos, args: &[Arg]) -> Option<ProgramCall> {
        let groups: &[&[TagSpec]] = if name == "execute" { &[EXECUTE] } else { &[FILTER] };
        let s = self.split(name, what, pos, args, groups)?;
        if s.has("input") && s.has("pipe") {
            self.err(pos, "execute: :input and :pipe cannot both be specified");
            return None;
        }
        let (program, pargs) = self.program_args(name, what, pos, &s)?;
        let input = s.get("input").map(|t| self.str_value(t.arg.as_ref()));
        let output = match s.get("output") {
            Some(t) => {
                if !self.has("variables") {
                    self.err(t.pos, "execute: the :output tag requires the variables extension");
                    return None;
                }
                Some(self.var_name(t.arg.as_ref(), t.pos)?)
            }
            None => None,
        };
        let kind = if name == "execute" { crate::program::ProgramKind::Execute } else { crate::program::ProgramKind::Filter };
        Some(ProgramCall { kind, program, args: pargs, input, pipe: s.has("pipe"), output })
    }

    fn flags_tag(&mut self, s: &Split) -> Option<Vec<Value>> {
        s.get("flags").and_then(|t| t.arg.as_ref()).map(|a| self.values(a))
    }

    /// A variable name argument: identifier, or namespaced identifier.
    pub(crate) fn var_name(&mut self, arg: Option<&Arg>, pos: Pos) -> Option<String> {
        let Some(Arg::Str(lit)) = arg else { return None };
        let name = lit.value.as_str();
        let ok = !name.is_empty() && name.split('.').all(validate::is_identifier);
        if !ok {
            self.err(lit.pos, format!("invalid variable name '{}'", name.escape_default()));
            return None;
        }
        if name.contains('.') {
            let ns = name.split('.').next().unwrap_or("");
            if !(ns == "global" && self.has("include") && name.split('.').count() == 2) {
                self.err(pos, format!("cannot assign to variable in unknown namespace '{ns}'"));
                return None;
            }
        }
        if name.len() > 64 {
            self.err(lit.pos, "variable name is too long");
            return None;
        }
        Some(name.to_ascii_lowercase())
    }

    fn modifiers(&mut self, s: &Split) -> Option<Vec<Modifier>> {
        let mut mods: Vec<Modifier> = Vec::new();
        let mut ok = true;
        for tag in &s.tags {
            let m = match tag.name.as_str() {
                "lower" => Modifier::Lower,
                "upper" => Modifier::Upper,
                "lowerfirst" => Modifier::LowerFirst,
                "upperfirst" => Modifier::UpperFirst,
                "quotewildcard" => Modifier::QuoteWildcard,
                "quoteregex" => Modifier::QuoteRegex,
                "encodeurl" => Modifier::EncodeUrl,
                "length" => Modifier::Length,
                _ => continue,
            };
            if let Some(prev) = mods.iter().find(|p| p.precedence() == m.precedence()) {
                if *prev != m {
                    self.err(tag.pos, format!("modifier :{} conflicts with another modifier of the same precedence", tag.name));
                    ok = false;
                }
                continue;
            }
            mods.push(m);
        }
        mods.sort_by_key(|m| std::cmp::Reverse(m.precedence()));
        ok.then_some(mods)
    }

    fn vacation(&mut self, node: &CommandNode) -> Option<Command> {
        let pos = node.pos;
        let s = self.split("vacation", "command", pos, &node.args, &[VACATION])?;
        if !self.positional("vacation", "command", pos, &s, &[(Kind::Str, "reason")]) {
            return None;
        }
        if s.has("days") && s.has("seconds") {
            self.err(pos, "vacation command: :days and :seconds cannot both be specified");
            return None;
        }
        let num = |s: &Split, n: &str| {
            s.get(n).and_then(|t| match t.arg {
                Some(Arg::Number(n, _)) => Some(n),
                _ => None,
            })
        };
        let period = num(&s, "days").map(|d| d.saturating_mul(86400)).or_else(|| num(&s, "seconds"));
        let subject = s.get("subject").map(|t| self.str_value(t.arg.as_ref()));
        let from = s.get("from").map(|t| self.str_value(t.arg.as_ref()));
        if let Some(c) = from.as_ref().and_then(Value::constant) {
            if crate::address::parse_list(&c).iter().all(|a| !matches!(a, crate::address::Address::Mailbox { domain: Some(_), .. })) {
                self.err(pos, format!("vacation command: specified :from address '{c}' is invalid"));
            }
        }
        let addresses = s.get("addresses").and_then(|t| t.arg.as_ref()).map(|a| self.values(a)).unwrap_or_default();
        let handle = s.get("handle").map(|t| self.str_value(t.arg.as_ref()));
        let reason = self.str_value(s.positional.first());
        Some(Command::Vacation(Box::new(VacationCmd { period, subject, from, addresses, mime: s.has("mime"), handle, reason })))
    }

    // ---------------------------------------------------------------- tests

    pub(crate) fn test(&mut self, node: &TestNode, depth: usize) -> Option<Test> {
        let name = node.name.as_str();
        let pos = node.pos;
        if depth > self.cfg.max_nesting {
            self.err(pos, "tests nested too deeply");
            return None;
        }
        match name {
            "not" => {
                if !node.args.is_empty() || node.tests.len() != 1 || node.test_list {
                    self.err(pos, "the not test requires exactly one sub-test and no arguments");
                    return None;
                }
                return Some(Test::Not(Box::new(self.test(&node.tests[0], depth + 1)?)));
            }
            "allof" | "anyof" => {
                if !node.args.is_empty() || !node.test_list || node.tests.is_empty() {
                    self.err(pos, format!("the {name} test requires a list of sub-tests and no arguments"));
                    return None;
                }
                let mut ts = Vec::new();
                let mut ok = true;
                for t in &node.tests {
                    match self.test(t, depth + 1) {
                        Some(t) => ts.push(t),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                return Some(if name == "allof" { Test::AllOf(ts) } else { Test::AnyOf(ts) });
            }
            _ => {}
        }
        if self.has("vnd.dovecot.testsuite") {
            if let Some(r) = crate::testsuite::compile_test(self, node) {
                return r;
            }
        }
        let known = match name {
            "true" | "false" | "address" | "header" | "exists" | "size" => true,
            "envelope" => self.has("envelope"),
            "body" => self.has("body"),
            "date" | "currentdate" => self.has("date"),
            "string" => self.has("variables"),
            "hasflag" => self.has("imap4flags"),
            "mailboxexists" => self.has("mailbox"),
            "specialuse_exists" => self.has("special-use"),
            "environment" => self.has("environment"),
            "ihave" => self.has("ihave"),
            "duplicate" => self.has("duplicate"),
            "spamtest" => self.has("spamtest"),
            "virustest" => self.has("virustest"),
            "valid_notify_method" | "notify_method_capability" => self.has("enotify"),
            "metadata" | "metadataexists" => self.has("mboxmetadata"),
            "filter" => self.has("vnd.dovecot.filter"),
            "execute" => self.has("vnd.dovecot.execute"),
            "servermetadata" | "servermetadataexists" => self.has("servermetadata"),
            _ => false,
        };
        if !known {
            self.err(pos, format!("unknown test '{name}' (possibly a missing require)"));
            return None;
        }
        if !self.no_tests(name, "test", pos, &node.tests) {
            return None;
        }
        let args = &node.args;
        let cm: &[&[TagSpec]] = &[validate::COMPARATOR, validate::MATCH];
        match name {
            "true" | "false" => {
                let s = self.split(name, "test", pos, args, &[])?;
                if !self.positional(name, "test", pos, &s, &[]) {
                    return None;
                }
                Some(if name == "true" { Test::True } else { Test::False })
            }
            "address" => {
                let s = self.split(name, "test", pos, args, &[validate::COMPARATOR, validate::MATCH, validate::ADDRESS_PART, validate::INDEX, validate::MIME])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "header list"), (Kind::StrList, "key list")]) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let part = self.address_part(&s);
                let index = self.index(&s);
                let mime = self.mime_opts(name, &s, false);
                let headers = self.values(&s.positional[0]);
                for (v, lit) in headers.iter().zip(validate::strings(&s.positional[0])) {
                    if let Some(c) = v.constant() {
                        if !valid_field_name(&c) {
                            self.err(lit.pos, format!("the address test: specified header field name '{c}' is invalid"));
                        } else if !is_address_header(&c) && !self.cfg.lenient_address_headers {
                            self.err(lit.pos, format!("the address test: specified header '{c}' is not allowed for the address test (not an address header)"));
                        }
                    }
                }
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Address { m, part, headers, keys, mime, index })
            }
            "envelope" => {
                let s = self.split(name, "test", pos, args, &[validate::COMPARATOR, validate::MATCH, validate::ADDRESS_PART])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "envelope part"), (Kind::StrList, "key list")]) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let part = self.address_part(&s);
                let fields = self.values(&s.positional[0]);
                for f in &fields {
                    if let Some(c) = f.constant() {
                        if !matches!(c.to_ascii_lowercase().as_str(), "from" | "to" | "auth" | "orig_to") {
                            self.err(pos, format!("envelope test: unknown envelope part '{c}'"));
                        }
                    }
                }
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Envelope { m, part, fields, keys })
            }
            "header" => {
                let s = self.split(name, "test", pos, args, &[validate::COMPARATOR, validate::MATCH, validate::INDEX, validate::MIME])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "header names"), (Kind::StrList, "key list")]) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let index = self.index(&s);
                let mime = self.mime_opts(name, &s, true);
                let headers = self.header_names(&s.positional[0], name);
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Header { m, headers, keys, mime, index })
            }
            "exists" => {
                let s = self.split(name, "test", pos, args, &[validate::MIME])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "header names")]) {
                    return None;
                }
                let mime = self.mime_opts(name, &s, false);
                let headers = self.header_names(&s.positional[0], name);
                Some(Test::Exists { headers, mime })
            }
            "size" => {
                let s = self.split(name, "test", pos, args, &[SIZE])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::Num, "limit")]) {
                    return None;
                }
                let over = s.has("over");
                if over == s.has("under") {
                    self.err(pos, "the size test requires exactly one of the :over or :under tags");
                    return None;
                }
                let Some(Arg::Number(limit, _)) = s.positional.first() else { return None };
                Some(Test::Size { over, limit: *limit })
            }
            "body" => {
                let s = self.split(name, "test", pos, args, &[validate::COMPARATOR, validate::MATCH, BODY])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "key list")]) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let mut transform = BodyTransform::Text;
                let mut seen = 0;
                for tag in &s.tags {
                    match tag.name.as_str() {
                        "raw" => transform = BodyTransform::Raw,
                        "text" => transform = BodyTransform::Text,
                        "content" => {
                            transform = BodyTransform::Content(tag.arg.as_ref().map(|a| self.values(a)).unwrap_or_default())
                        }
                        _ => continue,
                    }
                    seen += 1;
                }
                if seen > 1 {
                    self.err(pos, "the body test: multiple body transforms specified");
                    return None;
                }
                let keys = self.values(&s.positional[0]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Body { m, transform, keys })
            }
            "date" | "currentdate" => {
                let is_date = name == "date";
                let groups: &[&[TagSpec]] = if is_date {
                    &[validate::COMPARATOR, validate::MATCH, ZONE, validate::INDEX]
                } else {
                    &[validate::COMPARATOR, validate::MATCH, ZONE_CUR]
                };
                let s = self.split(name, "test", pos, args, groups)?;
                let slots: &[(Kind, &str)] = if is_date {
                    &[(Kind::Str, "header name"), (Kind::Str, "date part"), (Kind::StrList, "key list")]
                } else {
                    &[(Kind::Str, "date part"), (Kind::StrList, "key list")]
                };
                if !self.positional(name, "test", pos, &s, slots) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                if s.has("zone") && s.has("originalzone") {
                    self.err(pos, format!("the {name} test: :zone and :originalzone cannot both be specified"));
                    return None;
                }
                let zone = match (s.get("zone"), s.has("originalzone")) {
                    (Some(t), _) => {
                        let v = self.str_value(t.arg.as_ref());
                        if let Some(c) = v.constant() {
                            if crate::date::parse_zone(&c).is_none() {
                                self.diag.warn(t.pos, format!("{name} test: invalid :zone argument '{c}'"));
                            }
                        }
                        Zone::Fixed(v)
                    }
                    (None, true) => Zone::Original,
                    _ => Zone::Local,
                };
                let off = usize::from(is_date);
                let part = self.str_value(s.positional.get(off));
                if let Some(c) = part.constant() {
                    if !crate::date::DATE_PARTS.contains(&c.to_ascii_lowercase().as_str()) {
                        self.err(pos, format!("{name} test: invalid date part '{c}'"));
                        return None;
                    }
                }
                let keys = s.positional.get(off + 1).map(|a| self.values(a)).unwrap_or_default();
                self.check_keys(&m, &keys, pos);
                if is_date {
                    let header = self.str_value(s.positional.first());
                    let index = self.index(&s);
                    Some(Test::Date { m, zone, header, part, keys, index })
                } else {
                    Some(Test::CurrentDate { m, zone, part, keys })
                }
            }
            "string" => {
                let s = self.split(name, "test", pos, args, cm)?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "source"), (Kind::StrList, "key list")]) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let sources = self.values(&s.positional[0]);
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::String { m, sources, keys })
            }
            "hasflag" => {
                let s = self.split(name, "test", pos, args, cm)?;
                let m = self.matcher(name, &s)?;
                match s.positional.len() {
                    1 => {
                        if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "flag list")]) {
                            return None;
                        }
                        let keys = self.values(&s.positional[0]);
                        Some(Test::HasFlag { m, vars: Vec::new(), keys })
                    }
                    _ => {
                        if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "variable list"), (Kind::StrList, "flag list")]) {
                            return None;
                        }
                        if !self.has("variables") {
                            self.err(pos, "hasflag: variable list requires the variables extension");
                            return None;
                        }
                        let vars = self.values(&s.positional[0]);
                        let keys = self.values(&s.positional[1]);
                        Some(Test::HasFlag { m, vars, keys })
                    }
                }
            }
            "mailboxexists" => {
                let s = self.split(name, "test", pos, args, &[])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "mailbox names")]) {
                    return None;
                }
                Some(Test::MailboxExists(self.values(&s.positional[0])))
            }
            "specialuse_exists" => {
                let s = self.split(name, "test", pos, args, &[])?;
                match s.positional.len() {
                    1 => {
                        if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "special-use flags")]) {
                            return None;
                        }
                        Some(Test::SpecialUseExists { mailbox: None, uses: self.values(&s.positional[0]) })
                    }
                    _ => {
                        if !self.positional(name, "test", pos, &s, &[(Kind::Str, "mailbox"), (Kind::StrList, "special-use flags")]) {
                            return None;
                        }
                        let mailbox = Some(self.str_value(s.positional.first()));
                        Some(Test::SpecialUseExists { mailbox, uses: self.values(&s.positional[1]) })
                    }
                }
            }
            "environment" => {
                let s = self.split(name, "test", pos, args, cm)?;
                if !self.positional(name, "test", pos, &s, &[(Kind::Str, "name"), (Kind::StrList, "key list")]) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let ename = self.str_value(s.positional.first());
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Environment { m, name: ename, keys })
            }
            "ihave" => {
                let s = self.split(name, "test", pos, args, &[])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "capabilities")]) {
                    return None;
                }
                let mut all = true;
                let caps: Vec<String> = validate::strings(&s.positional[0]).into_iter().map(|l| l.value.to_ascii_lowercase()).collect();
                for c in &caps {
                    let restricted = matches!(c.as_str(), "encoded-character" | "variables" | "vnd.dovecot.testsuite");
                    if restricted || !self.known_extension(c) {
                        all = false;
                    }
                }
                if all {
                    for c in caps {
                        for i in validate::implied(&c) {
                            self.exts.insert((*i).to_string());
                        }
                        self.exts.insert(c);
                    }
                }
                Some(Test::Ihave(all))
            }
            "duplicate" => {
                let s = self.split(name, "test", pos, args, &[DUPLICATE])?;
                if !self.positional(name, "test", pos, &s, &[]) {
                    return None;
                }
                if s.has("header") && s.has("uniqueid") {
                    self.err(pos, "duplicate test: :header and :uniqueid cannot both be specified");
                    return None;
                }
                let handle = s.get("handle").map(|t| self.str_value(t.arg.as_ref()));
                let header = s.get("header").map(|t| self.str_value(t.arg.as_ref()));
                let uniqueid = s.get("uniqueid").map(|t| self.str_value(t.arg.as_ref()));
                let seconds = s.get("seconds").and_then(|t| match t.arg {
                    Some(Arg::Number(n, _)) => Some(n),
                    _ => None,
                });
                Some(Test::Duplicate(Box::new(DuplicateTest { handle, header, uniqueid, seconds, last: s.has("last") })))
            }
            "spamtest" | "virustest" => {
                let groups: &[&[TagSpec]] = if name == "spamtest" {
                    &[validate::COMPARATOR, validate::MATCH, PERCENT]
                } else {
                    &[validate::COMPARATOR, validate::MATCH]
                };
                let s = self.split(name, "test", pos, args, groups)?;
                if !self.positional(name, "test", pos, &s, &[(Kind::Str, "value")]) {
                    return None;
                }
                let mut m = self.matcher(name, &s)?;
                if !s.has("comparator") {
                    m.comparator = Comparator::AsciiNumeric;
                }
                let key = self.str_value(s.positional.first());
                if name == "spamtest" {
                    Some(Test::SpamTest { m, percent: s.has("percent"), key })
                } else {
                    Some(Test::VirusTest { m, key })
                }
            }
            "filter" | "execute" => Some(Test::Program(self.program_call(name, "test", pos, args)?)),
            "metadata" | "servermetadata" => {
                let s = self.split(name, "test", pos, args, cm)?;
                let server = name == "servermetadata";
                let slots: &[(Kind, &str)] = if server {
                    &[(Kind::Str, "annotation-name"), (Kind::StrList, "key-list")]
                } else {
                    &[(Kind::Str, "mailbox"), (Kind::Str, "annotation-name"), (Kind::StrList, "key-list")]
                };
                if !self.positional(name, "test", pos, &s, slots) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let mailbox = if server { None } else { Some(self.str_value(s.positional.first())) };
                let off = usize::from(!server);
                let aname = self.str_value(s.positional.get(off));
                if let Some(c) = aname.constant() {
                    if !valid_annotation(&c) {
                        self.diag.warn(pos, format!("{name} test: invalid annotation name '{c}'"));
                    }
                }
                let keys = s.positional.get(off + 1).map(|a| self.values(a)).unwrap_or_default();
                self.check_keys(&m, &keys, pos);
                Some(Test::Metadata { m, mailbox, name: aname, keys })
            }
            "metadataexists" | "servermetadataexists" => {
                let s = self.split(name, "test", pos, args, &[])?;
                let server = name == "servermetadataexists";
                let slots: &[(Kind, &str)] = if server {
                    &[(Kind::StrList, "annotation-names")]
                } else {
                    &[(Kind::Str, "mailbox"), (Kind::StrList, "annotation-names")]
                };
                if !self.positional(name, "test", pos, &s, slots) {
                    return None;
                }
                let mailbox = if server { None } else { Some(self.str_value(s.positional.first())) };
                let names = s.positional.last().map(|a| self.values(a)).unwrap_or_default();
                Some(Test::MetadataExists { mailbox, names })
            }
            "valid_notify_method" => {
                let s = self.split(name, "test", pos, args, &[])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "notification uris")]) {
                    return None;
                }
                Some(Test::ValidNotifyMethod(self.values(&s.positional[0])))
            }
            "notify_method_capability" => {
                let s = self.split(name, "test", pos, args, cm)?;
                if !self.positional(
                    name,
                    "test",
                    pos,
                    &s,
                    &[(Kind::Str, "notification uri"), (Kind::Str, "notification capability"), (Kind::StrList, "key list")],
                ) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let uri = self.str_value(s.positional.first());
                let capability = self.str_value(s.positional.get(1));
                let keys = self.values(&s.positional[2]);
                Some(Test::NotifyMethodCapability { m, uri, capability, keys })
            }
            _ => None,
        }
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
const ZONE: &[TagSpec] = &[tag("zone", Some(Kind::Str), None), tag("originalzone", None, None)];
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

/// Header names allowed in the address test (RFC 5228 §5.1 and Pigeonhole's list).
pub fn is_address_header(name: &str) -> bool {
    const H: &[&str] = &[
        "from", "sender", "to", "cc", "bcc", "reply-to", "resent-from", "resent-sender", "resent-to", "resent-cc",
        "resent-bcc", "resent-reply-to", "return-path", "delivered-to", "envelope-to", "errors-to", "for-approval",
        "for-handling", "for-comment", "apparently-to", "original-recipient", "disposition-notification-to",
        "x-beenthere", "approved", "mail-followup-to", "mail-reply-to", "original-from", "original-sender",
        "original-reply-to", "original-to", "x-original-to", "x-envelope-to", "x-envelope-from",
    ];
    H.contains(&name.to_ascii_lowercase().as_str())
}

/// An annotation name for the metadata tests: "/private/..." or "/shared/..." (RFC 5464).
pub fn valid_annotation(name: &str) -> bool {
    let rest = name.strip_prefix("/private/").or_else(|| name.strip_prefix("/shared/"));
    rest.is_some_and(|r| {
        !r.is_empty() && !r.ends_with('/') && !r.contains("//") && !r.contains(['*', '%']) && !r.chars().any(char::is_control)
    })
}

/// A header field name: printable ASCII except colon (RFC 5322 §3.6.8).
pub fn valid_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// A header field value for addheader: no control characters other than white space
/// and line breaks (which are re-folded).
pub fn valid_field_value(v: &str) -> bool {
    v.chars().all(|c| !c.is_control() || c == '\t' || c == '\r' || c == '\n')
}

/// Mailbox names: valid UTF-8 (guaranteed by type), no NUL or control characters, bounded.
pub fn check_mailbox_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("control characters");
    }
    if name.len() > 1024 {
        return Err("name too long");
    }
    Ok(())
}

/// Decode `${hex:..}` and `${unicode:..}` sequences (RFC 5228 §2.4.2.4).
pub fn decode_encoded(s: &str) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i..i + 2) == Some(b"${") {
            if let Some((decoded, used)) = encoded_at(s.get(i + 2..).unwrap_or(""))? {
                out.extend_from_slice(&decoded);
                i += 2 + used;
                continue;
            }
        }
        out.push(bytes.get(i).copied().unwrap_or(b' '));
        i += 1;
    }
    // Invalid UTF-8 is kept visible as U+FFFD; mailbox names with it are refused later.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Try one encoded sequence after `${`; returns bytes and how much of `rest` it used.
fn encoded_at(rest: &str) -> Result<Option<(Vec<u8>, usize)>, String> {
    let Some(close) = rest.find('}') else { return Ok(None) };
    let inner = rest.get(..close).unwrap_or("");
    let Some((kind, data)) = inner.split_once(':') else { return Ok(None) };
    let kind = kind.to_ascii_lowercase();
    let words: Vec<&str> = data.split([' ', '\t', '\r', '\n']).filter(|w| !w.is_empty()).collect();
    match kind.as_str() {
        "hex" => {
            if words.is_empty() {
                return Ok(None);
            }
            let mut out = Vec::new();
            for w in words {
                if w.len() % 2 != 0 || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Ok(None);
                }
                let mut k = 0;
                while k < w.len() {
                    let Some(Ok(b)) = w.get(k..k + 2).map(|h| u8::from_str_radix(h, 16)) else { return Ok(None) };
                    out.push(b);
                    k += 2;
                }
            }
            Ok(Some((out, close + 1)))
        }
        "unicode" => {
            if words.is_empty() {
                return Ok(None);
            }
            let mut out = String::new();
            for w in words {
                if w.is_empty() || w.len() > 8 || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Ok(None);
                }
                let Ok(v) = u32::from_str_radix(w, 16) else { return Ok(None) };
                match char::from_u32(v) {
                    Some(c) => out.push(c),
                    None => return Err(format!("invalid unicode character 0x{w} in encoded character substitution")),
                }
            }
            Ok(Some((out.into_bytes(), close + 1)))
        }
        _ => Ok(None),
    }
}

/// Split a string into literal and `${variable}` pieces (RFC 5229 §3).
pub fn split_variables(s: &str, max_match: usize) -> Value {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(idx) = rest.find("${") {
        lit.push_str(rest.get(..idx).unwrap_or(""));
        let after = rest.get(idx + 2..).unwrap_or("");
        let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'));
        let parsed = match end {
            Some(e) if after.get(e..e + 1) == Some("}") => {
                let name = after.get(..e).unwrap_or("");
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    // Numeric: a match variable (leading zeros allowed).
                    let n = name.trim_start_matches('0');
                    let n: usize = if n.is_empty() { 0 } else { n.parse().unwrap_or(usize::MAX) };
                    Some((if n < max_match.max(10) { Some(Piece::Match(n)) } else { None }, e + 1))
                } else if !name.is_empty() && name.split('.').all(validate::is_identifier) {
                    Some((Some(Piece::Var(name.to_ascii_lowercase())), e + 1))
                } else {
                    None
                }
            }
            _ => None,
        };
        match parsed {
            Some((piece, used)) => {
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                if let Some(p) = piece {
                    pieces.push(p);
                }
                rest = after.get(used..).unwrap_or("");
            }
            None => {
                lit.push_str("${");
                rest = after;
            }
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Value { pieces }
}

/// Compile-time error text of a failed compile, for tests.
pub fn first_error(e: &CompileErrors) -> String {
    e.0.first().map(CompileError::to_string).unwrap_or_default()
}

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
            ("if header :all \"a\" \"b\" { }", "1:11", "unknown tagged argument ':all' for the header test"),
            ("if header \"a\" { }", "1:4", "requires 2 positional argument(s), but 1"),
            ("if size 5 { }", "1:4", "exactly one of the :over or :under"),
            ("keep; require \"fileinto\";", "1:7", "require command can only be placed"),
            ("elsif true { }", "1:1", "must follow an if"),
            ("header \"a\" \"b\";", "1:1", "use test 'header'"),
        ];
        for (src, pos, want) in cases {
            let e = errs(src);
            assert!(e.first().is_some_and(|e| e.starts_with(pos) && e.contains(want)), "{src}: {e:?}");
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
