//! The server side of one SMTP or LMTP connection: a state machine with no I/O.
//!
//! The daemon feeds it the bytes it reads ([`Session::receive`]), then pulls [`Output`]s
//! ([`Session::poll`]) until there are none: replies to write and events to act on. Events
//! that need a decision (MAIL, RCPT, the start and the end of a message) stop the session
//! until the daemon calls [`Session::answer`]; input that arrived meanwhile (pipelining,
//! RFC 2920) waits in the session, in order.
//!
//! Trusts: smtp-proto to parse one complete command line into a `Request`; the daemon for its
//! answers and configuration. Everything the client sends is untrusted.
//! Fails: client mistakes become replies (500/501/503/555 with RFC 3463 codes), never
//! errors; daemon mistakes (answering when nothing is pending, a positive reply as a refusal)
//! are [`AnswerError`]s and change nothing.
//! Attacks stopped:
//! - SMTP smuggling: only CRLF.CRLF ends DATA; bare CR/LF refuses the message (`data.rs`).
//! - STARTTLS command injection (CVE-2011-0411, CVE-2021-38371 class): input buffered after
//!   the STARTTLS line, and any received before [`Session::tls_started`], is discarded;
//!   HELO and the transaction are forgotten.
//! - Early talkers (spam bots that do not wait for the greeting): input before
//!   [`Session::greeting`] is refused with 554 and the session closes.
//! - Resource exhaustion: every limit in [`Limits`]; too many errors end the session (421).
//! - Reply injection: reply text cannot contain CR or LF (`reply.rs`).
//! - Bad command sequences (RCPT before MAIL, DATA without recipients, DATA for a
//!   BINARYMIME body): 503 5.5.1, so the daemon never sees an event out of order.

use std::collections::VecDeque;

use cursus_mail::EnhancedStatus;
use smtp_proto::{Error as ParseError, Request};

use crate::data::{BareScan, DataDecoder, Decoded};
use crate::limits::Limits;
use crate::reply::Reply;
use crate::timeout::Timeout;
use crate::transaction::{Body, MailParams, RcptParams, Recipient, Sender, Transaction};

/// SMTP (RFC 5321) or LMTP (RFC 2033).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Lmtp,
}

/// What the daemon tells a new session.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our name, in the greeting and the EHLO reply.
    pub hostname: String,
    pub protocol: Protocol,
    pub limits: Limits,
    /// Offer STARTTLS (the daemon has a certificate).
    pub starttls: bool,
    /// The connection is already encrypted (implicit TLS); STARTTLS is then not offered.
    pub tls_active: bool,
}

impl Config {
    pub fn new(hostname: impl Into<String>, protocol: Protocol) -> Config {
        Config {
            hostname: hostname.into(),
            protocol,
            limits: Limits::default(),
            starttls: false,
            tls_active: false,
        }
    }
}

/// What [`Session::poll`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Bytes to send to the client ([`Reply::to_bytes`]). Replies come in command order.
    Reply(Reply),
    Event(Event),
}

/// Something the daemon must act on. The ones marked "answer" stop the session until
/// [`Session::answer`] is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// MAIL FROM, valid and in sequence. Answer: accept (250 2.1.0) or refuse.
    Mail { sender: Sender, params: MailParams },
    /// RCPT TO, valid, in sequence and within the recipient limit. Answer: accept
    /// (250 2.1.5) or refuse (e.g. 550 5.1.1 for an unknown user).
    Rcpt {
        recipient: Recipient,
        params: RcptParams,
    },
    /// The first DATA or BDAT of a transaction with at least one recipient: open the spool.
    /// Answer: accept (354 for DATA, nothing for BDAT) or refuse (e.g. 452 4.3.1 disk full).
    DataStart,
    /// Message content, dot-unstuffed. Chunks differ with the reads; their concatenation
    /// does not.
    Data(Vec<u8>),
    /// The content is being thrown away (too big, bare CR/LF); no [`Event::DataEnd`] follows
    /// for this message, and the session sends the refusal itself at its end.
    DataAbandoned(Abandon),
    /// The message is complete (CRLF.CRLF or BDAT LAST). Answer: SMTP, one reply (fsync
    /// first, then 250 with the queue id); LMTP, one per accepted recipient, in order.
    DataEnd { size: u64 },
    /// The transaction in progress was dropped (RSET, HELO/EHLO/LHLO, STARTTLS).
    Reset,
    /// `220 2.0.0` was queued before this event: write it, run the TLS handshake, then call
    /// [`Session::tls_started`].
    StartTls,
    /// The client said QUIT; `221` was queued before this event. Close after writing.
    Quit,
    /// The session ends on its own (a 421 or 554 was queued before this event).
    Disconnect(Disconnect),
}

/// Why a message's content is thrown away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandon {
    /// Over [`Limits::message_size`]: 552 5.3.4.
    TooBig,
    /// A bare CR or LF in content that is not BINARYMIME: 550 5.6.0.
    BareNewline,
}

/// Why the session closed without QUIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    EarlyTalker,
    TooManyErrors,
    TooManyMessages,
    Shutdown,
}

/// The daemon's decision on a pending event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The session's standard positive reply.
    Accept,
    /// A positive reply of the daemon's (2xx; 354 for DATA), e.g. "250 2.0.0 queued as X".
    AcceptWith(Reply),
    /// A refusal (4xx or 5xx). For an LMTP message end, it answers every recipient.
    Refuse(Reply),
    /// LMTP message end only: one reply per accepted recipient, in RCPT order.
    PerRecipient(Vec<Reply>),
}

/// A daemon mistake in [`Session::answer`]; the session is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    NothingPending,
    /// `AcceptWith` needs 2xx (354 for DATA), `Refuse` 4xx or 5xx.
    WrongClass,
    /// `PerRecipient` outside an LMTP message end.
    NotPerRecipient,
    /// `PerRecipient` with a count other than the accepted recipients'.
    WrongCount {
        expected: usize,
        got: usize,
    },
}

/// Input the session will not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputError {
    /// Bytes arrived before the greeting was sent; the session queued 554 and closed.
    EarlyTalker,
    /// The session has ended.
    Closed,
}

/// Where the session is, for the state table in NOTES.md and for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Greeting not sent yet.
    Connected,
    /// Greeted, waiting for HELO/EHLO (LHLO).
    Greeted,
    /// HELO done, no transaction.
    Ready,
    /// Sender accepted, no recipient yet.
    Mail,
    /// At least one recipient accepted.
    Rcpt,
    /// Reading DATA content.
    Data,
    /// Reading a BDAT chunk.
    Bdat,
    /// Waiting for the daemon's answer.
    Waiting,
    /// STARTTLS answered; waiting for the handshake.
    TlsHandshake,
    Closed,
}

#[derive(Clone, Debug)]
enum Phase {
    Command,
    Data(DataDecoder),
    Bdat(Chunk),
    TlsHandshake,
    Closed,
}

/// A BDAT chunk being read.
#[derive(Clone, Debug)]
struct Chunk {
    size: u64,
    left: u64,
    last: bool,
    /// Keep the bytes (pass them to the daemon); otherwise discard them, and send
    /// `after` (an error) when the chunk ends.
    keep: bool,
    after: Option<Reply>,
}

#[derive(Clone, Debug)]
enum Pending {
    Mail(Sender, MailParams),
    Rcpt(Recipient, RcptParams),
    DataStart { bdat: Option<(u64, bool)> },
    DataEnd,
}

/// The message being received.
#[derive(Clone, Debug)]
struct Content {
    size: u64,
    abandoned: Option<Abandon>,
    scan: BareScan,
}

/// One SMTP or LMTP server session. See the module documentation for the loop that drives it.
#[derive(Debug)]
pub struct Session {
    config: Config,
    greeted: bool,
    helo: Option<String>,
    tls_active: bool,
    phase: Phase,
    input: Vec<u8>,
    discarding_line: bool,
    out: VecDeque<Output>,
    pending: Option<Pending>,
    transaction: Option<Transaction>,
    /// RCPT commands refused in this transaction (for the 554 "no valid recipients").
    refused_recipients: usize,
    content: Option<Content>,
    messages: usize,
    errors: usize,
}

impl Session {
    pub fn new(config: Config) -> Session {
        let tls_active = config.tls_active;
        Session {
            config,
            greeted: false,
            helo: None,
            tls_active,
            phase: Phase::Command,
            input: Vec::new(),
            discarding_line: false,
            out: VecDeque::new(),
            pending: None,
            transaction: None,
            refused_recipients: 0,
            content: None,
            messages: 0,
            errors: 0,
        }
    }

    /// The 220 greeting; from now on input is accepted. The daemon may pause before calling
    /// this (a greet pause) to catch early talkers.
    pub fn greeting(&mut self) -> Reply {
        self.greeted = true;
        let proto = match self.config.protocol {
            Protocol::Smtp => "ESMTP",
            Protocol::Lmtp => "LMTP",
        };
        Reply::plain(220, format!("{} {proto} Cursus", self.config.hostname))
    }

    pub fn greeting_sent(&self) -> bool {
        self.greeted
    }

    /// Takes bytes read from the client. Call [`Session::poll`] afterwards.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), InputError> {
        if matches!(self.phase, Phase::Closed) {
            return Err(InputError::Closed);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.greeted {
            self.close(
                Reply::new(
                    554,
                    EnhancedStatus::new(5, 5, 1),
                    format!(
                        "{} Error: SMTP protocol synchronization (talked before the greeting)",
                        self.config.hostname
                    ),
                ),
                Disconnect::EarlyTalker,
            );
            return Err(InputError::EarlyTalker);
        }
        if matches!(self.phase, Phase::TlsHandshake) {
            // Plaintext after STARTTLS: never a command (CVE-2011-0411).
            return Ok(());
        }
        self.input.extend_from_slice(bytes);
        Ok(())
    }

    /// The next reply or event, or `None` when the session needs input or an answer.
    pub fn poll(&mut self) -> Option<Output> {
        loop {
            if let Some(out) = self.out.pop_front() {
                return Some(out);
            }
            if self.pending.is_some() {
                return None;
            }
            let progressed = match self.phase {
                Phase::Command => self.step_command(),
                Phase::Data(_) => self.step_data(),
                Phase::Bdat(_) => self.step_bdat(),
                Phase::TlsHandshake | Phase::Closed => false,
            };
            if !progressed && self.out.is_empty() {
                return None;
            }
        }
    }

    /// True when the daemon should read more from the client: nothing is waiting to be
    /// polled or answered. Reading only then keeps the session's buffer small.
    pub fn wants_input(&self) -> bool {
        self.out.is_empty()
            && self.pending.is_none()
            && matches!(self.phase, Phase::Command | Phase::Data(_) | Phase::Bdat(_))
            && !self.has_complete_input()
    }

    /// Answers the pending event.
    pub fn answer(&mut self, answer: Answer) -> Result<(), AnswerError> {
        let Some(pending) = self.pending.take() else {
            return Err(AnswerError::NothingPending);
        };
        match self.apply(pending.clone(), answer) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.pending = Some(pending);
                Err(e)
            }
        }
    }

    /// Shorthand for `answer(Answer::Accept)`.
    pub fn accept(&mut self) -> Result<(), AnswerError> {
        self.answer(Answer::Accept)
    }

    /// Shorthand for `answer(Answer::Refuse(reply))`.
    pub fn refuse(&mut self, reply: Reply) -> Result<(), AnswerError> {
        self.answer(Answer::Refuse(reply))
    }

    /// The TLS handshake after STARTTLS succeeded: commands are read again, and the client
    /// must greet again (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        if matches!(self.phase, Phase::TlsHandshake) {
            self.tls_active = true;
            self.input.clear();
            self.discarding_line = false;
            self.phase = Phase::Command;
        }
    }

    /// The daemon is stopping: queues `421 4.3.2` and closes. Any transaction is dropped.
    pub fn shutdown(&mut self) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.close(
            Reply::new(
                421,
                EnhancedStatus::new(4, 3, 2),
                format!(
                    "{} Service shutting down, closing connection",
                    self.config.hostname
                ),
            ),
            Disconnect::Shutdown,
        );
    }

    pub fn state(&self) -> State {
        match &self.phase {
            Phase::Closed => State::Closed,
            Phase::TlsHandshake => State::TlsHandshake,
            _ if self.pending.is_some() => State::Waiting,
            Phase::Data(_) => State::Data,
            Phase::Bdat(_) => State::Bdat,
            Phase::Command if !self.greeted => State::Connected,
            Phase::Command => match &self.transaction {
                None if self.helo.is_none() => State::Greeted,
                None => State::Ready,
                Some(t) if t.recipients.is_empty() => State::Mail,
                Some(_) => State::Rcpt,
            },
        }
    }

    /// The RFC 5321 §4.5.3.2 timeout that applies to the current wait.
    pub fn timeout(&self) -> Timeout {
        match (&self.pending, &self.phase) {
            (Some(Pending::Mail(..)), _) => Timeout::Mail,
            (Some(Pending::Rcpt(..)), _) => Timeout::Rcpt,
            (Some(Pending::DataStart { .. }), _) => Timeout::DataInitiation,
            (Some(Pending::DataEnd), _) => Timeout::DataTermination,
            (None, Phase::Data(_) | Phase::Bdat(_)) => Timeout::DataBlock,
            (None, Phase::Command) if self.helo.is_none() => Timeout::Initial,
            (None, Phase::Command) if self.transaction.is_none() => Timeout::Mail,
            (None, Phase::Command) => Timeout::Rcpt,
            (None, Phase::TlsHandshake | Phase::Closed) => Timeout::Initial,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The name the client gave in HELO, EHLO or LHLO.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// The transaction in progress: sender, recipients and their DSN parameters.
    pub fn transaction(&self) -> Option<&Transaction> {
        self.transaction.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- commands ------------------------------------------------------------------------

    fn has_complete_input(&self) -> bool {
        match self.phase {
            Phase::Command => self.input.contains(&b'\n'),
            Phase::Data(_) | Phase::Bdat(_) => !self.input.is_empty(),
            _ => false,
        }
    }

    /// Handles one command line if there is one. Returns whether anything happened.
    fn step_command(&mut self) -> bool {
        let limit = self.config.limits.command_line.max(2);
        let newline = self.input.iter().position(|&b| b == b'\n');
        if self.discarding_line {
            match newline {
                Some(i) => {
                    self.input.drain(..=i);
                    self.discarding_line = false;
                    self.line_too_long();
                    return true;
                }
                None => {
                    self.input.clear();
                    return false;
                }
            }
        }
        let Some(i) = newline else {
            if self.input.len() >= limit {
                self.input.clear();
                self.discarding_line = true;
            }
            return false;
        };
        let line: Vec<u8> = self.input.drain(..=i).collect();
        if line.len() > limit {
            self.line_too_long();
            return true;
        }
        self.command(&line);
        true
    }

    fn line_too_long(&mut self) {
        self.error(500, (5, 5, 2), "Error: line too long");
    }

    fn command(&mut self, line: &[u8]) {
        // The line without its end: CRLF, or a bare LF (accepted for commands, see NOTES.md).
        let body = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if body.iter().any(|&b| b == b'\r' || b == 0) {
            self.error(500, (5, 5, 2), "Error: bare CR or NUL in command");
            return;
        }
        let mut normal = body.to_vec();
        normal.extend_from_slice(b"\r\n");
        let parsed = Request::parse(&mut normal.iter()).map(Request::into_owned);
        let parsed = match parsed {
            Err(ParseError::InvalidSenderAddress | ParseError::InvalidRecipientAddress) => {
                with_address_literal(&normal).unwrap_or(parsed)
            }
            other => other,
        };
        match parsed {
            Ok(request) => self.request(request, body),
            Err(e) => self.parse_error(e),
        }
    }

    fn parse_error(&mut self, e: ParseError) {
        match e {
            ParseError::UnknownCommand => {
                self.error(500, (5, 5, 2), "Error: command not recognized")
            }
            ParseError::SyntaxError { syntax } => {
                self.error(501, (5, 5, 4), format!("Syntax: {syntax}"))
            }
            ParseError::InvalidSenderAddress => {
                self.error(501, (5, 1, 7), "Error: bad sender address syntax")
            }
            ParseError::InvalidRecipientAddress => {
                self.error(501, (5, 1, 3), "Error: bad recipient address syntax")
            }
            ParseError::InvalidParameter { param } => {
                self.error(501, (5, 5, 4), format!("Error: invalid {param} parameter"))
            }
            ParseError::UnsupportedParameter { param } => self.error(
                555,
                (5, 5, 4),
                format!("Error: unsupported parameter {}", printable(&param)),
            ),
            _ => self.error(500, (5, 5, 2), "Error: syntax error"),
        }
    }

    fn request(&mut self, request: Request<String>, line: &[u8]) {
        let lmtp = self.config.protocol == Protocol::Lmtp;
        match request {
            Request::Ehlo { host } | Request::Helo { host } if lmtp => {
                let _ = host;
                self.error(500, (5, 5, 1), "Error: this is LMTP, send LHLO");
            }
            Request::Lhlo { .. } if !lmtp => {
                self.error(500, (5, 5, 2), "Error: command not recognized")
            }
            Request::Ehlo { host } | Request::Lhlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::Mail { from } => self.mail(from, line),
            Request::Rcpt { to } => self.rcpt(to, line),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size as u64, is_last),
            Request::Rset => {
                self.reset_transaction();
                self.ok(250, (2, 0, 0), "Ok");
            }
            Request::Noop { .. } => self.ok(250, (2, 0, 0), "Ok"),
            Request::Quit => {
                let reply = Reply::new(
                    221,
                    EnhancedStatus::new(2, 0, 0),
                    format!("{} closing connection", self.config.hostname),
                );
                self.out.push_back(Output::Reply(reply));
                self.out.push_back(Output::Event(Event::Quit));
                self.end();
            }
            Request::Vrfy { .. } => self.ok(
                252,
                (2, 0, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Request::Expn { .. } => self.error(502, (5, 5, 1), "Error: EXPN not implemented"),
            Request::Help { .. } => self.ok(
                214,
                (2, 0, 0),
                "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS",
            ),
            Request::StartTls => self.starttls(),
            Request::Auth { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(502, (5, 5, 1), "Error: command not implemented"),
        }
    }

    fn hello(&mut self, host: String, extended: bool) {
        self.reset_transaction();
        let name = &self.config.hostname;
        let mut reply = Reply::plain(250, name.clone());
        if extended {
            let limits = self.config.limits;
            reply = reply
                .with_line("PIPELINING")
                .with_line(format!("SIZE {}", limits.message_size))
                .with_line("8BITMIME")
                .with_line("BINARYMIME")
                .with_line("CHUNKING")
                .with_line("DSN")
                .with_line("ENHANCEDSTATUSCODES")
                .with_line("SMTPUTF8");
            if self.starttls_offered() {
                reply = reply.with_line("STARTTLS");
            }
        }
        self.helo = Some(host);
        self.out.push_back(Output::Reply(reply));
    }

    fn starttls_offered(&self) -> bool {
        self.config.starttls && !self.tls_active
    }

    fn needs_hello(&mut self) -> bool {
        if self.helo.is_some() {
            return false;
        }
        let text = match self.config.protocol {
            Protocol::Smtp => "Error: send HELO/EHLO first",
            Protocol::Lmtp => "Error: send LHLO first",
        };
        self.error(503, (5, 5, 1), text);
        true
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>, line: &[u8]) {
        if self.needs_hello() {
            return;
        }
        if self.transaction.is_some() {
            self.error(503, (5, 5, 1), "Error: nested MAIL command");
            return;
        }
        if self.messages >= self.config.limits.messages {
            self.close(
                Reply::new(
                    421,
                    EnhancedStatus::new(4, 7, 0),
                    format!(
                        "{} Error: too many messages in one connection",
                        self.config.hostname
                    ),
                ),
                Disconnect::TooManyMessages,
            );
            return;
        }
        let params = match MailParams::from_smtp(&from) {
            Ok(p) => p,
            Err(name) => {
                self.error(
                    555,
                    (5, 5, 4),
                    format!("Error: unsupported parameter {name}"),
                );
                return;
            }
        };
        if from.address.is_empty() && bracketed_is_postmaster(line) {
            // smtp-proto reads <postmaster> as <>; a reverse-path needs a domain.
            self.error(501, (5, 1, 7), "Error: bad sender address syntax");
            return;
        }
        if let Some(size) = params.size
            && size > self.config.limits.message_size
        {
            self.error(552, (5, 3, 4), "Error: message size exceeds fixed limit");
            return;
        }
        if !params.smtputf8 && !from.address.is_ascii() {
            self.error(553, (5, 6, 7), "Error: non-ASCII address needs SMTPUTF8");
            return;
        }
        let sender = if from.address.is_empty() {
            Sender::Null
        } else {
            Sender::Address(from.address)
        };
        self.wait(
            Pending::Mail(sender.clone(), params.clone()),
            Event::Mail { sender, params },
        );
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<String>, line: &[u8]) {
        let Some(transaction) = &self.transaction else {
            self.error(503, (5, 5, 1), "Error: need MAIL command");
            return;
        };
        if self.content.is_some() {
            self.error(503, (5, 5, 1), "Error: RCPT after BDAT");
            return;
        }
        let smtputf8 = transaction.params.smtputf8;
        let count = transaction.recipients.len();
        let address = if to.address.is_empty() {
            if !bracketed_is_postmaster(line) {
                self.error(501, (5, 1, 3), "Error: bad recipient address syntax");
                return;
            }
            "postmaster".to_string()
        } else {
            to.address.clone()
        };
        let params = match RcptParams::from_smtp(&to) {
            Ok(p) => p,
            Err(name) => {
                self.error(
                    555,
                    (5, 5, 4),
                    format!("Error: unsupported parameter {name}"),
                );
                return;
            }
        };
        if count >= self.config.limits.recipients {
            // Not an error: the client sends the rest in another transaction.
            self.ok(452, (4, 5, 3), "Error: too many recipients");
            return;
        }
        if !smtputf8 && !address.is_ascii() {
            self.error(553, (5, 6, 7), "Error: non-ASCII address needs SMTPUTF8");
            return;
        }
        let recipient = Recipient::new(address);
        self.wait(
            Pending::Rcpt(recipient.clone(), params.clone()),
            Event::Rcpt { recipient, params },
        );
    }

    /// Checks that a message may start; the error reply otherwise.
    fn message_may_start(&self) -> Result<(), Reply> {
        let Some(t) = &self.transaction else {
            return Err(reply(503, (5, 5, 1), "Error: need MAIL command"));
        };
        if t.recipients.is_empty() {
            return Err(if self.refused_recipients > 0 {
                reply(554, (5, 5, 1), "Error: no valid recipients")
            } else {
                reply(503, (5, 5, 1), "Error: need RCPT command")
            });
        }
        Ok(())
    }

    fn data(&mut self) {
        if self.needs_hello() {
            return;
        }
        if let Err(r) = self.message_may_start() {
            self.push_error(r);
            return;
        }
        if self.content.is_some() {
            self.error(503, (5, 5, 1), "Error: DATA after BDAT");
            return;
        }
        if let Some(t) = &self.transaction
            && t.params.body == Some(Body::BinaryMime)
        {
            self.error(503, (5, 5, 1), "Error: BODY=BINARYMIME requires BDAT");
            return;
        }
        self.wait(Pending::DataStart { bdat: None }, Event::DataStart);
    }

    fn bdat(&mut self, size: u64, last: bool) {
        let refusal = if self.helo.is_none() {
            Some(reply(503, (5, 5, 1), "Error: send HELO/EHLO first"))
        } else {
            self.message_may_start().err()
        };
        if let Some(r) = refusal {
            // The chunk follows the command whatever we answer: read and drop it (unless
            // this error closes the session).
            self.phase = Phase::Bdat(Chunk {
                size,
                left: size,
                last,
                keep: false,
                after: Some(r),
            });
            self.count_error();
            return;
        }
        if self.content.is_none() {
            self.wait(
                Pending::DataStart {
                    bdat: Some((size, last)),
                },
                Event::DataStart,
            );
        } else {
            self.start_chunk(size, last);
        }
    }

    fn start_chunk(&mut self, size: u64, last: bool) {
        self.phase = Phase::Bdat(Chunk {
            size,
            left: size,
            last,
            keep: true,
            after: None,
        });
    }

    fn starttls(&mut self) {
        if self.tls_active {
            self.error(503, (5, 5, 1), "Error: TLS already active");
            return;
        }
        if !self.config.starttls {
            self.error(502, (5, 5, 1), "Error: command not implemented");
            return;
        }
        self.reset_transaction();
        self.helo = None;
        self.ok(220, (2, 0, 0), "Ready to start TLS");
        self.out.push_back(Output::Event(Event::StartTls));
        // Whatever the client pipelined after STARTTLS is plaintext injection.
        self.input.clear();
        self.discarding_line = false;
        self.phase = Phase::TlsHandshake;
    }

    // ---- content -------------------------------------------------------------------------

    fn step_data(&mut self) -> bool {
        if self.input.is_empty() {
            return false;
        }
        let Phase::Data(decoder) = &mut self.phase else {
            return false;
        };
        let mut chunk = Vec::with_capacity(self.input.len());
        let (used, how) = decoder.decode(&self.input, &mut chunk);
        self.input.drain(..used);
        self.content_bytes(chunk);
        match how {
            Decoded::More => {}
            Decoded::BareNewline => self.abandon(Abandon::BareNewline),
            Decoded::End => {
                self.phase = Phase::Command;
                self.message_end();
            }
        }
        true
    }

    fn step_bdat(&mut self) -> bool {
        let Phase::Bdat(chunk) = &mut self.phase else {
            return false;
        };
        if chunk.left > 0 && self.input.is_empty() {
            return false;
        }
        let take = usize::try_from(chunk.left)
            .unwrap_or(usize::MAX)
            .min(self.input.len());
        let bytes: Vec<u8> = self.input.drain(..take).collect();
        chunk.left -= take as u64;
        let done = chunk.left == 0;
        let (keep, size, last, after) = (chunk.keep, chunk.size, chunk.last, chunk.after.clone());
        if keep {
            let binary = self
                .transaction
                .as_ref()
                .is_some_and(|t| t.params.body == Some(Body::BinaryMime));
            let mut bytes = bytes;
            let mut bare = false;
            if let Some(content) = &mut self.content
                && !binary
                && content.abandoned.is_none()
            {
                // Stop at the first bare CR/LF, as the DATA decoder does, so that what the
                // daemon sees does not depend on the reads.
                if let Some(at) = content.scan.scan(&bytes) {
                    bytes.truncate(at + 1);
                    bare = true;
                } else if done && last && content.scan.ends_bare() {
                    bare = true;
                }
            }
            self.content_bytes(bytes);
            if bare {
                self.abandon(Abandon::BareNewline);
            }
        }
        if !done {
            return true;
        }
        self.phase = Phase::Command;
        if let Some(r) = after {
            self.out.push_back(Output::Reply(r));
            return true;
        }
        if last {
            self.message_end();
        } else if let Some(abandon) = self.content.as_ref().and_then(|c| c.abandoned) {
            // RFC 3030 §4: after a failed chunk the transaction is over.
            self.push_reply(abandon_reply(abandon));
            self.finish_message();
        } else {
            self.ok(250, (2, 0, 0), format!("{size} octets received"));
        }
        true
    }

    /// Passes content to the daemon, unless the message is abandoned or over the limit.
    fn content_bytes(&mut self, mut bytes: Vec<u8>) {
        let max = self.config.limits.message_size;
        let Some(content) = &mut self.content else {
            return;
        };
        if content.abandoned.is_some() {
            return;
        }
        let room = max.saturating_sub(content.size);
        let over = bytes.len() as u64 > room;
        if over {
            bytes.truncate(usize::try_from(room).unwrap_or(usize::MAX));
        }
        content.size += bytes.len() as u64;
        if !bytes.is_empty() {
            self.out.push_back(Output::Event(Event::Data(bytes)));
        }
        if over {
            self.abandon(Abandon::TooBig);
        }
    }

    fn abandon(&mut self, why: Abandon) {
        if let Some(content) = &mut self.content
            && content.abandoned.is_none()
        {
            content.abandoned = Some(why);
            self.out.push_back(Output::Event(Event::DataAbandoned(why)));
        }
    }

    fn message_end(&mut self) {
        let Some(content) = &self.content else {
            return;
        };
        if let Some(why) = content.abandoned {
            let r = abandon_reply(why);
            for _ in 0..self.reply_count() {
                self.out.push_back(Output::Reply(r.clone()));
            }
            self.finish_message();
            return;
        }
        let size = content.size;
        self.wait(Pending::DataEnd, Event::DataEnd { size });
    }

    /// Replies owed at the end of a message: one, or one per recipient in LMTP.
    fn reply_count(&self) -> usize {
        match self.config.protocol {
            Protocol::Smtp => 1,
            Protocol::Lmtp => self
                .transaction
                .as_ref()
                .map_or(1, |t| t.recipients.len().max(1)),
        }
    }

    fn finish_message(&mut self) {
        self.messages += 1;
        self.transaction = None;
        self.content = None;
        self.refused_recipients = 0;
    }

    // ---- answers -------------------------------------------------------------------------

    fn apply(&mut self, pending: Pending, answer: Answer) -> Result<(), AnswerError> {
        let lmtp = self.config.protocol == Protocol::Lmtp;
        if let Answer::PerRecipient(replies) = &answer {
            if !lmtp || !matches!(pending, Pending::DataEnd) {
                return Err(AnswerError::NotPerRecipient);
            }
            let expected = self.reply_count();
            if replies.len() != expected {
                return Err(AnswerError::WrongCount {
                    expected,
                    got: replies.len(),
                });
            }
            for r in replies {
                if !(r.is_positive() || r.is_negative()) {
                    return Err(AnswerError::WrongClass);
                }
            }
        }
        let positive = match &pending {
            Pending::DataStart { bdat: None } => |r: &Reply| r.code() == 354,
            _ => |r: &Reply| r.is_positive(),
        };
        let decision = match answer {
            Answer::Accept => Ok(None),
            Answer::AcceptWith(r) if positive(&r) => Ok(Some(r)),
            Answer::Refuse(r) if r.is_negative() => Err(r),
            Answer::AcceptWith(_) | Answer::Refuse(_) => return Err(AnswerError::WrongClass),
            Answer::PerRecipient(replies) => {
                for r in replies {
                    self.out.push_back(Output::Reply(r));
                }
                self.finish_message();
                return Ok(());
            }
        };
        match (pending, decision) {
            (Pending::Mail(sender, params), Ok(r)) => {
                self.transaction = Some(Transaction {
                    sender,
                    params,
                    recipients: Vec::new(),
                });
                self.refused_recipients = 0;
                self.push_reply(r.unwrap_or_else(|| reply(250, (2, 1, 0), "Ok")));
            }
            (Pending::Rcpt(recipient, params), Ok(r)) => {
                if let Some(t) = &mut self.transaction {
                    t.recipients.push((recipient, params));
                }
                self.push_reply(r.unwrap_or_else(|| reply(250, (2, 1, 5), "Ok")));
            }
            (Pending::Rcpt(..), Err(r)) => {
                self.refused_recipients += 1;
                self.push_error(r);
            }
            (Pending::Mail(..), Err(r)) => self.push_error(r),
            (Pending::DataStart { bdat }, Ok(r)) => {
                self.content = Some(Content {
                    size: 0,
                    abandoned: None,
                    scan: BareScan::default(),
                });
                match bdat {
                    None => {
                        self.push_reply(r.unwrap_or_else(|| {
                            Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
                        }));
                        self.phase = Phase::Data(DataDecoder::new());
                    }
                    Some((size, last)) => self.start_chunk(size, last),
                }
            }
            (Pending::DataStart { bdat }, Err(r)) => {
                // The daemon cannot take the message: the transaction ends here.
                self.transaction = None;
                self.refused_recipients = 0;
                match bdat {
                    None => self.push_reply(r),
                    Some((size, last)) => {
                        self.phase = Phase::Bdat(Chunk {
                            size,
                            left: size,
                            last,
                            keep: false,
                            after: Some(r),
                        })
                    }
                }
            }
            (Pending::DataEnd, decision) => {
                let r = match decision {
                    Ok(r) => r.unwrap_or_else(|| reply(250, (2, 0, 0), "Ok: message accepted")),
                    Err(r) => r,
                };
                for _ in 0..self.reply_count() {
                    self.out.push_back(Output::Reply(r.clone()));
                }
                self.finish_message();
            }
        }
        Ok(())
    }

    // ---- helpers -------------------------------------------------------------------------

    fn wait(&mut self, pending: Pending, event: Event) {
        self.out.push_back(Output::Event(event));
        self.pending = Some(pending);
    }

    fn reset_transaction(&mut self) {
        if self.transaction.take().is_some() {
            self.out.push_back(Output::Event(Event::Reset));
        }
        self.content = None;
        self.refused_recipients = 0;
    }

    fn ok(&mut self, code: u16, status: (u8, u16, u16), text: impl Into<String>) {
        self.push_reply(reply(code, status, text));
    }

    fn error(&mut self, code: u16, status: (u8, u16, u16), text: impl Into<String>) {
        self.push_error(reply(code, status, text));
    }

    fn push_reply(&mut self, r: Reply) {
        self.out.push_back(Output::Reply(r));
    }

    /// A negative reply to a command: counts toward [`Limits::errors`].
    fn push_error(&mut self, r: Reply) {
        self.out.push_back(Output::Reply(r));
        self.count_error();
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.config.limits.errors {
            let r = Reply::new(
                421,
                EnhancedStatus::new(4, 7, 0),
                format!("{} Error: too many errors", self.config.hostname),
            );
            self.close(r, Disconnect::TooManyErrors);
        }
    }

    fn close(&mut self, r: Reply, why: Disconnect) {
        self.out.push_back(Output::Reply(r));
        self.out.push_back(Output::Event(Event::Disconnect(why)));
        self.end();
    }

    fn end(&mut self) {
        self.phase = Phase::Closed;
        self.pending = None;
        self.transaction = None;
        self.content = None;
        self.input.clear();
    }
}

fn reply(code: u16, (class, subject, detail): (u8, u16, u16), text: impl Into<String>) -> Reply {
    let class = match code / 100 {
        4 => 4,
        5 => 5,
        _ => class,
    };
    Reply::new(code, EnhancedStatus::new(class, subject, detail), text)
}

fn abandon_reply(why: Abandon) -> Reply {
    match why {
        Abandon::TooBig => reply(552, (5, 3, 4), "Error: message size exceeds fixed limit"),
        Abandon::BareNewline => reply(
            550,
            (5, 6, 0),
            "Error: bare CR or LF in message content (send CRLF line ends)",
        ),
    }
}

/// The domain that stands in for an address literal while smtp-proto parses the line.
const LITERAL_STAND_IN: &str = "address-literal.invalid";

/// smtp-proto 0.2.5 refuses address literals (`u@[192.0.2.1]`, `u@[IPv6:2001:db8::1]`),
/// which RFC 5321 §4.1.3 defines. If the path ends in a valid IPv4 or IPv6 literal, parse the
/// line again with a stand-in domain and put the literal back.
fn with_address_literal(line: &[u8]) -> Option<Result<Request<String>, ParseError>> {
    let open = line.iter().position(|&b| b == b'<')?;
    let close = open + line[open..].iter().position(|&b| b == b'>')?;
    let path = &line[open + 1..close];
    let start = path.windows(2).position(|w| w == b"@[")? + 1;
    let literal = path[start..].strip_prefix(b"[")?.strip_suffix(b"]")?;
    let literal = std::str::from_utf8(literal).ok()?;
    let valid = match literal.strip_prefix("IPv6:") {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => literal.parse::<std::net::Ipv4Addr>().is_ok(),
    };
    if !valid {
        return None;
    }
    let literal = format!("[{literal}]");
    let mut rewritten = line[..open + 1 + start].to_vec();
    rewritten.extend_from_slice(LITERAL_STAND_IN.as_bytes());
    rewritten.extend_from_slice(&line[close..]);
    let restore = |address: String| match address.strip_suffix(LITERAL_STAND_IN) {
        Some(local) => format!("{local}{literal}"),
        None => address,
    };
    let parsed = Request::parse(&mut rewritten.iter()).map(Request::into_owned);
    Some(parsed.map(|request| match request {
        Request::Mail { mut from } => {
            from.address = restore(from.address);
            Request::Mail { from }
        }
        Request::Rcpt { mut to } => {
            to.address = restore(to.address);
            Request::Rcpt { to }
        }
        other => other,
    }))
}

/// True if the angle-bracketed path in a MAIL/RCPT line is `postmaster` (any case).
fn bracketed_is_postmaster(line: &[u8]) -> bool {
    let Some(open) = line.iter().position(|&b| b == b'<') else {
        return false;
    };
    let rest = &line[open + 1..];
    let Some(close) = rest.iter().position(|&b| b == b'>') else {
        return false;
    };
    rest[..close]
        .trim_ascii()
        .eq_ignore_ascii_case(b"postmaster")
}

/// A parameter name from the client, made printable and short for a reply.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(40)
        .collect()
}
