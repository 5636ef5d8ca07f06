//! The client side of SMTP (RFC 5321) and LMTP (RFC 2033) as a state machine: greeting,
//! EHLO (HELO when EHLO is refused), STARTTLS, AUTH PLAIN/LOGIN, then any number of
//! messages, each MAIL, RCPT per recipient, DATA or BDAT, with a result for every recipient,
//! and QUIT. No I/O: the daemon writes what [`Action::Send`] gives, feeds what it reads to
//! [`Client::receive`], performs the TLS handshake when asked and owns the clocks
//! ([`Client::timeout`] names the RFC 5321 §4.5.3.2 wait).
//!
//! Trusts: the daemon for the message and its envelope (already checked at reception);
//! nothing from the server: replies are parsed by smtp-proto's `ResponseReceiver`, a reply
//! that does not parse ends the session with a temporary failure, reply text is cleaned of
//! control characters before it reaches an outcome (and from there a log line or a DSN).
//! Fails: never with an error to the daemon mid-session; every recipient of a message gets
//! exactly one [`Action::Recipient`], whatever the server does (a refusal, a broken
//! connection reported with [`Client::abort`], a garbled reply).
//!
//! Rules for what the peer lacks (documented in NOTES.md, "client"):
//! - 8-bit content (BODY=8BITMIME, or any octet above 127) to a server without 8BITMIME is
//!   sent anyway without the BODY parameter, as Postfix and Exim do in practice (RFC 6152
//!   would have the client convert or bounce; conversion damages signed mail). With
//!   [`EightBitRule::Refuse`] it fails permanently with 5.6.3 instead.
//! - BINARYMIME content to a server without BINARYMIME and CHUNKING: permanent 5.6.3 (no
//!   conversion is done).
//! - SMTPUTF8 needed (the envelope asked for it, or an address is not ASCII) and not
//!   offered: permanent 5.6.7 for every recipient (RFC 6531 §3.2, no downgrade).
//! - A message larger than the server's SIZE: permanent 5.3.4 without sending it.
//! - DSN parameters (RET, ENVID, NOTIFY, ORCPT) are passed on only when DSN is offered.
//!
//! Attacks stopped: a server pipelining replies before STARTTLS completes cannot inject
//! them into the TLS session (the reply buffer must be empty when the handshake starts,
//! else the session ends: the client-side twin of CVE-2011-0411); dot-stuffing and CRLF
//! normalisation make sure no line of the message ends DATA early (SMTP smuggling).

use std::collections::VecDeque;

use cursus_mail::{EnhancedStatus, ExitCode, Outcome};
use smtp_proto::response::parser::ResponseReceiver;

pub use crate::capabilities::Capabilities;
pub use crate::content::{canonical, dot_stuff};
use crate::session::Protocol;
use crate::timeout::Timeout;
use crate::transaction::{Body, Ret};

/// Whether to use STARTTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never, even when offered.
    Never,
    /// When offered; plaintext otherwise (or when STARTTLS is refused).
    Opportunistic,
    /// The session fails (temporarily, 4.7.10) without TLS.
    Required,
}

/// What to do with 8-bit content for a server without 8BITMIME.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EightBitRule {
    /// Send as is, without `BODY=8BITMIME` (common practice).
    Send,
    /// Fail permanently with 5.6.3.
    Refuse,
}

/// AUTH credentials (PLAIN preferred, LOGIN otherwise).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// How a client session behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO/LHLO.
    pub helo: String,
    pub protocol: Protocol,
    pub tls: TlsMode,
    pub auth: Option<Credentials>,
    /// Send credentials over a connection without TLS (off by default).
    pub auth_without_tls: bool,
    pub eight_bit: EightBitRule,
    /// Use BDAT when the server offers CHUNKING.
    pub chunking: bool,
    /// Greet with HELO, not EHLO (SMTP only): the server is known to fail EHLO. No
    /// extension is used then (no STARTTLS, PIPELINING, 8BITMIME, ...).
    pub helo_only: bool,
}

impl ClientConfig {
    pub fn new(helo: impl Into<String>, protocol: Protocol) -> ClientConfig {
        ClientConfig {
            helo: helo.into(),
            protocol,
            tls: TlsMode::Opportunistic,
            auth: None,
            auth_without_tls: false,
            eight_bit: EightBitRule::Send,
            chunking: true,
            helo_only: false,
        }
    }
}

/// A reply from the server, parsed and cleaned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    pub status: Option<EnhancedStatus>,
    /// The text, lines joined by a space, control characters removed.
    pub text: String,
    /// The text lines as received (cleaned), for EHLO keywords.
    pub lines: Vec<String>,
}

impl ServerReply {
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The enhanced status to report: the server's own when its class matches the code,
    /// else `fallback` in the code's class.
    fn status_or(&self, fallback: EnhancedStatus) -> EnhancedStatus {
        let class = (self.code / 100) as u8;
        match self.status {
            Some(s) if s.class() == class => s,
            _ => match class {
                2 => cursus_mail::codes::DELIVERED,
                4 => fallback.as_temporary(),
                _ => fallback.as_permanent(),
            },
        }
    }

    /// The outcome this reply means for a recipient, "in reply to" `stage`.
    pub fn outcome(&self, fallback: EnhancedStatus, stage: &str) -> Outcome {
        let status = self.status_or(fallback);
        let text = format!("{} {status} {} (in reply to {stage})", self.code, self.text);
        match self.code / 100 {
            2 => Outcome {
                status,
                ..Outcome::delivered(text)
            },
            5 => Outcome::permanent(status, exit_for(status), text),
            _ => Outcome::temporary(status, text),
        }
    }
}

impl std::fmt::Display for ServerReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} {s} {}", self.code, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

/// The sysexits-style code of a permanent status (for the queue's bookkeeping).
fn exit_for(status: EnhancedStatus) -> ExitCode {
    let s = status.to_string();
    if s.starts_with("5.1.") {
        ExitCode::NoUser
    } else if s.starts_with("5.6.") {
        ExitCode::DataErr
    } else {
        ExitCode::NoPerm
    }
}

fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// One recipient of an outgoing message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingRecipient {
    pub address: String,
    /// `NOTIFY=` value as it goes on the wire (`SUCCESS,FAILURE`, `NEVER`), if any.
    pub notify: Option<String>,
    /// `ORCPT=` value (`rfc822;xtext`), if any.
    pub orcpt: Option<String>,
}

impl OutgoingRecipient {
    pub fn new(address: impl Into<String>) -> OutgoingRecipient {
        OutgoingRecipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

/// A message to send: envelope and content (CRLF line ends; bare LF is turned into CRLF
/// unless the body is BINARYMIME).
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    /// `None`: the null sender `<>`.
    pub sender: Option<String>,
    pub recipients: Vec<OutgoingRecipient>,
    pub body: std::sync::Arc<Vec<u8>>,
    pub body_type: Body,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// ENVID as xtext.
    pub envid: Option<String>,
}

/// What the daemon must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes (and flush before reading: RFC 2920).
    Send(Vec<u8>),
    /// Write what was sent so far, run the TLS handshake, then call
    /// [`Client::tls_established`] (or [`Client::abort`] when it fails).
    StartTls,
    /// The session is ready for a message ([`Client::send`]) or [`Client::quit`].
    Ready,
    /// The final word for recipient `index` of the current message.
    Recipient { index: usize, outcome: Outcome },
    /// Every recipient of the current message has its result.
    MessageDone,
    /// The session could not be set up (greeting, EHLO, STARTTLS, AUTH): the reason, as
    /// an outcome for every message meant for this connection.
    Failed(Outcome),
    /// The session is over; close the connection.
    Closed,
}

/// Misuse of the client by the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// `send` outside the ready state.
    NotReady,
    /// A message without recipients.
    NoRecipients,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotReady => write!(f, "the session is not ready for a message"),
            ClientError::NoRecipients => write!(f, "a message without recipients"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Which reply comes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPassword,
    AuthLoginDone,
    Mail,
    Rcpt(usize),
    Data,
    /// The reply after the content; for LMTP one per accepted recipient.
    DataEnd,
    Bdat,
    Rset,
    Quit,
}

/// A command not yet written.
#[derive(Debug)]
enum Pending {
    /// A command line; `pipelined`: may follow others without waiting (RFC 2920).
    Command {
        line: Vec<u8>,
        expect: Expect,
        pipelined: bool,
    },
    /// The content by BDAT, once every RCPT reply is in.
    Bdat,
    /// DATA, only when some recipient was accepted (without PIPELINING).
    Data,
}

/// The message being sent.
#[derive(Debug)]
struct Transaction {
    message: OutgoingMessage,
    /// Recipients that have their result.
    done: Vec<bool>,
    /// Accepted at RCPT, waiting for the content's result.
    accepted: Vec<usize>,
    /// Accepted recipients already given an LMTP reply after the content.
    answered: usize,
    /// MAIL was refused: every recipient gets this.
    mail_failure: Option<Outcome>,
    body_param: Option<&'static str>,
    use_bdat: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    Ready,
    Transaction,
    Quitting,
    Closed,
}

/// A client session.
pub struct Client {
    config: ClientConfig,
    phase: Phase,
    caps: Capabilities,
    tls: bool,
    used_helo: bool,
    /// EHLO was refused, or the session ended while EHLO was unanswered.
    ehlo_failed: bool,
    receiver: ResponseReceiver,
    buffer: Vec<u8>,
    expects: VecDeque<Expect>,
    pending: VecDeque<Pending>,
    actions: VecDeque<Action>,
    transaction: Option<Transaction>,
    /// The last stage with a reply outstanding, for timeouts.
    stage: Timeout,
    messages: usize,
    replies: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("phase", &self.phase)
            .field("caps", &self.caps)
            .field("tls", &self.tls)
            .field("expects", &self.expects)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A session that waits for the server's greeting.
    pub fn new(config: ClientConfig) -> Client {
        Client {
            config,
            phase: Phase::Setup,
            caps: Capabilities::default(),
            tls: false,
            used_helo: false,
            ehlo_failed: false,
            receiver: ResponseReceiver::default(),
            buffer: Vec::new(),
            expects: VecDeque::from([Expect::Greeting]),
            pending: VecDeque::new(),
            actions: VecDeque::new(),
            transaction: None,
            stage: Timeout::Initial,
            messages: 0,
            replies: 0,
        }
    }

    /// What the server offered (after EHLO; empty after HELO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the server refused EHLO and HELO was used.
    pub fn used_helo(&self) -> bool {
        self.used_helo
    }

    /// Whether the server refused EHLO or closed or stopped answering after it (a host
    /// to greet with HELO next time).
    pub fn ehlo_failed(&self) -> bool {
        self.ehlo_failed
    }

    /// Whether the session is idle and can take a message.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Messages completed on this session.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Replies received so far (a message that failed with no new reply was never seen by
    /// the server: safe to send again elsewhere).
    pub fn replies(&self) -> usize {
        self.replies
    }

    /// Which RFC 5321 §4.5.3.2 wait applies to the next read.
    pub fn timeout(&self) -> Timeout {
        self.stage
    }

    /// The next thing to do, `None` when the client waits for the server.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Bytes from the server.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        self.buffer.extend_from_slice(bytes);
        loop {
            if self.buffer.is_empty() || self.phase == Phase::Closed {
                break;
            }
            let mut iter = self.buffer.iter();
            let parsed = self.receiver.parse(&mut iter);
            let used = self.buffer.len() - iter.as_slice().len();
            match parsed {
                Ok(response) => {
                    self.buffer.drain(..used);
                    self.receiver.reset();
                    let reply = to_reply(response);
                    self.on_reply(reply);
                }
                Err(smtp_proto::Error::NeedsMoreData { .. }) => {
                    self.buffer.drain(..used);
                    break;
                }
                Err(e) => {
                    self.abort(&format!("unreadable reply from the server ({e:?})"));
                    break;
                }
            }
        }
    }

    /// Call after the TLS handshake succeeded: the session starts again with EHLO.
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.caps = Capabilities::default();
        self.ehlo();
        self.flush();
    }

    /// Starts a message. Its recipients get their results as [`Action::Recipient`], then
    /// [`Action::MessageDone`] and [`Action::Ready`].
    pub fn send(&mut self, message: OutgoingMessage) -> Result<(), ClientError> {
        if self.phase != Phase::Ready {
            return Err(ClientError::NotReady);
        }
        if message.recipients.is_empty() {
            return Err(ClientError::NoRecipients);
        }
        let n = message.recipients.len();
        let mut t = Transaction {
            message,
            done: vec![false; n],
            accepted: Vec::new(),
            answered: 0,
            mail_failure: None,
            body_param: None,
            use_bdat: false,
        };
        self.phase = Phase::Transaction;
        if let Some(refusal) = self.refusal(&mut t) {
            self.transaction = Some(t);
            self.fail_remaining(&refusal);
            self.finish_message(false);
            return Ok(());
        }
        let m = &t.message;
        let mut mail = format!("MAIL FROM:<{}>", m.sender.as_deref().unwrap_or(""));
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={}", m.body.len()));
        }
        if let Some(body) = t.body_param {
            mail.push_str(&format!(" BODY={body}"));
        }
        if self.needs_smtputf8(m) {
            mail.push_str(" SMTPUTF8");
        }
        if self.caps.dsn {
            match m.ret {
                Some(Ret::Full) => mail.push_str(" RET=FULL"),
                Some(Ret::Headers) => mail.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &m.envid {
                mail.push_str(&format!(" ENVID={envid}"));
            }
        }
        mail.push_str("\r\n");
        self.pending.push_back(Pending::Command {
            line: mail.into_bytes(),
            expect: Expect::Mail,
            pipelined: true,
        });
        for (i, r) in m.recipients.iter().enumerate() {
            let mut rcpt = format!("RCPT TO:<{}>", r.address);
            if self.caps.dsn {
                if let Some(notify) = &r.notify {
                    rcpt.push_str(&format!(" NOTIFY={notify}"));
                }
                if let Some(orcpt) = &r.orcpt {
                    rcpt.push_str(&format!(" ORCPT={orcpt}"));
                }
            }
            rcpt.push_str("\r\n");
            self.pending.push_back(Pending::Command {
                line: rcpt.into_bytes(),
                expect: Expect::Rcpt(i),
                pipelined: true,
            });
        }
        if t.use_bdat {
            self.pending.push_back(Pending::Bdat);
        } else if self.caps.pipelining {
            self.pending.push_back(Pending::Command {
                line: b"DATA\r\n".to_vec(),
                expect: Expect::Data,
                pipelined: true,
            });
        } else {
            self.pending.push_back(Pending::Data);
        }
        self.transaction = Some(t);
        self.stage = Timeout::Mail;
        self.flush();
        Ok(())
    }

    /// RSET on an idle session, to check that a cached connection still works before a
    /// message is given to it: [`Action::Ready`] when the server answers 250. `false` when
    /// the session is not idle.
    pub fn probe(&mut self) -> bool {
        if self.phase != Phase::Ready {
            return false;
        }
        self.phase = Phase::Setup;
        self.pending.push_back(Pending::Command {
            line: b"RSET\r\n".to_vec(),
            expect: Expect::Rset,
            pipelined: false,
        });
        self.stage = Timeout::Mail;
        self.flush();
        true
    }

    /// Ends the session politely.
    pub fn quit(&mut self) {
        match self.phase {
            Phase::Closed | Phase::Quitting => {}
            _ => {
                self.phase = Phase::Quitting;
                self.pending.clear();
                self.pending.push_back(Pending::Command {
                    line: b"QUIT\r\n".to_vec(),
                    expect: Expect::Quit,
                    pipelined: true,
                });
                self.stage = Timeout::Initial;
                self.flush();
            }
        }
    }

    /// The connection broke, timed out, or the TLS handshake failed: every recipient still
    /// waiting gets a temporary failure with `reason`, and the session is closed.
    pub fn abort(&mut self, reason: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        // Only the first EHLO: a hang-up after STARTTLS is not a reason to greet without
        // it next time.
        if matches!(self.expects.front(), Some(Expect::Ehlo)) && !self.tls {
            self.ehlo_failed = true;
        }
        let stage = self.stage_name();
        let text = format!("{reason} (while {stage})");
        let status = EnhancedStatus::new(4, 4, 2);
        match self.phase {
            Phase::Setup => {
                self.actions
                    .push_back(Action::Failed(Outcome::temporary(status, text)));
            }
            Phase::Transaction => {
                self.fail_remaining(&Outcome::temporary(status, text));
                self.actions.push_back(Action::MessageDone);
                self.transaction = None;
            }
            _ => {}
        }
        self.close();
    }

    fn stage_name(&self) -> &'static str {
        match self.expects.front() {
            Some(Expect::Greeting) => "waiting for the greeting",
            Some(Expect::Ehlo | Expect::Helo) => "greeting the server",
            Some(Expect::StartTls) => "starting TLS",
            Some(
                Expect::AuthPlain
                | Expect::AuthLoginUser
                | Expect::AuthLoginPassword
                | Expect::AuthLoginDone,
            ) => "authenticating",
            Some(Expect::Mail) => "sending MAIL FROM",
            Some(Expect::Rcpt(_)) => "sending RCPT TO",
            Some(Expect::Data) => "sending DATA",
            Some(Expect::DataEnd | Expect::Bdat) => "sending the message",
            Some(Expect::Rset) => "sending RSET",
            Some(Expect::Quit) => "sending QUIT",
            None => "idle",
        }
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.pending.clear();
        self.expects.clear();
        self.actions.push_back(Action::Closed);
    }

    /// A message the server cannot take as it is: the permanent refusal.
    fn refusal(&self, t: &mut Transaction) -> Option<Outcome> {
        let m = &t.message;
        let perm = |code: (u8, u16, u16), text: &str| {
            let s = EnhancedStatus::new(code.0, code.1, code.2);
            Some(Outcome::permanent(s, exit_for(s), text.to_string()))
        };
        if self.needs_smtputf8(m) && !self.caps.smtputf8 {
            return perm(
                (5, 6, 7),
                "the message needs SMTPUTF8 (non-ASCII addresses or headers) and the server does not offer it",
            );
        }
        if let Some(limit) = self.caps.size
            && limit > 0
            && m.body.len() as u64 > limit
        {
            return perm(
                (5, 3, 4),
                &format!(
                    "the message ({} octets) is larger than the server's limit of {limit}",
                    m.body.len()
                ),
            );
        }
        let chunking = self.caps.chunking && self.config.chunking;
        match m.body_type {
            Body::BinaryMime => {
                if !(self.caps.binary_mime && self.caps.chunking) {
                    return perm(
                        (5, 6, 3),
                        "binary content and the server offers no BINARYMIME with CHUNKING",
                    );
                }
                t.body_param = Some("BINARYMIME");
                t.use_bdat = true;
                return None;
            }
            Body::EightBitMime => {
                if self.caps.eight_bit_mime {
                    t.body_param = Some("8BITMIME");
                } else if self.config.eight_bit == EightBitRule::Refuse {
                    return perm(
                        (5, 6, 3),
                        "8-bit content and the server does not offer 8BITMIME",
                    );
                }
            }
            Body::SevenBit => {
                if m.body.iter().any(|&b| b >= 0x80) {
                    if self.caps.eight_bit_mime {
                        t.body_param = Some("8BITMIME");
                    } else if self.config.eight_bit == EightBitRule::Refuse {
                        return perm(
                            (5, 6, 3),
                            "8-bit content and the server does not offer 8BITMIME",
                        );
                    }
                }
            }
        }
        t.use_bdat = chunking;
        None
    }

    fn needs_smtputf8(&self, m: &OutgoingMessage) -> bool {
        m.smtputf8
            || m.sender.as_deref().is_some_and(|s| !s.is_ascii())
            || m.recipients.iter().any(|r| !r.address.is_ascii())
    }

    fn ehlo(&mut self) {
        if self.config.helo_only && self.config.protocol == Protocol::Smtp {
            self.used_helo = true;
            self.pending.push_back(Pending::Command {
                line: format!("HELO {}\r\n", self.config.helo).into_bytes(),
                expect: Expect::Helo,
                pipelined: false,
            });
            self.stage = Timeout::Initial;
            return;
        }
        let verb = match self.config.protocol {
            Protocol::Smtp => "EHLO",
            Protocol::Lmtp => "LHLO",
        };
        self.pending.push_back(Pending::Command {
            line: format!("{verb} {}\r\n", self.config.helo).into_bytes(),
            expect: Expect::Ehlo,
            pipelined: false,
        });
        self.stage = Timeout::Initial;
    }

    /// Writes what may be written now.
    fn flush(&mut self) {
        let mut out = Vec::new();
        while let Some(next) = self.pending.front() {
            let can = self.expects.is_empty()
                || (self.caps.pipelining
                    && matches!(
                        next,
                        Pending::Command {
                            pipelined: true,
                            ..
                        }
                    ));
            if !can {
                break;
            }
            let Some(next) = self.pending.pop_front() else {
                break;
            };
            match next {
                Pending::Command { line, expect, .. } => {
                    out.extend_from_slice(&line);
                    self.expects.push_back(expect);
                }
                Pending::Data => {
                    if self.has_accepted() {
                        out.extend_from_slice(b"DATA\r\n");
                        self.expects.push_back(Expect::Data);
                        self.stage = Timeout::DataInitiation;
                    } else {
                        self.after_empty_transaction(&mut out);
                    }
                }
                Pending::Bdat => {
                    if self.has_accepted() {
                        if let Some(t) = &self.transaction {
                            let body = if t.message.body_type == Body::BinaryMime {
                                t.message.body.as_ref().clone()
                            } else {
                                canonical(&t.message.body)
                            };
                            out.extend_from_slice(
                                format!("BDAT {} LAST\r\n", body.len()).as_bytes(),
                            );
                            out.extend_from_slice(&body);
                        }
                        self.expects.push_back(Expect::Bdat);
                        self.stage = Timeout::DataTermination;
                    } else {
                        self.after_empty_transaction(&mut out);
                    }
                }
            }
        }
        if !out.is_empty() {
            self.actions.push_back(Action::Send(out));
        }
    }

    fn has_accepted(&self) -> bool {
        self.transaction
            .as_ref()
            .is_some_and(|t| !t.accepted.is_empty() && t.mail_failure.is_none())
    }

    /// No recipient accepted (or MAIL refused) before the content: RSET and done.
    fn after_empty_transaction(&mut self, out: &mut Vec<u8>) {
        self.fail_remaining_with_mail_failure();
        out.extend_from_slice(b"RSET\r\n");
        self.expects.push_back(Expect::Rset);
        self.stage = Timeout::Mail;
    }

    fn fail_remaining_with_mail_failure(&mut self) {
        let failure = self
            .transaction
            .as_ref()
            .and_then(|t| t.mail_failure.clone());
        if let Some(f) = failure {
            self.fail_remaining(&f);
        }
    }

    /// Every recipient without a result gets `outcome`.
    fn fail_remaining(&mut self, outcome: &Outcome) {
        let Some(t) = self.transaction.as_mut() else {
            return;
        };
        for i in 0..t.done.len() {
            if !t.done[i] {
                t.done[i] = true;
                self.actions.push_back(Action::Recipient {
                    index: i,
                    outcome: outcome.clone(),
                });
            }
        }
    }

    fn result(&mut self, index: usize, outcome: Outcome) {
        if let Some(t) = self.transaction.as_mut()
            && let Some(done) = t.done.get_mut(index)
            && !*done
        {
            *done = true;
            self.actions.push_back(Action::Recipient { index, outcome });
        }
    }

    /// The message is over; `counted`: the server took it (what [`Client::messages`] counts).
    fn finish_message(&mut self, counted: bool) {
        self.transaction = None;
        if counted {
            self.messages += 1;
        }
        self.actions.push_back(Action::MessageDone);
        if self.phase == Phase::Transaction {
            self.phase = Phase::Ready;
            self.stage = Timeout::Mail;
            self.actions.push_back(Action::Ready);
        }
    }

    fn setup_failed(&mut self, outcome: Outcome) {
        self.actions.push_back(Action::Failed(outcome));
        // Say goodbye when the server still talks to us.
        self.phase = Phase::Quitting;
        self.pending.clear();
        self.expects.clear();
        self.pending.push_back(Pending::Command {
            line: b"QUIT\r\n".to_vec(),
            expect: Expect::Quit,
            pipelined: true,
        });
        self.flush();
    }

    fn ready(&mut self) {
        self.phase = Phase::Ready;
        self.stage = Timeout::Mail;
        self.actions.push_back(Action::Ready);
    }

    /// After EHLO/HELO (and again after STARTTLS): TLS, then AUTH, then ready.
    fn after_hello(&mut self) {
        if !self.tls {
            let want = self.config.tls != TlsMode::Never;
            if want && self.caps.starttls {
                self.pending.push_back(Pending::Command {
                    line: b"STARTTLS\r\n".to_vec(),
                    expect: Expect::StartTls,
                    pipelined: false,
                });
                self.flush();
                return;
            }
            if self.config.tls == TlsMode::Required {
                self.setup_failed(Outcome::temporary(
                    EnhancedStatus::new(4, 7, 10),
                    "TLS is required and the server does not offer STARTTLS",
                ));
                return;
            }
        }
        if let Some(creds) = self.config.auth.clone() {
            if !self.tls && !self.config.auth_without_tls {
                self.setup_failed(Outcome::temporary(
                    EnhancedStatus::new(4, 7, 10),
                    "AUTH is configured but the connection is not encrypted (STARTTLS missing or refused)",
                ));
                return;
            }
            if self.caps.auth_plain {
                let token = base64(format!("\0{}\0{}", creds.user, creds.password).as_bytes());
                self.pending.push_back(Pending::Command {
                    line: format!("AUTH PLAIN {token}\r\n").into_bytes(),
                    expect: Expect::AuthPlain,
                    pipelined: false,
                });
            } else if self.caps.auth_login {
                self.pending.push_back(Pending::Command {
                    line: b"AUTH LOGIN\r\n".to_vec(),
                    expect: Expect::AuthLoginUser,
                    pipelined: false,
                });
            } else {
                self.setup_failed(Outcome::temporary(
                    EnhancedStatus::new(4, 7, 8),
                    "AUTH is configured but the server offers neither PLAIN nor LOGIN",
                ));
                return;
            }
            self.flush();
            return;
        }
        self.ready();
    }

    fn on_reply(&mut self, reply: ServerReply) {
        self.replies += 1;
        let Some(expect) = self.expects.pop_front() else {
            // A reply nobody asked for: the server is out of step.
            self.abort(&format!("unexpected reply from the server: {reply}"));
            return;
        };
        match expect {
            Expect::Greeting => {
                if reply.is_positive() {
                    self.ehlo();
                } else {
                    self.setup_failed(reply.outcome(EnhancedStatus::new(4, 4, 0), "the greeting"));
                    return;
                }
            }
            Expect::Ehlo => {
                if reply.is_positive() {
                    self.caps = Capabilities::parse(reply.lines.iter().skip(1).map(String::as_str));
                    self.after_hello();
                    return;
                } else if reply.code >= 500 && self.config.protocol == Protocol::Smtp {
                    self.ehlo_failed = !self.tls;
                    self.used_helo = true;
                    self.pending.push_back(Pending::Command {
                        line: format!("HELO {}\r\n", self.config.helo).into_bytes(),
                        expect: Expect::Helo,
                        pipelined: false,
                    });
                } else {
                    self.setup_failed(reply.outcome(EnhancedStatus::new(4, 4, 0), "EHLO"));
                    return;
                }
            }
            Expect::Helo => {
                if reply.is_positive() {
                    self.caps = Capabilities::default();
                    self.after_hello();
                    return;
                }
                self.setup_failed(reply.outcome(EnhancedStatus::new(4, 4, 0), "HELO"));
                return;
            }
            Expect::StartTls => {
                if reply.code == 220 {
                    if !self.buffer.is_empty() {
                        self.abort(
                            "the server sent data after its STARTTLS reply (possible injection)",
                        );
                        return;
                    }
                    self.actions.push_back(Action::StartTls);
                    return;
                }
                if self.config.tls == TlsMode::Required {
                    self.setup_failed(reply.outcome(EnhancedStatus::new(4, 7, 10), "STARTTLS"));
                    return;
                }
                // Opportunistic: go on in plaintext.
                self.config.tls = TlsMode::Never;
                self.after_hello();
                return;
            }
            Expect::AuthPlain | Expect::AuthLoginDone => {
                if reply.code == 235 {
                    self.ready();
                } else {
                    self.setup_failed(reply.outcome(EnhancedStatus::new(5, 7, 8), "AUTH"));
                }
                return;
            }
            Expect::AuthLoginUser | Expect::AuthLoginPassword => {
                if reply.code != 334 {
                    self.setup_failed(reply.outcome(EnhancedStatus::new(5, 7, 8), "AUTH LOGIN"));
                    return;
                }
                let Some(creds) = self.config.auth.clone() else {
                    return;
                };
                let (value, next) = if expect == Expect::AuthLoginUser {
                    (creds.user, Expect::AuthLoginPassword)
                } else {
                    (creds.password, Expect::AuthLoginDone)
                };
                self.pending.push_back(Pending::Command {
                    line: format!("{}\r\n", base64(value.as_bytes())).into_bytes(),
                    expect: next,
                    pipelined: false,
                });
            }
            Expect::Mail => {
                if !reply.is_positive() {
                    let o = reply.outcome(EnhancedStatus::new(5, 0, 0), "MAIL FROM");
                    if let Some(t) = self.transaction.as_mut() {
                        t.mail_failure = Some(o.clone());
                    }
                    // Commands not yet written are dropped (without PIPELINING).
                    let mut skipped_content = false;
                    self.pending.retain(|p| match p {
                        Pending::Command {
                            expect: Expect::Rcpt(_) | Expect::Data,
                            ..
                        } => false,
                        Pending::Data | Pending::Bdat => {
                            skipped_content = true;
                            false
                        }
                        _ => true,
                    });
                    if skipped_content {
                        self.pending.push_back(Pending::Data);
                    }
                    self.fail_remaining(&o);
                }
                self.stage = Timeout::Rcpt;
            }
            Expect::Rcpt(i) => {
                let failure = self
                    .transaction
                    .as_ref()
                    .and_then(|t| t.mail_failure.clone());
                if let Some(f) = failure {
                    self.result(i, f);
                } else if reply.is_positive() {
                    if let Some(t) = self.transaction.as_mut() {
                        t.accepted.push(i);
                    }
                } else {
                    let o = reply.outcome(EnhancedStatus::new(5, 1, 0), "RCPT TO");
                    self.result(i, o);
                }
                self.stage = Timeout::Rcpt;
            }
            Expect::Data => {
                if reply.code == 354 {
                    let mut out = Vec::new();
                    if self.has_accepted()
                        && let Some(t) = &self.transaction
                    {
                        out = dot_stuff(&t.message.body);
                    }
                    out.extend_from_slice(b".\r\n");
                    self.actions.push_back(Action::Send(out));
                    self.expects.push_front(Expect::DataEnd);
                    self.stage = Timeout::DataTermination;
                    return;
                }
                // Refused (or 503 after every RCPT failed under PIPELINING).
                let o = reply.outcome(EnhancedStatus::new(5, 0, 0), "DATA");
                self.fail_accepted(&o);
                self.fail_remaining_with_mail_failure();
                self.pending.push_back(Pending::Command {
                    line: b"RSET\r\n".to_vec(),
                    expect: Expect::Rset,
                    pipelined: false,
                });
            }
            Expect::DataEnd | Expect::Bdat => {
                let stage = if expect == Expect::Bdat {
                    "BDAT"
                } else {
                    "end of DATA"
                };
                let o = reply.outcome(EnhancedStatus::new(5, 0, 0), stage);
                let Some(t) = self.transaction.as_mut() else {
                    return;
                };
                if t.accepted.is_empty() || t.mail_failure.is_some() {
                    // The empty body sent after an unexpected 354.
                    self.fail_remaining_with_mail_failure();
                    self.pending.push_back(Pending::Command {
                        line: b"RSET\r\n".to_vec(),
                        expect: Expect::Rset,
                        pipelined: false,
                    });
                } else if self.config.protocol == Protocol::Lmtp {
                    let index = t.accepted[t.answered];
                    t.answered += 1;
                    let more = t.answered < t.accepted.len();
                    self.result(index, o);
                    if more {
                        self.expects.push_front(expect);
                        return;
                    }
                    let positive = reply.is_positive();
                    self.fail_remaining_with_mail_failure();
                    self.finish_message(positive);
                } else {
                    let positive = reply.is_positive();
                    self.fail_accepted(&o);
                    self.finish_message(positive);
                }
            }
            Expect::Rset => {
                // Whatever the answer, the message is over; a refused RSET ends the session.
                if reply.is_positive() {
                    if self.transaction.is_some() {
                        self.finish_message(false);
                    } else {
                        self.ready();
                    }
                } else {
                    if self.transaction.is_some() {
                        self.finish_message(false);
                    }
                    self.quit();
                }
            }
            Expect::Quit => {
                self.close();
                return;
            }
        }
        self.flush();
    }

    fn fail_accepted(&mut self, outcome: &Outcome) {
        let accepted = self
            .transaction
            .as_ref()
            .map(|t| t.accepted.clone())
            .unwrap_or_default();
        for i in accepted {
            self.result(i, outcome.clone());
        }
    }
}

fn to_reply(r: smtp_proto::Response<String>) -> ServerReply {
    let status = if r.esc[0] != 0 {
        EnhancedStatus::parse(&format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2]))
    } else {
        None
    };
    let lines: Vec<String> = r.message.split('\n').map(clean).collect();
    let text = lines.join(" ").trim().to_string();
    ServerReply {
        code: r.code,
        status,
        text,
        lines,
    }
}

/// Base64 (RFC 4648, with padding) for AUTH.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let index = |shift: u32| ALPHABET[((n >> shift) & 63) as usize] as char;
        out.push(index(18));
        out.push(index(12));
        out.push(if chunk.len() > 1 { index(6) } else { '=' });
        out.push(if chunk.len() > 2 { index(0) } else { '=' });
    }
    out
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
