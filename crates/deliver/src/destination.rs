//! Where a message goes: a typed destination (maildir, mbox or MH, with its path), built
//! from the configured template.
//!
//! Trusts the template (it comes from configuration) but not the user name or home that are
//! substituted into it: a user name from `-d` may come from an address in RCPT TO (Postfix
//! pipe `${user}`), so it must not contain `/`, start with `.`, or be `..` — that would let
//! `-d ../../etc` or `-d joe/../../victim` pick the directory (a path traversal). qmail's
//! lesson applies: a destination is a typed value, never a string that happens to start
//! with `/` or `|`.

use std::path::{Path, PathBuf};

/// A mailbox and its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Maildir(PathBuf),
    Mbox(PathBuf),
    Mh(PathBuf),
}

impl Destination {
    pub fn path(&self) -> &Path {
        match self {
            Destination::Maildir(p) | Destination::Mbox(p) | Destination::Mh(p) => p,
        }
    }
}

/// Why a template could not become a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The template itself is wrong: a configuration error.
    Syntax(String),
    /// The user name cannot be put into a path.
    UnsafeUser(String),
    /// The template needs a home directory and there is none.
    NoHome,
}

/// What the placeholders stand for.
#[derive(Debug, Clone)]
pub struct TemplateValues<'a> {
    pub user: &'a str,
    pub home: Option<&'a Path>,
}

/// Whether a template refers to the home directory (`~` or `%h`).
pub fn uses_home(template: &str) -> bool {
    let path = template.split_once(':').map_or(template, |(_, p)| p);
    path.starts_with('~') || path.contains("%h")
}

/// Whether a template refers to the user name (`%u`, `%n`, `%d`).
pub fn uses_user(template: &str) -> bool {
    ["%u", "%n", "%d"].iter().any(|p| template.contains(p))
}

/// Expands `maildir:~/Maildir`, `mbox:/var/mail/%u`, `mh:~/Mail/inbox`.
pub fn expand(template: &str, values: &TemplateValues<'_>) -> Result<Destination, TemplateError> {
    let (kind, path) = template.split_once(':').ok_or_else(|| {
        TemplateError::Syntax(format!(
            "destination {template:?} has no format: write \"maildir:PATH\", \"mbox:PATH\" or \"mh:PATH\""
        ))
    })?;
    let mut out = String::new();
    let mut rest = path;
    if let Some(after) = rest.strip_prefix('~') {
        if !(after.is_empty() || after.starts_with('/')) {
            return Err(TemplateError::Syntax(format!(
                "destination {template:?}: only ~/ (the user's own home) is supported"
            )));
        }
        out.push_str(&home_text(values)?);
        rest = after;
    }
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('u') => out.push_str(safe_component(values.user)?),
            Some('n') => out.push_str(safe_component(local_part(values.user))?),
            Some('d') => out.push_str(safe_component(domain(values.user))?),
            Some('h') => out.push_str(&home_text(values)?),
            other => {
                return Err(TemplateError::Syntax(format!(
                    "destination {template:?}: unknown placeholder %{}; use %u, %n, %d, %h or %%",
                    other.map(String::from).unwrap_or_default()
                )));
            }
        }
    }
    let path = PathBuf::from(out);
    if !path.is_absolute() {
        return Err(TemplateError::Syntax(format!(
            "destination {template:?} is not an absolute path"
        )));
    }
    match kind {
        "maildir" => Ok(Destination::Maildir(path)),
        "mbox" => Ok(Destination::Mbox(path)),
        "mh" => Ok(Destination::Mh(path)),
        other => Err(TemplateError::Syntax(format!(
            "destination format {other:?} is unknown: use maildir, mbox or mh"
        ))),
    }
}

fn home_text(values: &TemplateValues<'_>) -> Result<String, TemplateError> {
    let home = values.home.ok_or(TemplateError::NoHome)?;
    let text = home.to_str().ok_or(TemplateError::NoHome)?;
    if !home.is_absolute() {
        return Err(TemplateError::NoHome);
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn local_part(user: &str) -> &str {
    user.rsplit_once('@').map_or(user, |(l, _)| l)
}

fn domain(user: &str) -> &str {
    user.rsplit_once('@').map_or("", |(_, d)| d)
}

/// A user-derived path component: non-empty, no `/`, no NUL or control characters, not
/// starting with `.` (no `..`, no hidden or Maildir++ folder names).
fn safe_component(part: &str) -> Result<&str, TemplateError> {
    let bad = part.is_empty()
        || part.starts_with('.')
        || part.len() > 255
        || part.chars().any(|c| c == '/' || c.is_control());
    if bad {
        Err(TemplateError::UnsafeUser(part.to_string()))
    } else {
        Ok(part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_table() {
        let home = PathBuf::from("/home/joe/");
        let v = TemplateValues {
            user: "joe@virt.test",
            home: Some(&home),
        };
        let table: &[(&str, Result<Destination, TemplateError>)] = &[
            (
                "maildir:~/Maildir",
                Ok(Destination::Maildir("/home/joe/Maildir".into())),
            ),
            ("maildir:~", Ok(Destination::Maildir("/home/joe".into()))),
            (
                "mbox:/var/mail/%n",
                Ok(Destination::Mbox("/var/mail/joe".into())),
            ),
            (
                "maildir:/srv/vmail/%d/%n/Maildir",
                Ok(Destination::Maildir(
                    "/srv/vmail/virt.test/joe/Maildir".into(),
                )),
            ),
            (
                "mh:%h/Mail/inbox",
                Ok(Destination::Mh("/home/joe/Mail/inbox".into())),
            ),
            (
                "maildir:/x/100%%",
                Ok(Destination::Maildir("/x/100%".into())),
            ),
        ];
        for (t, want) in table {
            assert_eq!(&expand(t, &v), want, "{t}");
        }
        for bad in [
            "~/Maildir",
            "imap:/x",
            "maildir:relative",
            "maildir:~joe/x",
            "maildir:/x/%z",
        ] {
            assert!(
                matches!(expand(bad, &v), Err(TemplateError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn hostile_user_names_never_reach_the_path() {
        for user in [
            "../../etc",
            "joe/../../victim",
            ".hidden",
            "",
            "a\nb",
            "..",
            "x/y",
        ] {
            let v = TemplateValues { user, home: None };
            assert!(
                matches!(
                    expand("maildir:/srv/vmail/%u", &v),
                    Err(TemplateError::UnsafeUser(_))
                ),
                "{user:?}"
            );
        }
        let v = TemplateValues {
            user: "joe",
            home: None,
        };
        assert_eq!(expand("maildir:~/Maildir", &v), Err(TemplateError::NoHome));
        assert!(
            uses_home("maildir:~/Maildir")
                && uses_home("mh:%h/x")
                && !uses_home("mbox:/var/mail/%u")
        );
        assert!(uses_user("mbox:/var/mail/%u") && !uses_user("maildir:~/Maildir"));
    }
}
