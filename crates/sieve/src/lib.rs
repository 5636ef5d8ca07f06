//! cursus-sieve: a clean-room Sieve (RFC 5228 and extensions) compiler and interpreter.
//!
//! Pure: no I/O. Everything that touches the world goes through the [`Host`] trait;
//! the message and envelope are inputs and the result is a list of [`Action`]s. Trusts
//! nothing it is given: scripts and messages may be hostile. It never panics on input;
//! recursion, loops and memory are bounded by the [`Config`] limits; failures are values
//! ([`CompileErrors`], [`RuntimeError`]) and a runtime error means "apply implicit keep".
//!
//! ```
//! let script = cursus_sieve::compile(b"require \"fileinto\"; fileinto \"Junk\";", &Default::default()).unwrap();
//! let env = cursus_sieve::Envelope { from: "a@example.org".into(), to: "b@example.net".into(), ..Default::default() };
//! let out = cursus_sieve::evaluate(&script, &Default::default(), &mut cursus_sieve::NullHost, &env, b"Subject: x\r\n\r\nhi\r\n").unwrap();
//! assert_eq!(out.actions.len(), 1);
//! ```

#![forbid(unsafe_code)]

pub mod actions;
pub mod address;
pub mod charset;
pub mod comparator;
pub mod compile;
pub mod date;
pub mod error;
mod eval;
pub mod host;
pub mod lexer;
pub mod matching;
pub mod message;
pub mod parser;
pub mod program;
pub mod response;
pub mod script;
pub mod testsuite;
pub mod validate;

use std::collections::BTreeMap;

pub use actions::{Action, Notify, Outcome, PipeAction, Vacation};
pub use date::DateTime;
pub use error::{CompileError, CompileErrors, Diagnostics, RuntimeError};
pub use host::{Host, NullHost, ScriptLocation};
pub use program::{ProgramKind, ProgramRequest};
pub use script::Script;

/// Limits and settings for compiling and evaluating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest script source accepted, in bytes.
    pub max_script_size: usize,
    /// Deepest block/test nesting.
    pub max_nesting: usize,
    /// Most actions in one result.
    pub max_actions: usize,
    /// Most redirects in one result.
    pub max_redirects: usize,
    /// Most notifications in one result.
    pub max_notifications: usize,
    /// Deepest include nesting.
    pub max_include_depth: usize,
    /// Most include commands executed in one evaluation.
    pub max_includes: usize,
    /// Most commands and tests evaluated (CPU bound).
    pub max_steps: u64,
    /// Most variables per script scope.
    pub max_variables: usize,
    /// Longest variable value in bytes (longer values are truncated).
    pub max_variable_size: usize,
    /// Number of match variables (${0}..).
    pub max_match_values: usize,
    /// Largest header added by addheader, in bytes.
    pub max_header_size: usize,
    /// Accept `vnd.dovecot.testsuite` (conformance harness only).
    pub testsuite: bool,
    /// Accept vnd.dovecot.pipe/filter/execute (programs run through [`Host::run_program`]).
    pub extprograms: bool,
    /// Accept any header name in the address test (Pigeonhole refuses non-address ones).
    pub lenient_address_headers: bool,
    /// Capabilities switched off.
    pub disabled_extensions: Vec<String>,
    /// Subaddress separator (RFC 5233), default "+".
    pub subaddress_separator: String,
    /// The user's own address (vacation :from default, redirect envelope).
    pub user_email: Option<String>,
    /// Further settings in Pigeonhole's naming (`sieve_spamtest_status_header`, ...).
    pub settings: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_script_size: 1 << 20,
            max_nesting: 32,
            max_actions: 32,
            max_redirects: 4,
            max_notifications: 12,
            max_include_depth: 10,
            max_includes: 255,
            max_steps: 1_000_000,
            max_variables: 255,
            max_variable_size: 4096,
            max_match_values: 32,
            max_header_size: 2048,
            testsuite: false,
            extprograms: false,
            lenient_address_headers: false,
            disabled_extensions: Vec::new(),
            subaddress_separator: "+".into(),
            user_email: None,
            settings: BTreeMap::new(),
        }
    }
}

/// The SMTP envelope of the message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// MAIL FROM (empty for the null sender).
    pub from: String,
    /// RCPT TO of this delivery.
    pub to: String,
    /// The original recipient (ORCPT), if known.
    pub orig_to: Option<String>,
    /// The authenticated submitter, if any.
    pub auth: Option<String>,
}

/// Compile a script.
pub fn compile(source: &[u8], config: &Config) -> Result<Script, CompileErrors> {
    compile::compile(source, config)
}

/// Evaluate a compiled script against a message. On a runtime error the caller must
/// apply implicit keep (and report the error).
pub fn evaluate(
    script: &Script,
    config: &Config,
    host: &mut dyn Host,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Outcome, RuntimeError> {
    evaluate_tracking(script, config, host, envelope, message).result
}

/// What [`evaluate_tracking`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The outcome, as [`evaluate`] returns it.
    pub result: Result<Outcome, RuntimeError>,
    /// Whether evaluation read or changed the message in any way (a header, address,
    /// exists, size, body or date test, MIME loops, a duplicate test on a header, the
    /// defaults of vacation or notify, editheader, a filter program) before it ended. When
    /// false, the result depends only on the envelope and the host's answers, so a caller
    /// that evaluated before the message arrived (an MTA at RCPT time, with an empty
    /// message) can trust it.
    pub message_accessed: bool,
}

/// [`evaluate`], also reporting whether the evaluation used the message.
pub fn evaluate_tracking(
    script: &Script,
    config: &Config,
    host: &mut dyn Host,
    envelope: &Envelope,
    message: &[u8],
) -> Evaluation {
    let (result, message_accessed) = eval::run(script, config, host, envelope, message);
    Evaluation {
        result,
        message_accessed,
    }
}

/// Fuzzing entry: the first line of `bytes` (up to a NUL) is the script, the rest the
/// message. Compiles and evaluates under tight limits; must never panic or hang.
pub fn parse_and_run_for_fuzz(bytes: &[u8]) {
    let (script, message) = match bytes.iter().position(|&b| b == 0) {
        Some(i) => (
            bytes.get(..i).unwrap_or_default(),
            bytes.get(i + 1..).unwrap_or_default(),
        ),
        None => (bytes, &b"From: a@b.c\r\nSubject: x\r\n\r\nbody\r\n"[..]),
    };
    let config = Config {
        max_steps: 10_000,
        ..Config::default()
    };
    if let Ok(s) = compile(script, &config) {
        let env = Envelope {
            from: "a@b.c".into(),
            to: "d@e.f".into(),
            ..Envelope::default()
        };
        let _ = evaluate(&s, &config, &mut NullHost, &env, message);
        let _ = Script::from_bytes(&s.to_bytes(), &config);
    }
}
