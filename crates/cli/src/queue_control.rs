//! `cursus queue list|hold|release|delete|flush`: the administrator's view of cursusd's
//! queue. Listing reads the spool directly (as mailq does); every change is a request on the
//! daemon's control socket, because the spool belongs to the running daemon (it holds the
//! queue's lock) and a change made beside it could race a delivery in flight.
//!
//! Trusts the daemon's answers only as text to print. The daemon checks who is asking
//! (SO_PEERCRED: root or its own user); this side adds nothing to that.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{QueueArgs, QueueCommand};
use crate::sendmail::exit;

/// The data directory: the one given, else $CURSUS_DATA_DIR, else /var/spool/cursus when it
/// exists, else the single-user default.
pub fn data_dir(given: Option<&Path>) -> PathBuf {
    if let Some(d) = given {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("CURSUS_DATA_DIR") {
        return PathBuf::from(d);
    }
    let system = PathBuf::from("/var/spool/cursus");
    if system.join("queue").is_dir() {
        return system;
    }
    crate::sendmail::default_data_dir()
}

/// Sends one command line to the daemon's control socket; its answer line.
pub fn request(data_dir: &Path, line: &str) -> Result<String, String> {
    let path = data_dir.join("control.sock");
    let stream = UnixStream::connect(&path).map_err(|e| {
        format!(
            "cannot reach cursusd at {}: {e} (is it running, and are you root or its user?)",
            path.display()
        )
    })?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut writer = &stream;
    writer
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if answer.is_empty() {
        return Err(format!(
            "{}: cursusd closed the connection (only root and the daemon's user may use it)",
            path.display()
        ));
    }
    Ok(answer.trim_end().to_string())
}

/// Runs `cursus queue ...`; the exit status.
pub fn run(args: &QueueArgs) -> u8 {
    let dir = data_dir(args.data_dir.as_deref());
    let (verb, ids) = match &args.command {
        QueueCommand::List => {
            let root = dir.join("queue");
            if !root.is_dir() {
                eprintln!("cursus queue: no mail queue at {}", root.display());
                return exit::UNAVAILABLE;
            }
            return match crate::queue_list::write(&root) {
                Ok(_) => exit::OK,
                Err(e) => {
                    eprintln!("cursus queue: {}: {e}", root.display());
                    exit::UNAVAILABLE
                }
            };
        }
        QueueCommand::Hold { ids } => ("hold", ids),
        QueueCommand::Release { ids } => ("release", ids),
        QueueCommand::Delete { ids } => ("delete", ids),
        QueueCommand::Flush { ids } => ("flush", ids),
    };
    // Ids are words on one line: anything else would be a second command.
    if let Some(bad) = ids
        .iter()
        .find(|i| i.is_empty() || !i.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        eprintln!("cursus queue: {bad:?} is not a queue id");
        return exit::USAGE;
    }
    let mut line = verb.to_string();
    for id in ids {
        line.push(' ');
        line.push_str(id);
    }
    match request(&dir, &line) {
        Ok(answer) => match answer.strip_prefix("ok ") {
            Some(text) => {
                println!("{text}");
                exit::OK
            }
            None => {
                eprintln!(
                    "cursus queue: {}",
                    answer.strip_prefix("error ").unwrap_or(&answer)
                );
                1
            }
        },
        Err(e) => {
            eprintln!("cursus queue: {e}");
            exit::UNAVAILABLE
        }
    }
}
