//! Destinations as typed values: a mailbox of a given format at a normalised absolute path,
//! or a command given as a program path and its arguments. Never a string that happens to
//! start with `/` or `|`.
//!
//! Trusts nothing: every path is checked lexically, without touching the filesystem.
//! Fails with a [`PathError`] that names what was wrong.
//!
//! Attacks stopped: `..` climbing out of an allowed directory (`~/Maildir/../.ssh`), `.` and
//! empty components that make two spellings of one path compare differently (`/srv//vmail`),
//! relative paths resolved against an unknown working directory, NUL bytes that truncate a
//! path when it reaches the kernel, control characters that forge log lines, and paths long
//! enough to fail late, after a check has passed.

use std::fmt;
use std::str::FromStr;

/// The longest path accepted (PATH_MAX on Linux, counting the terminating NUL).
pub const MAX_PATH: usize = 4095;

/// Why a path is not a normalised absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Empty,
    Relative,
    Nul,
    ControlCharacter,
    EmptyComponent,
    DotComponent,
    DotDotComponent,
    TooLong(usize),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => write!(f, "the path is empty"),
            PathError::Relative => write!(f, "the path is not absolute"),
            PathError::Nul => write!(f, "the path contains a NUL byte"),
            PathError::ControlCharacter => write!(f, "the path contains a control character"),
            PathError::EmptyComponent => {
                write!(
                    f,
                    "the path has an empty component (`//` or a trailing `/`)"
                )
            }
            PathError::DotComponent => write!(f, "the path has a `.` component"),
            PathError::DotDotComponent => write!(f, "the path has a `..` component"),
            PathError::TooLong(n) => write!(f, "the path is {n} bytes long (at most {MAX_PATH})"),
        }
    }
}

impl std::error::Error for PathError {}

/// A normalised absolute path: starts with `/`, every component non-empty and neither `.`
/// nor `..`, no NUL or control character, at most [`MAX_PATH`] bytes. `/` itself is valid
/// (zero components).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailPath(String);

impl MailPath {
    /// Checks `text` without touching the filesystem.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        if text.len() > MAX_PATH {
            return Err(PathError::TooLong(text.len()));
        }
        if text.contains('\0') {
            return Err(PathError::Nul);
        }
        if text.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter);
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PathError::Relative);
        };
        if rest.is_empty() {
            return Ok(MailPath(text.to_string()));
        }
        for component in rest.split('/') {
            match component {
                "" => return Err(PathError::EmptyComponent),
                "." => return Err(PathError::DotComponent),
                ".." => return Err(PathError::DotDotComponent),
                _ => {}
            }
        }
        Ok(MailPath(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components after the root.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// Whether `self` is `base` or lies below it, compared component by component, so
    /// `/srv/vmailx` is not under `/srv/vmail`.
    ///
    /// Attack stopped: a prefix test on strings would let a sibling directory whose name
    /// extends the allowed one (`/srv/vmail-evil`, `/home/joe2`) pass as inside it.
    pub fn is_at_or_below(&self, base: &MailPath) -> bool {
        let mut mine = self.components();
        base.components().all(|b| mine.next() == Some(b))
    }

    /// The directory holding `self`; `None` for `/`.
    pub fn parent(&self) -> Option<MailPath> {
        let (head, _) = self.0.rsplit_once('/')?;
        if self.0 == "/" {
            return None;
        }
        Some(MailPath(if head.is_empty() {
            "/".to_string()
        } else {
            head.to_string()
        }))
    }

    /// Whether `self` lies strictly below `base`.
    pub fn is_strictly_below(&self, base: &MailPath) -> bool {
        self.is_at_or_below(base) && self.components().count() > base.components().count()
    }

    /// `self` with `relative` (already split into checked components) appended.
    pub fn join(&self, relative: &str) -> Result<MailPath, PathError> {
        if relative.is_empty() {
            return Ok(self.clone());
        }
        if self.0 == "/" {
            MailPath::parse(&format!("/{relative}"))
        } else {
            MailPath::parse(&format!("{}/{relative}", self.0))
        }
    }
}

impl fmt::Display for MailPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The mailbox formats a path destination may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailboxKind {
    Maildir,
    Mbox,
    Mh,
}

impl MailboxKind {
    pub fn name(self) -> &'static str {
        match self {
            MailboxKind::Maildir => "maildir",
            MailboxKind::Mbox => "mbox",
            MailboxKind::Mh => "mh",
        }
    }
}

/// Where one delivery goes: a typed value, never a string with a magic first character.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Maildir(MailPath),
    Mbox(MailPath),
    Mh(MailPath),
    /// A program executed directly (never by a shell) with these arguments.
    Command {
        program: MailPath,
        args: Vec<String>,
    },
}

impl Destination {
    /// The kind name used in policy files and on the command line.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Destination::Maildir(_) => "maildir",
            Destination::Mbox(_) => "mbox",
            Destination::Mh(_) => "mh",
            Destination::Command { .. } => "command",
        }
    }

    /// The mailbox path, or the program for a command.
    pub fn path(&self) -> &MailPath {
        match self {
            Destination::Maildir(p) | Destination::Mbox(p) | Destination::Mh(p) => p,
            Destination::Command { program, .. } => program,
        }
    }
}

/// Why a `kind:path` destination could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationError {
    MissingKind,
    UnknownKind(String),
    Path(PathError),
    EmptyCommand,
}

impl fmt::Display for DestinationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestinationError::MissingKind => write!(
                f,
                "write the destination as KIND:PATH, KIND one of maildir, mbox, mh, command"
            ),
            DestinationError::UnknownKind(k) => write!(
                f,
                "unknown destination kind {k:?}: use maildir, mbox, mh or command"
            ),
            DestinationError::Path(e) => write!(f, "{e}"),
            DestinationError::EmptyCommand => write!(f, "the command is empty"),
        }
    }
}

impl std::error::Error for DestinationError {}

/// Reads `maildir:/p`, `mbox:/p`, `mh:/p` or `command:/prog arg...` (arguments split on
/// spaces; this is for administrators typing at `policy explain`, not a wire format).
impl FromStr for Destination {
    type Err = DestinationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = text.split_once(':').ok_or(DestinationError::MissingKind)?;
        let path = |p: &str| MailPath::parse(p).map_err(DestinationError::Path);
        match kind {
            "maildir" => Ok(Destination::Maildir(path(rest)?)),
            "mbox" => Ok(Destination::Mbox(path(rest)?)),
            "mh" => Ok(Destination::Mh(path(rest)?)),
            "command" => {
                let mut words = rest.split(' ').filter(|w| !w.is_empty());
                let program = path(words.next().ok_or(DestinationError::EmptyCommand)?)?;
                Ok(Destination::Command {
                    program,
                    args: words.map(str::to_string).collect(),
                })
            }
            other => Err(DestinationError::UnknownKind(other.to_string())),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Command { program, args } => {
                write!(f, "command:{program}")?;
                for a in args {
                    write!(f, " {a}")?;
                }
                Ok(())
            }
            other => write!(f, "{}:{}", other.kind_name(), other.path()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_lexically() {
        let table: &[(&str, Result<(), PathError>)] = &[
            ("/", Ok(())),
            ("/home/joe/Maildir", Ok(())),
            ("/home/joe/Maildir/.Sent", Ok(())),
            ("/home/joe/..Maildir", Ok(())),
            ("", Err(PathError::Empty)),
            ("home/joe", Err(PathError::Relative)),
            ("./x", Err(PathError::Relative)),
            ("/home/joe/../root", Err(PathError::DotDotComponent)),
            ("/home/joe/..", Err(PathError::DotDotComponent)),
            ("/home/./joe", Err(PathError::DotComponent)),
            ("/home//joe", Err(PathError::EmptyComponent)),
            ("/home/joe/", Err(PathError::EmptyComponent)),
            ("/home/jo\0e", Err(PathError::Nul)),
            ("/home/jo\ne", Err(PathError::ControlCharacter)),
        ];
        for (text, want) in table {
            assert_eq!(MailPath::parse(text).map(|_| ()), *want, "{text:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert_eq!(
            MailPath::parse(&long),
            Err(PathError::TooLong(MAX_PATH + 1))
        );
    }

    #[test]
    fn below_is_decided_at_component_boundaries() {
        let p = |s: &str| MailPath::parse(s).expect("valid");
        assert!(p("/srv/vmail/a/b").is_at_or_below(&p("/srv/vmail")));
        assert!(p("/srv/vmail").is_at_or_below(&p("/srv/vmail")));
        assert!(!p("/srv/vmail").is_strictly_below(&p("/srv/vmail")));
        assert!(!p("/srv/vmailx").is_at_or_below(&p("/srv/vmail")));
        assert!(!p("/srv/vmailx/a").is_at_or_below(&p("/srv/vmail")));
        assert!(!p("/srv").is_at_or_below(&p("/srv/vmail")));
        assert!(p("/anything").is_at_or_below(&p("/")));
    }

    #[test]
    fn destinations_read_and_print() {
        for text in [
            "maildir:/home/joe/Maildir",
            "mbox:/var/mail/joe",
            "mh:/home/joe/Mail/inbox",
            "command:/usr/bin/procmail -a x",
        ] {
            let d: Destination = text.parse().expect("valid");
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(
            "/var/mail/joe".parse::<Destination>(),
            Err(DestinationError::MissingKind)
        );
        assert_eq!(
            "file:/x".parse::<Destination>(),
            Err(DestinationError::UnknownKind("file".into()))
        );
        assert_eq!(
            "command:".parse::<Destination>(),
            Err(DestinationError::EmptyCommand)
        );
        assert_eq!(
            "mbox:/var/mail/../../etc/passwd".parse::<Destination>(),
            Err(DestinationError::Path(PathError::DotDotComponent))
        );
    }
}
