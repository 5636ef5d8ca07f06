//! `mailq` / `sendmail -bp` / `cursus sendmail -bp`: the queue as Postfix's mailq shows it,
//! read straight from the spool without taking the daemon's lock (journals are append-only,
//! so a reader sees a consistent prefix; a torn last record is ignored, as recovery does).
//!
//! Trusts the spool's owner; reads only. Fails with exit 69 when the spool cannot be read.

use std::path::{Path, PathBuf};

/// The spool directory: `queue` in the data directory `cursus queue` uses
/// ([`crate::queue_control::data_dir`]).
pub fn spool_dir() -> PathBuf {
    crate::queue_control::data_dir(None).join("queue")
}

/// Writes the listing to standard output as the spool is read (`cursus_queue::mailq`).
/// Nothing is written when the first bucket cannot be read.
pub fn write(root: &Path) -> std::io::Result<usize> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    cursus_queue::mailq::write(root, &mut out)
}

/// Prints the queue; the exit status.
pub fn run(name: &str) -> u8 {
    let root = spool_dir();
    if !root.is_dir() {
        eprintln!("{name}: no mail queue at {}", root.display());
        return crate::sendmail::exit::UNAVAILABLE;
    }
    match write(&root) {
        Ok(_) => crate::sendmail::exit::OK,
        // The reader went away (`mailq | head`): not a failure of the queue.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => crate::sendmail::exit::OK,
        Err(e) => {
            // Not ours to read (system mode): ask the daemon (its showq socket). Nothing
            // was printed: the first bucket read is where the spool's permission stops us.
            if let Some(true) = root.parent().and_then(|d| showq(&d.join("showq.sock"))) {
                return crate::sendmail::exit::OK;
            }
            eprintln!("{name}: {}: {e}", root.display());
            crate::sendmail::exit::UNAVAILABLE
        }
    }
}

/// Copies the listing from the running daemon's showq socket to standard output: None
/// when no daemon answers, Some(false) when it closed without a word.
fn showq(path: &Path) -> Option<bool> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).ok()?;
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    let stdout = std::io::stdout();
    let copied = std::io::copy(&mut stream, &mut stdout.lock()).ok()?;
    Some(copied > 0)
}
