//! The client side of the LDA protocol, for cursusd and `cursus-lda request`: connect (or
//! wrap an inherited socket), send one request with the message descriptor, read one answer.
//!
//! Trusts the LDA at the other end to speak the protocol; checks every answer frame anyway
//! (`protocol.rs` refuses malformed ones). Fails with [`ClientError`]: the connection is
//! then unusable and the caller treats the delivery as temporary.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use cursus_privsep::passing::send_with_fds;

use crate::protocol::{Answer, Decoded, FrameError, Request, decode_answer, encode_request};

/// Why a request got no answer.
#[derive(Debug)]
pub enum ClientError {
    Io(io::Error),
    Frame(FrameError),
    /// The LDA closed the connection before a whole answer arrived.
    Closed,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "cursus-lda connection: {e}"),
            ClientError::Frame(e) => write!(f, "cursus-lda answer: {e}"),
            ClientError::Closed => write!(f, "cursus-lda closed the connection"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// One connection to cursus-lda; requests on it are answered in order.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to the LDA's socket.
    pub fn connect(path: &Path) -> io::Result<Client> {
        Ok(Client::from_stream(UnixStream::connect(path)?))
    }

    /// Uses an already connected stream (one end of a socket pair).
    pub fn from_stream(stream: UnixStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Limits how long one answer may take (deliveries to commands can be slow).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)
    }

    /// Sends `request` (with the message descriptor for `deliver` and `filter` at DATA) and
    /// waits for its answer.
    pub fn call(
        &mut self,
        request: &Request,
        message: Option<BorrowedFd<'_>>,
    ) -> Result<Answer, ClientError> {
        self.call_with(request, message.as_slice())
    }

    /// Sends `request` with its message descriptors (one per envelope of a `deliver-many`,
    /// in order) and waits for its answer.
    pub fn call_with(
        &mut self,
        request: &Request,
        messages: &[BorrowedFd<'_>],
    ) -> Result<Answer, ClientError> {
        let frame = encode_request(request).map_err(ClientError::Frame)?;
        let sent = send_with_fds(self.stream.as_fd(), &frame, messages)
            .and_then(|sent| (&self.stream).write_all(&frame[sent..]));
        if let Err(e) = sent {
            // The service may have refused the connection and closed it before our request
            // went out: its refusal is still waiting to be read.
            return self.read_answer().map_err(|_| ClientError::Io(e));
        }
        self.read_answer()
    }

    /// Sends bytes as they are, with an optional descriptor on the first byte (the tests
    /// use this to send malformed frames).
    pub fn send_raw(&mut self, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let sent = send_with_fds(self.stream.as_fd(), bytes, fd.as_slice())?;
        (&self.stream).write_all(&bytes[sent..])
    }

    /// Reads one answer frame.
    pub fn read_answer(&mut self) -> Result<Answer, ClientError> {
        loop {
            if !self.buf.is_empty() {
                match decode_answer(&self.buf).map_err(ClientError::Frame)? {
                    Decoded::Frame { value, consumed } => {
                        self.buf.drain(..consumed);
                        return Ok(value);
                    }
                    Decoded::NeedMore { .. } => {}
                }
            }
            let mut chunk = [0u8; 8192];
            let n = match (&self.stream).read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Shuts the sending side, so the LDA sees end of stream (tests of truncated frames).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }
}

/// `cursus-lda request`: sends one request and prints the answer. Exit status: 0 delivered
/// or answered, 75 temporary, 69 permanent, 1 refused by the service, 2 no answer.
pub fn request_command(
    args: &crate::cli::RequestArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    use crate::cli::RequestKind;
    use crate::protocol::{DeliverOptions, Envelope, FilterStage};

    let envelope =
        |sender: &str, recipient: &str, original: Option<&str>, ext: Option<&str>| Envelope {
            sender: (!sender.is_empty() && sender != "<>").then(|| sender.to_string()),
            original_recipient: original.unwrap_or(recipient).to_string(),
            final_recipient: recipient.to_string(),
            extension: ext.map(str::to_string),
        };
    let mut message_file = None;
    let request = match &args.request {
        RequestKind::Ping => Request::Ping,
        RequestKind::Deliver {
            user,
            destination,
            sender,
            recipient,
            original_recipient,
            extension,
            no_fsync,
            create_folders,
            return_path,
            message,
        } => {
            let destination = match destination.parse() {
                Ok(d) => d,
                Err(e) => {
                    let _ = writeln!(err, "cursus-lda: --destination {destination:?}: {e}");
                    return 2;
                }
            };
            message_file = Some(message.clone());
            Request::Deliver {
                user: user.clone(),
                destination,
                envelope: envelope(
                    sender,
                    recipient,
                    original_recipient.as_deref(),
                    extension.as_deref(),
                ),
                options: DeliverOptions {
                    fsync: !no_fsync,
                    create_folders: *create_folders,
                    return_path: *return_path,
                },
            }
        }
        RequestKind::Filter {
            user,
            sender,
            recipient,
            message,
        } => {
            message_file = message.clone();
            Request::Filter {
                user: user.clone(),
                envelope: envelope(sender, recipient, None, None),
                stage: if message.is_some() {
                    FilterStage::Data
                } else {
                    FilterStage::Rcpt
                },
            }
        }
        RequestKind::ReadForward { user } => Request::ReadForward { user: user.clone() },
    };
    let file = match &message_file {
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                let _ = writeln!(err, "cursus-lda: {}: {e}", path.display());
                return 2;
            }
        },
        None => None,
    };
    let answer = Client::connect(&args.socket)
        .map_err(ClientError::Io)
        .and_then(|mut c| c.call(&request, file.as_ref().map(|f| f.as_fd())));
    match answer {
        Ok(answer) => {
            let _ = writeln!(out, "{}", describe(&answer));
            exit_status(&answer)
        }
        Err(e) => {
            let _ = writeln!(err, "cursus-lda: {}: {e}", args.socket.display());
            2
        }
    }
}

/// The exit status `request` gives for an answer.
pub fn exit_status(answer: &Answer) -> u8 {
    use cursus_mail::OutcomeKind;
    match answer {
        Answer::Outcome { kind, .. } | Answer::OverQuota { kind, .. } => match kind {
            OutcomeKind::Delivered => 0,
            OutcomeKind::Temporary => 75,
            OutcomeKind::Permanent => 69,
        },
        Answer::Error { .. } => 1,
        // The worst of the messages' outcomes.
        Answer::Outcomes(answers) => answers.iter().map(exit_status).max().unwrap_or(0),
        Answer::Filter { .. } | Answer::Forward { .. } | Answer::Pong => 0,
    }
}

fn outcome_words(
    kind: cursus_mail::OutcomeKind,
    status: &impl std::fmt::Display,
    text: &str,
) -> String {
    use cursus_mail::OutcomeKind;
    let word = match kind {
        OutcomeKind::Delivered => "delivered",
        OutcomeKind::Temporary => "temporary",
        OutcomeKind::Permanent => "permanent",
    };
    format!("{word} {status} {text}")
}

/// An answer as text, one item per line.
pub fn describe(answer: &Answer) -> String {
    match answer {
        Answer::Outcome { kind, status, text } => outcome_words(*kind, status, text),
        Answer::OverQuota {
            kind,
            status,
            text,
            mailbox_read,
        } => format!(
            "{}\nmailbox last read {mailbox_read}",
            outcome_words(*kind, status, text)
        ),
        Answer::Error { code, text } => format!("error {code:?}: {text}"),
        Answer::Pong => "pong".to_string(),
        Answer::Outcomes(answers) => answers.iter().map(describe).collect::<Vec<_>>().join("\n"),
        Answer::Filter {
            needs_message,
            decisions,
        } => {
            let mut s = format!("filter needs_message={needs_message}");
            for d in decisions {
                s.push_str(&format!("\n{d:?}"));
            }
            s
        }
        Answer::Forward { entries } => {
            let mut s = format!("forward {} entries", entries.len());
            for e in entries {
                s.push_str(&format!("\n{e:?}"));
            }
            s
        }
    }
}

/// `cursus-lda bench`: `clients` connections deliver `count` messages between them, each
/// request sent by this library exactly as cursusd will (no exec per message). Prints one
/// line: clients, deliveries, seconds, deliveries/s, failures.
pub fn bench_command(args: &crate::cli::BenchArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    use crate::protocol::{DeliverOptions, Envelope};
    let destination: crate::Destination = match args.destination.parse() {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(err, "cursus-lda: --destination: {e}");
            return 2;
        }
    };
    let envelope = Envelope {
        sender: Some("bench@example.com".into()),
        original_recipient: format!("{}@localhost", args.user),
        final_recipient: format!("{}@localhost", args.user),
        extension: None,
    };
    let options = DeliverOptions {
        fsync: true,
        create_folders: false,
        return_path: true,
    };
    let batch = usize::from(args.batch.max(1));
    let request = |n: usize| {
        if n == 1 {
            Request::Deliver {
                user: args.user.clone(),
                destination: destination.clone(),
                envelope: envelope.clone(),
                options,
            }
        } else {
            Request::DeliverMany {
                user: args.user.clone(),
                destination: destination.clone(),
                envelopes: vec![envelope.clone(); n],
                options,
            }
        }
    };
    let clients = args.clients.max(1);
    let share_of = |i: usize| args.count / clients + usize::from(i < args.count % clients);
    let started = std::time::Instant::now();
    let failures: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let share = share_of(i);
                let request = &request;
                s.spawn(move || -> Result<usize, String> {
                    let file = std::fs::File::open(&args.message).map_err(|e| e.to_string())?;
                    let mut client = Client::connect(&args.socket).map_err(|e| e.to_string())?;
                    let mut failed = 0;
                    let mut left = share;
                    while left > 0 {
                        let n = left.min(batch);
                        left -= n;
                        let fds = vec![file.as_fd(); n];
                        let answers = match client.call_with(&request(n), &fds) {
                            Ok(Answer::Outcomes(answers)) => answers,
                            Ok(answer) => vec![answer],
                            Err(e) => return Err(e.to_string()),
                        };
                        let delivered = answers
                            .iter()
                            .filter(|a| {
                                matches!(
                                    a,
                                    Answer::Outcome {
                                        kind: cursus_mail::OutcomeKind::Delivered,
                                        ..
                                    }
                                )
                            })
                            .count();
                        failed += n - delivered.min(n);
                    }
                    Ok(failed)
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| match h.join() {
                Ok(Ok(n)) => n,
                // A client that stopped counts its whole share as failed (an upper bound:
                // some of it may have been delivered before the error).
                Ok(Err(e)) => {
                    let _ = writeln!(io::stderr(), "cursus-lda bench: {e}");
                    share_of(i)
                }
                Err(_) => share_of(i),
            })
            .sum()
    });
    let seconds = started.elapsed().as_secs_f64();
    let delivered = args.count.saturating_sub(failures);
    let _ = writeln!(
        out,
        "{}",
        bench_line(clients, args.count, delivered, seconds)
    );
    u8::from(failures > 0)
}

/// The benchmark's result line. The rate counts delivered messages only: a refused or
/// deferred request is answered fast and must not make the service look faster.
fn bench_line(clients: usize, requests: usize, delivered: usize, seconds: f64) -> String {
    let failures = requests - delivered.min(requests);
    format!(
        "clients={clients} requests={requests} deliveries={delivered} seconds={seconds:.3} \
         rate={:.0} failures={failures}",
        delivered as f64 / seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_rate_counts_only_deliveries() {
        assert_eq!(
            bench_line(8, 2000, 1000, 2.0),
            "clients=8 requests=2000 deliveries=1000 seconds=2.000 rate=500 failures=1000"
        );
        assert_eq!(
            bench_line(1, 10, 10, 1.0),
            "clients=1 requests=10 deliveries=10 seconds=1.000 rate=10 failures=0"
        );
    }
}
