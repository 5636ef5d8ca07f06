//! What the queue knows about a message: its envelope, size, and the state of each
//! recipient, as rebuilt by replaying its journal.
//!
//! Pure data, no I/O. The rules that decide when a message is finished and who is owed a
//! delivery status notification live here, in one place, so that the daemon, recovery and
//! `cursus queue` agree on them.

use cursus_mail::EnhancedStatus;
use jiff::Timestamp;

use crate::envelope::Envelope;
use crate::id::QueueId;

/// How a delivery left this system, for the DSN it may owe (RFC 3461 §4.2, RFC 3464
/// Action).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Relay {
    /// Delivered here (a mailbox, or a mail store over LMTP): NOTIFY=SUCCESS is owed a
    /// "delivered" notice.
    #[default]
    No,
    /// Handed to a server without the DSN extension: NOTIFY=SUCCESS is owed a "relayed"
    /// notice, since no receipt will come from there.
    WithoutDsn,
    /// Handed to a server with DSN, NOTIFY passed on: the receipt is that server's to
    /// send, none is owed here.
    DsnPassed,
}

/// Where one recipient stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipientState {
    /// Accepted, no attempt recorded yet: due at once.
    Pending,
    /// The last attempt failed temporarily; try again at `next`.
    Deferred {
        attempts: u32,
        last: Timestamp,
        next: Timestamp,
        status: EnhancedStatus,
        text: String,
    },
    /// Final: delivered.
    Delivered {
        at: Timestamp,
        status: EnhancedStatus,
        text: String,
        relay: Relay,
    },
    /// Final: failed for good (a permanent error, or expiry).
    Failed {
        at: Timestamp,
        status: EnhancedStatus,
        text: String,
    },
}

impl RecipientState {
    /// Delivered or failed: nothing more will happen to this recipient.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RecipientState::Delivered { .. } | RecipientState::Failed { .. }
        )
    }

    /// When this recipient should next be tried (`None` when final).
    pub fn next_attempt(&self, received: Timestamp) -> Option<Timestamp> {
        match self {
            RecipientState::Pending => Some(received),
            RecipientState::Deferred { next, .. } => Some(*next),
            _ => None,
        }
    }

    /// Attempts recorded so far that ended in a deferral.
    pub fn attempts(&self) -> u32 {
        match self {
            RecipientState::Deferred { attempts, .. } => *attempts,
            _ => 0,
        }
    }
}

/// A message as the queue holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: QueueId,
    pub envelope: Envelope,
    /// Size of the message file in bytes.
    pub size: u64,
    /// One state per envelope recipient, in envelope order.
    pub recipients: Vec<RecipientState>,
    /// Held messages are never due; `release` makes them due again.
    pub held: bool,
    /// `Some` once the caller has recorded that the DSN for the final recipients was sent
    /// (with the DSN's own queue id when there was one).
    pub dsn_sent: Option<Option<QueueId>>,
    /// An administrator deleted it; recovery finishes the removal.
    pub deleted: bool,
}

impl QueuedMessage {
    /// Every recipient is delivered or failed.
    pub fn is_complete(&self) -> bool {
        self.recipients.iter().all(RecipientState::is_final)
    }

    /// Recipients the sender must hear about in a DSN now that they are final: failures
    /// (unless NOTIFY says otherwise) and successes with NOTIFY=SUCCESS. Never for the null
    /// sender (a bounce is not bounced, RFC 5321 §4.5.5).
    pub fn dsn_recipients(&self) -> Vec<usize> {
        if self.envelope.sender.address().is_none() {
            return Vec::new();
        }
        self.recipients
            .iter()
            .zip(&self.envelope.recipients)
            .enumerate()
            .filter(|(_, (state, rcpt))| match state {
                RecipientState::Failed { .. } => rcpt.wants_failure_notice(),
                RecipientState::Delivered { relay, .. } => {
                    *relay != Relay::DsnPassed && rcpt.wants_success_notice()
                }
                _ => false,
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Complete, and either no DSN is owed or it has been recorded as sent: the files can go.
    pub fn is_removable(&self) -> bool {
        self.deleted
            || (self.is_complete() && (self.dsn_sent.is_some() || self.dsn_recipients().is_empty()))
    }

    /// The earliest time any recipient is due, `None` if none ever will be by itself
    /// (complete or held).
    pub fn next_due(&self) -> Option<Timestamp> {
        if self.held || self.deleted {
            return None;
        }
        self.recipients
            .iter()
            .filter_map(|r| r.next_attempt(self.envelope.received))
            .min()
    }

    /// Recipients due at `now` (none while held).
    pub fn due_recipients(&self, now: Timestamp) -> Vec<usize> {
        if self.held || self.deleted {
            return Vec::new();
        }
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.next_attempt(self.envelope.received)
                    .is_some_and(|t| t <= now)
            })
            .map(|(i, _)| i)
            .collect()
    }
}
