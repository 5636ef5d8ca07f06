//! Fault injection: named steps of an accept and of a journal append where a test can make
//! the queue stop dead, as if the process had been killed there.
//!
//! Used only by tests (the hook is `None` in production and costs one branch per step).
//! When the hook answers `true` for a step, the operation returns
//! [`QueueError::Injected`](crate::QueueError::Injected) at once, leaving every file exactly
//! as it was at that instant, with no cleanup; reopening the queue must then find the
//! message either absent or whole, and the journal either with or without the record.
//! Steps marked "torn" first write only half of what the step writes.

use std::sync::Arc;

/// A point inside an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// The message file exists, empty.
    MessageCreated,
    /// Half of the message bytes are written (torn).
    MessageTorn,
    /// All message bytes written, not yet synced.
    MessageWritten,
    /// The message file is synced.
    MessageSynced,
    /// The journal exists in tmp/ with half of its envelope record (torn).
    JournalTorn,
    /// The journal's envelope record is written in tmp/, not yet synced.
    JournalWritten,
    /// The journal is synced, still in tmp/.
    JournalSynced,
    /// The journal is renamed into its bucket; the directory is not yet synced.
    Renamed,
    /// The directory is synced; accept is about to return.
    Committed,
    /// An appended record is half written (torn).
    AppendTorn,
    /// An appended record is written, not yet synced.
    AppendWritten,
    /// An appended record is synced; the call is about to return.
    AppendSynced,
}

impl Step {
    /// Every step of an accept, in order.
    pub const ACCEPT: [Step; 9] = [
        Step::MessageCreated,
        Step::MessageTorn,
        Step::MessageWritten,
        Step::MessageSynced,
        Step::JournalTorn,
        Step::JournalWritten,
        Step::JournalSynced,
        Step::Renamed,
        Step::Committed,
    ];
    /// Every step of a journal append, in order.
    pub const APPEND: [Step; 3] = [Step::AppendTorn, Step::AppendWritten, Step::AppendSynced];
}

/// Decides, at each step, whether to stop there.
pub type FaultHook = Arc<dyn Fn(Step) -> bool + Send + Sync>;
