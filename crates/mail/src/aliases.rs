//! The aliases(5) table as text: `name: value, value, ...` entries parsed into [`Alias`]
//! values whose targets are typed ([`Target`]), never strings that happen to start with `|`
//! or `/`. The same target parser reads a user's .forward ([`crate::forward`]).
//!
//! Syntax, as the Postfix and sendmail aliases(5) pages describe it:
//! - an entry is `name: value1, value2, ...`; a line that starts with whitespace continues
//!   the entry above it;
//! - empty lines, whitespace-only lines and lines whose first non-whitespace character is
//!   `#` are ignored (also between continuation lines); `#` elsewhere is ordinary text;
//! - a name or value with special characters (whitespace, `#`, `:`, `@`, `,`) is written in
//!   double quotes; inside quotes `\"` and `\\` stand for `"` and `\`;
//! - a value is `|command`, `/file` (a trailing `/` means a maildir to Postfix),
//!   `:include:/file`, `\user` (deliver to that user, no further aliasing) or an address.
//!   A value without `@` that contains `/` is a file too (`Mail/inbox`), so a relative path
//!   is caught as a bad file by whoever delivers, rather than mailed as an address; `~/x`
//!   is a file in the reader's home.
//! - names are folded to lowercase, as the MTA compares them (Postfix: "The name is folded
//!   to lowercase, in order to make database lookups case insensitive"); values keep their
//!   case.
//!
//! Pure: takes text, returns values. Trusts nothing about the text. Fails with
//! [`AliasError`]s carrying the 1-based line of each problem (every problem in the file,
//! not only the first); a duplicate name names both lines. Sendmail's backslash-newline
//! continuation is not supported (a trailing `\` is text).
//!
//! Attacks stopped: a control character in a value (a CR, LF or escape sequence forging log
//! lines or header fields downstream; refused with its line); a value such as `joe bob`
//! read two ways by two parsers (unquoted whitespace outside a command is refused, not
//! guessed at); a second definition of an alias silently overriding the first one an
//! administrator reviewed (duplicates are errors).

use crate::prelude::*;

use core::fmt;

/// Where mail for an alias or .forward entry goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// An address to route again (`joe`, `joe@example.org`).
    Address(String),
    /// `\user`: deliver to this local user without further aliasing or .forward.
    Local(String),
    /// `/path` (or `~/path`, or a relative path that the deliverer will refuse): append to
    /// this file; a trailing `/` asks for a maildir.
    File(String),
    /// `|command`: the command text after the `|`, leading whitespace removed.
    Command(String),
    /// `:include:/path`: more targets are listed in this file.
    Include(String),
}

/// One entry of the aliases table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The name, folded to lowercase.
    pub name: String,
    /// The 1-based line where the entry starts.
    pub line: usize,
    pub targets: Vec<Target>,
}

/// What is wrong with one value list (shared with .forward).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    UnterminatedQuote,
    /// Text right after a closing quote, before the next comma (`"a"b`).
    TextAfterQuote,
    /// Whitespace inside an unquoted value that is not a command (`joe bob`).
    UnquotedSpace(String),
    ControlCharacter,
    EmptyCommand,
    EmptyInclude,
    EmptyLocal,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::UnterminatedQuote => write!(f, "a quoted value has no closing `\"`"),
            TargetError::TextAfterQuote => {
                write!(f, "text follows a closing `\"`; separate values with `,`")
            }
            TargetError::UnquotedSpace(v) => write!(
                f,
                "{v:?} contains whitespace: separate values with `,` or quote the value"
            ),
            TargetError::ControlCharacter => write!(f, "a value contains a control character"),
            TargetError::EmptyCommand => write!(f, "`|` names no command"),
            TargetError::EmptyInclude => write!(f, "`:include:` names no file"),
            TargetError::EmptyLocal => write!(f, "`\\` names no user"),
        }
    }
}

/// One problem in an aliases file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasError {
    /// A logical line with no `:` after the name.
    MissingColon { line: usize },
    /// `: value` or `"": value`.
    EmptyName { line: usize },
    /// `name:` with nothing after the colon: mail to it would vanish.
    NoTargets { line: usize, name: String },
    /// A line starting with whitespace before any entry.
    ContinuationFirst { line: usize },
    /// The name was already defined at `first`.
    Duplicate {
        name: String,
        first: usize,
        second: usize,
    },
    /// A value list problem on this line.
    Target { line: usize, error: TargetError },
}

impl AliasError {
    /// The line of the problem (the second definition for a duplicate).
    pub fn line(&self) -> usize {
        match self {
            AliasError::MissingColon { line }
            | AliasError::EmptyName { line }
            | AliasError::NoTargets { line, .. }
            | AliasError::ContinuationFirst { line }
            | AliasError::Target { line, .. } => *line,
            AliasError::Duplicate { second, .. } => *second,
        }
    }
}

impl fmt::Display for AliasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliasError::MissingColon { line } => {
                write!(f, "line {line}: no `:` after the alias name")
            }
            AliasError::EmptyName { line } => write!(f, "line {line}: the alias name is empty"),
            AliasError::NoTargets { line, name } => write!(
                f,
                "line {line}: `{name}` has no value, so mail to it would vanish: name a user, \
                 a file, a command or /dev/null"
            ),
            AliasError::ContinuationFirst { line } => write!(
                f,
                "line {line}: starts with whitespace (a continuation) but no entry precedes it"
            ),
            AliasError::Duplicate {
                name,
                first,
                second,
            } => write!(
                f,
                "line {second}: alias {name:?} is already defined at line {first}"
            ),
            AliasError::Target { line, error } => write!(f, "line {line}: {error}"),
        }
    }
}

impl core::error::Error for AliasError {}

/// A logical line: physical lines joined with `\n`, and the byte offset where each starts.
pub(crate) struct Logical {
    pub(crate) text: String,
    starts: Vec<(usize, usize)>,
}

impl Logical {
    pub(crate) fn new(line: usize, text: &str) -> Self {
        Logical {
            text: text.to_string(),
            starts: vec![(0, line)],
        }
    }

    fn push(&mut self, line: usize, text: &str) {
        self.text.push('\n');
        self.starts.push((self.text.len(), line));
        self.text.push_str(text);
    }

    /// The physical line holding byte `offset`.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        self.starts
            .iter()
            .rev()
            .find(|(start, _)| *start <= offset)
            .map_or(0, |(_, line)| *line)
    }

    pub(crate) fn first_line(&self) -> usize {
        self.starts.first().map_or(0, |(_, line)| *line)
    }
}

/// Whether a physical line is ignored: empty, whitespace only, or a `#` comment.
pub(crate) fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// Physical lines with their 1-based numbers, a trailing CR removed (CRLF files read like
/// LF files).
pub(crate) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n').enumerate().map(|(i, l)| {
        let l = l.strip_suffix('\r').unwrap_or(l);
        (i + 1, l)
    })
}

/// Reads a double-quoted string starting just after the opening quote at `text[at]`;
/// returns the unescaped text and the offset just past the closing quote. A quote may run
/// across a continuation line; the line break itself is dropped (the following line's
/// leading whitespace stays).
fn quoted(text: &str, at: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = text[at..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, at + i + 1)),
            '\n' => {}
            '\\' => match chars.next() {
                Some((_, next)) => out.push(next),
                None => return None,
            },
            other => out.push(other),
        }
    }
    None
}

/// Classifies one value (already unquoted and trimmed).
fn classify(value: &str, was_quoted: bool) -> Result<Target, TargetError> {
    if let Some(command) = value.strip_prefix('|') {
        let command = command.trim_start();
        if command.is_empty() {
            return Err(TargetError::EmptyCommand);
        }
        return Ok(Target::Command(command.to_string()));
    }
    if !was_quoted && value.contains(char::is_whitespace) {
        // `:include: /path` with a space after the prefix is the documented sendmail form.
        let include_form = value
            .get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case(":include:"))
            && !value[9..].trim().contains(char::is_whitespace);
        if !include_form {
            return Err(TargetError::UnquotedSpace(value.to_string()));
        }
    }
    if let Some(prefix) = value.get(..9)
        && prefix.eq_ignore_ascii_case(":include:")
    {
        let path = value[9..].trim();
        if path.is_empty() {
            return Err(TargetError::EmptyInclude);
        }
        return Ok(Target::Include(path.to_string()));
    }
    if let Some(user) = value.strip_prefix('\\') {
        if user.is_empty() {
            return Err(TargetError::EmptyLocal);
        }
        return Ok(Target::Local(user.to_string()));
    }
    if value.starts_with('/')
        || value.starts_with("~/")
        || (value.contains('/') && !value.contains('@'))
    {
        return Ok(Target::File(value.to_string()));
    }
    Ok(Target::Address(value.to_string()))
}

/// Splits `logical.text[from..]` into targets at commas and line ends outside quotes (a
/// continuation line starts a new value even without a comma). Empty values (`a,,b`, a trailing comma) are skipped.
/// Returns each target with the physical line it starts on, or the first error with its
/// line.
pub(crate) fn parse_targets(
    logical: &Logical,
    from: usize,
) -> Result<Vec<(usize, Target)>, (usize, TargetError)> {
    let text = &logical.text;
    let mut targets = Vec::new();
    let mut at = from;
    while at < text.len() {
        // Skip separators and whitespace before a value.
        let rest = &text[at..];
        let skip = rest
            .find(|c: char| !(c.is_whitespace() || c == ','))
            .unwrap_or(rest.len());
        at += skip;
        if at >= text.len() {
            break;
        }
        let start = at;
        let line = logical.line_at(start);
        let (value, quoted_value, end) = if text[at..].starts_with('"') {
            let (value, after) =
                quoted(text, at + 1).ok_or((line, TargetError::UnterminatedQuote))?;
            let tail = &text[after..];
            let stop = tail.find([',', '\n']).unwrap_or(tail.len());
            if !tail[..stop].trim().is_empty() {
                return Err((logical.line_at(after), TargetError::TextAfterQuote));
            }
            (value, true, after + stop)
        } else {
            let tail = &text[at..];
            let stop = tail.find([',', '\n']).unwrap_or(tail.len());
            (tail[..stop].trim().to_string(), false, at + stop)
        };
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err((line, TargetError::ControlCharacter));
        }
        let value = value.trim();
        if !value.is_empty() {
            let target = classify(value, quoted_value).map_err(|e| (line, e))?;
            targets.push((line, target));
        }
        at = end;
    }
    Ok(targets)
}

/// Reads the name at the start of a logical line; returns it folded to lowercase and the
/// offset just past the `:`.
fn parse_name(logical: &Logical) -> Result<(String, usize), AliasError> {
    let line = logical.first_line();
    let text = &logical.text;
    let (name, after) = if text.starts_with('"') {
        let (name, after) = quoted(text, 1).ok_or(AliasError::Target {
            line,
            error: TargetError::UnterminatedQuote,
        })?;
        let tail = &text[after..];
        let spaces = tail.len() - tail.trim_start().len();
        if !tail.trim_start().starts_with(':') {
            return Err(AliasError::MissingColon { line });
        }
        (name, after + spaces + 1)
    } else {
        let colon = text.find(':').ok_or(AliasError::MissingColon { line })?;
        let name = text[..colon].trim_end();
        if name.contains(char::is_whitespace) {
            return Err(AliasError::MissingColon { line });
        }
        (name.to_string(), colon + 1)
    };
    if name.is_empty() {
        return Err(AliasError::EmptyName { line });
    }
    if name.chars().any(char::is_control) {
        return Err(AliasError::Target {
            line,
            error: TargetError::ControlCharacter,
        });
    }
    Ok((name.to_lowercase(), after))
}

/// Parses an aliases file. Returns every entry in file order, or every problem found.
pub fn parse(text: &str) -> Result<Vec<Alias>, Vec<AliasError>> {
    let mut logicals: Vec<Logical> = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in lines(text) {
        if is_blank_or_comment(line) {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            match logicals.last_mut() {
                Some(logical) => logical.push(number, line),
                None => errors.push(AliasError::ContinuationFirst { line: number }),
            }
        } else {
            logicals.push(Logical::new(number, line));
        }
    }
    let mut aliases: Vec<Alias> = Vec::new();
    for logical in &logicals {
        let (name, after) = match parse_name(logical) {
            Ok(found) => found,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let line = logical.first_line();
        let targets: Vec<Target> = match parse_targets(logical, after) {
            Ok(targets) => targets.into_iter().map(|(_, t)| t).collect(),
            Err((line, error)) => {
                errors.push(AliasError::Target { line, error });
                continue;
            }
        };
        if targets.is_empty() {
            errors.push(AliasError::NoTargets { line, name });
            continue;
        }
        if let Some(first) = aliases.iter().find(|a| a.name == name) {
            errors.push(AliasError::Duplicate {
                name,
                first: first.line,
                second: line,
            });
            continue;
        }
        aliases.push(Alias {
            name,
            line,
            targets,
        });
    }
    if errors.is_empty() {
        Ok(aliases)
    } else {
        errors.sort_by_key(AliasError::line);
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Target {
        Target::Address(s.into())
    }

    /// An alias as the tests write it: name, line, targets.
    type Row<'a> = (&'a str, usize, Vec<Target>);

    #[test]
    fn an_alias_without_a_value_is_an_error() {
        let e = parse("ok: root\nempty:\n  \nalso: ,\n").expect_err("no targets");
        let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("line 2: `empty` has no value"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with("line 4: `also` has no value"),
            "{text:?}"
        );
    }

    #[test]
    fn entries_parse_into_typed_targets() {
        use Target::*;
        let rows: Vec<(&str, Vec<Row<'_>>)> = vec![
            ("postmaster: root", vec![("postmaster", 1, vec![a("root")])]),
            ("", vec![]),
            ("# only a comment\n\n   \n", vec![]),
            (
                "Staff: joe, Ann@Example.ORG ,\n  bob\n# comment inside\n\tcarol,\n",
                vec![(
                    "staff",
                    1,
                    vec![a("joe"), a("Ann@Example.ORG"), a("bob"), a("carol")],
                )],
            ),
            (
                "x: |/usr/bin/vacation, \"|/usr/bin/x -a b\", | /bin/y",
                vec![(
                    "x",
                    1,
                    vec![
                        Command("/usr/bin/vacation".into()),
                        Command("/usr/bin/x -a b".into()),
                        Command("/bin/y".into()),
                    ],
                )],
            ),
            (
                "x: |/usr/bin/vacation joe",
                vec![("x", 1, vec![Command("/usr/bin/vacation joe".into())])],
            ),
            (
                "log: /var/log/mail.archive, /srv/box/, ~/mbox, Mail/in",
                vec![(
                    "log",
                    1,
                    vec![
                        File("/var/log/mail.archive".into()),
                        File("/srv/box/".into()),
                        File("~/mbox".into()),
                        File("Mail/in".into()),
                    ],
                )],
            ),
            (
                "list: :include:/etc/mail/list, :INCLUDE: /etc/mail/other",
                vec![(
                    "list",
                    1,
                    vec![
                        Include("/etc/mail/list".into()),
                        Include("/etc/mail/other".into()),
                    ],
                )],
            ),
            (
                "joe: \\joe, joe@elsewhere.example",
                vec![(
                    "joe",
                    1,
                    vec![Local("joe".into()), a("joe@elsewhere.example")],
                )],
            ),
            (
                "\"Odd Name#1\": \"a\\\"b@example.org\"",
                vec![("odd name#1", 1, vec![a("a\"b@example.org")])],
            ),
            ("a: b,,c,", vec![("a", 1, vec![a("b"), a("c")])]),
            ("a: \"x,\n  y\"", vec![("a", 1, vec![a("x,  y")])]),
            (
                "a: b\r\nc: d\r\n  e\r\n",
                vec![("a", 1, vec![a("b")]), ("c", 2, vec![a("d"), a("e")])],
            ),
            (
                "a: b#c\nb: c",
                vec![("a", 1, vec![a("b#c")]), ("b", 2, vec![a("c")])],
            ),
        ];
        for (text, want) in rows {
            let got = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
            let got: Vec<Row<'_>> = got
                .iter()
                .map(|a| (a.name.as_str(), a.line, a.targets.clone()))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn errors_carry_lines() {
        let dup = |name: &str, first, second| AliasError::Duplicate {
            name: name.into(),
            first,
            second,
        };
        let target = |line, error| AliasError::Target { line, error };
        let rows: Vec<(&str, Vec<AliasError>)> = vec![
            (
                "a: b\nno colon here\n",
                vec![AliasError::MissingColon { line: 2 }],
            ),
            ("nocolon", vec![AliasError::MissingColon { line: 1 }]),
            ("two words: x", vec![AliasError::MissingColon { line: 1 }]),
            (": x", vec![AliasError::EmptyName { line: 1 }]),
            ("\"\": x", vec![AliasError::EmptyName { line: 1 }]),
            ("\"open: x", vec![target(1, TargetError::UnterminatedQuote)]),
            (
                "a: b,\n  \"|/bin/x\n",
                vec![target(2, TargetError::UnterminatedQuote)],
            ),
            ("  x\na: b", vec![AliasError::ContinuationFirst { line: 1 }]),
            ("Root: a\nx: y\nroot: b", vec![dup("root", 1, 3)]),
            ("a: |", vec![target(1, TargetError::EmptyCommand)]),
            ("a: :include:", vec![target(1, TargetError::EmptyInclude)]),
            ("a: \\", vec![target(1, TargetError::EmptyLocal)]),
            (
                "a: b,\n  joe bob",
                vec![target(2, TargetError::UnquotedSpace("joe bob".into()))],
            ),
            ("a: \"x\"y", vec![target(1, TargetError::TextAfterQuote)]),
            (
                "a: b\u{1b}[2J",
                vec![target(1, TargetError::ControlCharacter)],
            ),
            (
                "x\ny: a\nz",
                vec![
                    AliasError::MissingColon { line: 1 },
                    AliasError::MissingColon { line: 3 },
                ],
            ),
        ];
        for (text, want) in rows {
            assert_eq!(parse(text), Err(want), "{text:?}");
        }
        let message = dup("root", 1, 3).to_string();
        assert_eq!(
            message,
            "line 3: alias \"root\" is already defined at line 1"
        );
    }

    #[test]
    fn lf_and_crlf_read_alike() {
        let lf = "a: b,\n  c\n# x\nd: \"|/bin/e f\"\n";
        let crlf = lf.replace('\n', "\r\n");
        assert_eq!(parse(lf), parse(&crlf));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "[a-z:,\"\\|/ \t\n#@~]{0,64}") {
            let _ = parse(&text);
            let _ = crate::forward::parse(&text);
        }

        #[test]
        fn any_unicode_never_panics(text in "\\PC{0,64}") {
            let _ = parse(&text);
            let _ = crate::forward::parse(&text);
        }
    }
}
