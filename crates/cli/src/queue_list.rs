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

/// The listing, as the queue crate renders it (`cursus_queue::mailq`).
pub fn render(root: &Path) -> std::io::Result<String> {
    cursus_queue::mailq::render(root)
}

/// Prints the queue; the exit status.
pub fn run(name: &str) -> u8 {
    let root = spool_dir();
    if !root.is_dir() {
        eprintln!("{name}: no mail queue at {}", root.display());
        return crate::sendmail::exit::UNAVAILABLE;
    }
    match render(&root) {
        Ok(text) => {
            print!("{text}");
            crate::sendmail::exit::OK
        }
        Err(e) => {
            // Not ours to read (system mode): ask the daemon (its showq socket).
            if let Some(text) = root.parent().and_then(|d| showq(&d.join("showq.sock"))) {
                print!("{text}");
                return crate::sendmail::exit::OK;
            }
            eprintln!("{name}: {}: {e}", root.display());
            crate::sendmail::exit::UNAVAILABLE
        }
    }
}

/// The listing from the running daemon's showq socket, if it answers.
fn showq(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut stream = std::os::unix::net::UnixStream::connect(path).ok()?;
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    (!text.is_empty()).then_some(text)
}
