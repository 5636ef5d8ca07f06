//! Errors and diagnostics: compile errors with `line:column`, runtime errors with context.
//!
//! Trusts its callers to give positions from the lexer. Never fails: this module only
//! holds and formats values. A compile collects every error it can (see [`Diagnostics`]);
//! a runtime error aborts evaluation and the caller falls back to implicit keep.

use std::fmt;

use crate::lexer::Pos;

/// One compile error (or warning) at a position in a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Where in the script.
    pub pos: Pos,
    /// What was wrong and what was expected.
    pub message: String,
}

impl CompileError {
    /// An error at `pos`.
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        CompileError {
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

impl std::error::Error for CompileError {}

/// The errors and warnings of one compile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// Errors, in the order found.
    pub errors: Vec<CompileError>,
    /// Warnings, in the order found.
    pub warnings: Vec<CompileError>,
}

impl Diagnostics {
    /// Record an error.
    pub fn push(&mut self, e: CompileError) {
        // Bounded: a hostile script cannot make us hold millions of errors.
        if self.errors.len() < 1000 {
            self.errors.push(e);
        }
    }

    /// Record an error at `pos`.
    pub fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.push(CompileError::new(pos, msg));
    }

    /// Record a warning at `pos`.
    pub fn warn(&mut self, pos: Pos, msg: impl Into<String>) {
        if self.warnings.len() < 1000 {
            self.warnings.push(CompileError::new(pos, msg));
        }
    }
}

/// A failed compile: every error found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileErrors(pub Vec<CompileError>);

impl fmt::Display for CompileErrors {
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

impl std::error::Error for CompileErrors {}

/// A runtime error: evaluation stopped; the caller should apply implicit keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeError {
    /// Where in the script the failing command is (0:0 when unknown).
    pub pos: Pos,
    /// What went wrong.
    pub message: String,
}

impl RuntimeError {
    /// An error at `pos`.
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        RuntimeError {
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

impl std::error::Error for RuntimeError {}
