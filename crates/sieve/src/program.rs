//! External programs: Dovecot's vnd.dovecot.pipe, vnd.dovecot.filter and
//! vnd.dovecot.execute extensions (Pigeonhole "extprograms").
//!
//! The interpreter never starts a process: it validates program names and arguments and
//! hands a [`ProgramRequest`] to [`crate::Host::run_program`], which decides where programs
//! live and whether to run them at all. Trusts the host's answer; a failed or refused run is
//! a value (`Err`), turned into a false test, a failed action, or a runtime error.

use std::collections::BTreeMap;

use crate::Envelope;

/// Which extension asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    /// `pipe`: deliver the message to a program (an action).
    Pipe,
    /// `filter`: replace the message with the program's output.
    Filter,
    /// `execute`: run a program, optionally capturing its output.
    Execute,
}

impl ProgramKind {
    /// The setting prefix and extension name part ("pipe", "filter", "execute").
    pub fn name(self) -> &'static str {
        match self {
            ProgramKind::Pipe => "pipe",
            ProgramKind::Filter => "filter",
            ProgramKind::Execute => "execute",
        }
    }
}

/// A request to run a program.
#[derive(Debug, Clone, Copy)]
pub struct ProgramRequest<'a> {
    /// Which extension asks.
    pub kind: ProgramKind,
    /// The program name (validated: no `/`, no control characters).
    pub name: &'a str,
    /// Arguments (validated: no control characters).
    pub args: &'a [String],
    /// Standard input, if any.
    pub input: Option<&'a [u8]>,
    /// The envelope (for SENDER, RECIPIENT, ORIG_RECIPIENT).
    pub envelope: &'a Envelope,
    /// Settings, e.g. `sieve_pipe_bin_dir`, `sieve_pipe_exec_timeout`.
    pub settings: &'a BTreeMap<String, String>,
}

/// A program name: not empty, no path separators, no control characters, bounded.
pub fn valid_program_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.contains('/')
        && name != "."
        && name != ".."
        && !name.chars().any(char::is_control)
}

/// A program argument: no control characters other than tab, bounded.
pub fn valid_program_arg(arg: &str) -> bool {
    arg.len() <= 1024 && !arg.chars().any(|c| c.is_control() && c != '\t')
}

/// Convert line ends of program input per `sieve_execute_input_eol` ("crlf" or "lf").
pub fn convert_eol(input: &[u8], eol: &str) -> Vec<u8> {
    let lf: Vec<u8> = {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while let Some(&c) = input.get(i) {
            if c == b'\r' && input.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            out.push(c);
            i += 1;
        }
        out
    };
    if eol.trim().eq_ignore_ascii_case("lf") {
        lf
    } else {
        crate::message::to_crlf(&lf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_eol() {
        for (n, ok) in [
            ("cat", true),
            ("../x", false),
            ("a/b", false),
            ("", false),
            ("x\ny", false),
        ] {
            assert_eq!(valid_program_name(n), ok, "{n}");
        }
        assert_eq!(convert_eol(b"a\nb\r\n", "crlf"), b"a\r\nb\r\n");
        assert_eq!(convert_eol(b"a\r\nb\n", "lf"), b"a\nb\n");
    }
}
