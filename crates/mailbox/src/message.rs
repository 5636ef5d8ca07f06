//! What gets stored: the header lines the MDA adds, the original header section, the body.
//!
//! Trusts: the MDA to have converted CRLF to LF already; otherwise the bytes are arbitrary
//! (8-bit, NUL, no final newline). The header section is stored as given: if it ends with the
//! blank line that separates it from the body, that line is part of `header`; the writers put
//! nothing between the parts.
//! Fails: `write_to` returns the first error of the writer or of the spooled body.

use std::io::{self, Write};

use crate::spool::Spooled;

/// One message as the mailbox writers see it.
#[derive(Debug)]
pub struct Message {
    /// Header lines added by the MDA (Return-Path, Delivered-To, ...), LF line ends.
    pub prefix: Vec<u8>,
    /// The original header section, LF line ends.
    pub header: Vec<u8>,
    /// The body.
    pub body: Spooled,
}

impl Message {
    /// Bytes stored in a maildir or MH file: prefix + header + body.
    pub fn size(&self) -> u64 {
        self.prefix.len() as u64 + self.header.len() as u64 + self.body.len()
    }

    /// Number of LF bytes in all three parts.
    pub fn lf_count(&self) -> u64 {
        count_lf(&self.prefix) + count_lf(&self.header) + self.body.lf_count()
    }

    /// The RFC 822 size (IMAP RFC822.SIZE): every LF counted as CRLF.
    pub fn rfc822_size(&self) -> u64 {
        self.size() + self.lf_count()
    }

    /// Writes exactly the stored bytes: prefix, header, body.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.prefix)?;
        out.write_all(&self.header)?;
        self.body.copy_to(out)
    }
}

pub(crate) fn count_lf(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bytes() {
        let m = Message {
            prefix: b"Return-Path: <a@b>\n".to_vec(),
            header: b"Subject: x\n\n".to_vec(),
            body: Spooled::from_bytes(b"hi\nno newline".to_vec()),
        };
        let mut out = Vec::new();
        m.write_to(&mut out).expect("write");
        assert_eq!(out, b"Return-Path: <a@b>\nSubject: x\n\nhi\nno newline");
        assert_eq!(m.size(), out.len() as u64);
        assert_eq!(m.lf_count(), 4);
        assert_eq!(m.rfc822_size(), out.len() as u64 + 4);
    }
}
