//! A user's ~/.forward as text: targets separated by commas or line ends, parsed into the
//! same typed [`Target`] values as the right-hand side of an alias, by the same parser
//! ([`crate::aliases`]). There is no `name:` part and no continuation: every line stands
//! alone, and a quote cannot run past its line.
//!
//! Syntax: `joe@example.org`, `\joe` (keep a copy in joe's own mailbox, no further
//! forwarding), `/home/joe/archive` or `~/archive`, `"|/usr/bin/procmail -f-"`,
//! `:include:/path`; lines whose first non-whitespace character is `#` are comments.
//!
//! Pure: takes text, returns values. Trusts nothing about the text: it is written by a user
//! and read on behalf of the mail system. Fails with a [`ForwardError`] naming the 1-based
//! line of the first problem.
//!
//! Attacks stopped: a huge .forward (one endless line, or thousands of targets) making the
//! reader allocate without bound and the MTA fan one message out to thousands of
//! deliveries: lines longer than [`MAX_LINE`] bytes and more than [`MAX_ENTRIES`] targets
//! are errors, checked before the line is split. Control characters (log and header
//! forgery) and ambiguous unquoted values are refused as in aliases.

use crate::prelude::*;

use core::fmt;

use crate::aliases::{Logical, TargetError, is_blank_or_comment, lines, parse_targets};

pub use crate::aliases::Target;

/// The most targets one .forward may list.
pub const MAX_ENTRIES: usize = 1000;
/// The longest line in bytes, line end excluded.
pub const MAX_LINE: usize = 4096;

/// One target and the line it was written on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based.
    pub line: usize,
    pub target: Target,
}

/// Why a .forward could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// The line is `length` bytes, more than [`MAX_LINE`].
    LineTooLong {
        line: usize,
        length: usize,
    },
    /// This line holds target number [`MAX_ENTRIES`] + 1.
    TooManyEntries {
        line: usize,
    },
    Target {
        line: usize,
        error: TargetError,
    },
}

impl ForwardError {
    pub fn line(&self) -> usize {
        match self {
            ForwardError::LineTooLong { line, .. }
            | ForwardError::TooManyEntries { line }
            | ForwardError::Target { line, .. } => *line,
        }
    }
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardError::LineTooLong { line, length } => {
                write!(f, "line {line}: {length} bytes long (at most {MAX_LINE})")
            }
            ForwardError::TooManyEntries { line } => {
                write!(f, "line {line}: more than {MAX_ENTRIES} targets")
            }
            ForwardError::Target { line, error } => write!(f, "line {line}: {error}"),
        }
    }
}

impl core::error::Error for ForwardError {}

/// Parses a .forward file; returns its targets in order with their lines.
pub fn parse(text: &str) -> Result<Vec<Entry>, ForwardError> {
    let mut entries = Vec::new();
    for (number, line) in lines(text) {
        if line.len() > MAX_LINE {
            return Err(ForwardError::LineTooLong {
                line: number,
                length: line.len(),
            });
        }
        if is_blank_or_comment(line) {
            continue;
        }
        let logical = Logical::new(number, line);
        let targets = parse_targets(&logical, 0)
            .map_err(|(line, error)| ForwardError::Target { line, error })?;
        if entries.len() + targets.len() > MAX_ENTRIES {
            return Err(ForwardError::TooManyEntries { line: number });
        }
        entries.extend(
            targets
                .into_iter()
                .map(|(line, target)| Entry { line, target }),
        );
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_typed_targets() {
        use Target::*;
        let rows: Vec<(&str, Vec<(usize, Target)>)> = vec![
            ("", vec![]),
            ("# vacation off\n\n", vec![]),
            (
                "\\joe, joe@elsewhere.example\n",
                vec![
                    (1, Local("joe".into())),
                    (1, Address("joe@elsewhere.example".into())),
                ],
            ),
            (
                "\"|/usr/bin/procmail -f-\"\n  # indented comment\n~/archive\n/var/mail/joe\n",
                vec![
                    (1, Command("/usr/bin/procmail -f-".into())),
                    (3, File("~/archive".into())),
                    (4, File("/var/mail/joe".into())),
                ],
            ),
            (
                ":include:/home/joe/list\r\nann\r\n",
                vec![
                    (1, Include("/home/joe/list".into())),
                    (2, Address("ann".into())),
                ],
            ),
            (
                "a, b,\nc",
                vec![
                    (1, Address("a".into())),
                    (1, Address("b".into())),
                    (2, Address("c".into())),
                ],
            ),
        ];
        for (text, want) in rows {
            let got: Vec<(usize, Target)> = parse(text)
                .unwrap_or_else(|e| panic!("{text:?}: {e}"))
                .into_iter()
                .map(|e| (e.line, e.target))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let long = format!("joe\n{}\n", "a".repeat(MAX_LINE + 1));
        let many = "x,".repeat(MAX_ENTRIES) + "\ny\n";
        let exactly = "x\n".repeat(MAX_ENTRIES);
        assert_eq!(parse(&exactly).map(|e| e.len()), Ok(MAX_ENTRIES));
        let rows: Vec<(&str, ForwardError)> = vec![
            (
                &long,
                ForwardError::LineTooLong {
                    line: 2,
                    length: MAX_LINE + 1,
                },
            ),
            (&many, ForwardError::TooManyEntries { line: 2 }),
            (
                "joe\n\"|/bin/x\n",
                ForwardError::Target {
                    line: 2,
                    error: TargetError::UnterminatedQuote,
                },
            ),
            (
                "joe\n\"|/bin/x\ny\"\n",
                ForwardError::Target {
                    line: 2,
                    error: TargetError::UnterminatedQuote,
                },
            ),
            (
                "a\nb\n|\n",
                ForwardError::Target {
                    line: 3,
                    error: TargetError::EmptyCommand,
                },
            ),
            (
                "joe bob\n",
                ForwardError::Target {
                    line: 1,
                    error: TargetError::UnquotedSpace("joe bob".into()),
                },
            ),
        ];
        for (text, want) in rows {
            assert_eq!(parse(text), Err(want.clone()), "{want}");
        }
    }
}
