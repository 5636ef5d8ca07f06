//! The `vnd.dovecot.testsuite` extension, so Pigeonhole's conformance suite runs against
//! this interpreter: test blocks, test_fail, test_set, test_message, the result commands,
//! script compile/run, error inspection, an in-memory mail store and outbox, settings.
//!
//! Only compiled when [`crate::Config::testsuite`] is on; production scripts cannot
//! require it. Trusts the harness's file loader; everything else is checked as usual.
//! Failures of a test block are recorded, never panics; other blocks still run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;

use crate::actions::{Action, ResultSet};
use crate::compile::Compiler;
use crate::eval::{Flow, Frame, Runtime};
use crate::host::Host;
use crate::lexer::Pos;
use crate::matching::{MatchType, Matcher};
use crate::message::Message;
use crate::parser::{Arg, CommandNode, TestNode};
use crate::response::Outgoing;
use crate::script::{Cmd, Command, Script, Test, Value};
use crate::validate::{self, Kind, TagSpec};
use crate::{Config, Envelope, RuntimeError};

/// A testsuite command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsCommand {
    /// `test "name" { ... }`
    Test {
        /// Test name.
        name: String,
        /// Its block.
        body: Vec<Cmd>,
    },
    /// `test_fail "reason"`
    Fail(Value),
    /// `test_set "item" "value"`
    Set(Value, Value),
    /// `test_result_reset`
    ResultReset,
    /// `test_result_print`
    ResultPrint,
    /// `test_message` used as a command.
    Message(MessageSel),
    /// `test_mailbox_create`
    MailboxCreate(Value),
    /// `test_config_set`
    ConfigSet(Value, Value),
    /// `test_config_unset`
    ConfigUnset(Value),
    /// `test_config_reload`
    ConfigReload,
    /// `test_binary_save`
    BinarySave(Value),
    /// `test_binary_load`
    BinaryLoad(Value),
    /// `test_imap_metadata_set [:mailbox "x"] "name" "value"`
    MetadataSet(Option<Value>, Value, Value),
}

/// Which message `test_message` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSel {
    /// `:folder` name; `None` means `:smtp`.
    pub folder: Option<Value>,
    /// Index.
    pub index: u64,
}

/// A testsuite test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsTest {
    /// `test_script_compile "path"`
    ScriptCompile(Value),
    /// `test_script_run [:append_result]`
    ScriptRun {
        /// Keep the current result and add to it.
        append: bool,
    },
    /// `test_multiscript [paths]`
    MultiScript(Vec<Value>),
    /// `test_error`
    Error {
        /// Matcher.
        m: Matcher,
        /// `:index`
        index: Option<u64>,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `test_result_action`
    ResultAction {
        /// Matcher.
        m: Matcher,
        /// `:index`
        index: Option<u64>,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `test_result_execute`
    ResultExecute,
    /// `test_message` used as a test.
    Message(MessageSel),
}

/// The outcome of one test block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    /// Block name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why it failed.
    pub reason: String,
}

/// A message in the in-memory store: its bytes and IMAP flags.
pub type StoredMessage = (Vec<u8>, Vec<String>);

/// Loads a script file by path relative to the test file.
pub type Loader = Box<dyn FnMut(&str) -> Option<String>>;

/// State of a testsuite run.
pub struct TsState {
    /// Results of the test blocks run so far.
    pub records: Vec<TestRecord>,
    current: Option<String>,
    fail_reason: Option<String>,
    /// Mail store: mailbox name to messages.
    pub mailboxes: BTreeMap<String, Vec<StoredMessage>>,
    /// Messages sent.
    pub outbox: Vec<Outgoing>,
    compiled: Option<Rc<Script>>,
    errors: Vec<String>,
    binaries: HashMap<String, Vec<u8>>,
    loader: Loader,
    /// Directory of the test file, for `${tst.path}`.
    pub path: String,
    base_config: Config,
    env_from_set: bool,
    env_to_set: bool,
    metadata: BTreeMap<(Option<String>, String), String>,
    /// The envelope as the script set it (test_message replaces the live one).
    envelope: Envelope,
}

impl fmt::Debug for TsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsState")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

/// Run a testsuite script. `loader` resolves `test_script_compile` paths.
pub fn run_testsuite(
    source: &[u8],
    config: &Config,
    host: &mut dyn Host,
    loader: Loader,
    path: &str,
) -> Result<Vec<TestRecord>, String> {
    let cfg = Config {
        testsuite: true,
        extprograms: true,
        ..config.clone()
    };
    let script = {
        let mut loader = |loc: crate::host::ScriptLocation, name: &str| {
            host.load_script(loc, name).ok().flatten()
        };
        match crate::compile::compile_with_loader(source, &cfg, &mut loader) {
            (Some(s), _) => s,
            (None, d) => return Err(crate::error::CompileErrors(d.errors).to_string()),
        }
    };
    let mut mailboxes = BTreeMap::new();
    mailboxes.insert("INBOX".to_string(), Vec::new());
    let st = TsState {
        records: Vec::new(),
        current: None,
        fail_reason: None,
        mailboxes,
        outbox: Vec::new(),
        compiled: None,
        errors: Vec::new(),
        binaries: HashMap::new(),
        loader,
        path: path.to_string(),
        base_config: cfg.clone(),
        env_from_set: false,
        env_to_set: false,
        metadata: BTreeMap::new(),
        envelope: Envelope::default(),
    };
    let env = Envelope {
        from: "sender@example.com".into(),
        to: "recipient@example.com".into(),
        ..Envelope::default()
    };
    let msg = Message::parse(b"From: sender@example.com\r\nTo: recipient@example.com\r\nSubject: Test message\r\n\r\nTest message.\r\n");
    let mut st = st;
    st.envelope = env.clone();
    let mut rt = Runtime::new(host, cfg, env, msg);
    rt.ts = Some(Box::new(st));
    let mut frame = Frame::new(&script);
    let r = rt.exec_block(&mut frame, &script.body);
    let mut records = rt.ts.take().map(|s| s.records).unwrap_or_default();
    if let Err(e) = r {
        records.push(TestRecord {
            name: "(script)".into(),
            passed: false,
            reason: e.to_string(),
        });
    }
    Ok(records)
}

fn ts<'a>(rt: &'a mut Runtime<'_>) -> Option<&'a mut TsState> {
    rt.ts.as_deref_mut()
}

/// Whether the in-memory store has `name` (None outside the testsuite).
pub(crate) fn mailbox_exists(rt: &mut Runtime<'_>, name: &str) -> Option<bool> {
    let st = ts(rt)?;
    Some(st.mailboxes.keys().any(|k| {
        k == name || (k.eq_ignore_ascii_case("INBOX") && name.eq_ignore_ascii_case("INBOX"))
    }))
}

/// A metadata value from the testsuite store: `None` outside the testsuite.
pub(crate) fn metadata(
    rt: &mut Runtime<'_>,
    mailbox: Option<&str>,
    name: &str,
) -> Option<Option<String>> {
    let st = ts(rt)?;
    Some(
        st.metadata
            .get(&(mailbox.map(str::to_string), name.to_string()))
            .cloned(),
    )
}

/// Variables of the `tst` namespace.
pub(crate) fn namespace_var(rt: &mut Runtime<'_>, name: &str) -> Option<String> {
    let st = ts(rt)?;
    match name {
        "name" => st.current.clone(),
        "path" => Some(st.path.clone()),
        _ => None,
    }
}

const fn tag(name: &'static str, arg: Option<Kind>) -> TagSpec {
    TagSpec {
        name,
        arg,
        ext: None,
    }
}

const MSG_TAGS: &[TagSpec] = &[tag("smtp", None), tag("folder", Some(Kind::Str))];
const INDEX_TAG: &[TagSpec] = &[tag("index", Some(Kind::Num))];
const RUN_TAGS: &[TagSpec] = &[tag("append_result", None)];
const MAILBOX_TAG: &[TagSpec] = &[tag("mailbox", Some(Kind::Str))];
const RELOAD_TAGS: &[TagSpec] = &[tag("extension", Some(Kind::Str))];

fn message_sel(
    c: &mut Compiler<'_, '_>,
    name: &str,
    what: &'static str,
    pos: Pos,
    args: &[Arg],
) -> Option<MessageSel> {
    let s = c.split(name, what, pos, args, &[MSG_TAGS])?;
    if !c.positional(name, what, pos, &s, &[(Kind::Num, "index")]) {
        return None;
    }
    let folder = s.get("folder").map(|t| c.str_value(t.arg.as_ref()));
    let index = match s.positional.first() {
        Some(Arg::Number(n, _)) => *n,
        _ => 0,
    };
    Some(MessageSel { folder, index })
}

/// Compile a testsuite command; `None` when `node` is not one.
pub(crate) fn compile_command(
    c: &mut Compiler<'_, '_>,
    node: &CommandNode,
) -> Option<Option<Command>> {
    let name = node.name.as_str();
    let pos = node.pos;
    let w = "command";
    let simple = |c: &mut Compiler<'_, '_>, slots: &[(Kind, &str)]| -> Option<Vec<Value>> {
        let s = c.split(name, w, pos, &node.args, &[])?;
        if !c.positional(name, w, pos, &s, slots) {
            return None;
        }
        Some(s.positional.iter().map(|a| c.str_value(Some(a))).collect())
    };
    let cmd = match name {
        "test" => {
            let Some(block) = &node.block else {
                c.err(pos, "the test command requires a block");
                return Some(None);
            };
            let v = simple(c, &[(Kind::Str, "test name")]);
            let body = c.commands(block, false);
            let v = v?;
            TsCommand::Test {
                name: v.first().and_then(Value::constant).unwrap_or_default(),
                body,
            }
        }
        "test_fail" => TsCommand::Fail(simple(c, &[(Kind::Str, "reason")])?.remove(0)),
        "test_set" => {
            let mut v = simple(c, &[(Kind::Str, "item"), (Kind::Str, "value")])?;
            let b = v.remove(1);
            TsCommand::Set(v.remove(0), b)
        }
        "test_result_reset" => {
            simple(c, &[])?;
            TsCommand::ResultReset
        }
        "test_result_print" => {
            simple(c, &[])?;
            TsCommand::ResultPrint
        }
        "test_message" => TsCommand::Message(message_sel(c, name, w, pos, &node.args)?),
        "test_mailbox_create" => {
            TsCommand::MailboxCreate(simple(c, &[(Kind::Str, "mailbox")])?.remove(0))
        }
        "test_config_set" => {
            let mut v = simple(c, &[(Kind::Str, "setting"), (Kind::Str, "value")])?;
            let b = v.remove(1);
            TsCommand::ConfigSet(v.remove(0), b)
        }
        "test_config_unset" => {
            TsCommand::ConfigUnset(simple(c, &[(Kind::Str, "setting")])?.remove(0))
        }
        "test_config_reload" => {
            let s = c.split(name, w, pos, &node.args, &[RELOAD_TAGS])?;
            if !c.positional(name, w, pos, &s, &[]) {
                return Some(None);
            }
            TsCommand::ConfigReload
        }
        "test_binary_save" => TsCommand::BinarySave(simple(c, &[(Kind::Str, "name")])?.remove(0)),
        "test_binary_load" => TsCommand::BinaryLoad(simple(c, &[(Kind::Str, "name")])?.remove(0)),
        "test_imap_metadata_set" => {
            let s = c.split(name, w, pos, &node.args, &[MAILBOX_TAG])?;
            if !c.positional(
                name,
                w,
                pos,
                &s,
                &[(Kind::Str, "annotation"), (Kind::Str, "value")],
            ) {
                return Some(None);
            }
            let mb = s.get("mailbox").map(|t| c.str_value(t.arg.as_ref()));
            let n = c.str_value(s.positional.first());
            let v = c.str_value(s.positional.get(1));
            TsCommand::MetadataSet(mb, n, v)
        }
        _ => return None,
    };
    Some(Some(Command::Testsuite(cmd)))
}

/// Compile a testsuite test; `None` when `node` is not one.
pub(crate) fn compile_test(c: &mut Compiler<'_, '_>, node: &TestNode) -> Option<Option<Test>> {
    let name = node.name.as_str();
    let pos = node.pos;
    let w = "test";
    let t = match name {
        "test_script_compile" => {
            let s = c.split(name, w, pos, &node.args, &[])?;
            if !c.positional(name, w, pos, &s, &[(Kind::Str, "script path")]) {
                return Some(None);
            }
            TsTest::ScriptCompile(c.str_value(s.positional.first()))
        }
        "test_script_run" => {
            let s = c.split(name, w, pos, &node.args, &[RUN_TAGS])?;
            if !c.positional(name, w, pos, &s, &[]) {
                return Some(None);
            }
            TsTest::ScriptRun {
                append: s.has("append_result"),
            }
        }
        "test_multiscript" => {
            let s = c.split(name, w, pos, &node.args, &[])?;
            if !c.positional(name, w, pos, &s, &[(Kind::StrList, "scripts")]) {
                return Some(None);
            }
            TsTest::MultiScript(c.values(&s.positional[0]))
        }
        "test_error" | "test_result_action" => {
            let s = c.split(
                name,
                w,
                pos,
                &node.args,
                &[validate::COMPARATOR, validate::MATCH, INDEX_TAG],
            )?;
            if !c.positional(name, w, pos, &s, &[(Kind::StrList, "key list")]) {
                return Some(None);
            }
            let m = c.matcher(name, &s)?;
            let index = s.get("index").and_then(|t| match t.arg {
                Some(Arg::Number(n, _)) => Some(n),
                _ => None,
            });
            let keys = c.values(&s.positional[0]);
            if name == "test_error" {
                TsTest::Error { m, index, keys }
            } else {
                TsTest::ResultAction { m, index, keys }
            }
        }
        "test_result_execute" => {
            let s = c.split(name, w, pos, &node.args, &[])?;
            if !c.positional(name, w, pos, &s, &[]) {
                return Some(None);
            }
            TsTest::ResultExecute
        }
        "test_message" => TsTest::Message(message_sel(c, name, w, pos, &node.args)?),
        _ => return None,
    };
    Some(Some(Test::Testsuite(t)))
}

fn apply_setting(cfg: &mut Config, name: &str, value: &str) {
    let num = value.parse::<usize>().ok();
    match (name, num) {
        ("sieve_max_actions", Some(n)) => cfg.max_actions = n,
        ("sieve_max_redirects", Some(n)) => cfg.max_redirects = n,
        ("sieve_variables_max_variable_size" | "sieve_variables_max_value_size", Some(n)) => {
            cfg.max_variable_size = n
        }
        ("sieve_variables_max_scope_size" | "sieve_variables_max_scope_count", Some(n)) => {
            cfg.max_variables = n
        }
        ("sieve_include_max_nesting_depth", Some(n)) => cfg.max_include_depth = n,
        ("sieve_include_max_includes", Some(n)) => cfg.max_includes = n,
        ("sieve_notify_max_notifications", Some(n)) => cfg.max_notifications = n,
        ("sieve_editheader_max_header_size", Some(n)) => cfg.max_header_size = n,
        ("sieve_subaddress_sep" | "recipient_delimiter", _) => {
            cfg.subaddress_separator = value.to_string()
        }
        ("sieve_user_email", _) => cfg.user_email = Some(value.to_string()),
        _ => {}
    }
    cfg.settings.insert(name.to_string(), value.to_string());
}

fn fail(rt: &mut Runtime<'_>, reason: String) -> Flow {
    if let Some(st) = ts(rt) {
        st.fail_reason = Some(reason);
    }
    Flow::EndTest
}

/// Execute a testsuite command.
pub(crate) fn exec_command(
    rt: &mut Runtime<'_>,
    frame: &mut Frame<'_>,
    cmd: &TsCommand,
    pos: Pos,
) -> Result<Flow, RuntimeError> {
    match cmd {
        TsCommand::Test { name, body } => {
            if let Some(st) = ts(rt) {
                st.current = Some(name.clone());
                st.fail_reason = None;
            }
            let r = rt.exec_block(frame, body);
            let (passed, reason, flow) = match r {
                Ok(Flow::EndTest) => {
                    let mut reason = ts(rt)
                        .and_then(|s| s.fail_reason.take())
                        .unwrap_or_default();
                    if let Some(st) = ts(rt)
                        && !st.errors.is_empty()
                    {
                        reason.push_str(&format!(
                            " [{} error(s): {}]",
                            st.errors.len(),
                            st.errors.join(" | ")
                        ));
                    }
                    (false, reason, Flow::Next)
                }
                Ok(Flow::Stop) => (true, String::new(), Flow::Stop),
                Ok(_) => (true, String::new(), Flow::Next),
                Err(e) => (false, format!("runtime error: {e}"), Flow::Next),
            };
            if let Some(st) = ts(rt) {
                st.records.push(TestRecord {
                    name: name.clone(),
                    passed,
                    reason,
                });
                st.current = None;
            }
            Ok(flow)
        }
        TsCommand::Fail(v) => {
            let r = rt.expand(frame, v);
            Ok(fail(rt, r))
        }
        TsCommand::Set(item, value) => {
            let item = rt.expand(frame, item);
            let value = rt.expand(frame, value);
            match item.as_str() {
                "message" => {
                    let m = Message::parse(value.as_bytes());
                    if let Some(saved) = ts(rt).map(|s| s.envelope.clone()) {
                        // Back to the testsuite's envelope (test_message may have replaced it).
                        rt.envelope = saved;
                    }
                    let (from_set, to_set) =
                        ts(rt).map_or((true, true), |s| (s.env_from_set, s.env_to_set));
                    if !from_set {
                        let f = m
                            .header_values("return-path")
                            .into_iter()
                            .chain(m.header_values("sender"))
                            .chain(m.header_values("from"))
                            .next();
                        rt.envelope.from = f
                            .and_then(|v| crate::address::parse_list(&v).into_iter().next())
                            .map(|a| a.addr_spec())
                            .unwrap_or_default();
                    }
                    if !to_set {
                        let t = m
                            .header_values("envelope-to")
                            .into_iter()
                            .chain(m.header_values("delivered-to"))
                            .chain(m.header_values("to"))
                            .next();
                        rt.envelope.to = t
                            .and_then(|v| crate::address::parse_list(&v).into_iter().next())
                            .map_or_else(|| "recipient@example.com".to_string(), |a| a.addr_spec());
                    }
                    rt.set_message(m);
                    rt.result = ResultSet::new();
                }
                "envelope.from" => {
                    rt.envelope.from = value;
                    if let Some(s) = ts(rt) {
                        s.env_from_set = true;
                    }
                }
                "envelope.to" => {
                    rt.envelope.to = value;
                    if let Some(s) = ts(rt) {
                        s.env_to_set = true;
                    }
                }
                "envelope.orig_to" => rt.envelope.orig_to = Some(value),
                "envelope.auth" => rt.envelope.auth = Some(value),
                _ => {
                    return Err(RuntimeError::new(
                        pos,
                        format!("test_set: unknown item '{item}'"),
                    ));
                }
            }
            if item.starts_with("envelope.") {
                let e = rt.envelope.clone();
                if let Some(s) = ts(rt) {
                    s.envelope = e;
                }
            }
            Ok(Flow::Next)
        }
        TsCommand::ResultReset => {
            // Edits made by the discarded result go too.
            if let Some(orig) = rt.original_message.take() {
                rt.set_message(Message::parse(&orig));
            }
            rt.result = ResultSet::new();
            rt.flags.clear();
            if let Some(st) = ts(rt) {
                st.outbox.clear();
            }
            Ok(Flow::Next)
        }
        TsCommand::ResultPrint | TsCommand::ConfigReload => Ok(Flow::Next),
        TsCommand::MetadataSet(mb, n, v) => {
            let mb = mb.as_ref().map(|m| rt.expand(frame, m));
            let n = rt.expand(frame, n);
            let v = rt.expand(frame, v);
            if let Some(st) = ts(rt) {
                st.metadata.insert((mb, n), v);
            }
            Ok(Flow::Next)
        }
        TsCommand::Message(sel) => {
            // Pigeonhole aborts the testsuite script here without failing the test.
            let _ = pos;
            Ok(if select_message(rt, frame, sel) {
                Flow::Next
            } else {
                Flow::Stop
            })
        }
        TsCommand::MailboxCreate(v) => {
            let n = rt.expand(frame, v);
            if let Some(st) = ts(rt) {
                st.mailboxes.entry(n).or_default();
            }
            Ok(Flow::Next)
        }
        TsCommand::ConfigSet(n, v) => {
            let n = rt.expand(frame, n);
            let v = rt.expand(frame, v);
            apply_setting(&mut rt.cfg, &n, &v);
            Ok(Flow::Next)
        }
        TsCommand::ConfigUnset(n) => {
            let n = rt.expand(frame, n);
            let base = ts(rt).map(|s| s.base_config.clone()).unwrap_or_default();
            rt.cfg.settings.remove(&n);
            let settings = rt.cfg.settings.clone();
            let mut cfg = base;
            for (k, v) in &settings {
                apply_setting(&mut cfg, k, v);
            }
            rt.cfg = cfg;
            Ok(Flow::Next)
        }
        TsCommand::BinarySave(n) => {
            let n = rt.expand(frame, n);
            if let Some(st) = ts(rt)
                && let Some(s) = &st.compiled
            {
                let b = s.to_bytes();
                st.binaries.insert(n, b);
            }
            Ok(Flow::Next)
        }
        TsCommand::BinaryLoad(n) => {
            let n = rt.expand(frame, n);
            let cfg = rt.cfg.clone();
            if let Some(st) = ts(rt) {
                let Some(b) = st.binaries.get(&n) else {
                    return Err(RuntimeError::new(
                        pos,
                        format!("test_binary_load: no binary '{n}'"),
                    ));
                };
                let s = Script::from_bytes(b, &cfg)
                    .map_err(|e| RuntimeError::new(pos, e.to_string()))?;
                st.compiled = Some(Rc::new(s));
            }
            Ok(Flow::Next)
        }
    }
}

/// Flags as a store records them: Dovecot adds `$HasNoAttachment` to plain messages.
fn stored_flags(flags: &[String]) -> Vec<String> {
    let mut f = flags.to_vec();
    f.push("$HasNoAttachment".into());
    f
}

fn strip_angle(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(t)
        .to_string()
}

fn select_message(rt: &mut Runtime<'_>, frame: &Frame<'_>, sel: &MessageSel) -> bool {
    let folder = sel.folder.as_ref().map(|f| rt.expand(frame, f));
    let Some(st) = ts(rt) else { return false };
    let idx = usize::try_from(sel.index).unwrap_or(usize::MAX);
    match folder {
        None => {
            let Some(o) = st.outbox.get(idx).cloned() else {
                return false;
            };
            rt.set_message(Message::parse(&o.message));
            rt.envelope.from = o.from;
            rt.envelope.to = o.to;
            true
        }
        Some(f) => {
            let key = st
                .mailboxes
                .keys()
                .find(|k| {
                    **k == f || (k.eq_ignore_ascii_case("INBOX") && f.eq_ignore_ascii_case("INBOX"))
                })
                .cloned();
            let Some((m, flags)) = key
                .and_then(|k| st.mailboxes.get(&k))
                .and_then(|v| v.get(idx))
                .cloned()
            else {
                return false;
            };
            rt.set_message(Message::parse(&m));
            rt.flags = flags;
            true
        }
    }
}

fn compile_path(rt: &mut Runtime<'_>, path: &str) -> bool {
    let cfg = rt.cfg.clone();
    let Some(st) = rt.ts.as_deref_mut() else {
        return false;
    };
    st.errors.clear();
    st.compiled = None;
    let Some(src) = (st.loader)(path) else {
        st.errors.push(format!("failed to open script '{path}'"));
        return false;
    };
    let host = &mut *rt.host;
    let mut loader =
        |loc: crate::host::ScriptLocation, name: &str| host.load_script(loc, name).ok().flatten();
    let (script, diag) = crate::compile::compile_with_loader(src.as_bytes(), &cfg, &mut loader);
    st.errors = diag.errors.iter().map(|e| e.message.clone()).collect();
    match script {
        Some(s) => {
            st.compiled = Some(Rc::new(s));
            true
        }
        None => {
            st.errors.push("failed to compile script".into());
            false
        }
    }
}

fn run_compiled(rt: &mut Runtime<'_>, append: bool) -> bool {
    let Some(script) = ts(rt).and_then(|s| s.compiled.clone()) else {
        return false;
    };
    if !append {
        rt.result = ResultSet::new();
    }
    rt.reset_run_state();
    let mut f = Frame::new(&script);
    rt.warnings.clear();
    match rt.exec_block(&mut f, &script.body) {
        Ok(_) => {
            let w = std::mem::take(&mut rt.warnings);
            if let Some(st) = ts(rt) {
                st.errors = w;
            }
            true
        }
        Err(e) => {
            if let Some(st) = ts(rt) {
                st.errors = vec![e.message];
            }
            false
        }
    }
}

/// Carry out the current result against the in-memory store and outbox.
fn execute_result(rt: &mut Runtime<'_>) -> bool {
    let outcome = rt.finish();
    let original = rt.message.to_bytes();
    let original_unedited = rt
        .original_message
        .clone()
        .unwrap_or_else(|| original.clone());
    let raw_env = rt.envelope.clone();
    let mut notified: Vec<String> = Vec::new();
    let mut env = rt.envelope.clone();
    env.from = crate::address::envelope_spec(&env.from).unwrap_or_default();
    env.to = crate::address::envelope_spec(&env.to).unwrap_or_default();
    let cfg = rt.cfg.clone();
    let mut ok = true;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let msg_of = |m: &Option<usize>| -> Vec<u8> {
        m.and_then(|i| outcome.edited_messages.get(i).cloned())
            .unwrap_or_else(|| original.clone())
    };
    let Some(st) = ts(rt) else { return false };
    for a in &outcome.actions {
        match a {
            Action::Keep { message, flags, .. } => st
                .mailboxes
                .entry("INBOX".into())
                .or_default()
                .push((msg_of(message), stored_flags(flags))),
            Action::FileInto {
                mailbox,
                create,
                message,
                flags,
                ..
            } => {
                if mailbox.contains("//") || mailbox.starts_with('/') || mailbox.ends_with('/') {
                    errors.push(format!(
                        "failed to store into mailbox '{mailbox}': invalid mailbox name"
                    ));
                    ok = false;
                    continue;
                }
                if mailbox.contains('\u{fffd}') {
                    errors.push(format!(
                        "failed to store into mailbox '{mailbox}': invalid mailbox name (bad UTF-8)"
                    ));
                    ok = false;
                    continue;
                }
                let key = if mailbox.eq_ignore_ascii_case("INBOX") {
                    "INBOX".to_string()
                } else {
                    mailbox.clone()
                };
                if !st.mailboxes.contains_key(&key) && !create {
                    errors.push(format!(
                        "failed to store into mailbox '{mailbox}': Mailbox doesn't exist: {mailbox}"
                    ));
                    ok = false;
                    continue;
                }
                st.mailboxes
                    .entry(key)
                    .or_default()
                    .push((msg_of(message), stored_flags(flags)));
            }
            Action::Redirect {
                address, message, ..
            } => {
                let me = cfg.user_email.clone().unwrap_or_else(|| env.to.clone());
                let body = msg_of(message);
                if crate::response::redirect_loop(&body, &me)
                    || crate::response::redirect_loop(&body, &env.to)
                {
                    continue;
                }
                let from = if env.from.is_empty() {
                    String::new()
                } else {
                    match cfg
                        .settings
                        .get("sieve_redirect_envelope_from")
                        .map(|s| s.trim())
                    {
                        Some("recipient") => env.to.clone(),
                        Some("orig_recipient") => env
                            .orig_to
                            .as_deref()
                            .and_then(crate::address::envelope_spec)
                            .unwrap_or_else(|| env.to.clone()),
                        Some("user_email") => me.clone(),
                        Some(s) if s.starts_with('<') => strip_angle(s),
                        _ => env.from.clone(),
                    }
                };
                let bytes = crate::response::redirect_message(&body, &me);
                out.push(Outgoing {
                    from,
                    to: address.clone(),
                    message: bytes,
                });
            }
            Action::Reject { reason, .. } => {
                if !env.from.is_empty() {
                    out.push(crate::response::reject_message(
                        reason, &original, &env.from, &env.to, &cfg,
                    ));
                }
            }
            Action::Vacation(v) => {
                if v.send {
                    out.push(crate::response::vacation_message(v));
                }
            }
            Action::Notify(n) => {
                let m = Message::parse(&original);
                out.extend(crate::response::notify_messages(
                    n,
                    &m,
                    &raw_env,
                    &cfg,
                    &mut notified,
                ));
            }
            Action::Discard => {}
        }
    }
    let pipes: Vec<(String, Vec<String>, bool, Vec<u8>)> = rt
        .result
        .pipes
        .iter()
        .map(|p| {
            (
                p.program.clone(),
                p.args.clone(),
                p.try_,
                msg_of(&p.message),
            )
        })
        .collect();
    for (program, args, try_, input) in pipes {
        let req = crate::program::ProgramRequest {
            kind: crate::program::ProgramKind::Pipe,
            name: &program,
            args: &args,
            input: Some(&input),
            envelope: &raw_env,
            settings: &cfg.settings,
        };
        if let Err(e) = rt.host.run_program(&req)
            && !try_
        {
            if e.contains("timed out") {
                errors.push(format!("program '{program}' execution timed out"));
            }
            errors.push(format!(
                "failed to pipe message to program '{program}': {e}"
            ));
            ok = false;
        }
    }
    let Some(st) = ts(rt) else { return false };
    if !ok
        && !outcome
            .actions
            .iter()
            .any(|a| matches!(a, Action::Keep { .. }))
    {
        // A failed store falls back to implicit keep of the unedited message.
        st.mailboxes
            .entry("INBOX".into())
            .or_default()
            .push((original_unedited, stored_flags(&[])));
    }
    st.outbox.extend(out);
    st.errors = errors;
    ok
}

/// Evaluate a testsuite test.
pub(crate) fn exec_test(
    rt: &mut Runtime<'_>,
    frame: &mut Frame<'_>,
    t: &TsTest,
    pos: Pos,
) -> Result<bool, RuntimeError> {
    match t {
        TsTest::ScriptCompile(p) => {
            let p = rt.expand(frame, p);
            Ok(compile_path(rt, &p))
        }
        TsTest::ScriptRun { append } => Ok(run_compiled(rt, *append)),
        TsTest::MultiScript(paths) => {
            let paths = rt.expand_all(frame, paths);
            rt.result = ResultSet::new();
            for p in paths {
                if !compile_path(rt, &p) || !run_compiled(rt, true) {
                    return Ok(false);
                }
            }
            Ok(execute_result(rt))
        }
        TsTest::Error { m, index, keys } => {
            let errors = ts(rt).map(|s| s.errors.clone()).unwrap_or_default();
            list_test(rt, frame, m, *index, keys, errors, pos)
        }
        TsTest::ResultAction { m, index, keys } => {
            // The implicit keep is not part of the listed result.
            let mut names: Vec<String> = rt
                .result
                .actions
                .iter()
                .map(|a| a.name().to_string())
                .collect();
            names.extend(rt.result.pipes.iter().map(|_| "pipe".to_string()));
            list_test(rt, frame, m, *index, keys, names, pos)
        }
        TsTest::ResultExecute => Ok(execute_result(rt)),
        TsTest::Message(sel) => Ok(select_message(rt, frame, sel)),
    }
}

fn list_test(
    rt: &mut Runtime<'_>,
    frame: &mut Frame<'_>,
    m: &Matcher,
    index: Option<u64>,
    keys: &[Value],
    items: Vec<String>,
    pos: Pos,
) -> Result<bool, RuntimeError> {
    if let MatchType::Count(_) = m.match_type {
        return rt.match_strings(frame, m, &items, keys, false, pos);
    }
    let vals = match index {
        Some(i) => usize::try_from(i)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| items.get(i).cloned())
            .into_iter()
            .collect(),
        None => items,
    };
    rt.match_strings(frame, m, &vals, keys, true, pos)
}
