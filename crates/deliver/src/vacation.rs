//! The response memory: which senders got a vacation response (RFC 5230 §4.2) and which
//! message ids the duplicate test has seen (RFC 7352), in one SQLite file in the user's home.
//!
//! Trusts the user's own home (we run as the user) but not what is at the database path: it
//! must be a regular file we own, not a symlink, and it is created 0600 in a 0700 directory.
//! Fails closed: when the memory cannot be opened or read, vacation responses are not sent
//! (a responder without memory would answer every message) and the duplicate test sees
//! nothing; the caller notes why. Rows carry their own expiry and expired rows are tidied on
//! every open; each table is also capped, so a flood of distinct senders cannot grow the
//! file without bound.
//!
//! Attacks stopped: a symlink planted at the database path (SQLITE_OPEN_NOFOLLOW and an
//! lstat check) cannot make us write SQLite pages into another file; a database someone else
//! owns is refused, so they cannot forge or read this user's correspondents.

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// Where the memory lives, relative to the home directory.
pub const MEMORY_PATH: &str = ".local/share/cursus/sieve.sqlite";
/// Most rows kept per table; past this the rows expiring soonest go first.
const MAX_ROWS: i64 = 100_000;
/// How long to wait for another delivery to the same user holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vacation (
    handle TEXT NOT NULL,
    sender TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (handle, sender)
);
CREATE INDEX IF NOT EXISTS vacation_expires ON vacation (expires);
CREATE TABLE IF NOT EXISTS duplicate (
    id TEXT NOT NULL PRIMARY KEY,
    expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS duplicate_expires ON duplicate (expires);
";

/// Why the memory is not available.
#[derive(Debug)]
pub struct MemoryError {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for MemoryError {}

/// The response memory of one delivery, opened on first use (most scripts never need it,
/// and a delivery should not create files it does not use).
#[derive(Debug)]
pub struct MemoryCell {
    home: Option<PathBuf>,
    now: i64,
    memory: std::cell::OnceCell<Result<ResponseMemory, MemoryError>>,
}

impl MemoryCell {
    /// `home`: the recipient's home when we run as the recipient; without one there is no
    /// memory. `now` is Unix seconds.
    pub fn new(home: Option<&Path>, now: i64) -> MemoryCell {
        MemoryCell {
            home: home.map(Path::to_path_buf),
            now,
            memory: std::cell::OnceCell::new(),
        }
    }

    /// The open memory, or why there is none.
    pub fn get(&self) -> Result<&ResponseMemory, String> {
        let Some(home) = &self.home else {
            return Err("no home directory".into());
        };
        self.memory
            .get_or_init(|| ResponseMemory::open_in_home(home, self.now))
            .as_ref()
            .map_err(ToString::to_string)
    }
}

/// An open response memory.
pub struct ResponseMemory {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for ResponseMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseMemory")
            .field("path", &self.path)
            .finish()
    }
}

impl ResponseMemory {
    /// Opens (creating when missing) the memory in `home`; `now` is Unix seconds.
    pub fn open_in_home(home: &Path, now: i64) -> Result<ResponseMemory, MemoryError> {
        ResponseMemory::open(&home.join(MEMORY_PATH), now)
    }

    /// Opens (creating when missing) the memory at `path` and tidies expired rows.
    pub fn open(path: &Path, now: i64) -> Result<ResponseMemory, MemoryError> {
        let fail = |reason: String| MemoryError {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Create the file ourselves so its mode is 0600 whatever SQLite would choose.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(format!("cannot create: {e}"))),
        }
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| fail(format!("cannot stat: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(fail("not a regular file (a symlink?); not used".into()));
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(fail(format!(
                "owned by uid {}, not by uid {euid}; not used",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| fail(format!("cannot switch to WAL: {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(fail(format!("journal mode is {mode}, not WAL")));
        }
        conn.execute_batch(SCHEMA)
            .map_err(|e| fail(format!("cannot create tables: {e}")))?;
        let memory = ResponseMemory {
            conn,
            path: path.to_path_buf(),
        };
        memory
            .tidy(now)
            .map_err(|e| fail(format!("cannot tidy: {e}")))?;
        Ok(memory)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes expired rows and, past [`MAX_ROWS`], the rows closest to expiry.
    fn tidy(&self, now: i64) -> rusqlite::Result<()> {
        for table in ["vacation", "duplicate"] {
            self.conn.execute(
                &format!("DELETE FROM {table} WHERE expires <= ?1"),
                params![now],
            )?;
            let count: i64 =
                self.conn
                    .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            if count > MAX_ROWS {
                self.conn.execute(
                    &format!(
                        "DELETE FROM {table} WHERE rowid IN \
                         (SELECT rowid FROM {table} ORDER BY expires LIMIT ?1)"
                    ),
                    params![count - MAX_ROWS],
                )?;
            }
        }
        Ok(())
    }

    /// Whether `sender` got a response for `handle` that has not yet expired. A read
    /// error counts as "responded" (fail closed: no response without memory).
    pub fn responded(&self, handle: &str, sender: &str, now: i64) -> bool {
        self.conn
            .query_row(
                "SELECT expires FROM vacation WHERE handle = ?1 AND sender = ?2",
                params![handle, sender.to_ascii_lowercase()],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_or(true, |e| e.is_some_and(|expires| expires > now))
    }

    /// Records a response sent to `sender` for `handle`, suppressing the next one for
    /// `period` seconds.
    pub fn record_response(
        &self,
        handle: &str,
        sender: &str,
        now: i64,
        period: u64,
    ) -> rusqlite::Result<()> {
        let expires = now.saturating_add(i64::try_from(period).unwrap_or(i64::MAX));
        self.conn.execute(
            "INSERT INTO vacation (handle, sender, expires) VALUES (?1, ?2, ?3) \
             ON CONFLICT (handle, sender) DO UPDATE SET expires = excluded.expires",
            params![handle, sender.to_ascii_lowercase(), expires],
        )?;
        Ok(())
    }

    /// Whether the duplicate tracking `id` is remembered and not yet expired.
    pub fn duplicate_seen(&self, id: &str, now: i64) -> bool {
        self.conn
            .query_row(
                "SELECT expires FROM duplicate WHERE id = ?1",
                params![id],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .ok()
            .flatten()
            .is_some_and(|expires| expires > now)
    }

    /// Remembers `id` for `seconds`; with `last` an existing entry's period restarts now,
    /// without it an unexpired entry keeps its expiry (RFC 7352 §3.1 `:last`).
    pub fn mark_duplicate(
        &self,
        id: &str,
        now: i64,
        seconds: u64,
        last: bool,
    ) -> rusqlite::Result<()> {
        let expires = now.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX));
        let sql = if last {
            "INSERT INTO duplicate (id, expires) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET expires = excluded.expires"
        } else {
            "INSERT INTO duplicate (id, expires) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET expires = excluded.expires WHERE expires <= ?3"
        };
        if last {
            self.conn.execute(sql, params![id, expires])?;
        } else {
            self.conn.execute(sql, params![id, expires, now])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> (tempfile::TempDir, ResponseMemory) {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = ResponseMemory::open_in_home(dir.path(), 1000).expect("open");
        (dir, m)
    }

    #[test]
    fn vacation_period_and_case() {
        let (dir, m) = memory();
        assert!(!m.responded("h", "a@example.org", 1000));
        m.record_response("h", "A@Example.org", 1000, 60)
            .expect("record");
        assert!(m.responded("h", "a@example.org", 1059));
        assert!(!m.responded("h", "a@example.org", 1060), "period over");
        assert!(!m.responded("other", "a@example.org", 1001), "per handle");
        let meta = std::fs::metadata(dir.path().join(MEMORY_PATH)).expect("stat");
        assert_eq!(meta.mode() & 0o777, 0o600);
        let parent = std::fs::metadata(dir.path().join(".local/share/cursus")).expect("stat");
        assert_eq!(parent.mode() & 0o777, 0o700);
    }

    #[test]
    fn duplicate_expiry_last_and_tidy() {
        let (dir, m) = memory();
        assert!(!m.duplicate_seen("id", 1000));
        m.mark_duplicate("id", 1000, 100, false).expect("mark");
        assert!(m.duplicate_seen("id", 1099));
        m.mark_duplicate("id", 1050, 100, false)
            .expect("mark again");
        assert!(
            !m.duplicate_seen("id", 1100),
            "without :last the first expiry stands"
        );
        m.mark_duplicate("id", 1000, 100, false).expect("mark");
        m.mark_duplicate("id", 1050, 100, true).expect(":last");
        assert!(m.duplicate_seen("id", 1120), ":last restarts the period");
        drop(m);
        let m = ResponseMemory::open_in_home(dir.path(), 5000).expect("reopen");
        let rows: i64 = m
            .conn
            .query_row("SELECT COUNT(*) FROM duplicate", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 0, "expired rows tidied on open");
    }

    #[test]
    fn symlinked_memory_is_refused() {
        // Attack: a link at the database path would make SQLite write into its target.
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        std::fs::write(&target, b"precious").expect("write");
        let path = dir.path().join(MEMORY_PATH);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let e = ResponseMemory::open(&path, 0).expect_err("refused");
        assert!(e.reason.contains("symlink"), "{e}");
        assert_eq!(std::fs::read(&target).expect("read"), b"precious");
    }
}
