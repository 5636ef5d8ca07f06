//! The root service: listens on a unix socket (or serves connections inherited from its
//! parent), checks each peer, and serves each connection in a forked process that reads
//! request frames and forks one child per delivery; the child becomes the user before it
//! looks at anything the user controls.
//!
//! Process table (all single-threaded, no async runtime; `fork_process` refuses otherwise):
//!
//! | process          | uid  | lives                 | does                                    |
//! |------------------|------|-----------------------|-----------------------------------------|
//! | listener         | root | while the service runs| accept, SO_PEERCRED, reload the policy  |
//! | connection       | root | one connection        | frames, policy reload, user lookup, fork|
//! | delivery child   | user | one request           | refine, check, walk, write, answer      |
//!
//! Trusts the policy file (root's), the user database, the kernel's SO_PEERCRED; nothing
//! the peer sends. Fails per request with an answer (never a crash of the listener); a
//! frame error is answered with an error frame and the connection is closed; nothing is
//! written for a request that was not whole and valid.
//!
//! Attacks stopped:
//! - Another local user connecting to ask for deliveries: the socket is mode 0600 owned by
//!   the configured peer, and independently every connection's SO_PEERCRED uid must be the
//!   configured peer (or root, which could do anything the LDA does anyway).
//! - A request for uid 0 or a system account, an unlisted destination, a shell
//!   metacharacter: refused by the policy before any fork (system rules) and again in the
//!   child with the user's refinement.
//! - The MTA claiming a uid or home for a user: only the user name travels; uid, gid and
//!   home come from this process's own user database lookup.
//! - A message descriptor that is a directory, a pipe, a socket or a device (reads that
//!   block for ever, or list a directory into a mailbox), or one opened for writing (the
//!   user's command could then rewrite the MTA's queue file): refused, nothing written.
//! - A malformed, oversize or truncated frame, or a descriptor sent with a request that
//!   takes none: an error answer, the connection closed, no child forked.
//! - A peer that stops mid-frame to hold a root process: a frame must complete within
//!   [`FRAME_TIMEOUT`]; an idle connection is closed after [`IDLE_TIMEOUT`]; at most
//!   `max_connections` connection processes exist.
//! - A delivery child that hangs: killed after the request time limit; the answer is
//!   temporary.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cursus_mail::{ExitCode, Outcome, OutcomeKind, codes};
use cursus_privsep::Forked;
use cursus_privsep::passing::{peer_credentials, recv_with_fds};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, User};

use crate::destination::Destination;
use crate::policy::{self, Decision, Policy, Refusal};
use crate::protocol::{
    self, Answer, Decoded, ErrorCode, FilterStage, FrameError, Request, decode_request,
    encode_answer,
};
use crate::store::{self, Job};

/// How long the rest of a started frame may take to arrive.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may sit idle between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy_path: PathBuf,
    /// Peers allowed besides root.
    pub peer_uids: Vec<u32>,
    pub command_timeout: Duration,
    pub max_connections: usize,
}

impl Settings {
    /// The limit on one request: the command time plus a margin for locks and the disk.
    fn request_timeout(&self) -> Duration {
        self.command_timeout + Duration::from_secs(120)
    }
}

/// Writes one log line (stderr: journald or the supervisor keeps it), with one write(2):
/// stderr is unbuffered, so `writeln!` would write each piece separately and the lines of
/// the service's processes (and of cursusd, which shares the stream) would interleave.
pub fn log(line: &str) {
    let text = format!("cursus-lda[{}]: {line}\n", std::process::id());
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// The policy in force and the status of the file it came from, to notice edits: every
/// request first compares the file's status with the one it was loaded from (one stat(2))
/// and reloads when it changed, so an edit reaches open connections too, including the
/// socket-pair connections cursusd starts the service with.
///
/// A file that no longer loads (a syntax error, or an owner or mode the service refuses)
/// is not replaced by the last good policy: every delivery, filter and .forward request is
/// answered temporary 4.3.5 until the file loads again, and each change is logged.
///
/// Attack stopped: an administrator who removes a destination and leaves a mistake in the
/// file (or whose edit is caught half-written) would otherwise keep the removed destination
/// allowed with no sign in the answers; refusing while the file is broken errs towards
/// writing nothing, and deferred mail waits in the MTA's queue, nothing is lost. A file
/// made writable by others (chmod, chown) is noticed at once: the stamp holds the mode,
/// owner and change time as well as the content's size and modification time.
#[derive(Debug, Clone)]
struct Loaded {
    policy: Result<Policy, String>,
    stamp: Option<Stamp>,
}

/// What identifies one version of the policy file: which file (device, inode), its content
/// (size, modification time) and its trust (mode, owner, and the change time every chmod,
/// chown or write moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        mode: m.mode(),
        uid: m.uid(),
    })
}

/// Loads and validates the system policy file. It must belong to root (or to the user the
/// service runs as) and must not be writable by group or others.
///
/// Attack stopped: whoever can write the policy decides where the root service writes and
/// as whom; a group- or world-writable policy (or one owned by another user) would hand
/// that to them.
pub fn load_policy(path: &Path) -> Result<Policy, String> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "{}: owned by uid {}, not root: refusing to trust it",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: writable by group or others (mode {:o}): refusing to trust it",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    policy::parse_system(&text, &path.display().to_string()).map_err(|e| e.to_string())
}

/// The policy the service runs with: the file when it exists (and then it must load), else
/// the built-in defaults ([`crate::policy::DEFAULTS`]: each user's own ~/Maildir and below
/// and /var/mail/USER, uids from 1000, no commands), which only let a user's mail reach
/// that user's own mailboxes, so a missing file opens nothing an attacker could use.
pub fn load_policy_or_defaults(path: &Path) -> Result<Policy, String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log(&format!(
                "no policy file at {}: using the built-in defaults (~/Maildir and below, \
                 /var/mail/USER, uid >= {}; write one with `cursus-lda policy generate`)",
                path.display(),
                policy::DEFAULT_MIN_UID
            ));
            policy::parse_system(policy::DEFAULTS, "built-in defaults").map_err(|e| e.to_string())
        }
        _ => load_policy(path),
    }
}

impl Loaded {
    /// Loads the file (or the built-in defaults when there is none), stamping it first so
    /// that an edit made while it is read is seen at the next request.
    fn load(path: &Path) -> Loaded {
        let stamp = stamp(path);
        Loaded {
            policy: load_policy_or_defaults(path),
            stamp,
        }
    }

    /// Reloads when the file changed since it was loaded: one stat(2) when it did not.
    fn refresh(&mut self, path: &Path) {
        if stamp(path) == self.stamp {
            return;
        }
        *self = Loaded::load(path);
        match &self.policy {
            Ok(p) => log(&format!(
                "policy reloaded from {} with {} rules",
                path.display(),
                p.rules.len()
            )),
            Err(e) => log(&format!(
                "policy edit does not load, refusing every request (temporary) until it does: {e}"
            )),
        }
    }

    /// The policy, or the temporary outcome that a broken policy file gives every request.
    fn get(&self) -> Result<&Policy, Outcome> {
        self.policy.as_ref().map_err(|e| {
            Outcome::temporary(
                codes::CONFIG_ERROR,
                format!("the destination policy does not load: {e}"),
            )
        })
    }
}

/// Binds the listening socket: an old socket at `path` is replaced, anything else there is
/// an error; mode 0600, owned by the first configured peer.
pub fn bind(path: &Path, owner: Option<u32>) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(uid) = owner {
        std::os::unix::fs::chown(path, Some(uid), None)?;
    }
    Ok(listener)
}

/// Serves for ever: the listener (when given) and the inherited connections.
pub fn run(
    settings: &Settings,
    listener: Option<UnixListener>,
    inherited: Vec<UnixStream>,
) -> io::Result<()> {
    let mut loaded = Loaded::load(&settings.policy_path);
    let rules = match &loaded.policy {
        Ok(p) => p.rules.len(),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())),
    };
    let mut children: Vec<Pid> = Vec::new();
    for stream in inherited {
        // Inherited from the parent that started us as root: trusted by construction.
        spawn_connection(settings, &loaded, stream, &mut children)?;
    }
    let Some(listener) = listener else {
        // Socket-pair mode: serve until every inherited connection has ended.
        while !children.is_empty() {
            reap(&mut children, true);
        }
        return Ok(());
    };
    log(&format!(
        "listening, policy {} with {rules} rules",
        settings.policy_path.display(),
    ));
    loop {
        reap(&mut children, false);
        if children.len() >= settings.max_connections {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let ready = {
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(n) => n > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => return Err(e.into()),
            }
        };
        if !ready {
            continue;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log(&format!("accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let peer = match peer_credentials(stream.as_fd()) {
            Ok(p) => p,
            Err(e) => {
                log(&format!("refused a connection: no peer credentials: {e}"));
                continue;
            }
        };
        if peer.uid != 0 && !settings.peer_uids.contains(&peer.uid) {
            log(&format!(
                "refused a connection from uid {} pid {}: not the configured peer",
                peer.uid, peer.pid
            ));
            let _ = refuse(&stream, "this uid may not use cursus-lda");
            continue;
        }
        loaded.refresh(&settings.policy_path);
        spawn_connection(settings, &loaded, stream, &mut children)?;
    }
}

fn refuse(stream: &UnixStream, text: &str) -> io::Result<()> {
    let answer = Answer::Error {
        code: ErrorCode::Refused,
        text: text.to_string(),
    };
    let bytes = encode_answer(&answer).map_err(|e| io::Error::other(e.to_string()))?;
    (&*stream).write_all(&bytes)
}

fn reap(children: &mut Vec<Pid>, block: bool) {
    let flags = if block {
        None
    } else {
        Some(WaitPidFlag::WNOHANG)
    };
    loop {
        match waitpid(None, flags) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    children.retain(|c| *c != pid);
                }
                if block {
                    return;
                }
            }
        }
    }
}

fn spawn_connection(
    settings: &Settings,
    loaded: &Loaded,
    stream: UnixStream,
    children: &mut Vec<Pid>,
) -> io::Result<()> {
    match cursus_privsep::fork_process().map_err(io::Error::other)? {
        Forked::Parent(pid) => {
            children.push(pid);
            Ok(())
        }
        Forked::Child => {
            let code = match Connection::new(settings, loaded.clone(), stream).serve() {
                Ok(()) => 0,
                Err(e) => {
                    log(&format!("connection ended: {e}"));
                    1
                }
            };
            cursus_privsep::exit_child(code)
        }
    }
}

/// One connection, in its own root process. It keeps its own copy of the policy and
/// refreshes it before each request.
struct Connection<'a> {
    settings: &'a Settings,
    loaded: Loaded,
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl<'a> Connection<'a> {
    fn new(settings: &'a Settings, loaded: Loaded, stream: UnixStream) -> Self {
        Connection {
            settings,
            loaded,
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    fn serve(mut self) -> io::Result<()> {
        loop {
            let request = match self.next_request()? {
                Some(r) => r,
                None => return Ok(()),
            };
            let (request, messages) = match request {
                Ok(pair) => pair,
                Err((code, text)) => {
                    log(&format!("closing the connection: {text}"));
                    self.send(&Answer::Error { code, text })?;
                    return Ok(());
                }
            };
            // An edit of the policy file applies from the next request on, also on a
            // connection that stays open for hours (cursusd's socket pairs).
            self.loaded.refresh(&self.settings.policy_path);
            let answer = self.answer(&request, messages);
            self.send(&answer)?;
        }
    }

    fn send(&self, answer: &Answer) -> io::Result<()> {
        let bytes = encode_answer(answer).map_err(|e| io::Error::other(e.to_string()))?;
        (&self.stream).write_all(&bytes)
    }

    /// Reads until one whole frame is buffered. `Ok(None)` at a clean end of stream;
    /// `Ok(Some(Err(..)))` for a frame error to answer before closing.
    #[allow(clippy::type_complexity)]
    fn next_request(
        &mut self,
    ) -> io::Result<Option<Result<(Request, Vec<File>), (ErrorCode, String)>>> {
        let mut started: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                match decode_request(&self.buf) {
                    Ok(Decoded::Frame { value, consumed }) => {
                        self.buf.drain(..consumed);
                        return Ok(Some(self.take_descriptors(value)));
                    }
                    Ok(Decoded::NeedMore { .. }) => {}
                    Err(e) => return Ok(Some(Err(frame_error(&e)))),
                }
                started.get_or_insert_with(Instant::now);
            }
            let limit = match started {
                Some(t) => FRAME_TIMEOUT.saturating_sub(t.elapsed()),
                None => IDLE_TIMEOUT,
            };
            if limit.is_zero() || !wait_readable(self.stream.as_fd(), limit)? {
                return if started.is_some() {
                    Ok(Some(Err((
                        ErrorCode::Malformed,
                        "the frame did not complete in time".to_string(),
                    ))))
                } else {
                    Ok(None)
                };
            }
            let mut chunk = [0u8; 16 * 1024];
            let (n, fds) = recv_with_fds(self.stream.as_fd(), &mut chunk)?;
            self.fds.extend(fds);
            if self.fds.len() > protocol::MAX_BATCH {
                return Ok(Some(Err((
                    ErrorCode::OutOfOrder,
                    format!(
                        "more than {} descriptors for one request",
                        protocol::MAX_BATCH
                    ),
                ))));
            }
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some(Err((
                        ErrorCode::Malformed,
                        "the connection closed inside a frame".to_string(),
                    ))))
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Pairs a request with the descriptors it needs (one per message, in order), refusing
    /// any other number: a descriptor that came with the wrong request, or a request whose
    /// messages did not all come, ends the connection.
    fn take_descriptors(
        &mut self,
        request: Request,
    ) -> Result<(Request, Vec<File>), (ErrorCode, String)> {
        let needs = request.descriptors();
        let fds = std::mem::take(&mut self.fds);
        match (needs, fds.len()) {
            (n, m) if n == m => {
                let mut files = Vec::with_capacity(n);
                for fd in fds {
                    check_message_descriptor(fd.as_fd())
                        .map_err(|why| (ErrorCode::Refused, why))?;
                    files.push(File::from(fd));
                }
                Ok((request, files))
            }
            (0, _) => Err((
                ErrorCode::OutOfOrder,
                "a descriptor came with a request that takes none".to_string(),
            )),
            (1, 0) => Err((
                ErrorCode::OutOfOrder,
                "this request needs the message descriptor".to_string(),
            )),
            (n, m) => Err((
                ErrorCode::OutOfOrder,
                format!("this request needs {n} message descriptors, {m} came"),
            )),
        }
    }

    fn answer(&self, request: &Request, mut messages: Vec<File>) -> Answer {
        match request {
            Request::Ping => Answer::Pong,
            Request::Deliver {
                user,
                destination,
                envelope,
                options,
            } => {
                let mut answers = self.deliver(
                    user,
                    destination,
                    std::slice::from_ref(envelope),
                    *options,
                    messages,
                );
                answers.pop().unwrap_or_else(|| internal("no answer"))
            }
            Request::DeliverMany {
                user,
                destination,
                envelopes,
                options,
            } => Answer::Outcomes(
                self.deliver(user, destination, envelopes, *options, messages)
                    .into_iter()
                    .map(batch_sized)
                    .collect(),
            ),
            Request::Filter {
                user,
                envelope,
                stage,
            } => {
                let message = messages.pop();
                self.as_user(user, |account| {
                    filter_as_user(user, account, envelope, *stage, message)
                })
            }
            Request::ReadForward { user } => self.as_user(user, read_forward_as_user),
        }
    }

    /// Delivers each message (`messages[i]` with `envelopes[i]`) to `destination` as `user`
    /// in one child, and logs one line per message. One answer per message, in order.
    fn deliver(
        &self,
        user: &str,
        destination: &Destination,
        envelopes: &[protocol::Envelope],
        options: protocol::DeliverOptions,
        messages: Vec<File>,
    ) -> Vec<Answer> {
        let started = Instant::now();
        let answers = self.deliver_as_user(user, destination, envelopes, options, messages);
        for (envelope, answer) in envelopes.iter().zip(&answers) {
            if let Answer::Outcome { kind, status, text }
            | Answer::OverQuota {
                kind, status, text, ..
            } = answer
            {
                log(&format!(
                    "deliver user={user} to={} destination={}:{} status={} dsn={status} delay={:.3} ({text})",
                    envelope.final_recipient,
                    destination.kind_name(),
                    destination.path(),
                    status_word(*kind),
                    started.elapsed().as_secs_f64(),
                ));
            }
        }
        answers
    }

    fn deliver_as_user(
        &self,
        user: &str,
        destination: &Destination,
        envelopes: &[protocol::Envelope],
        options: protocol::DeliverOptions,
        messages: Vec<File>,
    ) -> Vec<Answer> {
        let all = |answer: Answer| vec![answer; envelopes.len()];
        if messages.len() != envelopes.len() || messages.is_empty() {
            return all(outcome_answer(&Outcome::temporary(
                codes::SYSTEM_STATUS,
                "no message descriptor",
            )));
        }
        let policy = match self.loaded.get() {
            Ok(p) => p,
            Err(outcome) => return all(outcome_answer(&outcome)),
        };
        let account = match lookup(user) {
            Ok(a) => a,
            Err(outcome) => return all(outcome_answer(&outcome)),
        };
        // The system rules alone: refusals a refinement cannot lift end here, before a fork.
        let request = policy::Request {
            user,
            uid: account.uid,
            home: &account.home,
            destination,
        };
        if let Decision::Refused { reason, .. } = policy::check(policy, &request)
            && matches!(
                reason,
                Refusal::BadUserName
                    | Refusal::Root
                    | Refusal::BelowUidFloor { .. }
                    | Refusal::UnsafeArgument { .. }
            )
        {
            return all(outcome_answer(&Outcome::permanent(
                codes::DELIVERY_NOT_AUTHORIZED,
                ExitCode::NoPerm,
                format!("delivery not authorized by the destination policy: {reason}"),
            )));
        }
        let timeout = self.settings.command_timeout;
        let deliver_one = |account: &Account, envelope: &protocol::Envelope, message: &File| {
            let job = Job {
                user,
                uid: account.uid,
                home: &account.home,
                system: policy,
                destination,
                envelope,
                options,
                message,
                command_timeout: timeout,
            };
            let outcome = store::deliver(&job, &mut |line| log(&line));
            match over_quota_read(destination, &outcome) {
                Some(mailbox_read) => Answer::OverQuota {
                    kind: outcome.kind,
                    status: outcome.status,
                    text: outcome.text.clone(),
                    mailbox_read,
                },
                None => outcome_answer(&outcome),
            }
        };
        if let ([envelope], [message]) = (envelopes, messages.as_slice()) {
            return vec![
                self.in_child(&account, |account| deliver_one(account, envelope, message)),
            ];
        }
        // Several messages: the child (already the user, and never forking again: commands
        // are not batched) writes them from one thread each, so their file syncs overlap
        // and the Maildir's directory sync is shared (cursus_mailbox::directory_sync), as
        // in-process deliveries of cursusd in single-user mode share it.
        let answer = self.in_child(&account, |account| {
            Answer::Outcomes(std::thread::scope(|scope| {
                let writers: Vec<_> = envelopes
                    .iter()
                    .zip(&messages)
                    .map(|(envelope, message)| {
                        scope.spawn(|| batch_sized(deliver_one(account, envelope, message)))
                    })
                    .collect();
                writers
                    .into_iter()
                    .map(|w| {
                        w.join()
                            .unwrap_or_else(|_| internal("the delivery thread panicked"))
                    })
                    .collect()
            }))
        });
        match answer {
            Answer::Outcomes(answers) if answers.len() == envelopes.len() => answers,
            // The child died, overran its time or answered nonsense: every message waits.
            Answer::Outcomes(_) => all(internal("the delivery child answered out of turn")),
            other => all(other),
        }
    }

    fn as_user(&self, user: &str, work: impl FnOnce(&Account) -> Answer) -> Answer {
        let policy = match self.loaded.get() {
            Ok(p) => p,
            Err(outcome) => return outcome_answer(&outcome),
        };
        match lookup(user) {
            Ok(account) if account.uid == 0 => Answer::Error {
                code: ErrorCode::Refused,
                text: "filters and .forward files are never read as root".to_string(),
            },
            Ok(account) if account.uid < policy.min_uid => Answer::Error {
                code: ErrorCode::Refused,
                text: format!("uid {} is below min_uid {}", account.uid, policy.min_uid),
            },
            Ok(account) => self.in_child(&account, work),
            Err(outcome) => outcome_answer(&outcome),
        }
    }

    /// Forks a child that becomes the user and runs `work`; its answer comes back through a
    /// pipe. A child that dies or overruns the time limit gives a temporary answer.
    fn in_child(&self, account: &Account, work: impl FnOnce(&Account) -> Answer) -> Answer {
        let (mut reader, writer) = match io::pipe() {
            Ok(p) => p,
            Err(e) => return internal(&format!("pipe: {e}")),
        };
        let pid = match cursus_privsep::fork_process() {
            Ok(Forked::Parent(pid)) => pid,
            Ok(Forked::Child) => {
                drop(reader);
                let answer = match cursus_privsep::become_user(account.uid, account.gid) {
                    Ok(()) => {
                        cursus_privsep::private_umask();
                        work(account)
                    }
                    Err(e) => outcome_answer(&Outcome::temporary(
                        codes::SYSTEM_STATUS,
                        format!("cannot become {}: {e}", account.name),
                    )),
                };
                let code = match encode_answer(&answer) {
                    Ok(bytes) => {
                        let mut w = writer;
                        i32::from(w.write_all(&bytes).is_err())
                    }
                    Err(_) => 2,
                };
                cursus_privsep::exit_child(code)
            }
            Err(e) => return internal(&format!("fork: {e}")),
        };
        drop(writer);
        let deadline = Instant::now() + self.settings.request_timeout();
        let mut bytes = Vec::new();
        let mut finished = false;
        while !finished {
            let left = deadline.saturating_duration_since(Instant::now());
            match wait_readable(reader.as_fd(), left) {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
            let mut chunk = [0u8; 8192];
            match reader.read(&mut chunk) {
                Ok(0) => finished = true,
                Ok(n) if bytes.len() + n <= protocol::MAX_FRAME => {
                    bytes.extend_from_slice(&chunk[..n]);
                }
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if !finished {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let status = waitpid(pid, None);
        match protocol::decode_answer(&bytes) {
            Ok(Decoded::Frame { value, .. }) if finished => value,
            _ if !finished => outcome_answer(&Outcome::temporary(
                codes::SYSTEM_STATUS,
                format!(
                    "the delivery as {} did not finish within {} s",
                    account.name,
                    self.settings.request_timeout().as_secs()
                ),
            )),
            _ => outcome_answer(&Outcome::temporary(
                codes::SYSTEM_STATUS,
                format!(
                    "the delivery process for {} ended without an answer ({status:?})",
                    account.name
                ),
            )),
        }
    }
}

/// For a Maildir over quota (5.2.2, or 4.2.2 by configuration): when it was last read,
/// the modification time of its cur/ (where a reader moves what it has seen). Looked at
/// here, as the user, since the daemon may not enter the user's home. `None` otherwise, or
/// when cur/ cannot be seen. The user controls this time for their own mailbox only, which
/// decides nothing but whether their own mail waits or bounces.
fn over_quota_read(destination: &Destination, outcome: &Outcome) -> Option<u32> {
    let full = codes::MAILBOX_FULL;
    if outcome.status != full && outcome.status != full.as_temporary() {
        return None;
    }
    let Destination::Maildir(path) = destination else {
        return None;
    };
    let read = cursus_mailbox::maildir::last_read(Path::new(path.as_str()))?;
    u32::try_from(read).ok()
}

fn status_word(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Delivered => "sent",
        OutcomeKind::Temporary => "deferred",
        OutcomeKind::Permanent => "bounced",
    }
}

/// An answer whose text fits a `deliver-many` answer ([`protocol::MAX_BATCH_TEXT`]): a
/// mailbox's outcome is a line, this only guards the frame.
fn batch_sized(answer: Answer) -> Answer {
    let cut = |text: String| {
        if text.len() <= protocol::MAX_BATCH_TEXT {
            return text;
        }
        let mut end = protocol::MAX_BATCH_TEXT - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    };
    match answer {
        Answer::Outcome { kind, status, text } => Answer::Outcome {
            kind,
            status,
            text: cut(text),
        },
        Answer::OverQuota {
            kind,
            status,
            text,
            mailbox_read,
        } => Answer::OverQuota {
            kind,
            status,
            text: cut(text),
            mailbox_read,
        },
        other => other,
    }
}

fn internal(text: &str) -> Answer {
    outcome_answer(&Outcome::temporary(codes::SYSTEM_STATUS, text.to_string()))
}

/// An outcome as an answer frame.
pub fn outcome_answer(outcome: &Outcome) -> Answer {
    Answer::Outcome {
        kind: outcome.kind,
        status: outcome.status,
        text: outcome.text.clone(),
    }
}

fn frame_error(e: &FrameError) -> (ErrorCode, String) {
    let code = match e {
        FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        _ => ErrorCode::Malformed,
    };
    (code, e.to_string())
}

/// The message descriptor must be a regular file opened read-only.
fn check_message_descriptor(fd: BorrowedFd<'_>) -> Result<(), String> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("fstat: {e}"))?;
    let kind = st.st_mode & libc_mode::S_IFMT;
    if kind != libc_mode::S_IFREG {
        let what = match kind {
            libc_mode::S_IFDIR => "a directory",
            libc_mode::S_IFIFO => "a pipe",
            libc_mode::S_IFSOCK => "a socket",
            libc_mode::S_IFCHR | libc_mode::S_IFBLK => "a device",
            _ => "not a regular file",
        };
        return Err(format!("the message descriptor is {what}"));
    }
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
    if OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE != OFlag::O_RDONLY {
        return Err("the message descriptor is open for writing".to_string());
    }
    Ok(())
}

mod libc_mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFIFO: u32 = 0o010000;
}

fn wait_readable(fd: BorrowedFd<'_>, limit: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis().min(60_000)).unwrap_or(60_000);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A user as the user database has it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Looks the user up; unknown is permanent 5.1.1, a failing database temporary.
fn lookup(user: &str) -> Result<Account, Outcome> {
    if !policy::valid_user(user) {
        return Err(Outcome::permanent(
            codes::DELIVERY_NOT_AUTHORIZED,
            ExitCode::NoPerm,
            "delivery not authorized by the destination policy: the user name is not a safe path component",
        ));
    }
    match User::from_name(user) {
        Ok(Some(u)) => Ok(Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir.to_string_lossy().into_owned(),
        }),
        Ok(None) => Err(Outcome::permanent(
            codes::BAD_MAILBOX,
            ExitCode::NoUser,
            format!("no such user: {user}"),
        )),
        Err(e) => Err(Outcome::temporary(
            codes::SYSTEM_STATUS,
            format!("user lookup for {user} failed: {e}"),
        )),
    }
}

fn filter_as_user(
    user: &str,
    account: &Account,
    envelope: &protocol::Envelope,
    stage: FilterStage,
    message: Option<File>,
) -> Answer {
    let home = Path::new(&account.home);
    match message {
        Some(file) => {
            let mut reader = store::PositionalReader::new(&file);
            crate::filter::run_filter(user, home, envelope, stage, Some(&mut reader))
        }
        None => crate::filter::run_filter(user, home, envelope, stage, None),
    }
}

fn read_forward_as_user(account: &Account) -> Answer {
    crate::forward::read_forward(Path::new(&account.home), account.uid)
}

/// The descriptor number a `--connection-fd` names, checked to be an open unix socket.
pub fn inherited_stream(fd: i32) -> io::Result<UnixStream> {
    let owned = cursus_privsep::passing::take_inherited(fd)?;
    let st = nix::sys::stat::fstat(owned.as_fd()).map_err(io::Error::from)?;
    if st.st_mode & libc_mode::S_IFMT != libc_mode::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        ));
    }
    Ok(UnixStream::from(owned))
}

/// Where the service listens unless `--socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/cursus/lda.sock";

/// `cursus-lda serve`: returns the exit status (only on a start-up failure; the service
/// itself runs until killed).
pub fn serve_command(args: &crate::cli::ServeArgs, err: &mut dyn Write) -> u8 {
    let mut fail = |text: String| {
        let _ = writeln!(err, "cursus-lda: {text}");
        78
    };
    let mut peer_uids = Vec::new();
    for peer in &args.peers {
        match peer.parse::<u32>() {
            Ok(uid) => peer_uids.push(uid),
            Err(_) => match User::from_name(peer) {
                Ok(Some(u)) => peer_uids.push(u.uid.as_raw()),
                Ok(None) => return fail(format!("--peer {peer}: no such user")),
                Err(e) => return fail(format!("--peer {peer}: {e}")),
            },
        }
    }
    if args.socket.is_none() && args.connection_fds.is_empty() {
        return fail("give --socket PATH or --connection-fd FD".to_string());
    }
    // Checked here so that a bad file stops the start with status 78 (a missing one means
    // the defaults, reported once by `run`).
    if let Err(e) = load_policy(&args.policy)
        .map(drop)
        .or_else(|e| if args.policy.exists() { Err(e) } else { Ok(()) })
    {
        return fail(format!("the policy does not load: {e}"));
    }
    let mut inherited = Vec::new();
    for fd in &args.connection_fds {
        match inherited_stream(*fd) {
            Ok(s) => inherited.push(s),
            Err(e) => return fail(format!("--connection-fd {fd}: {e}")),
        }
    }
    let _ = cursus_privsep::ignore_sigpipe();
    let _ = cursus_privsep::ignore_signal_hangup();
    let listener = match &args.socket {
        Some(path) => match bind(path, peer_uids.first().copied()) {
            Ok(l) => Some(l),
            Err(e) => return fail(format!("cannot listen on {}: {e}", path.display())),
        },
        None => None,
    };
    if !nix::unistd::geteuid().is_root() {
        log("not running as root: deliveries can only run as this user");
    }
    let settings = Settings {
        policy_path: args.policy.clone(),
        peer_uids,
        command_timeout: Duration::from_secs(args.command_timeout),
        max_connections: args.max_connections.max(1),
    };
    match run(&settings, listener, inherited) {
        Ok(()) => 0,
        Err(e) => fail(format!("the service stopped: {e}")),
    }
}
