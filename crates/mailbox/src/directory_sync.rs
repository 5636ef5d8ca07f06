//! Group commit of directory fsyncs: deliveries running in threads of one process (cursusd
//! in single-user mode delivers in-process, several at a time) that link files into the same
//! directory share one fsync of it, instead of each syncing it in turn.
//!
//! A delivery that has linked its file joins the directory's open batch. If no sync of that
//! directory is running, it leads: it closes the batch, fsyncs the directory, and hands the
//! result to everyone in the batch. Deliveries that join meanwhile form the next batch. So
//! a batch's fsync always starts after every member's link: each member's name is durable
//! when its batch's result is `Ok`. Alone, a delivery pays one fsync, as before. Separate
//! processes (the forked children of cursus-lda) do not share; each syncs its own.
//!
//! Trusts the caller to pass a descriptor of the directory it linked into. Fails per batch:
//! every member of a batch whose fsync failed gets that error (each result belongs to one
//! batch, so a later success never hides an earlier failure).

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use nix::errno::Errno;
use nix::sys::stat::fstat;
use nix::unistd::fsync;

/// One batch's result, set once by its leader.
type Batch = Arc<OnceLock<Result<(), Errno>>>;

#[derive(Default)]
struct Directory {
    open: Batch,
    syncing: bool,
}

#[derive(Default)]
struct Registry {
    /// By (device, inode) of the directory.
    directories: Mutex<HashMap<(u64, u64), Directory>>,
    wake: Condvar,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// Returns once a fsync of `dir` that began after this call has finished (or failed).
pub fn sync_directory(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    let st = fstat(dir)?;
    let key = (st.st_dev, st.st_ino);
    let registry = registry();
    let mut map = registry
        .directories
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mine = Arc::clone(&map.entry(key).or_default().open);
    loop {
        if let Some(result) = mine.get() {
            return *result;
        }
        let entry = map.entry(key).or_default();
        if !entry.syncing {
            // Lead: the open batch (ours, since no sync ran to take it) closes now.
            entry.syncing = true;
            let batch = std::mem::take(&mut entry.open);
            drop(map);
            let result = fsync(dir);
            let _ = batch.set(result);
            let mut map = registry
                .directories
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = map.get_mut(&key) {
                entry.syncing = false;
                // Nobody waits for this directory: forget it (bounded memory with many users).
                if Arc::strong_count(&entry.open) == 1 {
                    map.remove(&key);
                }
            }
            drop(map);
            registry.wake.notify_all();
            return result;
        }
        map = registry.wake.wait(map).unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn concurrent_syncs_of_one_directory_all_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let d = std::fs::File::open(&path).expect("opens");
                    for j in 0..20 {
                        std::fs::write(path.join(format!("{i}-{j}")), b"x").expect("writes");
                        sync_directory(d.as_fd()).expect("syncs");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("reads").count(), 160);
    }
}
