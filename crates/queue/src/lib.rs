//! cursus-queue: the mail queue of cursusd: a durable spool with group commit, a
//! per-recipient journal, restart recovery, and the hooks a scheduler needs.
//!
//! A message is two files in one of 256 bucket directories: its bytes (`<ID>.msg`, never
//! changed) and its journal (`<ID>.jnl`: the envelope record, then one appended record per
//! change of state). [`Queue::accept`] returns only once both, and their directory entries,
//! are on disk; every later change is appended and fdatasynced before its call returns.
//! [`Queue::open`] recovers by itself from a crash at any instant, by directory scan alone;
//! journals are replayed when first needed. NOTES.md has the layout, the durability argument
//! and measured numbers.
//!
//! Trusts the spool directory to belong to the queue's user alone (checked at open) and the
//! caller for envelope values. Synchronous: no runtime, blocking file I/O; cursusd calls it
//! from blocking threads. Fails with [`QueueError`], which names the path or the queue id.

#![forbid(unsafe_code)]

mod codec;
pub mod crc;
mod draft;
pub mod envelope;
mod error;
pub mod fault;
mod group_commit;
pub mod id;
pub mod journal;
pub mod mailq;
mod queue;
pub mod schedule;
mod spool;
pub mod state;

pub use draft::Draft;
pub use envelope::{BodyType, Client, Envelope, Notify, Recipient, Ret};
pub use error::QueueError;
pub use fault::{FaultHook, Step};
pub use id::{InvalidQueueId, QueueId};
pub use queue::{Due, DueIter, EXPIRED, ListIter, Options, Queue, Recovery, Stats};
pub use schedule::{RetryPolicy, Schedule};
pub use state::{QueuedMessage, RecipientState, Relay};
