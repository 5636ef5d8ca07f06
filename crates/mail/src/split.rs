//! Splitting the message an MTA pipes to us as it arrives: line ends, the mbox `From ` line,
//! the header section and the body. Pure: the caller reads, this decides where each byte
//! goes (cursus-mailbox's `read_message` spools the body; the front of cursus-deliver writes
//! it straight into the mailbox file).
//!
//! Trusts nothing: the bytes come from the sender. CRLF becomes LF; a lone CR and every
//! other byte (8-bit, NUL) is kept. The header section is capped at [`HEADER_LIMIT`]; the
//! body goes to the [`BodySink`] as it comes, so memory stays bounded.

use crate::fromline::sender_from_line;
use crate::header::is_field_start;
use crate::prelude::*;

/// The most header bytes kept in memory for inspection; beyond this the rest of the message
/// is treated as body (it is still stored byte for byte, only loop detection stops looking).
pub const HEADER_LIMIT: usize = 1 << 20;
/// The longest first line examined for a `From ` line.
const FROM_LINE_LIMIT: usize = 64 << 10;

/// Where the body goes.
pub trait BodySink {
    type Error;
    /// Takes the next body bytes.
    fn put(&mut self, data: &[u8]) -> Result<(), Self::Error>;
}

/// Bodies kept in memory (tests, and a front that moves each chunk on at once).
impl BodySink for Vec<u8> {
    type Error = core::convert::Infallible;
    fn put(&mut self, data: &[u8]) -> Result<(), Self::Error> {
        self.extend_from_slice(data);
        Ok(())
    }
}

/// A message split into its parts.
#[derive(Debug)]
pub struct Split<B> {
    /// The sender named by a leading mbox `From ` line, which was removed.
    pub from_line_sender: Option<String>,
    /// The header section, including the empty line that ends it when there is one.
    pub header: Vec<u8>,
    /// The input did not start with a header field: a separator line must follow the
    /// header fields we add, or the first line of text would be read as a header.
    pub starts_with_body: bool,
    pub body: B,
}

enum Stage {
    FirstLine,
    Header,
    Body,
}

pub struct Splitter<B: BodySink> {
    stage: Stage,
    pending_cr: bool,
    first: Vec<u8>,
    from_line_sender: Option<String>,
    header: Vec<u8>,
    header_first_line_checked: bool,
    starts_with_body: bool,
    body: B,
}

impl<B: BodySink> Splitter<B> {
    /// A splitter that sends the body to `body`.
    pub fn new(body: B) -> Self {
        Splitter {
            stage: Stage::FirstLine,
            pending_cr: false,
            first: Vec::new(),
            from_line_sender: None,
            header: Vec::new(),
            header_first_line_checked: false,
            starts_with_body: false,
            body,
        }
    }

    /// True once the header section is complete (or given up on): what follows is body.
    pub fn in_body(&self) -> bool {
        matches!(self.stage, Stage::Body)
    }

    /// The header section read so far (complete once [`Splitter::in_body`]).
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The sender of a leading `From ` line, once the first line is read.
    pub fn from_line_sender(&self) -> Option<&str> {
        self.from_line_sender.as_deref()
    }

    /// See [`Split::starts_with_body`].
    pub fn starts_with_body(&self) -> bool {
        self.starts_with_body
    }

    /// The body sink, to take what it holds.
    pub fn body_mut(&mut self) -> &mut B {
        &mut self.body
    }

    /// Takes the next bytes of input. Converts CRLF to LF in `chunk` (a CR at the end of a chunk waits for the next one).
    pub fn feed_raw(&mut self, chunk: &[u8], scratch: &mut Vec<u8>) -> Result<(), B::Error> {
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
        let data = core::mem::take(scratch);
        let result = self.feed(&data);
        *scratch = data;
        result
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), B::Error> {
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
                    self.body.put(data)?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn end_first_line(&mut self) -> Result<(), B::Error> {
        let first = core::mem::take(&mut self.first);
        self.stage = Stage::Header;
        let line = first.strip_suffix(b"\n").unwrap_or(&first);
        if let Some(sender) = sender_from_line(line) {
            self.from_line_sender = Some(sender);
            return Ok(());
        }
        self.feed(&first)
    }

    /// Takes bytes into the header until the empty line; returns what belongs to the body.
    fn feed_header<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], B::Error> {
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

    fn move_header_to_body(&mut self) -> Result<(), B::Error> {
        let header = core::mem::take(&mut self.header);
        self.starts_with_body = true;
        self.stage = Stage::Body;
        self.body.put(&header)
    }

    /// Ends the input: the parts, with the body sink back.
    pub fn finish(mut self) -> Result<Split<B>, B::Error> {
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
        Ok(Split {
            from_line_sender: self.from_line_sender,
            header: self.header,
            starts_with_body: self.starts_with_body,
            body: self.body,
        })
    }
}
