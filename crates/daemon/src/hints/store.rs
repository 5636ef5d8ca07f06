//! The hints database: DATA_DIR/hints.db, SQLite in WAL mode, one row per host, per
//! domain and per address, and the list of messages waiting for a destination. Times are
//! Unix seconds given by the caller (the tests drive the clock).
//!
//! Trusts nothing in the file beyond its types: a row is a hint, never a decision on its
//! own (hints/decision.rs weighs it against the message). Fails with `rusqlite::Error`;
//! [`Store::open`] moves a file SQLite cannot read (corrupt, not a database, a newer
//! schema it cannot use) aside as `hints.db.bad` and starts an empty one, since losing
//! hints loses no mail.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

/// What is known about one host (an MX host or a relay, by name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostRow {
    pub name: String,
    /// When the host failed EHLO (5xx, or closed or timed out in reply to it).
    pub helo_only_since: Option<i64>,
    pub updated: i64,
}

/// What is known about one domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainRow {
    pub name: String,
    /// Whether the last lookup found no MX (address records only).
    pub no_mx: bool,
    /// Start of the current run of refused connections (cleared by any other outcome).
    pub refused_since: Option<i64>,
    pub updated: i64,
}

/// What is known about one recipient address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressRow {
    pub address: String,
    /// When a message to it bounced after timing out (cleared by a delivery).
    pub timeout_bounce: Option<i64>,
    pub last_delivered: Option<i64>,
    /// The last observed read of its mailbox (the Maildir's cur/ modification time).
    pub mailbox_read: Option<i64>,
    pub updated: i64,
}

/// An open hints database.
pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS host (
    name TEXT PRIMARY KEY,
    helo_only_since INTEGER,
    updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS domain (
    name TEXT PRIMARY KEY,
    no_mx INTEGER NOT NULL DEFAULT 0,
    refused_since INTEGER,
    updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS address (
    address TEXT PRIMARY KEY,
    timeout_bounce INTEGER,
    last_delivered INTEGER,
    mailbox_read INTEGER,
    updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS waiting (
    destination TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (destination, queue_id)
);
";

impl Store {
    /// Opens (creating) the database at `path`. A file that is not a usable database is
    /// renamed to `<path>.bad` and replaced; the second return value says so.
    pub fn open(path: &Path) -> Result<(Store, Option<String>), rusqlite::Error> {
        match Store::open_once(path) {
            Ok(s) => Ok((s, None)),
            // Someone holds a lock (an administrator's sqlite3 shell), or the disk is full:
            // the file is fine, the hints are off until the next try.
            Err(
                e @ rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error {
                        code:
                            rusqlite::ErrorCode::DatabaseBusy
                            | rusqlite::ErrorCode::DatabaseLocked
                            | rusqlite::ErrorCode::DiskFull,
                        ..
                    },
                    _,
                ),
            ) => Err(e),
            Err(first) => {
                let aside = path.with_extension("db.bad");
                let _ = std::fs::rename(path, &aside);
                for suffix in ["-wal", "-shm"] {
                    let mut p = path.as_os_str().to_owned();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
                let store = Store::open_once(path)?;
                Ok((
                    store,
                    Some(format!(
                        "{}: {first}; moved aside to {} and started empty",
                        path.display(),
                        aside.display()
                    )),
                ))
            }
        }
    }

    /// Opens read-only, for `cursus retry test` (nothing is created or repaired).
    pub fn open_read_only(path: &Path) -> Result<Store, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(200))?;
        Ok(Store { conn })
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Store, rusqlite::Error> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    fn open_once(path: &Path) -> Result<Store, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_millis(500))?;
        // A hint store: WAL for concurrent readers, NORMAL sync (a crash may lose the
        // last hints, never mail).
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "journal mode {mode}, not wal"
            )));
        }
        conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
        conn.execute_batch(SCHEMA)?;
        // Reading every table proves the file is a database we can use.
        conn.query_row("SELECT count(*) FROM host", [], |r| r.get::<_, i64>(0))?;
        conn.query_row("SELECT count(*) FROM address", [], |r| r.get::<_, i64>(0))?;
        Ok(Store { conn })
    }

    pub fn host(&self, name: &str) -> Result<Option<HostRow>, rusqlite::Error> {
        self.conn
            .query_row(
                "SELECT name, helo_only_since, updated FROM host WHERE name = ?1",
                params![name.to_ascii_lowercase()],
                |r| {
                    Ok(HostRow {
                        name: r.get(0)?,
                        helo_only_since: r.get(1)?,
                        updated: r.get(2)?,
                    })
                },
            )
            .optional()
    }

    pub fn set_helo_only(&self, name: &str, now: i64) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "INSERT INTO host (name, helo_only_since, updated) VALUES (?1, ?2, ?2)
             ON CONFLICT(name) DO UPDATE SET helo_only_since = ?2, updated = ?2",
            params![name.to_ascii_lowercase(), now],
        )?;
        Ok(())
    }

    pub fn domain(&self, name: &str) -> Result<Option<DomainRow>, rusqlite::Error> {
        self.conn
            .query_row(
                "SELECT name, no_mx, refused_since, updated FROM domain WHERE name = ?1",
                params![name.to_ascii_lowercase()],
                |r| {
                    Ok(DomainRow {
                        name: r.get(0)?,
                        no_mx: r.get::<_, i64>(1)? != 0,
                        refused_since: r.get(2)?,
                        updated: r.get(3)?,
                    })
                },
            )
            .optional()
    }

    /// A connection to the domain was refused: the run of refusals starts now unless it
    /// is already running.
    pub fn domain_refused(&self, name: &str, no_mx: bool, now: i64) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "INSERT INTO domain (name, no_mx, refused_since, updated) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(name) DO UPDATE SET no_mx = ?2,
                 refused_since = COALESCE(refused_since, ?3), updated = ?3",
            params![name.to_ascii_lowercase(), i64::from(no_mx), now],
        )?;
        Ok(())
    }

    /// Anything but a refusal ends the run.
    pub fn domain_answered(
        &self,
        name: &str,
        no_mx: bool,
        now: i64,
    ) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "INSERT INTO domain (name, no_mx, refused_since, updated) VALUES (?1, ?2, NULL, ?3)
             ON CONFLICT(name) DO UPDATE SET no_mx = ?2, refused_since = NULL, updated = ?3",
            params![name.to_ascii_lowercase(), i64::from(no_mx), now],
        )?;
        Ok(())
    }

    pub fn address(&self, address: &str) -> Result<Option<AddressRow>, rusqlite::Error> {
        self.conn
            .query_row(
                "SELECT address, timeout_bounce, last_delivered, mailbox_read, updated
                 FROM address WHERE address = ?1",
                params![address.to_lowercase()],
                |r| {
                    Ok(AddressRow {
                        address: r.get(0)?,
                        timeout_bounce: r.get(1)?,
                        last_delivered: r.get(2)?,
                        mailbox_read: r.get(3)?,
                        updated: r.get(4)?,
                    })
                },
            )
            .optional()
    }

    pub fn address_timeout_bounce(&self, address: &str, now: i64) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "INSERT INTO address (address, timeout_bounce, updated) VALUES (?1, ?2, ?2)
             ON CONFLICT(address) DO UPDATE SET timeout_bounce = ?2, updated = ?2",
            params![address.to_lowercase(), now],
        )?;
        Ok(())
    }

    /// A delivery succeeded: any timeout bounce is forgotten (noted on a known address
    /// only).
    pub fn address_delivered(&self, address: &str, now: i64) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "UPDATE address SET timeout_bounce = NULL, last_delivered = ?2, updated = ?2
             WHERE address = ?1",
            params![address.to_lowercase(), now],
        )?;
        Ok(())
    }

    pub fn address_mailbox_read(
        &self,
        address: &str,
        read: i64,
        now: i64,
    ) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "INSERT INTO address (address, mailbox_read, updated) VALUES (?1, ?2, ?3)
             ON CONFLICT(address) DO UPDATE SET mailbox_read = ?2, updated = ?3",
            params![address.to_lowercase(), read, now],
        )?;
        Ok(())
    }

    /// A message could not reach `destination`; it waits for it.
    pub fn wait(&self, destination: &str, queue_id: &str, now: i64) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "INSERT INTO waiting (destination, queue_id, since) VALUES (?1, ?2, ?3)
             ON CONFLICT(destination, queue_id) DO NOTHING",
            params![destination, queue_id, now],
        )?;
        Ok(())
    }

    /// The messages waiting for `destination` (and `except` no longer), removed from the list.
    pub fn take_waiting(
        &mut self,
        destination: &str,
        except: &str,
    ) -> Result<Vec<String>, rusqlite::Error> {
        let tx = self.conn.transaction()?;
        let ids = {
            let mut st = tx.prepare(
                "SELECT queue_id FROM waiting WHERE destination = ?1 AND queue_id != ?2
                 ORDER BY since",
            )?;
            st.query_map(params![destination, except], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?
        };
        tx.execute(
            "DELETE FROM waiting WHERE destination = ?1",
            params![destination],
        )?;
        tx.commit()?;
        Ok(ids)
    }

    /// Every address with a timeout bounce.
    pub fn marked_addresses(&self) -> Result<Vec<String>, rusqlite::Error> {
        let mut st = self
            .conn
            .prepare("SELECT address FROM address WHERE timeout_bounce IS NOT NULL")?;
        st.query_map([], |r| r.get::<_, String>(0))?.collect()
    }

    /// Every destination some message waits for.
    pub fn waiting_destinations(&self) -> Result<Vec<String>, rusqlite::Error> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT destination FROM waiting")?;
        st.query_map([], |r| r.get::<_, String>(0))?.collect()
    }

    /// How many messages wait for `destination`.
    pub fn waiting_count(&self, destination: &str) -> Result<i64, rusqlite::Error> {
        self.conn.query_row(
            "SELECT count(*) FROM waiting WHERE destination = ?1",
            params![destination],
            |r| r.get(0),
        )
    }

    /// Host rows whose name is `domain` or below it (for `cursus retry test`).
    pub fn hosts_of(&self, domain: &str) -> Result<Vec<HostRow>, rusqlite::Error> {
        let domain = domain.to_ascii_lowercase();
        let mut st = self.conn.prepare(
            "SELECT name, helo_only_since, updated FROM host
             WHERE name = ?1 OR name LIKE '%.' || ?1 ORDER BY name",
        )?;
        st.query_map(params![domain], |r| {
            Ok(HostRow {
                name: r.get(0)?,
                helo_only_since: r.get(1)?,
                updated: r.get(2)?,
            })
        })?
        .collect()
    }

    /// Removes what is too old to matter: rows not updated for `keep` seconds, HELO marks
    /// older than `helo_memory`, timeout bounces older than `bounce_memory`, waiting
    /// entries older than `keep`. Returns the number of rows removed or cleared.
    pub fn tidy(
        &mut self,
        now: i64,
        keep: i64,
        helo_memory: i64,
        bounce_memory: i64,
    ) -> Result<usize, rusqlite::Error> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        let old = now.saturating_sub(keep);
        n += tx.execute(
            "UPDATE host SET helo_only_since = NULL WHERE helo_only_since < ?1",
            params![now.saturating_sub(helo_memory)],
        )?;
        n += tx.execute(
            "UPDATE address SET timeout_bounce = NULL WHERE timeout_bounce < ?1",
            params![now.saturating_sub(bounce_memory)],
        )?;
        for table in ["host", "domain", "address"] {
            n += tx.execute(
                &format!("DELETE FROM {table} WHERE updated < ?1"),
                params![old],
            )?;
        }
        n += tx.execute("DELETE FROM waiting WHERE since < ?1", params![old])?;
        tx.commit()?;
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);");
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_delivery_clears_the_timeout_bounce() {
        let s = Store::in_memory().expect("db");
        s.address_timeout_bounce("Joe@Example.org", 100).expect("w");
        let row = s.address("joe@example.org").expect("r").expect("row");
        assert_eq!(row.timeout_bounce, Some(100));
        s.address_delivered("joe@example.org", 200).expect("w");
        let row = s.address("joe@example.org").expect("r").expect("row");
        assert_eq!((row.timeout_bounce, row.last_delivered), (None, Some(200)));
    }

    #[test]
    fn a_refusal_run_keeps_its_start_until_something_else_happens() {
        let s = Store::in_memory().expect("db");
        s.domain_refused("nomx.example", true, 10).expect("w");
        s.domain_refused("nomx.example", true, 20).expect("w");
        let d = s.domain("nomx.example").expect("r").expect("row");
        assert_eq!((d.no_mx, d.refused_since), (true, Some(10)));
        s.domain_answered("nomx.example", true, 30).expect("w");
        assert_eq!(
            s.domain("nomx.example")
                .expect("r")
                .expect("row")
                .refused_since,
            None
        );
    }

    #[test]
    fn waiting_messages_are_taken_once() {
        let mut s = Store::in_memory().expect("db");
        for (id, t) in [("A", 1), ("B", 2), ("C", 3)] {
            s.wait("smtp:mx:late.example:25", id, t).expect("w");
        }
        s.wait("smtp:mx:other.example:25", "D", 1).expect("w");
        let got = s.take_waiting("smtp:mx:late.example:25", "B").expect("t");
        assert_eq!(got, vec!["A".to_string(), "C".to_string()]);
        assert!(
            s.take_waiting("smtp:mx:late.example:25", "")
                .expect("t")
                .is_empty()
        );
        assert_eq!(s.waiting_count("smtp:mx:other.example:25").expect("c"), 1);
    }

    #[test]
    fn tidy_forgets_old_rows_and_old_marks() {
        let mut s = Store::in_memory().expect("db");
        s.set_helo_only("gone.example", 0).expect("w");
        s.set_helo_only("old.example", 500).expect("w");
        s.set_helo_only("new.example", 900).expect("w");
        s.address_timeout_bounce("a@x.example", 0).expect("w");
        s.address_mailbox_read("b@x.example", 10, 10).expect("w");
        let n = s.tidy(1000, 600, 200, 200).expect("tidy");
        assert!(n >= 2, "{n}");
        // Not updated for `keep`: removed; a HELO mark older than its memory: cleared.
        assert!(s.host("gone.example").expect("r").is_none());
        let old = s.host("old.example").expect("r").expect("row");
        assert_eq!(old.helo_only_since, None);
        assert_eq!(
            s.host("new.example")
                .expect("r")
                .expect("row")
                .helo_only_since,
            Some(900)
        );
        assert!(s.address("b@x.example").expect("r").is_none());
        assert!(s.address("a@x.example").expect("r").is_none());
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hints.db");
        std::fs::write(&path, vec![0x42u8; 8192]).expect("write");
        let (store, note) = Store::open(&path).expect("recreated");
        assert!(note.is_some_and(|n| n.contains("moved aside")));
        store.set_helo_only("mx.example", 1).expect("usable");
        assert!(dir.path().join("hints.db.bad").exists());
        drop(store);
        let (_, note) = Store::open(&path).expect("reopened");
        assert!(note.is_none());
    }
}
