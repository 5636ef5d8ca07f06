//! Maildir file names, the pure part (mda-interface §3.1): the unique name from its pieces,
//! the escaped host part, the `,S=`/`,W=` sizes. cursus-mailbox's `maildir_name` gathers the
//! pieces (clock, pid, counter, random bits, host name); the front of cursus-deliver
//! gathers them with its own system calls and names its files with these same functions.
//!
//! The host part never contains `/` (a path), `:` (the info separator), `,` (the size
//! fields), bytes below 0x21 or above 0x7e, and never starts with `.`, so the name matches
//! `^[^./:][^/:]*$` (readers skip names starting with a dot).

use crate::prelude::*;

/// Longest escaped host part; gethostname() allows 64 bytes, which could escape to 256.
const MAX_HOST: usize = 100;

/// Escapes a host name for a maildir file name: `/` → `\057`, `:` → `\072`, `,` → `\054`,
/// `\` → `\134`, bytes below 0x21 and above 0x7e → `\ooo`, a leading `.` → `\056`; empty
/// becomes `localhost`; capped at 100 bytes on an escape boundary.
pub fn escape_host(raw: &[u8]) -> String {
    let mut out = String::new();
    for (i, &b) in raw.iter().enumerate() {
        let piece = match b {
            b'/' | b':' | b',' | b'\\' => format!("\\{b:03o}"),
            b'.' if i == 0 => format!("\\{b:03o}"),
            0x21..=0x7e => char::from(b).to_string(),
            _ => format!("\\{b:03o}"),
        };
        if out.len() + piece.len() > MAX_HOST {
            break;
        }
        out.push_str(&piece);
    }
    if out.is_empty() {
        "localhost".to_string()
    } else {
        out
    }
}

/// The unique name `<sec>.M<usec>P<pid>Q<n>R<16 hex>.<host>`: the time and pid separate
/// processes, the counter `n` deliveries inside one process, and 64 random bits cover pid
/// reuse within a microsecond and clones of a machine with the same host name. `host` is
/// already escaped.
pub fn unique_from(secs: u64, micros: u32, pid: u32, n: u64, random: u64, host: &str) -> String {
    format!("{secs}.M{micros}P{pid}Q{n}R{random:016x}.{host}")
}

/// The name in `new/`: `<unique>,S=<size>,W=<rfc822 size>`.
pub fn final_name(unique: &str, size: u64, rfc822_size: u64) -> String {
    format!("{unique},S={size},W={rfc822_size}")
}
