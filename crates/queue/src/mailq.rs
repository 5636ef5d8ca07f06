//! The mail queue as Postfix's mailq shows it, read straight from the spool without the
//! queue's lock (journals are append-only, so a reader sees a consistent prefix; a torn
//! last record is ignored, as recovery does). Used by `mailq` when it can read the spool,
//! and by cursusd's `showq` socket for users who cannot.
//!
//! The listing is written as it is read, one message at a time: a queue of a million
//! messages lists in bounded memory and its first lines appear at once.
//!
//! Trusts the spool's owner; reads only. An unreadable bucket is an error, never an empty
//! queue; nothing has been written when that error comes from the first bucket read.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::state::RecipientState;

const HEADER: &str =
    "-Queue ID-            --Size-- ----Arrival Time---- -Sender/Recipient-------\n";

/// Writes one line per message and recipient, in arrival order within each bucket, then
/// the total; "Mail queue is empty" when there is nothing. Returns the number of messages.
/// The header is written with the first message, so an error before it leaves `out`
/// untouched.
pub fn write(root: &Path, out: &mut dyn Write) -> std::io::Result<usize> {
    let mut count = 0usize;
    let mut bytes = 0u64;
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
            // Gone since the directory was read (delivered), or torn beyond its first
            // record: not listed, as the queue itself would not list it.
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
            if count == 0 {
                out.write_all(HEADER.as_bytes())?;
            }
            count += 1;
            bytes += m.size;
            let arrival = m
                .envelope
                .received
                .to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%a %b %e %H:%M:%S");
            let mark = if m.held { "!" } else { "" };
            writeln!(
                out,
                "{:<21} {:>8} {:<20} {}",
                format!("{}{mark}", m.id),
                m.size,
                arrival.to_string(),
                m.envelope.sender.address().unwrap_or("MAILER-DAEMON")
            )?;
            for (state, rcpt) in m.recipients.iter().zip(&m.envelope.recipients) {
                match state {
                    RecipientState::Deferred { status, text, .. } => {
                        writeln!(out, "{:52}({status} {text})", "")?;
                        writeln!(out, "{:52}{}", "", rcpt.address)?;
                    }
                    RecipientState::Pending => writeln!(out, "{:52}{}", "", rcpt.address)?,
                    _ => {}
                }
            }
            out.write_all(b"\n")?;
        }
    }
    if count == 0 {
        out.write_all(b"Mail queue is empty\n")?;
    } else {
        writeln!(
            out,
            "-- {} Kbytes in {count} Request{}.",
            bytes.div_ceil(1024),
            if count == 1 { "" } else { "s" }
        )?;
    }
    out.flush()?;
    Ok(count)
}
