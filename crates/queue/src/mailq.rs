//! The mail queue as Postfix's mailq shows it, read straight from the spool without the
//! queue's lock (journals are append-only, so a reader sees a consistent prefix; a torn
//! last record is ignored, as recovery does). Used by `mailq` when it can read the spool,
//! and by cursusd's `showq` socket for users who cannot.
//!
//! Trusts the spool's owner; reads only. An unreadable bucket is an error, never an empty
//! queue.

use std::path::{Path, PathBuf};

use crate::state::RecipientState;

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
            let Ok(replay) = crate::journal::replay(&text) else {
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
