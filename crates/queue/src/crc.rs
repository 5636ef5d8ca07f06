//! CRC-32 (IEEE 802.3, the zlib/PNG polynomial) for journal records.
//!
//! Trusts nothing and cannot fail. It is not a defence against an attacker (anyone who can
//! write the spool can forge a checksum); it detects a record torn by a crash in the middle
//! of an append, or bytes the disk returned wrong, so that replay stops before them instead
//! of reading garbage as a recipient's state.

/// The byte-at-a-time table, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// A running checksum: `Crc32::new().update(a).update(b).finish()` equals `crc32(a ++ b)`.
#[derive(Clone, Copy, Debug)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}

impl Crc32 {
    pub const fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }

    pub fn update(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 = TABLE[((self.0 ^ u32::from(b)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
        self
    }

    pub const fn finish(self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

/// The CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    Crc32::new().update(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Check values from the CRC catalogue (CRC-32/ISO-HDLC) and zlib.
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(crc32(&[0, 0, 0, 0]), 0x2144_DF1C);
    }

    #[test]
    fn running_equals_whole() {
        let whole = crc32(b"hello, world");
        let parts = Crc32::new().update(b"hello").update(b", world").finish();
        assert_eq!(whole, parts);
    }
}
