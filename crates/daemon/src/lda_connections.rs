//! The daemon's connections to cursus-lda, pooled: socket pairs to a cursus-lda it started
//! (a fixed set), or connections to a cursus-lda service's socket (`[lda] socket`, opened
//! when needed, a few kept idle). One request and its answer at a time per connection.
//!
//! cursusd keeps two pools (see `daemon.rs`): one for deliveries (`local.rs`) and one for
//! routing's `read-forward` requests (`router_adapter.rs`). Why two, and why no wait can
//! deadlock:
//! - a delivery holds its connection as long as the LDA takes (a command may run for the
//!   LDA's time limit), while routing runs at RCPT time with an SMTP client waiting; on
//!   separate connections neither waits for the other;
//! - a thread holds at most one connection at a time and gives it back before it asks for
//!   another (the engine routes a recipient before it delivers to it), and every request
//!   ends (the LDA's time limit), so a thread waiting on the condition variable for a pair
//!   always waits for a holder that is not waiting itself.
//!
//! Idle connections are pinged every [`KEEP_ALIVE`]: cursus-lda closes a connection idle
//! for 10 minutes, and a socket pair, once closed, cannot be opened again (without the
//! pings a quiet night would leave a daemon started as root with no way to deliver).
//!
//! Trusts the LDA's answers (the client library checks every frame). Blocking: the daemon
//! calls it on the blocking pool. Fails as a temporary [`Outcome`], never a panic: a
//! connection that broke is dropped (a lost socket pair is counted, and when every pair is
//! lost every request is temporary); a service that cannot be reached is temporary.
//!
//! Attacks stopped: a connection the service refused (cursusd running as a uid the LDA
//! does not serve) is never taken for one that answers requests: a new connection must
//! answer a ping first, so that refusal cannot be read as the answer to a request (a
//! `read-forward` refused as "unsafe, ignored" would route around the user's .forward).

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use cursus_lda::client::Client;
use cursus_lda::protocol::{Answer, Request};
use cursus_mail::{Outcome, codes};

/// How often idle connections are pinged: well within cursus-lda's idle limit (10 minutes,
/// `cursus_lda::service::IDLE_TIMEOUT`).
pub const KEEP_ALIVE: Duration = Duration::from_secs(120);

/// How long one answer from a service's socket may take (deliveries to commands are slow).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(900);

/// A pool of connections to one cursus-lda.
pub struct Connections {
    /// Where to connect more connections; `None` for a fixed set of socket pairs.
    socket: Option<PathBuf>,
    /// The number of socket pairs, or the most idle connections kept to the socket.
    size: usize,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    idle: Vec<Client>,
    /// Socket pairs lost to an error; when all are, requests are temporary failures.
    broken: usize,
}

impl Connections {
    /// Connections to the service listening at `socket`, at most `keep` of them kept idle.
    pub fn socket(socket: PathBuf, keep: usize) -> Connections {
        Connections::new(Some(socket), keep.max(1), Vec::new())
    }

    /// A fixed set of socket pairs to a cursus-lda this daemon started.
    pub fn pairs(clients: Vec<Client>) -> Connections {
        Connections::new(None, clients.len(), clients)
    }

    fn new(socket: Option<PathBuf>, size: usize, idle: Vec<Client>) -> Connections {
        Connections {
            socket,
            size,
            state: Mutex::new(State { idle, broken: 0 }),
            freed: Condvar::new(),
        }
    }

    /// Whether these are connections to a service's socket (not socket pairs).
    pub fn is_socket(&self) -> bool {
        self.socket.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` (with the message descriptor when it takes one) over a pooled
    /// connection and returns the answer; waits for a socket pair to free up when all are
    /// busy. `Err` is the temporary outcome of a request that got no answer.
    pub fn call(
        &self,
        request: &Request,
        message: Option<BorrowedFd<'_>>,
    ) -> Result<Answer, Outcome> {
        self.call_with(request, message.as_slice())
    }

    /// [`Connections::call`] with any number of message descriptors (a `deliver-many`).
    pub fn call_with(
        &self,
        request: &Request,
        messages: &[BorrowedFd<'_>],
    ) -> Result<Answer, Outcome> {
        let mut client = self.take()?;
        match client.call_with(request, messages) {
            Ok(answer) => {
                self.give_back(client, &answer);
                Ok(answer)
            }
            Err(e) => {
                if self.socket.is_none() {
                    // This pair is gone for good; waiters re-check whether any is left.
                    self.lock().broken += 1;
                    self.freed.notify_all();
                }
                Err(Outcome::temporary(
                    codes::SYSTEM_STATUS,
                    format!("cursus-lda: {e}"),
                ))
            }
        }
    }

    /// Pings every idle connection (busy ones are not touched), so that none sits idle as
    /// long as cursus-lda allows (it closes a connection idle for 10 minutes, and a socket
    /// pair cannot be opened again). A connection that does not answer is dropped, a pair
    /// counted lost. The daemon calls this every [`KEEP_ALIVE`].
    pub fn keep_alive(&self) {
        let idle = std::mem::take(&mut self.lock().idle);
        for mut client in idle {
            match client.call(&Request::Ping, None) {
                Ok(Answer::Pong) => self.give_back(client, &Answer::Pong),
                _ if self.socket.is_none() => {
                    self.lock().broken += 1;
                    self.freed.notify_all();
                }
                _ => {}
            }
        }
    }

    /// An idle connection, or a new one; with socket pairs only, waits for one to free up.
    fn take(&self) -> Result<Client, Outcome> {
        let mut state = self.lock();
        loop {
            if let Some(c) = state.idle.pop() {
                return Ok(c);
            }
            match &self.socket {
                Some(socket) => {
                    drop(state);
                    return connect(socket);
                }
                None if state.broken >= self.size => {
                    return Err(Outcome::temporary(
                        codes::SYSTEM_STATUS,
                        "every connection to cursus-lda is broken",
                    ));
                }
                None => state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Puts `client` back after `answer`. Socket pairs are always kept (they cannot be
    /// replaced; one the LDA closed after an error answer is found broken on its next use);
    /// a socket connection is dropped after an error answer (the LDA closes its side).
    fn give_back(&self, client: Client, answer: &Answer) {
        let mut state = self.lock();
        if state.idle.len() < self.size
            && (self.socket.is_none() || !matches!(answer, Answer::Error { .. }))
        {
            state.idle.push(client);
        }
        drop(state);
        self.freed.notify_one();
    }
}

/// A new connection to the service at `socket`, once it has answered a ping (a refused
/// peer is answered with an error and the connection closed).
fn connect(socket: &Path) -> Result<Client, Outcome> {
    let unreachable = |why: String| {
        Outcome::temporary(
            codes::SYSTEM_STATUS,
            format!("cursus-lda is not reachable at {}: {why}", socket.display()),
        )
    };
    let mut client = Client::connect(socket).map_err(|e| unreachable(e.to_string()))?;
    let _ = client.set_timeout(Some(SOCKET_TIMEOUT));
    match client.call(&Request::Ping, None) {
        Ok(Answer::Pong) => Ok(client),
        Ok(Answer::Error { text, .. }) => Err(Outcome::temporary(
            codes::SYSTEM_STATUS,
            format!(
                "cursus-lda at {} refused the connection: {text}",
                socket.display()
            ),
        )),
        Ok(other) => Err(unreachable(format!("answered a ping with {other:?}"))),
        Err(e) => Err(unreachable(e.to_string())),
    }
}

/// A stand-in for cursus-lda, for the tests of the pool and of its users.
#[cfg(test)]
pub(crate) mod fake {
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::thread;

    use cursus_lda::protocol::{Answer, Decoded, Request, decode_request, encode_answer};
    use cursus_privsep::passing::recv_with_fds;

    /// Serves one connection in a thread: each request gets `answer`'s answer; `None`
    /// closes the connection (as a dying LDA would).
    pub(crate) fn serve(
        stream: UnixStream,
        mut answer: impl FnMut(Request) -> Option<Answer> + Send + 'static,
    ) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let mut buf = Vec::new();
            loop {
                if !buf.is_empty() {
                    match decode_request(&buf) {
                        Ok(Decoded::Frame { value, consumed }) => {
                            buf.drain(..consumed);
                            let Some(a) = answer(value) else { return };
                            let bytes = encode_answer(&a).expect("encode an answer");
                            if (&stream).write_all(&bytes).is_err() {
                                return;
                            }
                            continue;
                        }
                        Ok(Decoded::NeedMore { .. }) => {}
                        Err(_) => return,
                    }
                }
                let mut chunk = [0u8; 4096];
                match recv_with_fds(stream.as_fd(), &mut chunk) {
                    Ok((0, _)) | Err(_) => return,
                    Ok((n, _descriptors)) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
    }

    /// A socket pair: our client end, and the fake LDA serving the other.
    pub(crate) fn pair(
        answer: impl FnMut(Request) -> Option<Answer> + Send + 'static,
    ) -> cursus_lda::client::Client {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        serve(theirs, answer);
        cursus_lda::client::Client::from_stream(ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, mpsc};
    use std::thread;

    /// One socket pair, two callers: the second waits for the first to give the pair back
    /// (no failure, no second connection); once the pair breaks, a caller gets a temporary
    /// outcome at once instead of waiting for ever.
    #[test]
    fn a_busy_pair_is_waited_for_and_a_lost_one_ends_the_wait() {
        let (release, held) = mpsc::channel::<()>();
        let (arrived, first_in) = mpsc::channel::<()>();
        let mut calls = 0;
        let client = fake::pair(move |_| {
            calls += 1;
            match calls {
                1 => {
                    let _ = arrived.send(());
                    held.recv().ok().map(|_| Answer::Pong)
                }
                2 => Some(Answer::Pong),
                _ => None,
            }
        });
        let pool = Arc::new(Connections::pairs(vec![client]));
        let first = {
            let pool = pool.clone();
            thread::spawn(move || pool.call(&Request::Ping, None))
        };
        first_in
            .recv_timeout(Duration::from_secs(10))
            .expect("the first request reached the LDA");
        let (done, second_done) = mpsc::channel();
        {
            let pool = pool.clone();
            thread::spawn(move || {
                let _ = done.send(pool.call(&Request::Ping, None));
            });
        }
        assert!(
            second_done
                .recv_timeout(Duration::from_millis(300))
                .is_err(),
            "the second caller waits while the only pair is busy"
        );
        release.send(()).expect("release the first");
        assert_eq!(first.join().expect("first"), Ok(Answer::Pong));
        assert_eq!(
            second_done
                .recv_timeout(Duration::from_secs(10))
                .expect("the second caller got the pair"),
            Ok(Answer::Pong)
        );
        // The fake closes on the third request: that pair is lost, and with it every pair.
        let lost = pool.call(&Request::Ping, None).expect_err("the pair broke");
        assert_eq!(lost.kind, cursus_mail::OutcomeKind::Temporary);
        let none = pool.call(&Request::Ping, None).expect_err("no pair left");
        assert!(none.text.contains("every connection"), "{}", none.text);
    }

    /// Keep-alive pings reach every idle pair (so cursus-lda never closes one for being
    /// idle); a pair that no longer answers is counted lost, and the others stay usable.
    #[test]
    fn keep_alive_pings_the_idle_pairs() {
        let pinged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = |pinged: Arc<std::sync::atomic::AtomicUsize>| {
            move |request| {
                assert_eq!(request, Request::Ping);
                pinged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some(Answer::Pong)
            }
        };
        let pool = Connections::pairs(vec![
            fake::pair(counting(pinged.clone())),
            fake::pair(counting(pinged.clone())),
            fake::pair(|_| None),
        ]);
        pool.keep_alive();
        assert_eq!(pinged.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(pool.lock().broken, 1);
        assert_eq!(pool.lock().idle.len(), 2);
        assert_eq!(pool.call(&Request::Ping, None), Ok(Answer::Pong));
    }
}
