//! Group commit of directory syncs: one fsync of a bucket directory makes the new entries
//! of every accept that renamed into it before the sync started durable.
//!
//! Leader and followers, no extra thread: an accept that has renamed its journal into a
//! bucket joins the open batch and waits. If no sync is running, it becomes the leader:
//! it closes the batch, syncs every directory the batch touched, publishes the result and
//! wakes everyone. Accepts that arrive while a sync runs form the next batch, and one of
//! them leads it. Under load a batch holds about as many accepts as there are threads
//! writing, so directory syncs per message fall as concurrency rises; alone, an accept pays
//! one sync, as it would without batching.
//!
//! Trusts its caller to have made the files themselves durable before joining. How it
//! fails: if a directory sync fails, every accept in that batch gets the error (none of
//! them may answer 250), and the queue is poisoned: later accepts fail at once, because
//! after a failed fsync Linux may have dropped the dirty pages and a retry can report a
//! success that is not one ("fsyncgate"). Reopening the queue starts clean.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// The generation that new joiners are added to.
    open: u64,
    /// Buckets touched by the open generation.
    dirs: BTreeSet<u8>,
    /// Every generation up to this one is synced (or failed).
    done: u64,
    /// A leader is syncing generation `done + 1`.
    syncing: bool,
    /// The first generation whose sync failed, and why.
    failed: Option<(u64, io::ErrorKind)>,
}

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError {
    /// The sync of this batch failed.
    Sync(io::Error),
    /// An earlier batch failed; nothing is promised until the queue is reopened.
    Poisoned,
}

/// The batching state shared by all accepts of one queue.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    wake: Condvar,
    syncs: AtomicU64,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Directory syncs performed so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Waits until `bucket`, as it is now, is durable: returns once a sync of it that began
    /// after this call has finished. `sync` does the fsync of one bucket directory.
    pub fn commit(
        &self,
        bucket: u8,
        sync: impl Fn(u8) -> io::Result<()>,
    ) -> Result<(), CommitError> {
        let mut state = self.lock();
        if state.failed.is_some() {
            return Err(CommitError::Poisoned);
        }
        let mine = state.open + 1;
        state.dirs.insert(bucket);
        loop {
            if state.done >= mine {
                return match state.failed {
                    Some((first, kind)) if first <= mine => {
                        Err(CommitError::Sync(io::Error::from(kind)))
                    }
                    _ => Ok(()),
                };
            }
            if !state.syncing {
                // Lead: close the open batch (it contains ours) and sync it.
                state.syncing = true;
                state.open += 1;
                let generation = state.open;
                let dirs = std::mem::take(&mut state.dirs);
                drop(state);
                let mut result = Ok(());
                for dir in dirs {
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = sync(dir) {
                        result = Err(e);
                        break;
                    }
                }
                state = self.lock();
                state.syncing = false;
                state.done = generation;
                if let Err(e) = &result {
                    state.failed.get_or_insert((generation, e.kind()));
                }
                self.wake.notify_all();
                drop(state);
                return result.map_err(CommitError::Sync);
            }
            state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn alone_each_commit_syncs_once() {
        let gc = GroupCommit::default();
        for b in 0..5u8 {
            gc.commit(b, |_| Ok(())).expect("commits");
        }
        assert_eq!(gc.syncs(), 5);
    }

    #[test]
    fn concurrent_commits_share_syncs() {
        let gc = Arc::new(GroupCommit::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let gc = Arc::clone(&gc);
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        gc.commit(7, |_| {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            Ok(())
                        })
                        .expect("commits");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        // 1600 commits; with 8 threads sleeping 1 ms per sync, far fewer syncs.
        assert!(gc.syncs() < 800, "syncs {}", gc.syncs());
    }

    #[test]
    fn a_failed_sync_fails_its_batch_and_poisons() {
        let gc = GroupCommit::default();
        let err = gc.commit(1, |_| Err(io::Error::from(io::ErrorKind::Other)));
        assert!(matches!(err, Err(CommitError::Sync(_))));
        assert!(matches!(
            gc.commit(1, |_| Ok(())),
            Err(CommitError::Poisoned)
        ));
    }
}
