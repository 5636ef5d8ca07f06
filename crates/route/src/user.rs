//! The user database as routers see it: a local part to a user (name, uid, gid, home).
//!
//! [`SystemUsers`] asks NSS (getpwnam through nix), as the daemon does; [`MapUsers`] is a
//! fixed map for tests and for `cursus address test` fixtures. Trusts what NSS answers.
//! Fails with [`TempError`] when NSS itself fails (an LDAP directory down), so the mail is
//! deferred rather than bounced as "user unknown".
//!
//! Attacks stopped: a local part that is not a plausible user name (`../x`, empty, with
//! `/`, NUL or control characters) is never handed to NSS; such a name is simply no user.

use std::collections::HashMap;

use crate::TempError;

/// A local user, as the user database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The home directory, as text (templates expand it into paths).
    pub home: String,
}

/// Looks up local users by name.
pub trait UserDb {
    /// `Ok(None)` when there is no such user.
    fn user(&self, local: &str) -> Result<Option<User>, TempError>;
}

/// Whether `name` could be a user name: not empty, at most 64 bytes, no `/`, no control
/// character, not starting with `-` or `.`.
pub fn plausible_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && !name.contains(|c: char| c == '/' || c.is_control() || c.is_whitespace())
}

/// The system user database through NSS (getpwnam).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemUsers;

impl UserDb for SystemUsers {
    fn user(&self, local: &str) -> Result<Option<User>, TempError> {
        if !plausible_name(local) {
            return Ok(None);
        }
        match nix::unistd::User::from_name(local) {
            Ok(Some(u)) => Ok(Some(User {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                home: u.dir.to_string_lossy().into_owned(),
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(TempError::new(format!(
                "user database lookup of {local:?}: {e}"
            ))),
        }
    }
}

/// A fixed user database; names compare exactly, as getpwnam does.
#[derive(Debug, Clone, Default)]
pub struct MapUsers {
    users: HashMap<String, User>,
    /// Names whose lookup fails temporarily (to test deferrals).
    failing: Vec<String>,
}

impl MapUsers {
    pub fn new() -> Self {
        MapUsers::default()
    }

    /// Adds a user with home `/home/NAME`.
    pub fn with(mut self, name: &str, uid: u32) -> Self {
        self.users.insert(
            name.to_string(),
            User {
                name: name.to_string(),
                uid,
                gid: uid,
                home: format!("/home/{name}"),
            },
        );
        self
    }

    /// Makes lookups of `name` fail temporarily.
    pub fn failing(mut self, name: &str) -> Self {
        self.failing.push(name.to_string());
        self
    }
}

impl UserDb for MapUsers {
    fn user(&self, local: &str) -> Result<Option<User>, TempError> {
        if self.failing.iter().any(|n| n == local) {
            return Err(TempError::new(format!(
                "user database unreachable for {local:?}"
            )));
        }
        Ok(self.users.get(local).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implausible_names_are_no_user() {
        for name in ["", "../root", "a/b", "-x", ".x", "a\nb", "a b"] {
            assert!(!plausible_name(name), "{name:?}");
            assert_eq!(SystemUsers.user(name), Ok(None), "{name:?}");
        }
        assert!(plausible_name("joe.bloggs"));
    }

    #[test]
    fn system_users_know_root_and_not_a_stranger() {
        let root = SystemUsers.user("root").expect("nss").expect("root exists");
        assert_eq!(root.uid, 0);
        assert_eq!(SystemUsers.user("no-such-user-cursus-test"), Ok(None));
    }

    #[test]
    fn map_users_answer_and_fail() {
        let db = MapUsers::new().with("joe", 1000).failing("ldap");
        assert_eq!(
            db.user("joe").expect("ok").map(|u| u.home),
            Some("/home/joe".into())
        );
        assert_eq!(db.user("ann"), Ok(None));
        assert!(db.user("ldap").is_err());
    }
}
