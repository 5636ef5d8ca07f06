//! A user's .forward as the forward router sees it: a list of [`ForwardEntry`] values, the
//! same typed entries cursus-lda answers `read-forward` with.
//!
//! The daemon implements [`ForwardSource`] by asking cursus-lda, which reads the file as
//! the user. [`HomeForwards`] reads the file itself, for single-user mode (the daemon runs
//! as the only local user) and for `cursus address test`; it uses the LDA's own checked
//! open and parser ([`cursus_lda::forward`]). [`MapForwards`] is for tests.
//!
//! Trusts the home directory and uid from the user database; trusts nothing in the file.
//! Fails with [`TempError`] when the file cannot be read or has a syntax error (the user
//! fixes it, no mail is lost); an unsafe file (see the attacks below) is ignored, as the
//! LDA ignores it.
//!
//! Attacks stopped, by [`cursus_lda::forward::open_checked`]: a .forward that is a symlink
//! to another file, a FIFO or device, a file owned by someone else or writable by others, a
//! root-owned hard link planted in the home, a huge file.

use std::collections::HashMap;
use std::path::Path;

use cursus_lda::MailPath;
use cursus_lda::forward::{OpenError, entries, open_checked};
use cursus_lda::protocol::ForwardEntry;

use crate::TempError;
use crate::user::User;

/// Where the forward router gets a user's .forward entries.
pub trait ForwardSource {
    /// The entries of `user`'s .forward; empty when there is none.
    fn forward(&self, user: &User) -> Result<Vec<ForwardEntry>, TempError>;

    /// The entries of an `:include:` file named in `user`'s .forward, read as that user.
    /// `Ok(None)`: this source cannot read files as the user (the entry then fails).
    fn include(
        &self,
        user: &User,
        path: &MailPath,
    ) -> Result<Option<Vec<ForwardEntry>>, TempError> {
        let _ = (user, path);
        Ok(None)
    }
}

/// Reads .forward files directly: for single-user mode and `cursus address test`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HomeForwards;

fn read_entries(path: &Path, user: &User) -> Result<Vec<ForwardEntry>, TempError> {
    // A root caller does not accept root-owned files in someone else's home (a planted
    // hard link); a user reading their own file accepts a root-owned one, as the LDA does.
    let root_may_own = !nix::unistd::geteuid().is_root();
    let shown = path.display();
    let bytes = match open_checked(path, user.uid, root_may_own) {
        Ok(None) | Err(OpenError::Unsafe(_)) => return Ok(Vec::new()),
        Ok(Some(bytes)) => bytes,
        Err(OpenError::Io(e)) => return Err(TempError::new(format!("{shown}: {e}"))),
    };
    let text =
        String::from_utf8(bytes).map_err(|_| TempError::new(format!("{shown}: not UTF-8")))?;
    entries(&text, Path::new(&user.home)).map_err(|why| TempError::new(format!("{shown} {why}")))
}

impl ForwardSource for HomeForwards {
    fn forward(&self, user: &User) -> Result<Vec<ForwardEntry>, TempError> {
        read_entries(&Path::new(&user.home).join(".forward"), user)
    }

    fn include(
        &self,
        user: &User,
        path: &MailPath,
    ) -> Result<Option<Vec<ForwardEntry>>, TempError> {
        read_entries(Path::new(path.as_str()), user).map(Some)
    }
}

/// .forward entries from a map (tests): user name to entries; include path to entries.
#[derive(Debug, Clone, Default)]
pub struct MapForwards {
    pub forwards: HashMap<String, Vec<ForwardEntry>>,
    pub includes: HashMap<String, Vec<ForwardEntry>>,
    /// Users whose .forward cannot be read now.
    pub failing: Vec<String>,
}

impl ForwardSource for MapForwards {
    fn forward(&self, user: &User) -> Result<Vec<ForwardEntry>, TempError> {
        if self.failing.contains(&user.name) {
            return Err(TempError::new(format!(
                "~{}/.forward: unreachable",
                user.name
            )));
        }
        Ok(self.forwards.get(&user.name).cloned().unwrap_or_default())
    }

    fn include(
        &self,
        _user: &User,
        path: &MailPath,
    ) -> Result<Option<Vec<ForwardEntry>>, TempError> {
        Ok(self.includes.get(path.as_str()).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn home_forwards_read_parse_and_ignore_unsafe_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = User {
            name: "me".into(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            home: dir.path().display().to_string(),
        };
        assert_eq!(HomeForwards.forward(&user), Ok(vec![]));
        let path = dir.path().join(".forward");
        std::fs::write(
            &path,
            "\\me, ann@example.org\n~/archive\n\"|/usr/bin/procmail\"\n",
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let archive = MailPath::parse(&format!("{}/archive", user.home)).expect("path");
        assert_eq!(
            HomeForwards.forward(&user),
            Ok(vec![
                ForwardEntry::Local("me".into()),
                ForwardEntry::Address("ann@example.org".into()),
                ForwardEntry::Mailbox(archive),
                ForwardEntry::Command("/usr/bin/procmail".into()),
            ])
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert_eq!(
            HomeForwards.forward(&user),
            Ok(vec![]),
            "world-writable is ignored"
        );
        std::fs::write(&path, "joe bob\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = HomeForwards
            .forward(&user)
            .expect_err("syntax error defers");
        assert!(err.0.contains("line 1"), "{err}");
    }
}
