//! Maildir file names: the unique part, the host part, the `,S=`/`,W=` sizes and the `:2,`
//! flags (mda-interface §3.1).
//!
//! Trusts: the clock, the pid, the OS random source and `gethostname()`; the host name is
//! escaped because it is whatever the administrator (or DHCP) set.
//! Fails: [`unique_name`] fails only when the random source does; everything else is pure.
//!
//! Uniqueness: `<sec>.M<usec>P<pid>Q<n>R<16 hex random>.<host>`: the time and pid separate
//! processes, the process-wide counter separates deliveries inside one process (threads), and
//! 64 random bits cover pid reuse within a microsecond and clones of a machine with the same
//! host name. The host part never contains `/` (a path), `:` (the info separator), `,` (the
//! size fields), bytes below 0x21 or above 0x7e, and never starts with `.`, so the name matches
//! `^[^./:][^/:]*$` (readers skip names starting with a dot).

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use cursus_mail::maildir_name::{escape_host, final_name, unique_from};

/// Deliveries made by this process, for the `Q` field.
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// The escaped host name of this machine, computed once.
pub fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let raw = nix::unistd::gethostname()
            .map(|h| h.into_encoded_bytes())
            .unwrap_or_default();
        escape_host(&raw)
    })
}

/// A new unique name `<sec>.M<usec>P<pid>Q<n>R<16 hex>.<host>`.
pub fn unique_name() -> io::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed) + 1;
    let mut random = [0u8; 8];
    random_bytes(&mut random)?;
    Ok(unique_from(
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        u64::from_be_bytes(random),
        host(),
    ))
}

/// Fills `buf` from the OS random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf).map_err(|e| match e.raw_os_error() {
        Some(raw) => io::Error::from_raw_os_error(raw),
        None => io::Error::other(format!("random source: {e}")),
    })
}

/// The name in `cur/`: `<name>:2,<flags>`.
pub fn with_flags(name: &str, flags: &str) -> String {
    format!("{name}:2,{flags}")
}

/// Maildir info flags in ASCII order without duplicates. Only ASCII letters are flags
/// (`DFPRST` and Dovecot's keyword letters `a`-`z`); the second value is true when something
/// else was given and dropped.
pub fn normalize_flags(flags: &str) -> (String, bool) {
    let mut kept: Vec<u8> = flags.bytes().filter(u8::is_ascii_alphabetic).collect();
    let dropped = kept.len() != flags.len();
    kept.sort_unstable();
    kept.dedup();
    (kept.into_iter().map(char::from).collect(), dropped)
}

/// The `,S=<size>` value of a maildir file name, if present (before any `:` info part).
pub fn size_from_name(name: &str) -> Option<u64> {
    let base = name.split(':').next()?;
    base.split(',')
        .skip(1)
        .find_map(|field| field.strip_prefix("S=")?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_escaping_table() {
        let table: &[(&[u8], &str)] = &[
            (b"mail.example.org", "mail.example.org"),
            (b"a/b", "a\\057b"),
            (b"a:b", "a\\072b"),
            (b"a,b", "a\\054b"),
            (b"a b", "a\\040b"),
            (b"a\tb\0", "a\\011b\\000"),
            (b"a\\b", "a\\134b"),
            (b"\x7f\xff", "\\177\\377"),
            (b".hidden", "\\056hidden"),
            (b"x.", "x."),
            (b"", "localhost"),
        ];
        for (raw, want) in table {
            assert_eq!(escape_host(raw), *want, "{raw:?}");
        }
        let long = escape_host(&[b'/'; 64]);
        assert!(long.len() <= 100 && long.len().is_multiple_of(4), "{long}");
    }

    /// Checks `^\d+\.M\d+P\d+Q\d+R[0-9a-f]{16}\.[^/:]+$` by hand.
    fn well_formed(name: &str) -> bool {
        let Some((sec, rest)) = name.split_once('.') else {
            return false;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(sec) {
            return false;
        }
        let Some((id, host)) = rest.split_once('.') else {
            return false;
        };
        let Some(id) = id.strip_prefix('M') else {
            return false;
        };
        let Some((usec, id)) = id.split_once('P') else {
            return false;
        };
        let Some((pid, id)) = id.split_once('Q') else {
            return false;
        };
        let Some((n, random)) = id.split_once('R') else {
            return false;
        };
        digits(usec)
            && digits(pid)
            && digits(n)
            && random.len() == 16
            && random
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && !host.is_empty()
            && !host.contains(['/', ':'])
    }

    #[test]
    fn unique_names_are_well_formed_and_distinct() {
        let a = unique_name().expect("name");
        let b = unique_name().expect("name");
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(well_formed(name), "{name}");
            assert!(!name.starts_with('.') && name.len() < 200, "{name}");
            assert!(
                name.contains(&format!("P{}Q", std::process::id())),
                "{name}"
            );
        }
        for bad in [
            "x.M1P2Q3R0123456789abcdef.h",
            "1.M1P2Q3R0123.h",
            "1.M1P2Q3R0123456789abcdef.",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn final_names_and_flags() {
        assert_eq!(final_name("1.M2P3Q4R5.h", 20, 22), "1.M2P3Q4R5.h,S=20,W=22");
        assert_eq!(with_flags("n,S=1,W=2", "FS"), "n,S=1,W=2:2,FS");
        let table: &[(&str, &str, bool)] = &[
            ("SF", "FS", false),
            ("SSFF", "FS", false),
            ("TSRPFD", "DFPRST", false),
            ("Sa", "Sa", false),
            ("", "", false),
            ("S:/,F", "FS", true),
            ("\\Seen", "Sen", true),
        ];
        for (input, want, dropped) in table {
            assert_eq!(
                normalize_flags(input),
                (want.to_string(), *dropped),
                "{input:?}"
            );
        }
    }

    #[test]
    fn size_is_read_from_names() {
        let table: &[(&str, Option<u64>)] = &[
            ("1.M2P3.h,S=20,W=22", Some(20)),
            ("1.M2P3.h,W=22,S=21:2,S", Some(21)),
            ("1.M2P3.h:2,S", None),
            ("1.M2P3.h,S=x", None),
            ("1.M2P3.h:2,S=5", None),
        ];
        for (name, want) in table {
            assert_eq!(size_from_name(name), *want, "{name}");
        }
    }
}
