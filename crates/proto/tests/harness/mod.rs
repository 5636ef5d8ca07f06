//! Test driver: feeds bytes into a Session, answers its events with a fixed policy, and
//! writes down what happened as a transcript of short strings.
//!
//! Trusts: the crate under test only through its public API. The transcript merges adjacent
//! `Data` chunks, so it does not depend on how the input was split.

#![allow(dead_code)]

use cursus_proto::{
    Answer, Config, EnhancedStatus, Event, InputError, Limits, Output, Protocol, Reply, Sender,
    Session,
};

/// How the fake daemon answers.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Recipients whose local part starts with "unknown" get 550 5.1.1.
    pub refuse_unknown: bool,
    /// DATA/BDAT start gets 452 4.3.1 (a full disk).
    pub disk_full: bool,
    /// LMTP message end: recipients whose local part starts with "full" get 452 4.2.2.
    pub lmtp_per_recipient: bool,
}

pub struct Driver {
    pub session: Session,
    pub policy: Policy,
    pub transcript: Vec<String>,
    data: Vec<u8>,
}

impl Driver {
    pub fn new(config: Config, policy: Policy) -> Driver {
        let mut session = Session::new(config);
        let greeting = session.greeting();
        let mut d = Driver {
            session,
            policy,
            transcript: Vec::new(),
            data: Vec::new(),
        };
        d.transcript.push(render(&greeting));
        d
    }

    pub fn smtp() -> Driver {
        Driver::new(Config::new("mx.example", Protocol::Smtp), Policy::default())
    }

    pub fn with_limits(limits: Limits) -> Driver {
        let mut config = Config::new("mx.example", Protocol::Smtp);
        config.limits = limits;
        Driver::new(config, Policy::default())
    }

    /// Feeds one read and drains the session.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.feed_raw(bytes);
        self.flush_data();
    }

    /// Feeds `bytes` in reads of the given sizes (cycled); Data chunks merge across reads.
    pub fn feed_chunks(&mut self, bytes: &[u8], sizes: &[usize]) {
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes
                .get(i % sizes.len().max(1))
                .copied()
                .unwrap_or(1)
                .clamp(1, rest.len());
            let (head, tail) = rest.split_at(n);
            self.feed_raw(head);
            rest = tail;
            i += 1;
        }
        self.flush_data();
    }

    fn feed_raw(&mut self, bytes: &[u8]) {
        // Input after the session closed is the daemon's to drop; only an early talker is
        // worth a line.
        if let Err(InputError::EarlyTalker) = self.session.receive(bytes) {
            self.transcript.push("INPUT REFUSED".into());
        }
        self.drain();
    }

    pub fn drain(&mut self) {
        while let Some(out) = self.session.poll() {
            match out {
                Output::Reply(r) => {
                    self.flush_data();
                    self.transcript.push(render(&r));
                }
                Output::Event(Event::Data(bytes)) => self.data.extend_from_slice(&bytes),
                Output::Event(e) => {
                    self.flush_data();
                    self.transcript.push(describe(&e));
                    if let Some(answer) = self.decide(&e) {
                        self.session.answer(answer).expect("a valid answer");
                    }
                }
            }
        }
    }

    fn flush_data(&mut self) {
        if !self.data.is_empty() {
            let text = escape(&self.data);
            self.transcript.push(format!("DATA {text}"));
            self.data.clear();
        }
    }

    fn decide(&self, e: &Event) -> Option<Answer> {
        match e {
            Event::Mail { .. } => Some(Answer::Accept),
            Event::Rcpt { recipient, .. } => {
                if self.policy.refuse_unknown && recipient.as_str().starts_with("unknown") {
                    Some(Answer::Refuse(Reply::new(
                        550,
                        EnhancedStatus::new(5, 1, 1),
                        "Error: no such user",
                    )))
                } else {
                    Some(Answer::Accept)
                }
            }
            Event::DataStart => Some(if self.policy.disk_full {
                Answer::Refuse(Reply::new(
                    452,
                    EnhancedStatus::new(4, 3, 1),
                    "Error: insufficient system storage",
                ))
            } else {
                Answer::Accept
            }),
            Event::DataEnd { .. } => {
                if self.policy.lmtp_per_recipient {
                    let replies = self
                        .session
                        .transaction()
                        .map(|t| {
                            t.recipients
                                .iter()
                                .map(|(r, _)| {
                                    if r.as_str().starts_with("full") {
                                        Reply::new(
                                            452,
                                            EnhancedStatus::new(4, 2, 2),
                                            format!("<{}> mailbox full", r.as_str()),
                                        )
                                    } else {
                                        Reply::new(
                                            250,
                                            EnhancedStatus::new(2, 0, 0),
                                            format!("<{}> delivered", r.as_str()),
                                        )
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(Answer::PerRecipient(replies))
                } else {
                    Some(Answer::AcceptWith(Reply::new(
                        250,
                        EnhancedStatus::new(2, 0, 0),
                        "Ok: queued as Q1",
                    )))
                }
            }
            _ => None,
        }
    }
}

/// A reply as one line: `250-a|250 b`.
pub fn render(r: &Reply) -> String {
    r.to_string().trim_end().replace("\r\n", "|")
}

pub fn describe(e: &Event) -> String {
    match e {
        Event::Mail { sender, params } => {
            let s = match sender {
                Sender::Null => "<>".to_string(),
                Sender::Address(a) => a.clone(),
            };
            if *params == Default::default() {
                format!("MAIL {s}")
            } else {
                format!("MAIL {s} {params:?}")
            }
        }
        Event::Rcpt { recipient, params } => {
            if *params == Default::default() {
                format!("RCPT {}", recipient.as_str())
            } else {
                format!("RCPT {} {params:?}", recipient.as_str())
            }
        }
        Event::DataStart => "DATASTART".into(),
        Event::Data(_) => unreachable!("merged by the driver"),
        Event::DataAbandoned(why) => format!("ABANDON {why:?}"),
        Event::DataEnd { size } => format!("END {size}"),
        Event::Reset => "RESET".into(),
        Event::StartTls => "STARTTLS".into(),
        Event::Quit => "QUIT".into(),
        Event::Disconnect(why) => format!("DISCONNECT {why:?}"),
    }
}

pub fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Runs `input` through a fresh SMTP session fed all at once.
pub fn transcript(input: &[u8]) -> Vec<String> {
    let mut d = Driver::smtp();
    d.feed(input);
    d.transcript
}
