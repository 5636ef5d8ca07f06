//! Queue ids: unique, sortable by arrival, safe as a file name, short enough for a log line.
//!
//! A queue id is 100 bits, written as 20 characters of Crockford base32 (`0-9A-Z` without
//! `I L O U`): 52 bits of microseconds since the Unix epoch (until the year 2112), a 16-bit
//! counter that keeps ids from one process strictly increasing even when the clock stands
//! still or steps back, and 32 random bits that keep two processes (or a process and its
//! predecessor after a clock step) apart. The spool also creates every file with O_EXCL,
//! so a collision is an error, never an overwrite.
//!
//! Trusts nothing in [`QueueId::parse`]: only the canonical spelling (20 upper-case
//! characters of the alphabet) is accepted, so each id has exactly one file
//! name and no text that reaches a path (`/`, `..`, NUL, a lower-case twin) can parse.

use std::fmt;
use std::sync::Mutex;

use jiff::Timestamp;

/// Crockford's base32 alphabet; its characters are in ASCII order, so the text of ids sorts
/// like their numbers.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in the text form.
pub const ID_LEN: usize = 20;
const TIME_BITS: u32 = 52;
const COUNTER_BITS: u32 = 16;
const RANDOM_BITS: u32 = 32;

/// A message's name in the queue and in every log line about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(u128);

impl QueueId {
    /// The greatest id (a bound for ranges).
    pub const MAX: QueueId = QueueId((1u128 << (TIME_BITS + COUNTER_BITS + RANDOM_BITS)) - 1);

    /// Builds an id from its parts; `micros` is cut to 52 bits.
    pub fn from_parts(micros: u64, counter: u16, random: u32) -> Self {
        let micros = u128::from(micros) & ((1u128 << TIME_BITS) - 1);
        QueueId(
            micros << (COUNTER_BITS + RANDOM_BITS)
                | u128::from(counter) << RANDOM_BITS
                | u128::from(random),
        )
    }

    /// A new id, greater than every id this process made before.
    pub fn generate() -> Self {
        static LAST: Mutex<(u64, u16)> = Mutex::new((0, 0));
        let now = Timestamp::now().as_microsecond().max(0) as u64;
        let mut random = [0u8; 4];
        // getrandom fails only without any entropy source; the counter alone still keeps
        // this process's ids unique, and O_EXCL catches the rest.
        let _ = getrandom::fill(&mut random);
        let (micros, counter) = {
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            if now > last.0 {
                *last = (now, 0);
            } else if last.1 == u16::MAX {
                *last = (last.0 + 1, 0);
            } else {
                last.1 += 1;
            }
            *last
        };
        QueueId::from_parts(micros, counter, u32::from_be_bytes(random))
    }

    /// When the id was made (to the microsecond).
    pub fn arrival(self) -> Timestamp {
        let micros = (self.0 >> (COUNTER_BITS + RANDOM_BITS)) as i64;
        Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// The spool bucket (0-255) that holds the message's files. It is taken from the time
    /// part, about one second per bucket and 256 buckets round, so that messages accepted
    /// at the same moment share one directory and one directory fsync (group commit), while
    /// a queue filled over minutes spreads evenly.
    pub fn bucket(self) -> u8 {
        let micros = self.0 >> (COUNTER_BITS + RANDOM_BITS);
        ((micros >> 20) & 0xFF) as u8
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    pub fn from_u128(value: u128) -> Option<Self> {
        (value >> (TIME_BITS + COUNTER_BITS + RANDOM_BITS) == 0).then_some(QueueId(value))
    }

    /// Parses the canonical text form; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != ID_LEN {
            return None;
        }
        let mut value: u128 = 0;
        for &b in bytes {
            let digit = ALPHABET.iter().position(|&a| a == b)? as u128;
            // 20 characters carry 100 bits exactly: no overflow, every value is canonical.
            value = value << 5 | digit;
        }
        QueueId::from_u128(value)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; ID_LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (ID_LEN - 1 - i);
            *slot = ALPHABET[((self.0 >> shift) & 0x1F) as usize];
        }
        // The alphabet is ASCII.
        f.write_str(std::str::from_utf8(&out).unwrap_or("?"))
    }
}

impl std::str::FromStr for QueueId {
    type Err = InvalidQueueId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueId::parse(s).ok_or(InvalidQueueId)
    }
}

/// Text that is not a canonical queue id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidQueueId;

impl fmt::Display for InvalidQueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a queue id (20 characters of 0-9A-Z without I, L, O, U)")
    }
}

impl std::error::Error for InvalidQueueId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let table: &[(u64, u16, u32, &str)] = &[
            (0, 0, 0, "00000000000000000000"),
            ((1 << 52) - 1, u16::MAX, u32::MAX, "ZZZZZZZZZZZZZZZZZZZZ"),
            (1_700_000_000_000_000, 1, 2, "C2H430F4000004000002"),
        ];
        for &(micros, counter, random, text) in table {
            let id = QueueId::from_parts(micros, counter, random);
            assert_eq!(id.to_string(), text);
            assert_eq!(QueueId::parse(text), Some(id));
            assert_eq!(text.parse::<QueueId>(), Ok(id));
        }
    }

    #[test]
    fn only_the_canonical_spelling_parses() {
        for bad in [
            "",
            "0000000000000000000",
            "000000000000000000000",
            "0000000000000000000a",
            "0000000000000000000I",
            "0000000000000000000L",
            "0000000000000000000O",
            "0000000000000000000U",
            "../00000000000000000",
            "000000000000000000/0",
            "00000000000000000\u{0}00",
            "ÉÉ000000000000000000",
        ] {
            assert_eq!(QueueId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_sort_by_arrival_in_number_and_text() {
        let mut previous = QueueId::generate();
        for _ in 0..10_000 {
            let next = QueueId::generate();
            assert!(next > previous);
            assert!(next.to_string() > previous.to_string());
            assert!(next.arrival() >= previous.arrival());
            previous = next;
        }
        let a = QueueId::from_parts(5, u16::MAX, u32::MAX);
        let b = QueueId::from_parts(6, 0, 0);
        assert!(a < b && a.to_string() < b.to_string());
    }

    #[test]
    fn arrival_and_bucket_come_from_the_time() {
        let id = QueueId::from_parts(1_700_000_000_123_456, 9, 9);
        assert_eq!(id.arrival().as_microsecond(), 1_700_000_000_123_456);
        assert_eq!(id.bucket(), ((1_700_000_000_123_456u64 >> 20) & 0xFF) as u8);
        let now = QueueId::generate();
        let age = Timestamp::now().as_microsecond() - now.arrival().as_microsecond();
        assert!((0..60_000_000).contains(&age));
    }
}
