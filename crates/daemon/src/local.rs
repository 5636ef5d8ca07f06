//! The `lda` transport: local deliveries. With a cursus-lda service (cursusd started as root,
//! or configured with `[lda] socket`), each delivery is a `deliver` request over a pooled
//! connection, the message passed as a read-only descriptor. In single-user mode (cursusd
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

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cursus_lda::Destination;
use cursus_lda::client::Client;
use cursus_lda::policy::Policy;
use cursus_lda::protocol::{Answer, DeliverOptions, Envelope, Request};
use cursus_lda::store::{self, Job};
use cursus_mail::{ExitCode, Outcome, codes};

use crate::lda_connections::Connections;

/// How local deliveries are made.
pub enum Local {
    /// Through cursus-lda, over the delivery connections (routing has its own: see
    /// `lda_connections.rs`).
    Service(Arc<Connections>),
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
        Local::Service(Arc::new(Connections::socket(socket, connections)))
    }

    /// Deliveries over a fixed set of socket pairs to a cursus-lda this daemon started.
    pub fn pairs(clients: Vec<Client>) -> Local {
        Local::Service(Arc::new(Connections::pairs(clients)))
    }

    /// The connections to cursus-lda, when deliveries go through it.
    pub fn connections(&self) -> Option<Arc<Connections>> {
        match self {
            Local::Service(c) => Some(c.clone()),
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
            Local::Service(connections) => {
                let request = Request::Deliver {
                    user: user.to_string(),
                    destination: destination.clone(),
                    envelope: envelope.clone(),
                    options: DeliverOptions {
                        fsync: true,
                        create_folders: true,
                        return_path: true,
                    },
                };
                match connections.call(&request, Some(message.as_fd())) {
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
                    options: DeliverOptions {
                        fsync: true,
                        create_folders: true,
                        return_path: true,
                    },
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
