//! Lookup tables: a key to one value, from a flat file (`key value` lines) or SQLite (a
//! configured query with one `?` parameter), behind one [`Table`] trait so routers do not
//! care where the data lives (PostgreSQL and LDAP later implement the same trait).
//!
//! Trusts the file or database the configuration names; trusts no key (it comes from an
//! SMTP client) and binds it as a parameter, never pastes it into SQL. Fails with
//! [`TempError`] when the table cannot be read now (missing file, syntax error with its
//! `file:line`, database locked or gone): mail then waits instead of bouncing.
//!
//! Attacks stopped: SQL injection through an address (the key is a bound parameter and the
//! query must have exactly one); a flat file edited into a broken state silently routing
//! with half its entries (a file with any bad line is not used at all, the previous good
//! copy is not kept either: lookups defer until it is fixed); two spellings of one key
//! (keys are folded to lowercase on both sides); a duplicate key overriding the one that
//! was reviewed (an error naming both lines).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::TempError;

/// A key-to-value lookup.
pub trait Table {
    /// `Ok(None)` when the key is not in the table.
    fn lookup(&self, key: &str) -> Result<Option<String>, TempError>;

    /// Reads the table now and reports what is wrong with it (for `config check` and
    /// `address test`); the default is a lookup of a key that never exists.
    fn check(&self) -> Result<(), TempError> {
        self.lookup("\0check").map(|_| ())
    }
}

/// What identifies one version of a file: a change to any field means reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// A file parsed into memory and parsed again when it changes (checked by `stat` on
/// every use: cheap, and an edit takes effect at the next lookup without a signal).
#[derive(Debug)]
pub(crate) struct Watched<T> {
    path: PathBuf,
    cache: Mutex<Option<(Stamp, Arc<T>)>>,
}

impl<T> Watched<T> {
    pub(crate) fn new(path: PathBuf) -> Self {
        Watched {
            path,
            cache: Mutex::new(None),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed file, reloaded through `parse` (text, path shown in errors) if it
    /// changed. A file that does not exist is `missing()`.
    pub(crate) fn get(
        &self,
        parse: impl Fn(&str, &str) -> Result<T, String>,
        missing: impl Fn() -> Result<T, String>,
    ) -> Result<Arc<T>, TempError> {
        let shown = self.path.display().to_string();
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return missing().map(Arc::new).map_err(TempError);
            }
            Err(e) => return Err(TempError::new(format!("{shown}: {e}"))),
        };
        let stamp = Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        };
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| TempError::new(format!("{shown}: cache poisoned")))?;
        if let Some((cached, value)) = cache.as_ref()
            && *cached == stamp
        {
            return Ok(Arc::clone(value));
        }
        *cache = None;
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| TempError::new(format!("{shown}: {e}")))?;
        let value = Arc::new(parse(&text, &shown).map_err(TempError)?);
        *cache = Some((stamp, Arc::clone(&value)));
        Ok(value)
    }
}

/// Parses `key value` lines: `#` starts a comment line, blank lines are ignored, the key
/// is the first word (folded to lowercase) and the value the rest of the line, trimmed.
/// Every problem is reported, each as `source:line: text`.
pub fn parse_flat(text: &str, source: &str) -> Result<HashMap<String, String>, String> {
    let mut map: HashMap<String, (usize, String)> = HashMap::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            errors.push(format!("{source}:{number}: a control character"));
            continue;
        }
        let Some((key, value)) = line.split_once([' ', '\t']) else {
            errors.push(format!("{source}:{number}: `{line}` has no value"));
            continue;
        };
        let key = key.to_lowercase();
        if let Some((first, _)) = map.get(&key) {
            errors.push(format!(
                "{source}:{number}: `{key}` is already defined at line {first}"
            ));
            continue;
        }
        map.insert(key, (number, value.trim().to_string()));
    }
    if errors.is_empty() {
        Ok(map.into_iter().map(|(k, (_, v))| (k, v)).collect())
    } else {
        Err(errors.join("; "))
    }
}

/// A flat file of `key value` lines, held in memory and reloaded when it changes. A file
/// that does not exist is a temporary error (the administrator named it; mail waits).
#[derive(Debug)]
pub struct FlatFile {
    file: Watched<HashMap<String, String>>,
}

impl FlatFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FlatFile {
            file: Watched::new(path.into()),
        }
    }
}

impl Table for FlatFile {
    fn lookup(&self, key: &str) -> Result<Option<String>, TempError> {
        let shown = self.file.path().display().to_string();
        let map = self
            .file
            .get(parse_flat, || Err(format!("{shown}: no such file")))?;
        Ok(map.get(&key.to_lowercase()).cloned())
    }
}

/// An SQLite table: `query` has exactly one `?`, bound to the key (lowercase); the first
/// column of the first row is the value (NULL is no value). The database is opened
/// read-only on first use and again after an error.
#[derive(Debug)]
pub struct SqliteTable {
    path: PathBuf,
    query: String,
    connection: Mutex<Option<rusqlite::Connection>>,
}

impl SqliteTable {
    /// No I/O: the database is opened at the first lookup or [`Table::check`].
    pub fn new(path: impl Into<PathBuf>, query: impl Into<String>) -> Self {
        SqliteTable {
            path: path.into(),
            query: query.into(),
            connection: Mutex::new(None),
        }
    }

    fn temp(&self, e: impl std::fmt::Display) -> TempError {
        TempError::new(format!("{}: {e}", self.path.display()))
    }

    fn open(&self) -> Result<rusqlite::Connection, TempError> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            rusqlite::Connection::open_with_flags(&self.path, flags).map_err(|e| self.temp(e))?;
        conn.busy_timeout(Duration::from_secs(1))
            .map_err(|e| self.temp(e))?;
        let stmt = conn
            .prepare_cached(&self.query)
            .map_err(|e| self.temp(format!("query {:?}: {e}", self.query)))?;
        if stmt.parameter_count() != 1 || stmt.column_count() < 1 {
            return Err(self.temp(format!(
                "query {:?} must have exactly one `?` parameter and return a column",
                self.query
            )));
        }
        drop(stmt);
        Ok(conn)
    }
}

impl Table for SqliteTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TempError> {
        let mut slot = self
            .connection
            .lock()
            .map_err(|_| self.temp("connection poisoned"))?;
        if slot.is_none() {
            *slot = Some(self.open()?);
        }
        let Some(conn) = slot.as_ref() else {
            return Err(self.temp("not open"));
        };
        let answer = (|| {
            let mut stmt = conn.prepare_cached(&self.query)?;
            let mut rows = stmt.query([key.to_lowercase()])?;
            match rows.next()? {
                Some(row) => row.get::<_, Option<String>>(0),
                None => Ok(None),
            }
        })();
        answer.map_err(|e| {
            // Reopen next time: the file may have been replaced.
            *slot = None;
            self.temp(e)
        })
    }

    fn check(&self) -> Result<(), TempError> {
        self.open().map(|_| ())
    }
}

/// A table in memory (tests, fixtures).
#[derive(Debug, Clone, Default)]
pub struct MapTable(pub HashMap<String, String>);

impl MapTable {
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        MapTable(
            pairs
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.to_string()))
                .collect(),
        )
    }
}

impl Table for MapTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TempError> {
        Ok(self.0.get(&key.to_lowercase()).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_lines_parse() {
        let ok =
            "# virtual users\n\njoe@example.org  joe\n@Example.ORG\tvmail maildir:/srv/vmail\n";
        let map = parse_flat(ok, "v").expect("parses");
        assert_eq!(map.get("joe@example.org").map(String::as_str), Some("joe"));
        assert_eq!(
            map.get("@example.org").map(String::as_str),
            Some("vmail maildir:/srv/vmail")
        );
        let rows = [
            ("lonely\n", "v:1: `lonely` has no value"),
            ("a b\nA c\n", "v:2: `a` is already defined at line 1"),
            ("a b\x1b\n", "v:1: a control character"),
        ];
        for (text, want) in rows {
            assert_eq!(parse_flat(text, "v"), Err(want.to_string()), "{text:?}");
        }
    }

    #[test]
    fn flat_file_reloads_when_changed_and_defers_when_broken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("virtual");
        let table = FlatFile::new(&path);
        assert!(table.lookup("a").is_err(), "missing file defers");
        std::fs::write(&path, "a one\n").expect("write");
        assert_eq!(table.lookup("A"), Ok(Some("one".into())));
        assert_eq!(table.lookup("b"), Ok(None));
        std::fs::write(&path, "a one\nb two-and-longer\n").expect("write");
        assert_eq!(table.lookup("b"), Ok(Some("two-and-longer".into())));
        std::fs::write(&path, "a one\nbroken\n").expect("write");
        let err = table.lookup("a").expect_err("broken file defers");
        assert!(err.0.ends_with("virtual:2: `broken` has no value"), "{err}");
    }

    #[test]
    fn sqlite_table_binds_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.db");
        let conn = rusqlite::Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE virtual (address TEXT PRIMARY KEY, target TEXT);
             INSERT INTO virtual VALUES ('joe@example.org', 'joe');
             INSERT INTO virtual VALUES ('@example.org', 'vmail maildir:/srv/vmail/x');
             INSERT INTO virtual VALUES ('null@example.org', NULL);",
        )
        .expect("fill");
        drop(conn);
        let table = SqliteTable::new(&path, "SELECT target FROM virtual WHERE address = ?");
        assert_eq!(table.check(), Ok(()));
        assert_eq!(table.lookup("Joe@Example.org"), Ok(Some("joe".into())));
        assert_eq!(table.lookup("nobody@example.org"), Ok(None));
        assert_eq!(table.lookup("null@example.org"), Ok(None));
        assert_eq!(table.lookup("' OR '1'='1"), Ok(None));
        for bad in [
            "SELECT target FROM virtual",
            "SELECT target FROM virtual WHERE address = ? OR address = ?",
            "SELECT nope FROM nowhere WHERE x = ?",
        ] {
            let t = SqliteTable::new(&path, bad);
            assert!(t.check().is_err(), "{bad}");
            assert!(t.lookup("joe@example.org").is_err(), "{bad}");
        }
        let gone = SqliteTable::new(dir.path().join("absent.db"), "SELECT 1 WHERE ? = 1");
        assert!(gone.lookup("x").is_err(), "a missing database defers");
    }
}
