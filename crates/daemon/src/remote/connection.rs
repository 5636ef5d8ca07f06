//! One outbound connection: TCP or a unix socket, cursus-proto's client state machine on
//! top, STARTTLS when the state machine asks for it, every read and write under the RFC 5321
//! §4.5.3.2 timeout of the stage it is in.
//!
//! Trusts nothing the server sends (the state machine parses it). Fails with outcomes:
//! a refused or timed-out connection, a broken TLS handshake, a server that hangs or hangs
//! up, are temporary failures of the recipients still waiting; the connection is then
//! dropped, never reused.

use std::time::{Duration, Instant};

use cursus_mail::{EnhancedStatus, Outcome};
use cursus_proto::{Action, Client, ClientConfig, OutgoingMessage, Timeout};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::mx::Address;
use super::settings::Timeouts;
use super::tls::OutboundTls;

/// A byte stream: TCP, unix, or TLS over either.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open session, ready for messages.
pub struct Connection {
    io: Box<dyn Io>,
    client: Client,
    buf: Vec<u8>,
    timeouts: Timeouts,
    /// The host's name and the address connected to: `mx.example[192.0.2.1]:25`.
    pub relay: String,
    /// `TLSv1_3 cipher, verified` or `none`.
    pub tls: String,
    pub idle_since: Instant,
    /// The destination limit's slot, held as long as the connection lives.
    permit: Option<OwnedSemaphorePermit>,
    /// Whether the server said anything during the last `send`.
    answered: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.relay)
    }
}

fn wait_for(t: Timeout, timeouts: &Timeouts) -> Duration {
    match t {
        Timeout::Initial => timeouts.greeting,
        Timeout::Mail => timeouts.mail,
        Timeout::Rcpt => timeouts.rcpt,
        Timeout::DataInitiation => timeouts.data_init,
        Timeout::DataBlock => timeouts.data_block,
        Timeout::DataTermination => timeouts.data_done,
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub struct OpenFailure {
    pub outcome: Outcome,
    /// The server refused EHLO, or closed or went quiet in reply to it.
    pub ehlo_failed: bool,
}

impl OpenFailure {
    fn plain(outcome: Outcome) -> OpenFailure {
        OpenFailure {
            outcome,
            ehlo_failed: false,
        }
    }
}

/// What the driving loop stopped at.
enum Stop {
    Ready,
    MessageDone,
    Failed(Outcome),
    Closed,
}

impl Connection {
    /// Connects, reads the greeting, says EHLO, STARTTLS and AUTH as configured.
    pub async fn open(
        host: &str,
        address: &Address,
        config: ClientConfig,
        tls: &OutboundTls,
        timeouts: &Timeouts,
    ) -> Result<Connection, OpenFailure> {
        let relay = match address {
            Address::Tcp(a) => format!("{host}[{}]:{}", a.ip(), a.port()),
            Address::Unix(p) => format!("unix:{}", p.display()),
        };
        let fail = |what: String| {
            OpenFailure::plain(Outcome::temporary(EnhancedStatus::new(4, 4, 1), what))
        };
        let io: Box<dyn Io> = match address {
            Address::Tcp(a) => {
                match tokio::time::timeout(timeouts.connect, tokio::net::TcpStream::connect(a))
                    .await
                {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        Box::new(s)
                    }
                    Ok(Err(e)) => return Err(fail(format!("connect to {relay}: {e}"))),
                    Err(_) => {
                        return Err(fail(format!(
                            "connect to {relay}: timed out after {}s",
                            timeouts.connect.as_secs()
                        )));
                    }
                }
            }
            Address::Unix(p) => {
                match tokio::time::timeout(timeouts.connect, tokio::net::UnixStream::connect(p))
                    .await
                {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => return Err(fail(format!("connect to {relay}: {e}"))),
                    Err(_) => return Err(fail(format!("connect to {relay}: timed out"))),
                }
            }
        };
        let mut c = Connection {
            io,
            client: Client::new(config),
            buf: vec![0; 16 * 1024],
            timeouts: timeouts.clone(),
            relay,
            tls: "none".to_string(),
            idle_since: Instant::now(),
            permit: None,
            answered: false,
        };
        loop {
            match c.drive(Some(host), Some(tls)).await {
                Stop::Ready => return Ok(c),
                Stop::Failed(o) => {
                    // Let the QUIT go out, briefly.
                    let _ = tokio::time::timeout(Duration::from_secs(2), c.drive(None, None)).await;
                    return Err(OpenFailure {
                        outcome: c.prefixed(o),
                        ehlo_failed: c.client.ehlo_failed(),
                    });
                }
                Stop::Closed => {
                    return Err(OpenFailure {
                        outcome: c.prefixed(Outcome::temporary(
                            EnhancedStatus::new(4, 4, 2),
                            "the connection closed during the greeting",
                        )),
                        ehlo_failed: c.client.ehlo_failed(),
                    });
                }
                Stop::MessageDone => {}
            }
        }
    }

    /// Counts against the destination's connection limit from now on.
    pub fn hold(&mut self, permit: OwnedSemaphorePermit) {
        self.permit = Some(permit);
    }

    /// Whether the server answered anything during the last message (when not, and the
    /// connection is gone, the server never saw the message).
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Whether the session was greeted with HELO (EHLO refused, or a HELO-only host).
    pub fn used_helo(&self) -> bool {
        self.client.used_helo()
    }

    /// Whether the server offered the DSN extension (RFC 3461) in this session.
    pub fn offers_dsn(&self) -> bool {
        self.client.capabilities().dsn
    }

    /// Whether it can take another message.
    pub fn is_ready(&self) -> bool {
        self.client.is_ready()
    }

    pub fn messages(&self) -> usize {
        self.client.messages()
    }

    fn prefixed(&self, mut o: Outcome) -> Outcome {
        o.text = format!("{}: {}", self.relay, o.text);
        o
    }

    /// Sends one message; one outcome per recipient.
    pub async fn send(&mut self, message: OutgoingMessage) -> Vec<Outcome> {
        let n = message.recipients.len();
        let mut results: Vec<Option<Outcome>> = vec![None; n];
        let before = self.client.replies();
        if let Err(e) = self.client.send(message) {
            let o = Outcome::temporary(EnhancedStatus::new(4, 3, 0), e.to_string());
            return vec![o; n];
        }
        let _ = self.drive_collect(&mut results).await;
        self.answered = self.client.replies() > before;
        self.idle_since = Instant::now();
        results
            .into_iter()
            .map(|r| {
                let o = r.unwrap_or_else(|| {
                    Outcome::temporary(EnhancedStatus::new(4, 4, 2), "no result from the server")
                });
                self.prefixed(o)
            })
            .collect()
    }

    /// RSET before reusing an idle connection: is the server still there?
    pub async fn probe(&mut self) -> bool {
        if !self.client.probe() {
            return false;
        }
        matches!(self.drive(None, None).await, Stop::Ready)
    }

    /// QUIT and close (bounded wait).
    pub async fn quit(mut self) {
        self.client.quit();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.drive(None, None)).await;
        let _ = self.io.shutdown().await;
    }

    async fn drive(&mut self, host: Option<&str>, tls: Option<&OutboundTls>) -> Stop {
        self.drive_inner(host, tls, None).await
    }

    async fn drive_collect(&mut self, results: &mut [Option<Outcome>]) -> Stop {
        self.drive_inner(None, None, Some(results)).await
    }

    /// Runs the state machine until it is ready, done with a message, failed or closed.
    async fn drive_inner(
        &mut self,
        host: Option<&str>,
        tls: Option<&OutboundTls>,
        mut results: Option<&mut [Option<Outcome>]>,
    ) -> Stop {
        let mut done = false;
        loop {
            while let Some(action) = self.client.poll() {
                match action {
                    Action::Send(bytes) => {
                        let write = async {
                            self.io.write_all(&bytes).await?;
                            self.io.flush().await
                        };
                        match tokio::time::timeout(self.timeouts.data_block, write).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => self.client.abort(&format!("write failed: {e}")),
                            Err(_) => self.client.abort("write timed out"),
                        }
                    }
                    Action::StartTls => {
                        let Some(tls) = tls else {
                            self.client.abort("STARTTLS at an unexpected time");
                            continue;
                        };
                        match self.handshake(host.unwrap_or("localhost"), tls).await {
                            Ok(()) => self.client.tls_established(),
                            Err(e) => self.client.abort(&format!("TLS handshake failed: {e}")),
                        }
                    }
                    Action::Ready => {
                        if done || results.is_none() {
                            return Stop::Ready;
                        }
                    }
                    Action::Recipient { index, outcome } => {
                        if let Some(r) = results.as_deref_mut()
                            && let Some(slot) = r.get_mut(index)
                        {
                            *slot = Some(outcome);
                        }
                    }
                    Action::MessageDone => {
                        done = true;
                    }
                    Action::Failed(o) => return Stop::Failed(o),
                    Action::Closed => {
                        return if done {
                            Stop::MessageDone
                        } else {
                            Stop::Closed
                        };
                    }
                }
            }
            if done && !self.client.is_ready() && self.client.is_closed() {
                return Stop::MessageDone;
            }
            if done && self.client.is_ready() {
                return Stop::MessageDone;
            }
            let stage = self.client.timeout();
            let wait = wait_for(stage, &self.timeouts);
            match tokio::time::timeout(wait, self.io.read(&mut self.buf)).await {
                Ok(Ok(0)) => self.client.abort("the server closed the connection"),
                Ok(Ok(n)) => {
                    let (chunk, _) = self.buf.split_at(n);
                    let chunk = chunk.to_vec();
                    self.client.receive(&chunk);
                }
                Ok(Err(e)) => self.client.abort(&format!("read failed: {e}")),
                Err(_) => self.client.abort(&format!(
                    "timed out: no answer for {}s ({})",
                    wait.as_secs(),
                    stage.section()
                )),
            }
        }
    }

    async fn handshake(&mut self, host: &str, tls: &OutboundTls) -> Result<(), String> {
        let (config, verdict) = tls.client_config()?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("server name {host}: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        // The plaintext stream moves into the TLS stream.
        let plain = std::mem::replace(&mut self.io, Box::new(Closed));
        let stream = tokio::time::timeout(self.timeouts.greeting, connector.connect(name, plain))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (_, session) = stream.get_ref();
        let version = session
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let suite = session
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let verdict = verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "not verified (no certificate)".to_string());
        self.tls = format!("{version} {suite} {verdict}");
        self.io = Box::new(stream);
        Ok(())
    }
}

/// A stand-in stream while the real one is inside a handshake.
struct Closed;

impl AsyncRead for Closed {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Closed {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A slot of a destination's connection limit.
pub type Permit = OwnedSemaphorePermit;
