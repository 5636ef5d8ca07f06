//! Reading the message an MTA pipes to us: line ends, the mbox `From ` line, the header
//! section and the body.
//!
//! Trusts nothing: the bytes come from the sender. Input is always read to EOF (OpenSMTPD
//! treats unread input after exit 0 as a failure; Postfix would see EPIPE). CRLF becomes LF;
//! a lone CR and every other byte (8-bit, NUL) is kept. Memory is bounded: the header
//! section is capped at [`HEADER_LIMIT`] and the body goes to a spool that spills to an
//! unlinked file, so a 20 MB message costs about the same memory as a 2 KB one.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::spool::{SpoolWriter, Spooled};
use cursus_mail::fromline::sender_from_line;
use cursus_mail::header::is_field_start;

/// The most header bytes kept in memory for inspection; beyond this the rest of the message
/// is treated as body (it is still stored byte for byte, only loop detection stops looking).
pub const HEADER_LIMIT: usize = 1 << 20;
/// Body bytes kept in memory before the spool spills to a file.
pub const MEMORY_LIMIT: usize = 256 << 10;
/// The longest first line examined for a `From ` line.
const FROM_LINE_LIMIT: usize = 64 << 10;

/// A message as read, ready for the trace headers to be put in front.
#[derive(Debug)]
pub struct ReadMessage {
    /// The sender named by a leading mbox `From ` line, which was removed.
    pub from_line_sender: Option<String>,
    /// The header section, including the empty line that ends it when there is one.
    pub header: Vec<u8>,
    /// The input did not start with a header field: a separator line must follow the
    /// header fields we add, or the first line of text would be read as a header.
    pub starts_with_body: bool,
    pub body: Spooled,
}

impl ReadMessage {
    pub fn is_empty(&self) -> bool {
        self.header.is_empty() && self.body.is_empty()
    }

    pub fn size(&self) -> u64 {
        self.header.len() as u64 + self.body.len()
    }
}

enum Stage {
    FirstLine,
    Header,
    Body,
}

struct Splitter {
    stage: Stage,
    pending_cr: bool,
    first: Vec<u8>,
    from_line_sender: Option<String>,
    header: Vec<u8>,
    header_first_line_checked: bool,
    starts_with_body: bool,
    body: SpoolWriter,
}

impl Splitter {
    fn new(spill_dir: &Path) -> Self {
        Splitter {
            stage: Stage::FirstLine,
            pending_cr: false,
            first: Vec::new(),
            from_line_sender: None,
            header: Vec::new(),
            header_first_line_checked: false,
            starts_with_body: false,
            body: SpoolWriter::new(MEMORY_LIMIT, spill_dir),
        }
    }

    /// Converts CRLF to LF in `chunk` (a CR at the end of a chunk waits for the next one).
    fn feed_raw(&mut self, chunk: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
        scratch.clear();
        let mut rest = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if rest.first() != Some(&b'\n') {
                scratch.push(b'\r');
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\r') {
            scratch.extend_from_slice(&rest[..i]);
            match rest.get(i + 1) {
                Some(b'\n') => {}
                Some(_) => scratch.push(b'\r'),
                None => self.pending_cr = true,
            }
            rest = &rest[i + 1..];
        }
        scratch.extend_from_slice(rest);
        let data = std::mem::take(scratch);
        let result = self.feed(&data);
        *scratch = data;
        result
    }

    fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.stage {
                Stage::FirstLine => {
                    let lf = data.iter().position(|&b| b == b'\n');
                    let take = lf.map_or(data.len(), |i| i + 1);
                    self.first.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if lf.is_some() || self.first.len() > FROM_LINE_LIMIT {
                        self.end_first_line()?;
                    }
                }
                Stage::Header => data = self.feed_header(data)?,
                Stage::Body => {
                    self.body.write_all(data)?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn end_first_line(&mut self) -> io::Result<()> {
        let first = std::mem::take(&mut self.first);
        self.stage = Stage::Header;
        let line = first.strip_suffix(b"\n").unwrap_or(&first);
        if let Some(sender) = sender_from_line(line) {
            self.from_line_sender = Some(sender);
            return Ok(());
        }
        self.feed(&first)
    }

    /// Takes bytes into the header until the empty line; returns what belongs to the body.
    fn feed_header<'a>(&mut self, data: &'a [u8]) -> io::Result<&'a [u8]> {
        let mut end = None;
        for (i, &b) in data.iter().enumerate() {
            let prev = if i == 0 {
                self.header.last().copied()
            } else {
                Some(data[i - 1])
            };
            if b == b'\n' && (prev == Some(b'\n') || (prev.is_none() && self.header.is_empty())) {
                end = Some(i + 1);
                break;
            }
        }
        let take = end
            .unwrap_or(data.len())
            .min(HEADER_LIMIT.saturating_sub(self.header.len()));
        self.header.extend_from_slice(&data[..take]);
        let first_lf = self.header.iter().position(|&b| b == b'\n');
        if let (false, Some(lf)) = (self.header_first_line_checked, first_lf) {
            self.header_first_line_checked = true;
            if lf > 0 && !is_field_start(&self.header[..lf]) {
                self.move_header_to_body()?;
                return Ok(&data[take..]);
            }
        }
        if end == Some(take) || self.header.len() >= HEADER_LIMIT {
            self.stage = Stage::Body;
        }
        Ok(&data[take..])
    }

    fn move_header_to_body(&mut self) -> io::Result<()> {
        let header = std::mem::take(&mut self.header);
        self.starts_with_body = true;
        self.stage = Stage::Body;
        self.body.write_all(&header)
    }

    fn finish(mut self) -> io::Result<ReadMessage> {
        if self.pending_cr {
            self.pending_cr = false;
            self.feed(b"\r")?;
        }
        if matches!(self.stage, Stage::FirstLine) && !self.first.is_empty() {
            self.end_first_line()?;
        }
        if !self.header_first_line_checked
            && !self.header.is_empty()
            && !is_field_start(&self.header)
        {
            self.move_header_to_body()?;
        }
        Ok(ReadMessage {
            from_line_sender: self.from_line_sender,
            header: self.header,
            starts_with_body: self.starts_with_body,
            body: self.body.finish()?,
        })
    }
}

/// Reads the whole input. `spill_dir` holds the unlinked spool file for large bodies.
pub fn read_message(input: &mut dyn Read, spill_dir: &Path) -> io::Result<ReadMessage> {
    let mut splitter = Splitter::new(spill_dir);
    let mut buf = vec![0u8; 64 << 10];
    let mut scratch = Vec::with_capacity(64 << 10);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        splitter.feed_raw(&buf[..n], &mut scratch)?;
    }
    splitter.finish()
}

/// Reads and discards the rest of the input, so the MTA never sees its write fail
/// because we exited early.
pub fn drain(input: &mut dyn Read) {
    let _ = io::copy(input, &mut io::sink());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], chunk: usize) -> ReadMessage {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let dir = std::env::temp_dir();
        read_message(&mut Chunked(input, chunk), &dir).expect("read")
    }

    fn body(m: &ReadMessage) -> Vec<u8> {
        let mut out = Vec::new();
        m.body.copy_to(&mut out).expect("copy");
        out
    }

    #[test]
    fn split_table_in_every_chunking() {
        struct Case {
            input: &'static [u8],
            sender: Option<&'static str>,
            header: &'static [u8],
            body: &'static [u8],
            starts_with_body: bool,
        }
        let cases = [
            Case {
                input: b"Subject: a\r\nFrom: b\r\n\r\nline\r\nbare\rcr\r\n",
                sender: None,
                header: b"Subject: a\nFrom: b\n\n",
                body: b"line\nbare\rcr\n",
                starts_with_body: false,
            },
            Case {
                input:
                    b"From alice@example.org  Sun Nov 22 08:59:06 2026\nSubject: a\n\nFrom here\n",
                sender: Some("alice@example.org"),
                header: b"Subject: a\n\n",
                body: b"From here\n",
                starts_with_body: false,
            },
            Case {
                input: b"Subject: only headers\n",
                sender: None,
                header: b"Subject: only headers\n",
                body: b"",
                starts_with_body: false,
            },
            Case {
                input: b"no header here\nSubject: x\n\nbody\n",
                sender: None,
                header: b"",
                body: b"no header here\nSubject: x\n\nbody\n",
                starts_with_body: true,
            },
            Case {
                input: b"\nbody after an empty header\n",
                sender: None,
                header: b"\n",
                body: b"body after an empty header\n",
                starts_with_body: false,
            },
            Case {
                input: b"Subject: no final newline\n\nbody",
                sender: None,
                header: b"Subject: no final newline\n\n",
                body: b"body",
                starts_with_body: false,
            },
            Case {
                input: b"X: nul\0byte\n\n\0\xff\xfe\r",
                sender: None,
                header: b"X: nul\0byte\n\n",
                body: b"\0\xff\xfe\r",
                starts_with_body: false,
            },
            Case {
                input: b"From MAILER-DAEMON Sun Nov 22 08:59:06 2026\r\n",
                sender: Some("MAILER-DAEMON"),
                header: b"",
                body: b"",
                starts_with_body: false,
            },
            Case {
                input: b"",
                sender: None,
                header: b"",
                body: b"",
                starts_with_body: false,
            },
            Case {
                input: b"plain text without newline",
                sender: None,
                header: b"",
                body: b"plain text without newline",
                starts_with_body: true,
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            for chunk in [1, 2, 3, 7, 64 << 10] {
                let m = read(c.input, chunk);
                assert_eq!(
                    m.from_line_sender.as_deref(),
                    c.sender,
                    "case {i} chunk {chunk}"
                );
                assert_eq!(m.header, c.header, "case {i} chunk {chunk}");
                assert_eq!(body(&m), c.body, "case {i} chunk {chunk}");
                assert_eq!(
                    m.starts_with_body, c.starts_with_body,
                    "case {i} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn oversized_header_continues_as_body_without_loss() {
        let mut input = b"X-Long: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', HEADER_LIMIT + 100));
        input.extend_from_slice(b"\n\nbody\n");
        let m = read(&input, 1 << 16);
        assert_eq!(m.header.len(), HEADER_LIMIT);
        let mut all = m.header.clone();
        all.extend(body(&m));
        assert_eq!(all, input);
    }
}
