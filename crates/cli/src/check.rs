//! `cursus sieve check`: compile Sieve scripts and print their errors as
//! `FILE:LINE:COLUMN: error: text`, the form editors jump to.
//!
//! Trusts nothing in the scripts (the compiler bounds size, nesting and error count). An
//! unreadable file is reported like a script with an error; the caller turns "any failed"
//! into exit status 1.

use std::fmt::Write as _;
use std::path::Path;

use cursus_sieve::{CompileError, Config};

/// One compile diagnostic as `FILE:LINE:COLUMN: SEVERITY: text` (`FILE: SEVERITY: text`
/// when the compiler has no position for it).
pub fn diagnostic(file: &str, severity: &str, e: &CompileError) -> String {
    if e.pos.line == 0 {
        format!("{file}: {severity}: {}", e.message)
    } else {
        format!(
            "{file}:{}:{}: {severity}: {}",
            e.pos.line, e.pos.col, e.message
        )
    }
}

/// The result of checking one script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// What to print, one line each.
    pub lines: Vec<String>,
    /// Whether the script compiled.
    pub ok: bool,
}

/// Checks the script `source`, named `file` in the messages.
pub fn check_source(file: &str, source: &[u8], config: &Config) -> CheckReport {
    match cursus_sieve::compile(source, config) {
        Ok(script) => {
            let mut lines: Vec<String> = script
                .warnings
                .iter()
                .map(|w| diagnostic(file, "warning", w))
                .collect();
            lines.push(format!("{file}: ok"));
            CheckReport { lines, ok: true }
        }
        Err(errors) => {
            // In script order: a parse error found late must not hide an earlier mistake.
            let mut errors = errors.0;
            errors.sort_by_key(|e| (e.pos.line, e.pos.col));
            CheckReport {
                lines: errors
                    .iter()
                    .map(|e| diagnostic(file, "error", e))
                    .collect(),
                ok: false,
            }
        }
    }
}

/// Checks the script at `path`.
pub fn check_file(path: &Path, config: &Config) -> CheckReport {
    let file = path.display().to_string();
    match std::fs::read(path) {
        Ok(source) => check_source(&file, &source, config),
        Err(e) => CheckReport {
            lines: vec![format!("{file}: error: cannot read: {e}")],
            ok: false,
        },
    }
}

/// Checks every file; returns the text to print and whether all compiled.
pub fn check_files(paths: &[impl AsRef<Path>], config: &Config) -> (String, bool) {
    let mut out = String::new();
    let mut all_ok = true;
    for path in paths {
        let report = check_file(path.as_ref(), config);
        all_ok &= report.ok;
        for line in report.lines {
            let _ = writeln!(out, "{line}");
        }
    }
    (out, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_script_is_ok() {
        let r = check_source(
            "good.sieve",
            b"require \"fileinto\";\nfileinto \"Junk\";\n",
            &Config::default(),
        );
        assert!(r.ok);
        assert_eq!(r.lines, vec!["good.sieve: ok".to_string()]);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let r = check_source("bad.sieve", b"keep;\nfileinto \"x\";\n", &Config::default());
        assert!(!r.ok);
        assert!(!r.lines.is_empty());
        for line in &r.lines {
            assert!(line.starts_with("bad.sieve:2:"), "{line}");
            assert!(line.contains(": error: "), "{line}");
        }
    }
}
