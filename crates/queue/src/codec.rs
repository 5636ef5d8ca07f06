//! The byte encoding of journal payloads: fixed-width little-endian integers and
//! length-prefixed strings.
//!
//! Trusts nothing when decoding: every length is checked against the bytes that remain, so a
//! corrupt or forged payload ends in [`Truncated`] or [`Invalid`] and never in a panic or an
//! allocation larger than the record itself (a record is at most `journal::MAX_RECORD`).

use std::fmt;

use jiff::Timestamp;

/// Why a payload could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ended before a field did.
    Truncated,
    /// A field held a value that no encoder writes.
    Invalid(&'static str),
}

pub use DecodeError::{Invalid, Truncated};

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Truncated => f.write_str("record ends inside a field"),
            Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

/// Appends fields to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A timestamp, to the nanosecond (i128 nanoseconds since the epoch).
    pub fn time(&mut self, t: Timestamp) -> &mut Self {
        self.u128(t.as_nanosecond() as u128)
    }

    /// A string as a u32 length and its UTF-8 bytes. Callers keep strings far below 4 GiB
    /// (a record is bounded), so the length always fits.
    pub fn str(&mut self, s: &str) -> &mut Self {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.bytes.extend_from_slice(&s.as_bytes()[..len as usize]);
        self
    }

    /// An optional string: a presence byte, then the string.
    pub fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.u8(0),
            Some(s) => self.u8(1).str(s),
        }
    }
}

/// Reads fields from a payload, front to back.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    pub fn time(&mut self) -> Result<Timestamp, DecodeError> {
        Timestamp::from_nanosecond(self.u128()? as i128).map_err(|_| Invalid("timestamp"))
    }

    pub fn str(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Invalid("UTF-8 string"))
    }

    pub fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(Invalid("presence byte")),
        }
    }

    /// A count of items that each take at least `min_size` bytes; refusing counts the
    /// remaining bytes cannot hold stops a forged count from reserving a huge vector.
    pub fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size.max(1)) > self.rest.len() {
            return Err(Truncated);
        }
        Ok(n)
    }

    /// Succeeds only when every byte was consumed: trailing bytes mean a format we do not know.
    pub fn end(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Invalid("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::default();
        w.u8(7)
            .u32(0xDEAD_BEEF)
            .u64(u64::MAX)
            .u128(1 << 100)
            .str("é@x")
            .opt_str(None)
            .opt_str(Some(""));
        let mut r = Reader::new(&w.bytes);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u32(), Ok(0xDEAD_BEEF));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.u128(), Ok(1 << 100));
        assert_eq!(r.str().as_deref(), Ok("é@x"));
        assert_eq!(r.opt_str(), Ok(None));
        assert_eq!(r.opt_str(), Ok(Some(String::new())));
        assert_eq!(r.end(), Ok(()));
    }

    #[test]
    fn lies_about_lengths_are_refused() {
        let mut w = Writer::default();
        w.u32(1000).u8(b'a');
        assert_eq!(Reader::new(&w.bytes).str(), Err(Truncated));
        assert_eq!(Reader::new(&w.bytes).count(1), Err(Truncated));
        let mut r = Reader::new(&[0xFF, 0xFE, 0xFD]);
        assert_eq!(r.u32(), Err(Truncated));
        let mut w = Writer::default();
        w.u32(2).bytes.extend_from_slice(&[0xC3, 0x28]);
        assert_eq!(Reader::new(&w.bytes).str(), Err(Invalid("UTF-8 string")));
        assert_eq!(Reader::new(&[2]).opt_str(), Err(Invalid("presence byte")));
    }
}
