//! The envelope the queue keeps with each message: sender, recipients with their DSN
//! parameters (RFC 3461), RET and ENVID, the body type, when and from whom it came.
//!
//! Trusts the caller for the values (the SMTP session parsed and checked them); trusts
//! nothing when decoding one back from disk: [`Envelope::decode`] checks every length and
//! tag, and a record that does not decode is reported as corrupt, never half-used.
//! The envelope is written once, as the first journal record, and never rewritten: what
//! happens to each recipient later is appended (see `journal.rs`).

use std::net::IpAddr;

use cursus_mail::Sender;
use jiff::Timestamp;

use crate::codec::{DecodeError, Invalid, Reader, Writer};

/// NOTIFY (RFC 3461 §4.1): which events the sender wants a DSN for. The empty set is
/// `NOTIFY=NEVER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Notify(u8);

impl Notify {
    pub const NEVER: Notify = Notify(0);
    pub const SUCCESS: Notify = Notify(1);
    pub const FAILURE: Notify = Notify(2);
    pub const DELAY: Notify = Notify(4);

    pub const fn union(self, other: Notify) -> Notify {
        Notify(self.0 | other.0)
    }

    pub const fn contains(self, other: Notify) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub const fn is_never(self) -> bool {
        self.0 == 0
    }
}

/// RET (RFC 3461 §4.3): how much of the message a failure DSN returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Headers,
}

/// BODY (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// One envelope recipient and its DSN parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given at RCPT, without angle brackets.
    pub address: String,
    /// `None` when the client gave no NOTIFY (the MTA's default applies: failures only).
    pub notify: Option<Notify>,
    /// ORCPT as received, `addr-type;xtext` (RFC 3461 §4.2), kept verbatim for the DSN.
    pub orcpt: Option<String>,
}

impl Recipient {
    pub fn new(address: impl Into<String>) -> Self {
        Recipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }

    /// Whether a permanent failure of this recipient is reported to the sender.
    pub fn wants_failure_notice(&self) -> bool {
        self.notify.is_none_or(|n| n.contains(Notify::FAILURE))
    }

    /// Whether a successful delivery is reported to the sender.
    pub fn wants_success_notice(&self) -> bool {
        self.notify.is_some_and(|n| n.contains(Notify::SUCCESS))
    }

    /// Whether a delay is reported to the sender.
    pub fn wants_delay_notice(&self) -> bool {
        self.notify.is_some_and(|n| n.contains(Notify::DELAY))
    }
}

/// Where the message came from, for the Received field, logs and the DSN.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Client {
    /// `ESMTP`, `ESMTPS`, `LMTP`, `local`, ... (RFC 3848 `with` keywords).
    pub protocol: String,
    pub helo: Option<String>,
    pub address: Option<IpAddr>,
    /// The client's verified reverse DNS name, if any.
    pub hostname: Option<String>,
    /// The SMTP AUTH identity, or the local user for submissions over the unix socket.
    pub login: Option<String>,
}

/// Everything about a message that is not its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub sender: Sender,
    pub recipients: Vec<Recipient>,
    pub ret: Option<Ret>,
    /// ENVID (RFC 3461 §4.4), xtext as received.
    pub envid: Option<String>,
    pub body: BodyType,
    pub smtputf8: bool,
    /// When the message was received (the end of DATA); expiry counts from here.
    pub received: Timestamp,
    pub client: Client,
}

impl Envelope {
    /// A plain envelope (no DSN parameters, local client), received now.
    pub fn new(sender: Sender, recipients: Vec<Recipient>) -> Self {
        Envelope {
            sender,
            recipients,
            ret: None,
            envid: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            received: Timestamp::now(),
            client: Client {
                protocol: "local".into(),
                ..Client::default()
            },
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.opt_str(self.sender.address());
        w.u32(self.recipients.len() as u32);
        for r in &self.recipients {
            w.str(&r.address);
            match r.notify {
                None => w.u8(0xFF),
                Some(n) => w.u8(n.0),
            };
            w.opt_str(r.orcpt.as_deref());
        }
        w.u8(match self.ret {
            None => 0,
            Some(Ret::Full) => 1,
            Some(Ret::Headers) => 2,
        });
        w.opt_str(self.envid.as_deref());
        w.u8(match self.body {
            BodyType::SevenBit => 0,
            BodyType::EightBitMime => 1,
            BodyType::BinaryMime => 2,
        });
        w.u8(u8::from(self.smtputf8));
        w.time(self.received);
        w.str(&self.client.protocol);
        w.opt_str(self.client.helo.as_deref());
        let address = self.client.address.map(|a| a.to_string());
        w.opt_str(address.as_deref());
        w.opt_str(self.client.hostname.as_deref());
        w.opt_str(self.client.login.as_deref());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Envelope, DecodeError> {
        let sender = match r.opt_str()? {
            None => Sender::Null,
            Some(a) => Sender::Address(a),
        };
        // A recipient takes at least 4 + 1 + 1 bytes.
        let count = r.count(6)?;
        let mut recipients = Vec::with_capacity(count);
        for _ in 0..count {
            let address = r.str()?;
            let notify = match r.u8()? {
                0xFF => None,
                n if n <= 7 => Some(Notify(n)),
                _ => return Err(Invalid("NOTIFY")),
            };
            let orcpt = r.opt_str()?;
            recipients.push(Recipient {
                address,
                notify,
                orcpt,
            });
        }
        let ret = match r.u8()? {
            0 => None,
            1 => Some(Ret::Full),
            2 => Some(Ret::Headers),
            _ => return Err(Invalid("RET")),
        };
        let envid = r.opt_str()?;
        let body = match r.u8()? {
            0 => BodyType::SevenBit,
            1 => BodyType::EightBitMime,
            2 => BodyType::BinaryMime,
            _ => return Err(Invalid("BODY")),
        };
        let smtputf8 = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Invalid("SMTPUTF8")),
        };
        let received = r.time()?;
        let protocol = r.str()?;
        let helo = r.opt_str()?;
        let address = match r.opt_str()? {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| Invalid("client address"))?),
        };
        let hostname = r.opt_str()?;
        let login = r.opt_str()?;
        Ok(Envelope {
            sender,
            recipients,
            ret,
            envid,
            body,
            smtputf8,
            received,
            client: Client {
                protocol,
                helo,
                address,
                hostname,
                login,
            },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An envelope with every field set, for round trips here and in the journal tests.
    pub(crate) fn full() -> Envelope {
        Envelope {
            sender: Sender::Address("alice@example.org".into()),
            recipients: vec![
                Recipient {
                    address: "bob@example.net".into(),
                    notify: Some(Notify::SUCCESS.union(Notify::FAILURE)),
                    orcpt: Some("rfc822;bob@example.net".into()),
                },
                Recipient {
                    address: "carol@example.net".into(),
                    notify: Some(Notify::NEVER),
                    orcpt: None,
                },
                Recipient::new("dave@δοκιμή.example"),
            ],
            ret: Some(Ret::Headers),
            envid: Some("QQ314159".into()),
            body: BodyType::EightBitMime,
            smtputf8: true,
            received: Timestamp::from_microsecond(1_700_000_000_123_456).expect("valid time"),
            client: Client {
                protocol: "ESMTPS".into(),
                helo: Some("mx.example.org".into()),
                address: Some("2001:db8::1".parse().expect("valid address")),
                hostname: Some("mx.example.org".into()),
                login: None,
            },
        }
    }

    #[test]
    fn round_trip() {
        for envelope in [full(), Envelope::new(Sender::Null, vec![])] {
            let mut w = Writer::default();
            envelope.encode(&mut w);
            let mut r = Reader::new(&w.bytes);
            assert_eq!(Envelope::decode(&mut r), Ok(envelope));
            assert_eq!(r.end(), Ok(()));
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut w = Writer::default();
        full().encode(&mut w);
        for cut in 0..w.bytes.len() {
            let mut r = Reader::new(&w.bytes[..cut]);
            let decoded = Envelope::decode(&mut r).and_then(|_| r.end());
            assert!(decoded.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn notify_defaults() {
        let mut r = Recipient::new("x@y");
        assert!(r.wants_failure_notice() && !r.wants_success_notice());
        r.notify = Some(Notify::NEVER);
        assert!(!r.wants_failure_notice() && !r.wants_delay_notice());
        r.notify = Some(Notify::SUCCESS.union(Notify::DELAY));
        assert!(!r.wants_failure_notice() && r.wants_success_notice() && r.wants_delay_notice());
    }
}
