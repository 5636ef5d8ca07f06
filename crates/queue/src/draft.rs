//! A message being written into the queue before its envelope is known to be final: the
//! daemon streams a large message here as it arrives instead of holding it in memory.
//!
//! Trusts the queue that made it ([`crate::Queue::begin`]); the bytes are the caller's.
//! Fails with the file system's errors (a full disk is ENOSPC on a write). A draft is never
//! a queued message: no journal names its file, so a crash leaves an orphan that
//! [`crate::Queue::open`] removes, and a draft dropped without [`crate::Queue::commit`]
//! removes its file at once (or gives its spare back). Dropping may unlink a large file:
//! an async caller drops it on a blocking thread.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::QueueError;
use crate::id::QueueId;
use crate::queue::{MAX_SPARE_BYTES, MAX_SPARES, MAX_SPARES_SPACE, Spares};
use crate::spool;

/// Where a draft stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DraftState {
    /// Being written; dropped now, its file goes.
    Open,
    /// Committed: the file is the queued message's.
    Committed,
    /// Stopped by an injected fault (tests): the files stay as a crash would leave them.
    Stopped,
}

/// The file of a message not yet committed. Write the message's bytes into it (CRLF line
/// ends, exactly what the delivery agents will read), then hand it to
/// [`crate::Queue::commit`].
pub struct Draft {
    pub(crate) id: QueueId,
    pub(crate) file: File,
    /// The message's name in its bucket (where the file is, unless it is still a spare).
    pub(crate) message: PathBuf,
    /// The spare being overwritten, until commit renames it to `message`.
    pub(crate) spare: Option<PathBuf>,
    /// Octets written.
    pub(crate) size: u64,
    pub(crate) spares: Arc<Mutex<Spares>>,
    pub(crate) state: DraftState,
}

impl std::fmt::Debug for Draft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draft")
            .field("id", &self.id)
            .field("path", &self.path())
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Draft {
    /// The queue id the message will have.
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Octets written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes all of `bytes`; the error names the file (a full disk or quota:
    /// [`QueueError::is_disk_full`]).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), QueueError> {
        self.write_all(bytes)
            .map_err(|e| QueueError::io("write", self.path(), e))
    }

    /// The file being written (for error messages).
    pub fn path(&self) -> &Path {
        self.spare.as_deref().unwrap_or(&self.message)
    }
}

impl Write for Draft {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if self.state != DraftState::Open {
            return;
        }
        match self.spare.take() {
            Some(path) => give_back(&self.spares, path),
            // Best effort: an orphan left by a failed unlink is removed at the next open.
            None => {
                let _ = spool::remove_file(&self.message);
            }
        }
    }
}

/// Returns a spare taken by an accept that failed before renaming it, unless it has grown
/// beyond what a spare may hold (then it is unlinked).
pub(crate) fn give_back(spares: &Mutex<Spares>, path: PathBuf) {
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return;
    };
    if !meta.is_file() {
        return;
    }
    let space = meta.blocks() * 512;
    {
        let mut spares = spares.lock().unwrap_or_else(|e| e.into_inner());
        if meta.len() <= MAX_SPARE_BYTES
            && spares.list.len() + spares.reserved < MAX_SPARES
            && spares.space + space <= MAX_SPARES_SPACE
        {
            spares.list.push((path, space));
            spares.space += space;
            return;
        }
    }
    let _ = spool::remove_file(&path);
}
