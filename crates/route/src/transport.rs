//! Transports: how a routed address is carried out. `lda` hands a typed destination to
//! cursus-lda (its `mailbox` template says which mailbox a user's mail goes to), `smtp` and
//! `lmtp` carry mail to hosts. Any router may name any transport; the configuration checks
//! that the pairing makes sense (see [`crate::config`]).
//!
//! Trusts the template (configuration) and the user database entry (`~`, `${user}`,
//! `${home}`); trusts nothing that comes from an address (`${local}`, `${domain}`,
//! `${extension}`). Fails with a reason string when an expansion is not a valid
//! destination; the router turns that into a permanent failure of the address.
//!
//! Attacks stopped: a local part or domain climbing out of a templated directory
//! (`../../etc`, `a/../../b`, `.`, `..`) or adding components (`a/b`): every value taken
//! from an address must be one plain path component, and the expanded path is checked
//! again by [`MailPath::parse`] (no `..`, no empty or `.` components, no control
//! characters), before the LDA checks it a third time against its policy.

use cursus_lda::{Destination, MailPath};

/// A mailbox template such as `maildir:~/Maildir` or `mbox:/var/mail/${user}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxTemplate {
    pub kind: String,
    pub path: String,
}

/// The variables a template may use.
pub const VARIABLES: &[&str] = &["user", "home", "local", "domain", "extension"];

/// Values for expanding a template.
#[derive(Debug, Clone, Copy)]
pub struct Expansion<'a> {
    pub user: &'a str,
    pub home: &'a str,
    pub local: &'a str,
    pub domain: &'a str,
    pub extension: &'a str,
}

/// Whether `value`, taken from an address, may become one path component.
fn plain_component(value: &str) -> bool {
    !value.is_empty()
        && value != "."
        && value != ".."
        && !value.contains(|c: char| c == '/' || c.is_control())
}

impl MailboxTemplate {
    /// Reads `KIND:PATH` and checks the kind and the variables (not the values).
    pub fn parse(text: &str) -> Result<MailboxTemplate, String> {
        let (kind, path) = text.split_once(':').ok_or_else(|| {
            format!("{text:?}: write the mailbox as KIND:PATH (maildir:~/Maildir)")
        })?;
        if !["maildir", "mbox", "mh"].contains(&kind) {
            return Err(format!(
                "unknown mailbox kind {kind:?}: use maildir, mbox or mh"
            ));
        }
        let template = MailboxTemplate {
            kind: kind.to_string(),
            path: path.to_string(),
        };
        let sample = Expansion {
            user: "user",
            home: "/home/user",
            local: "local",
            domain: "example.org",
            extension: "ext",
        };
        template.expand(&sample)?;
        Ok(template)
    }

    /// Expands `~` (at the start), `${name}`; checks the result.
    pub fn expand(&self, values: &Expansion<'_>) -> Result<Destination, String> {
        let mut out = String::new();
        let mut rest = self.path.as_str();
        if let Some(after) = rest.strip_prefix('~')
            && (after.is_empty() || after.starts_with('/'))
        {
            out.push_str(values.home.trim_end_matches('/'));
            rest = after;
        }
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("{:?}: `${{` without `}}`", self.path))?;
            let name = &after[..end];
            let value = match name {
                "user" => values.user,
                "home" => values.home.trim_end_matches('/'),
                "local" | "domain" | "extension" => {
                    let v = match name {
                        "local" => values.local,
                        "domain" => values.domain,
                        _ => values.extension,
                    };
                    if !plain_component(v) {
                        return Err(format!("the {name} {v:?} cannot be a path component"));
                    }
                    v
                }
                other => {
                    return Err(format!(
                        "unknown variable ${{{other}}}; known: {}",
                        VARIABLES.join(", ")
                    ));
                }
            };
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        let path = MailPath::parse(&out).map_err(|e| format!("{out:?}: {e}"))?;
        Ok(match self.kind.as_str() {
            "mbox" => Destination::Mbox(path),
            "mh" => Destination::Mh(path),
            _ => Destination::Maildir(path),
        })
    }
}

impl std::fmt::Display for MailboxTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.path)
    }
}

/// The default mailbox of the `lda` transport.
pub const DEFAULT_MAILBOX: &str = "maildir:~/Maildir";

/// What a transport does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportDriver {
    /// Local delivery through cursus-lda.
    Lda { mailbox: MailboxTemplate },
    /// SMTP to `hosts` (empty: the router's hosts or the domain's MX).
    Smtp { hosts: Vec<String>, port: u16 },
    /// LMTP to a mail store (`hosts` may name `unix:/path` sockets).
    Lmtp { hosts: Vec<String>, port: u16 },
}

impl TransportDriver {
    pub fn name(&self) -> &'static str {
        match self {
            TransportDriver::Lda { .. } => "lda",
            TransportDriver::Smtp { .. } => "smtp",
            TransportDriver::Lmtp { .. } => "lmtp",
        }
    }
}

/// A named transport from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub name: String,
    pub driver: TransportDriver,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(local: &'a str, domain: &'a str) -> Expansion<'a> {
        Expansion {
            user: "joe",
            home: "/home/joe/",
            local,
            domain,
            extension: "lists",
        }
    }

    #[test]
    fn templates_expand_into_destinations() {
        let rows: &[(&str, &str)] = &[
            ("maildir:~/Maildir", "maildir:/home/joe/Maildir"),
            ("maildir:~", "maildir:/home/joe"),
            ("mbox:/var/mail/${user}", "mbox:/var/mail/joe"),
            ("mh:${home}/Mail", "mh:/home/joe/Mail"),
            (
                "maildir:/srv/vmail/${domain}/${local}",
                "maildir:/srv/vmail/example.org/ann",
            ),
            (
                "maildir:~/Maildir/.${extension}",
                "maildir:/home/joe/Maildir/.lists",
            ),
        ];
        for (text, want) in rows {
            let t = MailboxTemplate::parse(text).expect("valid template");
            let got = t.expand(&values("ann", "example.org")).expect("expands");
            assert_eq!(got.to_string(), *want, "{text}");
        }
    }

    #[test]
    fn address_values_cannot_climb_out() {
        let t = MailboxTemplate::parse("maildir:/srv/vmail/${domain}/${local}").expect("valid");
        for (local, domain) in [
            ("..", "example.org"),
            ("a/../../etc", "example.org"),
            ("a/b", "example.org"),
            ("ann", ".."),
            ("", "example.org"),
            ("a\nb", "example.org"),
        ] {
            assert!(
                t.expand(&values(local, domain)).is_err(),
                "{local:?} {domain:?}"
            );
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        for text in [
            "~/Maildir",
            "file:/x",
            "maildir:Maildir",
            "maildir:~/${nope}",
            "maildir:~/${user",
            "maildir:/a/../b",
        ] {
            assert!(MailboxTemplate::parse(text).is_err(), "{text}");
        }
    }
}
