//! String-level checks and transforms for the compiler: encoded-character decoding
//! (RFC 5228 §2.4.2.4), variable reference splitting (RFC 5229 §3), and the validity of
//! header field names and values, mailbox names and metadata annotation names.
//!
//! Trusts nothing: inputs are script strings. Invalid encodings are left as they are
//! (as RFC 5228 asks) or reported as errors; nothing here panics.

use crate::error::{CompileError, CompileErrors};
use crate::script::{Piece, Value};
use crate::validate;

/// Header names allowed in the address test (RFC 5228 §5.1 and Pigeonhole's list).
pub fn is_address_header(name: &str) -> bool {
    const H: &[&str] = &[
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "resent-reply-to",
        "return-path",
        "delivered-to",
        "envelope-to",
        "errors-to",
        "for-approval",
        "for-handling",
        "for-comment",
        "apparently-to",
        "original-recipient",
        "disposition-notification-to",
        "x-beenthere",
        "approved",
        "mail-followup-to",
        "mail-reply-to",
        "original-from",
        "original-sender",
        "original-reply-to",
        "original-to",
        "x-original-to",
        "x-envelope-to",
        "x-envelope-from",
    ];
    H.contains(&name.to_ascii_lowercase().as_str())
}

/// An annotation name for the metadata tests: "/private/..." or "/shared/..." (RFC 5464).
pub fn valid_annotation(name: &str) -> bool {
    let rest = name
        .strip_prefix("/private/")
        .or_else(|| name.strip_prefix("/shared/"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && !r.ends_with('/')
            && !r.contains("//")
            && !r.contains(['*', '%'])
            && !r.chars().any(char::is_control)
    })
}

/// A header field name: printable ASCII except colon (RFC 5322 §3.6.8).
pub fn valid_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// A header field value for addheader: no control characters other than white space
/// and line breaks (which are re-folded).
pub fn valid_field_value(v: &str) -> bool {
    v.chars()
        .all(|c| !c.is_control() || c == '\t' || c == '\r' || c == '\n')
}

/// Mailbox names: valid UTF-8 (guaranteed by type), no NUL or control characters, bounded.
pub fn check_mailbox_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("control characters");
    }
    if name.len() > 1024 {
        return Err("name too long");
    }
    Ok(())
}

/// Decode `${hex:..}` and `${unicode:..}` sequences (RFC 5228 §2.4.2.4).
pub fn decode_encoded(s: &str) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i..i + 2) == Some(b"${")
            && let Some((decoded, used)) = encoded_at(s.get(i + 2..).unwrap_or(""))?
        {
            out.extend_from_slice(&decoded);
            i += 2 + used;
            continue;
        }
        out.push(bytes.get(i).copied().unwrap_or(b' '));
        i += 1;
    }
    // Invalid UTF-8 is kept visible as U+FFFD; mailbox names with it are refused later.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Try one encoded sequence after `${`; returns bytes and how much of `rest` it used.
fn encoded_at(rest: &str) -> Result<Option<(Vec<u8>, usize)>, String> {
    let Some(close) = rest.find('}') else {
        return Ok(None);
    };
    let inner = rest.get(..close).unwrap_or("");
    let Some((kind, data)) = inner.split_once(':') else {
        return Ok(None);
    };
    let kind = kind.to_ascii_lowercase();
    let words: Vec<&str> = data
        .split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
        .collect();
    match kind.as_str() {
        "hex" => {
            if words.is_empty() {
                return Ok(None);
            }
            let mut out = Vec::new();
            for w in words {
                if w.len() % 2 != 0 || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Ok(None);
                }
                let mut k = 0;
                while k < w.len() {
                    let Some(Ok(b)) = w.get(k..k + 2).map(|h| u8::from_str_radix(h, 16)) else {
                        return Ok(None);
                    };
                    out.push(b);
                    k += 2;
                }
            }
            Ok(Some((out, close + 1)))
        }
        "unicode" => {
            if words.is_empty() {
                return Ok(None);
            }
            let mut out = String::new();
            for w in words {
                if w.is_empty() || w.len() > 8 || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Ok(None);
                }
                let Ok(v) = u32::from_str_radix(w, 16) else {
                    return Ok(None);
                };
                match char::from_u32(v) {
                    Some(c) => out.push(c),
                    None => {
                        return Err(format!(
                            "invalid unicode character 0x{w} in encoded character substitution"
                        ));
                    }
                }
            }
            Ok(Some((out.into_bytes(), close + 1)))
        }
        _ => Ok(None),
    }
}

/// Split a string into literal and `${variable}` pieces (RFC 5229 §3).
pub fn split_variables(s: &str, max_match: usize) -> Value {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(idx) = rest.find("${") {
        lit.push_str(rest.get(..idx).unwrap_or(""));
        let after = rest.get(idx + 2..).unwrap_or("");
        let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'));
        let parsed = match end {
            Some(e) if after.get(e..e + 1) == Some("}") => {
                let name = after.get(..e).unwrap_or("");
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    // Numeric: a match variable (leading zeros allowed).
                    let n = name.trim_start_matches('0');
                    let n: usize = if n.is_empty() {
                        0
                    } else {
                        n.parse().unwrap_or(usize::MAX)
                    };
                    Some((
                        if n < max_match.max(10) {
                            Some(Piece::Match(n))
                        } else {
                            None
                        },
                        e + 1,
                    ))
                } else if !name.is_empty() && name.split('.').all(validate::is_identifier) {
                    Some((Some(Piece::Var(name.to_ascii_lowercase())), e + 1))
                } else {
                    None
                }
            }
            _ => None,
        };
        match parsed {
            Some((piece, used)) => {
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                if let Some(p) = piece {
                    pieces.push(p);
                }
                rest = after.get(used..).unwrap_or("");
            }
            None => {
                lit.push_str("${");
                rest = after;
            }
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Value { pieces }
}

/// Compile-time error text of a failed compile, for tests.
pub fn first_error(e: &CompileErrors) -> String {
    e.0.first().map(CompileError::to_string).unwrap_or_default()
}
