//! The request and answer frames between cursusd and cursus-lda: versioned, length-prefixed
//! binary, never a text grammar across the privilege boundary. No I/O: [`encode_request`]
//! and [`encode_answer`] return bytes; [`decode_request`] and [`decode_answer`] take bytes
//! and return a value with the number of bytes it used, [`Decoded::NeedMore`], or a
//! [`FrameError`]. The message itself never travels in a frame; it is passed as a file
//! descriptor next to it.
//!
//! Frame layout (all integers big-endian):
//!
//! ```text
//! u32 length     bytes that follow (version..end), 2 ..= MAX_FRAME - 4
//! u8  version    VERSION (1)
//! u8  type       0x01 deliver, 0x02 filter, 0x03 read-forward, 0x04 ping,
//!                0x05 deliver-many (requests)
//!                0x81 outcome, 0x82 filter, 0x83 forward, 0x84 pong, 0x85 error,
//!                0x86 outcome over quota with the Maildir's last read time,
//!                0x87 outcomes, one per message of a deliver-many (answers)
//! ... payload    string: u16 length + UTF-8; optional: u8 0/1 then the value;
//!                list: u16 count then the items; bool: u8 0/1
//! ```
//!
//! Trusts nothing: every length is checked against the frame and against a fixed limit
//! before anything is allocated, every tag and flag byte against its known values, every
//! path with [`MailPath::parse`]. Fails with a typed [`FrameError`]; the service answers
//! with an error frame and closes the connection.
//!
//! Attacks stopped: a huge length prefix making the root process allocate or wait for
//! gigabytes (refused from the first four bytes); a string or list count pointing past the
//! frame (read out of bounds or mis-framing the next request); trailing bytes that a
//! second parser might read differently (smuggling); an unknown version or type being
//! guessed at instead of refused; non-UTF-8 or control characters reaching logs and
//! bounces; unknown option bits silently ignored when a newer peer meant them.

use std::fmt;

use cursus_mail::{EnhancedStatus, OutcomeKind};

use crate::destination::{Destination, MailPath, PathError};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The largest frame, length prefix included.
pub const MAX_FRAME: usize = 64 * 1024;
/// The longest string field in bytes (paths and addresses fit; PATH_MAX is 4096).
pub const MAX_STRING: usize = 4096;
/// The longest outcome text in bytes: the status words, a program path of up to
/// [`MAX_STRING`] bytes, and a command's first 4 KB of output escaped (up to 4 bytes each).
/// Still under the u16 length of a string field and well inside [`MAX_FRAME`].
pub const MAX_TEXT: usize = 24 * 1024;
/// The most items in any list field.
pub const MAX_LIST: usize = 64;
/// The most messages in one `deliver-many` request (each comes as its own descriptor).
pub const MAX_BATCH: usize = 16;
/// The longest outcome text in a `deliver-many` answer, so that [`MAX_BATCH`] of them fit
/// in one frame (mailbox outcomes are a line; only commands say more, and commands are
/// never batched).
pub const MAX_BATCH_TEXT: usize = 2048;

const LENGTH_PREFIX: usize = 4;

/// What decoding found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A whole frame: its value and the bytes it took from the front of the input.
    Frame { value: T, consumed: usize },
    /// The input holds only part of a frame; at least this many bytes are needed in all.
    NeedMore { at_least: usize },
}

/// Why bytes are not a valid frame, or a value cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    UnsupportedVersion(u8),
    UnknownType(u8),
    /// The length prefix (or an encoded frame) exceeds [`MAX_FRAME`].
    Oversize {
        length: usize,
        max: usize,
    },
    /// A field runs past the end of the frame.
    Truncated {
        field: &'static str,
    },
    /// The frame's payload ended before its declared length.
    TrailingBytes {
        count: usize,
    },
    StringTooLong {
        field: &'static str,
        length: usize,
        max: usize,
    },
    ListTooLong {
        field: &'static str,
        length: usize,
        max: usize,
    },
    InvalidUtf8 {
        field: &'static str,
    },
    /// A tag, flag or text that is not one of the allowed values.
    InvalidValue {
        field: &'static str,
        why: String,
    },
    BadPath {
        field: &'static str,
        error: PathError,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported protocol version {v} (this side speaks {VERSION})"
                )
            }
            FrameError::UnknownType(t) => write!(f, "unknown frame type {t:#04x}"),
            FrameError::Oversize { length, max } => {
                write!(f, "frame of {length} bytes exceeds the limit of {max}")
            }
            FrameError::Truncated { field } => write!(f, "frame ends inside {field}"),
            FrameError::TrailingBytes { count } => {
                write!(f, "{count} bytes follow the payload inside the frame")
            }
            FrameError::StringTooLong { field, length, max } => {
                write!(f, "{field} is {length} bytes (at most {max})")
            }
            FrameError::ListTooLong { field, length, max } => {
                write!(f, "{field} has {length} items (at most {max})")
            }
            FrameError::InvalidUtf8 { field } => write!(f, "{field} is not UTF-8"),
            FrameError::InvalidValue { field, why } => write!(f, "{field}: {why}"),
            FrameError::BadPath { field, error } => write!(f, "{field}: {error}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The envelope of one recipient's delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `None` is the null reverse-path `<>` (bounces).
    pub sender: Option<String>,
    pub original_recipient: String,
    pub final_recipient: String,
    /// The address extension (`joe+lists` gives `lists`).
    pub extension: Option<String>,
}

/// Delivery options; unknown bits on the wire are an error, not ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliverOptions {
    /// Force the message and its directory entry to disk before answering.
    pub fsync: bool,
    /// Create missing Maildir++ folders and MH folders.
    pub create_folders: bool,
    /// Prepend a Return-Path header built from the envelope sender.
    pub return_path: bool,
}

impl DeliverOptions {
    const FSYNC: u8 = 1;
    const CREATE: u8 = 2;
    const RETURN_PATH: u8 = 4;
    const ALL: u8 = Self::FSYNC | Self::CREATE | Self::RETURN_PATH;

    fn bits(self) -> u8 {
        (if self.fsync { Self::FSYNC } else { 0 })
            | (if self.create_folders { Self::CREATE } else { 0 })
            | (if self.return_path {
                Self::RETURN_PATH
            } else {
                0
            })
    }

    fn from_bits(bits: u8) -> Result<Self, FrameError> {
        if bits & !Self::ALL != 0 {
            return Err(FrameError::InvalidValue {
                field: "options",
                why: format!("unknown option bits {:#04x}", bits & !Self::ALL),
            });
        }
        Ok(DeliverOptions {
            fsync: bits & Self::FSYNC != 0,
            create_folders: bits & Self::CREATE != 0,
            return_path: bits & Self::RETURN_PATH != 0,
        })
    }
}

/// When a filter runs: at RCPT only envelope tests can decide; at DATA the message fd
/// travels with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterStage {
    Rcpt,
    Data,
}

/// A request from cursusd to cursus-lda.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Deliver {
        user: String,
        destination: Destination,
        envelope: Envelope,
        options: DeliverOptions,
    },
    Filter {
        user: String,
        envelope: Envelope,
        stage: FilterStage,
    },
    /// Read the user's .forward as the user and return its entries as data.
    ReadForward {
        user: String,
    },
    Ping,
    /// Several messages for one user and one mailbox (never a command), one descriptor per
    /// envelope in the same order, delivered by one child: one fork, and one sync of the
    /// mailbox directory for all (cursusd gathers deliveries that wait for the same
    /// mailbox). Answered with [`Answer::Outcomes`], one per envelope.
    DeliverMany {
        user: String,
        destination: Destination,
        envelopes: Vec<Envelope>,
        options: DeliverOptions,
    },
}

impl Request {
    /// How many message descriptors travel with this request.
    pub fn descriptors(&self) -> usize {
        match self {
            Request::Deliver { .. } => 1,
            Request::Filter { stage, .. } => usize::from(*stage == FilterStage::Data),
            Request::DeliverMany { envelopes, .. } => envelopes.len(),
            Request::ReadForward { .. } | Request::Ping => 0,
        }
    }
}

/// One decision of a user's filter, as data for the MTA to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    Keep {
        flags: Vec<String>,
    },
    FileInto {
        mailbox: String,
        flags: Vec<String>,
        create: bool,
    },
    Redirect {
        address: String,
        copy: bool,
    },
    Reject {
        text: String,
    },
    Discard,
    Vacation {
        /// Who the reply goes to.
        recipient: String,
        from: Option<String>,
        subject: Option<String>,
        reason: String,
        /// Do not reply to the same sender again within this many seconds.
        period_seconds: u32,
        handle: Option<String>,
        mime: bool,
    },
}

/// One target of a .forward file, as data. Wire tags: 1 address, 2 mailbox, 3 command,
/// 4 include, 5 local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardEntry {
    Address(String),
    Mailbox(MailPath),
    /// A `|command` target: the command text after the `|`. The MTA maps it to a command
    /// destination and the policy decides.
    Command(String),
    Include(MailPath),
    /// `\user`: deliver to this local user without further aliasing or forwarding.
    Local(String),
}

/// Why the LDA refused a frame or a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Malformed = 1,
    UnsupportedVersion = 2,
    OutOfOrder = 3,
    Refused = 4,
    Internal = 5,
}

/// An answer from cursus-lda to cursusd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Outcome {
        kind: OutcomeKind,
        status: EnhancedStatus,
        /// One line, no CR or LF.
        text: String,
    },
    Filter {
        /// At stage rcpt: the script needs the message to decide; ask again at DATA.
        needs_message: bool,
        decisions: Vec<FilterDecision>,
    },
    Forward {
        entries: Vec<ForwardEntry>,
    },
    Pong,
    Error {
        code: ErrorCode,
        text: String,
    },
    /// An outcome for a Maildir over quota, with when the mailbox was last read (its cur/
    /// modification time, seconds since 1970): only the LDA, as the user, can look; the
    /// daemon's hints defer or bounce by it.
    OverQuota {
        kind: OutcomeKind,
        status: EnhancedStatus,
        text: String,
        mailbox_read: u32,
    },
    /// The answers to a `deliver-many`, in the order of its envelopes; each an
    /// [`Answer::Outcome`] or an [`Answer::OverQuota`].
    Outcomes(Vec<Answer>),
}

mod kind {
    pub const DELIVER: u8 = 0x01;
    pub const FILTER: u8 = 0x02;
    pub const READ_FORWARD: u8 = 0x03;
    pub const PING: u8 = 0x04;
    pub const DELIVER_MANY: u8 = 0x05;
    pub const OUTCOME: u8 = 0x81;
    pub const FILTER_ANSWER: u8 = 0x82;
    pub const FORWARD: u8 = 0x83;
    pub const PONG: u8 = 0x84;
    pub const ERROR: u8 = 0x85;
    pub const OVER_QUOTA: u8 = 0x86;
    pub const OUTCOMES: u8 = 0x87;
}

// ---- encoding ----

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new(frame_type: u8) -> Self {
        Writer {
            buf: vec![0, 0, 0, 0, VERSION, frame_type],
        }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn str(&mut self, field: &'static str, s: &str) -> Result<(), FrameError> {
        self.str_up_to(field, s, MAX_STRING)
    }

    fn str_up_to(&mut self, field: &'static str, s: &str, max: usize) -> Result<(), FrameError> {
        if s.len() > max {
            return Err(FrameError::StringTooLong {
                field,
                length: s.len(),
                max,
            });
        }
        // max is MAX_STRING or MAX_TEXT, both < u16::MAX, so the cast is exact.
        self.buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn opt_str(&mut self, field: &'static str, s: Option<&str>) -> Result<(), FrameError> {
        match s {
            None => {
                self.u8(0);
                Ok(())
            }
            Some(s) => {
                self.u8(1);
                self.str(field, s)
            }
        }
    }

    fn count(&mut self, field: &'static str, n: usize) -> Result<(), FrameError> {
        if n > MAX_LIST {
            return Err(FrameError::ListTooLong {
                field,
                length: n,
                max: MAX_LIST,
            });
        }
        self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        Ok(())
    }

    fn strs(&mut self, field: &'static str, items: &[String]) -> Result<(), FrameError> {
        self.count(field, items.len())?;
        items.iter().try_for_each(|s| self.str(field, s))
    }

    fn finish(mut self) -> Result<Vec<u8>, FrameError> {
        if self.buf.len() > MAX_FRAME {
            return Err(FrameError::Oversize {
                length: self.buf.len(),
                max: MAX_FRAME,
            });
        }
        let body = (self.buf.len() - LENGTH_PREFIX) as u32;
        self.buf[..LENGTH_PREFIX].copy_from_slice(&body.to_be_bytes());
        Ok(self.buf)
    }
}

fn write_envelope(w: &mut Writer, e: &Envelope) -> Result<(), FrameError> {
    w.opt_str("sender", e.sender.as_deref())?;
    w.str("original recipient", &e.original_recipient)?;
    w.str("final recipient", &e.final_recipient)?;
    w.opt_str("extension", e.extension.as_deref())
}

fn write_destination(w: &mut Writer, d: &Destination) -> Result<(), FrameError> {
    match d {
        Destination::Maildir(p) => {
            w.u8(1);
            w.str("destination path", p.as_str())
        }
        Destination::Mbox(p) => {
            w.u8(2);
            w.str("destination path", p.as_str())
        }
        Destination::Mh(p) => {
            w.u8(3);
            w.str("destination path", p.as_str())
        }
        Destination::Command { program, args } => {
            w.u8(4);
            w.str("command program", program.as_str())?;
            w.strs("command arguments", args)
        }
    }
}

/// Encodes a request as one frame.
pub fn encode_request(request: &Request) -> Result<Vec<u8>, FrameError> {
    let mut w;
    match request {
        Request::Deliver {
            user,
            destination,
            envelope,
            options,
        } => {
            w = Writer::new(kind::DELIVER);
            w.str("user", user)?;
            write_destination(&mut w, destination)?;
            write_envelope(&mut w, envelope)?;
            w.u8(options.bits());
        }
        Request::Filter {
            user,
            envelope,
            stage,
        } => {
            w = Writer::new(kind::FILTER);
            w.str("user", user)?;
            write_envelope(&mut w, envelope)?;
            w.u8(match stage {
                FilterStage::Rcpt => 1,
                FilterStage::Data => 2,
            });
        }
        Request::ReadForward { user } => {
            w = Writer::new(kind::READ_FORWARD);
            w.str("user", user)?;
        }
        Request::Ping => w = Writer::new(kind::PING),
        Request::DeliverMany {
            user,
            destination,
            envelopes,
            options,
        } => {
            check_batch(destination, envelopes.len())?;
            w = Writer::new(kind::DELIVER_MANY);
            w.str("user", user)?;
            write_destination(&mut w, destination)?;
            w.count("envelopes", envelopes.len())?;
            for e in envelopes {
                write_envelope(&mut w, e)?;
            }
            w.u8(options.bits());
        }
    }
    w.finish()
}

/// A batch names a mailbox and holds 1 ..= [`MAX_BATCH`] messages. Attack stopped: a
/// command run once per message inside one request (its output and time limit are per
/// run, so commands go one request each), and a request holding more descriptors than the
/// receiver takes from one message.
fn check_batch(destination: &Destination, n: usize) -> Result<(), FrameError> {
    if matches!(destination, Destination::Command { .. }) {
        return Err(FrameError::InvalidValue {
            field: "destination kind",
            why: "a command is delivered one message per request".to_string(),
        });
    }
    batch_count("envelopes", n)
}

/// 1 ..= [`MAX_BATCH`] items: the envelopes of a `deliver-many`, or its outcomes.
fn batch_count(field: &'static str, n: usize) -> Result<(), FrameError> {
    if n == 0 || n > MAX_BATCH {
        return Err(FrameError::ListTooLong {
            field,
            length: n,
            max: MAX_BATCH,
        });
    }
    Ok(())
}

fn check_line(field: &'static str, text: &str) -> Result<(), FrameError> {
    if text.chars().any(char::is_control) {
        return Err(FrameError::InvalidValue {
            field,
            why: "contains a control character (it must be one line)".to_string(),
        });
    }
    Ok(())
}

fn outcome_class(kind: OutcomeKind) -> u8 {
    match kind {
        OutcomeKind::Delivered => 2,
        OutcomeKind::Temporary => 4,
        OutcomeKind::Permanent => 5,
    }
}

fn write_decision(w: &mut Writer, d: &FilterDecision) -> Result<(), FrameError> {
    match d {
        FilterDecision::Keep { flags } => {
            w.u8(1);
            w.strs("flags", flags)
        }
        FilterDecision::FileInto {
            mailbox,
            flags,
            create,
        } => {
            w.u8(2);
            w.str("mailbox", mailbox)?;
            w.strs("flags", flags)?;
            w.bool(*create);
            Ok(())
        }
        FilterDecision::Redirect { address, copy } => {
            w.u8(3);
            w.str("redirect address", address)?;
            w.bool(*copy);
            Ok(())
        }
        FilterDecision::Reject { text } => {
            w.u8(4);
            w.str("reject text", text)
        }
        FilterDecision::Discard => {
            w.u8(5);
            Ok(())
        }
        FilterDecision::Vacation {
            recipient,
            from,
            subject,
            reason,
            period_seconds,
            handle,
            mime,
        } => {
            w.u8(6);
            w.str("vacation recipient", recipient)?;
            w.opt_str("vacation from", from.as_deref())?;
            w.opt_str("vacation subject", subject.as_deref())?;
            w.str("vacation reason", reason)?;
            w.u32(*period_seconds);
            w.opt_str("vacation handle", handle.as_deref())?;
            w.bool(*mime);
            Ok(())
        }
    }
}

/// Encodes an answer as one frame. An outcome's status class must agree with its kind
/// and its text must be one line.
fn write_outcome(
    w: &mut Writer,
    kind: OutcomeKind,
    status: EnhancedStatus,
    text: &str,
) -> Result<(), FrameError> {
    if status.class() != outcome_class(kind) {
        return Err(FrameError::InvalidValue {
            field: "status",
            why: format!("{status} does not agree with {kind:?}"),
        });
    }
    check_line("outcome text", text)?;
    w.u8(match kind {
        OutcomeKind::Delivered => 1,
        OutcomeKind::Temporary => 2,
        OutcomeKind::Permanent => 3,
    });
    w.str("status", &status.to_string())?;
    w.str_up_to("outcome text", text, MAX_TEXT)
}

fn check_batch_text(text: &str) -> Result<(), FrameError> {
    if text.len() > MAX_BATCH_TEXT {
        return Err(FrameError::StringTooLong {
            field: "outcome text",
            length: text.len(),
            max: MAX_BATCH_TEXT,
        });
    }
    Ok(())
}

pub fn encode_answer(answer: &Answer) -> Result<Vec<u8>, FrameError> {
    let mut w;
    match answer {
        Answer::Outcome { kind, status, text } => {
            w = Writer::new(kind::OUTCOME);
            write_outcome(&mut w, *kind, *status, text)?;
        }
        Answer::OverQuota {
            kind,
            status,
            text,
            mailbox_read,
        } => {
            w = Writer::new(kind::OVER_QUOTA);
            write_outcome(&mut w, *kind, *status, text)?;
            w.u32(*mailbox_read);
        }
        Answer::Filter {
            needs_message,
            decisions,
        } => {
            w = Writer::new(kind::FILTER_ANSWER);
            w.bool(*needs_message);
            w.count("decisions", decisions.len())?;
            for d in decisions {
                write_decision(&mut w, d)?;
            }
        }
        Answer::Forward { entries } => {
            w = Writer::new(kind::FORWARD);
            w.count("forward entries", entries.len())?;
            for e in entries {
                let (tag, text) = match e {
                    ForwardEntry::Address(a) => (1, a.as_str()),
                    ForwardEntry::Mailbox(p) => (2, p.as_str()),
                    ForwardEntry::Command(c) => (3, c.as_str()),
                    ForwardEntry::Include(p) => (4, p.as_str()),
                    ForwardEntry::Local(u) => (5, u.as_str()),
                };
                w.u8(tag);
                w.str("forward entry", text)?;
            }
        }
        Answer::Outcomes(answers) => {
            w = Writer::new(kind::OUTCOMES);
            batch_count("outcomes", answers.len())?;
            w.count("outcomes", answers.len())?;
            for a in answers {
                match a {
                    Answer::Outcome { kind, status, text } => {
                        w.u8(1);
                        check_batch_text(text)?;
                        write_outcome(&mut w, *kind, *status, text)?;
                    }
                    Answer::OverQuota {
                        kind,
                        status,
                        text,
                        mailbox_read,
                    } => {
                        w.u8(2);
                        check_batch_text(text)?;
                        write_outcome(&mut w, *kind, *status, text)?;
                        w.u32(*mailbox_read);
                    }
                    _ => {
                        return Err(FrameError::InvalidValue {
                            field: "outcomes",
                            why: "only outcomes go in a list of outcomes".to_string(),
                        });
                    }
                }
            }
        }
        Answer::Pong => w = Writer::new(kind::PONG),
        Answer::Error { code, text } => {
            check_line("error text", text)?;
            w = Writer::new(kind::ERROR);
            w.u8(*code as u8);
            w.str("error text", text)?;
        }
    }
    w.finish()
}

// ---- decoding ----

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FrameError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(FrameError::Truncated { field })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, FrameError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(FrameError::InvalidValue {
                field,
                why: format!("boolean byte {v}"),
            }),
        }
    }

    fn str(&mut self, field: &'static str) -> Result<String, FrameError> {
        self.str_up_to(field, MAX_STRING)
    }

    fn str_up_to(&mut self, field: &'static str, max: usize) -> Result<String, FrameError> {
        let length = usize::from(self.u16(field)?);
        if length > max {
            return Err(FrameError::StringTooLong { field, length, max });
        }
        let bytes = self.take(length, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| FrameError::InvalidUtf8 { field })
    }

    fn opt_str(&mut self, field: &'static str) -> Result<Option<String>, FrameError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => self.str(field).map(Some),
            v => Err(FrameError::InvalidValue {
                field,
                why: format!("option tag {v}"),
            }),
        }
    }

    fn count(&mut self, field: &'static str) -> Result<usize, FrameError> {
        let length = usize::from(self.u16(field)?);
        if length > MAX_LIST {
            return Err(FrameError::ListTooLong {
                field,
                length,
                max: MAX_LIST,
            });
        }
        Ok(length)
    }

    fn strs(&mut self, field: &'static str) -> Result<Vec<String>, FrameError> {
        let n = self.count(field)?;
        (0..n).map(|_| self.str(field)).collect()
    }

    fn path(&mut self, field: &'static str) -> Result<MailPath, FrameError> {
        let text = self.str(field)?;
        MailPath::parse(&text).map_err(|error| FrameError::BadPath { field, error })
    }
}

/// Splits off one frame: checks the length prefix and version, returns the type and a
/// reader over the payload.
fn open_frame(input: &[u8]) -> Result<Result<(u8, Reader<'_>, usize), usize>, FrameError> {
    if input.len() < LENGTH_PREFIX {
        return Ok(Err(LENGTH_PREFIX));
    }
    let body = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
    let total = body.saturating_add(LENGTH_PREFIX);
    if total > MAX_FRAME {
        return Err(FrameError::Oversize {
            length: total,
            max: MAX_FRAME,
        });
    }
    if body < 2 {
        return Err(FrameError::Truncated {
            field: if body == 0 { "version" } else { "type" },
        });
    }
    if input.len() < total {
        return Ok(Err(total));
    }
    let version = input[LENGTH_PREFIX];
    if version != VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let frame_type = input[LENGTH_PREFIX + 1];
    let reader = Reader {
        buf: &input[LENGTH_PREFIX + 2..total],
        pos: 0,
    };
    Ok(Ok((frame_type, reader, total)))
}

fn close_frame<T>(r: &Reader<'_>, value: T, consumed: usize) -> Result<Decoded<T>, FrameError> {
    let count = r.buf.len() - r.pos;
    if count != 0 {
        return Err(FrameError::TrailingBytes { count });
    }
    Ok(Decoded::Frame { value, consumed })
}

fn read_envelope(r: &mut Reader<'_>) -> Result<Envelope, FrameError> {
    Ok(Envelope {
        sender: r.opt_str("sender")?,
        original_recipient: r.str("original recipient")?,
        final_recipient: r.str("final recipient")?,
        extension: r.opt_str("extension")?,
    })
}

fn read_destination(r: &mut Reader<'_>) -> Result<Destination, FrameError> {
    match r.u8("destination kind")? {
        1 => Ok(Destination::Maildir(r.path("destination path")?)),
        2 => Ok(Destination::Mbox(r.path("destination path")?)),
        3 => Ok(Destination::Mh(r.path("destination path")?)),
        4 => Ok(Destination::Command {
            program: r.path("command program")?,
            args: r.strs("command arguments")?,
        }),
        v => Err(FrameError::InvalidValue {
            field: "destination kind",
            why: format!("unknown kind {v}"),
        }),
    }
}

/// Decodes one request from the front of `input`.
pub fn decode_request(input: &[u8]) -> Result<Decoded<Request>, FrameError> {
    let (frame_type, mut r, consumed) = match open_frame(input)? {
        Ok(frame) => frame,
        Err(at_least) => return Ok(Decoded::NeedMore { at_least }),
    };
    let value = match frame_type {
        kind::DELIVER => Request::Deliver {
            user: r.str("user")?,
            destination: read_destination(&mut r)?,
            envelope: read_envelope(&mut r)?,
            options: DeliverOptions::from_bits(r.u8("options")?)?,
        },
        kind::FILTER => Request::Filter {
            user: r.str("user")?,
            envelope: read_envelope(&mut r)?,
            stage: match r.u8("stage")? {
                1 => FilterStage::Rcpt,
                2 => FilterStage::Data,
                v => {
                    return Err(FrameError::InvalidValue {
                        field: "stage",
                        why: format!("unknown stage {v}"),
                    });
                }
            },
        },
        kind::READ_FORWARD => Request::ReadForward {
            user: r.str("user")?,
        },
        kind::PING => Request::Ping,
        kind::DELIVER_MANY => {
            let user = r.str("user")?;
            let destination = read_destination(&mut r)?;
            let n = r.count("envelopes")?;
            check_batch(&destination, n)?;
            let envelopes = (0..n)
                .map(|_| read_envelope(&mut r))
                .collect::<Result<_, _>>()?;
            Request::DeliverMany {
                user,
                destination,
                envelopes,
                options: DeliverOptions::from_bits(r.u8("options")?)?,
            }
        }
        other => return Err(FrameError::UnknownType(other)),
    };
    close_frame(&r, value, consumed)
}

fn read_decision(r: &mut Reader<'_>) -> Result<FilterDecision, FrameError> {
    Ok(match r.u8("decision")? {
        1 => FilterDecision::Keep {
            flags: r.strs("flags")?,
        },
        2 => FilterDecision::FileInto {
            mailbox: r.str("mailbox")?,
            flags: r.strs("flags")?,
            create: r.bool("create")?,
        },
        3 => FilterDecision::Redirect {
            address: r.str("redirect address")?,
            copy: r.bool("copy")?,
        },
        4 => FilterDecision::Reject {
            text: r.str("reject text")?,
        },
        5 => FilterDecision::Discard,
        6 => FilterDecision::Vacation {
            recipient: r.str("vacation recipient")?,
            from: r.opt_str("vacation from")?,
            subject: r.opt_str("vacation subject")?,
            reason: r.str("vacation reason")?,
            period_seconds: r.u32("vacation period")?,
            handle: r.opt_str("vacation handle")?,
            mime: r.bool("vacation mime")?,
        },
        v => {
            return Err(FrameError::InvalidValue {
                field: "decision",
                why: format!("unknown decision {v}"),
            });
        }
    })
}

fn read_outcome(r: &mut Reader<'_>) -> Result<(OutcomeKind, EnhancedStatus, String), FrameError> {
    let kind = match r.u8("outcome kind")? {
        1 => OutcomeKind::Delivered,
        2 => OutcomeKind::Temporary,
        3 => OutcomeKind::Permanent,
        v => {
            return Err(FrameError::InvalidValue {
                field: "outcome kind",
                why: format!("unknown kind {v}"),
            });
        }
    };
    let status_text = r.str("status")?;
    let status = EnhancedStatus::parse(&status_text).ok_or_else(|| FrameError::InvalidValue {
        field: "status",
        why: format!("{status_text:?} is not an enhanced status code"),
    })?;
    if status.class() != outcome_class(kind) {
        return Err(FrameError::InvalidValue {
            field: "status",
            why: format!("{status} does not agree with {kind:?}"),
        });
    }
    let text = r.str_up_to("outcome text", MAX_TEXT)?;
    check_line("outcome text", &text)?;
    Ok((kind, status, text))
}

/// Decodes one answer from the front of `input`.
pub fn decode_answer(input: &[u8]) -> Result<Decoded<Answer>, FrameError> {
    let (frame_type, mut r, consumed) = match open_frame(input)? {
        Ok(frame) => frame,
        Err(at_least) => return Ok(Decoded::NeedMore { at_least }),
    };
    let value = match frame_type {
        kind::OUTCOME => {
            let (kind, status, text) = read_outcome(&mut r)?;
            Answer::Outcome { kind, status, text }
        }
        kind::OVER_QUOTA => {
            let (kind, status, text) = read_outcome(&mut r)?;
            let mailbox_read = r.u32("mailbox read")?;
            Answer::OverQuota {
                kind,
                status,
                text,
                mailbox_read,
            }
        }
        kind::FILTER_ANSWER => {
            let needs_message = r.bool("needs message")?;
            let n = r.count("decisions")?;
            let decisions = (0..n)
                .map(|_| read_decision(&mut r))
                .collect::<Result<_, _>>()?;
            Answer::Filter {
                needs_message,
                decisions,
            }
        }
        kind::FORWARD => {
            let n = r.count("forward entries")?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(match r.u8("forward entry kind")? {
                    1 => ForwardEntry::Address(r.str("forward entry")?),
                    2 => ForwardEntry::Mailbox(r.path("forward entry")?),
                    3 => ForwardEntry::Command(r.str("forward entry")?),
                    4 => ForwardEntry::Include(r.path("forward entry")?),
                    5 => ForwardEntry::Local(r.str("forward entry")?),
                    v => {
                        return Err(FrameError::InvalidValue {
                            field: "forward entry kind",
                            why: format!("unknown kind {v}"),
                        });
                    }
                });
            }
            Answer::Forward { entries }
        }
        kind::OUTCOMES => {
            let n = r.count("outcomes")?;
            batch_count("outcomes", n)?;
            let mut answers = Vec::with_capacity(n);
            for _ in 0..n {
                let tag = r.u8("outcome tag")?;
                let (kind, status, text) = read_outcome(&mut r)?;
                answers.push(match tag {
                    1 => Answer::Outcome { kind, status, text },
                    2 => Answer::OverQuota {
                        kind,
                        status,
                        text,
                        mailbox_read: r.u32("mailbox read")?,
                    },
                    v => {
                        return Err(FrameError::InvalidValue {
                            field: "outcome tag",
                            why: format!("unknown tag {v}"),
                        });
                    }
                });
            }
            Answer::Outcomes(answers)
        }
        kind::PONG => Answer::Pong,
        kind::ERROR => {
            let code = match r.u8("error code")? {
                1 => ErrorCode::Malformed,
                2 => ErrorCode::UnsupportedVersion,
                3 => ErrorCode::OutOfOrder,
                4 => ErrorCode::Refused,
                5 => ErrorCode::Internal,
                v => {
                    return Err(FrameError::InvalidValue {
                        field: "error code",
                        why: format!("unknown code {v}"),
                    });
                }
            };
            let text = r.str("error text")?;
            check_line("error text", &text)?;
            Answer::Error { code, text }
        }
        other => return Err(FrameError::UnknownType(other)),
    };
    close_frame(&r, value, consumed)
}

#[cfg(test)]
mod tests;
