//! The SMTP and LMTP listeners: accept connections, enforce connection limits, and drive one
//! `cursus_proto::Session` per connection, answering its events through the [`Backend`]
//! (recipient verification, the durable queue).
//!
//! Trusts nothing the client sends (the session state machine parses it); trusts the backend.
//! Fails per connection: an I/O error or a timeout ends that connection only (a read timeout
//! with `421 4.4.2`; a write timeout without a reply, logged); a backend error becomes a 4xx
//! reply, never a 250.
//!
//! Attacks stopped:
//! - Connection floods: at most `max_connections` in total and `max_connections_per_client`
//!   from one address; beyond that the client gets `421 4.7.0` and the socket closes.
//! - Slow clients holding sessions: every read has the RFC 5321 §4.5.3.2 timeout of the
//!   state the session is in (configurable, `[smtp] *_timeout`), and so has every write: a
//!   client that never reads its replies cannot hold a slot once the socket buffers fill.
//! - Early talkers (spam engines that do not wait for the greeting): any byte before the
//!   greeting is refused by the session (554 5.5.1): read during a greet pause, or, as
//!   Exim's smtp_enforce_sync does, found waiting on a TCP connection (a peek that does
//!   not block) right before the greeting is written.
//! - A full disk: MAIL (with its SIZE), DATA and BDAT get 452 4.3.1 while the queue's file
//!   system has less than `queue_min_free` free, before the client sends a message that
//!   could not be kept.
//! - Losing accepted mail: `250` after DATA is sent only when the backend returns a queue
//!   id, which it does only after the message is on disk and synced.
//! - Memory exhaustion by large messages: a session holds at most [`SPOOL_BUFFER`] of
//!   content; beyond that the content goes to its queue file as it arrives (writes on the
//!   blocking pool, awaited before the next read, so a fast client waits for the disk). A
//!   failed write (452 4.3.1 for a full disk, else 451 4.3.0) is answered at the end of
//!   the message, once (per recipient in LMTP), the rest of the content read and dropped;
//!   an abandoned transaction (RSET, size limit, hang-up, timeout, shutdown) unlinks the
//!   file.
//! - SMTP smuggling and pipelining abuse: handled by the session (see crates/proto/NOTES.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cursus_mail::{EnhancedStatus, Sender};
use cursus_proto::{
    Answer, Config as SessionConfig, Event, Limits, MailParams, Output, Protocol, RcptParams,
    Reply, Session,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};

use crate::config::{Config, ListenAddr};
use crate::log;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// `None` for a unix socket.
    pub ip: Option<IpAddr>,
    /// The uid of a unix-socket peer (SO_PEERCRED), for local submission.
    pub uid: Option<u32>,
    pub description: String,
    /// SMTP on a unix socket (`cursus sendmail`, local programs): recipients are not refused
    /// at RCPT but bounced, because such clients (cron, scripts) rarely read a refusal and
    /// the mail would be lost.
    pub local_submission: bool,
}

/// A complete incoming message, as the session collected it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub protocol: Protocol,
    pub client: Client,
    pub helo: Option<String>,
    pub tls: bool,
    pub sender: Sender,
    pub params: MailParams,
    pub recipients: Vec<(String, RcptParams)>,
    /// When DATA or the first BDAT was accepted: the date of the Received header and the
    /// envelope's arrival time (known before the content, which may be spooled as it comes).
    pub received: jiff::Timestamp,
}

/// What the daemon answers at RCPT.
#[derive(Debug, Clone)]
pub enum Verdict {
    Accept,
    Refuse(Reply),
}

/// The daemon behind the sessions. Methods may block (lookups, fsync); the server calls them
/// on the blocking pool.
pub trait Backend: Send + Sync + 'static {
    fn verify(&self, sender: &Sender, recipient: &str, client: &Client) -> Verdict;
    /// Makes the message durable and returns its queue id; `message` is the content as
    /// received (CRLF line ends). An `Err` is the reply to send instead of 250.
    fn accept(&self, incoming: Incoming, message: Vec<u8>) -> Result<String, Reply>;
    /// Opens the queue file of a message too large to hold in memory ([`SPOOL_BUFFER`]);
    /// its content is then written as it arrives. An `Err` is the reply owed at the end of
    /// the message.
    fn spool(&self, incoming: &Incoming) -> Result<Box<dyn Spool>, Reply>;
    /// Whether the queue has room for a message of about `size` octets (0: unknown), asked
    /// at MAIL and at the start of DATA or BDAT, on the runtime thread (so it must be quick:
    /// one statvfs of the local spool). An `Err` is the refusal (452 4.3.1).
    fn room_for(&self, _size: u64) -> Result<(), Reply> {
        Ok(())
    }
}

/// A message being written into the queue as it arrives. Every method may block (the
/// server calls them on the blocking pool). Dropped without [`Spool::commit`], the message
/// leaves nothing in the queue.
pub trait Spool: Send {
    /// Appends content. An `Err` is the reply owed at the end of the message.
    fn write(&mut self, content: &[u8]) -> Result<(), Reply>;
    /// Makes the message durable and returns its queue id, as [`Backend::accept`] does;
    /// `size` is the size of the content.
    fn commit(self: Box<Self>, incoming: Incoming, size: u64) -> Result<String, Reply>;
}

/// Content held in memory before it is written to the queue: a message no larger is
/// accepted from memory in one step (no file is opened before its end), a larger one is
/// written to its queue file in pieces of about this size as it arrives.
pub const SPOOL_BUFFER: usize = 256 << 10;

/// Shared state of all listeners.
pub struct Server {
    pub config: Arc<Config>,
    pub backend: Arc<dyn Backend>,
    slots: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    shutdown: watch::Receiver<bool>,
    /// STARTTLS, when a certificate is configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    pub fn new(
        config: Arc<Config>,
        backend: Arc<dyn Backend>,
        shutdown: watch::Receiver<bool>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Arc<Server> {
        Arc::new(Server {
            slots: Arc::new(Semaphore::new(config.limits.max_connections)),
            config,
            backend,
            per_client: Mutex::new(HashMap::new()),
            shutdown,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        })
    }

    /// Waits, at most `limit`, until every session has ended. After the shutdown signal
    /// each session answers 421 and closes; the runtime must not be dropped before they
    /// have written it.
    pub async fn sessions_ended(&self, limit: Duration) {
        let all = u32::try_from(self.config.limits.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(limit, self.slots.acquire_many(all)).await;
    }

    fn session_config(&self, protocol: Protocol) -> SessionConfig {
        let mut c = SessionConfig::new(self.config.hostname.clone(), protocol);
        let l = &self.config.limits;
        c.limits = Limits {
            command_line: l.command_line,
            recipients: l.recipients,
            messages: l.messages_per_connection,
            message_size: l.message_size,
            errors: l.errors,
        };
        c.starttls = self.tls.is_some();
        c
    }

    /// The configured duration of the wait `session` is in.
    fn limit(&self, session: &Session) -> Duration {
        self.config.timeouts.get(session.timeout())
    }
}

/// How long a reply to a client that is refused or timed out may take to write.
const FAREWELL_LIMIT: Duration = Duration::from_secs(10);

/// Writes `bytes` (and flushes) within `limit`. A client that does not read its replies
/// within the time gets nothing more: the write is abandoned, the event logged, and a
/// `TimedOut` error ends the connection (admit does not log it again).
async fn write_within<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
    client: &Client,
) -> std::io::Result<()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(result) => result,
        Err(_) => {
            log::line(&format!(
                "{}: timeout after {} s writing to the client (it does not read), connection closed",
                client.description,
                limit.as_secs_f64()
            ));
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            ))
        }
    }
}

/// Whether the client has already sent something: a peek that does not block (Exim's
/// smtp_enforce_sync check before the greeting).
fn input_waiting<F: AsFd>(stream: &F) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 1];
    matches!(
        recv(
            stream.as_fd().as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Ok(n) if n > 0
    )
}

/// Binds one listener and serves it until shutdown.
pub async fn listen(
    server: Arc<Server>,
    addr: ListenAddr,
    protocol: Protocol,
) -> std::io::Result<()> {
    match &addr {
        ListenAddr::Tcp(a) => {
            let listener = tokio::net::TcpListener::bind(a).await?;
            serve_tcp(server, listener, protocol).await;
        }
        ListenAddr::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            serve_unix(server, listener, protocol).await;
        }
    }
    Ok(())
}

/// Serves an already bound TCP listener (bound as root before the drop).
pub async fn serve_tcp(server: Arc<Server>, listener: tokio::net::TcpListener, protocol: Protocol) {
    let mut shutdown = server.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                log::line(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = Client {
            ip: Some(peer.ip()),
            uid: None,
            description: format!("[{}]:{}", peer.ip(), peer.port()),
            local_submission: false,
        };
        let server = server.clone();
        tokio::spawn(async move { admit(server, stream, client, protocol).await });
    }
}

/// Serves a unix-socket listener (LMTP, local submission).
pub async fn serve_unix(
    server: Arc<Server>,
    listener: tokio::net::UnixListener,
    protocol: Protocol,
) {
    let mut shutdown = server.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                log::line(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        let client = Client {
            ip: None,
            uid,
            description: match uid {
                Some(u) => format!("local uid {u}"),
                None => "local".to_string(),
            },
            local_submission: protocol == Protocol::Smtp,
        };
        let server = server.clone();
        tokio::spawn(async move { admit(server, stream, client, protocol).await });
    }
}

/// Applies the connection limits, then runs the session.
async fn admit<S: AsyncRead + AsyncWrite + AsFd + Unpin + Send + 'static>(
    server: Arc<Server>,
    mut stream: S,
    client: Client,
    protocol: Protocol,
) {
    let Ok(permit) = server.slots.clone().try_acquire_owned() else {
        let _ = tokio::time::timeout(
            FAREWELL_LIMIT,
            stream.write_all(b"421 4.7.0 Too many connections, try again later\r\n"),
        )
        .await;
        log::line(&format!("refused {}: connection limit", client.description));
        return;
    };
    let ip = client.ip;
    if let Some(ip) = ip {
        let over = {
            let mut map = server.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            *n += 1;
            *n > server.config.limits.max_connections_per_client
        };
        if over {
            let _ = tokio::time::timeout(
                FAREWELL_LIMIT,
                stream.write_all(b"421 4.7.0 Too many connections from your address\r\n"),
            )
            .await;
            release(&server, ip);
            log::line(&format!(
                "refused {}: per-client connection limit",
                client.description
            ));
            return;
        }
    }
    match run_connection(&server, stream, client, protocol).await {
        Ok(()) => {}
        // A client that hangs up (also without a TLS close_notify) is not news.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    // Logged where it happened (write_within).
                    | std::io::ErrorKind::TimedOut
            ) => {}
        Err(e) => log::line(&format!("connection ended: {e}")),
    }
    if let Some(ip) = ip {
        release(&server, ip);
    }
    drop(permit);
}

fn release(server: &Server, ip: IpAddr) {
    let mut map = server.per_client.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

/// The message being received.
#[derive(Default)]
struct Transaction {
    recipients: Vec<(String, RcptParams)>,
    /// Everything but the content, from DATA or the first BDAT on.
    incoming: Option<Incoming>,
    /// Content not yet written to the queue (all of it while the message is small).
    buffer: Vec<u8>,
    /// The queue file, once the content outgrew [`SPOOL_BUFFER`].
    spool: Option<Box<dyn Spool>>,
    /// The reply owed at the end of the message after a failed write; the rest of the
    /// content is read and thrown away.
    failed: Option<Reply>,
}

impl Drop for Transaction {
    /// RSET, an abandoned message, QUIT, a disconnect, a timeout or shutdown: the queue
    /// file goes, unlinked on the blocking pool (a large file may take a while).
    fn drop(&mut self) {
        if let Some(spool) = self.spool.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || drop(spool));
                }
                Err(_) => drop(spool),
            }
        }
    }
}

impl Transaction {
    /// Writes the buffered content to the queue file (opened at the first call), on the
    /// blocking pool; the session reads no more until it is done (backpressure). A failure
    /// drops the file and is remembered for the end of the message.
    async fn flush(&mut self, backend: &Arc<dyn Backend>) {
        let content = std::mem::take(&mut self.buffer);
        let spool = self.spool.take();
        let opening = if spool.is_none() {
            self.incoming.clone()
        } else {
            None
        };
        let backend = backend.clone();
        let job = move || {
            let mut spool = match (spool, opening) {
                (Some(spool), _) => spool,
                (None, Some(incoming)) => match backend.spool(&incoming) {
                    Ok(spool) => spool,
                    Err(r) => return (None, content, Err(r)),
                },
                (None, None) => return (None, content, Err(temp_reply("no transaction"))),
            };
            match spool.write(&content) {
                Ok(()) => (Some(spool), content, Ok(())),
                // Dropped here: the file is unlinked on this thread.
                Err(r) => (None, content, Err(r)),
            }
        };
        match tokio::task::spawn_blocking(job).await {
            Ok((spool, mut content, Ok(()))) => {
                content.clear();
                self.buffer = content;
                self.spool = spool;
            }
            Ok((_, _, Err(r))) => self.failed = Some(r),
            Err(_) => self.failed = Some(temp_reply("the queue writer failed")),
        }
    }
}

/// One connection's protocol state; it survives the switch to TLS.
struct Conn {
    session: Session,
    client: Client,
    protocol: Protocol,
    transaction: Option<Transaction>,
    pending_mail: Option<(Sender, MailParams)>,
}

/// How a stretch of the conversation ended.
enum Next {
    Close,
    StartTls,
}

async fn run_connection<S: AsyncRead + AsyncWrite + AsFd + Unpin + Send + 'static>(
    server: &Arc<Server>,
    mut stream: S,
    client: Client,
    protocol: Protocol,
) -> std::io::Result<()> {
    let mut conn = Conn {
        session: Session::new(server.session_config(protocol)),
        client,
        protocol,
        transaction: None,
        pending_mail: None,
    };
    // Small at first (most connections are idle or short), doubled while reads fill it.
    let mut buf = vec![0u8; READ_BUFFER_START];
    if server.config.greet_pause_ms > 0 {
        let pause = Duration::from_millis(server.config.greet_pause_ms);
        if let Ok(Ok(n)) = tokio::time::timeout(pause, stream.read(&mut buf)).await
            && n > 0
        {
            let mut out = Vec::new();
            let _ = conn.session.receive(&buf[..n]);
            drain_replies(&mut conn.session, &mut out);
            write_within(&mut stream, &out, FAREWELL_LIMIT, &conn.client).await?;
            log::line(&format!(
                "refused {}: talked before the greeting",
                conn.client.description
            ));
            return Ok(());
        }
    }
    // Input already waiting now was sent before any greeting: refuse it even without a
    // pause (the session answers 554 5.5.1 to bytes before the greeting). Network clients
    // only: local programs on a unix socket (`cursus sendmail -bs` fed a whole dialogue,
    // an LMTP client) are trusted not to be spam engines.
    if conn.client.ip.is_some() && input_waiting(&stream) {
        // Read what is there, so that closing does not reset the connection before the
        // client has read the refusal.
        let n = match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => 0,
        };
        let mut out = Vec::new();
        let _ = conn.session.receive(if n > 0 { &buf[..n] } else { b"?" });
        drain_replies(&mut conn.session, &mut out);
        write_within(&mut stream, &out, FAREWELL_LIMIT, &conn.client).await?;
        let _ = stream.shutdown().await;
        log::line(&format!(
            "refused {}: talked before the greeting (input waiting when it was due)",
            conn.client.description
        ));
        return Ok(());
    }
    let greeting = conn.session.greeting().to_bytes();
    let limit = server.limit(&conn.session);
    write_within(&mut stream, &greeting, limit, &conn.client).await?;
    match drive(server, &mut stream, &mut conn, &mut buf).await? {
        Next::Close => Ok(()),
        Next::StartTls => {
            let Some(acceptor) = server.tls.clone() else {
                return Ok(());
            };
            let limit = server.limit(&conn.session);
            let mut tls = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    log::line(&format!(
                        "TLS handshake with {} failed: {e}",
                        conn.client.description
                    ));
                    return Ok(());
                }
                Err(_) => {
                    log::line(&format!(
                        "TLS handshake with {} timed out",
                        conn.client.description
                    ));
                    return Ok(());
                }
            };
            conn.session.tls_started();
            if let Some(v) = tls.get_ref().1.protocol_version() {
                log::line(&format!(
                    "{}: TLS {v:?} established",
                    conn.client.description
                ));
            }
            match drive(server, &mut tls, &mut conn, &mut buf).await? {
                Next::Close | Next::StartTls => {
                    let _ = tls.shutdown().await;
                    Ok(())
                }
            }
        }
    }
}

/// The first read buffer of a connection, and the size it may grow to.
const READ_BUFFER_START: usize = 1024;
const READ_BUFFER_MAX: usize = 64 * 1024;

/// Runs the conversation until it closes or switches to TLS.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    server: &Arc<Server>,
    stream: &mut S,
    conn: &mut Conn,
    buf: &mut Vec<u8>,
) -> std::io::Result<Next> {
    let mut shutdown = server.shutdown.clone();
    let mut out: Vec<u8> = Vec::new();
    loop {
        // The replies about to be written answer what the session waits on now (MAIL,
        // RCPT, DATA, the end of the message): the same stage bounds their write.
        let write_limit = server.limit(&conn.session);
        // Answer everything the session has for us.
        while let Some(output) = conn.session.poll() {
            match output {
                Output::Reply(r) => out.extend_from_slice(&r.to_bytes()),
                Output::Event(event) => {
                    let next = handle_event(server, conn, event).await;
                    if let Some(next) = next {
                        while let Some(Output::Reply(r)) = conn.session.poll() {
                            out.extend_from_slice(&r.to_bytes());
                        }
                        write_within(stream, &out, write_limit, &conn.client).await?;
                        return Ok(next);
                    }
                }
            }
        }
        if !out.is_empty() {
            write_within(stream, &out, write_limit, &conn.client).await?;
            out.clear();
        }
        if conn.session.is_closed() {
            return Ok(Next::Close);
        }
        let wait = conn.session.timeout();
        let limit = server.config.timeouts.get(wait);
        let read = tokio::select! {
            r = tokio::time::timeout(limit, stream.read(&mut buf[..])) => r,
            _ = shutdown.changed() => {
                conn.session.shutdown();
                continue;
            }
        };
        match read {
            Err(_) => {
                log::line(&format!(
                    "{}: timeout after {} s waiting for the client ({wait:?}, {}), connection closed",
                    conn.client.description,
                    limit.as_secs_f64(),
                    wait.section()
                ));
                write_within(
                    stream,
                    b"421 4.4.2 Timeout exceeded, closing connection\r\n",
                    FAREWELL_LIMIT.min(limit),
                    &conn.client,
                )
                .await?;
                return Ok(Next::Close);
            }
            Ok(Ok(0)) => return Ok(Next::Close),
            Ok(Ok(n)) => {
                if conn.session.receive(&buf[..n]).is_err() {
                    drain_replies(&mut conn.session, &mut out);
                    write_within(stream, &out, FAREWELL_LIMIT.min(limit), &conn.client).await?;
                    return Ok(Next::Close);
                }
                if n == buf.len() && buf.len() < READ_BUFFER_MAX {
                    buf.resize(buf.len() * 2, 0);
                }
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

fn drain_replies(session: &mut Session, out: &mut Vec<u8>) {
    while let Some(o) = session.poll() {
        if let Output::Reply(r) = o {
            out.extend_from_slice(&r.to_bytes());
        }
    }
}

/// Acts on one session event; `Some` ends this stretch of the conversation.
async fn handle_event(server: &Arc<Server>, conn: &mut Conn, event: Event) -> Option<Next> {
    let Conn {
        session,
        client,
        protocol,
        transaction,
        pending_mail,
    } = conn;
    let protocol = *protocol;
    let answer = |session: &mut Session, a: Answer| {
        if let Err(e) = session.answer(a) {
            log::line(&format!("internal: session refused our answer: {e:?}"));
        }
    };
    match event {
        Event::Mail { sender, params } => {
            if let Err(r) = server.backend.room_for(params.size.unwrap_or(0)) {
                answer(session, Answer::Refuse(r));
                return None;
            }
            *pending_mail = Some((sender, params));
            *transaction = Some(Transaction::default());
            answer(session, Answer::Accept);
        }
        Event::Rcpt { recipient, params } => {
            let sender = pending_mail
                .as_ref()
                .map(|(s, _)| s.clone())
                .unwrap_or(Sender::Null);
            let backend = server.backend.clone();
            let address = recipient.as_str().to_string();
            let who = client.clone();
            let verdict =
                tokio::task::spawn_blocking(move || backend.verify(&sender, &address, &who))
                    .await
                    .unwrap_or_else(|_| Verdict::Refuse(temp_reply("recipient check failed")));
            match verdict {
                Verdict::Accept => {
                    if let Some(t) = transaction.as_mut() {
                        t.recipients.push((recipient.as_str().to_string(), params));
                    }
                    answer(session, Answer::Accept);
                }
                Verdict::Refuse(r) => answer(session, Answer::Refuse(r)),
            }
        }
        Event::DataStart => {
            let size = pending_mail.as_ref().and_then(|(_, p)| p.size).unwrap_or(0);
            match server.backend.room_for(size) {
                Ok(()) => {
                    if let (Some(t), Some((sender, params))) =
                        (transaction.as_mut(), pending_mail.as_ref())
                    {
                        t.incoming = Some(Incoming {
                            protocol,
                            client: client.clone(),
                            helo: session.helo().map(str::to_string),
                            tls: session.tls_active(),
                            sender: sender.clone(),
                            params: params.clone(),
                            recipients: std::mem::take(&mut t.recipients),
                            received: jiff::Timestamp::now(),
                        });
                    }
                    answer(session, Answer::Accept);
                }
                Err(r) => {
                    // The session ends the transaction with the refusal.
                    *transaction = None;
                    *pending_mail = None;
                    answer(session, Answer::Refuse(r));
                }
            }
        }
        Event::Data(bytes) => {
            if let Some(t) = transaction.as_mut()
                && t.failed.is_none()
            {
                t.buffer.extend_from_slice(&bytes);
                if t.buffer.len() >= SPOOL_BUFFER {
                    t.flush(&server.backend).await;
                }
            }
        }
        Event::DataAbandoned(_) | Event::Reset => {
            *transaction = None;
            *pending_mail = None;
        }
        Event::DataEnd { size } => {
            *pending_mail = None;
            let Some((mut t, incoming)) = transaction
                .take()
                .and_then(|mut t| t.incoming.take().map(|i| (t, i)))
            else {
                answer(session, Answer::Refuse(temp_reply("no transaction")));
                return None;
            };
            let count = incoming.recipients.len();
            let backend = server.backend.clone();
            let content = std::mem::take(&mut t.buffer);
            // The reply: a failure during the content, or the queue id once the message
            // is durable (written and synced on the blocking pool).
            let result = match (t.failed.take(), t.spool.take()) {
                (Some(r), _) => Ok(Err(r)),
                (None, None) => {
                    tokio::task::spawn_blocking(move || backend.accept(incoming, content)).await
                }
                (None, Some(mut spool)) => {
                    tokio::task::spawn_blocking(move || {
                        spool.write(&content)?;
                        spool.commit(incoming, size)
                    })
                    .await
                }
            }
            .unwrap_or_else(|_| Err(temp_reply("the queue writer failed")));
            let reply = match result {
                Ok(id) => Reply::new(
                    250,
                    EnhancedStatus::new(2, 0, 0),
                    format!("Ok: queued as {id}"),
                ),
                Err(r) => r,
            };
            let a = match (protocol, reply.is_positive()) {
                (Protocol::Lmtp, _) => Answer::PerRecipient(vec![reply; count]),
                (Protocol::Smtp, true) => Answer::AcceptWith(reply),
                (Protocol::Smtp, false) => Answer::Refuse(reply),
            };
            answer(session, a);
        }
        Event::StartTls => return Some(Next::StartTls),
        Event::Quit | Event::Disconnect(_) => return Some(Next::Close),
    }
    None
}

/// Asks the backend, on the blocking pool (statvfs may wait on a slow file system), whether
/// the queue has room for `size` octets.
fn temp_reply(text: &str) -> Reply {
    Reply::new(451, EnhancedStatus::new(4, 3, 0), text.to_string())
}
