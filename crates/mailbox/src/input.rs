//! Reading the message an MTA pipes to us into a [`ReadMessage`]: cursus-mail's
//! [`Splitter`] decides line ends, the mbox `From ` line, the header section and the body;
//! the body goes to a spool that spills to an unlinked file, so a 20 MB message costs about
//! the same memory as a 2 KB one.
//!
//! Input is always read to EOF (OpenSMTPD treats unread input after exit 0 as a failure;
//! Postfix would see EPIPE).

use std::io::{self, Read, Write};
use std::path::Path;

use crate::spool::{SpoolWriter, Spooled};
pub use cursus_mail::split::HEADER_LIMIT;
use cursus_mail::split::{BodySink, Splitter};

/// Body bytes kept in memory before the spool spills to a file.
pub const MEMORY_LIMIT: usize = 256 << 10;

impl BodySink for SpoolWriter {
    type Error = io::Error;
    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data)
    }
}

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

/// Reads the whole input. `spill_dir` holds the unlinked spool file for large bodies.
pub fn read_message(input: &mut dyn Read, spill_dir: &Path) -> io::Result<ReadMessage> {
    let mut splitter = Splitter::new(SpoolWriter::new(MEMORY_LIMIT, spill_dir));
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
    let split = splitter.finish()?;
    Ok(ReadMessage {
        from_line_sender: split.from_line_sender,
        header: split.header,
        starts_with_body: split.starts_with_body,
        body: split.body.finish()?,
    })
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
