//! The compiled form of a script: a typed tree of commands and tests with every argument
//! checked, strings pre-split into literal and variable pieces.
//!
//! Trusts the compiler to have validated it. The cacheable byte form (see
//! [`Script::to_bytes`]) holds the source and the settings it was compiled with; loading
//! re-validates, so a stale or tampered cache can never produce an unchecked tree.

use std::collections::BTreeSet;

use crate::lexer::Pos;
use crate::matching::Matcher;

/// One piece of a string argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Lit(String),
    /// A variable reference `${name}` (lower-cased; may be namespaced `a.b`).
    Var(String),
    /// A match variable `${N}`.
    Match(usize),
}

/// A string argument: literal text with variable references.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Value {
    /// The pieces in order.
    pub pieces: Vec<Piece>,
}

impl Value {
    /// A constant value.
    pub fn lit(s: impl Into<String>) -> Value {
        Value {
            pieces: vec![Piece::Lit(s.into())],
        }
    }

    /// The text if the value contains no variable references.
    pub fn constant(&self) -> Option<String> {
        let mut s = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => s.push_str(l),
                _ => return None,
            }
        }
        Some(s)
    }
}

/// Which part of an address a test compares (RFC 5228 §2.7.4, RFC 5233).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressPart {
    /// `:all`
    #[default]
    All,
    /// `:localpart`
    LocalPart,
    /// `:domain`
    Domain,
    /// `:user`
    User,
    /// `:detail`
    Detail,
}

/// `:index N [:last]` (RFC 5260 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOpt {
    /// 1-based field index.
    pub index: u64,
    /// Count from the last field.
    pub last: bool,
}

/// The content-header options of the mime extension (RFC 5703 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MimeOption {
    /// `:type`
    Type,
    /// `:subtype`
    Subtype,
    /// `:contenttype`
    ContentType,
    /// `:param [names]`
    Param(Vec<Value>),
}

/// `:mime`, `:anychild` and the option.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MimeOpts {
    /// `:mime` given.
    pub mime: bool,
    /// `:anychild` given.
    pub anychild: bool,
    /// The option, if any.
    pub option: Option<MimeOption>,
}

/// The body transform (RFC 5173 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyTransform {
    /// `:raw`
    Raw,
    /// `:content [types]`
    Content(Vec<Value>),
    /// `:text` (the default)
    Text,
}

/// Zone selection of date tests (RFC 5260 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zone {
    /// The local zone from the host.
    Local,
    /// `:zone "+hhmm"`
    Fixed(Value),
    /// `:originalzone`
    Original,
}

/// A string modifier of `set` (RFC 5229 §4.1, RFC 5435 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    /// `:lower`
    Lower,
    /// `:upper`
    Upper,
    /// `:lowerfirst`
    LowerFirst,
    /// `:upperfirst`
    UpperFirst,
    /// `:quotewildcard`
    QuoteWildcard,
    /// `:quoteregex`
    QuoteRegex,
    /// `:encodeurl`
    EncodeUrl,
    /// `:length`
    Length,
}

impl Modifier {
    /// Precedence: higher is applied first.
    pub fn precedence(self) -> u8 {
        match self {
            Modifier::Lower | Modifier::Upper => 40,
            Modifier::LowerFirst | Modifier::UpperFirst => 30,
            Modifier::QuoteWildcard | Modifier::QuoteRegex | Modifier::EncodeUrl => 20,
            Modifier::Length => 10,
        }
    }
}

/// imap4flags operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    /// `setflag`
    Set,
    /// `addflag`
    Add,
    /// `removeflag`
    Remove,
}

/// The vacation command's arguments (RFC 5230, RFC 6131).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VacationCmd {
    /// `:days` or `:seconds`, in seconds.
    pub period: Option<u64>,
    /// `:subject`
    pub subject: Option<Value>,
    /// `:from`
    pub from: Option<Value>,
    /// `:addresses`
    pub addresses: Vec<Value>,
    /// `:mime`
    pub mime: bool,
    /// `:handle`
    pub handle: Option<Value>,
    /// The reason.
    pub reason: Value,
}

/// The notify command's arguments (RFC 5435).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyCmd {
    /// `:from`
    pub from: Option<Value>,
    /// `:importance`
    pub importance: Option<Value>,
    /// `:options`
    pub options: Vec<Value>,
    /// `:message`
    pub message: Option<Value>,
    /// The method URI.
    pub method: Value,
}

/// A `filter` or `execute` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramCall {
    /// Which extension.
    pub kind: crate::program::ProgramKind,
    /// Program name.
    pub program: Value,
    /// Arguments.
    pub args: Vec<Value>,
    /// execute `:input`.
    pub input: Option<Value>,
    /// execute `:pipe`: the message is the input.
    pub pipe: bool,
    /// execute `:output`: the variable receiving standard output.
    pub output: Option<String>,
}

/// The duplicate test's arguments (RFC 7352).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateTest {
    /// `:handle`
    pub handle: Option<Value>,
    /// `:header`
    pub header: Option<Value>,
    /// `:uniqueid`
    pub uniqueid: Option<Value>,
    /// `:seconds`
    pub seconds: Option<u64>,
    /// `:last`
    pub last: bool,
}

/// A test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `true`
    True,
    /// `false`
    False,
    /// `not`
    Not(Box<Test>),
    /// `allof`
    AllOf(Vec<Test>),
    /// `anyof`
    AnyOf(Vec<Test>),
    /// `address`
    Address {
        /// Comparator and match type.
        m: Matcher,
        /// Address part.
        part: AddressPart,
        /// Header names.
        headers: Vec<Value>,
        /// Keys.
        keys: Vec<Value>,
        /// mime options.
        mime: MimeOpts,
        /// `:index`
        index: Option<IndexOpt>,
    },
    /// `envelope`
    Envelope {
        /// Comparator and match type.
        m: Matcher,
        /// Address part.
        part: AddressPart,
        /// Envelope parts.
        fields: Vec<Value>,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `header`
    Header {
        /// Comparator and match type.
        m: Matcher,
        /// Header names.
        headers: Vec<Value>,
        /// Keys.
        keys: Vec<Value>,
        /// mime options.
        mime: MimeOpts,
        /// `:index`
        index: Option<IndexOpt>,
    },
    /// `exists`
    Exists {
        /// Header names.
        headers: Vec<Value>,
        /// mime options.
        mime: MimeOpts,
    },
    /// `size`
    Size {
        /// `:over` (else `:under`).
        over: bool,
        /// The limit.
        limit: u64,
    },
    /// `body`
    Body {
        /// Comparator and match type.
        m: Matcher,
        /// Transform.
        transform: BodyTransform,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `date`
    Date {
        /// Comparator and match type.
        m: Matcher,
        /// Zone.
        zone: Zone,
        /// Header name.
        header: Value,
        /// Date part.
        part: Value,
        /// Keys.
        keys: Vec<Value>,
        /// `:index`
        index: Option<IndexOpt>,
    },
    /// `currentdate`
    CurrentDate {
        /// Comparator and match type.
        m: Matcher,
        /// Zone (never Original).
        zone: Zone,
        /// Date part.
        part: Value,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `string`
    String {
        /// Comparator and match type.
        m: Matcher,
        /// Sources.
        sources: Vec<Value>,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `hasflag`
    HasFlag {
        /// Comparator and match type.
        m: Matcher,
        /// Variables (empty: the internal flags).
        vars: Vec<Value>,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `mailboxexists`
    MailboxExists(Vec<Value>),
    /// `specialuse_exists`
    SpecialUseExists {
        /// The mailbox, if given.
        mailbox: Option<Value>,
        /// Special-use flags.
        uses: Vec<Value>,
    },
    /// `environment`
    Environment {
        /// Comparator and match type.
        m: Matcher,
        /// Item name.
        name: Value,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `ihave`, decided at compile time.
    Ihave(bool),
    /// `duplicate`
    Duplicate(Box<DuplicateTest>),
    /// `spamtest`
    SpamTest {
        /// Comparator and match type.
        m: Matcher,
        /// `:percent`
        percent: bool,
        /// Key.
        key: Value,
    },
    /// `virustest`
    VirusTest {
        /// Comparator and match type.
        m: Matcher,
        /// Key.
        key: Value,
    },
    /// `valid_notify_method`
    ValidNotifyMethod(Vec<Value>),
    /// `notify_method_capability`
    NotifyMethodCapability {
        /// Comparator and match type.
        m: Matcher,
        /// Method URI.
        uri: Value,
        /// Capability name.
        capability: Value,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `metadata` / `servermetadata` (RFC 5490 §3.3, §4.2): mailbox `None` for server.
    Metadata {
        /// Comparator and match type.
        m: Matcher,
        /// Mailbox (mboxmetadata) or `None` (servermetadata).
        mailbox: Option<Value>,
        /// Annotation name.
        name: Value,
        /// Keys.
        keys: Vec<Value>,
    },
    /// `metadataexists` / `servermetadataexists`.
    MetadataExists {
        /// Mailbox or `None` for server annotations.
        mailbox: Option<Value>,
        /// Annotation names.
        names: Vec<Value>,
    },
    /// `filter` or `execute` used as a test.
    Program(ProgramCall),
    /// A testsuite test (vnd.dovecot.testsuite).
    Testsuite(crate::testsuite::TsTest),
}

/// A command with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Where the command starts.
    pub pos: Pos,
    /// What it does.
    pub kind: Command,
}

/// A command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `if`/`elsif`/`else` chain.
    If {
        /// Conditions and their blocks.
        branches: Vec<(Test, Vec<Cmd>)>,
        /// The `else` block.
        otherwise: Option<Vec<Cmd>>,
    },
    /// `stop`
    Stop,
    /// `keep`
    Keep {
        /// `:flags`
        flags: Option<Vec<Value>>,
    },
    /// `discard`
    Discard,
    /// `fileinto`
    FileInto {
        /// Mailbox name.
        mailbox: Value,
        /// `:copy`
        copy: bool,
        /// `:create`
        create: bool,
        /// `:flags`
        flags: Option<Vec<Value>>,
        /// `:specialuse`
        special_use: Option<Value>,
    },
    /// `redirect`
    Redirect {
        /// Address.
        address: Value,
        /// `:copy`
        copy: bool,
    },
    /// `reject` / `ereject`
    Reject {
        /// Reason.
        reason: Value,
        /// ereject.
        extended: bool,
    },
    /// `set`
    Set {
        /// Variable name (lower-cased).
        name: String,
        /// Value.
        value: Value,
        /// Modifiers sorted by precedence.
        modifiers: Vec<Modifier>,
    },
    /// `vacation`
    Vacation(Box<VacationCmd>),
    /// `setflag`/`addflag`/`removeflag`
    Flags {
        /// Operation.
        op: FlagOp,
        /// Variable name, if given.
        var: Option<String>,
        /// Flags.
        flags: Vec<Value>,
    },
    /// `include`
    Include {
        /// `:global`
        global: bool,
        /// `:once`
        once: bool,
        /// `:optional`
        optional: bool,
        /// Script name.
        name: String,
    },
    /// `return`
    Return,
    /// `global`
    Global(Vec<String>),
    /// `addheader`
    AddHeader {
        /// `:last`
        last: bool,
        /// Field name.
        name: Value,
        /// Field value.
        value: Value,
    },
    /// `deleteheader`
    DeleteHeader {
        /// `:index`
        index: Option<IndexOpt>,
        /// Comparator and match type.
        m: Matcher,
        /// Field name.
        name: Value,
        /// Value patterns (empty: all).
        patterns: Vec<Value>,
    },
    /// `notify`
    Notify(Box<NotifyCmd>),
    /// `foreverypart`
    ForEveryPart {
        /// `:name`
        name: Option<String>,
        /// The block.
        body: Vec<Cmd>,
    },
    /// `break`
    Break {
        /// `:name`
        name: Option<String>,
    },
    /// `extracttext`
    ExtractText {
        /// `:first`
        first: Option<u64>,
        /// Modifiers.
        modifiers: Vec<Modifier>,
        /// Variable name.
        name: String,
    },
    /// `error` (RFC 5463 §5): fail the script with a message.
    Error(Value),
    /// `pipe` (vnd.dovecot.pipe): an action.
    Pipe {
        /// Program name.
        program: Value,
        /// Arguments.
        args: Vec<Value>,
        /// `:copy`
        copy: bool,
        /// `:try`: failure is not an error.
        try_: bool,
    },
    /// `filter` or `execute` used as a command.
    Program(ProgramCall),
    /// `debug_log` (vnd.dovecot.debug)
    DebugLog(Value),
    /// A testsuite command (vnd.dovecot.testsuite).
    Testsuite(crate::testsuite::TsCommand),
    /// A block that failed `ihave` and must error if reached.
    Unsupported(String),
}

/// A compiled script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The top-level commands.
    pub(crate) body: Vec<Cmd>,
    /// Extensions required (lower-cased capability names).
    pub(crate) extensions: BTreeSet<String>,
    /// The source, kept for the byte form.
    pub(crate) source: Vec<u8>,
    /// Warnings from the compile.
    pub warnings: Vec<crate::error::CompileError>,
}

const MAGIC: &[u8; 8] = b"CSIEVE01";

impl Script {
    /// Whether the script required `capability`.
    pub fn requires(&self, capability: &str) -> bool {
        self.extensions.contains(capability)
    }

    /// The capabilities the script required.
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        self.extensions.iter().map(String::as_str)
    }

    /// The cacheable byte form: a magic tag, then the source. [`Script::from_bytes`]
    /// re-validates it, so a cached file can never bypass the checks.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.source.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.source);
        out
    }

    /// Load the byte form written by [`Script::to_bytes`], compiling it again.
    pub fn from_bytes(
        bytes: &[u8],
        config: &crate::Config,
    ) -> Result<Script, crate::error::CompileErrors> {
        let bad = || {
            crate::error::CompileErrors(vec![crate::error::CompileError::new(
                Pos::default(),
                "not a compiled cursus-sieve script",
            )])
        };
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(bad)?;
        let len_bytes: [u8; 8] = rest
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| bad())?;
        let src = rest.get(8..).ok_or_else(bad)?;
        if src.len() != len {
            return Err(bad());
        }
        crate::compile::compile(src, config)
    }
}
