//! The `lda` transport: local deliveries. With a cursus-lda service (cursusd started as root,
//! or configured with `[lda] socket`), each delivery is a `deliver` request over a pooled
//! connection, the message passed as a read-only descriptor; deliveries that wait for the
//! same mailbox while one is made are gathered into one `deliver-many` request (one child
//! of cursus-lda writes them all and syncs the mailbox directory once: group commit, see
//! [`Gathered`]). In single-user mode (cursusd
//! started by an ordinary user) the same checks and the same writer run in-process, as that
//! user, under a policy that allows only the user's own mail directory.
//!
//! Trusts the LDA's answers; trusts nothing else. Blocking (the daemon calls it on the
//! blocking pool). Never fails: every path ends in an [`Outcome`]; a broken LDA connection
//! is dropped from the pool and the delivery is temporary.
//!
//! Attacks stopped: in single-user mode a route naming another user is refused (5.7.1)
//! rather than written with our rights under their name; the in-process path runs the LDA's
//! own policy check, walk and safe-open code, so a symlink planted in the data directory is
//! refused exactly as the root service would refuse it.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use cursus_lda::Destination;
use cursus_lda::client::Client;
use cursus_lda::policy::Policy;
use cursus_lda::protocol::{Answer, DeliverOptions, Envelope, MAX_BATCH, Request};
use cursus_lda::store::{self, Job};
use cursus_mail::{ExitCode, Outcome, codes};

use crate::lda_connections::Connections;

/// How local deliveries are made.
pub enum Local {
    /// Through cursus-lda, over the delivery connections (routing has its own: see
    /// `lda_connections.rs`).
    Service(Arc<Connections>, Gathered),
    InProcess {
        user: String,
        uid: u32,
        home: String,
        policy: Policy,
    },
}

/// The policy of single-user mode: mailboxes below `<data_dir>/mail`, as `user` only.
pub fn single_user_policy(data_dir: &Path, user: &str) -> Result<Policy, String> {
    let base = data_dir.join("mail");
    let text = format!(
        "min_uid = 0\n\
         [[allow]]\nname = \"data-maildir\"\nkind = \"maildir\"\npath = \"{p}\"\nsubtree = true\nusers = [\"{user}\"]\n\
         [[allow]]\nname = \"data-mbox\"\nkind = \"mbox\"\npath = \"{p}\"\nsubtree = true\nusers = [\"{user}\"]\n\
         [[allow]]\nname = \"data-mh\"\nkind = \"mh\"\npath = \"{p}\"\nsubtree = true\nusers = [\"{user}\"]\n",
        p = base.display()
    );
    cursus_lda::policy::parse_system(&text, "(single-user mode)").map_err(|e| e.to_string())
}

impl Local {
    /// Deliveries through a cursus-lda service's socket, `connections` of them kept.
    pub fn service(socket: PathBuf, connections: usize) -> Local {
        Local::Service(
            Arc::new(Connections::socket(socket, connections)),
            Gathered::default(),
        )
    }

    /// Deliveries over a fixed set of socket pairs to a cursus-lda this daemon started.
    pub fn pairs(clients: Vec<Client>) -> Local {
        Local::Service(Arc::new(Connections::pairs(clients)), Gathered::default())
    }

    /// The connections to cursus-lda, when deliveries go through it.
    pub fn connections(&self) -> Option<Arc<Connections>> {
        match self {
            Local::Service(c, _) => Some(c.clone()),
            Local::InProcess { .. } => None,
        }
    }

    /// Delivers the message in `message` to `destination` as `user`; with the outcome,
    /// when the LDA said it, when a Maildir found over quota was last read (seconds since
    /// 1970; see the hints).
    pub fn deliver(
        &self,
        user: &str,
        destination: &Destination,
        envelope: &Envelope,
        message: &File,
    ) -> (Outcome, Option<i64>) {
        match self {
            Local::Service(connections, gathered) => {
                let answer = match destination {
                    // A command runs once per request, with its own time limit and output.
                    Destination::Command { .. } => connections.call(
                        &deliver_request(user, destination, envelope),
                        Some(message.as_fd()),
                    ),
                    _ => gathered.deliver(connections, user, destination, envelope, message),
                };
                match answer {
                    Ok(answer) => {
                        let read = match &answer {
                            Answer::OverQuota { mailbox_read, .. } => {
                                Some(i64::from(*mailbox_read))
                            }
                            _ => None,
                        };
                        (answer_outcome(answer), read)
                    }
                    Err(outcome) => (outcome, None),
                }
            }
            Local::InProcess {
                user: me,
                uid,
                home,
                policy,
            } => {
                if user != me {
                    let o = Outcome::permanent(
                        codes::DELIVERY_NOT_AUTHORIZED,
                        ExitCode::NoPerm,
                        format!("single-user mode delivers only as {me}, not as {user}"),
                    );
                    return (o, None);
                }
                let job = Job {
                    user,
                    uid: *uid,
                    home,
                    system: policy,
                    destination,
                    envelope,
                    options: OPTIONS,
                    message,
                    command_timeout: Duration::from_secs(600),
                };
                // The hints look at the Maildir themselves: it is ours.
                (
                    store::deliver(&job, &mut |line| crate::log::line(&line)),
                    None,
                )
            }
        }
    }
}

/// Every local delivery syncs, creates missing Maildir++ folders and adds Return-Path.
const OPTIONS: DeliverOptions = DeliverOptions {
    fsync: true,
    create_folders: true,
    return_path: true,
};

/// Deliveries to one mailbox gathered while earlier ones are being made: group commit over
/// the privilege boundary. A delivery joins its mailbox's queue; when fewer than
/// [`LEADERS_PER_MAILBOX`] requests for that mailbox are in flight, the thread leads: it
/// takes up to [`MAX_BATCH`] waiting deliveries (its own among them, unless more were
/// ahead) and sends them as one `deliver-many` (a lone one as a plain `deliver`), then
/// hands each its answer. Alone, a delivery goes at once, as before; under load the batch
/// grows with the queue, and cursus-lda forks one child and syncs the mailbox directory
/// once per batch instead of per message.
///
/// Nothing waits for a batch to fill: a leader sends what is there. Each waiter owns a
/// duplicate of its message descriptor, so a leader never borrows another thread's file.
#[derive(Default)]
pub struct Gathered {
    mailboxes: Mutex<HashMap<(String, Destination), Mailbox>>,
    answered: Condvar,
}

/// Requests in flight at once for one mailbox. One: the next batch gathers while one is
/// written (its messages written in parallel by the child). Measured with smtp-source into
/// one Maildir through cursus-lda (`bench/smtp-bench.sh`, 3 rounds each): 1 in flight
/// 1,357 msg/s, 2 1,170, 4 1,105, 8 916 (smaller batches, more forks and directory syncs).
const LEADERS_PER_MAILBOX: usize = 1;

#[derive(Default)]
struct Mailbox {
    waiting: VecDeque<Arc<Waiter>>,
    in_flight: usize,
}

struct Waiter {
    envelope: Envelope,
    message: File,
    answer: Mutex<Option<Result<Answer, Outcome>>>,
}

impl Gathered {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, Destination), Mailbox>> {
        self.mailboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers `message` to a mailbox (not a command), alone or with others that wait
    /// for the same mailbox; the LDA's answer for this message.
    pub fn deliver(
        &self,
        connections: &Connections,
        user: &str,
        destination: &Destination,
        envelope: &Envelope,
        message: &File,
    ) -> Result<Answer, Outcome> {
        let message = message.try_clone().map_err(|e| {
            Outcome::temporary(
                codes::SYSTEM_STATUS,
                format!("duplicating the message: {e}"),
            )
        })?;
        let me = Arc::new(Waiter {
            envelope: envelope.clone(),
            message,
            answer: Mutex::new(None),
        });
        let key = (user.to_string(), destination.clone());
        let mut mailboxes = self.lock();
        mailboxes
            .entry(key.clone())
            .or_default()
            .waiting
            .push_back(Arc::clone(&me));
        loop {
            if let Some(answer) = me.answer.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return answer;
            }
            // Unanswered, this delivery is waiting or in a batch in flight: either way its
            // mailbox's entry is there.
            if let Some(mailbox) = mailboxes.get_mut(&key)
                && mailbox.in_flight < LEADERS_PER_MAILBOX
                && !mailbox.waiting.is_empty()
            {
                mailbox.in_flight += 1;
                let n = mailbox.waiting.len().min(MAX_BATCH);
                let batch: Vec<Arc<Waiter>> = mailbox.waiting.drain(..n).collect();
                drop(mailboxes);
                send(connections, user, destination, &batch);
                mailboxes = self.lock();
                if let Some(mailbox) = mailboxes.get_mut(&key) {
                    mailbox.in_flight -= 1;
                    if mailbox.in_flight == 0 && mailbox.waiting.is_empty() {
                        mailboxes.remove(&key);
                    }
                }
                self.answered.notify_all();
                continue;
            }
            mailboxes = self
                .answered
                .wait(mailboxes)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A `deliver` request for one message.
fn deliver_request(user: &str, destination: &Destination, envelope: &Envelope) -> Request {
    Request::Deliver {
        user: user.to_string(),
        destination: destination.clone(),
        envelope: envelope.clone(),
        options: OPTIONS,
    }
}

/// Sends one batch and gives each waiter its answer.
fn send(connections: &Connections, user: &str, destination: &Destination, batch: &[Arc<Waiter>]) {
    let answers: Vec<Result<Answer, Outcome>> = if let [one] = batch {
        let request = deliver_request(user, destination, &one.envelope);
        vec![connections.call(&request, Some(one.message.as_fd()))]
    } else {
        let request = Request::DeliverMany {
            user: user.to_string(),
            destination: destination.clone(),
            envelopes: batch.iter().map(|w| w.envelope.clone()).collect(),
            options: OPTIONS,
        };
        let fds: Vec<_> = batch.iter().map(|w| w.message.as_fd()).collect();
        match connections.call_with(&request, &fds) {
            Ok(Answer::Outcomes(answers)) if answers.len() == batch.len() => {
                answers.into_iter().map(Ok).collect()
            }
            // An error answer, or one out of turn: the same for every message.
            Ok(other) => vec![Ok(other); batch.len()],
            Err(outcome) => vec![Err(outcome); batch.len()],
        }
    };
    for (waiter, answer) in batch.iter().zip(answers) {
        *waiter.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
    }
}

/// The outcome an LDA answer stands for. The answer's text may be long (a command's first
/// 4 KB of output, escaped into one line); the outcome keeps what fits one log and bounce
/// line (`one_line`), and cursus-lda's own log line has the rest.
pub fn answer_outcome(answer: Answer) -> Outcome {
    match answer {
        Answer::Outcome { kind, status, text }
        | Answer::OverQuota {
            kind, status, text, ..
        } => {
            let exit = match kind {
                cursus_mail::OutcomeKind::Delivered => ExitCode::Ok,
                cursus_mail::OutcomeKind::Temporary => ExitCode::TempFail,
                cursus_mail::OutcomeKind::Permanent => ExitCode::NoPerm,
            };
            Outcome {
                kind,
                status,
                text: cursus_mail::status::one_line(text),
                exit,
            }
        }
        Answer::Error { text, .. } => Outcome::temporary(
            codes::SYSTEM_STATUS,
            format!("cursus-lda refused the request: {text}"),
        ),
        other => Outcome::temporary(
            codes::SYSTEM_STATUS,
            format!("cursus-lda answered out of turn: {other:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lda_connections::fake;
    use std::sync::mpsc;

    fn delivered(text: String) -> Answer {
        Answer::Outcome {
            kind: cursus_mail::OutcomeKind::Delivered,
            status: codes::DELIVERED,
            text,
        }
    }

    /// Deliveries that arrive while one for the same mailbox is being made are sent
    /// together as one deliver-many, each caller gets the answer for its own message, and a
    /// delivery alone goes at once as a plain deliver (nothing waits for a batch to fill).
    #[test]
    fn deliveries_waiting_for_one_mailbox_go_in_one_request() {
        let (entered, first_in) = mpsc::channel::<()>();
        let (release, held) = mpsc::channel::<()>();
        let (seen, requests) = mpsc::channel::<(&'static str, usize)>();
        let mut calls = 0;
        let answer = move |request: Request| {
            calls += 1;
            if calls == 1 {
                let _ = entered.send(());
                held.recv().ok()?;
            }
            match request {
                Request::Deliver { envelope, .. } => {
                    let _ = seen.send(("deliver", 1));
                    Some(delivered(envelope.final_recipient))
                }
                Request::DeliverMany { envelopes, .. } => {
                    let _ = seen.send(("deliver-many", envelopes.len()));
                    Some(Answer::Outcomes(
                        envelopes
                            .into_iter()
                            .map(|e| delivered(e.final_recipient))
                            .collect(),
                    ))
                }
                _ => None,
            }
        };
        // One socket pair: the first delivery holds it until released.
        let local = Arc::new(Local::pairs(vec![fake::pair(answer)]));
        let message = Arc::new(tempfile::tempfile().expect("a message file"));
        let deliver = |n: usize| {
            let (local, message) = (local.clone(), message.clone());
            std::thread::spawn(move || {
                let envelope = Envelope {
                    sender: None,
                    original_recipient: format!("r{n}@example.org"),
                    final_recipient: format!("r{n}@example.org"),
                    extension: None,
                };
                let destination = Destination::Maildir(
                    cursus_lda::MailPath::parse("/home/joe/Maildir").expect("path"),
                );
                local.deliver("joe", &destination, &envelope, &message).0
            })
        };
        let first = deliver(0);
        first_in
            .recv_timeout(Duration::from_secs(10))
            .expect("the first delivery reached the LDA");
        let others: Vec<_> = (1..=5).map(deliver).collect();
        // Give the five time to queue behind the delivery in flight.
        std::thread::sleep(Duration::from_millis(300));
        release.send(()).expect("release the first");
        let outcome = first.join().expect("first");
        assert_eq!(outcome.text, "r0@example.org");
        for (n, t) in others.into_iter().enumerate() {
            let outcome = t.join().expect("a later delivery");
            assert_eq!(outcome.kind, cursus_mail::OutcomeKind::Delivered);
            assert_eq!(outcome.text, format!("r{}@example.org", n + 1));
        }
        let sent: Vec<_> = requests.try_iter().collect();
        assert_eq!(sent[0], ("deliver", 1), "{sent:?}");
        assert_eq!(sent.iter().map(|(_, n)| n).sum::<usize>(), 6, "{sent:?}");
        assert_eq!(
            sent[1..],
            [("deliver-many", 5)],
            "the waiting deliveries were gathered"
        );
    }

    #[test]
    fn a_long_answer_text_becomes_one_short_log_line() {
        let text = format!(
            "/usr/bin/x exited 75 (temporary failure): {}",
            "y".repeat(16_000)
        );
        let outcome = answer_outcome(Answer::Outcome {
            kind: cursus_mail::OutcomeKind::Temporary,
            status: codes::SYSTEM_STATUS.as_temporary(),
            text,
        });
        assert!(outcome.text.len() <= 200, "{}", outcome.text.len());
        assert!(
            outcome
                .text
                .starts_with("/usr/bin/x exited 75 (temporary failure): yyy")
        );
    }
}
