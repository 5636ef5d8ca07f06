//! Character sets and transfer encodings: base64, quoted-printable, and decoding of the
//! common charsets (UTF-8, US-ASCII, ISO-8859-1/15, Windows-1252) to UTF-8.
//!
//! Trusts nothing: input is message bytes. Invalid base64 characters are skipped, invalid
//! quoted-printable escapes are kept literally, unknown charsets and invalid UTF-8 decode
//! lossily. Nothing here fails or panics.

/// Decode base64, skipping characters outside the alphabet.
pub fn base64_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    out
}

/// Encode base64 with lines of at most 76 characters joined by CRLF.
pub fn base64_encode(input: &[u8]) -> String {
    const ALPHA: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    let mut line = 0;
    for chunk in input.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        let idx = |s: u32| char::from(ALPHA.get(((n >> s) & 63) as usize).copied().unwrap_or(b'A'));
        out.push(idx(18));
        out.push(idx(12));
        out.push(if chunk.len() > 1 { idx(6) } else { '=' });
        out.push(if chunk.len() > 2 { idx(0) } else { '=' });
        line += 4;
        if line >= 76 {
            out.push_str("\r\n");
            line = 0;
        }
    }
    out
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decode quoted-printable; `header` selects the RFC 2047 "Q" variant (`_` is space).
pub fn qp_decode(input: &[u8], header: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        match c {
            b'=' => {
                let a = input.get(i + 1).copied();
                let b = input.get(i + 2).copied();
                if a == Some(b'\r') && b == Some(b'\n') {
                    i += 3;
                    continue;
                }
                if a == Some(b'\n') {
                    i += 2;
                    continue;
                }
                match (a.and_then(hexval), b.and_then(hexval)) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'='),
                }
            }
            b'_' if header => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

const CP1252: [u16; 32] = [
    0x20ac, 0x81, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x8d, 0x017d, 0x8f, 0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
    0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x9d, 0x017e, 0x0178,
];

/// Decode `bytes` in `charset` to a UTF-8 string.
pub fn decode(charset: &str, bytes: &[u8]) -> String {
    let cs = charset.trim().to_ascii_lowercase();
    match cs.as_str() {
        "iso-8859-1" | "latin1" | "iso8859-1" | "l1" => {
            bytes.iter().map(|&b| char::from(b)).collect()
        }
        "iso-8859-15" | "latin9" => bytes
            .iter()
            .map(|&b| match b {
                0xa4 => '€',
                0xa6 => 'Š',
                0xa8 => 'š',
                0xb4 => 'Ž',
                0xb8 => 'ž',
                0xbc => 'Œ',
                0xbd => 'œ',
                0xbe => 'Ÿ',
                b => char::from(b),
            })
            .collect(),
        "windows-1252" | "cp1252" => bytes
            .iter()
            .map(|&b| {
                if (0x80..0xa0).contains(&b) {
                    CP1252
                        .get(usize::from(b - 0x80))
                        .and_then(|&u| char::from_u32(u32::from(u)))
                        .unwrap_or('\u{fffd}')
                } else {
                    char::from(b)
                }
            })
            .collect(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Encode a header value as RFC 2047 words when it is not plain ASCII.
pub fn encode_header_word(s: &str) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return s.to_string();
    }
    let mut out = String::new();
    // Split at character boundaries into chunks of at most 45 bytes.
    let mut chunk = String::new();
    let flush = |chunk: &mut String, out: &mut String| {
        if chunk.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("=?utf-8?b?");
        out.push_str(&base64_encode(chunk.as_bytes()).replace("\r\n", ""));
        out.push_str("?=");
        chunk.clear();
    };
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            flush(&mut chunk, &mut out);
        }
        chunk.push(c);
    }
    flush(&mut chunk, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(base64_decode(b"aGVsbG8="), b"hello");
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(qp_decode(b"a=3Db=\r\nc", false), b"a=bc");
        assert_eq!(qp_decode(b"a_b", true), b"a b");
        assert_eq!(decode("iso-8859-1", &[0x63, 0xe9]), "cé");
        assert_eq!(decode("windows-1252", &[0x80]), "€");
        assert_eq!(
            base64_decode(base64_encode(b"\x00\xff\x10").as_bytes()),
            b"\x00\xff\x10"
        );
    }
}
