//! The aliases file (aliases(5) syntax, parsed by [`cursus_mail::aliases`]) as the aliases
//! router reads it: held in memory, reloaded when the file changes; and `:include:` files,
//! read through the [`IncludeSource`] trait.
//!
//! Trusts the aliases file the configuration names (it is the administrator's); trusts an
//! include file only as far as its checks below allow. Fails with [`TempError`] when a file
//! cannot be read or has a syntax error (the message names `file:line`), so mail waits
//! while the administrator fixes it instead of bouncing or going to the wrong place.
//!
//! Who reads includes: [`FsIncludes`] reads them as the calling process (cursusd runs as the
//! `cursus` user, so an include file must be readable by it). The owner of each include is
//! recorded in the delivery's [`crate::Authority`] for the LDA policy to judge; files and
//! commands from aliases and includes are delivered as the aliases router's `user`
//! (default `nobody`, Postfix's `default_privs`), never as the include file's owner: a
//! user-owned include cannot raise its own privileges, and the LDA refuses whatever its
//! policy does not list for that user.
//!
//! Attacks stopped (include files): a FIFO or device hanging the router (opened
//! non-blocking, regular files only, checked on the opened descriptor); a file others can
//! write, where anyone could add a `|command` (group- or world-writable files are
//! refused); a huge file making the router allocate (at most [`MAX_INCLUDE_SIZE`] bytes).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use cursus_mail::aliases::{self, Target};
use nix::fcntl::OFlag;

use crate::TempError;
use crate::table::Watched;

/// The largest include file read, in bytes.
pub const MAX_INCLUDE_SIZE: u64 = 1024 * 1024;

/// An aliases file: name (lowercase) to targets.
#[derive(Debug)]
pub struct AliasFile {
    file: Watched<HashMap<String, Vec<Target>>>,
    /// A missing file is an empty table rather than a deferral.
    optional: bool,
}

fn parse_aliases(text: &str, source: &str) -> Result<HashMap<String, Vec<Target>>, String> {
    aliases::parse(text)
        .map(|list| list.into_iter().map(|a| (a.name, a.targets)).collect())
        .map_err(|errors| {
            errors
                .iter()
                .map(|e| format!("{source}:{}: {}", e.line(), strip_line(&e.to_string())))
                .collect::<Vec<_>>()
                .join("; ")
        })
}

/// `line N: text` -> `text` (the caller prints `file:N:`).
fn strip_line(message: &str) -> &str {
    message
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
        .map_or(message, |(_, text)| text)
}

impl AliasFile {
    pub fn new(path: impl Into<PathBuf>, optional: bool) -> Self {
        AliasFile {
            file: Watched::new(path.into()),
            optional,
        }
    }

    pub fn path(&self) -> String {
        self.file.path().display().to_string()
    }

    /// Whether the file is currently absent (and optional), for traces.
    pub fn absent(&self) -> bool {
        self.optional && !self.file.path().exists()
    }

    /// The targets of alias `name` (compared in lowercase).
    pub fn lookup(&self, name: &str) -> Result<Option<Vec<Target>>, TempError> {
        let shown = self.path();
        let optional = self.optional;
        let map = self.file.get(parse_aliases, || {
            if optional {
                Ok(HashMap::new())
            } else {
                Err(format!("{shown}: no such file"))
            }
        })?;
        Ok(map.get(&name.to_lowercase()).cloned())
    }
}

/// The text of an include file and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludeFile {
    pub text: String,
    pub owner: u32,
}

/// Reads `:include:` files named in an aliases file.
pub trait IncludeSource {
    fn include(&self, path: &str) -> Result<IncludeFile, TempError>;
}

/// Reads include files from the filesystem as the calling process, with the checks listed
/// in the module header.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsIncludes;

impl IncludeSource for FsIncludes {
    fn include(&self, path: &str) -> Result<IncludeFile, TempError> {
        let fail = |why: String| TempError::new(format!(":include:{path}: {why}"));
        let file = OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
            .open(path)
            .map_err(|e| fail(e.to_string()))?;
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(fail("not a regular file".into()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(fail(format!(
                "group- or world-writable (mode {:04o}); not used",
                meta.mode() & 0o7777
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_INCLUDE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        if bytes.len() as u64 > MAX_INCLUDE_SIZE {
            return Err(fail(format!("larger than {MAX_INCLUDE_SIZE} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8".into()))?;
        Ok(IncludeFile {
            text,
            owner: meta.uid(),
        })
    }
}

/// Include files from a map (tests): path to (text, owner).
#[derive(Debug, Clone, Default)]
pub struct MapIncludes(pub HashMap<String, IncludeFile>);

impl IncludeSource for MapIncludes {
    fn include(&self, path: &str) -> Result<IncludeFile, TempError> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| TempError::new(format!(":include:{path}: no such file")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn alias_file_loads_reloads_and_reports_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aliases");
        let required = AliasFile::new(&path, false);
        let optional = AliasFile::new(&path, true);
        assert!(required.lookup("root").is_err());
        assert_eq!(optional.lookup("root"), Ok(None));
        assert!(optional.absent());
        std::fs::write(&path, "Postmaster: root\nroot: joe, \"|/usr/bin/log\"\n").expect("write");
        assert_eq!(
            required.lookup("POSTMASTER"),
            Ok(Some(vec![Target::Address("root".into())]))
        );
        std::fs::write(&path, "root: joe\nbad line\n").expect("write");
        let err = required.lookup("root").expect_err("syntax error defers");
        assert!(
            err.0.ends_with("aliases:2: no `:` after the alias name"),
            "{err}"
        );
    }

    #[test]
    fn includes_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = dir.path().join("list");
        std::fs::write(&list, "ann\nbob@example.org\n").expect("write");
        std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let shown = list.display().to_string();
        let got = FsIncludes.include(&shown).expect("readable");
        assert_eq!(got.text, "ann\nbob@example.org\n");
        std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(FsIncludes.include(&shown).is_err(), "world-writable");
        assert!(
            FsIncludes
                .include(&dir.path().display().to_string())
                .is_err(),
            "directory"
        );
        assert!(FsIncludes.include("/nonexistent/cursus/list").is_err());
    }
}
