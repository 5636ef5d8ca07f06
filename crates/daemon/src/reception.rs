//! The receiving side of the daemon as the SMTP/LMTP sessions see it: recipient checks at
//! RCPT time (the routers marked for verification, and the relay rule), and acceptance
//! into the durable queue with a Received header, then the first delivery attempt at once.
//!
//! Trusts the routers and the queue; nothing the client sent (the addresses were parsed by
//! the session; the Received header's values are cleaned here). Fails with SMTP replies:
//! 550 5.1.1 for unknown users (local domains with `verify_local_recipients`, other domains
//! with `verify_remote_recipients`), 554 5.7.1 for relaying from a client that may not
//! relay, 451/452 when the queue cannot take the message (452 4.3.1 also before the message
//! when the queue's file system has less than `queue_min_free` free).
//!
//! Local submissions (SMTP on the submission socket: `cursus sendmail -bs`, programs) get
//! the From, Date and Message-ID fields RFC 6409 §8 lets a submission server add, when the
//! header lacks them (cursus_mail::submission, shared with the CLI).
//!
//! A small message is accepted from memory in one step; a larger one is written into a
//! queue draft as it arrives ([`Backend::spool`]): the Received header first (dated, like
//! the envelope's arrival time, at the start of DATA or BDAT, as Postfix's smtpd does, so
//! both paths write the same bytes), then for a local submission the start of the message
//! is held until its header section is decided (cursus_mail::submission::HeaderHold, at
//! most 1 MiB) and the missing fields go before it.
//!
//! Attacks stopped:
//! - Open relay: mail for a domain that is not a local domain is accepted only from loopback
//!   addresses and the local submission socket (unless the routers deliver it here).
//! - Header injection through the HELO name or the login: control characters are replaced
//!   before they go into the Received header.
//! - Loss of an accepted message: the queue id is returned (and 250 sent) only after the
//!   queue made the message and its envelope durable.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cursus_mail::submission::{Completion, HeaderHold, Held, missing_fields};
use cursus_mail::{EnhancedStatus, Sender};
use cursus_proto::{Body, Notify as ProtoNotify, Protocol, Reply, Ret as ProtoRet};
use cursus_queue::{
    BodyType, Client as QueueClient, Draft, Envelope, Notify, Queue, QueueError, QueueId,
    Recipient, Ret,
};
use jiff::Timestamp;
use tokio::sync::mpsc::UnboundedSender;

use crate::routing::{Routes, Verified};
use crate::server::{Backend, Client, Incoming, Spool, Verdict};

/// The daemon's [`Backend`].
pub struct Reception {
    pub queue: Arc<Queue>,
    pub routes: Arc<dyn Routes>,
    pub hostname: String,
    pub verify_local: bool,
    /// Verify recipients of other domains too (relayed mail).
    pub verify_remote: bool,
    /// Octets to keep free on the queue's file system.
    pub queue_min_free: u64,
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

/// The routers' status when no router accepts an address of a domain that is not local.
const UNROUTABLE: EnhancedStatus = EnhancedStatus::new(5, 4, 4);
/// The routers' status for an address they cannot read.
const BAD_SYNTAX: EnhancedStatus = EnhancedStatus::new(5, 1, 3);

impl Backend for Reception {
    fn verify(&self, sender: &Sender, recipient: &str, client: &Client) -> Verdict {
        let verified = self.routes.verify(recipient, sender);
        let relayed = !self.routes.in_local_domain(recipient);
        let check = if relayed {
            self.verify_remote
        } else {
            self.verify_local
        };
        match verified {
            // The routers deliver it here (a local user, or a virtual domain's mailbox).
            Verified::Local => Verdict::Accept,
            // Another domain, from a client that may not relay: whatever the routers say.
            _ if relayed && !may_relay(client) => Verdict::Refuse(Reply::new(
                554,
                EnhancedStatus::new(5, 7, 1),
                format!("<{recipient}>: Relay access denied"),
            )),
            // Relayed, or an address of a local domain redirected elsewhere.
            Verified::Remote => Verdict::Accept,
            // Unverified relaying: the delivery finds out (and bounces).
            Verified::Deferred(_) if relayed && !check => Verdict::Accept,
            Verified::Refused(_) if client.local_submission => Verdict::Accept,
            // No verification router accepts an address of another domain: a domain no
            // router names is refused as unroutable (5.4.4, whatever the switches); in a
            // domain routed here the address is unknown (5.1.1) when verifying, and left to
            // the delivery when not.
            Verified::Refused(o)
                if relayed && o.status == UNROUTABLE && !self.routes.routes_domain(recipient) =>
            {
                Verdict::Refuse(Reply::new(
                    550,
                    o.status,
                    format!("<{recipient}>: {}", o.text),
                ))
            }
            Verified::Refused(o) if relayed && check && o.status == UNROUTABLE => {
                Verdict::Refuse(Reply::new(
                    550,
                    EnhancedStatus::new(5, 1, 1),
                    format!(
                        "<{recipient}>: Recipient address rejected: user unknown (no \
                         verification router accepts it)"
                    ),
                ))
            }
            // Without verification the mailbox is not asked about; a malformed address
            // (an empty domain) is still refused.
            Verified::Refused(o) if !check && o.status != BAD_SYNTAX => Verdict::Accept,
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

    fn room_for(&self, size: u64) -> Result<(), Reply> {
        let needed = self.queue_min_free.saturating_add(size);
        if needed == 0 {
            return Ok(());
        }
        // A file system that cannot say is given the benefit of the doubt: the write at
        // the end of the message still answers 452 if it fails.
        let Ok(fs) = nix::sys::statvfs::statvfs(self.queue.root()) else {
            return Ok(());
        };
        // fsblkcnt_t and c_ulong are u64 here but narrower on some targets.
        #[allow(clippy::useless_conversion)]
        let free = u64::from(fs.blocks_available()).saturating_mul(u64::from(fs.fragment_size()));
        if free >= needed {
            return Ok(());
        }
        crate::log::line(&format!(
            "refused a message: the queue's file system has {free} octets free, less than the \
             {needed} needed (queue_min_free {} + SIZE {size})",
            self.queue_min_free
        ));
        Err(Reply::new(
            452,
            EnhancedStatus::new(4, 3, 1),
            "Insufficient system storage, try again later".to_string(),
        ))
    }

    fn accept(&self, incoming: Incoming, message: Vec<u8>) -> Result<String, Reply> {
        let prepared = self.prepare(&incoming);
        let completed = prepared
            .completion
            .as_ref()
            .map(|values| values.fields(&message))
            .unwrap_or_default();
        let reader = prepared
            .received
            .as_bytes()
            .chain(completed.as_bytes())
            .chain(&message[..]);
        let result = self.queue.accept(&prepared.envelope, reader);
        queued(
            result,
            &incoming,
            &prepared,
            message.len() as u64,
            &self.first_attempt,
        )
    }

    fn spool(&self, incoming: &Incoming) -> Result<Box<dyn Spool>, Reply> {
        let prepared = self.prepare(incoming);
        let mut draft = self.queue.begin().map_err(refusal)?;
        draft
            .append(prepared.received.as_bytes())
            .map_err(refusal)?;
        Ok(Box::new(Spooled {
            queue: self.queue.clone(),
            draft,
            hold: HeaderHold::new(),
            prepared,
            first_attempt: self.first_attempt.clone(),
        }))
    }
}

/// What a message gets from the daemon before its content: the envelope, the Received
/// header and, for a local submission, the values of the fields it may lack.
struct Prepared {
    envelope: Envelope,
    login: Option<String>,
    received: String,
    completion: Option<CompletionValues>,
}

/// A message too large to hold in memory, written into the queue as it arrives: the
/// Received header first, then (for a local submission, once its header section is known)
/// the missing fields, then the content. Dropped before its commit, the file goes.
struct Spooled {
    queue: Arc<Queue>,
    draft: Draft,
    hold: HeaderHold,
    prepared: Prepared,
    first_attempt: UnboundedSender<QueueId>,
}

impl Spooled {
    fn write_content(&mut self, content: &[u8]) -> Result<(), QueueError> {
        let Some(values) = &self.prepared.completion else {
            return self.draft.append(content);
        };
        match self.hold.push(content) {
            Held::Holding => Ok(()),
            Held::Passing => self.draft.append(content),
            Held::Released(head) => {
                self.draft.append(values.fields(&head).as_bytes())?;
                self.draft.append(&head)
            }
        }
    }
}

impl Spool for Spooled {
    fn write(&mut self, content: &[u8]) -> Result<(), Reply> {
        self.write_content(content).map_err(refusal)
    }

    fn commit(self: Box<Self>, incoming: Incoming, size: u64) -> Result<String, Reply> {
        let mut this = *self;
        if let (Some(values), Some(head)) = (&this.prepared.completion, this.hold.end()) {
            this.draft
                .append(values.fields(&head).as_bytes())
                .and_then(|()| this.draft.append(&head))
                .map_err(refusal)?;
        }
        let result = this.queue.commit(this.draft, &this.prepared.envelope);
        queued(result, &incoming, &this.prepared, size, &this.first_attempt)
    }
}

/// The reply to a message the queue took (logged, and sent to its first attempt) or
/// refused. `size` is the content's, without the fields the daemon added.
fn queued(
    result: Result<QueueId, QueueError>,
    incoming: &Incoming,
    prepared: &Prepared,
    size: u64,
    first_attempt: &UnboundedSender<QueueId>,
) -> Result<String, Reply> {
    let id = result.map_err(refusal)?;
    crate::log::line(&format!(
        "{id}: from=<{}>, size={size}, nrcpt={}, client={}{}",
        incoming.sender.address().unwrap_or(""),
        prepared.envelope.recipients.len(),
        incoming.client.description,
        prepared
            .login
            .as_ref()
            .map(|l| format!(", login={l}"))
            .unwrap_or_default()
    ));
    let _ = first_attempt.send(id);
    Ok(id.to_string())
}

/// The reply when the queue cannot take a message: 452 4.3.1 for a full disk or quota,
/// else 451 4.3.0 (logged).
fn refusal(e: QueueError) -> Reply {
    if e.is_disk_full() {
        return Reply::new(
            452,
            EnhancedStatus::new(4, 3, 1),
            "Insufficient system storage, try again later".to_string(),
        );
    }
    crate::log::line(&format!("queue refused a message: {e}"));
    Reply::new(
        451,
        EnhancedStatus::new(4, 3, 0),
        "Local error in processing, try again later".to_string(),
    )
}

/// The values of the From, Date and Message-ID fields a local submission may lack.
struct CompletionValues {
    /// Empty when neither the user nor the sender is known: no From is added.
    from: String,
    full_name: Option<String>,
    date: String,
    message_id: String,
}

impl CompletionValues {
    /// The fields `header` (the message, or enough of its start) lacks, CRLF line ends.
    fn fields(&self, header: &[u8]) -> String {
        let values = Completion {
            from: &self.from,
            full_name: self.full_name.as_deref(),
            date: &self.date,
            message_id: &self.message_id,
        };
        let mut out = String::new();
        for field in missing_fields(header, &values) {
            if self.from.is_empty() && field.starts_with("From:") {
                continue;
            }
            out.push_str(&field);
            out.push_str("\r\n");
        }
        out
    }
}

impl Reception {
    /// The envelope, Received header and completion values of a message. Times are those
    /// of the start of its content (DATA or the first BDAT), as Postfix's smtpd stamps its
    /// Received header: everything here is known before the content, so a large message is
    /// written to the queue as it arrives.
    fn prepare(&self, incoming: &Incoming) -> Prepared {
        let now = incoming.received;
        let protocol = match (incoming.protocol, incoming.client.ip, incoming.tls) {
            (Protocol::Lmtp, _, _) => "LMTP",
            (_, None, _) => "local",
            (_, _, true) => "ESMTPS",
            (_, _, false) => "ESMTP",
        };
        let user = incoming.client.uid.and_then(|uid| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
        });
        let login = user.as_ref().map(|u| u.name.clone());
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
        let received = received_header(incoming, protocol, login.as_deref(), &self.hostname, now);
        let completion = (incoming.client.local_submission && incoming.protocol == Protocol::Smtp)
            .then(|| self.completion(incoming, user.as_ref(), now));
        Prepared {
            envelope,
            login,
            received,
            completion,
        }
    }

    /// The From, Date and Message-ID values for a local submission. From names the
    /// submitting user (SO_PEERCRED) at our host name, else the envelope sender; without
    /// either it is left out.
    fn completion(
        &self,
        incoming: &Incoming,
        user: Option<&nix::unistd::User>,
        now: Timestamp,
    ) -> CompletionValues {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let from = match (user, incoming.sender.address()) {
            (Some(u), _) => format!("{}@{}", u.name, self.hostname),
            (None, Some(a)) if !a.is_empty() => a.to_string(),
            _ => String::new(),
        };
        // The GECOS field's first part is the full name.
        let full_name = user.and_then(|u| {
            u.gecos
                .to_str()
                .ok()
                .and_then(|g| g.split(',').next())
                .map(str::to_string)
        });
        let date = now
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%a, %d %b %Y %H:%M:%S %z")
            .to_string();
        let message_id = format!(
            "{}.{}.{}.{}@{}",
            now.as_second(),
            now.subsec_nanosecond(),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed),
            self.hostname
        );
        CompletionValues {
            from,
            full_name,
            date,
            message_id,
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
