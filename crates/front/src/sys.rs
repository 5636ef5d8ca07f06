//! The system calls of the front, made directly: no C library runs in the front when it is
//! built without one (see the crate header), so nothing here may call into libc. Constants
//! and structure layouts come from the `libc` crate, which is declarations only.
//!
//! Trusts: the kernel. Every wrapper is safe to call: it passes only pointers to live,
//! correctly sized buffers and NUL-terminated paths ([`CPath`]) and returns the kernel's
//! answer as `Result<_, Errno>`.
//! Fails: with the errno the kernel gave; nothing here retries except on EINTR.

#![allow(unsafe_code)] // reason: system calls without a C library; each block has a SAFETY note

use alloc::vec::Vec;
use core::ffi::c_long;

/// An error number from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type Result<T> = core::result::Result<T, Errno>;

/// The raw system call: on x86_64 with the `syscall` instruction (the front built without a
/// C library runs only there), elsewhere through the C library's `syscall(2)`.
///
/// # Safety
/// The arguments must be what system call `nr` expects: pointers to memory that is valid
/// for the access the call makes, for as long as the call runs.
#[cfg(target_arch = "x86_64")]
unsafe fn syscall(nr: c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller guarantees the arguments; the kernel clobbers rcx and r11.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn syscall(nr: c_long, a: [usize; 6]) -> isize {
    // SAFETY: as above; libc's syscall(2) passes the arguments through.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 {
        // SAFETY: errno is this thread's, set by the call just made.
        -(unsafe { *libc::__errno_location() } as isize)
    } else {
        r as isize
    }
}

/// A system call's return value as a result (the kernel returns -errno).
fn check(ret: isize) -> Result<usize> {
    if (-4095..0).contains(&ret) {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// Calls again while the call is interrupted by a signal.
fn retry(mut call: impl FnMut() -> isize) -> Result<usize> {
    loop {
        match check(call()) {
            Err(Errno(libc::EINTR)) => continue,
            other => return other,
        }
    }
}

/// A path with its terminating NUL; `None` from [`CPath::new`] when it holds a NUL byte
/// (such a path cannot name a file).
pub struct CPath(Vec<u8>);

impl CPath {
    pub fn new(path: &[u8]) -> Option<CPath> {
        if path.contains(&0) {
            return None;
        }
        let mut v = Vec::with_capacity(path.len() + 1);
        v.extend_from_slice(path);
        v.push(0);
        Some(CPath(v))
    }

    fn ptr(&self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The path without its NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0[..self.0.len() - 1]
    }
}

/// An open file descriptor, closed when dropped.
#[derive(Debug)]
pub struct Fd(i32);

impl Fd {
    pub fn raw(&self) -> i32 {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closes a descriptor this value owns.
        let _ = unsafe { syscall(libc::SYS_close, [self.0 as usize, 0, 0, 0, 0, 0]) };
    }
}

/// The directory a relative path starts from: an open directory or the working directory.
#[derive(Clone, Copy)]
pub enum Dir<'a> {
    Cwd,
    Fd(&'a Fd),
}

impl Dir<'_> {
    fn raw(self) -> usize {
        match self {
            Dir::Cwd => libc::AT_FDCWD as isize as usize,
            Dir::Fd(fd) => fd.0 as usize,
        }
    }
}

pub const STDIN: i32 = 0;
pub const STDOUT: i32 = 1;
pub const STDERR: i32 = 2;

pub fn openat(dir: Dir<'_>, path: &CPath, flags: i32, mode: u32) -> Result<Fd> {
    // SAFETY: a NUL-terminated path that outlives the call.
    let fd = retry(|| unsafe {
        syscall(
            libc::SYS_openat,
            [dir.raw(), path.ptr(), flags as usize, mode as usize, 0, 0],
        )
    })?;
    Ok(Fd(fd as i32))
}

pub fn mkdirat(dir: Dir<'_>, path: &CPath, mode: u32) -> Result<()> {
    // SAFETY: as openat.
    check(unsafe {
        syscall(
            libc::SYS_mkdirat,
            [dir.raw(), path.ptr(), mode as usize, 0, 0, 0],
        )
    })
    .map(drop)
}

/// The file type and permission bits of `path` (not following a final symlink with
/// `nofollow`).
pub fn stat_mode(dir: Dir<'_>, path: &CPath, nofollow: bool) -> Result<u32> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: `st` is a buffer of the kernel's struct stat for this target.
    check(unsafe {
        syscall(
            libc::SYS_newfstatat,
            [
                dir.raw(),
                path.ptr(),
                st.as_mut_ptr() as usize,
                flags as usize,
                0,
                0,
            ],
        )
    })?;
    // SAFETY: the kernel filled it in.
    Ok(unsafe { st.assume_init() }.st_mode)
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: a writable buffer of buf.len() bytes.
    retry(|| unsafe {
        syscall(
            libc::SYS_read,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

/// Reads at `offset` without moving the file position.
pub fn pread(fd: &Fd, buf: &mut [u8], offset: u64) -> Result<usize> {
    // SAFETY: as read.
    retry(|| unsafe {
        syscall(
            libc::SYS_pread64,
            [
                fd.0 as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                offset as usize,
                0,
                0,
            ],
        )
    })
}

/// Writes all of `data` (a short write is continued; a write of nothing is an error).
pub fn write_all(fd: i32, mut data: &[u8]) -> Result<()> {
    while !data.is_empty() {
        // SAFETY: a readable buffer of data.len() bytes.
        let n = retry(|| unsafe {
            syscall(
                libc::SYS_write,
                [fd as usize, data.as_ptr() as usize, data.len(), 0, 0, 0],
            )
        })?;
        if n == 0 {
            return Err(Errno(libc::EIO));
        }
        data = &data[n..];
    }
    Ok(())
}

pub fn fsync(fd: &Fd) -> Result<()> {
    // SAFETY: no pointers.
    retry(|| unsafe { syscall(libc::SYS_fsync, [fd.0 as usize, 0, 0, 0, 0, 0]) }).map(drop)
}

pub fn linkat(
    from_dir: Dir<'_>,
    from: &CPath,
    to_dir: Dir<'_>,
    to: &CPath,
    flags: i32,
) -> Result<()> {
    // SAFETY: two NUL-terminated paths.
    check(unsafe {
        syscall(
            libc::SYS_linkat,
            [
                from_dir.raw(),
                from.ptr(),
                to_dir.raw(),
                to.ptr(),
                flags as usize,
                0,
            ],
        )
    })
    .map(drop)
}

/// Renames without ever replacing an existing name (`RENAME_NOREPLACE`).
pub fn rename_noreplace(
    from_dir: Dir<'_>,
    from: &CPath,
    to_dir: Dir<'_>,
    to: &CPath,
) -> Result<()> {
    // SAFETY: two NUL-terminated paths.
    check(unsafe {
        syscall(
            libc::SYS_renameat2,
            [
                from_dir.raw(),
                from.ptr(),
                to_dir.raw(),
                to.ptr(),
                libc::RENAME_NOREPLACE as usize,
                0,
            ],
        )
    })
    .map(drop)
}

pub fn unlinkat(dir: Dir<'_>, path: &CPath) -> Result<()> {
    // SAFETY: a NUL-terminated path.
    check(unsafe { syscall(libc::SYS_unlinkat, [dir.raw(), path.ptr(), 0, 0, 0, 0]) }).map(drop)
}

/// The target of a symbolic link (the caller's buffer bounds it: 4096 bytes).
pub fn readlink(path: &CPath) -> Result<Vec<u8>> {
    let mut buf = alloc::vec![0u8; 4096];
    // SAFETY: a NUL-terminated path and a writable buffer of buf.len() bytes.
    let n = check(unsafe {
        syscall(
            libc::SYS_readlinkat,
            [
                libc::AT_FDCWD as isize as usize,
                path.ptr(),
                buf.as_mut_ptr() as usize,
                buf.len(),
                0,
                0,
            ],
        )
    })?;
    if n == buf.len() {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

/// This machine's node name (what gethostname(2) returns).
pub fn nodename() -> Vec<u8> {
    let mut u = core::mem::MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: a struct utsname buffer.
    if check(unsafe { syscall(libc::SYS_uname, [u.as_mut_ptr() as usize, 0, 0, 0, 0, 0]) }).is_err()
    {
        return Vec::new();
    }
    // SAFETY: zeroed, then filled by the kernel.
    let u = unsafe { u.assume_init() };
    let name: Vec<u8> = u.nodename.iter().map(|&c| c as u8).collect();
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    name[..len].to_vec()
}

/// Fills `buf` from the kernel's random source (blocking until it is seeded).
pub fn getrandom(buf: &mut [u8]) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: a writable buffer of rest.len() bytes.
        done += retry(|| unsafe {
            syscall(
                libc::SYS_getrandom,
                [rest.as_mut_ptr() as usize, rest.len(), 0, 0, 0, 0],
            )
        })?;
    }
    Ok(())
}

/// The wall clock: seconds and microseconds since 1970.
pub fn now() -> (u64, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a struct timespec buffer.
    let _ = check(unsafe {
        syscall(
            libc::SYS_clock_gettime,
            [
                libc::CLOCK_REALTIME as usize,
                &raw mut ts as usize,
                0,
                0,
                0,
                0,
            ],
        )
    });
    (
        u64::try_from(ts.tv_sec).unwrap_or(0),
        (ts.tv_nsec / 1000) as u32,
    )
}

fn id(nr: c_long) -> u32 {
    // SAFETY: no arguments.
    unsafe { syscall(nr, [0; 6]) as u32 }
}

pub fn getpid() -> u32 {
    id(libc::SYS_getpid)
}

/// Real and effective user and group ids: (uid, euid, gid, egid).
pub fn ids() -> (u32, u32, u32, u32) {
    (
        id(libc::SYS_getuid),
        id(libc::SYS_geteuid),
        id(libc::SYS_getgid),
        id(libc::SYS_getegid),
    )
}

/// What every Cursus program does first (cursus-privsep's `clean_start`): descriptors
/// above 2 closed, umask 077, SIGXFSZ and SIGPIPE ignored.
pub fn clean_start() {
    // SAFETY: no pointers.
    unsafe {
        let _ = syscall(libc::SYS_close_range, [3, u32::MAX as usize, 0, 0, 0, 0]);
        let _ = syscall(libc::SYS_umask, [0o077, 0, 0, 0, 0, 0]);
    }
    ignore_signal(libc::SIGXFSZ);
    ignore_signal(libc::SIGPIPE);
}

/// Sets a signal's disposition to "ignore": the kernel's struct sigaction with SIG_IGN
/// needs no restorer.
fn ignore_signal(signal: i32) {
    // The kernel's struct sigaction on x86_64 and the other architectures with the generic
    // layout: handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let act = KernelSigaction {
        handler: libc::SIG_IGN,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: a struct sigaction of the kernel's layout, and the kernel's sigset size.
    let _ = unsafe {
        syscall(
            libc::SYS_rt_sigaction,
            [signal as usize, &raw const act as usize, 0, 8, 0, 0],
        )
    };
}

/// Replaces this process with `path`, with argv and environment as NULL-terminated arrays
/// of NUL-terminated strings. Returns only on failure.
///
/// # Safety
/// `argv` and `envp` must point to NULL-terminated arrays of pointers to NUL-terminated
/// strings, valid until the call returns.
pub unsafe fn execve(path: &CPath, argv: *const *const u8, envp: *const *const u8) -> Errno {
    // SAFETY: the caller guarantees the arrays.
    let ret = unsafe {
        syscall(
            libc::SYS_execve,
            [path.ptr(), argv as usize, envp as usize, 0, 0, 0],
        )
    };
    check(ret).err().unwrap_or(Errno(libc::EINVAL))
}

/// `size` bytes of fresh zeroed memory, readable and writable: the address.
pub fn map_anonymous(size: usize) -> Option<usize> {
    // SAFETY: an anonymous private mapping touches no existing memory.
    let ret = unsafe {
        syscall(
            libc::SYS_mmap,
            [
                0,
                size,
                (libc::PROT_READ | libc::PROT_WRITE) as usize,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as usize,
                usize::MAX, // fd -1
                0,
            ],
        )
    };
    check(ret).ok()
}

/// Makes `len` bytes at `addr` (page-aligned) read-only.
pub fn protect_read_only(addr: usize, len: usize) -> Result<()> {
    // SAFETY: changes protections only; the caller names memory nobody writes again.
    check(unsafe {
        syscall(
            libc::SYS_mprotect,
            [addr, len, libc::PROT_READ as usize, 0, 0, 0],
        )
    })
    .map(drop)
}

/// Ends the process at once.
pub fn exit(code: i32) -> ! {
    loop {
        // SAFETY: no pointers; does not return.
        unsafe {
            syscall(libc::SYS_exit_group, [code as usize, 0, 0, 0, 0, 0]);
        }
    }
}

/// The description of an error, for the errors a delivery meets, in the words the full
/// program prints (nix's `Errno::desc`, the kernel's comments); others by number.
pub fn describe(e: Errno) -> alloc::string::String {
    let text = match e.0 {
        libc::EPERM => "Operation not permitted",
        libc::ENOENT => "No such file or directory",
        libc::EINTR => "Interrupted system call",
        libc::EIO => "I/O error",
        libc::ENXIO => "No such device or address",
        libc::E2BIG => "Argument list too long",
        libc::ENOEXEC => "Exec format error",
        libc::EBADF => "Bad file number",
        libc::EAGAIN => "Try again",
        libc::ENOMEM => "Out of memory",
        libc::EACCES => "Permission denied",
        libc::EFAULT => "Bad address",
        libc::EBUSY => "Device or resource busy",
        libc::EEXIST => "File exists",
        libc::EXDEV => "Cross-device link",
        libc::ENODEV => "No such device",
        libc::ENOTDIR => "Not a directory",
        libc::EISDIR => "Is a directory",
        libc::EINVAL => "Invalid argument",
        libc::ENFILE => "File table overflow",
        libc::EMFILE => "Too many open files",
        libc::ETXTBSY => "Text file busy",
        libc::EFBIG => "File too large",
        libc::ENOSPC => "No space left on device",
        libc::ESPIPE => "Illegal seek",
        libc::EROFS => "Read-only file system",
        libc::EMLINK => "Too many links",
        libc::EPIPE => "Broken pipe",
        libc::ENAMETOOLONG => "File name too long",
        libc::ENOSYS => "Function not implemented",
        libc::ELOOP => "Too many symbolic links encountered",
        libc::EOPNOTSUPP => "Operation not supported on transport endpoint",
        libc::ESTALE => "Stale file handle",
        libc::EDQUOT => "Quota exceeded",
        libc::ETIMEDOUT => "Connection timed out",
        libc::ENOTCONN => "Transport endpoint is not connected",
        libc::ECONNRESET => "Connection reset by peer",
        _ => return alloc::format!("Unknown error {}", e.0),
    };
    text.into()
}
