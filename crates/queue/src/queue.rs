//! The queue: accept a message durably, record what happens to each recipient, hold and
//! release, say what is due, list, and remove what is finished; rebuild all of it at open.
//!
//! Trusts the spool directory to be its own (checked at open, see `spool.rs`) and the
//! caller for envelope values. Synchronous and thread-safe: `&Queue` is shared by every
//! thread that accepts or records (the daemon calls it from blocking threads).
//!
//! The durability argument, step by step (NOTES.md has the long form):
//! 1. accept writes `<bucket>/<ID>.msg` and fdatasyncs it: the bytes are on disk before any
//!    journal exists, so a journal never names a message that is not all there. (A message
//!    streamed as it arrives is the same accept cut in three: `begin` creates the file, the
//!    caller writes into the [`Draft`], `commit` syncs it and goes on with step 2.)
//! 2. It writes the envelope record to `tmp/<ID>.jnl` and fdatasyncs it; then renames it to
//!    `<bucket>/<ID>.jnl`. The rename is the commit point: a journal in a bucket always has
//!    a whole envelope, so open() can trust names alone and read nothing.
//! 3. It fsyncs the bucket directory (group commit): both entries are durable. Only then
//!    does accept return the id. A crash before that leaves `tmp/` debris or an orphan
//!    `.msg` (removed at open), or a whole message that the client was never told about
//!    (delivered; the client may send it again: a duplicate, never a loss).
//! 4. Every later change is one journal record appended and fdatasynced before the call
//!    returns; the envelope is never rewritten. A torn last record is cut off at replay.
//! 5. Removal first makes the reason durable (the final outcomes, the DSN record or the
//!    delete record), then unlinks the journal, then the message: if the unlinks are lost
//!    in a crash, recovery finds the message removable and removes it again. The one
//!    exception is [`Queue::remove_delivered`]: every recipient was delivered at this
//!    attempt (the mailbox writers synced before answering), so the message leaves with no
//!    record; a crash that loses the removal delivers it again (a duplicate, never a loss).
//! 6. "Unlink" above may be a rename to `<name>.spare` (see `spool.rs`), and a new file may be
//!    a spare overwritten, cut to length and synced before its rename into a bucket: the
//!    names, the order of the steps and the syncs are the same, only inodes are reused.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cursus_mail::{EnhancedStatus, Outcome, OutcomeKind};
use jiff::Timestamp;

use crate::draft::{Draft, DraftState, give_back};
use crate::envelope::Envelope;
use crate::error::QueueError;
use crate::fault::{FaultHook, Step};
use crate::group_commit::{CommitError, GroupCommit};
use crate::id::QueueId;
use crate::journal::{self, Change, MAX_RECORD, Record};
use crate::schedule::Schedule;
use crate::spool::{self, Layout};
use crate::state::{QueuedMessage, RecipientState, Relay};

/// RFC 3463: "delivery time expired".
pub const EXPIRED: EnhancedStatus = EnhancedStatus::new(5, 4, 7);
/// Messages taken from the index per lock, when iterating.
const CHUNK: usize = 256;
/// Lock stripes serialising read-modify-append on one message's journal.
const STRIPES: usize = 64;
/// Largest journal read (a message deferred every 2 h for 5 days writes about 60 records).
const MAX_JOURNAL: u64 = 64 << 20;
/// Spare files kept for reuse, at most (a queue run that empties a large queue leaves
/// that many for the next arrivals).
pub(crate) const MAX_SPARES: usize = 32768;
/// The disk space all spares may hold together (their allocated blocks).
pub(crate) const MAX_SPARES_SPACE: u64 = 128 << 20;
/// Message files larger than this are unlinked, not kept as spares.
pub(crate) const MAX_SPARE_BYTES: u64 = 256 << 10;
/// Room a message written into a spare must leave free on the file system beyond its own
/// size (what a new file and its journal would have needed), else the accept is refused.
const MIN_FREE: u64 = 64 << 10;
/// Journals read at once by [`Queue::load_all`] (a million, cold cache: 105 s with one
/// reader, see crates/queue/NOTES.md for eight).
const LOAD_READERS: usize = 8;

/// The journal change for a delivery of recipient `index`: relayed when `relays` says so.
fn delivered(index: usize, outcome: &Outcome, relays: &[(usize, Relay)]) -> Change {
    let (status, text) = (outcome.status, outcome.text.clone());
    match relays.iter().find(|(i, _)| *i == index).map(|(_, r)| *r) {
        None | Some(Relay::No) => Change::Delivered { status, text },
        Some(Relay::WithoutDsn) => Change::Relayed {
            status,
            text,
            dsn_passed: false,
        },
        Some(Relay::DsnPassed) => Change::Relayed {
            status,
            text,
            dsn_passed: true,
        },
    }
}

/// The spare files: the path and allocated bytes of each, their sum (with the room
/// reserved by renames under way), and how many renames are under way (see `retire`).
#[derive(Default)]
pub(crate) struct Spares {
    pub(crate) list: Vec<(PathBuf, u64)>,
    pub(crate) space: u64,
    pub(crate) reserved: usize,
}

/// How a queue is opened.
#[derive(Clone)]
pub struct Options {
    pub schedule: Schedule,
    /// Retry rules that decide instead of `schedule` (the daemon's `[[retry]]` tables).
    pub retry: Option<std::sync::Arc<dyn crate::schedule::RetryPolicy>>,
    /// fsync and fdatasync as described. `false` is for test fixtures and benchmark fills
    /// only: a crash then loses anything.
    pub sync: bool,
    /// Fault injection for tests (see `fault.rs`).
    pub fault: Option<FaultHook>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            schedule: Schedule::default(),
            retry: None,
            sync: true,
            fault: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("schedule", &self.schedule)
            .field("retry", &self.retry.is_some())
            .field("sync", &self.sync)
            .field("fault", &self.fault.is_some())
            .finish()
    }
}

/// What open() found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Messages in the queue (their journals are replayed lazily).
    pub messages: usize,
    /// Files in `tmp/` removed: accepts that never returned.
    pub tmp_removed: usize,
    /// Orphan `.msg` or `.jnl` files removed: accepts that never returned.
    pub orphans_removed: usize,
    /// Names in the buckets that are not ours, left alone.
    pub foreign: usize,
}

/// Counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    /// fdatasync calls on message and journal files.
    pub file_syncs: u64,
    /// fsync calls on bucket directories.
    pub dir_syncs: u64,
}

/// A message with recipients to try now, or with all recipients final and a DSN owed
/// (`recipients` empty, `message.is_complete()`): send the DSN, then [`Queue::finish`].
#[derive(Clone, Debug)]
pub struct Due {
    pub message: QueuedMessage,
    pub recipients: Vec<usize>,
}

/// Where the index has a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Found by the directory scan, journal not read yet.
    Unloaded,
    /// Journal read; due at this time (microseconds), or never by itself.
    Loaded(Option<i64>),
}

/// The in-memory index: every message by id, the loaded ones by due time.
#[derive(Debug, Default)]
struct Index {
    slots: BTreeMap<QueueId, Slot>,
    timeline: BTreeSet<(i64, QueueId)>,
    /// Ids still `Unloaded`, newest first (popped from the end: oldest first).
    unloaded: Vec<QueueId>,
}

impl Index {
    fn set(&mut self, id: QueueId, slot: Slot) {
        if let Some(Slot::Loaded(Some(t))) = self.slots.insert(id, slot) {
            self.timeline.remove(&(t, id));
        }
        if let Slot::Loaded(Some(t)) = slot {
            self.timeline.insert((t, id));
        }
    }

    fn remove(&mut self, id: QueueId) {
        if let Some(Slot::Loaded(Some(t))) = self.slots.remove(&id) {
            self.timeline.remove(&(t, id));
        }
    }
}

/// When a loaded message is due: its earliest recipient, or at once if it is complete and
/// only waits for its DSN.
fn due_key(message: &QueuedMessage) -> Option<i64> {
    if message.is_complete() && !message.is_removable() {
        return Some(message.envelope.received.as_microsecond());
    }
    message.next_due().map(|t| t.as_microsecond())
}

/// A mail queue in one spool directory.
pub struct Queue {
    layout: Layout,
    options: Options,
    /// Held for the queue's lifetime; the lock is released when the file is closed.
    _lock: File,
    buckets: Vec<File>,
    commit: GroupCommit,
    index: Mutex<Index>,
    stripes: Vec<Mutex<()>>,
    recovery: Recovery,
    accepted: AtomicU64,
    file_syncs: AtomicU64,
    /// The files kept for reuse (`<bucket>/<ID>.{msg,jnl}.spare`, `spare/s<N>`).
    spares: Arc<Mutex<Spares>>,
    /// Messages accepted by this process whose file no delivery agent outside it was given
    /// (see [`Queue::handed_out`]): their files can become spares whatever happened.
    fresh: Mutex<HashSet<QueueId>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("root", &self.layout.root)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens (creating if needed) the queue in `root` with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<Queue, QueueError> {
        Queue::open_with(root, Options::default())
    }

    /// Opens the queue and recovers: takes the lock, empties `tmp/`, scans the 256 buckets by
    /// name, removes the orphans of unfinished accepts and indexes every message. Journals
    /// are replayed later, when `due`, `list` or `message` first reach them.
    pub fn open_with(root: impl AsRef<Path>, options: Options) -> Result<Queue, QueueError> {
        let layout = Layout {
            root: root.as_ref().to_path_buf(),
        };
        spool::ensure_dir(&layout.root)?;
        spool::check_owner(&layout.root)?;
        let lock_path = layout.lock();
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| QueueError::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(QueueError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(QueueError::io("lock", &lock_path, e));
            }
        }
        for dir in [layout.tmp(), layout.corrupt(), layout.spare_dir()] {
            spool::ensure_dir(&dir)?;
        }
        let mut found = spool::scan_spares(&layout)?;
        found.sort_unstable();
        let mut spares = Spares::default();
        for (n, space) in found {
            if spares.list.len() < MAX_SPARES && spares.space + space <= MAX_SPARES_SPACE {
                spares.list.push((layout.spare(n), space));
                spares.space += space;
            } else {
                spool::remove_file(&layout.spare(n))?;
            }
        }
        let mut recovery = Recovery {
            tmp_removed: spool::clear_tmp(&layout)?,
            ..Recovery::default()
        };
        let mut index = Index::default();
        let mut buckets = Vec::with_capacity(256);
        for bucket in 0..=255u8 {
            let dir = layout.bucket(bucket);
            spool::ensure_dir(&dir)?;
            let scan = spool::scan_bucket(&dir, bucket)?;
            for id in &scan.orphan_messages {
                spool::remove_file(&layout.message(*id))?;
            }
            for id in &scan.orphan_journals {
                spool::remove_file(&layout.journal(*id))?;
            }
            recovery.orphans_removed += scan.orphan_messages.len() + scan.orphan_journals.len();
            recovery.foreign += scan.foreign;
            for (path, space) in scan.spares {
                if spares.list.len() < MAX_SPARES && spares.space + space <= MAX_SPARES_SPACE {
                    spares.list.push((path, space));
                    spares.space += space;
                } else {
                    spool::remove_file(&path)?;
                }
            }
            for id in scan.complete {
                index.slots.insert(id, Slot::Unloaded);
                index.unloaded.push(id);
            }
            buckets.push(spool::open_dir(&dir)?);
        }
        index.unloaded.sort_unstable_by(|a, b| b.cmp(a));
        recovery.messages = index.slots.len();
        Ok(Queue {
            layout,
            options,
            _lock: lock,
            buckets,
            commit: GroupCommit::default(),
            index: Mutex::new(index),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            recovery,
            accepted: AtomicU64::new(0),
            file_syncs: AtomicU64::new(0),
            spares: Arc::new(Mutex::new(spares)),
            fresh: Mutex::new(HashSet::new()),
        })
    }

    /// What open() found.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn stats(&self) -> Stats {
        Stats {
            accepted: self.accepted.load(Ordering::Relaxed),
            file_syncs: self.file_syncs.load(Ordering::Relaxed),
            dir_syncs: self.commit.syncs(),
        }
    }

    /// Messages in the queue.
    pub fn len(&self) -> usize {
        self.lock_index().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    fn lock_index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stripe(&self, id: QueueId) -> MutexGuard<'_, ()> {
        let n = (id.as_u128() as usize) % STRIPES;
        self.stripes[n].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fault(&self, step: Step) -> Result<(), QueueError> {
        match &self.options.fault {
            Some(hook) if hook(step) => Err(QueueError::Injected(step)),
            _ => Ok(()),
        }
    }

    fn sync_file(&self, file: &File, path: &Path) -> Result<(), QueueError> {
        if self.options.sync {
            self.file_syncs.fetch_add(1, Ordering::Relaxed);
            file.sync_data()
                .map_err(|e| QueueError::io("fdatasync", path, e))?;
        }
        Ok(())
    }

    /// Writes the message and its envelope and makes both durable; the returned id is what
    /// the 250 reply carries. On an error nothing was accepted (a partial message may remain
    /// until the next open, invisible to every other call). The same as [`Queue::begin`],
    /// the message copied into the draft, and [`Queue::commit`].
    pub fn accept(&self, envelope: &Envelope, message: impl Read) -> Result<QueueId, QueueError> {
        let mut message = message;
        let mut draft = self.begin()?;
        if let Err(e) = io::copy(&mut message, &mut draft) {
            let path = draft.path().to_path_buf();
            return Err(QueueError::io("write", path, e));
        }
        self.commit(draft, envelope)
    }

    /// Starts a message whose bytes are then written into the returned [`Draft`] (a message
    /// too large to hold in memory is streamed there as it arrives); [`Queue::commit`] makes
    /// it durable. The file is the message's own (`<bucket>/<ID>.msg`, created with O_EXCL)
    /// or a spare that gets that name at commit: until then no journal names it, so a crash
    /// leaves an orphan that open removes, and a draft dropped uncommitted removes it.
    pub fn begin(&self) -> Result<Draft, QueueError> {
        // A spare gets its queue name by a rename that refuses to replace (after the sync);
        // a new file is created in the bucket with O_EXCL. Either way a colliding id is an
        // error, and a fresh id then almost surely is free.
        let (id, file, spare) = match self.take_spare() {
            Some(path) => match spool::open_spare(&path) {
                Ok(file) => (QueueId::generate(), file, Some(path)),
                Err(e) => {
                    give_back(&self.spares, path.clone());
                    return Err(QueueError::io("open", &path, e));
                }
            },
            None => {
                let mut tries = 0;
                loop {
                    let id = QueueId::generate();
                    let path = self.layout.message(id);
                    match spool::create_new(&path) {
                        Ok(file) => break (id, file, None),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 3 => {
                            tries += 1;
                        }
                        Err(e) => return Err(QueueError::io("create", path, e)),
                    }
                }
            }
        };
        let mut draft = Draft {
            id,
            file,
            message: self.layout.message(id),
            spare,
            size: 0,
            spares: self.spares.clone(),
            state: DraftState::Open,
        };
        if let Err(e) = self.fault(Step::MessageCreated) {
            draft.state = DraftState::Stopped;
            return Err(e);
        }
        Ok(draft)
    }

    /// Makes a draft's message and `envelope` durable: syncs the message, writes and syncs
    /// the journal, renames it into the bucket and syncs the directory. The returned id is
    /// what the 250 reply carries. On an error nothing was accepted and the draft's files
    /// are removed (a stop injected by a test leaves them as they are).
    pub fn commit(&self, mut draft: Draft, envelope: &Envelope) -> Result<QueueId, QueueError> {
        let id = draft.id;
        match self.accept_steps(&mut draft, envelope) {
            Ok(()) => {
                draft.state = DraftState::Committed;
                self.accepted.fetch_add(1, Ordering::Relaxed);
                self.lock_index()
                    .set(id, Slot::Loaded(Some(envelope.received.as_microsecond())));
                self.fresh
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id);
                Ok(id)
            }
            Err(QueueError::Injected(step)) => {
                draft.state = DraftState::Stopped;
                Err(QueueError::Injected(step))
            }
            Err(e) => {
                // Best effort: the next open removes whatever this leaves. The draft's drop
                // removes the message file (or gives its spare back).
                let _ = spool::remove_file(&self.layout.journal(id));
                let _ = spool::remove_file(&self.layout.tmp_journal(id));
                Err(e)
            }
        }
    }

    /// A spare file, if one is kept.
    fn take_spare(&self) -> Option<PathBuf> {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        let (path, space) = spares.list.pop()?;
        spares.space -= space;
        Some(path)
    }

    /// Says that the file of message `id` was given to a delivery agent outside this process
    /// (a cursus-lda child), which may still read it after its answer was given up on: the
    /// file must not become a spare another message overwrites, unless every delivery of
    /// the message answered at its first attempt.
    pub fn handed_out(&self, id: QueueId) {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Refuses (ENOSPC, so 452 4.3.1) a message written into a spare when the file system
    /// could not have held it as a new file: spares are reused to save work, not kept as a
    /// space reserve, and a full queue must still refuse mail (and keep the room its
    /// journals need for recording outcomes).
    fn check_room(&self, file: &File, size: u64, path: &Path) -> Result<(), QueueError> {
        let Ok(st) = nix::sys::statvfs::fstatvfs(file) else {
            return Ok(());
        };
        // fsblkcnt_t and c_ulong are u64 here but not on every target.
        #[allow(clippy::useless_conversion)]
        let free = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
        if free < size.saturating_add(MIN_FREE) {
            return Err(QueueError::io(
                "write",
                path,
                io::Error::from_raw_os_error(nix::libc::ENOSPC),
            ));
        }
        Ok(())
    }

    /// Takes a file out of the queue: renamed to `<name>.spare` in its own directory (a
    /// rename within one directory costs about half of one into `spare/` on ext4, and
    /// takes no file-system-wide rename lock) when `recycle` gives its length and there is
    /// room, else unlinked. Already gone is done. The room is reserved before the rename,
    /// which runs without the lock.
    fn retire(&self, path: &Path, recycle: Option<u64>) -> Result<(), QueueError> {
        // The blocks a file of that length holds (the accounting need not be exact).
        let space = recycle
            .filter(|len| *len <= MAX_SPARE_BYTES)
            .map(|len| len.div_ceil(4096).max(1) * 4096);
        if let Some(space) = space {
            let reserved = {
                let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
                let room = spares.list.len() + spares.reserved < MAX_SPARES
                    && spares.space + space <= MAX_SPARES_SPACE;
                if room {
                    spares.reserved += 1;
                    spares.space += space;
                }
                room
            };
            if reserved {
                let mut to = path.as_os_str().to_owned();
                to.push(spool::SPARE_SUFFIX);
                let to = PathBuf::from(to);
                let renamed = std::fs::rename(path, &to);
                let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
                spares.reserved -= 1;
                match renamed {
                    Ok(()) => {
                        spares.list.push((to, space));
                        return Ok(());
                    }
                    Err(e) => {
                        spares.space -= space;
                        if e.kind() == io::ErrorKind::NotFound {
                            return Ok(());
                        }
                    }
                }
            }
        }
        spool::remove_file(path)
    }

    fn accept_steps(&self, draft: &mut Draft, envelope: &Envelope) -> Result<(), QueueError> {
        let id = draft.id;
        let size = draft.size;
        let msg_path = self.layout.message(id);
        let file = &mut draft.file;
        if draft.spare.is_some() {
            self.check_room(file, size, &msg_path)?;
            // What the spare held beyond the new message goes before the sync.
            file.set_len(size)
                .map_err(|e| QueueError::io("truncate", &msg_path, e))?;
        }
        if let Err(QueueError::Injected(step)) = self.fault(Step::MessageTorn) {
            file.set_len(size / 2)
                .map_err(|e| QueueError::io("truncate", &msg_path, e))?;
            return Err(QueueError::Injected(step));
        }
        self.fault(Step::MessageWritten)?;
        self.sync_file(file, &msg_path)?;
        if let Some(from) = &draft.spare {
            spool::rename_new(from, &msg_path)
                .map_err(|e| QueueError::io("rename", &msg_path, e))?;
            // The file now stands under the message's name (removed by the draft's drop if
            // a later step fails).
            draft.spare = None;
        }
        self.fault(Step::MessageSynced)?;

        let record = Record::Envelope {
            id,
            size,
            envelope: envelope.clone(),
        }
        .encode();
        if record.len() > MAX_RECORD {
            return Err(QueueError::EnvelopeTooLarge);
        }
        let framed = journal::frame(&record);
        // The journal is written under a name no scan takes for a queue entry (a spare's, or
        // tmp/), synced, then renamed into the bucket: the commit point.
        let (tmp_path, mut journal, spare) = match self.take_spare() {
            Some(path) => {
                let file = spool::open_spare(&path).map_err(|e| {
                    give_back(&self.spares, path.clone());
                    QueueError::io("open", &path, e)
                })?;
                (path.clone(), file, Some(path))
            }
            None => {
                let path = self.layout.tmp_journal(id);
                let file =
                    spool::create_new(&path).map_err(|e| QueueError::io("create", &path, e))?;
                (path, file, None)
            }
        };
        let written = self.write_journal(&mut journal, &framed, spare.is_some(), &tmp_path);
        drop(journal);
        if let (Err(_), Some(path)) = (&written, spare) {
            give_back(&self.spares, path);
        }
        written?;
        let jnl_path = self.layout.journal(id);
        std::fs::rename(&tmp_path, &jnl_path)
            .map_err(|e| QueueError::io("rename", &jnl_path, e))?;
        self.fault(Step::Renamed)?;
        if self.options.sync {
            self.commit
                .commit(id.bucket(), |b| self.buckets[b as usize].sync_all())
                .map_err(|e| match e {
                    CommitError::Sync(e) => {
                        QueueError::io("fsync", self.layout.bucket(id.bucket()), e)
                    }
                    CommitError::Poisoned => QueueError::Poisoned,
                })?;
        }
        self.fault(Step::Committed)?;
        Ok(())
    }

    /// Writes the framed envelope record at the start of `journal` (cut to its length when
    /// it is a spare) and syncs it.
    fn write_journal(
        &self,
        journal: &mut File,
        framed: &[u8],
        spare: bool,
        path: &Path,
    ) -> Result<(), QueueError> {
        if let Err(QueueError::Injected(step)) = self.fault(Step::JournalTorn) {
            journal
                .write_all(&framed[..framed.len() / 2])
                .map_err(|e| QueueError::io("write", path, e))?;
            return Err(QueueError::Injected(step));
        }
        journal
            .write_all(framed)
            .map_err(|e| QueueError::io("write", path, e))?;
        if spare {
            // Overwritten in place (its blocks stay allocated); the old tail goes.
            journal
                .set_len(framed.len() as u64)
                .map_err(|e| QueueError::io("truncate", path, e))?;
        }
        self.fault(Step::JournalWritten)?;
        self.sync_file(journal, path)?;
        self.fault(Step::JournalSynced)
    }

    /// Reads and replays a journal; moves the files to `corrupt/` when it does not replay.
    /// Returns the message and the open file (positioned anywhere) with its length.
    fn read_journal(
        &self,
        id: QueueId,
        append: bool,
    ) -> Result<(QueuedMessage, File, usize, u64), QueueError> {
        let path = self.layout.journal(id);
        let mut file = match spool::open_existing(&path, append) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.lock_index().remove(id);
                return Err(QueueError::NotFound(id));
            }
            Err(e) => return Err(QueueError::io("open", path, e)),
        };
        // Room for a typical journal, so that it is read in one call (and one more to see
        // the end) rather than grown from a few bytes.
        let mut bytes = Vec::with_capacity(4096);
        (&mut file)
            .take(MAX_JOURNAL)
            .read_to_end(&mut bytes)
            .map_err(|e| QueueError::io("read", &path, e))?;
        let replay = match journal::replay(&bytes) {
            Ok(replay) if replay.message.id == id => replay,
            Ok(_) => return Err(self.quarantine(id, "journal names another queue id")),
            Err(e) => return Err(self.quarantine(id, &e.to_string())),
        };
        Ok((replay.message, file, replay.good_len, bytes.len() as u64))
    }

    /// Moves a message's files aside for a human and forgets it.
    fn quarantine(&self, id: QueueId, reason: &str) -> QueueError {
        let corrupt = self.layout.corrupt();
        for path in [self.layout.journal(id), self.layout.message(id)] {
            if let Some(name) = path.file_name() {
                let _ = std::fs::rename(&path, corrupt.join(name));
            }
        }
        self.lock_index().remove(id);
        QueueError::Corrupt {
            id,
            reason: reason.to_string(),
        }
    }

    /// The message's envelope and state, from its journal. The first time a message found at
    /// open is read, its file size is checked against the envelope record, and a message
    /// that is already finished is removed (and reported as not found).
    pub fn message(&self, id: QueueId) -> Result<QueuedMessage, QueueError> {
        self.message_seen(id).map(|(message, _)| message)
    }

    /// [`Queue::message`] with the length of the journal it was read from, which
    /// [`Queue::remove_delivered_seen`] uses to skip reading the journal again.
    pub fn message_seen(&self, id: QueueId) -> Result<(QueuedMessage, u64), QueueError> {
        let first = matches!(self.lock_index().slots.get(&id), Some(Slot::Unloaded));
        if !first {
            let (message, _, _, len) = self.read_journal(id, false)?;
            return Ok((message, len));
        }
        let _stripe = self.stripe(id);
        let (message, file, good_len, len) = self.read_journal(id, true)?;
        if (good_len as u64) < len {
            // A torn record from a crash: cut it off now so that no append lands behind it.
            self.repair(&file, id, good_len)?;
        }
        let msg_path = self.layout.message(id);
        match std::fs::symlink_metadata(&msg_path) {
            Ok(meta) if meta.is_file() && meta.len() == message.size => {}
            Ok(meta) => {
                let reason = format!(
                    "message file has {} bytes, the envelope says {}",
                    meta.len(),
                    message.size
                );
                return Err(self.quarantine(id, &reason));
            }
            Err(e) => return Err(self.quarantine(id, &format!("message file: {e}"))),
        }
        if message.is_removable() {
            // Found finished by a replay (after a restart, say): unlinked, since a delivery
            // agent started before it may still hold the file.
            self.remove_files(id, None, None)?;
            return Err(QueueError::NotFound(id));
        }
        self.lock_index().set(id, Slot::Loaded(due_key(&message)));
        Ok((message, good_len as u64))
    }

    /// The message bytes, read-only (to pass to the LDA or a transport).
    pub fn open_message(&self, id: QueueId) -> Result<File, QueueError> {
        let path = self.layout.message(id);
        spool::open_existing(&path, false).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => QueueError::NotFound(id),
            _ => QueueError::io("open", path, e),
        })
    }

    fn repair(&self, file: &File, id: QueueId, good_len: usize) -> Result<(), QueueError> {
        let path = self.layout.journal(id);
        file.set_len(good_len as u64)
            .map_err(|e| QueueError::io("truncate", &path, e))?;
        self.sync_file(file, &path)
    }

    /// The read-modify-append cycle shared by every state change: under the message's lock,
    /// replay the journal, let `decide` build the record (or refuse), append it with one
    /// write, fdatasync, and update the index.
    fn append(
        &self,
        id: QueueId,
        decide: impl FnOnce(&QueuedMessage) -> Result<Option<Record>, QueueError>,
    ) -> Result<QueuedMessage, QueueError> {
        let _stripe = self.stripe(id);
        let (mut message, mut file, good_len, len) = self.read_journal(id, true)?;
        if (good_len as u64) < len {
            self.repair(&file, id, good_len)?;
        }
        let Some(record) = decide(&message)? else {
            return Ok(message);
        };
        let framed = record.frame();
        let path = self.layout.journal(id);
        if let Err(e) = self.fault(Step::AppendTorn) {
            file.write_all(&framed[..framed.len() / 2])
                .map_err(|e| QueueError::io("append", &path, e))?;
            return Err(e);
        }
        let written = file.write_all(&framed);
        if let Err(e) = written {
            // Leave no partial record behind (ENOSPC can write part of it).
            let _ = file.set_len(good_len as u64);
            return Err(QueueError::io("append", &path, e));
        }
        self.fault(Step::AppendWritten)?;
        self.sync_file(&file, &path)?;
        self.fault(Step::AppendSynced)?;
        journal::apply(&mut message, record).map_err(|e| QueueError::Corrupt {
            id,
            reason: e.to_string(),
        })?;
        self.lock_index().set(id, Slot::Loaded(due_key(&message)));
        Ok(message)
    }

    /// Records the outcomes of one attempt (recipients by envelope index) with one durable
    /// append. A temporary failure is deferred by the schedule, or fails with 5.4.7 when
    /// the message has expired. Returns the message's new state.
    pub fn record(
        &self,
        id: QueueId,
        outcomes: &[(usize, Outcome)],
        now: Timestamp,
    ) -> Result<QueuedMessage, QueueError> {
        self.record_relayed(id, outcomes, &[], now)
    }

    /// [`Queue::record`], saying for the deliveries in `relays` (by envelope index) that
    /// they went to another server, with or without the DSN extension: that decides the
    /// notice a NOTIFY=SUCCESS recipient is owed ("relayed", or none).
    pub fn record_relayed(
        &self,
        id: QueueId,
        outcomes: &[(usize, Outcome)],
        relays: &[(usize, Relay)],
        now: Timestamp,
    ) -> Result<QueuedMessage, QueueError> {
        let schedule = &self.options.schedule;
        self.append(id, |message| {
            let mut changes = Vec::with_capacity(outcomes.len());
            for (index, outcome) in outcomes {
                let state = message
                    .recipients
                    .get(*index)
                    .ok_or(QueueError::NoSuchRecipient { id, index: *index })?;
                if state.is_final() {
                    return Err(QueueError::AlreadyFinal { id, index: *index });
                }
                let change = match outcome.kind {
                    OutcomeKind::Delivered => delivered(*index, outcome, relays),
                    OutcomeKind::Permanent => Change::Failed {
                        status: outcome.status,
                        text: outcome.text.clone(),
                    },
                    OutcomeKind::Temporary => {
                        let attempts = state.attempts() + 1;
                        let next = match &self.options.retry {
                            Some(rules) => rules.next_attempt(
                                &message.envelope,
                                *index,
                                outcome,
                                attempts,
                                now,
                            ),
                            None => schedule.next_attempt(message.envelope.received, attempts, now),
                        };
                        match next {
                            Some(next) => Change::Deferred {
                                status: outcome.status,
                                text: outcome.text.clone(),
                                attempts,
                                next,
                            },
                            None => Change::Failed {
                                status: EXPIRED,
                                text: cursus_mail::status::one_line(format!(
                                    "message expired after {attempts} attempts; last error: {} {}",
                                    outcome.status, outcome.text
                                )),
                            },
                        }
                    }
                };
                changes.push((*index as u32, change));
            }
            Ok(Some(Record::Outcomes { at: now, changes }))
        })
    }

    /// Holds a message: it is never due until released. Holding a held message does nothing.
    pub fn hold(&self, id: QueueId, now: Timestamp) -> Result<QueuedMessage, QueueError> {
        self.append(id, |m| Ok((!m.held).then_some(Record::Hold { at: now })))
    }

    /// Releases a held message: its recipients are due again on their own schedule.
    pub fn release(&self, id: QueueId, now: Timestamp) -> Result<QueuedMessage, QueueError> {
        self.append(id, |m| Ok(m.held.then_some(Record::Release { at: now })))
    }

    /// Removes a message whose recipients are all final. If it owes a DSN
    /// ([`QueuedMessage::dsn_recipients`]), the caller must have queued the DSN first and
    /// pass its id (or `None` when it chose not to send one, e.g. a double bounce, after
    /// recording that with `dsn_sent`).
    pub fn finish(
        &self,
        id: QueueId,
        dsn: Option<QueueId>,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let message = self.append(id, |m| {
            if !m.is_complete() {
                return Err(QueueError::NotComplete(id));
            }
            match dsn {
                Some(dsn) => Ok(Some(Record::DsnSent {
                    at: now,
                    dsn: Some(dsn),
                })),
                None if m.is_removable() => Ok(None),
                None => Err(QueueError::DsnOwed(id)),
            }
        })?;
        debug_assert!(message.is_removable());
        // Unlinked, not kept as a spare: a message finished after a deferral may have had a
        // delivery that timed out on our side while a cursus-lda child still reads the file;
        // a spare overwritten under it would hand that child another message's bytes.
        self.remove_files(id, None, None)
    }

    /// Removes a message without recording anything when `outcomes` (this attempt's, by
    /// envelope index) are all deliveries and leave every recipient final with no DSN owed;
    /// returns `false` and changes nothing otherwise (the caller then records the outcomes
    /// with [`Queue::record`]). Only for the caller that made the deliveries, once every
    /// mailbox writer has synced and answered.
    ///
    /// Why no record is needed: it would only say "delivered" in a journal that is removed
    /// right after. If a crash loses the removal, the journal still names the recipients as
    /// not delivered and they are delivered again: a duplicate, as for a delivery in flight
    /// at the crash, never a loss, since the mailboxes already hold the message durably.
    pub fn remove_delivered(
        &self,
        id: QueueId,
        outcomes: &[(usize, Outcome)],
        now: Timestamp,
    ) -> Result<bool, QueueError> {
        self.remove_delivered_seen(id, outcomes, &[], now, None)
    }

    /// [`Queue::remove_delivered`] given the state the caller read with
    /// [`Queue::message_seen`]: when the journal still has that length it was not appended
    /// to since (appends are the only change; a journal kept as a spare takes another id's
    /// name), so it is not read again.
    pub fn remove_delivered_seen(
        &self,
        id: QueueId,
        outcomes: &[(usize, Outcome)],
        relays: &[(usize, Relay)],
        now: Timestamp,
        seen: Option<(&QueuedMessage, u64)>,
    ) -> Result<bool, QueueError> {
        if outcomes
            .iter()
            .any(|(_, o)| o.kind != OutcomeKind::Delivered)
        {
            return Ok(false);
        }
        let _stripe = self.stripe(id);
        let unchanged = |len: u64| {
            std::fs::symlink_metadata(self.layout.journal(id)).is_ok_and(|m| m.len() == len)
        };
        let (mut message, journal_len) = match seen {
            Some((message, len)) if unchanged(len) => (message.clone(), len),
            _ => {
                let (message, _, _, len) = self.read_journal(id, false)?;
                (message, len)
            }
        };
        if message.held || message.deleted {
            return Ok(false);
        }
        let mut changes = Vec::with_capacity(outcomes.len());
        for (index, outcome) in outcomes {
            match message.recipients.get(*index) {
                Some(state) if !state.is_final() => {}
                _ => return Ok(false),
            }
            changes.push((*index as u32, delivered(*index, outcome, relays)));
        }
        // Spares only for a message delivered at its first attempt: every delivery that
        // ever had the file has just answered, so nothing can still be reading it when a
        // later accept overwrites it. After a deferral (a timed-out delivery agent may still
        // hold the file), the files are unlinked.
        // The same holds after a deferral when the file never left this process (remote
        // deliveries read it here). The journal is never given to anyone.
        let first_attempt = message
            .recipients
            .iter()
            .all(|r| matches!(r, RecipientState::Pending));
        let fresh = self
            .fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id);
        if journal::apply(&mut message, Record::Outcomes { at: now, changes }).is_err()
            || !message.is_complete()
            || !message.dsn_recipients().is_empty()
        {
            return Ok(false);
        }
        let size = message.size;
        self.remove_files(
            id,
            Some(journal_len),
            (first_attempt || fresh).then_some(size),
        )?;
        Ok(true)
    }

    /// Records that the DSN owed for this message was dealt with without queueing one.
    pub fn dsn_sent(
        &self,
        id: QueueId,
        dsn: Option<QueueId>,
        now: Timestamp,
    ) -> Result<QueuedMessage, QueueError> {
        self.append(id, |_| Ok(Some(Record::DsnSent { at: now, dsn })))
    }

    /// Deletes a message whatever its state (an administrator's `cursus queue delete`). No
    /// DSN is sent.
    pub fn delete(&self, id: QueueId, now: Timestamp) -> Result<(), QueueError> {
        self.append(id, |_| Ok(Some(Record::Delete { at: now })))?;
        // Unlinked, never kept as spares: an administrator may delete a message while a
        // delivery of it still reads the file.
        self.remove_files(id, None, None)
    }

    /// Unlinks the journal (the message leaves the queue), then the message file; each is
    /// kept as a spare instead when its length is given and there is room (see `retire`).
    fn remove_files(
        &self,
        id: QueueId,
        journal: Option<u64>,
        message: Option<u64>,
    ) -> Result<(), QueueError> {
        self.retire(&self.layout.journal(id), journal)?;
        self.retire(&self.layout.message(id), message)?;
        self.lock_index().remove(id);
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        Ok(())
    }

    /// Messages with recipients due at `now`, or owing a DSN, oldest due first. Streams: the
    /// index is locked for a chunk at a time and each journal is read when reached. The
    /// first pass after open also replays every journal not read yet (that is recovery's
    /// second half), removing finished messages as it finds them.
    ///
    /// The queue does not track deliveries in flight: a message stays due until its
    /// outcomes are recorded, so the caller skips the ids it is already working on.
    pub fn due(&self, now: Timestamp) -> DueIter<'_> {
        DueIter {
            queue: self,
            now,
            loading: true,
            after: None,
            buffer: VecDeque::new(),
        }
    }

    /// The ids of every message in the queue, in id (arrival) order, without reading any
    /// journal (`sendmail -q` attempts them all; each attempt reads its own).
    pub fn ids(&self) -> Vec<QueueId> {
        self.lock_index().slots.keys().copied().collect()
    }

    /// Every message, in id (arrival) order, streamed a chunk at a time.
    pub fn list(&self) -> ListIter<'_> {
        ListIter {
            queue: self,
            after: None,
            buffer: VecDeque::new(),
        }
    }

    /// Replays every journal that open() has not read yet (what `due` does on its first
    /// pass), e.g. from a background thread right after start. Several readers at once
    /// ([`LOAD_READERS`]): with a cold cache each journal is a small random read, and the
    /// disk answers several faster than one after the other (a million journals: 105 s
    /// with one reader on the test machine's virtio disk).
    pub fn load_all(&self) -> Result<usize, QueueError> {
        std::thread::scope(|scope| {
            let readers: Vec<_> = (1..LOAD_READERS)
                .map(|_| scope.spawn(|| self.load_some()))
                .collect();
            let mut result = self.load_some();
            for reader in readers {
                let theirs = reader.join().unwrap_or_else(|_| {
                    let why = io::Error::other("a journal reader panicked");
                    Err(QueueError::io("replay", self.root(), why))
                });
                result = match (result, theirs) {
                    (Ok(a), Ok(b)) => Ok(a + b),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
            }
            result
        })
    }

    /// One reader of [`Queue::load_all`]: takes unloaded ids until none is left.
    fn load_some(&self) -> Result<usize, QueueError> {
        let mut loaded = 0;
        while let Some(id) = self.next_unloaded() {
            match self.message(id) {
                Ok(_) | Err(QueueError::NotFound(_)) | Err(QueueError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
            loaded += 1;
        }
        Ok(loaded)
    }

    fn next_unloaded(&self) -> Option<QueueId> {
        let mut index = self.lock_index();
        while let Some(id) = index.unloaded.pop() {
            if index.slots.get(&id) == Some(&Slot::Unloaded) {
                return Some(id);
            }
        }
        None
    }
}

/// The iterator of [`Queue::due`].
#[derive(Debug)]
pub struct DueIter<'q> {
    queue: &'q Queue,
    now: Timestamp,
    loading: bool,
    after: Option<(i64, QueueId)>,
    buffer: VecDeque<QueueId>,
}

impl Iterator for DueIter<'_> {
    type Item = Result<Due, QueueError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.loading {
                match self.queue.next_unloaded() {
                    Some(id) => match self.queue.message(id) {
                        Ok(_) | Err(QueueError::NotFound(_)) => continue,
                        Err(e) => return Some(Err(e)),
                    },
                    None => self.loading = false,
                }
            }
            if let Some(id) = self.buffer.pop_front() {
                let message = match self.queue.message(id) {
                    Ok(m) => m,
                    Err(QueueError::NotFound(_)) => continue,
                    Err(e) => return Some(Err(e)),
                };
                let recipients = message.due_recipients(self.now);
                if !recipients.is_empty() || (message.is_complete() && !message.is_removable()) {
                    return Some(Ok(Due {
                        message,
                        recipients,
                    }));
                }
                continue;
            }
            let index = self.queue.lock_index();
            let end = Bound::Included((self.now.as_microsecond(), QueueId::MAX));
            let start = match self.after {
                None => Bound::Unbounded,
                Some(key) => Bound::Excluded(key),
            };
            self.buffer.extend(
                index
                    .timeline
                    .range((start, end))
                    .take(CHUNK)
                    .map(|&(t, id)| {
                        self.after = Some((t, id));
                        id
                    }),
            );
            if self.buffer.is_empty() {
                return None;
            }
        }
    }
}

/// The iterator of [`Queue::list`].
#[derive(Debug)]
pub struct ListIter<'q> {
    queue: &'q Queue,
    after: Option<QueueId>,
    buffer: VecDeque<QueueId>,
}

impl Iterator for ListIter<'_> {
    type Item = Result<QueuedMessage, QueueError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(id) = self.buffer.pop_front() {
                match self.queue.message(id) {
                    Ok(m) => return Some(Ok(m)),
                    Err(QueueError::NotFound(_)) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            let index = self.queue.lock_index();
            let start = match self.after {
                None => Bound::Unbounded,
                Some(id) => Bound::Excluded(id),
            };
            self.buffer.extend(
                index
                    .slots
                    .range((start, Bound::Unbounded))
                    .take(CHUNK)
                    .map(|(&id, _)| id),
            );
            self.after = self.buffer.back().copied();
            if self.buffer.is_empty() {
                return None;
            }
        }
    }
}
