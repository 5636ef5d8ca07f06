//! `mailq` / `sendmail -bp` / `cursus sendmail -bp`: the queue as Postfix's mailq shows it,
//! read straight from the spool without taking the daemon's lock (journals are append-only,
//! so a reader sees a consistent prefix; a torn last record is ignored, as recovery does).
//!
//! Trusts the spool's owner; reads only. Fails with exit 69 when the spool cannot be read.

use std::path::{Path, PathBuf};

use cursus_queue::RecipientState;

/// The spool directory: `$CURSUS_DATA_DIR/queue`, else /var/spool/cursus/queue when it
/// exists, else the single-user default.
pub fn spool_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CURSUS_DATA_DIR") {
        return PathBuf::from(d).join("queue");
    }
    let system = PathBuf::from("/var/spool/cursus/queue");
    if system.is_dir() {
        return system;
    }
    crate::sendmail::default_data_dir().join("queue")
}

/// One line per message and recipient, in arrival order within each bucket.
pub fn render(root: &Path) -> std::io::Result<String> {
    let mut out = String::new();
    let mut count = 0usize;
    let mut bytes = 0u64;
    out.push_str("-Queue ID-            --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    for bucket in 0..=255u8 {
        let dir = root.join(format!("{bucket:02x}"));
        let mut journals: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // An unreadable bucket (another user's spool) is an error, never an empty queue.
            Err(e) => return Err(e),
        };
        journals.sort();
        for path in journals {
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let Ok(replay) = cursus_queue::journal::replay(&text) else {
                continue;
            };
            let m = replay.message;
            if m.is_removable() {
                continue;
            }
            count += 1;
            bytes += m.size;
            let arrival = m
                .envelope
                .received
                .to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%a %b %e %H:%M:%S")
                .to_string();
            let mark = if m.held { "!" } else { "" };
            out.push_str(&format!(
                "{:<21} {:>8} {:<20} {}\n",
                format!("{}{mark}", m.id),
                m.size,
                arrival,
                m.envelope.sender.address().unwrap_or("MAILER-DAEMON")
            ));
            for (state, rcpt) in m.recipients.iter().zip(&m.envelope.recipients) {
                match state {
                    RecipientState::Deferred { status, text, .. } => {
                        out.push_str(&format!("{:52}({status} {text})\n", ""));
                        out.push_str(&format!("{:52}{}\n", "", rcpt.address));
                    }
                    RecipientState::Pending => {
                        out.push_str(&format!("{:52}{}\n", "", rcpt.address));
                    }
                    _ => {}
                }
            }
            out.push('\n');
        }
    }
    if count == 0 {
        return Ok("Mail queue is empty\n".to_string());
    }
    out.push_str(&format!(
        "-- {} Kbytes in {count} Request{}.\n",
        bytes.div_ceil(1024),
        if count == 1 { "" } else { "s" }
    ));
    Ok(out)
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
            eprintln!("{name}: {}: {e}", root.display());
            crate::sendmail::exit::UNAVAILABLE
        }
    }
}
