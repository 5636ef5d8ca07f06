//! The hints database as the daemon uses it: what the last deliveries learnt about hosts,
//! domains and addresses, used to decide the next ones better (`[hints]` in cursus.toml).
//!
//! - A domain without MX whose every connection was refused is given up after
//!   `no_mx_refused_lifetime`, not the full retry lifetime.
//! - An address whose message bounced after timing out bounces at once on the next timeout
//!   or refusal, for `timeout_bounce_memory` or until a delivery there succeeds.
//! - When a message reaches a destination, the messages waiting for it (deferred because it
//!   could not be reached) are started at once instead of at their scheduled time.
//! - A host that refused EHLO, or hung up or went quiet after it, is greeted with HELO for
//!   `helo_memory`.
//! - Over quota into a Maildir the daemon can see: deferred (4.2.2, scheduled by the
//!   `quota` retry rule) while the mailbox's cur/ directory changes within `quota_unread`
//!   (someone reads it and may make room), bounced (5.2.2) when it has not changed for
//!   longer. Readers move messages from new/ to cur/ and rename them there when flags
//!   change, so cur/'s modification time is the last read. In system mode the daemon's
//!   user cannot look into users' Maildirs (0700): nothing is observed and the outcome
//!   stands as the store gave it (5.2.2 at once); likewise for mbox and MH.
//!
//! Trusts the database only as hints (see decision.rs). Fails soft: the database is a
//! cache, so a file that cannot be opened is moved aside and recreated, an error while
//! running is logged and turns the hints off until the next tidy run reopens the file, and
//! delivery goes on either way; losing the file loses no mail. Blocking: SQLite calls are
//! primary-key reads and small writes behind one mutex, from the delivery threads (and,
//! briefly, from the outbound connection tasks).

pub mod decision;
mod explain;
pub mod store;

use cursus_mailbox::maildir::last_read;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cursus_lda::Destination;
use cursus_mail::{EnhancedStatus, ExitCode, Outcome, OutcomeKind};
use cursus_queue::{Envelope, QueueId, RetryPolicy};
use cursus_route::retry::{ErrorClass, RetryRules, format_duration};
use jiff::Timestamp;
use tokio::sync::mpsc::UnboundedSender;

use crate::log;
use crate::retry::classify;
use crate::routing::NextHop;
pub use decision::Settings;
pub use explain::explain;
use store::Store;

/// The file name in the data directory.
pub const FILE: &str = "hints.db";

/// 5.4.7: given up before the retry lifetime, on what the hints say.
const GIVEN_UP: EnhancedStatus = EnhancedStatus::new(5, 4, 7);

/// 5.2.2: mailbox full.
const MAILBOX_FULL: EnhancedStatus = EnhancedStatus::new(5, 2, 2);

/// The daemon's hints.
pub struct Hints {
    path: PathBuf,
    pub settings: Settings,
    rules: crate::retry::Rules,
    store: Mutex<Option<Store>>,
    /// Destinations some message waits for (so a delivery elsewhere costs no query).
    waited_for: Mutex<HashSet<String>>,
    /// Addresses with a timeout bounce (so a delivery elsewhere costs no statement).
    marked: Mutex<HashSet<String>>,
    /// Where messages to start at once are sent (the daemon's queue runner).
    kick: OnceLock<UnboundedSender<QueueId>>,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Hints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hints({})", self.path.display())
    }
}

fn system_clock() -> i64 {
    Timestamp::now().as_second()
}

impl Hints {
    /// Opens DATA_DIR/hints.db (recreating a damaged file); without it, hints are off
    /// and delivery goes on.
    pub fn open(data_dir: &Path, settings: Settings, rules: crate::retry::Rules) -> Hints {
        let hints = Hints {
            path: data_dir.join(FILE),
            settings,
            rules,
            store: Mutex::new(None),
            waited_for: Mutex::new(HashSet::new()),
            marked: Mutex::new(HashSet::new()),
            kick: OnceLock::new(),
            clock: Box::new(system_clock),
        };
        if hints.settings.enabled {
            hints.reopen();
        }
        hints
    }

    /// Over an open store with a given clock (tests).
    pub fn with_store(
        store: Store,
        settings: Settings,
        rules: RetryRules,
        clock: Box<dyn Fn() -> i64 + Send + Sync>,
    ) -> Hints {
        Hints {
            path: PathBuf::from(":memory:"),
            settings,
            rules: crate::retry::Rules::new(rules),
            store: Mutex::new(Some(store)),
            waited_for: Mutex::new(HashSet::new()),
            marked: Mutex::new(HashSet::new()),
            kick: OnceLock::new(),
            clock,
        }
    }

    fn reopen(&self) {
        match Store::open(&self.path) {
            Ok((store, note)) => {
                if let Some(note) = note {
                    log::line(&format!("hints: {note}"));
                }
                self.load_sets(&store);
                *self.store.lock().unwrap_or_else(|e| e.into_inner()) = Some(store);
            }
            Err(e) => log::line(&format!(
                "hints: cannot open {}: {e}; delivering without hints",
                self.path.display()
            )),
        }
    }

    /// The in-memory copies of the waiting destinations and the marked addresses.
    fn load_sets(&self, store: &Store) {
        if let Ok(list) = store.waiting_destinations() {
            *self.waited_for.lock().unwrap_or_else(|e| e.into_inner()) = list.into_iter().collect();
        }
        if let Ok(list) = store.marked_addresses() {
            *self.marked.lock().unwrap_or_else(|e| e.into_inner()) = list.into_iter().collect();
        }
    }

    /// Messages to start at once go to `kick` (the daemon's queue runner).
    pub fn set_kick(&self, kick: UnboundedSender<QueueId>) {
        let _ = self.kick.set(kick);
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Runs `f` on the store; an error is logged and turns the hints off until the next
    /// tidy run.
    fn with<R>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Store) -> Result<R, rusqlite::Error>,
    ) -> Option<R> {
        let mut guard = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let store = guard.as_mut()?;
        match f(store) {
            Ok(r) => Some(r),
            Err(e) => {
                log::line(&format!(
                    "hints: {what}: {e}; hints off until the next tidy run"
                ));
                *guard = None;
                None
            }
        }
    }

    /// Whether to greet `host` with HELO.
    pub fn helo_only(&self, host: &str) -> bool {
        let now = self.now();
        self.with("read host", |s| s.host(host))
            .flatten()
            .is_some_and(|row| decision::use_helo(Some(&row), now, self.settings.helo_memory))
    }

    /// `host` failed EHLO (`why`): HELO next time.
    pub fn failed_ehlo(&self, host: &str, why: &str) {
        if self.settings.helo_memory == 0 {
            return;
        }
        let now = self.now();
        if self
            .with("write host", |s| s.set_helo_only(host, now))
            .is_some()
        {
            log::line(&format!(
                "hints: host={host} failed EHLO ({why}); HELO for {}",
                format_duration(self.settings.helo_memory)
            ));
        }
    }

    /// A connection to the hop's host succeeded: a refusal run of its domain ends.
    pub fn connected(&self, hop: &NextHop, no_mx: bool) {
        if hop.hosts.is_empty() && !hop.domain.is_empty() {
            let now = self.now();
            let known = self
                .with("read domain", |s| s.domain(&hop.domain))
                .flatten();
            if known.is_some_and(|d| d.refused_since.is_some() || d.no_mx != no_mx) {
                self.with("write domain", |s| {
                    s.domain_answered(&hop.domain, no_mx, now)
                });
            }
        }
    }

    /// No host of the hop could be reached; a refusal continues (or starts) the domain's
    /// refusal run, anything else ends it.
    pub fn not_connected(&self, hop: &NextHop, no_mx: bool, failure: &Outcome) {
        if !hop.hosts.is_empty() || hop.domain.is_empty() {
            return;
        }
        let now = self.now();
        if failure.kind == OutcomeKind::Temporary && classify(failure) == ErrorClass::Refused {
            self.with("write domain", |s| {
                s.domain_refused(&hop.domain, no_mx, now)
            });
        } else {
            self.with("write domain", |s| {
                s.domain_answered(&hop.domain, no_mx, now)
            });
        }
    }

    /// After a remote delivery of recipient `index` (routed to `address`) of message `id`
    /// through `hop`, answered by `relay` (`-`: nothing reached): notes what it teaches and
    /// may turn a temporary `outcome` into a bounce.
    #[allow(clippy::too_many_arguments)]
    pub fn remote(
        &self,
        id: QueueId,
        envelope: &Envelope,
        index: usize,
        hop: &NextHop,
        address: &str,
        relay: &str,
        outcome: &mut Outcome,
    ) {
        let now = self.now();
        let destination = crate::remote::key(hop);
        match outcome.kind {
            OutcomeKind::Delivered => {
                // Only an address with a timeout bounce costs a statement.
                if self
                    .marked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&address.to_lowercase())
                {
                    self.with("write address", |s| s.address_delivered(address, now));
                }
                if relay != "-" {
                    self.start_waiting(id, &destination);
                }
            }
            OutcomeKind::Permanent => {}
            OutcomeKind::Temporary => {
                let class = classify(outcome);
                if relay == "-" && self.settings.start_waiting {
                    let queue_id = id.to_string();
                    if self
                        .with("write waiting", |s| s.wait(&destination, &queue_id, now))
                        .is_some()
                    {
                        self.waited_for
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(destination.clone());
                    }
                }
                let row = self.with("read address", |s| s.address(address)).flatten();
                let why = decision::after_timeout_bounce(
                    row.as_ref(),
                    class,
                    now,
                    self.settings.timeout_bounce_memory,
                )
                .or_else(|| {
                    if !hop.hosts.is_empty() {
                        return None;
                    }
                    let domain = self
                        .with("read domain", |s| s.domain(&hop.domain))
                        .flatten();
                    decision::no_mx_refused(
                        domain.as_ref(),
                        class,
                        envelope.received.as_second(),
                        now,
                        self.settings.no_mx_refused_lifetime,
                    )
                });
                if let Some(why) = why {
                    log::line(&format!("{id}: hints for <{address}>: {why}"));
                    *outcome = bounce(GIVEN_UP, &why, outcome);
                    return;
                }
                // A timeout the retry rules give up on: later mail to the address bounces
                // at once.
                if class == ErrorClass::Timeout
                    && self.settings.timeout_bounce_memory > 0
                    && let Ok(at) = Timestamp::from_second(now)
                    && self
                        .rules
                        .next_attempt(envelope, index, outcome, 0, at)
                        .is_none()
                    && self
                        .with("write address", |s| s.address_timeout_bounce(address, now))
                        .is_some()
                {
                    self.marked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(address.to_lowercase());
                }
            }
        }
    }

    /// After a local delivery to `address` in `destination`: over quota into a Maildir
    /// someone reads is deferred (4.2.2, the `quota` retry rule schedules it), into one
    /// nobody reads is bounced (5.2.2); when reading cannot be observed the outcome
    /// stands as the store gave it. `read`: when the mailbox was last read as cursus-lda
    /// saw it (in system mode the daemon may not look into the user's home); else the
    /// Maildir's cur/ is looked at here.
    pub fn local(
        &self,
        id: QueueId,
        address: &str,
        destination: &Destination,
        read: Option<i64>,
        outcome: &mut Outcome,
    ) {
        let over_quota = match outcome.kind {
            OutcomeKind::Temporary => classify(outcome) == ErrorClass::Quota,
            OutcomeKind::Permanent => outcome.status == MAILBOX_FULL,
            OutcomeKind::Delivered => false,
        };
        if !over_quota || self.settings.quota_unread == 0 {
            return;
        }
        let now = self.now();
        let observed = read.or_else(|| match destination {
            Destination::Maildir(path) => last_read(Path::new(path.as_str())),
            _ => None,
        });
        if let Some(read) = observed {
            self.with("write address", |s| {
                s.address_mailbox_read(address, read, now)
            });
        }
        let read = observed.or_else(|| {
            self.with("read address", |s| s.address(address))
                .flatten()
                .and_then(|r| r.mailbox_read)
        });
        let unread = self.settings.quota_unread;
        match outcome.kind {
            OutcomeKind::Temporary => {
                if let Some(why) = decision::quota_unread(read, ErrorClass::Quota, now, unread) {
                    log::line(&format!("{id}: hints for <{address}>: {why}"));
                    *outcome = bounce(MAILBOX_FULL, &why, outcome);
                }
            }
            _ => {
                if let Some(why) = decision::quota_read(read, now, unread) {
                    log::line(&format!("{id}: hints for <{address}>: {why}"));
                    *outcome = Outcome::temporary(
                        MAILBOX_FULL,
                        cursus_mail::status::one_line(format!("{}; {why}", outcome.text)),
                    );
                } else if let Some(why) =
                    decision::quota_unread(read, ErrorClass::Quota, now, unread)
                {
                    // Bounced as the store said; the notice says why it was not retried.
                    outcome.text =
                        cursus_mail::status::one_line(format!("{}; {why}", outcome.text));
                }
            }
        }
    }

    /// Starts the messages waiting for `destination` (but `id`, which just reached it).
    fn start_waiting(&self, id: QueueId, destination: &str) {
        if !self.settings.start_waiting {
            return;
        }
        {
            let mut waited = self.waited_for.lock().unwrap_or_else(|e| e.into_inner());
            if !waited.remove(destination) {
                return;
            }
        }
        let me = id.to_string();
        let ids = self
            .with("take waiting", |s| s.take_waiting(destination, &me))
            .unwrap_or_default();
        let Some(kick) = self.kick.get() else {
            return;
        };
        let ids: Vec<QueueId> = ids.iter().filter_map(|i| QueueId::parse(i)).collect();
        if !ids.is_empty() {
            log::line(&format!(
                "{id}: reached {destination}: starting {} message(s) waiting for it",
                ids.len()
            ));
        }
        for i in ids {
            let _ = kick.send(i);
        }
    }

    /// Removes old rows; reopens (or recreates) the file if the hints were turned off by
    /// an error.
    pub fn tidy(&self) {
        if !self.settings.enabled {
            return;
        }
        if self
            .store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            self.reopen();
        }
        let now = self.now();
        let s = &self.settings;
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX / 4);
        let (keep, helo, bounce) = (
            as_i64(s.keep),
            as_i64(s.helo_memory),
            as_i64(s.timeout_bounce_memory),
        );
        if let Some(n) = self.with("tidy", |st| {
            let n = st.tidy(now, keep, helo, bounce)?;
            self.load_sets(st);
            Ok(n)
        }) && n > 0
        {
            log::line(&format!("hints: tidy removed or cleared {n} rows"));
        }
    }
}

/// The most messages started together by one arrival at a destination, per delivery slot.
const KICK_BATCH: usize = 64;

/// The daemon's side, on its runtime: the tidy task every `tidy_interval`, and the runner
/// that starts messages at once (every recipient not yet final, as `sendmail -q` does; a
/// held message stays held) when their destination was reached, within the delivery
/// slots.
pub fn serve(
    hints: Arc<Hints>,
    engine: Arc<crate::engine::Engine>,
    slots: Arc<tokio::sync::Semaphore>,
) {
    if !hints.settings.enabled {
        return;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<QueueId>();
    hints.set_kick(tx);
    // The others started by the same arrival go in the same batch (a message gone since it
    // was listed, delivered by its own retry or a queue run, is skipped).
    tokio::spawn(crate::daemon::attempt_as_they_come(
        rx, engine, slots, KICK_BATCH, true,
    ));
    let every = std::time::Duration::from_secs(hints.settings.tidy_interval.max(60));
    tokio::spawn(async move {
        loop {
            let h = hints.clone();
            let _ = tokio::task::spawn_blocking(move || h.tidy()).await;
            tokio::time::sleep(every).await;
        }
    });
}

/// A bounce instead of a temporary `last` failure, saying why and what the last error was.
fn bounce(status: EnhancedStatus, why: &str, last: &Outcome) -> Outcome {
    Outcome::permanent(
        status,
        ExitCode::NoPerm,
        cursus_mail::status::one_line(format!("{why}; last error: {} {}", last.status, last.text)),
    )
}

#[cfg(test)]
mod tests;
