//! The receiving side of the daemon as the SMTP/LMTP sessions see it: recipient checks at
//! RCPT time (the routers marked for verification, and the relay rule), and acceptance
//! into the durable queue with a Received header, then the first delivery attempt at once.
//!
//! Trusts the routers and the queue; nothing the client sent (the addresses were parsed by
//! the session; the Received header's values are cleaned here). Fails with SMTP replies:
//! 550 5.1.1 for unknown local users (when verification is on), 554 5.7.1 for relaying from
//! a client that may not relay, 451/452 when the queue cannot take the message.
//!
//! Attacks stopped:
//! - Open relay: mail for a domain this host does not handle is accepted only from loopback
//!   addresses and the local submission socket.
//! - Header injection through the HELO name or the login: control characters are replaced
//!   before they go into the Received header.
//! - Loss of an accepted message: the queue id is returned (and 250 sent) only after the
//!   queue made the message and its envelope durable.

use std::io::Read;
use std::sync::Arc;

use cursus_mail::{EnhancedStatus, Sender};
use cursus_proto::{Body, Notify as ProtoNotify, Protocol, Reply, Ret as ProtoRet};
use cursus_queue::{
    BodyType, Client as QueueClient, Envelope, Notify, Queue, QueueId, Recipient, Ret,
};
use jiff::Timestamp;
use tokio::sync::mpsc::UnboundedSender;

use crate::routing::{Routes, Verified};
use crate::server::{Backend, Client, Incoming, Verdict};

/// The daemon's [`Backend`].
pub struct Reception {
    pub queue: Arc<Queue>,
    pub routes: Arc<dyn Routes>,
    pub hostname: String,
    pub verify_local: bool,
    /// Queue ids for their first delivery attempt.
    pub first_attempt: UnboundedSender<QueueId>,
}

fn may_relay(client: &Client) -> bool {
    match client.ip {
        None => true,
        Some(ip) => ip.is_loopback(),
    }
}

fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                ' '
            } else {
                c
            }
        })
        .take(200)
        .collect()
}

impl Backend for Reception {
    fn verify(&self, sender: &Sender, recipient: &str, client: &Client) -> Verdict {
        match self.routes.verify(recipient, sender) {
            Verified::Local => Verdict::Accept,
            Verified::Remote if may_relay(client) => Verdict::Accept,
            Verified::Remote => Verdict::Refuse(Reply::new(
                554,
                EnhancedStatus::new(5, 7, 1),
                format!("<{recipient}>: Relay access denied"),
            )),
            Verified::Refused(_) if !self.verify_local || client.local_submission => {
                Verdict::Accept
            }
            Verified::Refused(o) => Verdict::Refuse(Reply::new(
                if o.status.class() == 4 { 450 } else { 550 },
                o.status,
                format!("<{recipient}>: {}", o.text),
            )),
            Verified::Deferred(o) => Verdict::Refuse(Reply::new(
                451,
                o.status.as_temporary(),
                format!("<{recipient}>: {}", o.text),
            )),
        }
    }

    fn accept(&self, incoming: Incoming, message: Vec<u8>) -> Result<String, Reply> {
        let now = Timestamp::now();
        let protocol = match (incoming.protocol, incoming.client.ip, incoming.tls) {
            (Protocol::Lmtp, _, _) => "LMTP",
            (_, None, _) => "local",
            (_, _, true) => "ESMTPS",
            (_, _, false) => "ESMTP",
        };
        let login = incoming.client.uid.and_then(|uid| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        });
        // A recipient given twice (To and Cc of the same person, in any case) gets one
        // copy, as with Postfix and Exim; the first RCPT's DSN parameters count.
        let mut seen = std::collections::HashSet::new();
        let recipients: Vec<Recipient> = incoming
            .recipients
            .iter()
            .filter(|(address, _)| seen.insert(address.to_ascii_lowercase()))
            .map(|(address, params)| Recipient {
                address: address.clone(),
                notify: params.notify.as_ref().map(notify),
                orcpt: params.orcpt.as_ref().map(|o| format!("rfc822;{o}")),
            })
            .collect();
        let envelope = Envelope {
            sender: incoming.sender.clone(),
            recipients,
            ret: incoming.params.ret.map(|r| match r {
                ProtoRet::Full => Ret::Full,
                ProtoRet::Headers => Ret::Headers,
            }),
            envid: incoming.params.envid.clone(),
            body: match incoming.params.body {
                Some(Body::EightBitMime) => BodyType::EightBitMime,
                Some(Body::BinaryMime) => BodyType::BinaryMime,
                _ => BodyType::SevenBit,
            },
            smtputf8: incoming.params.smtputf8,
            received: now,
            client: QueueClient {
                protocol: protocol.to_string(),
                helo: incoming.helo.clone(),
                address: incoming.client.ip,
                hostname: None,
                login: login.clone(),
            },
        };
        let received = received_header(&incoming, protocol, login.as_deref(), &self.hostname, now);
        let reader = received.as_bytes().chain(&message[..]);
        match self.queue.accept(&envelope, reader) {
            Ok(id) => {
                crate::log::line(&format!(
                    "{id}: from=<{}>, size={}, nrcpt={}, client={}{}",
                    incoming.sender.address().unwrap_or(""),
                    message.len(),
                    envelope.recipients.len(),
                    incoming.client.description,
                    login.map(|l| format!(", login={l}")).unwrap_or_default()
                ));
                let _ = self.first_attempt.send(id);
                Ok(id.to_string())
            }
            Err(e) if e.is_disk_full() => Err(Reply::new(
                452,
                EnhancedStatus::new(4, 3, 1),
                "Insufficient system storage, try again later".to_string(),
            )),
            Err(e) => {
                crate::log::line(&format!("queue refused a message: {e}"));
                Err(Reply::new(
                    451,
                    EnhancedStatus::new(4, 3, 0),
                    "Local error in processing, try again later".to_string(),
                ))
            }
        }
    }
}

fn notify(n: &ProtoNotify) -> Notify {
    let mut out = Notify::NEVER;
    if let ProtoNotify::On {
        success,
        failure,
        delay,
    } = *n
    {
        if success {
            out = out.union(Notify::SUCCESS);
        }
        if failure {
            out = out.union(Notify::FAILURE);
        }
        if delay {
            out = out.union(Notify::DELAY);
        }
    }
    out
}

/// RFC 5321 §4.4 trace field.
fn received_header(
    incoming: &Incoming,
    protocol: &str,
    login: Option<&str>,
    hostname: &str,
    now: Timestamp,
) -> String {
    let helo = clean(incoming.helo.as_deref().unwrap_or("unknown"));
    let from = match (incoming.client.ip, login) {
        (Some(ip), _) => format!("{helo} ([{ip}])"),
        (None, Some(l)) => format!("{helo} (local user {})", clean(l)),
        (None, None) => helo,
    };
    let for_clause = match incoming.recipients.as_slice() {
        [(one, _)] => format!("\r\n\tfor <{}>", clean(one)),
        _ => String::new(),
    };
    let date = now
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%a, %d %b %Y %H:%M:%S %z");
    format!(
        "Received: from {from}\r\n\tby {} (cursusd) with {protocol}{for_clause};\r\n\t{date}\r\n",
        clean(hostname)
    )
}
