//! The Sieve host of the MDA: what a script may ask of the world during one delivery
//! (does a folder exist, the text of an included script, the duplicate and vacation memory,
//! the clock, environment items), answered from the user's maildir, home and memory.
//!
//! Trusts the user's own files (we run as the user, so a script can only read what the
//! user can) and the administrator's global script directory once it passes the ownership
//! checks in `filter::read_script`. Fails soft, as the Sieve host contract asks: an
//! unreadable include is a runtime error (implicit keep), an unavailable memory answers
//! "already responded" (no vacation without memory) and "not seen" (duplicate).
//!
//! Attacks stopped: include names are path components, never paths (`include "../../x"`
//! cannot read outside ~/sieve or the global directory); folder names go through
//! [`FolderName`] before any lookup; duplicate marks are only written after the delivery
//! succeeded, so a temporary failure cannot make the retry look like a duplicate (and be
//! discarded by a `if duplicate { discard; }` script).

use std::path::{Path, PathBuf};

use cursus_mailbox::FolderName;
use cursus_sieve::{DateTime, Host, ScriptLocation};

use crate::filter::{ScriptTrust, read_script};
use crate::vacation::MemoryCell;

/// A duplicate tracking entry to record once the delivery succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateMark {
    pub id: String,
    pub seconds: u64,
    pub last: bool,
}

/// The world as one delivery's scripts see it.
#[derive(Debug)]
pub struct MdaHost<'a> {
    /// The maildir root, when the destination is a maildir (folders exist only there).
    maildir: Option<PathBuf>,
    /// `~/sieve`, where personal includes live.
    personal_dir: Option<PathBuf>,
    /// The administrator's directory for `include :global`.
    global_dir: Option<PathBuf>,
    memory: &'a MemoryCell,
    now: DateTime,
    domain: String,
    host: String,
    /// Duplicate marks made so far, committed by the caller after delivery.
    pub marks: Vec<DuplicateMark>,
    /// Lines from `debug_log`, for the user's script log.
    pub debug: Vec<String>,
}

impl<'a> MdaHost<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        maildir: Option<PathBuf>,
        home: Option<&Path>,
        global_dir: Option<PathBuf>,
        memory: &'a MemoryCell,
        now: DateTime,
        recipient: &str,
        host: &str,
    ) -> MdaHost<'a> {
        let domain = recipient
            .rsplit_once('@')
            .map_or_else(|| host.to_string(), |(_, d)| d.to_string());
        MdaHost {
            maildir,
            personal_dir: home.map(|h| h.join("sieve")),
            global_dir,
            memory,
            now,
            domain,
            host: host.to_string(),
            marks: Vec::new(),
            debug: Vec::new(),
        }
    }

    /// The time evaluation started.
    pub fn started(&self) -> DateTime {
        self.now
    }
}

/// The current time with the local UTC offset (from /etc/localtime or TZ).
pub fn local_now() -> DateTime {
    let now = jiff::ZonedDateTime::now();
    DateTime {
        timestamp: now.timestamp().as_second(),
        offset: now.offset().seconds() / 60,
    }
}

/// An include name as one file name: `NAME.sieve` in the script directory. Refuses `/`,
/// a leading `.`, control characters and overlong names.
pub fn script_file_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.chars().any(|c| c == '/' || c.is_control());
    ok.then(|| {
        if name.ends_with(".sieve") {
            name.to_string()
        } else {
            format!("{name}.sieve")
        }
    })
}

/// A duplicate key as stored: NUL separators become U+001F and the length is capped.
fn memory_key(key: &str) -> String {
    let mut k: String = key.replace('\0', "\u{1f}");
    if k.len() > 2000 {
        let mut cut = 2000;
        while !k.is_char_boundary(cut) {
            cut -= 1;
        }
        k.truncate(cut);
    }
    k
}

impl Host for MdaHost<'_> {
    fn mailbox_exists(&mut self, mailbox: &str) -> bool {
        if FolderName::is_inbox(mailbox) {
            return true;
        }
        let (Some(root), Ok(folder)) = (&self.maildir, FolderName::parse(mailbox)) else {
            return false;
        };
        std::fs::symlink_metadata(root.join(folder.dir_name())).is_ok_and(|m| m.is_dir())
    }

    fn load_script(
        &mut self,
        location: ScriptLocation,
        name: &str,
    ) -> Result<Option<String>, String> {
        let file = script_file_name(name)
            .ok_or_else(|| format!("include name {name:?} is not a script name"))?;
        let (dir, trust) = match location {
            ScriptLocation::Personal => (self.personal_dir.as_ref(), ScriptTrust::User),
            ScriptLocation::Global => (self.global_dir.as_ref(), ScriptTrust::Administrator),
        };
        let Some(dir) = dir else {
            return Ok(None);
        };
        let path = dir.join(file);
        match read_script(&path, trust)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| format!("{} is not UTF-8", path.display())),
        }
    }

    fn duplicate_seen(&mut self, key: &str) -> bool {
        let key = memory_key(key);
        self.memory
            .get()
            .is_ok_and(|m| m.duplicate_seen(&key, self.now.timestamp))
    }

    fn duplicate_mark(&mut self, key: &str, seconds: u64, last: bool) {
        if self.marks.len() < 64 {
            self.marks.push(DuplicateMark {
                id: memory_key(key),
                seconds,
                last,
            });
        }
    }

    fn vacation_responded(&mut self, handle: &str, sender: &str) -> bool {
        match self.memory.get() {
            Ok(m) => m.responded(handle, sender, self.now.timestamp),
            // No memory: answer "responded" so no response goes out (fail closed).
            Err(_) => true,
        }
    }

    fn now(&mut self) -> DateTime {
        self.now
    }

    fn environment(&mut self, name: &str) -> Option<String> {
        match name {
            "domain" => Some(self.domain.clone()),
            "host" => Some(self.host.clone()),
            "location" => Some("MDA".into()),
            "phase" => Some("during".into()),
            "name" => Some("Cursus".into()),
            "version" => Some(env!("CARGO_PKG_VERSION").into()),
            _ => None,
        }
    }

    fn debug_log(&mut self, message: &str) {
        if self.debug.len() < 32 {
            self.debug.push(message.chars().take(500).collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_names_are_file_names() {
        for (name, want) in [
            ("rules", Some("rules.sieve")),
            ("rules.sieve", Some("rules.sieve")),
            ("my rules", Some("my rules.sieve")),
            ("../x", None),
            ("a/b", None),
            (".hidden", None),
            ("", None),
            ("a\nb", None),
        ] {
            assert_eq!(script_file_name(name).as_deref(), want, "{name:?}");
        }
    }

    #[test]
    fn host_answers_from_the_maildir_and_home() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        std::fs::create_dir_all(md.join(".Lists.rust")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("sieve")).expect("mkdir");
        std::fs::write(dir.path().join("sieve/common.sieve"), "keep;\n").expect("write");
        let now = DateTime {
            timestamp: 1_700_000_000,
            offset: 120,
        };
        let memory = MemoryCell::new(None, now.timestamp);
        let mut h = MdaHost::new(
            Some(md),
            Some(dir.path()),
            None,
            &memory,
            now,
            "joe@example.net",
            "mx.example.net",
        );
        assert!(h.mailbox_exists("INBOX"));
        assert!(h.mailbox_exists("Lists.rust"));
        assert!(!h.mailbox_exists("Lists"));
        assert!(!h.mailbox_exists("../Maildir"));
        assert_eq!(
            h.load_script(ScriptLocation::Personal, "common"),
            Ok(Some("keep;\n".to_string()))
        );
        assert_eq!(h.load_script(ScriptLocation::Personal, "missing"), Ok(None));
        assert_eq!(h.load_script(ScriptLocation::Global, "common"), Ok(None));
        assert!(
            h.load_script(ScriptLocation::Personal, "../etc/passwd")
                .is_err()
        );
        assert_eq!(h.environment("domain").as_deref(), Some("example.net"));
        assert_eq!(h.environment("host").as_deref(), Some("mx.example.net"));
        assert_eq!(h.environment("phase").as_deref(), Some("during"));
        assert_eq!(h.now(), now);
        assert!(h.vacation_responded("h", "a@b"), "no memory: never respond");
        assert!(!h.duplicate_seen("k"));
        h.duplicate_mark("a\0h\0<1@x>", 60, false);
        assert_eq!(h.marks[0].id, "a\u{1f}h\u{1f}<1@x>");
    }
}
