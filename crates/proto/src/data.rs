//! Message content: DATA dot-unstuffing, the end-of-data rule, and the bare CR/LF guard.
//!
//! Trusts nothing: every byte comes from the client. The decoders are byte-level state
//! machines, so the result never depends on how the input was split into reads.
//! Fails: never; a bare CR or LF is reported ([`Decoded::BareNewline`]) and the session
//! refuses the message.
//!
//! The rule (SMTP smuggling, CVE-2023-51764/51765/51766; oracles.md §2):
//! - Only `CR LF . CR LF` ends DATA, where the first CR LF is the end of the previous line
//!   (or of the DATA command). `\n.\n`, `\r.\r`, `\r\n.\n`, `\n.\r\n`, `\r\n.\r`,
//!   `\r\n\x00.\r\n` and every other spelling are content.
//! - A bare LF (not after CR) or a bare CR (not before LF) anywhere in DATA content makes the
//!   message refused with `550 5.6.0` once it ends; it is never normalised. A message we
//!   accept therefore has only CRLF line ends, and relaying it onward with DATA cannot smuggle.
//! - BDAT content is framed by length, so it has no end-of-data ambiguity; a body not
//!   declared `BODY=BINARYMIME` is still held to the same bare CR/LF rule ([`BareScan`]), so
//!   the invariant above holds for BDAT too. BINARYMIME content passes untouched.
//! - A line that begins with `.` loses that dot (RFC 5321 §4.5.2).

/// Where the DATA decoder is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// After CR LF (or at the start of the content).
    LineStart,
    /// Inside a line.
    Text,
    /// After a CR inside a line (already passed on).
    Cr,
    /// The line began with a dot, which was dropped.
    Dot,
    /// The line is `.` CR so far; the CR is held back, since `.` CR LF ends the data.
    DotCr,
}

/// Why a call to [`DataDecoder::decode`] stopped before the end of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// All input was consumed; the message goes on.
    More,
    /// `CR LF . CR LF` was consumed; the message is complete.
    End,
    /// A bare CR or LF was consumed (the first one of this message).
    BareNewline,
}

/// Decodes DATA content: strips dot-stuffing and finds the end of data.
#[derive(Clone, Debug)]
pub(crate) struct DataDecoder {
    state: State,
    bare_seen: bool,
}

impl DataDecoder {
    pub(crate) fn new() -> Self {
        DataDecoder {
            state: State::LineStart,
            bare_seen: false,
        }
    }

    /// Decodes from `input` into `out`; returns how many bytes were consumed and why it
    /// stopped. It stops right after the end of data and right after the first bare CR or
    /// LF, so the caller sees both at the same byte whatever the chunking.
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Decoded) {
        for (i, &b) in input.iter().enumerate() {
            let mut bare = false;
            self.state = match (self.state, b) {
                (State::LineStart, b'.') => State::Dot,
                (State::LineStart | State::Text | State::Dot, b'\r') => {
                    if self.state == State::Dot {
                        State::DotCr
                    } else {
                        out.push(b);
                        State::Cr
                    }
                }
                (State::LineStart | State::Text | State::Dot, b'\n') => {
                    bare = true;
                    out.push(b);
                    State::Text
                }
                (State::LineStart | State::Text | State::Dot, _) => {
                    out.push(b);
                    State::Text
                }
                (State::Cr, b'\n') => {
                    out.push(b);
                    State::LineStart
                }
                (State::Cr, b'\r') => {
                    bare = true;
                    out.push(b);
                    State::Cr
                }
                (State::Cr, _) => {
                    bare = true;
                    out.push(b);
                    State::Text
                }
                (State::DotCr, b'\n') => {
                    self.state = State::LineStart;
                    return (i + 1, Decoded::End);
                }
                (State::DotCr, b'\r') => {
                    bare = true;
                    out.push(b'\r');
                    out.push(b);
                    State::Cr
                }
                (State::DotCr, _) => {
                    bare = true;
                    out.push(b'\r');
                    out.push(b);
                    State::Text
                }
            };
            if bare && !self.bare_seen {
                self.bare_seen = true;
                return (i + 1, Decoded::BareNewline);
            }
        }
        (input.len(), Decoded::More)
    }
}

/// Watches BDAT content (not BINARYMIME) for bare CR and LF across chunk boundaries.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BareScan {
    after_cr: bool,
}

impl BareScan {
    /// The index of the byte at which the first bare CR or LF in `chunk` shows (a bare LF
    /// itself, or the byte after a bare CR), given what came before it.
    pub(crate) fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        for (i, &b) in chunk.iter().enumerate() {
            let bare = match (self.after_cr, b) {
                (true, b'\n') => {
                    self.after_cr = false;
                    false
                }
                (true, b'\r') => true,
                (true, _) => {
                    self.after_cr = false;
                    true
                }
                (false, b'\r') => {
                    self.after_cr = true;
                    false
                }
                (false, b'\n') => true,
                (false, _) => false,
            };
            if bare {
                return Some(i);
            }
        }
        None
    }

    /// True if the content ended on a CR (a bare CR, since no LF can follow).
    pub(crate) fn ends_bare(&self) -> bool {
        self.after_cr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes everything at once; returns the content, whether the data ended and where,
    /// and whether a bare CR/LF was seen.
    fn decode_all(input: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
        let mut d = DataDecoder::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut bare = false;
        while pos < input.len() {
            let (n, why) = d.decode(&input[pos..], &mut out);
            pos += n;
            match why {
                Decoded::End => return (out, Some(pos), bare),
                Decoded::BareNewline => bare = true,
                Decoded::More => {}
            }
        }
        (out, None, bare)
    }

    #[test]
    fn dot_unstuffing_and_the_end_of_data() {
        let table: &[(&[u8], &[u8], Option<usize>)] = &[
            (b".\r\n", b"", Some(3)),
            (b"a\r\n.\r\n", b"a\r\n", Some(6)),
            (b"..\r\n.\r\n", b".\r\n", Some(7)),
            (b"..a\r\n.b\r\n.\r\nX", b".a\r\nb\r\n", Some(12)),
            (b"a.\r\n.\r\n", b"a.\r\n", Some(7)),
            (b"a\r\n. \r\n.\r\n", b"a\r\n \r\n", Some(10)),
            (b"no end\r\n", b"no end\r\n", None),
        ];
        for (input, content, end) in table {
            let (out, got_end, bare) = decode_all(input);
            assert_eq!(out, *content, "input {input:?}");
            assert_eq!(got_end, *end, "input {input:?}");
            assert!(!bare, "input {input:?}");
        }
    }

    /// Every end-of-data spelling in oracles.md §2 (and the smtp-smuggling scanners') that is
    /// not CRLF.CRLF is content, and makes the message refused.
    #[test]
    fn smuggling_variants_never_end_data() {
        // (variant, holds a bare CR or LF)
        let variants: &[(&[u8], bool)] = &[
            (b"\n.\n", true),
            (b"\n.\r\n", true),
            (b"\r.\r", true),
            (b"\r.\r\n", true),
            (b"\r\n.\n", true),
            (b"\r\n.\r", true),
            (b"\r\n.\rX", true),
            (b"\n.\r", true),
            (b"\r\n\x00.\r\n", false),
            (b"\r\n.\x00\r\n", false),
            (b"\r\n \r\n.\n", true),
            (b"\n\n.\n\n", true),
            (b"\r\r\n.\r\r\n", true),
        ];
        for (v, want_bare) in variants {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"MAIL FROM:<a@b.example>\r\n");
            let (_, end, _) = decode_all(&input);
            assert_eq!(end, None, "variant {v:?} ended the data");
            // Then the real end arrives: only there does the data end.
            input.extend_from_slice(b"\r\n.\r\n");
            let (_, end, bare) = decode_all(&input);
            assert_eq!(end, Some(input.len()), "variant {v:?}");
            assert_eq!(bare, *want_bare, "variant {v:?}");
        }
    }

    #[test]
    fn bare_newlines_are_flagged_where_they_are() {
        let table: &[(&[u8], bool)] = &[
            (b"a\r\nb\r\n", false),
            (b"a\nb\r\n", true),
            (b"a\rb\r\n", true),
            (b"a\r\r\n", true),
            (b"\n", true),
            (b".\n", true),
            (b"\r\n.\rx", true),
            (b"8bit \xff\xfe\r\n", false),
            (b"nul \x00\r\n", false),
        ];
        for (input, want) in table {
            let (_, _, bare) = decode_all(input);
            assert_eq!(bare, *want, "input {input:?}");
        }
    }

    #[test]
    fn bare_scan_crosses_chunk_boundaries() {
        let mut s = BareScan::default();
        assert_eq!(s.scan(b"a\r"), None);
        assert!(s.ends_bare());
        assert_eq!(s.scan(b"\nb"), None);
        assert!(!s.ends_bare());
        let mut s = BareScan::default();
        assert_eq!(s.scan(b"a\r"), None);
        assert_eq!(s.scan(b"b"), Some(0));
        let mut s = BareScan::default();
        assert_eq!(s.scan(b"a\nb"), Some(1));
        let mut s = BareScan::default();
        assert_eq!(s.scan(b"ab\r\r\n"), Some(3));
    }
}
