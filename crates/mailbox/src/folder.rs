//! Maildir++ folder names: the only way a name from a Sieve script, an address extension or
//! a command line becomes a directory name.
//!
//! Trusts: nothing; the input may come from a remote sender (an address extension).
//! Fails: [`FolderName::parse`] returns [`InvalidFolder`] with the reason; callers deliver to
//! INBOX instead (mda-interface §3.3: never fail a delivery because of a bad extension).
//!
//! Security, per check: a `/` or a NUL would leave the maildir (`../x`, `a/b`); a leading `.`,
//! an empty component and `..` would make `..`-style names or a name Courier forbids ("no
//! subdirectories that start with two periods"); control characters would corrupt logs and
//! other programs' listings; the length cap keeps the directory name under NAME_MAX (255).
//! Spaces and non-ASCII UTF-8 are allowed (Courier stores UTF-8; Dovecot without `UTF-8` in
//! `mail_location` expects modified UTF-7 names, which are ASCII and also pass).

use std::fmt;

/// Longest accepted folder name in bytes (the directory name adds one `.`).
pub const MAX_FOLDER_NAME: usize = 200;

/// A validated Maildir++ folder name such as `Lists.rust` (directory `.Lists.rust`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FolderName(String);

/// Why a folder name was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidFolder {
    Empty,
    TooLong(usize),
    /// `INBOX` (any case) is the maildir root, not a folder; see [`FolderName::is_inbox`].
    Inbox,
    Slash,
    Nul,
    ControlCharacter,
    /// A leading or trailing `.`, or two dots in a row (`..`).
    EmptyComponent,
}

impl fmt::Display for InvalidFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidFolder::Empty => f.write_str("folder name is empty"),
            InvalidFolder::TooLong(n) => {
                write!(
                    f,
                    "folder name is {n} bytes long, more than {MAX_FOLDER_NAME}"
                )
            }
            InvalidFolder::Inbox => f.write_str("INBOX is the maildir itself, not a folder"),
            InvalidFolder::Slash => f.write_str("folder name contains '/'"),
            InvalidFolder::Nul => f.write_str("folder name contains NUL"),
            InvalidFolder::ControlCharacter => {
                f.write_str("folder name contains a control character")
            }
            InvalidFolder::EmptyComponent => {
                f.write_str("folder name has an empty component (leading, trailing or double '.')")
            }
        }
    }
}

impl std::error::Error for InvalidFolder {}

impl FolderName {
    /// `"Lists.rust"` → folder directory `.Lists.rust`. Accepts UTF-8 of 1..=200 bytes whose
    /// `.`-separated components are non-empty and contain no `/`, NUL or control character,
    /// and which is not `INBOX` in any case (use [`FolderName::is_inbox`] first).
    pub fn parse(name: &str) -> Result<FolderName, InvalidFolder> {
        if name.is_empty() {
            return Err(InvalidFolder::Empty);
        }
        if name.len() > MAX_FOLDER_NAME {
            return Err(InvalidFolder::TooLong(name.len()));
        }
        if FolderName::is_inbox(name) {
            return Err(InvalidFolder::Inbox);
        }
        if name.contains('/') {
            return Err(InvalidFolder::Slash);
        }
        if name.contains('\0') {
            return Err(InvalidFolder::Nul);
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidFolder::ControlCharacter);
        }
        if name.split('.').any(str::is_empty) {
            return Err(InvalidFolder::EmptyComponent);
        }
        Ok(FolderName(name.to_string()))
    }

    /// True for `INBOX` in any case: the maildir root.
    pub fn is_inbox(name: &str) -> bool {
        name.eq_ignore_ascii_case("INBOX")
    }

    /// The folder's directory name inside the maildir: `.` + name.
    pub fn dir_name(&self) -> String {
        format!(".{}", self.0)
    }

    /// The folder name as given (`Lists.rust`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the Trash folder, which Maildir++ quota does not count.
    pub fn is_trash(&self) -> bool {
        self.0 == "Trash"
    }
}

impl fmt::Display for FolderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_and_reject_table() {
        let long = "a".repeat(MAX_FOLDER_NAME);
        let too_long = "a".repeat(MAX_FOLDER_NAME + 1);
        let table: &[(&str, Result<&str, InvalidFolder>)] = &[
            ("Lists.rust", Ok(".Lists.rust")),
            ("Sent", Ok(".Sent")),
            ("x y", Ok(".x y")),
            ("Entwürfe", Ok(".Entwürfe")),
            ("a-b_c+d=e", Ok(".a-b_c+d=e")),
            ("INBOX.sub", Ok(".INBOX.sub")),
            (long.as_str(), Ok("")),
            (
                too_long.as_str(),
                Err(InvalidFolder::TooLong(MAX_FOLDER_NAME + 1)),
            ),
            ("", Err(InvalidFolder::Empty)),
            ("INBOX", Err(InvalidFolder::Inbox)),
            ("inbox", Err(InvalidFolder::Inbox)),
            ("InBoX", Err(InvalidFolder::Inbox)),
            ("../x", Err(InvalidFolder::Slash)),
            ("a/b", Err(InvalidFolder::Slash)),
            ("/etc", Err(InvalidFolder::Slash)),
            (".x", Err(InvalidFolder::EmptyComponent)),
            ("x.", Err(InvalidFolder::EmptyComponent)),
            ("a..b", Err(InvalidFolder::EmptyComponent)),
            ("..", Err(InvalidFolder::EmptyComponent)),
            (".", Err(InvalidFolder::EmptyComponent)),
            ("a\0b", Err(InvalidFolder::Nul)),
            ("a\nb", Err(InvalidFolder::ControlCharacter)),
            ("a\tb", Err(InvalidFolder::ControlCharacter)),
            ("a\u{7f}", Err(InvalidFolder::ControlCharacter)),
            ("a\u{85}", Err(InvalidFolder::ControlCharacter)),
        ];
        for (input, want) in table {
            let got = FolderName::parse(input);
            match (got, want) {
                (Ok(folder), Ok(dir)) => {
                    if !dir.is_empty() {
                        assert_eq!(folder.dir_name(), *dir, "{input:?}");
                    }
                    assert!(folder.dir_name().len() <= 255);
                    assert!(!folder.dir_name().starts_with(".."));
                }
                (Err(e), Err(w)) => assert_eq!(&e, w, "{input:?}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn inbox_and_trash() {
        assert!(FolderName::is_inbox("Inbox"));
        assert!(!FolderName::is_inbox("INBOX.x"));
        assert!(
            FolderName::parse("Trash")
                .map(|f| f.is_trash())
                .unwrap_or(false)
        );
        assert!(
            !FolderName::parse("Trash.x")
                .map(|f| f.is_trash())
                .unwrap_or(true)
        );
    }
}
