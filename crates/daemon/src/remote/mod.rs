//! Remote delivery: the `smtp` and `lmtp` transports. The engine hands over one message with
//! its remote recipients grouped by next hop; each group becomes transactions on a
//! connection to the first host that answers (MX order, or the router's or transport's
//! host list), with one outcome per recipient. Connections are kept for the next message to
//! the same destination (checked with RSET when they sat idle), and no destination gets more
//! than `connections_per_destination` connections at once.
//!
//! Trusts the configuration and the routers; nothing from DNS or the peers beyond what the
//! protocol lets them say. Fails with outcomes only: temporary when anything on the way
//! (DNS, connect, TLS, a 4xx, a timeout) might work later, permanent for a null MX, a
//! domain that does not exist, a 5xx, or what the peer cannot take (see cursus-proto's
//! client for the 8BITMIME/SMTPUTF8 rules).
//!
//! Runs on the daemon's tokio runtime; the engine (blocking pool) waits for the result.
//! With the hints database (crate::hints) it greets hosts that failed EHLO with HELO and
//! notes which connections failed how (refusals of domains without MX end early).

pub mod connection;
pub mod message;
pub mod mx;
pub mod settings;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cursus_mail::{EnhancedStatus, Outcome, OutcomeKind};
use cursus_proto::{
    ClientConfig, Credentials, OutgoingMessage, OutgoingRecipient, Protocol, TlsMode,
};
use tokio::sync::{Notify, OnceCell, Semaphore};

use crate::routing::NextHop;
pub use connection::Connection;
pub use settings::{HostAuth, Settings};

/// 452 4.5.3: more recipients than the server takes in one transaction.
const TOO_MANY_RECIPIENTS: EnhancedStatus = EnhancedStatus::new(4, 5, 3);

/// One next hop's share of a message.
#[derive(Clone, Debug)]
pub struct Group {
    pub next_hop: NextHop,
    pub recipients: Vec<OutgoingRecipient>,
}

/// One message for remote delivery: the message (its recipients are ignored) and its
/// recipients grouped by next hop.
pub type Job = (OutgoingMessage, Vec<Group>);

/// How many queued messages for one destination make the outbound service use one more
/// worker (and so one more connection) for them.
const MESSAGES_PER_WORKER: usize = 8;

/// A group of a job, waiting for a worker.
struct WorkItem {
    job: usize,
    group: usize,
    message: OutgoingMessage,
    hop: NextHop,
}

/// The answers of the jobs given to [`Outbound::deliver_jobs`] so far.
struct Progress {
    results: Vec<Vec<Option<GroupResult>>>,
    left: Vec<usize>,
}

impl Progress {
    /// Stores one group's result; returns the job's results when it was the last one.
    fn set(&mut self, job: usize, group: usize, result: GroupResult) -> Option<Vec<GroupResult>> {
        let slot = self.results.get_mut(job)?.get_mut(group)?;
        if slot.replace(result).is_none() {
            self.left[job] -= 1;
        }
        if self.left[job] > 0 {
            return None;
        }
        std::mem::take(&mut self.results[job])
            .into_iter()
            .collect::<Option<Vec<_>>>()
    }
}

/// What happened to a group.
#[derive(Clone, Debug)]
pub struct GroupResult {
    /// One per recipient of the group, in order.
    pub outcomes: Vec<Outcome>,
    /// `host[ip]:port` of the server that answered, or `-`.
    pub relay: String,
    /// The TLS session and the certificate verdict, or `none`.
    pub tls: String,
    /// Whether a cached connection was used.
    pub reused: bool,
    /// Whether the server offered DSN (so NOTIFY and ORCPT went on with the message).
    pub dsn: bool,
}

impl GroupResult {
    /// The same outcome for all `n` recipients, with no server involved.
    pub fn all(n: usize, outcome: Outcome) -> GroupResult {
        GroupResult {
            outcomes: vec![outcome; n],
            relay: "-".into(),
            tls: "none".into(),
            reused: false,
            dsn: false,
        }
    }
}

/// Limits and waiting room of one destination.
#[derive(Debug)]
struct Slot {
    connections: Arc<Semaphore>,
    returned: Arc<Notify>,
}

/// The outbound service.
pub struct Outbound {
    settings: Settings,
    helo: String,
    tls: tls::OutboundTls,
    dns: OnceCell<Result<mx::Dns, String>>,
    idle: Mutex<HashMap<String, Vec<Connection>>>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    reaper: std::sync::Once,
    /// The hints database: HELO-only hosts, refusals of domains without MX.
    hints: Option<Arc<crate::hints::Hints>>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outbound({:?})", self.settings)
    }
}

/// The destination's name: the key of its connection cache and limits, and what messages
/// wait for in the hints database.
pub fn key(hop: &NextHop) -> String {
    let proto = if hop.lmtp { "lmtp" } else { "smtp" };
    if hop.hosts.is_empty() {
        format!("{proto}:mx:{}:{}", hop.domain, hop.port)
    } else {
        format!("{proto}:{}:{}", hop.hosts.join(","), hop.port)
    }
}

impl Outbound {
    /// Checks the TLS roots; DNS is set up on first use (inside the runtime).
    pub fn new(settings: Settings, hostname: &str) -> Result<Outbound, String> {
        let tls = tls::OutboundTls::new(settings.tls_ca_file.as_deref())?;
        Ok(Outbound {
            helo: settings
                .helo_name
                .clone()
                .unwrap_or_else(|| hostname.to_string()),
            settings,
            tls,
            dns: OnceCell::new(),
            idle: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            reaper: std::sync::Once::new(),
            hints: None,
        })
    }

    /// Remembers hosts and refusals in the hints database from now on.
    pub fn set_hints(&mut self, hints: Arc<crate::hints::Hints>) {
        self.hints = Some(hints);
    }

    /// From the blocking pool: delivers one message's groups and waits for them all.
    pub fn deliver_blocking(
        self: &Arc<Self>,
        message: &OutgoingMessage,
        groups: Vec<Group>,
    ) -> Vec<GroupResult> {
        let sizes: Vec<usize> = groups.iter().map(|g| g.recipients.len()).collect();
        match self.deliver_jobs(vec![(message.clone(), groups)]).recv() {
            Ok((_, results)) => results,
            Err(_) => {
                let o =
                    Outcome::temporary(EnhancedStatus::new(4, 3, 0), "remote delivery task failed");
                sizes
                    .into_iter()
                    .map(|n| GroupResult::all(n, o.clone()))
                    .collect()
            }
        }
    }

    /// From the blocking pool: delivers every group of every job and answers each job (by
    /// its index) on the returned channel as soon as all its groups are done. The groups
    /// are sorted by destination; each destination's are taken in order by a few worker
    /// tasks (one per MESSAGES_PER_WORKER, at most `connections_per_destination`), so the
    /// messages of a queue run follow each other on the cached connections without a task
    /// or a thread hand-over per message.
    pub fn deliver_jobs(
        self: &Arc<Self>,
        jobs: Vec<Job>,
    ) -> mpsc::Receiver<(usize, Vec<GroupResult>)> {
        let (tx, rx) = mpsc::channel();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            let o = Outcome::temporary(
                EnhancedStatus::new(4, 3, 0),
                "remote delivery needs the daemon's runtime",
            );
            for (i, (_, groups)) in jobs.iter().enumerate() {
                let results = groups
                    .iter()
                    .map(|g| GroupResult::all(g.recipients.len(), o.clone()))
                    .collect();
                let _ = tx.send((i, results));
            }
            return rx;
        };
        let this = self.clone();
        handle.spawn(async move {
            this.start_reaper();
            let mut work: Vec<(String, VecDeque<WorkItem>)> = Vec::new();
            let mut progress = Progress {
                results: Vec::with_capacity(jobs.len()),
                left: Vec::with_capacity(jobs.len()),
            };
            for (j, (base, groups)) in jobs.into_iter().enumerate() {
                progress.results.push(vec![None; groups.len()]);
                progress.left.push(groups.len());
                if groups.is_empty() {
                    let _ = tx.send((j, Vec::new()));
                }
                for (g, group) in groups.into_iter().enumerate() {
                    let mut message = base.clone();
                    message.recipients = group.recipients;
                    let item = WorkItem {
                        job: j,
                        group: g,
                        message,
                        hop: group.next_hop,
                    };
                    let k = key(&item.hop);
                    match work.iter_mut().find(|(w, _)| *w == k) {
                        Some((_, items)) => items.push_back(item),
                        None => work.push((k, VecDeque::from([item]))),
                    }
                }
            }
            let progress = Arc::new(Mutex::new(progress));
            for (_, items) in work {
                let workers = items
                    .len()
                    .div_ceil(MESSAGES_PER_WORKER)
                    .clamp(1, this.settings.connections_per_destination.max(1));
                let items = Arc::new(Mutex::new(items));
                for _ in 0..workers {
                    let (this, items, progress, tx) =
                        (this.clone(), items.clone(), progress.clone(), tx.clone());
                    tokio::spawn(async move {
                        loop {
                            let next = items.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                            let Some(item) = next else {
                                return;
                            };
                            let result = this.clone().deliver(item.message, item.hop).await;
                            let done = progress
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .set(item.job, item.group, result);
                            if let Some(results) = done {
                                let _ = tx.send((item.job, results));
                            }
                        }
                    });
                }
            }
        });
        rx
    }

    /// At shutdown: QUIT on every cached connection (RFC 5321 §4.1.1.10: a client ends a
    /// session with QUIT, not by closing), waiting at most `limit` for the replies. Returns
    /// how many there were.
    pub async fn quit_idle(&self, limit: Duration) -> usize {
        let idle: Vec<Connection> = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .flat_map(|(_, list)| list)
            .collect();
        let n = idle.len();
        let mut quits = tokio::task::JoinSet::new();
        for c in idle {
            quits.spawn(c.quit());
        }
        let _ =
            tokio::time::timeout(limit, async { while quits.join_next().await.is_some() {} }).await;
        n
    }

    fn start_reaper(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        self.reaper.call_once(|| {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let Some(this) = this.upgrade() else {
                        return;
                    };
                    let expired = this.take_expired();
                    for c in expired {
                        tokio::spawn(c.quit());
                    }
                }
            });
        });
    }

    fn take_expired(&self) -> Vec<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let limit = self.settings.idle;
        let mut out = Vec::new();
        for list in idle.values_mut() {
            let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|c| c.idle_since.elapsed() >= limit);
            *list = keep;
            out.extend(old);
        }
        idle.retain(|_, l| !l.is_empty());
        out
    }

    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    connections: Arc::new(Semaphore::new(
                        self.settings.connections_per_destination,
                    )),
                    returned: Arc::new(Notify::new()),
                })
            })
            .clone()
    }

    fn take_idle(&self, key: &str) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(key).and_then(Vec::pop)
    }

    async fn dns(&self) -> Result<&mx::Dns, Outcome> {
        let dns = self
            .dns
            .get_or_init(|| async {
                mx::Dns::new(
                    self.settings.resolver,
                    self.settings.timeouts.connect.min(Duration::from_secs(10)),
                )
            })
            .await;
        dns.as_ref().map_err(|e| {
            Outcome::temporary(EnhancedStatus::new(4, 4, 3), format!("DNS resolver: {e}"))
        })
    }

    /// One group: a connection (cached or new), then the transactions.
    async fn deliver(self: Arc<Self>, message: OutgoingMessage, hop: NextHop) -> GroupResult {
        let n = message.recipients.len();
        let all = |o: Outcome| GroupResult::all(n, o);
        let key = key(&hop);
        let slot = self.slot(&key);
        let (mut conn, mut reused) = loop {
            // A cached connection first; RSET it when it sat idle for a while.
            if let Some(mut c) = self.take_idle(&key) {
                if c.idle_since.elapsed() < Duration::from_secs(1) || c.probe().await {
                    break (c, true);
                }
                continue;
            }
            let permit = tokio::select! {
                p = slot.connections.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return all(Outcome::temporary(EnhancedStatus::new(4, 3, 0), "shutting down")),
                },
                _ = slot.returned.notified() => continue,
            };
            // Someone may have returned a connection while we waited.
            if let Some(c) = self.take_idle(&key) {
                drop(permit);
                if c.idle_since.elapsed() < Duration::from_secs(1) {
                    break (c, true);
                }
                tokio::spawn(c.quit());
                continue;
            }
            match self.connect(&hop, permit).await {
                Ok(c) => break (c, false),
                Err(o) => return all(o),
            }
        };
        let mut outcomes = Vec::with_capacity(n);
        let size = self.settings.recipients_per_transaction.max(1);
        for chunk in message.recipients.chunks(size) {
            if !conn.is_ready() {
                outcomes.extend(std::iter::repeat_n(
                    Outcome::temporary(
                        EnhancedStatus::new(4, 4, 2),
                        format!("{}: the connection was lost", conn.relay),
                    ),
                    chunk.len(),
                ));
                continue;
            }
            let mut m = message.clone();
            m.recipients = chunk.to_vec();
            let mut result = conn.send(m.clone()).await;
            if reused && !conn.answered() && !conn.is_ready() {
                // A cached connection the server had closed without a word: the message
                // never reached it, so once more on a new connection.
                drop(conn);
                let permit = match slot.connections.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => {
                        outcomes.extend(result);
                        return GroupResult {
                            outcomes,
                            relay: "-".into(),
                            tls: "none".into(),
                            reused,
                            dsn: false,
                        };
                    }
                };
                match self.connect(&hop, permit).await {
                    Ok(c) => {
                        conn = c;
                        reused = false;
                        result = conn.send(m).await;
                    }
                    Err(o) => {
                        outcomes.extend(std::iter::repeat_n(o, chunk.len()));
                        let rest = n - outcomes.len();
                        outcomes.extend(std::iter::repeat_n(
                            Outcome::temporary(
                                EnhancedStatus::new(4, 4, 2),
                                "the cached connection was closed and no new one could be made",
                            ),
                            rest,
                        ));
                        return GroupResult {
                            outcomes,
                            relay: "-".into(),
                            tls: "none".into(),
                            reused: false,
                            dsn: false,
                        };
                    }
                }
            }
            // "452 too many recipients" (RFC 5321 §4.5.3.1.10): the rest go in further
            // transactions while each one gets some recipients through.
            loop {
                let over: Vec<usize> = (0..result.len())
                    .filter(|&i| result[i].status == TOO_MANY_RECIPIENTS)
                    .collect();
                if over.is_empty() || over.len() == result.len() || !conn.is_ready() {
                    break;
                }
                let mut again = message.clone();
                again.recipients = over.iter().map(|&i| chunk[i].clone()).collect();
                let answers = conn.send(again).await;
                let progress = answers.iter().any(|o| o.status != TOO_MANY_RECIPIENTS);
                for (&i, o) in over.iter().zip(answers) {
                    result[i] = o;
                }
                if !progress {
                    break;
                }
            }
            outcomes.extend(result);
        }
        let result = GroupResult {
            outcomes,
            relay: conn.relay.clone(),
            tls: conn.tls.clone(),
            reused,
            dsn: conn.offers_dsn(),
        };
        if conn.is_ready() && conn.messages() < self.settings.messages_per_connection {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_default()
                .push(conn);
            slot.returned.notify_one();
        } else {
            tokio::spawn(conn.quit());
        }
        result
    }

    /// Resolves the hop and connects to the first host that greets us properly.
    async fn connect(
        &self,
        hop: &NextHop,
        permit: connection::Permit,
    ) -> Result<Connection, Outcome> {
        let dns = self.dns().await?;
        let hosts = if hop.hosts.is_empty() {
            dns.mx_hosts(&hop.domain, hop.port, &self.helo).await?
        } else {
            dns.listed_hosts(&hop.hosts, hop.port).await?
        };
        let mut failure: Option<Outcome> = None;
        let mut permit = Some(permit);
        let hints = self.hints.as_deref();
        let no_mx = hop.hosts.is_empty() && hosts.iter().all(|h| h.implicit_mx);
        for host in &hosts {
            for address in &host.addresses {
                let mut config = self.client_config(hop, &host.name, address);
                // HELO means no extension: never where TLS is required or AUTH is
                // configured (they need EHLO; such a host keeps failing visibly instead).
                config.helo_only = !hop.lmtp
                    && config.tls != TlsMode::Required
                    && config.auth.is_none()
                    && hints.is_some_and(|h| h.helo_only(&host.name));
                let helo_only = config.helo_only;
                match Connection::open(
                    &host.name,
                    address,
                    config,
                    &self.tls,
                    &self.settings.timeouts,
                )
                .await
                {
                    Ok(mut c) => {
                        if let Some(p) = permit.take() {
                            c.hold(p);
                        }
                        if let Some(h) = hints {
                            if c.used_helo() && !helo_only {
                                h.failed_ehlo(&host.name, "EHLO refused, HELO accepted");
                            }
                            h.connected(hop, no_mx);
                        }
                        return Ok(c);
                    }
                    Err(connection::OpenFailure {
                        outcome: o,
                        ehlo_failed,
                    }) => {
                        if ehlo_failed
                            && !hop.lmtp
                            && let Some(h) = hints
                        {
                            h.failed_ehlo(&host.name, &o.text);
                        }
                        // Keep a temporary failure over a permanent one: another host
                        // might take the mail later.
                        let keep = match &failure {
                            None => true,
                            Some(f) => f.kind != OutcomeKind::Temporary,
                        };
                        if keep {
                            failure = Some(o);
                        }
                    }
                }
            }
        }
        let failure = failure.unwrap_or_else(|| {
            Outcome::temporary(EnhancedStatus::new(4, 4, 1), "no host to connect to")
        });
        if let Some(h) = hints {
            h.not_connected(hop, no_mx, &failure);
        }
        Err(failure)
    }

    fn client_config(&self, hop: &NextHop, host: &str, address: &mx::Address) -> ClientConfig {
        let protocol = if hop.lmtp {
            Protocol::Lmtp
        } else {
            Protocol::Smtp
        };
        let mut c = ClientConfig::new(self.helo.clone(), protocol);
        c.tls = match address {
            mx::Address::Unix(_) => TlsMode::Never,
            mx::Address::Tcp(_) => self.settings.tls,
        };
        c.eight_bit = self.settings.eight_bit;
        c.chunking = self.settings.chunking;
        if let Some(a) = self.settings.auth_for(host) {
            c.auth = Some(Credentials {
                user: a.user.clone(),
                password: a.password.clone(),
            });
            c.auth_without_tls = a.without_tls;
        }
        c
    }

    /// Idle connections (for tests and the log).
    pub fn idle_connections(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }
}
