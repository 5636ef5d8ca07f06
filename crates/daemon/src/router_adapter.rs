//! cursus-route's routers behind the daemon's [`Routes`] trait, and the `.forward` source
//! of system mode, which asks cursus-lda to read a user's .forward as that user: cursusd,
//! running as `cursus`, never opens a user's .forward itself (it could not enter a 0700
//! home, and what it opened as `cursus` would not be what the user can write). In
//! single-user mode the daemon is the user and reads its own (cursus_route::HomeForwards).
//!
//! Trusts the routers' results and the LDA's answers. Never fails: routing problems are
//! outcomes (temporary when a lookup failed, permanent when the routers say so).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cursus_lda::protocol::{Answer, ErrorCode, ForwardEntry, Request};
use cursus_mail::{ExitCode, Outcome, OutcomeKind, Sender};
use cursus_route::forward::ForwardSource;
use cursus_route::routed::{Failure, Remote, Target};
use cursus_route::{Router, TempError, TransportDriver, User};

use crate::lda_connections::Connections;
use crate::routing::{NextHop, Routed, Routes, Verified};

/// The routers of the configuration.
pub struct Routing(pub Router);

fn failure_outcome(f: &Failure) -> Outcome {
    match f.kind {
        OutcomeKind::Temporary => Outcome::temporary(f.status, f.reason.clone()),
        _ => {
            let exit = if f.status.to_string().starts_with("5.1.") {
                ExitCode::NoUser
            } else {
                ExitCode::NoPerm
            };
            Outcome::permanent(f.status, exit, f.reason.clone())
        }
    }
}

impl Routes for Routing {
    fn verify(&self, recipient: &str, sender: &Sender) -> Verified {
        let routed = self.0.verify(recipient, sender);
        if let Some(f) = routed
            .failures
            .iter()
            .find(|f| f.kind == OutcomeKind::Temporary)
        {
            return Verified::Deferred(failure_outcome(f));
        }
        if routed.deliveries.is_empty() {
            return match routed.failures.first() {
                Some(f) => Verified::Refused(failure_outcome(f)),
                // Verification routers declined without a failure: let delivery decide.
                None => Verified::Local,
            };
        }
        if routed
            .deliveries
            .iter()
            .all(|d| matches!(d.target, Target::Remote(_)))
        {
            Verified::Remote
        } else {
            Verified::Local
        }
    }

    fn in_local_domain(&self, recipient: &str) -> bool {
        self.0.in_local_domain(recipient)
    }

    fn routes_domain(&self, recipient: &str) -> bool {
        self.0.routes_domain(recipient)
    }

    fn route(&self, recipient: &str, sender: &Sender) -> Result<Vec<Routed>, Outcome> {
        let routed = self.0.route(recipient, sender);
        let mut out = Vec::new();
        for d in routed.deliveries {
            out.push(match d.target {
                Target::Local {
                    user, destination, ..
                } => Routed::Local {
                    address: d.address,
                    user,
                    destination,
                    extension: d.extension,
                    router: d.router,
                    transport: d.transport,
                },
                Target::Remote(remote) => {
                    let next_hop = self.next_hop(&d.transport, remote);
                    Routed::Remote {
                        address: d.address,
                        router: d.router,
                        transport: d.transport,
                        next_hop,
                    }
                }
            });
        }
        for f in &routed.failures {
            out.push(Routed::Failed {
                address: f.address.clone(),
                router: f
                    .chain
                    .last()
                    .map(|h| h.router.clone())
                    .unwrap_or_else(|| "-".to_string()),
                outcome: failure_outcome(f),
            });
        }
        Ok(out)
    }
}

impl Routing {
    /// The next hop of a remote delivery: the router's hosts, else the transport's, else
    /// the MX hosts of the domain; the transport says SMTP or LMTP and the port.
    fn next_hop(&self, transport: &str, remote: Remote) -> NextHop {
        let (lmtp, transport_hosts, transport_port) =
            match self.0.config().transport(transport).map(|t| &t.driver) {
                Some(TransportDriver::Lmtp { hosts, port }) => (true, hosts.clone(), *port),
                Some(TransportDriver::Smtp { hosts, port }) => (false, hosts.clone(), *port),
                _ => (false, Vec::new(), 25),
            };
        // With hosts the domain plays no part: recipients of several domains relayed to the
        // same hosts share one transaction.
        match remote {
            Remote::Hosts { hosts, port } => NextHop {
                lmtp,
                hosts,
                port,
                domain: String::new(),
            },
            Remote::Mx { .. } if !transport_hosts.is_empty() => NextHop {
                lmtp,
                hosts: transport_hosts,
                port: transport_port,
                domain: String::new(),
            },
            Remote::Mx { domain } => NextHop {
                lmtp,
                hosts: Vec::new(),
                port: transport_port,
                domain: domain.to_ascii_lowercase(),
            },
        }
    }
}

/// Reads .forward files through cursus-lda's `read-forward` request: the LDA reads the
/// file as the user (whose home the daemon may not even enter) with its own checks, and
/// answers with the entries as data. Used in system mode, over the routing connections.
pub struct LdaForwards {
    connections: Arc<Connections>,
    /// What each user's .forward said lately (see [`FORWARD_FRESH`]).
    recent: Mutex<HashMap<String, (Instant, Vec<ForwardEntry>)>>,
}

/// How long a .forward read through cursus-lda is used again: a recipient is routed at
/// RCPT time and again when delivered a moment later, and a burst of mail for one user
/// would otherwise cost a child of cursus-lda (a fork as the user) per message and per
/// routing. An edit of a .forward takes effect within this time; failures are not kept.
pub const FORWARD_FRESH: Duration = Duration::from_secs(2);

/// Users whose .forward is kept at once (expired ones are dropped first when it is full).
const FORWARD_KEPT: usize = 4096;

impl LdaForwards {
    pub fn new(connections: Arc<Connections>) -> LdaForwards {
        LdaForwards {
            connections,
            recent: Mutex::new(HashMap::new()),
        }
    }

    fn recent(&self) -> MutexGuard<'_, HashMap<String, (Instant, Vec<ForwardEntry>)>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ForwardSource for LdaForwards {
    fn forward(&self, user: &User) -> Result<Vec<ForwardEntry>, TempError> {
        if let Some((read, entries)) = self.recent().get(&user.name)
            && read.elapsed() < FORWARD_FRESH
        {
            return Ok(entries.clone());
        }
        let request = Request::ReadForward {
            user: user.name.clone(),
        };
        let read = Instant::now();
        let answer = self
            .connections
            .call(&request, None)
            .map_err(|outcome| TempError::new(outcome.text))?;
        let entries = forward_entries(&user.name, answer)?;
        let mut recent = self.recent();
        if recent.len() >= FORWARD_KEPT {
            recent.retain(|_, (at, _)| at.elapsed() < FORWARD_FRESH);
        }
        if recent.len() < FORWARD_KEPT {
            recent.insert(user.name.clone(), (read, entries.clone()));
        }
        Ok(entries)
    }
}

/// The entries of `user`'s .forward from the LDA's answer to `read-forward`.
///
/// An unsafe file (a symlink, someone else's, writable by others), or a user the LDA never
/// reads files for (root, below its uid floor), is refused: the .forward is ignored, as
/// sendmail and Postfix ignore it, and the mail goes on to the next router. Everything else
/// that is not a list defers the mail (never a bounce, never a fall-through that would
/// deliver around the user's .forward): a file that cannot be read or has a syntax error
/// (the LDA answers temporary with the line), the user database failing, a broken frame.
fn forward_entries(user: &str, answer: Answer) -> Result<Vec<ForwardEntry>, TempError> {
    match answer {
        Answer::Forward { entries } => Ok(entries),
        Answer::Error {
            code: ErrorCode::Refused,
            text,
        } => {
            crate::log::line(&format!("forward: ~{user}/.forward not used: {text}"));
            Ok(Vec::new())
        }
        Answer::Error { code, text } => Err(TempError::new(format!(
            "cursus-lda refused read-forward for {user} ({code:?}): {text}"
        ))),
        Answer::Outcome { text, .. } => Err(TempError::new(format!(
            "cursus-lda, reading as {user}: {text}"
        ))),
        other => Err(TempError::new(format!(
            "cursus-lda answered read-forward for {user} out of turn: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::time::Duration;

    use cursus_lda::protocol::Envelope;
    use cursus_lda::{Destination, MailPath};
    use cursus_mail::codes;

    use crate::lda_connections::fake;

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            uid: 1500,
            gid: 1500,
            home: format!("/home/{name}"),
        }
    }

    /// Each answer to read-forward: entries are used, a refusal (unsafe file, root)
    /// means "no .forward", everything else defers.
    #[test]
    fn read_forward_answers_become_entries_or_deferrals() {
        let entries = vec![
            ForwardEntry::Local("joe".into()),
            ForwardEntry::Command("/usr/bin/procmail".into()),
        ];
        type Row = (&'static str, Answer, Result<usize, &'static str>);
        let rows: Vec<Row> = vec![
            (
                "a list",
                Answer::Forward {
                    entries: entries.clone(),
                },
                Ok(2),
            ),
            (
                "unsafe: ignored",
                Answer::Error {
                    code: ErrorCode::Refused,
                    text: "~/.forward is ignored because it is unsafe: it is a symbolic link"
                        .into(),
                },
                Ok(0),
            ),
            (
                "syntax error: deferred",
                Answer::Outcome {
                    kind: OutcomeKind::Temporary,
                    status: codes::CONFIG_ERROR,
                    text: "~/.forward line 2: unterminated quote".into(),
                },
                Err("line 2: unterminated quote"),
            ),
            (
                "permanent answer: still deferred, never a bounce",
                Answer::Outcome {
                    kind: OutcomeKind::Permanent,
                    status: codes::BAD_MAILBOX,
                    text: "no such user: joe".into(),
                },
                Err("no such user"),
            ),
            (
                "a broken frame: deferred, not read as no .forward",
                Answer::Error {
                    code: ErrorCode::Malformed,
                    text: "bad frame".into(),
                },
                Err("bad frame"),
            ),
            ("out of turn", Answer::Pong, Err("out of turn")),
        ];
        for (what, answer, want) in rows {
            match (forward_entries("joe", answer), want) {
                (Ok(got), Ok(n)) => assert_eq!(got.len(), n, "{what}"),
                (Err(e), Err(fragment)) => assert!(e.0.contains(fragment), "{what}: {e}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// A service that refuses our uid answers a new connection with an error and closes
    /// it: that must defer the mail, not pass for an unsafe .forward that is ignored
    /// (which would deliver around the user's forwarding).
    #[test]
    fn a_refused_connection_defers_rather_than_skipping_the_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lda.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let refusal = Answer::Error {
                    code: ErrorCode::Refused,
                    text: "this uid may not use cursus-lda".into(),
                };
                let bytes = cursus_lda::protocol::encode_answer(&refusal).expect("encode");
                let _ = stream.write_all(&bytes);
            }
        });
        let forwards = LdaForwards::new(Arc::new(Connections::socket(path, 1)));
        let e = forwards.forward(&user("joe")).expect_err("deferred");
        assert!(e.0.contains("refused the connection"), "{e}");
    }

    /// Over a service's socket: ping, then read-forward, answered with the entries.
    #[test]
    fn read_forward_over_a_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lda.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                fake::serve(stream, |request| {
                    Some(match request {
                        Request::Ping => Answer::Pong,
                        Request::ReadForward { user } => Answer::Forward {
                            entries: vec![ForwardEntry::Local(user)],
                        },
                        _ => Answer::Pong,
                    })
                });
            }
        });
        let forwards = LdaForwards::new(Arc::new(Connections::socket(path, 1)));
        for _ in 0..2 {
            assert_eq!(
                forwards.forward(&user("ann")),
                Ok(vec![ForwardEntry::Local("ann".into())])
            );
        }
    }

    /// Every delivery pair busy (a command running): routing still reads a .forward at
    /// once over the routing pairs, so an SMTP client's RCPT does not wait for a delivery.
    /// Were the pairs shared, the read would wait until the delivery ends.
    #[test]
    fn routing_does_not_wait_behind_a_delivery() {
        let (release, held) = mpsc::channel::<()>();
        let (arrived, delivery_in) = mpsc::channel::<()>();
        let answering = |request: Request| {
            Some(match request {
                Request::ReadForward { user } => Answer::Forward {
                    entries: vec![ForwardEntry::Local(user)],
                },
                _ => Answer::Pong,
            })
        };
        let delivery = fake::pair(move |request| match request {
            Request::Deliver { .. } => {
                let _ = arrived.send(());
                held.recv().ok().map(|_| Answer::Outcome {
                    kind: OutcomeKind::Delivered,
                    status: codes::DELIVERED,
                    text: "delivered".into(),
                })
            }
            other => answering(other),
        });
        let routing = vec![fake::pair(answering), fake::pair(answering)];
        let mut pairs = vec![delivery];
        pairs.extend(routing);
        let (local, connections) = crate::daemon::pair_pools(pairs, 1);
        let forwards = LdaForwards::new(Arc::new(connections));

        let message = tempfile::tempfile().expect("message file");
        let deliverer = std::thread::spawn(move || {
            let envelope = Envelope {
                sender: None,
                original_recipient: "joe@example.org".into(),
                final_recipient: "joe@example.org".into(),
                extension: None,
            };
            let destination =
                Destination::Maildir(MailPath::parse("/home/joe/Maildir").expect("path"));
            local.deliver("joe", &destination, &envelope, &message).0
        });
        delivery_in
            .recv_timeout(Duration::from_secs(10))
            .expect("the delivery reached the LDA");
        let (done, read) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(forwards.forward(&user("joe")));
        });
        let got = read.recv_timeout(Duration::from_secs(5));
        release.send(()).expect("release the delivery");
        assert_eq!(
            got.expect("read-forward answered while the delivery was in flight"),
            Ok(vec![ForwardEntry::Local("joe".into())])
        );
        assert_eq!(
            deliverer.join().expect("delivery").kind,
            OutcomeKind::Delivered
        );
    }

    /// A .forward read a moment ago is used again (a recipient is routed at RCPT and again
    /// at delivery), per user; a failure is never kept: the next routing asks again.
    #[test]
    fn a_forward_read_lately_is_used_again_and_a_failure_is_not() {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        let client = fake::pair(move |request| match request {
            Request::ReadForward { user } => {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some(if user == "flaky" && n < 3 {
                    Answer::Outcome {
                        kind: OutcomeKind::Temporary,
                        status: codes::SYSTEM_STATUS.as_temporary(),
                        text: "cannot read".into(),
                    }
                } else {
                    Answer::Forward {
                        entries: vec![ForwardEntry::Local(user)],
                    }
                })
            }
            _ => Some(Answer::Pong),
        });
        let forwards = LdaForwards::new(Arc::new(Connections::pairs(vec![client])));
        let count = || asked.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(
                forwards.forward(&user("ann")),
                Ok(vec![ForwardEntry::Local("ann".into())])
            );
        }
        assert_eq!(count(), 1, "read once for three routings");
        assert!(forwards.forward(&user("flaky")).is_err());
        assert!(forwards.forward(&user("flaky")).is_err());
        assert_eq!(count(), 3, "failures are asked again");
        assert_eq!(
            forwards.forward(&user("flaky")),
            Ok(vec![ForwardEntry::Local("flaky".into())])
        );
        // Older than FORWARD_FRESH: read again.
        forwards.recent().get_mut("ann").expect("kept").0 -= FORWARD_FRESH;
        forwards.forward(&user("ann")).expect("entries");
        assert_eq!(count(), 5);
    }
}
