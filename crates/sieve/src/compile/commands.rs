//! Compiling commands (RFC 5228 §3-4 and the extensions' commands) into [`Command`]
//! values: argument signatures, tags, constant checks (mailbox names, addresses, URIs,
//! header fields, program names) and set/extracttext modifiers.
//!
//! Trusts the parser's tree shape. Each command stops at its first error, reported with
//! `line:column`; constant arguments are checked here, variable ones again at runtime.

use super::*;

impl Compiler<'_, '_> {
    pub(super) fn command(&mut self, node: &CommandNode) -> Option<Command> {
        let name = node.name.as_str();
        let pos = node.pos;
        if self.has("vnd.dovecot.testsuite")
            && let Some(r) = crate::testsuite::compile_command(self, node)
        {
            return r;
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
                self.err(
                    pos,
                    format!("unknown command '{name}' (possibly a missing require)"),
                );
            }
            if let Some(b) = &node.block {
                let _ = self.commands(b, false);
            }
            return None;
        }
        if name != "foreverypart" && !self.no_block(node) {
            return None;
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
                Some(Command::Keep {
                    flags: self.flags_tag(&s),
                })
            }
            "fileinto" => {
                let s = self.split(name, "command", pos, args, &[FLAGS, FILEINTO])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "folder")]) {
                    return None;
                }
                let mailbox = self.str_value(s.positional.first());
                if let Some(c) = mailbox.constant()
                    && let Err(e) = check_mailbox_name(&c)
                {
                    self.err(
                        pos,
                        format!(
                            "fileinto command: invalid folder name '{}' specified: {e}",
                            c.escape_default()
                        ),
                    );
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
                if let Some(c) = address.constant()
                    && crate::actions::normalize_redirect(&c).is_none()
                {
                    self.err(
                        pos,
                        format!("redirect command: specified redirect address '{c}' is invalid"),
                    );
                }
                Some(Command::Redirect {
                    address,
                    copy: s.has("copy"),
                })
            }
            "reject" | "ereject" => {
                let s = self.split(name, "command", pos, args, &[])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "reason")]) {
                    return None;
                }
                let reason = self.str_value(s.positional.first());
                Some(Command::Reject {
                    reason,
                    extended: name == "ereject",
                })
            }
            "set" => {
                let s = self.split(name, "command", pos, args, &[MODIFIERS])?;
                if !self.positional(
                    name,
                    "command",
                    pos,
                    &s,
                    &[(Kind::Str, "name"), (Kind::Str, "value")],
                ) {
                    return None;
                }
                let vname = self.var_name(s.positional.first(), pos)?;
                let value = self.str_value(s.positional.get(1));
                let modifiers = self.modifiers(&s)?;
                Some(Command::Set {
                    name: vname,
                    value,
                    modifiers,
                })
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
                        if !self.positional(
                            name,
                            "command",
                            pos,
                            &s,
                            &[(Kind::StrList, "flag list")],
                        ) {
                            return None;
                        }
                        let flags = self.values(&s.positional[0]);
                        Some(Command::Flags {
                            op,
                            var: None,
                            flags,
                        })
                    }
                    2 => {
                        if !self.positional(
                            name,
                            "command",
                            pos,
                            &s,
                            &[(Kind::Str, "variable name"), (Kind::StrList, "flag list")],
                        ) {
                            return None;
                        }
                        if !self.has("variables") {
                            self.err(pos, format!("the {name} command: variable argument requires the variables extension"));
                            return None;
                        }
                        let var = self.var_name(s.positional.first(), pos)?;
                        let flags = self.values(&s.positional[1]);
                        Some(Command::Flags {
                            op,
                            var: Some(var),
                            flags,
                        })
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
                    self.err(
                        pos,
                        "include command: :personal and :global cannot both be specified",
                    );
                    return None;
                }
                let Some(Arg::Str(lit)) = s.positional.first() else {
                    return None;
                };
                let sname = lit.value.clone();
                if sname.is_empty() || sname.contains('/') || sname.chars().any(char::is_control) {
                    self.err(
                        pos,
                        format!(
                            "include command: invalid script name '{}'",
                            sname.escape_default()
                        ),
                    );
                    return None;
                }
                let location = if s.has("global") {
                    ScriptLocation::Global
                } else {
                    ScriptLocation::Personal
                };
                self.resolve_include(location, &sname, (s.has("optional"), s.has("once")), pos);
                Some(Command::Include {
                    global: s.has("global"),
                    once: s.has("once"),
                    optional: s.has("optional"),
                    name: sname,
                })
            }
            "global" => {
                let s = self.split(name, "command", pos, args, &[])?;
                if !self.positional(
                    name,
                    "command",
                    pos,
                    &s,
                    &[(Kind::StrList, "variable names")],
                ) {
                    return None;
                }
                if !self.has("variables") {
                    self.err(pos, "the global command requires the variables extension");
                    return None;
                }
                let mut names = Vec::new();
                for lit in validate::strings(&s.positional[0]) {
                    if !validate::is_identifier(&lit.value) {
                        self.err(
                            lit.pos,
                            format!("global command: invalid variable name '{}'", lit.value),
                        );
                    } else {
                        names.push(lit.value.to_ascii_lowercase());
                    }
                }
                Some(Command::Global(names))
            }
            "addheader" => {
                let s = self.split(name, "command", pos, args, &[LAST])?;
                if !self.positional(
                    name,
                    "command",
                    pos,
                    &s,
                    &[(Kind::Str, "field name"), (Kind::Str, "value")],
                ) {
                    return None;
                }
                let fname = self.str_value(s.positional.first());
                let value = self.str_value(s.positional.get(1));
                if let Some(c) = fname.constant()
                    && !valid_field_name(&c)
                {
                    self.err(
                        pos,
                        format!("addheader command: specified field name '{c}' is invalid"),
                    );
                }
                if let Some(c) = value.constant() {
                    if c.chars().any(|ch| ch == '\0') || !valid_field_value(&c) {
                        self.err(
                            pos,
                            format!("addheader command: specified value '{c}' is invalid"),
                        );
                    } else if c.len() > self.cfg.max_header_size {
                        self.err(
                            pos,
                            format!(
                                "addheader command: header value is too large (max {} bytes)",
                                self.cfg.max_header_size
                            ),
                        );
                    }
                }
                Some(Command::AddHeader {
                    last: s.has("last"),
                    name: fname,
                    value,
                })
            }
            "deleteheader" => {
                let s = self.split(
                    name,
                    "command",
                    pos,
                    args,
                    &[INDEX_DH, validate::COMPARATOR, validate::MATCH],
                )?;
                if s.positional.is_empty() || s.positional.len() > 2 {
                    self.positional(
                        name,
                        "command",
                        pos,
                        &s,
                        &[(Kind::Str, "field name"), (Kind::StrList, "value patterns")],
                    );
                    return None;
                }
                if !validate::Kind::Str.accepts(&s.positional[0]) {
                    self.positional(name, "command", pos, &s, &[(Kind::Str, "field name")]);
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let index = match (s.get("index"), s.get("last")) {
                    (Some(t), last) => match t.arg {
                        Some(Arg::Number(n, _)) => Some(IndexOpt {
                            index: n,
                            last: last.is_some(),
                        }),
                        _ => None,
                    },
                    (None, Some(l)) => {
                        self.err(l.pos, "deleteheader: the :last tag cannot be specified without the :index tag");
                        return None;
                    }
                    _ => None,
                };
                let fname = self.str_value(s.positional.first());
                if let Some(c) = fname.constant()
                    && !valid_field_name(&c)
                {
                    self.err(
                        pos,
                        format!("deleteheader command: specified field name '{c}' is invalid"),
                    );
                }
                let patterns = s
                    .positional
                    .get(1)
                    .map(|a| self.values(a))
                    .unwrap_or_default();
                self.check_keys(&m, &patterns, pos);
                Some(Command::DeleteHeader {
                    index,
                    m,
                    name: fname,
                    patterns,
                })
            }
            "notify" => {
                if self.cfg.max_notifications == 0 {
                    self.err(
                        pos,
                        "notify command: local policy prohibits the use of a notify action",
                    );
                    return None;
                }
                let s = self.split(name, "command", pos, args, &[NOTIFY])?;
                if !self.positional(name, "command", pos, &s, &[(Kind::Str, "method")]) {
                    return None;
                }
                let method = self.str_value(s.positional.first());
                if let Some(c) = method.constant()
                    && let Err(e) = crate::actions::check_notify_uri(&c)
                {
                    self.err(pos, format!("notify command: invalid method '{c}': {e}"));
                }
                let from = s.get("from").map(|t| self.str_value(t.arg.as_ref()));
                let importance = s.get("importance").map(|t| self.str_value(t.arg.as_ref()));
                if let Some(c) = importance.as_ref().and_then(Value::constant)
                    && !matches!(c.as_str(), "1" | "2" | "3")
                {
                    self.err(
                        pos,
                        format!("notify command: invalid :importance value '{c}'"),
                    );
                }
                let options = s
                    .get("options")
                    .and_then(|t| t.arg.as_ref())
                    .map(|a| self.values(a))
                    .unwrap_or_default();
                let message = s.get("message").map(|t| self.str_value(t.arg.as_ref()));
                Some(Command::Notify(Box::new(NotifyCmd {
                    from,
                    importance,
                    options,
                    message,
                    method,
                })))
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
                let lname = s.get("name").map(|t| {
                    self.str_value(t.arg.as_ref())
                        .constant()
                        .unwrap_or_default()
                });
                if self.loops.len() >= crate::eval::MAX_FOREVERYPART_DEPTH {
                    self.err(
                        pos,
                        format!(
                            "foreverypart loops nested deeper than {} levels",
                            crate::eval::MAX_FOREVERYPART_DEPTH
                        ),
                    );
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
                let lname = s.get("name").map(|t| {
                    self.str_value(t.arg.as_ref())
                        .constant()
                        .unwrap_or_default()
                });
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
                    self.err(
                        pos,
                        "the extracttext command requires the variables extension",
                    );
                    return None;
                }
                if self.loops.is_empty() {
                    self.err(
                        pos,
                        "the extracttext command is not placed inside a foreverypart loop",
                    );
                    return None;
                }
                let vname = self.var_name(s.positional.first(), pos)?;
                let first = s.get("first").and_then(|t| match t.arg {
                    Some(Arg::Number(n, _)) => Some(n),
                    _ => None,
                });
                let modifiers = self.modifiers(&s)?;
                Some(Command::ExtractText {
                    first,
                    modifiers,
                    name: vname,
                })
            }
            "pipe" => {
                let s = self.split(name, "command", pos, args, &[PIPE])?;
                let (program, pargs) = self.program_args(name, "command", pos, &s)?;
                Some(Command::Pipe {
                    program,
                    args: pargs,
                    copy: s.has("copy"),
                    try_: s.has("try"),
                })
            }
            "filter" | "execute" => Some(Command::Program(
                self.program_call(name, "command", pos, args)?,
            )),
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
    pub(super) fn program_args(
        &mut self,
        name: &str,
        what: &'static str,
        pos: Pos,
        s: &Split,
    ) -> Option<(Value, Vec<Value>)> {
        let slots: &[(Kind, &str)] = if s.positional.len() >= 2 {
            &[(Kind::Str, "program-name"), (Kind::StrList, "arguments")]
        } else {
            &[(Kind::Str, "program-name")]
        };
        if !self.positional(name, what, pos, s, slots) {
            return None;
        }
        let program = self.str_value(s.positional.first());
        if let Some(c) = program.constant()
            && !crate::program::valid_program_name(&c)
        {
            self.err(
                pos,
                format!(
                    "{name} {what}: invalid program name '{}'",
                    c.escape_default()
                ),
            );
            return None;
        }
        let pargs = s
            .positional
            .get(1)
            .map(|a| self.values(a))
            .unwrap_or_default();
        for a in &pargs {
            if let Some(c) = a.constant()
                && !crate::program::valid_program_arg(&c)
            {
                self.err(
                    pos,
                    format!(
                        "{name} {what}: invalid program argument '{}'",
                        c.escape_default()
                    ),
                );
                return None;
            }
        }
        Some((program, pargs))
    }

    pub(super) fn program_call(
        &mut self,
        name: &str,
        what: &'static str,
        pos: Pos,
        args: &[Arg],
    ) -> Option<ProgramCall> {
        let groups: &[&[TagSpec]] = if name == "execute" {
            &[EXECUTE]
        } else {
            &[FILTER]
        };
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
                    self.err(
                        t.pos,
                        "execute: the :output tag requires the variables extension",
                    );
                    return None;
                }
                Some(self.var_name(t.arg.as_ref(), t.pos)?)
            }
            None => None,
        };
        let kind = if name == "execute" {
            crate::program::ProgramKind::Execute
        } else {
            crate::program::ProgramKind::Filter
        };
        Some(ProgramCall {
            kind,
            program,
            args: pargs,
            input,
            pipe: s.has("pipe"),
            output,
        })
    }

    pub(super) fn flags_tag(&mut self, s: &Split) -> Option<Vec<Value>> {
        s.get("flags")
            .and_then(|t| t.arg.as_ref())
            .map(|a| self.values(a))
    }

    /// A variable name argument: identifier, or namespaced identifier.
    pub(crate) fn var_name(&mut self, arg: Option<&Arg>, pos: Pos) -> Option<String> {
        let Some(Arg::Str(lit)) = arg else {
            return None;
        };
        let name = lit.value.as_str();
        let ok = !name.is_empty() && name.split('.').all(validate::is_identifier);
        if !ok {
            self.err(
                lit.pos,
                format!("invalid variable name '{}'", name.escape_default()),
            );
            return None;
        }
        if name.contains('.') {
            let ns = name.split('.').next().unwrap_or("");
            if !(ns == "global" && self.has("include") && name.split('.').count() == 2) {
                self.err(
                    pos,
                    format!("cannot assign to variable in unknown namespace '{ns}'"),
                );
                return None;
            }
        }
        if name.len() > 64 {
            self.err(lit.pos, "variable name is too long");
            return None;
        }
        Some(name.to_ascii_lowercase())
    }

    pub(super) fn modifiers(&mut self, s: &Split) -> Option<Vec<Modifier>> {
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
                    self.err(
                        tag.pos,
                        format!(
                            "modifier :{} conflicts with another modifier of the same precedence",
                            tag.name
                        ),
                    );
                    ok = false;
                }
                continue;
            }
            mods.push(m);
        }
        mods.sort_by_key(|m| std::cmp::Reverse(m.precedence()));
        ok.then_some(mods)
    }

    pub(super) fn vacation(&mut self, node: &CommandNode) -> Option<Command> {
        let pos = node.pos;
        let s = self.split("vacation", "command", pos, &node.args, &[VACATION])?;
        if !self.positional("vacation", "command", pos, &s, &[(Kind::Str, "reason")]) {
            return None;
        }
        if s.has("days") && s.has("seconds") {
            self.err(
                pos,
                "vacation command: :days and :seconds cannot both be specified",
            );
            return None;
        }
        let num = |s: &Split, n: &str| {
            s.get(n).and_then(|t| match t.arg {
                Some(Arg::Number(n, _)) => Some(n),
                _ => None,
            })
        };
        let period = num(&s, "days")
            .map(|d| d.saturating_mul(86400))
            .or_else(|| num(&s, "seconds"));
        let subject = s.get("subject").map(|t| self.str_value(t.arg.as_ref()));
        let from = s.get("from").map(|t| self.str_value(t.arg.as_ref()));
        if let Some(c) = from.as_ref().and_then(Value::constant)
            && crate::address::parse_list(&c).iter().all(|a| {
                !matches!(
                    a,
                    crate::address::Address::Mailbox {
                        domain: Some(_),
                        ..
                    }
                )
            })
        {
            self.err(
                pos,
                format!("vacation command: specified :from address '{c}' is invalid"),
            );
        }
        let addresses = s
            .get("addresses")
            .and_then(|t| t.arg.as_ref())
            .map(|a| self.values(a))
            .unwrap_or_default();
        let handle = s.get("handle").map(|t| self.str_value(t.arg.as_ref()));
        let reason = self.str_value(s.positional.first());
        Some(Command::Vacation(Box::new(VacationCmd {
            period,
            subject,
            from,
            addresses,
            mime: s.has("mime"),
            handle,
            reason,
        })))
    }
}
