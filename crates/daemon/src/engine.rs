//! Delivery attempts: the first one right after a message is accepted, and later ones when
//! the queue says a recipient is due. Each recipient is routed (redirects expanded in
//! memory), each delivery is made by its transport, the outcome is recorded in the queue's
//! journal, and when every recipient is final the sender gets a DSN for the failures (from
//! the null sender, never for a message from the null sender) and the message is removed.
//!
//! Trusts the queue, the routers and the transports. Blocking: runs on the blocking pool.
//! Never loses a message: an outcome is recorded before anything is removed, a DSN is queued
//! (durably) before the original is finished, and a crash in between repeats at most the
//! delivery that was in flight.
//!
//! Known limit: a recipient that expands to several deliveries (an alias list) is final only
//! when all of them are; if some succeed and one is deferred, the retry repeats all of them
//! (duplicates for those recipients, never a loss).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cursus_lda::protocol::Envelope as LdaEnvelope;
use cursus_mail::dsn::{self, RecipientReport};
use cursus_mail::{EnhancedStatus, Outcome, OutcomeKind, codes};
use cursus_queue::{Queue, QueueId, QueuedMessage, Recipient, RecipientState, Relay};
use jiff::Timestamp;

use crate::bounce::{self, Bounces};
use crate::local::Local;
use crate::log;
use crate::remote::Outbound;
use crate::routing::{NextHop, Routed, Routes};

/// A remote delivery waiting for its transaction: recipient `index` of the message, as
/// `address` after routing.
#[derive(Debug, Clone)]
struct RemotePart {
    index: usize,
    address: String,
    router: String,
    transport: String,
    next_hop: NextHop,
}

/// A message whose remote deliveries are under way: its outcomes so far (`None`: only
/// remote deliveries, not answered yet) and its remote recipients grouped by next hop.
struct Waiting {
    id: QueueId,
    message: QueuedMessage,
    outcomes: Vec<(usize, Option<Outcome>)>,
    groups: Vec<(NextHop, Vec<RemotePart>)>,
    started: Instant,
    /// The length of the journal `message` was read from (Queue::message_seen).
    journal_len: u64,
    /// Recipients delivered only to other servers, and how (for the DSN they are owed).
    relays: Vec<(usize, Relay)>,
}

/// The delivery side of the daemon.
pub struct Engine {
    pub queue: Arc<Queue>,
    pub routes: Arc<dyn Routes>,
    pub local: Local,
    pub hostname: String,
    in_flight: Mutex<HashSet<QueueId>>,
    /// The smtp/lmtp transports; `None`: remote routes are deferred (4.4.0).
    outbound: Option<Arc<Outbound>>,
    /// How notices are written and when delay notices go.
    bounces: Bounces,
    /// The hints database (crate::hints); `None`: no hints.
    hints: Option<Arc<crate::hints::Hints>>,
}

impl Engine {
    pub fn new(
        queue: Arc<Queue>,
        routes: Arc<dyn Routes>,
        local: Local,
        hostname: String,
    ) -> Engine {
        Engine {
            queue,
            routes,
            local,
            hostname,
            in_flight: Mutex::new(HashSet::new()),
            outbound: None,
            bounces: Bounces::default(),
            hints: None,
        }
    }

    /// Consults and feeds the hints database.
    pub fn set_hints(&mut self, hints: Arc<crate::hints::Hints>) {
        self.hints = Some(hints);
    }

    /// Sets the notices' templates, script and delay ages.
    pub fn set_bounces(&mut self, bounces: Bounces) {
        self.bounces = bounces;
    }

    /// The smtp/lmtp transports, when remote delivery is on.
    pub fn outbound(&self) -> Option<&Arc<Outbound>> {
        self.outbound.as_ref()
    }

    /// Enables remote delivery.
    pub fn set_outbound(&mut self, outbound: Arc<Outbound>) {
        self.outbound = Some(outbound);
    }

    /// Tries every due recipient of `id` once. Returns without doing anything when another
    /// attempt of the same message is running.
    pub fn attempt(&self, id: QueueId) {
        self.attempt_with(id, false);
    }

    /// With `force`, every recipient not yet final is tried now, whatever its schedule says
    /// (`sendmail -q`); a held message stays held.
    pub fn attempt_with(&self, id: QueueId, force: bool) {
        self.attempt_batch(&[id], force);
    }

    /// Attempts several messages from one thread of the blocking pool: each message's local
    /// deliveries are made in turn, then the remote deliveries of them all go to the
    /// outbound service at once (messages for the same destination follow each other on
    /// its connections), and each message's outcomes are recorded as soon as its own
    /// answers are in. Saves the hand-over between threads per message that dominated the
    /// cost of a queue run; a message is never kept waiting for another one's answers.
    pub fn attempt_batch(&self, ids: &[QueueId], force: bool) {
        let mut waiting: Vec<Option<Waiting>> = Vec::new();
        let mut jobs = Vec::new();
        for &id in ids {
            if !self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id)
            {
                continue;
            }
            match self.prepare(id, force) {
                Some((w, job)) => {
                    waiting.push(Some(w));
                    jobs.push(job);
                }
                None => self.release(id),
            }
        }
        let Some(outbound) = self.outbound.as_ref().filter(|_| !waiting.is_empty()) else {
            return;
        };
        let answers = outbound.deliver_jobs(jobs);
        let mut left = waiting.len();
        while left > 0 {
            let Ok((i, results)) = answers.recv() else {
                break;
            };
            if let Some(w) = waiting.get_mut(i).and_then(Option::take) {
                let id = w.id;
                self.complete_remote(w, Some(results));
                self.release(id);
                left -= 1;
            }
        }
        // The outbound side went away without answering (shutdown, a panic): what is
        // left is deferred.
        for w in waiting.into_iter().flatten() {
            let id = w.id;
            self.complete_remote(w, None);
            self.release(id);
        }
    }

    fn release(&self, id: QueueId) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Reads the message, makes its local deliveries, and returns its remote deliveries
    /// still to make (with the outbound request), or `None` when the attempt is over.
    fn prepare(&self, id: QueueId, force: bool) -> Option<(Waiting, crate::remote::Job)> {
        let (message, journal_len) = match self.queue.message_seen(id) {
            Ok(m) => m,
            // Finished since it was listed or started (by another attempt, an expiry, or
            // `cursus queue delete`).
            Err(cursus_queue::QueueError::NotFound(_)) => return None,
            Err(e) => {
                log::line(&format!("{id}: cannot read the queue entry: {e}"));
                return None;
            }
        };
        let now = Timestamp::now();
        let due: Vec<usize> = if force && !message.held && !message.deleted {
            (0..message.recipients.len())
                .filter(|&i| !message.recipients[i].is_final())
                .collect()
        } else {
            message.due_recipients(now)
        };
        if due.is_empty() {
            self.finish_with(message);
            return None;
        }
        let file = match self.queue.open_message(id) {
            Ok(f) => f,
            Err(e) => {
                log::line(&format!("{id}: cannot open the message: {e}"));
                return None;
            }
        };
        let mut outcomes = Vec::with_capacity(due.len());
        let mut remote = Vec::new();
        let started = Instant::now();
        for index in due {
            let Some(rcpt) = message.envelope.recipients.get(index) else {
                continue;
            };
            let started = Instant::now();
            let outcome =
                self.deliver_recipient(id, &message, index, rcpt, &file, started, &mut remote);
            outcomes.push((index, outcome));
        }
        let mut waiting = Waiting {
            id,
            message,
            outcomes,
            groups: Vec::new(),
            started,
            journal_len,
            relays: Vec::new(),
        };
        if remote.is_empty() || self.outbound.is_none() {
            self.conclude(waiting, Vec::new());
            return None;
        }
        // By position (pread), not through the descriptor's offset: a local delivery agent
        // was given the same open file and may still be reading it.
        let read = read_at_start(&file, waiting.message.size);
        drop(file);
        for p in remote {
            match waiting.groups.iter_mut().find(|(h, _)| *h == p.next_hop) {
                Some((_, list)) => list.push(p),
                None => waiting.groups.push((p.next_hop.clone(), vec![p])),
            }
        }
        let body = match read {
            Ok(body) => body,
            Err(e) => {
                let o = Outcome::temporary(
                    codes::SYSTEM_STATUS,
                    format!("cannot read the message: {e}"),
                );
                let results = waiting
                    .groups
                    .iter()
                    .map(|(_, list)| crate::remote::GroupResult::all(list.len(), o.clone()))
                    .collect();
                self.complete_remote(waiting, Some(results));
                return None;
            }
        };
        let base = crate::remote::message::outgoing(&waiting.message.envelope, body);
        let groups = waiting
            .groups
            .iter()
            .map(|(hop, list)| crate::remote::Group {
                next_hop: hop.clone(),
                recipients: list
                    .iter()
                    .map(|p| {
                        crate::remote::message::recipient(
                            &p.address,
                            waiting.message.envelope.recipients.get(p.index),
                        )
                    })
                    .collect(),
            })
            .collect();
        Some((waiting, (base, groups)))
    }

    /// Merges the answers of a message's remote groups (`None`: no answer came) into its
    /// outcomes, with hints and log lines, and concludes the attempt.
    fn complete_remote(&self, mut w: Waiting, answers: Option<Vec<crate::remote::GroupResult>>) {
        let groups = std::mem::take(&mut w.groups);
        let answers = answers.unwrap_or_else(|| {
            let o = Outcome::temporary(EnhancedStatus::new(4, 3, 0), "remote delivery task failed");
            groups
                .iter()
                .map(|(_, list)| crate::remote::GroupResult::all(list.len(), o.clone()))
                .collect()
        });
        // Recipients with no local delivery: their DSN depends on where they went.
        let remote_only: Vec<usize> = w
            .outcomes
            .iter()
            .filter(|(_, o)| o.is_none())
            .map(|(i, _)| *i)
            .collect();
        let mut lines = Vec::new();
        for ((_, list), answer) in groups.into_iter().zip(answers) {
            for (p, mut o) in list.into_iter().zip(answer.outcomes) {
                if let Some(h) = &self.hints {
                    h.remote(
                        w.id,
                        &w.message.envelope,
                        p.index,
                        &p.next_hop,
                        &p.address,
                        &answer.relay,
                        &mut o,
                    );
                }
                if o.kind == OutcomeKind::Delivered && remote_only.contains(&p.index) {
                    let how = if p.next_hop.lmtp {
                        // A mail store: delivered, as by the LDA.
                        Relay::No
                    } else if answer.dsn {
                        Relay::DsnPassed
                    } else {
                        Relay::WithoutDsn
                    };
                    note_relay(&mut w.relays, p.index, how);
                }
                lines.push(remote_line(
                    w.id,
                    &p,
                    &answer.relay,
                    &answer.tls,
                    answer.reused,
                    &o,
                    &w.message,
                    w.started,
                ));
                if let Some((_, slot)) = w.outcomes.iter_mut().find(|(i, _)| *i == p.index) {
                    *slot = Some(match slot.take() {
                        None => o,
                        Some(prev) if rank(&o) > rank(&prev) => o,
                        Some(prev) => prev,
                    });
                }
            }
        }
        self.conclude(w, lines);
    }

    /// Records the outcomes of an attempt (or removes the message when all went well).
    /// `lines`: the remote deliveries' log lines, written with the removal's in one write.
    fn conclude(&self, w: Waiting, mut lines: Vec<String>) {
        let Waiting {
            id,
            message,
            outcomes,
            journal_len,
            relays,
            ..
        } = w;
        let outcomes: Vec<(usize, Outcome)> = outcomes
            .into_iter()
            .map(|(i, o)| {
                (
                    i,
                    o.unwrap_or_else(|| {
                        Outcome::temporary(codes::SYSTEM_STATUS, "no delivery made")
                    }),
                )
            })
            .collect();
        // Everything delivered and nothing owed to the sender: the message leaves without an
        // outcome record (see Queue::remove_delivered: a crash before the removal is durable
        // repeats these deliveries, never loses the message: local copies are synced, and a
        // remote server took responsibility with its 250).
        let seen = Some((&message, journal_len));
        match self
            .queue
            .remove_delivered_seen(id, &outcomes, &relays, Timestamp::now(), seen)
        {
            Ok(true) => {
                lines.push(format!("{id}: removed"));
                log::lines(&lines);
                return;
            }
            Ok(false) => log::lines(&lines),
            Err(e) => {
                lines.push(format!("{id}: cannot remove: {e}"));
                log::lines(&lines);
            }
        }
        // The state record() returns is the journal's, so no second read is needed.
        let now = Timestamp::now();
        match self.queue.record_relayed(id, &outcomes, &relays, now) {
            Ok(after) => {
                self.warn_delays(&message, &after, &outcomes, now);
                self.finish_with(after);
            }
            Err(e) => log::line(&format!("{id}: cannot record outcomes: {e}")),
        }
    }

    /// Local deliveries are made now; remote ones are added to `remote` for
    /// [`Engine::deliver_remote`]. The worst local outcome, `None` when all are remote.
    #[allow(clippy::too_many_arguments)]
    fn deliver_recipient(
        &self,
        id: QueueId,
        message: &QueuedMessage,
        index: usize,
        rcpt: &Recipient,
        file: &std::fs::File,
        started: Instant,
        remote: &mut Vec<RemotePart>,
    ) -> Option<Outcome> {
        let sender = &message.envelope.sender;
        let routed = match self.routes.route(&rcpt.address, sender) {
            Ok(r) => r,
            Err(outcome) => {
                log_outcome(id, &rcpt.address, "-", "-", &outcome, message, started);
                return Some(outcome);
            }
        };
        if routed.is_empty() {
            let o = Outcome::permanent(
                codes::BAD_MAILBOX,
                cursus_mail::ExitCode::NoUser,
                "the address routed to no delivery",
            );
            log_outcome(id, &rcpt.address, "-", "-", &o, message, started);
            return Some(o);
        }
        let mut worst: Option<Outcome> = None;
        for r in routed {
            let (address, router, transport, outcome) = match r {
                Routed::Local {
                    address,
                    user,
                    destination,
                    extension,
                    router,
                    transport,
                } => {
                    let envelope = LdaEnvelope {
                        sender: sender.address().map(str::to_string),
                        original_recipient: rcpt
                            .orcpt
                            .as_deref()
                            .and_then(|o| o.split_once(';').map(|(_, a)| a.to_string()))
                            .unwrap_or_else(|| rcpt.address.clone()),
                        final_recipient: address.clone(),
                        extension,
                    };
                    if matches!(self.local, Local::Service { .. }) {
                        // A cursus-lda child reads the file and may outlive our wait.
                        self.queue.handed_out(id);
                    }
                    let (mut o, read) = self.local.deliver(&user, &destination, &envelope, file);
                    if let Some(h) = &self.hints {
                        h.local(id, &address, &destination, read, &mut o);
                    }
                    (address, router, transport, o)
                }
                Routed::Remote {
                    address,
                    router,
                    transport,
                    next_hop,
                } if self.outbound.is_some() => {
                    remote.push(RemotePart {
                        index,
                        address,
                        router,
                        transport,
                        next_hop,
                    });
                    continue;
                }
                Routed::Remote {
                    address,
                    router,
                    transport,
                    ..
                } => {
                    let o = Outcome::temporary(
                        EnhancedStatus::new(4, 4, 0),
                        format!(
                            "transport {transport}: remote delivery is not available in this version"
                        ),
                    );
                    (address, router, transport, o)
                }
                Routed::Failed {
                    address,
                    router,
                    outcome,
                } => (address, router, "-".to_string(), outcome),
            };
            log_outcome(
                id, &address, &router, &transport, &outcome, message, started,
            );
            worst = Some(match worst {
                None => outcome,
                Some(w) if rank(&outcome) > rank(&w) => outcome,
                Some(w) => w,
            });
        }
        worst
    }

    /// When every recipient of `message` (its current state) is final: queue the DSN that
    /// is owed (if any), then remove it.
    fn finish_with(&self, message: QueuedMessage) {
        let id = message.id;
        if !message.is_complete() {
            return;
        }
        let owed = message.dsn_recipients();
        let dsn_id = if owed.is_empty() || message.dsn_sent.is_some() {
            None
        } else {
            match self.queue_dsn(&message, &owed) {
                Ok(d) => Some(d),
                Err(e) => {
                    log::line(&format!(
                        "{id}: cannot queue the delivery status notification: {e}"
                    ));
                    return;
                }
            }
        };
        match self.queue.finish(id, dsn_id, Timestamp::now()) {
            Ok(()) => log::line(&format!("{id}: removed")),
            Err(e) => log::line(&format!("{id}: cannot remove: {e}")),
        }
        if let Some(d) = dsn_id {
            log::line(&format!("{id}: sender non-delivery notification: {d}"));
            self.attempt(d);
        }
    }

    fn queue_dsn(&self, message: &QueuedMessage, owed: &[usize]) -> Result<QueueId, String> {
        let reports: Vec<RecipientReport> = owed
            .iter()
            .filter_map(|&i| bounce::report_for(&self.bounces, message, i))
            .collect();
        bounce::queue_notice(
            &self.queue,
            &self.hostname,
            &self.bounces,
            message,
            &reports,
            None,
        )
    }

    /// After an attempt: a delay notice for the recipients still deferred that just passed
    /// one of the configured ages, when their sender wants one (never for the null sender).
    fn warn_delays(
        &self,
        before: &QueuedMessage,
        after: &QueuedMessage,
        outcomes: &[(usize, Outcome)],
        now: Timestamp,
    ) {
        if self.bounces.delay_warnings.is_empty() || !dsn::should_notify(&after.envelope.sender) {
            return;
        }
        let received = after.envelope.received;
        let mut reports = Vec::new();
        let mut give_up = None;
        for (index, outcome) in outcomes {
            let (Some(RecipientState::Deferred { .. }), Some(rcpt)) = (
                after.recipients.get(*index),
                after.envelope.recipients.get(*index),
            ) else {
                continue;
            };
            let previous = match before.recipients.get(*index) {
                Some(RecipientState::Deferred { last, .. }) => *last,
                _ => received,
            };
            if !bounce::wants_delay_notice(rcpt) || !self.bounces.delay_due(received, previous, now)
            {
                continue;
            }
            if let Some(report) = bounce::report_for(&self.bounces, after, *index) {
                reports.push(report);
                let g = self.bounces.give_up(&after.envelope, rcpt, outcome);
                give_up = give_up.max(g);
            }
        }
        if reports.is_empty() {
            return;
        }
        let id = after.id;
        match bounce::queue_notice(
            &self.queue,
            &self.hostname,
            &self.bounces,
            after,
            &reports,
            give_up,
        ) {
            Ok(notice) => {
                log::line(&format!("{id}: sender delay notification: {notice}"));
                self.attempt(notice);
            }
            Err(e) => log::line(&format!("{id}: cannot queue the delay notification: {e}")),
        }
    }
}

/// Notes how a recipient's delivery left (several deliveries of one recipient, an alias
/// list: a final delivery here owes "delivered", else one without DSN owes "relayed").
fn note_relay(relays: &mut Vec<(usize, Relay)>, index: usize, how: Relay) {
    let weight = |r: Relay| match r {
        Relay::No => 2,
        Relay::WithoutDsn => 1,
        Relay::DsnPassed => 0,
    };
    match relays.iter_mut().find(|(i, _)| *i == index) {
        Some((_, r)) if weight(how) > weight(*r) => *r = how,
        Some(_) => {}
        None => relays.push((index, how)),
    }
}

/// The message from offset 0, read by position: the `size` bytes the envelope says it
/// holds (the queue checked the file's length when it first read the journal).
fn read_at_start(file: &std::fs::File, size: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut body = vec![0; usize::try_from(size).unwrap_or(0)];
    file.read_exact_at(&mut body, 0)?;
    Ok(body)
}

fn rank(o: &Outcome) -> u8 {
    match o.kind {
        OutcomeKind::Delivered => 0,
        OutcomeKind::Permanent => 1,
        OutcomeKind::Temporary => 2,
    }
}

#[allow(clippy::too_many_arguments)]
fn remote_line(
    id: QueueId,
    part: &RemotePart,
    relay: &str,
    tls: &str,
    reused: bool,
    o: &Outcome,
    message: &QueuedMessage,
    started: Instant,
) -> String {
    format!(
        "{id}: to=<{}>, router={}, transport={}, relay={relay}, conn={}, tls={tls}, {}",
        part.address,
        part.router,
        part.transport,
        if reused { "reused" } else { "new" },
        outcome_tail(o, message, started)
    )
}

/// The end of a delivery's log line: `delay=, delays=, dsn=, status= (text)`.
fn outcome_tail(o: &Outcome, message: &QueuedMessage, started: Instant) -> String {
    let status = match o.kind {
        OutcomeKind::Delivered => "sent",
        OutcomeKind::Temporary => "deferred",
        OutcomeKind::Permanent => "bounced",
    };
    let age = Timestamp::now()
        .duration_since(message.envelope.received)
        .as_secs_f64();
    format!(
        "delay={age:.2}, delays={:.3}, dsn={}, status={status} ({})",
        started.elapsed().as_secs_f64(),
        o.status,
        o.text
    )
}

fn log_outcome(
    id: QueueId,
    to: &str,
    router: &str,
    transport: &str,
    o: &Outcome,
    message: &QueuedMessage,
    started: Instant,
) {
    log::line(&format!(
        "{id}: to=<{to}>, router={router}, transport={transport}, {}",
        outcome_tail(o, message, started)
    ));
}
