//! Outgoing message content on the wire: CRLF line ends (for DATA and BDAT) and
//! dot-stuffing (for DATA, RFC 5321 §4.5.2).
//!
//! Trusts nothing about the input's line ends: a bare LF or CR becomes CRLF, so no line of
//! the message can end DATA early or be read differently by the next hop (SMTP smuggling).
//! Never fails.

/// The content with CRLF line ends (a bare LF or a bare CR becomes CRLF), ending in CRLF.
pub fn canonical(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 50 + 2);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// DATA content: canonical line ends, a dot doubled at the start of every line (RFC 5321
/// §4.5.2); the terminating `.CRLF` is not included.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let canon = canonical(body);
    let mut out = Vec::with_capacity(canon.len() + 64);
    let mut line_start = true;
    for &b in &canon {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}
