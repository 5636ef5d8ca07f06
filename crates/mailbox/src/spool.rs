//! The message body: kept in memory up to a limit, beyond it in an unlinked temporary file.
//!
//! Trusts: nothing about the bytes (8-bit, NUL, no final newline are all fine); trusts the
//! spill directory to be one the delivering user owns (the maildir's `tmp/` or the user's
//! home), as dovecot-lda does with its 128 KiB threshold.
//! Fails: with `io::Error` from `write` (the spill file cannot be created or written) and from
//! `copy_to` (the spill file cannot be read back or is shorter than what was written).
//!
//! Security: the spill file is created with O_TMPFILE (it never has a name), or else with
//! O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600 and unlinked at once: O_EXCL|O_NOFOLLOW stops a
//! symlink planted under the guessed name, 0600 keeps the message from other users, and having
//! no name means nobody can open it later or swap it.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

/// How much is buffered in memory after a spill before it goes to the file.
const SPILL_BUFFER: usize = 64 * 1024;
/// How much is read at once when copying a spilled body out.
const COPY_CHUNK: usize = 64 * 1024;

/// Collects a message body; see [`SpoolWriter::new`]. After a write error the writer is in
/// an unknown state and must be dropped.
#[derive(Debug)]
pub struct SpoolWriter {
    memory_limit: usize,
    spill_dir: PathBuf,
    /// Everything so far while in memory; after a spill, bytes not yet written to the file.
    buffer: Vec<u8>,
    file: Option<File>,
    len: u64,
    lf_count: u64,
    last_byte: Option<u8>,
}

impl SpoolWriter {
    /// `memory_limit`: bytes kept in memory before spilling (e.g. 128 KiB); `spill_dir`: the
    /// directory for the unlinked temporary file (O_TMPFILE first, else create + unlink; 0600).
    pub fn new(memory_limit: usize, spill_dir: &Path) -> SpoolWriter {
        SpoolWriter {
            memory_limit,
            spill_dir: spill_dir.to_path_buf(),
            buffer: Vec::new(),
            file: None,
            len: 0,
            lf_count: 0,
            last_byte: None,
        }
    }

    /// Ends the body; flushes a spilled body to its file.
    pub fn finish(mut self) -> io::Result<Spooled> {
        let content = match self.file.take() {
            Some(mut file) => {
                file.write_all(&self.buffer)?;
                Content::File(file)
            }
            None => Content::Memory(std::mem::take(&mut self.buffer)),
        };
        Ok(Spooled {
            content,
            len: self.len,
            lf_count: self.lf_count,
            last_byte: self.last_byte,
        })
    }

    /// Moves the in-memory bytes into a new unlinked file.
    fn spill(&mut self) -> io::Result<()> {
        let mut file = create_unlinked(&self.spill_dir)?;
        file.write_all(&self.buffer)?;
        self.buffer.clear();
        self.buffer.shrink_to(SPILL_BUFFER);
        self.file = Some(file);
        Ok(())
    }
}

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.file.is_none() && self.buffer.len() + buf.len() > self.memory_limit {
            self.spill()?;
        }
        match self.file.as_mut() {
            None => self.buffer.extend_from_slice(buf),
            Some(file) => {
                if self.buffer.len() + buf.len() > SPILL_BUFFER {
                    file.write_all(&self.buffer)?;
                    self.buffer.clear();
                }
                if buf.len() >= SPILL_BUFFER {
                    file.write_all(buf)?;
                } else {
                    self.buffer.extend_from_slice(buf);
                }
            }
        }
        // Counted only once the bytes are accepted, so an error leaves the counts exact.
        self.len += buf.len() as u64;
        self.lf_count += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        self.last_byte = buf.last().copied();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Opens a file in `dir` that has no name: O_TMPFILE, or create with a random name and unlink.
fn create_unlinked(dir: &Path) -> io::Result<File> {
    let mode = Mode::from_bits_truncate(0o600);
    match open(
        dir,
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        mode,
    ) {
        Ok(fd) => return Ok(File::from(fd)),
        // Not supported by this kernel or file system: fall back to create + unlink.
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {}
        Err(e) => return Err(e.into()),
    }
    for _ in 0..10 {
        let mut random = [0u8; 8];
        crate::maildir_name::random_bytes(&mut random)?;
        let name = format!(".cursus-spool.{}", u64::from_le_bytes(random));
        let path = dir.join(name);
        let flags =
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match open(&path, flags, mode) {
            Ok(fd) => {
                let file = File::from(fd);
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no unused spool file name",
    ))
}

#[derive(Debug)]
enum Content {
    Memory(Vec<u8>),
    File(File),
}

/// A finished message body; read it any number of times with [`Spooled::copy_to`].
#[derive(Debug)]
pub struct Spooled {
    content: Content,
    len: u64,
    lf_count: u64,
    last_byte: Option<u8>,
}

impl Spooled {
    /// A body held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Spooled {
        let lf_count = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        Spooled {
            len: bytes.len() as u64,
            lf_count,
            last_byte: bytes.last().copied(),
            content: Content::Memory(bytes),
        }
    }

    /// Number of bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of LF bytes.
    pub fn lf_count(&self) -> u64 {
        self.lf_count
    }

    /// True when the last byte is LF (false for an empty body).
    pub fn ends_with_newline(&self) -> bool {
        self.last_byte == Some(b'\n')
    }

    /// True when the body was moved to a temporary file.
    pub fn is_spilled(&self) -> bool {
        matches!(self.content, Content::File(_))
    }

    /// Writes the whole body to `out`. Reads a spilled body with positional reads, so this can
    /// be called any number of times, also from several threads.
    pub fn copy_to(&self, out: &mut dyn Write) -> io::Result<()> {
        match &self.content {
            Content::Memory(bytes) => out.write_all(bytes),
            Content::File(file) => {
                let mut chunk = vec![0u8; COPY_CHUNK];
                let mut offset = 0u64;
                while offset < self.len {
                    let want = usize::try_from(self.len - offset).unwrap_or(COPY_CHUNK);
                    let want = want.min(COPY_CHUNK);
                    let got = match file.read_at(&mut chunk[..want], offset) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "spooled message file is shorter than written",
                            ));
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    out.write_all(&chunk[..got])?;
                    offset += got as u64;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(chunks: &[&[u8]], limit: usize, dir: &Path) -> Spooled {
        let mut writer = SpoolWriter::new(limit, dir);
        for chunk in chunks {
            writer.write_all(chunk).expect("write");
        }
        writer.finish().expect("finish")
    }

    fn contents(spooled: &Spooled) -> Vec<u8> {
        let mut out = Vec::new();
        spooled.copy_to(&mut out).expect("copy");
        out
    }

    #[test]
    fn small_body_stays_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = spool(&[b"a\nb", b"\n"], 16, dir.path());
        assert!(!s.is_spilled());
        assert_eq!((s.len(), s.lf_count(), s.ends_with_newline()), (4, 2, true));
        assert_eq!(contents(&s), b"a\nb\n");
    }

    #[test]
    fn large_body_spills_with_exact_counts_and_repeatable_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut expected = Vec::new();
        let mut writer = SpoolWriter::new(1000, dir.path());
        for i in 0..20_000u32 {
            let mut line = format!("line {i} \0 From x").into_bytes();
            line.extend_from_slice(b"\x80\xff\n");
            writer.write_all(&line).expect("write");
            expected.extend_from_slice(&line);
        }
        // A chunk bigger than the spill buffer, and no final newline.
        let big = vec![b'z'; 200_000];
        writer.write_all(&big).expect("write");
        expected.extend_from_slice(&big);
        let s = writer.finish().expect("finish");
        assert!(s.is_spilled());
        assert_eq!(s.len(), expected.len() as u64);
        assert_eq!(s.lf_count(), 20_000);
        assert!(!s.ends_with_newline());
        assert_eq!(contents(&s), expected);
        assert_eq!(contents(&s), expected, "second copy");
        // Nothing is left with a name in the spill directory.
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }

    #[test]
    fn spill_happens_exactly_above_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!spool(&[b"12345", b"67890"], 10, dir.path()).is_spilled());
        let s = spool(&[b"12345", b"678901"], 10, dir.path());
        assert!(s.is_spilled());
        assert_eq!(contents(&s), b"12345678901");
    }

    #[test]
    fn empty_body() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = spool(&[], 10, dir.path());
        assert!(s.is_empty());
        assert!(!s.ends_with_newline());
        assert_eq!(contents(&s), b"");
        let s = spool(&[], 0, dir.path());
        assert!(s.is_empty());
    }

    #[test]
    fn spill_into_missing_directory_fails_on_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = SpoolWriter::new(2, &dir.path().join("missing"));
        assert!(writer.write_all(b"abc").is_err());
    }

    #[test]
    fn from_bytes_counts() {
        let s = Spooled::from_bytes(b"x\n\ny".to_vec());
        assert_eq!(
            (s.len(), s.lf_count(), s.ends_with_newline()),
            (4, 2, false)
        );
    }
}
