//! Evaluator: runs a compiled script against a message and envelope and builds the result.
//!
//! Trusts the compiled tree (it was validated) and the host's answers; trusts nothing in
//! the message. Every command and test counts against `max_steps`; includes, loops and
//! nesting are bounded; variable values are truncated to `max_variable_size`. Errors stop
//! evaluation and are returned as [`RuntimeError`]; the caller applies implicit keep.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use crate::actions::{Action, ActionLimits, Notify, ResultSet};
use crate::address::{self, Address};
use crate::comparator::Comparator;
use crate::date;
use crate::error::RuntimeError;
use crate::host::{Host, ScriptLocation};
use crate::lexer::Pos;
use crate::matching::{self, MatchType, Matcher};
use crate::message::{Header, Message, Part};
use crate::script::*;
use crate::{Config, Envelope, Outcome};

mod access;
mod conditions;

/// Deepest foreverypart nesting, across includes (Pigeonhole's limit).
pub const MAX_FOREVERYPART_DEPTH: usize = 4;

/// What happens after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flow {
    Next,
    Stop,
    Return,
    Break(Option<String>),
    /// test_fail: leave the current testsuite test block.
    EndTest,
}

/// Per-script state: local variables and match values.
pub(crate) struct Frame<'s> {
    pub script: &'s Script,
    pub vars: HashMap<String, String>,
    pub globals: HashSet<String>,
    pub match_vars: Vec<String>,
}

impl<'s> Frame<'s> {
    pub fn new(script: &'s Script) -> Self {
        Frame {
            script,
            vars: HashMap::new(),
            globals: HashSet::new(),
            match_vars: Vec::new(),
        }
    }
}

/// The message under evaluation, remembering whether anything looked at it.
///
/// Every read or change of the message goes through `Deref`/`DerefMut`, so the record
/// cannot miss a test, command or response plan that used the message (header, body,
/// size, MIME structure, vacation and notify defaults, editheader, filter programs).
/// Used to tell an envelope-only evaluation from one that needed the message
/// ([`crate::evaluate_tracking`]).
pub(crate) struct TrackedMessage {
    message: Message,
    accessed: Cell<bool>,
}

impl TrackedMessage {
    pub fn new(message: Message) -> Self {
        TrackedMessage {
            message,
            accessed: Cell::new(false),
        }
    }

    /// Whether the message was read or changed since evaluation began.
    pub fn accessed(&self) -> bool {
        self.accessed.get()
    }
}

impl Deref for TrackedMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        self.accessed.set(true);
        &self.message
    }
}

impl DerefMut for TrackedMessage {
    fn deref_mut(&mut self) -> &mut Message {
        self.accessed.set(true);
        &mut self.message
    }
}

/// Evaluation state shared by the main script and its includes.
pub(crate) struct Runtime<'h> {
    pub host: &'h mut dyn Host,
    pub cfg: Config,
    pub envelope: Envelope,
    pub message: TrackedMessage,
    pub edited: bool,
    mime: Option<Rc<Part>>,
    pub result: ResultSet,
    pub globals: HashMap<String, String>,
    pub flags: Vec<String>,
    steps: u64,
    include_depth: usize,
    includes_run: usize,
    included_once: HashSet<(ScriptLocation, String)>,
    script_cache: HashMap<(ScriptLocation, String), Rc<Script>>,
    regex_cache: HashMap<(String, Comparator), Rc<regex::Regex>>,
    /// Path of the current MIME part inside foreverypart loops.
    part_path: Vec<usize>,
    pub in_loop: bool,
    loop_depth: usize,
    pub ts: Option<Box<crate::testsuite::TsState>>,
    /// Problems that did not stop evaluation (e.g. an invalid regex built at runtime).
    pub warnings: Vec<String>,
    /// The message before the first editheader change.
    pub original_message: Option<Vec<u8>>,
    /// Per header field of `message` (same index): values derived on first use. Emptied
    /// whenever the message changes ([`Runtime::message_changed`]).
    fields: Vec<FieldCache>,
    /// Parsed envelope addresses (from, to, orig_to, auth), keyed by the raw text so a
    /// changed envelope (testsuite) is parsed again.
    envelope_cache: [Option<(String, Option<Rc<Address>>)>; 4],
}

/// Values derived from one header field, computed once per evaluation.
#[derive(Default, Clone)]
struct FieldCache {
    /// Unfolded, RFC 2047 decoded value.
    decoded: Option<Rc<str>>,
    /// The decoded value parsed as an address list.
    addresses: Option<Rc<[Address]>>,
}

/// Run `script` and produce the outcome, and whether evaluation used the message.
pub(crate) fn run(
    script: &Script,
    cfg: &Config,
    host: &mut dyn Host,
    envelope: &Envelope,
    message: &[u8],
) -> (Result<Outcome, RuntimeError>, bool) {
    let mut rt = Runtime::new(host, cfg.clone(), envelope.clone(), Message::parse(message));
    let result = run_in(&mut rt, script);
    (result, rt.message.accessed())
}

fn run_in(rt: &mut Runtime<'_>, script: &Script) -> Result<Outcome, RuntimeError> {
    let mut frame = Frame::new(script);
    rt.exec_block(&mut frame, &script.body)?;
    if !rt.result.pipes.is_empty() {
        // Not yet part of the public action list: refuse rather than lose the message.
        return Err(err(
            Pos::default(),
            "pipe actions are not supported by this interface",
        ));
    }
    Ok(rt.finish())
}

fn err(pos: Pos, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::new(pos, msg)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while cut > 0 && !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Split a flag list string into flags (space separated), deduplicated case-insensitively.
pub(crate) fn split_flags(values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        for f in v.split_whitespace() {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(f)) {
                out.push(f.to_string());
            }
        }
    }
    out
}

fn html_to_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

impl<'h> Runtime<'h> {
    pub fn new(host: &'h mut dyn Host, cfg: Config, envelope: Envelope, message: Message) -> Self {
        Runtime {
            host,
            cfg,
            envelope,
            message: TrackedMessage::new(message),
            edited: false,
            mime: None,
            result: ResultSet::new(),
            globals: HashMap::new(),
            flags: Vec::new(),
            steps: 0,
            include_depth: 0,
            includes_run: 0,
            included_once: HashSet::new(),
            script_cache: HashMap::new(),
            regex_cache: HashMap::new(),
            part_path: Vec::new(),
            in_loop: false,
            loop_depth: 0,
            ts: None,
            original_message: None,
            warnings: Vec::new(),
            fields: Vec::new(),
            envelope_cache: Default::default(),
        }
    }

    /// Forget everything derived from the message (call after any change to it).
    pub fn message_changed(&mut self) {
        self.mime = None;
        self.fields.clear();
    }

    fn field_cache(&mut self, i: usize) -> Option<&mut FieldCache> {
        if self.fields.len() != self.message.headers.len() {
            self.fields.clear();
            self.fields
                .resize(self.message.headers.len(), FieldCache::default());
        }
        self.fields.get_mut(i)
    }

    /// The decoded value of header field `i` (cached).
    pub fn field_decoded(&mut self, i: usize) -> Rc<str> {
        if let Some(v) = self.field_cache(i).and_then(|c| c.decoded.clone()) {
            return v;
        }
        let v: Rc<str> = self
            .message
            .headers
            .get(i)
            .map(Header::decoded)
            .unwrap_or_default()
            .into();
        if let Some(c) = self.field_cache(i) {
            c.decoded = Some(v.clone());
        }
        v
    }

    /// The addresses in header field `i` (parsed once from its decoded value).
    pub fn field_addresses(&mut self, i: usize) -> Rc<[Address]> {
        if let Some(v) = self.field_cache(i).and_then(|c| c.addresses.clone()) {
            return v;
        }
        let v: Rc<[Address]> = address::parse_list(&self.field_decoded(i)).into();
        if let Some(c) = self.field_cache(i) {
            c.addresses = Some(v.clone());
        }
        v
    }

    /// The envelope address `field` ("from", "to", "orig_to", "auth"; any case) parsed as
    /// an SMTP path; `None` when absent or not a path.
    pub fn envelope_parsed(&mut self, field: &str) -> Option<Rc<Address>> {
        let (slot, raw) = if field.eq_ignore_ascii_case("from") {
            (0, Some(self.envelope.from.as_str()))
        } else if field.eq_ignore_ascii_case("to") {
            (1, Some(self.envelope.to.as_str()))
        } else if field.eq_ignore_ascii_case("orig_to") {
            (2, self.envelope.orig_to.as_deref())
        } else if field.eq_ignore_ascii_case("auth") {
            (3, self.envelope.auth.as_deref())
        } else {
            return None;
        };
        let raw = raw?;
        let cache = self.envelope_cache.get_mut(slot)?;
        if let Some((key, val)) = cache
            && key == raw
        {
            return val.clone();
        }
        let val = envelope_address(raw).map(Rc::new);
        *cache = Some((raw.to_string(), val.clone()));
        val
    }

    /// Replace the message (testsuite), resetting derived state.
    pub fn set_message(&mut self, m: Message) {
        *self.message = m;
        self.original_message = None;
        self.edited = false;
        self.message_changed();
    }

    pub fn limits(&self) -> ActionLimits {
        ActionLimits {
            max_actions: self.cfg.max_actions,
            max_redirects: self.cfg.max_redirects,
            max_notifications: self.cfg.max_notifications,
        }
    }

    pub fn finish(&mut self) -> Outcome {
        let final_msg = if self.edited {
            Some(self.result.snapshot(self.message.to_bytes()))
        } else {
            None
        };
        self.result.finish(final_msg)
    }

    pub fn reset_run_state(&mut self) {
        self.included_once.clear();
        self.includes_run = 0;
        self.steps = 0;
        self.globals.clear();
        self.flags.clear();
    }

    fn step(&mut self, pos: Pos) -> Result<(), RuntimeError> {
        self.charge(pos, 1)
    }

    /// Charge `cost` steps before doing work that costs about that much.
    fn charge(&mut self, pos: Pos, cost: u64) -> Result<(), RuntimeError> {
        self.steps = self.steps.saturating_add(cost);
        if self.steps > self.cfg.max_steps {
            return Err(err(
                pos,
                "execution exceeded the CPU limit (too many steps)",
            ));
        }
        Ok(())
    }

    pub fn mime_tree(&mut self) -> Rc<Part> {
        if let Some(t) = &self.mime {
            return t.clone();
        }
        let t = Rc::new(self.message.mime_tree());
        self.mime = Some(t.clone());
        t
    }

    fn message_ref(&mut self) -> Option<usize> {
        if self.edited {
            Some(self.result.snapshot(self.message.to_bytes()))
        } else {
            None
        }
    }

    pub fn add_action(&mut self, pos: Pos, a: Action) -> Result<(), RuntimeError> {
        let lim = self.limits();
        self.result.add(a, &lim).map_err(|e| err(pos, e))
    }

    // ------------------------------------------------------------ variables

    pub fn expand(&mut self, frame: &Frame<'_>, v: &Value) -> String {
        let mut out = String::new();
        for p in &v.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(name) => {
                    if let Some(s) = self.lookup(frame, name) {
                        out.push_str(&s);
                    }
                }
                Piece::Match(n) => {
                    if let Some(s) = frame.match_vars.get(*n) {
                        out.push_str(s);
                    }
                }
            }
            if out.len() > self.cfg.max_variable_size.saturating_mul(16).max(1 << 16) {
                break;
            }
        }
        out
    }

    pub fn expand_all(&mut self, frame: &Frame<'_>, vs: &[Value]) -> Vec<String> {
        vs.iter().map(|v| self.expand(frame, v)).collect()
    }

    /// Like [`Runtime::expand`], borrowing constant strings (no variable references:
    /// the compiler merges them into one literal piece) instead of copying them.
    pub fn expand_cow<'v>(&mut self, frame: &Frame<'_>, v: &'v Value) -> Cow<'v, str> {
        match v.pieces.as_slice() {
            [] => Cow::Borrowed(""),
            [Piece::Lit(s)] => Cow::Borrowed(s.as_str()),
            _ => Cow::Owned(self.expand(frame, v)),
        }
    }

    /// [`Runtime::expand_cow`] for a list.
    pub fn expand_all_cow<'v>(&mut self, frame: &Frame<'_>, vs: &'v [Value]) -> Vec<Cow<'v, str>> {
        vs.iter().map(|v| self.expand_cow(frame, v)).collect()
    }

    fn lookup(&mut self, frame: &Frame<'_>, name: &str) -> Option<String> {
        if let Some((ns, rest)) = name.split_once('.') {
            return match ns {
                "env" if frame.script.requires("vnd.dovecot.environment") => {
                    self.environment_item(rest)
                }
                "global" => self.globals.get(rest).cloned(),
                "tst" => crate::testsuite::namespace_var(self, rest),
                _ => None,
            };
        }
        if frame.globals.contains(name) {
            return self.globals.get(name).cloned();
        }
        frame.vars.get(name).cloned()
    }

    pub fn assign(
        &mut self,
        frame: &mut Frame<'_>,
        name: &str,
        value: String,
        pos: Pos,
    ) -> Result<(), RuntimeError> {
        let value = truncate(value, self.cfg.max_variable_size);
        if let Some(rest) = name.strip_prefix("global.") {
            self.globals.insert(rest.to_string(), value);
            return Ok(());
        }
        if frame.globals.contains(name) {
            self.globals.insert(name.to_string(), value);
            return Ok(());
        }
        if !frame.vars.contains_key(name) && frame.vars.len() >= self.cfg.max_variables {
            return Err(err(pos, "too many variables in scope"));
        }
        frame.vars.insert(name.to_string(), value);
        Ok(())
    }

    fn environment_item(&mut self, name: &str) -> Option<String> {
        let key = format!("environment/{name}");
        if let Some(v) = self.cfg.settings.get(&key) {
            return Some(v.clone());
        }
        self.host.environment(name)
    }

    // ------------------------------------------------------------ commands

    pub fn exec_block(
        &mut self,
        frame: &mut Frame<'_>,
        cmds: &[Cmd],
    ) -> Result<Flow, RuntimeError> {
        for c in cmds {
            let f = self.exec(frame, c)?;
            if f != Flow::Next {
                return Ok(f);
            }
        }
        Ok(Flow::Next)
    }

    fn exec(&mut self, frame: &mut Frame<'_>, cmd: &Cmd) -> Result<Flow, RuntimeError> {
        self.step(cmd.pos)?;
        let pos = cmd.pos;
        match &cmd.kind {
            Command::If {
                branches,
                otherwise,
            } => {
                for (t, body) in branches {
                    if self.test(frame, t, pos)? {
                        return self.exec_block(frame, body);
                    }
                }
                if let Some(body) = otherwise {
                    return self.exec_block(frame, body);
                }
            }
            Command::Stop => return Ok(Flow::Stop),
            Command::Return => return Ok(Flow::Return),
            Command::Keep { flags } => {
                let flags = match flags {
                    Some(f) => {
                        let v = self.expand_all(frame, f);
                        split_flags(&v)
                    }
                    None => self.flags.clone(),
                };
                let message = self.message_ref();
                self.add_action(
                    pos,
                    Action::Keep {
                        flags,
                        implicit: false,
                        message,
                    },
                )?;
            }
            Command::Discard => self.add_action(pos, Action::Discard)?,
            Command::FileInto {
                mailbox,
                copy,
                create,
                flags,
                special_use,
            } => {
                let mb = self.expand(frame, mailbox);
                if let Err(e) = crate::compile::check_mailbox_name(&mb) {
                    return Err(err(
                        pos,
                        format!(
                            "fileinto: invalid folder name '{}': {e}",
                            mb.escape_default()
                        ),
                    ));
                }
                let flags = match flags {
                    Some(f) => {
                        let v = self.expand_all(frame, f);
                        split_flags(&v)
                    }
                    None => self.flags.clone(),
                };
                let special_use = special_use.as_ref().map(|s| self.expand(frame, s));
                let message = self.message_ref();
                self.add_action(
                    pos,
                    Action::FileInto {
                        mailbox: mb,
                        flags,
                        copy: *copy,
                        create: *create,
                        special_use,
                        message,
                    },
                )?;
            }
            Command::Redirect { address, copy } => {
                let a = self.expand(frame, address);
                let Some(addr) = crate::actions::normalize_redirect(&a) else {
                    return Err(err(
                        pos,
                        format!("redirect: specified redirect address '{a}' is invalid"),
                    ));
                };
                let message = self.message_ref();
                self.add_action(
                    pos,
                    Action::Redirect {
                        address: addr,
                        copy: *copy,
                        message,
                    },
                )?;
            }
            Command::Reject { reason, extended } => {
                let reason = self.expand(frame, reason);
                self.add_action(
                    pos,
                    Action::Reject {
                        reason,
                        extended: *extended,
                    },
                )?;
            }
            Command::Set {
                name,
                value,
                modifiers,
            } => {
                let v = self.expand(frame, value);
                let v = apply_modifiers_limited(v, modifiers, self.cfg.max_variable_size);
                self.assign(frame, name, v, pos)?;
            }
            Command::Vacation(v) => self.vacation(frame, v, pos)?,
            Command::Flags { op, var, flags } => {
                let vals = self.expand_all(frame, flags);
                let new = split_flags(&vals);
                let cur = match var {
                    Some(n) => split_flags(&[self.lookup(frame, n).unwrap_or_default()]),
                    None => self.flags.clone(),
                };
                let result = match op {
                    FlagOp::Set => new,
                    FlagOp::Add => {
                        let mut c = cur;
                        for f in new {
                            if !c.iter().any(|x| x.eq_ignore_ascii_case(&f)) {
                                c.push(f);
                            }
                        }
                        c
                    }
                    FlagOp::Remove => cur
                        .into_iter()
                        .filter(|c| !new.iter().any(|n| n.eq_ignore_ascii_case(c)))
                        .collect(),
                };
                match var {
                    Some(n) => {
                        let joined = result.join(" ");
                        self.assign(frame, n, joined, pos)?;
                    }
                    None => self.flags = result,
                }
            }
            Command::Include {
                global,
                once,
                optional,
                name,
            } => {
                return self.include(frame, *global, *once, *optional, name, pos);
            }
            Command::Global(names) => {
                for n in names {
                    frame.globals.insert(n.clone());
                }
            }
            Command::AddHeader { last, name, value } => {
                let n = self.expand(frame, name);
                let v = self.expand(frame, value);
                self.addheader(&n, &v, *last, pos)?;
            }
            Command::DeleteHeader {
                index,
                m,
                name,
                patterns,
            } => {
                let n = self.expand(frame, name);
                let pats = self.expand_all(frame, patterns);
                self.deleteheader(frame, &n, index.as_ref(), m, &pats, pos)?;
            }
            Command::Notify(n) => self.notify(frame, n, pos)?,
            Command::ForEveryPart { name, body } => {
                return self.foreverypart(frame, name.as_ref(), body);
            }
            Command::Break { name } => return Ok(Flow::Break(name.clone())),
            Command::ExtractText {
                first,
                modifiers,
                name,
            } => {
                let tree = self.mime_tree();
                let text = crate::message::part_at(&tree, &self.part_path)
                    .filter(|p| p.content_type.kind == "text")
                    .and_then(|p| {
                        p.text().map(|t| {
                            if p.content_type.subtype == "html" {
                                html_to_text(&t)
                            } else {
                                t
                            }
                        })
                    })
                    .unwrap_or_default();
                let text = match first {
                    Some(n) => text
                        .chars()
                        .take(usize::try_from(*n).unwrap_or(usize::MAX))
                        .collect(),
                    None => text,
                };
                let text = apply_modifiers(text, modifiers);
                self.assign(frame, name, text, pos)?;
            }
            Command::Pipe {
                program,
                args,
                copy,
                try_,
            } => {
                let program = self.expand(frame, program);
                let args = self.expand_all(frame, args);
                self.check_program(&program, &args, pos)?;
                let message = self.message_ref();
                let lim = self.limits();
                let pipe = crate::actions::PipeAction {
                    program,
                    args,
                    copy: *copy,
                    try_: *try_,
                    message,
                };
                self.result.add_pipe(pipe, &lim).map_err(|e| err(pos, e))?;
            }
            Command::Program(call) => {
                if !self.run_program(frame, call, pos)? {
                    let name = self.expand(frame, &call.program);
                    return Err(err(pos, format!("failed to execute program '{name}'")));
                }
            }
            Command::Error(v) => {
                let s = self.expand(frame, v);
                return Err(err(pos, format!("error: {s}")));
            }
            Command::DebugLog(v) => {
                let s = self.expand(frame, v);
                self.host.debug_log(&s);
            }
            Command::Testsuite(t) => return crate::testsuite::exec_command(self, frame, t, pos),
            Command::Unsupported(what) => {
                return Err(err(
                    pos,
                    format!("attempted to execute a block guarded by a failed {what} test"),
                ));
            }
        }
        Ok(Flow::Next)
    }

    fn include(
        &mut self,
        frame: &mut Frame<'_>,
        global: bool,
        once: bool,
        optional: bool,
        name: &str,
        pos: Pos,
    ) -> Result<Flow, RuntimeError> {
        let loc = if global {
            ScriptLocation::Global
        } else {
            ScriptLocation::Personal
        };
        let key = (loc, name.to_string());
        if once && self.included_once.contains(&key) {
            return Ok(Flow::Next);
        }
        if self.include_depth >= self.cfg.max_include_depth {
            return Err(err(
                pos,
                format!(
                    "include: nesting depth limit ({}) exceeded for script '{name}'",
                    self.cfg.max_include_depth
                ),
            ));
        }
        self.includes_run += 1;
        if self.includes_run > self.cfg.max_includes {
            return Err(err(pos, "include: too many included scripts"));
        }
        let script = match self.script_cache.get(&key) {
            Some(s) => s.clone(),
            None => {
                let src = self
                    .host
                    .load_script(loc, name)
                    .map_err(|e| err(pos, format!("include: failed to load '{name}': {e}")))?;
                let Some(src) = src else {
                    if optional {
                        return Ok(Flow::Next);
                    }
                    return Err(err(pos, format!("include: script '{name}' does not exist")));
                };
                let compiled = crate::compile::compile(src.as_bytes(), &self.cfg).map_err(|e| {
                    err(
                        pos,
                        format!(
                            "include: failed to compile included script '{name}': {}",
                            crate::compile::first_error(&e)
                        ),
                    )
                })?;
                let rc = Rc::new(compiled);
                self.script_cache.insert(key.clone(), rc.clone());
                rc
            }
        };
        self.included_once.insert(key);
        let _ = frame;
        self.include_depth += 1;
        let mut sub = Frame::new(&script);
        let r = self.exec_block(&mut sub, &script.body);
        self.include_depth -= 1;
        match r? {
            Flow::Stop => Ok(Flow::Stop),
            Flow::EndTest => Ok(Flow::EndTest),
            _ => Ok(Flow::Next),
        }
    }

    fn foreverypart(
        &mut self,
        frame: &mut Frame<'_>,
        name: Option<&String>,
        body: &[Cmd],
    ) -> Result<Flow, RuntimeError> {
        let tree = self.mime_tree();
        let base = self.part_path.clone();
        let Some(start) = crate::message::part_at(&tree, &base) else {
            return Ok(Flow::Next);
        };
        // Top-level loop includes the message itself; nested loops only descendants.
        let mut paths: Vec<Vec<usize>> = Vec::new();
        crate::message::collect_paths(start, base.clone(), !self.in_loop, &mut paths);
        if self.loop_depth >= MAX_FOREVERYPART_DEPTH {
            return Err(err(
                Pos::default(),
                format!("foreverypart loops nested deeper than {MAX_FOREVERYPART_DEPTH} levels"),
            ));
        }
        self.loop_depth += 1;
        let was_in_loop = self.in_loop;
        self.in_loop = true;
        let mut flow = Flow::Next;
        for p in paths {
            self.part_path = p;
            match self.exec_block(frame, body) {
                Ok(Flow::Next) => {}
                Ok(Flow::Break(None)) => break,
                Ok(Flow::Break(Some(n))) if Some(&n) == name => break,
                Ok(other) => {
                    flow = other;
                    break;
                }
                Err(e) => {
                    self.part_path = base;
                    self.in_loop = was_in_loop;
                    self.loop_depth -= 1;
                    return Err(e);
                }
            }
        }
        self.part_path = base;
        self.in_loop = was_in_loop;
        self.loop_depth -= 1;
        Ok(flow)
    }

    fn addheader(
        &mut self,
        name: &str,
        value: &str,
        last: bool,
        pos: Pos,
    ) -> Result<(), RuntimeError> {
        if !crate::compile::valid_field_name(name) {
            return Err(err(
                pos,
                format!("addheader: specified field name '{name}' is invalid"),
            ));
        }
        if !crate::compile::valid_field_value(value) {
            return Err(err(
                pos,
                format!("addheader: specified value '{value}' is invalid"),
            ));
        }
        if crate::response::is_protected_header(&self.cfg, name, true) {
            return Ok(());
        }
        let raw = crate::response::fold_header(name, value);
        if value.len() > self.cfg.max_header_size {
            return Err(err(pos, "addheader: header is too large"));
        }
        let h = Header {
            name: name.to_string(),
            raw: raw.into_bytes(),
        };
        if self.original_message.is_none() {
            self.original_message = Some(self.message.to_bytes());
        }
        if last {
            self.message.headers.push(h);
        } else {
            self.message.headers.insert(0, h);
        }
        self.edited = true;
        self.message_changed();
        Ok(())
    }

    fn deleteheader(
        &mut self,
        frame: &mut Frame<'_>,
        name: &str,
        index: Option<&IndexOpt>,
        m: &Matcher,
        patterns: &[String],
        pos: Pos,
    ) -> Result<(), RuntimeError> {
        if !crate::compile::valid_field_name(name) {
            return Err(err(
                pos,
                format!("deleteheader: specified field name '{name}' is invalid"),
            ));
        }
        if crate::response::is_protected_header(&self.cfg, name, false) {
            return Ok(());
        }
        let positions: Vec<usize> = self
            .message
            .headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.name.eq_ignore_ascii_case(name))
            .map(|(i, _)| i)
            .collect();
        let selected: Vec<usize> = match index {
            Some(ix) => select_index(&positions, ix).into_iter().collect(),
            None => positions,
        };
        let mut remove = Vec::new();
        for i in selected {
            let Some(h) = self.message.headers.get(i) else {
                continue;
            };
            if patterns.is_empty() {
                remove.push(i);
                continue;
            }
            let val = h.decoded();
            let keys: Vec<Value> = patterns.iter().map(|p| Value::lit(p.clone())).collect();
            if self.match_strings(frame, m, &[val], &keys, false, pos)? {
                remove.push(i);
            }
        }
        if !remove.is_empty() {
            if self.original_message.is_none() {
                self.original_message = Some(self.message.to_bytes());
            }
            for i in remove.into_iter().rev() {
                if i < self.message.headers.len() {
                    self.message.headers.remove(i);
                }
            }
            self.edited = true;
            self.message_changed();
        }
        Ok(())
    }

    fn vacation(
        &mut self,
        frame: &mut Frame<'_>,
        v: &VacationCmd,
        pos: Pos,
    ) -> Result<(), RuntimeError> {
        let reason = self.expand(frame, &v.reason);
        let subject = v.subject.as_ref().map(|s| self.expand(frame, s));
        let from = v.from.as_ref().map(|s| self.expand(frame, s));
        let addresses = self.expand_all(frame, &v.addresses);
        let handle = match &v.handle {
            Some(h) => self.expand(frame, h),
            None => format!(
                "{}|{}|{}|{}",
                reason,
                subject.clone().unwrap_or_default(),
                from.clone().unwrap_or_default(),
                v.mime
            ),
        };
        let min_period = self
            .cfg
            .settings
            .get("sieve_vacation_min_period")
            .and_then(|s| s.parse().ok())
            .unwrap_or(86400u64);
        let max_period = self
            .cfg
            .settings
            .get("sieve_vacation_max_period")
            .and_then(|s| s.parse().ok())
            .unwrap_or(90 * 86400u64);
        let period = v
            .period
            .unwrap_or(7 * 86400)
            .clamp(min_period.min(max_period), max_period);
        let vac = crate::response::plan_vacation(
            self, reason, subject, from, &addresses, v.mime, handle, period,
        );
        self.add_action(pos, Action::Vacation(vac))
    }

    fn notify(
        &mut self,
        frame: &mut Frame<'_>,
        n: &NotifyCmd,
        pos: Pos,
    ) -> Result<(), RuntimeError> {
        let method = self.expand(frame, &n.method);
        if let Err(e) = crate::actions::check_notify_uri(&method) {
            return Err(err(
                pos,
                format!("notify action: invalid method '{method}': {e}"),
            ));
        }
        let from = n.from.as_ref().map(|s| self.expand(frame, s));
        let importance = n
            .importance
            .as_ref()
            .map(|s| self.expand(frame, s))
            .and_then(|s| s.parse().ok())
            .unwrap_or(2u8);
        let options = self.expand_all(frame, &n.options);
        let message = match &n.message {
            Some(m) => self.expand(frame, m),
            None => {
                let from = self
                    .message
                    .header_values("from")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let subj = self
                    .message
                    .header_values("subject")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                format!("{from}: {subj}")
            }
        };
        self.add_action(
            pos,
            Action::Notify(Notify {
                method,
                from,
                importance,
                options,
                message,
            }),
        )
    }
}

/// Pick the field position for `:index` (1-based, `:last` counts from the end).
fn select_index(positions: &[usize], ix: &IndexOpt) -> Option<usize> {
    let i = usize::try_from(ix.index).ok()?;
    if i == 0 || i > positions.len() {
        return None;
    }
    if ix.last {
        positions.get(positions.len() - i).copied()
    } else {
        positions.get(i - 1).copied()
    }
}

/// An envelope address as an SMTP path; `None` when it is not one.
fn envelope_address(raw: &str) -> Option<Address> {
    address::parse_smtp_path(raw)
}

/// Apply modifiers; escaping modifiers never cut an escape sequence when the result
/// would exceed `max` bytes (the value is truncated before the unit that does not fit).
pub(crate) fn apply_modifiers_limited(v: String, mods: &[Modifier], max: usize) -> String {
    let mut v = v;
    for m in mods {
        v = match m {
            Modifier::QuoteWildcard | Modifier::QuoteRegex | Modifier::EncodeUrl => {
                let mut out = String::new();
                for c in v.chars() {
                    let unit = apply_modifiers(c.to_string(), std::slice::from_ref(m));
                    if out.len() + unit.len() > max {
                        break;
                    }
                    out.push_str(&unit);
                }
                out
            }
            other => apply_modifiers(v, std::slice::from_ref(other)),
        };
    }
    v
}

/// Apply `set` modifiers in precedence order (already sorted).
pub(crate) fn apply_modifiers(mut v: String, mods: &[Modifier]) -> String {
    for m in mods {
        v = match m {
            Modifier::Lower => v.to_lowercase(),
            Modifier::Upper => v.to_uppercase(),
            Modifier::LowerFirst => {
                let mut c = v.chars();
                match c.next() {
                    Some(f) => f.to_lowercase().chain(c).collect(),
                    None => v,
                }
            }
            Modifier::UpperFirst => {
                let mut c = v.chars();
                match c.next() {
                    Some(f) => f.to_uppercase().chain(c).collect(),
                    None => v,
                }
            }
            Modifier::QuoteWildcard => {
                let mut o = String::new();
                for c in v.chars() {
                    if matches!(c, '*' | '?' | '\\') {
                        o.push('\\');
                    }
                    o.push(c);
                }
                o
            }
            Modifier::QuoteRegex => {
                let mut o = String::new();
                for c in v.chars() {
                    if "\\^$.[]|()*+?{}".contains(c) {
                        o.push('\\');
                    }
                    o.push(c);
                }
                o
            }
            Modifier::EncodeUrl => {
                let mut o = String::new();
                for b in v.bytes() {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        o.push(char::from(b));
                    } else {
                        o.push_str(&format!("%{b:02X}"));
                    }
                }
                o
            }
            Modifier::Length => v.chars().count().to_string(),
        };
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::NullHost;

    fn run_src(src: &str, msg: &str) -> Result<Outcome, RuntimeError> {
        let cfg = Config::default();
        let s = crate::compile::compile(src.as_bytes(), &cfg).expect("compiles");
        let env = Envelope {
            from: "sender@example.org".into(),
            to: "user+box@example.net".into(),
            ..Envelope::default()
        };
        run(&s, &cfg, &mut NullHost, &env, msg.as_bytes()).0
    }

    const MSG: &str =
        "From: Joe <joe@example.org>\nTo: user@example.net\nSubject: Hello world\n\nBody text\n";

    #[test]
    fn table() {
        let cases: &[(&str, &[&str])] = &[
            ("keep;", &["keep"]),
            ("discard;", &["discard"]),
            (
                "require \"fileinto\"; if header :contains \"subject\" \"hello\" { fileinto \"A\"; }",
                &["store"],
            ),
            (
                "require \"fileinto\"; if header :is \"subject\" \"hello\" { fileinto \"A\"; }",
                &["keep"],
            ),
            (
                "require [\"fileinto\", \"copy\"]; fileinto :copy \"A\";",
                &["store", "keep"],
            ),
            (
                "if address :domain \"from\" \"example.org\" { redirect \"x@example.com\"; }",
                &["redirect"],
            ),
            (
                "require [\"envelope\", \"subaddress\"]; if envelope :detail \"to\" \"box\" { discard; }",
                &["discard"],
            ),
            ("if size :over 10K { discard; }", &["keep"]),
            (
                "require \"variables\"; if header :matches \"subject\" \"* *\" { if string \"${2}\" \"world\" { discard; } }",
                &["discard"],
            ),
            (
                "require \"body\"; if body :contains \"text\" { discard; }",
                &["discard"],
            ),
            ("require \"reject\"; reject \"no\";", &["reject"]),
            // The header cache follows editheader changes.
            (
                "require \"editheader\"; if header :is \"x-a\" \"1\" { stop; } addheader \"X-A\" \"1\"; if header :is \"x-a\" \"1\" { discard; }",
                &["discard"],
            ),
            (
                "require \"editheader\"; if address :is \"from\" \"joe@example.org\" { deleteheader \"from\"; } if exists \"from\" { stop; } if address :is \"to\" \"user@example.net\" { discard; }",
                &["discard"],
            ),
            ("if size :over 85 { discard; }", &["discard"]),
            ("if size :over 86 { discard; }", &["keep"]),
        ];
        for (src, want) in cases {
            let out = run_src(src, MSG).unwrap_or_else(|e| panic!("{src}: {e}"));
            let names: Vec<&str> = out.actions.iter().map(Action::name).collect();
            assert_eq!(&names, want, "{src}");
        }
    }

    #[test]
    fn runtime_limits() {
        let cfg = Config {
            max_steps: 100,
            ..Config::default()
        };
        let src = "require [\"foreverypart\"]; foreverypart { foreverypart { keep; } }".to_string();
        let s = crate::compile::compile(src.as_bytes(), &cfg).expect("compiles");
        let (r, _) = run(
            &s,
            &cfg,
            &mut NullHost,
            &Envelope::default(),
            MSG.as_bytes(),
        );
        assert!(r.is_ok());
        let many: String = (0..10)
            .map(|i| format!("redirect \"a{i}@example.com\";"))
            .collect();
        assert!(run_src(&many, MSG).is_err());
    }

    #[test]
    fn message_access_is_recorded() {
        let cases: &[(&str, bool)] = &[
            ("keep;", false),
            ("discard;", false),
            (
                "require \"envelope\"; if envelope :is \"from\" \"sender@example.org\" { discard; }",
                false,
            ),
            (
                "require [\"fileinto\", \"imap4flags\", \"variables\"]; set \"a\" \"b\"; addflag \"\\\\Seen\"; fileinto \"A\";",
                false,
            ),
            (
                "require \"environment\"; if environment :is \"location\" \"MDA\" { keep; }",
                false,
            ),
            // The test on the message is never reached.
            (
                "if false { if header :contains \"subject\" \"x\" { keep; } }",
                false,
            ),
            ("if header :contains \"subject\" \"x\" { keep; }", true),
            ("if address \"from\" \"joe@example.org\" { keep; }", true),
            ("if exists \"x-spam\" { discard; }", true),
            ("if size :over 1K { discard; }", true),
            (
                "require \"body\"; if body :contains \"x\" { discard; }",
                true,
            ),
            (
                "require \"date\"; if date :is \"date\" \"year\" \"2024\" { discard; }",
                true,
            ),
            ("require \"vacation\"; vacation \"away\";", true),
            ("require \"editheader\"; addheader \"X-A\" \"1\";", true),
            ("require \"duplicate\"; if duplicate { discard; }", true),
        ];
        for (src, want) in cases {
            let cfg = Config::default();
            let s = crate::compile::compile(src.as_bytes(), &cfg)
                .unwrap_or_else(|e| panic!("{src}: {e}"));
            let env = Envelope {
                from: "sender@example.org".into(),
                to: "user@example.net".into(),
                ..Envelope::default()
            };
            let (r, accessed) = run(&s, &cfg, &mut NullHost, &env, MSG.as_bytes());
            assert!(r.is_ok(), "{src}: {r:?}");
            assert_eq!(accessed, *want, "{src}");
        }
    }

    #[test]
    fn modifiers() {
        assert_eq!(apply_modifiers("Hello".into(), &[Modifier::Upper]), "HELLO");
        assert_eq!(
            apply_modifiers("a*b".into(), &[Modifier::QuoteWildcard, Modifier::Length]),
            "4"
        );
        assert_eq!(
            apply_modifiers("a b".into(), &[Modifier::EncodeUrl]),
            "a%20b"
        );
    }
}
