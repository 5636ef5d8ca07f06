//! Descriptors and identities across a unix socket: SCM_RIGHTS in both directions and the
//! peer's credentials (SO_PEERCRED).
//!
//! Trusts the kernel for the peer's uid and for the descriptors it installs; trusts nothing
//! about how many descriptors a peer sends or when. Fails with `io::Error`.
//!
//! Attacks stopped:
//! - A peer flooding descriptors to exhaust the receiver's table: [`recv_with_fds`] accepts
//!   at most [`MAX_FDS`] per message and closes every descriptor it receives beyond what the
//!   caller keeps (they arrive as [`OwnedFd`] and close when dropped).
//! - A descriptor leaking into a program the receiver later runs: every received descriptor
//!   is close-on-exec (MSG_CMSG_CLOEXEC), so it never reaches a user's command by accident.
//! - A truncated control message hiding descriptors the receiver never saw (and so never
//!   closed): MSG_CTRUNC is an error.
//! - A peer lying about who it is: the uid comes from SO_PEERCRED, fixed by the kernel when
//!   the peer connected, never from anything the peer sends.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr, getsockopt, recvmsg, sendmsg,
    sockopt::PeerCredentials,
};

/// The most descriptors one message may carry (cursus-lda's `deliver-many` sends up to 16
/// messages at once).
pub const MAX_FDS: usize = 16;

/// The uid, gid and pid of the process at the other end of a connected unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// The peer's credentials as the kernel recorded them at connect time.
pub fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<Peer> {
    let cred = getsockopt(&socket, PeerCredentials).map_err(io::Error::from)?;
    Ok(Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

/// Sends `bytes` with `fds` (at most [`MAX_FDS`]) attached to the first byte. Returns the
/// number of bytes sent (the caller sends the rest with plain writes).
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message (at most {MAX_FDS})",
                fds.len()
            ),
        ));
    }
    let iov = [IoSlice::new(bytes)];
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives up to `buf.len()` bytes and any descriptors attached to them. Returns the byte
/// count (0 at end of stream) and the descriptors, each close-on-exec.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in our table for this message and
                // nothing else in the process knows its number; we take sole ownership.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let bytes = msg.bytes;
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the peer sent more than {MAX_FDS} descriptors in one message"),
        ));
    }
    Ok((bytes, fds))
}

/// Takes ownership of descriptor `fd`, inherited from the parent (a socket pair end named
/// on the command line). Fails when the number is not an open descriptor or is 0, 1 or 2.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is a standard stream"),
        ));
    }
    // F_GETFD fails with EBADF when the number is not open.
    nix::fcntl::fcntl(
        // SAFETY: borrowing for the duration of one fcntl call; the number is only read.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(io::Error::from)?;
    // SAFETY: the descriptor is open (checked above) and was handed to this process by its
    // parent for exactly this use; nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        owned.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_crosses_with_its_bytes() {
        let (a, b) = UnixStream::pair().expect("pair");
        let mut file = tempfile_in_tmp();
        file.write_all(b"message").expect("write");
        file.rewind().expect("rewind");
        let sent = send_with_fds(a.as_fd(), b"frame", &[file.as_fd()]).expect("send");
        assert_eq!(sent, 5);
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).expect("recv");
        assert_eq!(&buf[..n], b"frame");
        assert_eq!(fds.len(), 1);
        let mut got = String::new();
        std::fs::File::from(fds.into_iter().next().expect("fd"))
            .read_to_string(&mut got)
            .expect("read");
        assert_eq!(got, "message");
    }

    #[test]
    fn peer_credentials_are_our_own_on_a_pair() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let peer = peer_credentials(a.as_fd()).expect("cred");
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.pid, std::process::id() as i32);
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("privsep-pass-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        std::fs::remove_file(&path).ok();
        f
    }
}
