//! Starting and running cursusd: the mode (single-user, or system started as root), the
//! configuration, the privileged steps done before the runtime exists (binding ports,
//! starting cursus-lda on socket pairs, dropping to the `cursus` user), then the tokio
//! runtime with the listeners, the first-attempt dispatcher, the queue manager and the
//! signal handlers.
//!
//! Trusts the configuration file and the user database. Fails at start-up with a message
//! and exit status 78 (configuration) or 71 (system); once running, failures are per
//! connection or per delivery and are logged.
//!
//! Attacks stopped: the runtime (threads) starts only after the credential change, so no
//! thread keeps root (rule 2 of docs/design/security.md); the daemon never runs as root
//! once it serves clients; the submission socket identifies users by SO_PEERCRED, never by
//! what they claim.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cursus_proto::Protocol;
use cursus_queue::{Queue, QueueId};
use cursus_route::{Router, RoutingConfig, World};
use jiff::Timestamp;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::{Config, ListenAddr};
use crate::engine::Engine;
use crate::lda_connections::{Connections, KEEP_ALIVE};
use crate::local::{Local, single_user_policy};
use crate::log;
use crate::reception::Reception;
use crate::router_adapter::{LdaForwards, Routing};
use crate::server::{self, Server};

/// Where the system configuration lives.
pub const SYSTEM_CONFIG: &str = "/etc/cursus/cursus.toml";
/// The system data directory.
pub const SYSTEM_DATA_DIR: &str = "/var/spool/cursus";
/// Deliveries (first attempts and queue runs, each a batch of messages) in flight at once;
/// each holds a blocking thread while its transports work. (4 and 48 measured no faster
/// than 16 in bench/outbound-bench.sh: the cost per message is CPU, not waiting.)
pub const DELIVERY_SLOTS: usize = 16;

/// The most messages one delivery slot attempts together in a queue run (see
/// Engine::attempt_batch).
const QUEUE_RUN_BATCH: usize = 32;

/// The most freshly accepted messages one delivery slot attempts together.
const FIRST_ATTEMPT_BATCH: usize = 16;

/// Connections to cursus-lda for routing's `read-forward` requests (system mode), apart
/// from the deliveries' `[lda] connections`: a request is short (a fork and a small read),
/// and these never wait behind a delivery (see lda_connections.rs).
pub const ROUTING_LDA_CONNECTIONS: usize = 2;

/// Command-line choices.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// Only check the configuration and exit.
    pub check: bool,
}

/// A start-up failure: the message and the exit status.
#[derive(Debug)]
pub struct Fatal(pub String, pub u8);

fn fatal(code: u8) -> impl FnOnce(String) -> Fatal {
    move |m| Fatal(m, code)
}

/// The single-user data directory when none is given.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/cursus"),
        None => PathBuf::from("cursus-data"),
    }
}

/// The configuration, routing and retry rules a start would use.
pub fn load(
    start: &Start,
    root: bool,
) -> Result<(Config, RoutingConfig, cursus_route::retry::RetryRules), Fatal> {
    let file = match &start.config {
        Some(p) => Some(p.clone()),
        None if root && Path::new(SYSTEM_CONFIG).exists() => Some(PathBuf::from(SYSTEM_CONFIG)),
        None => None,
    };
    let default_dir = start.data_dir.clone().unwrap_or_else(|| {
        if root {
            PathBuf::from(SYSTEM_DATA_DIR)
        } else {
            default_data_dir()
        }
    });
    let data_dir = absolute(&default_dir);
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Fatal(format!("{}: {e}", path.display()), 78))?;
            let source = path.display().to_string();
            let mut config = Config::parse(&text, &source, &data_dir).map_err(config_errors)?;
            if let Some(d) = &start.data_dir {
                config.data_dir = absolute(d);
                config.submission_socket = config.data_dir.join("submit.sock");
            }
            let machine = crate::config::local_hostname();
            let host_names = [config.hostname.as_str(), machine.as_str()];
            let mut routing = RoutingConfig::parse_with_host(&text, &source, &host_names)
                .map_err(config_errors)?;
            // A file without routers keeps the mode's default routing.
            if routing.routers.is_empty() {
                routing = if root {
                    system_routing(&config)
                } else {
                    single_user_routing(&config)?
                };
            }
            let retry =
                cursus_route::retry::RetryRules::parse(&text, &source, lifetime_secs(&config))
                    .map_err(config_errors)?;
            Ok((config, routing, retry))
        }
        None => {
            let mut config = Config::single_user(&data_dir);
            let routing = if root {
                config.source = "(embedded system defaults)".to_string();
                system_routing(&config)
            } else {
                single_user_routing(&config)?
            };
            let retry = cursus_route::retry::RetryRules::defaults(lifetime_secs(&config));
            Ok((config, routing, retry))
        }
    }
}

/// Every error of a configuration file, one per line, as a start-stopping failure (78).
fn config_errors<E: std::fmt::Display>(errors: Vec<E>) -> Fatal {
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    Fatal(lines.join("\n"), 78)
}

/// The queue lifetime in seconds: the default retry rule bounces after it.
pub fn lifetime_secs(config: &Config) -> u64 {
    config.queue_lifetime_days.clamp(1, 365) * 86_400
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// The embedded routing of single-user mode: every address at `localhost` (and at this
/// host's name) goes to `<data_dir>/mail/<local part>/Maildir`, delivered as the user who
/// started cursusd; the mapping is the file `<data_dir>/mailboxes`, created on first start.
fn single_user_routing(config: &Config) -> Result<RoutingConfig, Fatal> {
    let table = config.data_dir.join("mailboxes");
    let mut domains = vec!["localhost".to_string()];
    let host = config.hostname.to_lowercase();
    if host != "localhost" {
        domains.push(host);
    }
    let quoted: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
    let text = format!(
        "[routing]\nlocal_domains = [{}]\n\n\
         [[router]]\nname = \"mailboxes\"\ndriver = \"virtual\"\ntable = {{ file = \"{}\" }}\ntransport = \"local\"\n\n\
         [[transport]]\nname = \"local\"\ndriver = \"lda\"\nmailbox = \"maildir:{}/mail/${{local}}/Maildir\"\n",
        quoted.join(", "),
        table.display(),
        config.data_dir.display(),
    );
    RoutingConfig::parse(&text, "(single-user defaults)")
        .map_err(|e| Fatal(format!("built-in routing: {e:?}"), 70))
}

/// The default routing of system mode: /etc/aliases when it exists, the users' .forward
/// files (read through cursus-lda), then local users at `localhost` and this host's name,
/// into `~/Maildir` through cursus-lda.
fn system_routing(config: &Config) -> RoutingConfig {
    let mut routing = RoutingConfig::system();
    let host = config.hostname.to_lowercase();
    if !routing.local_domains.contains(&host) {
        routing.local_domains.push(host);
    }
    routing
}

fn current_user() -> (String, u32, String) {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => (u.name, uid.as_raw(), u.dir.to_string_lossy().into_owned()),
        _ => (uid.to_string(), uid.as_raw(), "/".to_string()),
    }
}

fn prepare_data_dir(config: &Config, single_user: bool) -> Result<(), Fatal> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .map_err(|e| Fatal(format!("{}: {e}", config.data_dir.display()), 73))?;
    // In system mode every local user must reach the submission socket (mode 0666) when it
    // lives in the data directory: search permission only, no listing. The queue inside
    // keeps its own 0700.
    let shared_socket = !single_user && config.submission_socket.parent() == Some(&config.data_dir);
    let mode = if shared_socket { 0o711 } else { 0o700 };
    let _ = std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(mode));
    if single_user {
        let table = config.data_dir.join("mailboxes");
        if !table.exists() {
            let (me, _, _) = current_user();
            let text = format!(
                "# Single-user mode: which address goes to which mailbox owner (cursus-route virtual table).\n\
                 # `ADDRESS USER` or `@DOMAIN USER`; mail lands in mail/<local part>/Maildir here.\n\
                 @localhost {me}\n@{} {me}\n",
                config.hostname.to_lowercase()
            );
            std::fs::write(&table, text)
                .map_err(|e| Fatal(format!("{}: {e}", table.display()), 73))?;
        }
        std::fs::create_dir_all(config.data_dir.join("mail"))
            .map_err(|e| Fatal(format!("{}: {e}", config.data_dir.display()), 73))?;
    }
    Ok(())
}

/// Starts the daemon; returns only at shutdown or on a start-up failure.
pub fn run(start: &Start) -> Result<(), Fatal> {
    let root = nix::unistd::geteuid().is_root();
    let (config, routing_config, retry) = load(start, root)?;
    let single_user = !root;
    // Read before the credential drop (the templates may be root's only).
    let mut bounces = crate::bounce::Bounces::load(&config.bounce).map_err(fatal(78))?;
    bounces.local_domains = routing_config.local_domains.clone();
    let retry = crate::retry::Rules::new(retry);
    bounces.retry = Some(retry.clone());
    if start.check {
        let world = World::system();
        let router = Router::new(routing_config, world);
        let problems = router.check();
        for p in &problems {
            eprintln!("cursusd: {p}");
        }
        println!("{}: ok", config.source);
        return if problems.is_empty() {
            Ok(())
        } else {
            Err(Fatal("the routing tables have problems".into(), 78))
        };
    }
    prepare_data_dir(&config, single_user)?;
    cursus_privsep::private_umask();
    let _ = cursus_privsep::ignore_sigpipe();

    // Privileged steps, still single-threaded.
    let mut tcp = Vec::new();
    for (addrs, protocol) in [
        (&config.smtp_listen, Protocol::Smtp),
        (&config.lmtp_listen, Protocol::Lmtp),
    ] {
        for addr in addrs {
            if let ListenAddr::Tcp(a) = addr {
                let l = std::net::TcpListener::bind(a)
                    .map_err(|e| Fatal(format!("cannot listen on {a}: {e}"), 71))?;
                l.set_nonblocking(true)
                    .map_err(|e| Fatal(format!("{a}: {e}"), 71))?;
                tcp.push((l, protocol, addr.clone()));
            }
        }
    }
    // Certificates are read before the credential drop (keys are often root's only).
    let certificates = match &config.tls {
        Some((cert, key)) => Some(crate::tls::Certificates::load(cert, key).map_err(fatal(78))?),
        None => None,
    };
    // System mode: deliveries and routing's read-forward requests each have their own
    // connections to cursus-lda (see lda_connections.rs).
    let (local, forwards) = if root {
        let (local, forwards) = system_local(&config)?;
        (local, Some(Arc::new(forwards)))
    } else {
        let (me, uid, home) = current_user();
        let policy = single_user_policy(&config.data_dir, &me).map_err(fatal(70))?;
        let local = Local::InProcess {
            user: me,
            uid,
            home,
            policy,
        };
        (local, None)
    };

    // The queue and the pid file belong to the daemon's user.
    let queue_dir = config.data_dir.join("queue");
    let hints = Arc::new(crate::hints::Hints::open(
        &config.data_dir,
        config.hints.clone(),
        retry.clone(),
    ));
    let options = cursus_queue::Options {
        retry: Some(Arc::new(retry)),
        ..cursus_queue::Options::default()
    };
    let queue = Queue::open_with(&queue_dir, options).map_err(|e| {
        Fatal(
            format!("cannot open the queue {}: {e}", queue_dir.display()),
            73,
        )
    })?;
    let recovery = queue.recovery().clone();
    let queue = Arc::new(queue);
    // Written by serve() once every signal it documents is handled (`sendmail -q` sends
    // SIGUSR1 to this pid; its default action would end the daemon).
    let pid_file = config.data_dir.join("cursusd.pid");

    // Single-user mode reads the user's own .forward (the daemon is that user); system
    // mode asks cursus-lda to read it as the user.
    if let Some(routing) = &forwards {
        keep_alive(
            local
                .connections()
                .into_iter()
                .chain([routing.clone()])
                .collect(),
        );
    }
    let world = match forwards {
        Some(connections) => World {
            users: Box::new(cursus_route::SystemUsers),
            forwards: Box::new(LdaForwards::new(connections)),
            includes: Box::new(cursus_route::FsIncludes),
        },
        None => World::system(),
    };
    let routes: Arc<dyn crate::routing::Routes> =
        Arc::new(Routing(Router::new(routing_config, world)));
    let mut engine = Engine::new(
        queue.clone(),
        routes.clone(),
        local,
        config.hostname.clone(),
    );
    let mut outbound = crate::remote::Outbound::new(config.outbound.clone(), &config.hostname)
        .map_err(|e| Fatal(format!("outbound: {e}"), 78))?;
    if config.hints.enabled {
        outbound.set_hints(hints.clone());
        engine.set_hints(hints.clone());
    }
    engine.set_outbound(Arc::new(outbound));
    engine.set_bounces(bounces);
    let engine = Arc::new(engine);
    let config = Arc::new(config);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Fatal(format!("cannot start the runtime: {e}"), 71))?;
    log::line(&format!(
        "starting: {} mode, configuration {}, data {}, queue {} messages (recovered: {} temporary files, {} orphans removed)",
        if single_user { "single-user" } else { "system" },
        config.source,
        config.data_dir.display(),
        recovery.messages,
        recovery.tmp_removed,
        recovery.orphans_removed,
    ));
    let result = runtime.block_on(serve(
        config.clone(),
        queue,
        routes,
        engine,
        tcp,
        certificates,
        hints,
    ));
    let _ = std::fs::remove_file(&pid_file);
    result
}

/// Started as root: the LDA (configured socket, or spawned on socket pairs), then the
/// credential drop. Returns the deliveries' way to the LDA and the routing connections
/// (for `read-forward`).
fn system_local(config: &Config) -> Result<(Local, Connections), Fatal> {
    let account = nix::unistd::User::from_name(&config.run_as)
        .ok()
        .flatten()
        .ok_or_else(|| {
            Fatal(
                format!(
                    "user {} does not exist (create it: useradd --system --home-dir {} cursus)",
                    config.run_as,
                    config.data_dir.display()
                ),
                67,
            )
        })?;
    let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());
    // The data directory is the daemon's.
    chown_tree(&config.data_dir, uid, gid);
    let connections = match &config.lda_socket {
        Some(socket) => (
            Local::service(socket.clone(), config.lda_connections),
            Connections::socket(socket.clone(), ROUTING_LDA_CONNECTIONS),
        ),
        None => spawn_lda(config)?,
    };
    cursus_privsep::become_user(uid, gid)
        .map_err(|e| Fatal(format!("cannot become {}: {e}", config.run_as), 71))?;
    Ok(connections)
}

/// Pings the idle connections to cursus-lda every [`KEEP_ALIVE`] (a thread of its own, for
/// the life of the daemon; started after the credential drop).
fn keep_alive(pools: Vec<Arc<Connections>>) {
    let started = std::thread::Builder::new()
        .name("lda-keep-alive".into())
        .spawn(move || {
            loop {
                std::thread::sleep(KEEP_ALIVE);
                for pool in &pools {
                    pool.keep_alive();
                }
            }
        });
    if let Err(e) = started {
        log::line(&format!(
            "cannot start the cursus-lda keep-alive thread: {e}; idle connections may be closed by cursus-lda"
        ));
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                if m.is_dir() {
                    chown_tree(&p, uid, gid);
                } else if m.is_file() {
                    let _ = std::os::unix::fs::chown(&p, Some(uid), Some(gid));
                }
            }
        }
    }
}

/// Starts cursus-lda (a fresh exec, as root) serving one socket pair per pooled connection:
/// `[lda] connections` pairs for deliveries, [`ROUTING_LDA_CONNECTIONS`] more for routing.
fn spawn_lda(config: &Config) -> Result<(Local, Connections), Fatal> {
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("cursus-lda")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/cursus-lda"));
    let deliveries = config.lda_connections.clamp(1, 32);
    let n = deliveries + ROUTING_LDA_CONNECTIONS;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..n {
        let (a, b) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Fatal(format!("socketpair: {e}"), 71))?;
        ours.push(a);
        theirs.push(std::os::fd::OwnedFd::from(b));
    }
    let mut command = std::process::Command::new(&program);
    command.arg("serve");
    if let Some(policy) = &config.lda_policy {
        command.arg("--policy").arg(policy);
    }
    for i in 0..n {
        command.arg("--connection-fd").arg((3 + i).to_string());
    }
    command.stdin(std::process::Stdio::null());
    cursus_privsep::spawn_with_fds(&mut command, theirs)
        .map_err(|e| Fatal(format!("cannot start {}: {e}", program.display()), 71))?;
    let pairs = ours
        .into_iter()
        .map(cursus_lda::client::Client::from_stream)
        .collect();
    Ok(pair_pools(pairs, deliveries))
}

/// The socket pairs to a cursus-lda this daemon started, shared out: the first
/// `deliveries` for deliveries, the rest for routing's `read-forward` requests.
pub(crate) fn pair_pools(
    mut pairs: Vec<cursus_lda::client::Client>,
    deliveries: usize,
) -> (Local, Connections) {
    let routing = pairs.split_off(deliveries.min(pairs.len()));
    (Local::pairs(pairs), Connections::pairs(routing))
}

async fn serve(
    config: Arc<Config>,
    queue: Arc<Queue>,
    routes: Arc<dyn crate::routing::Routes>,
    engine: Arc<Engine>,
    tcp: Vec<(std::net::TcpListener, Protocol, ListenAddr)>,
    certificates: Option<Arc<crate::tls::Certificates>>,
    hints: Arc<crate::hints::Hints>,
) -> Result<(), Fatal> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (first_tx, first_rx) = mpsc::unbounded_channel::<QueueId>();
    let reception = Arc::new(Reception {
        queue: queue.clone(),
        routes,
        hostname: config.hostname.clone(),
        verify_local: config.verify_local,
        verify_remote: config.verify_remote,
        queue_min_free: config.queue_min_free,
        first_attempt: first_tx,
    });
    let tls = certificates.as_ref().map(|c| c.server_config());
    let server = Server::new(config.clone(), reception, shutdown_rx.clone(), tls);
    // SIGHUP: read the certificate and key again (new handshakes use them). Handled even
    // without TLS: its default action would end the daemon without a 421.
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let certs = certificates.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match certs.as_ref().map(|c| c.reload()) {
                    Some(Ok(())) => log::line("TLS certificate reloaded"),
                    Some(Err(e)) => log::line(&format!(
                        "TLS certificate reload failed, keeping the previous one: {e}"
                    )),
                    None => log::line("SIGHUP: no TLS certificate to read again"),
                }
            }
        });
    }

    for (listener, protocol, addr) in tcp {
        let l = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| Fatal(format!("{addr}: {e}"), 71))?;
        log::line(&format!(
            "listening for {} on {addr}",
            if protocol == Protocol::Smtp {
                "SMTP"
            } else {
                "LMTP"
            }
        ));
        tokio::spawn(server::serve_tcp(server.clone(), l, protocol));
    }
    // Unix-socket listeners (TCP ones were bound before the credential drop).
    for (addrs, protocol, name) in [
        (&config.smtp_listen, Protocol::Smtp, "SMTP"),
        (&config.lmtp_listen, Protocol::Lmtp, "LMTP"),
    ] {
        for addr in addrs {
            if let ListenAddr::Unix(path) = addr {
                let l = bind_unix(path, 0o660)?;
                log::line(&format!("listening for {name} on {addr}"));
                tokio::spawn(server::serve_unix(server.clone(), l, protocol));
            }
        }
    }
    // Local submission: any local user may connect; SO_PEERCRED says who.
    let submit = bind_unix(&config.submission_socket, 0o666)?;
    log::line(&format!(
        "accepting local submissions on {}",
        config.submission_socket.display()
    ));
    tokio::spawn(server::serve_unix(server.clone(), submit, Protocol::Smtp));

    // Deliveries: the first attempt at once, at most a few at a time.
    let slots = Arc::new(Semaphore::new(DELIVERY_SLOTS));

    // The queue listing for users who cannot read the spool (`mailq`).
    let showq_path = config.data_dir.join("showq.sock");
    let showq = bind_unix(&showq_path, 0o666)?;
    tokio::spawn(crate::control::serve_showq(
        queue.root().to_path_buf(),
        showq,
    ));

    // The control socket (`cursus queue`): root and the daemon's own uid only.
    let control_path = config.data_dir.join("control.sock");
    let control = bind_unix(&control_path, 0o600)?;
    tokio::spawn(crate::control::serve(
        Arc::new(crate::control::Control {
            queue: queue.clone(),
            engine: engine.clone(),
            slots: slots.clone(),
            owner: nix::unistd::geteuid().as_raw(),
        }),
        control,
    ));
    {
        // Whatever else was accepted meanwhile goes in the same batch.
        tokio::spawn(attempt_as_they_come(
            first_rx,
            engine.clone(),
            slots.clone(),
            FIRST_ATTEMPT_BATCH,
            false,
        ));
    }
    crate::hints::serve(hints, engine.clone(), slots.clone());
    // The queue manager: load what recovery left, then run what is due every 30 s (and on
    // SIGUSR1: `cursus sendmail -q`).
    {
        let engine = engine.clone();
        let queue = queue.clone();
        let slots = slots.clone();
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
        tokio::spawn(async move {
            let q = queue.clone();
            let _ = tokio::task::spawn_blocking(move || q.load_all()).await;
            let mut forced = false;
            loop {
                let q = queue.clone();
                let due: Vec<QueueId> = tokio::task::spawn_blocking(move || {
                    if forced {
                        return q.ids();
                    }
                    q.due(Timestamp::now())
                        .filter_map(|d| match d {
                            Ok(d) => Some(d.message.id),
                            Err(e) => {
                                log::line(&format!("queue scan: {e}"));
                                None
                            }
                        })
                        .collect()
                })
                .await
                .unwrap_or_default();
                // Batches small enough that every delivery slot gets a share of a short run.
                let size = due.len().div_ceil(DELIVERY_SLOTS).clamp(1, QUEUE_RUN_BATCH);
                for batch in due.chunks(size) {
                    let engine = engine.clone();
                    let batch = batch.to_vec();
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    tokio::task::spawn_blocking(move || {
                        engine.attempt_batch(&batch, forced);
                        drop(permit);
                    });
                }
                forced = false;
                let tick = tokio::time::sleep(Duration::from_secs(30));
                match usr1.as_mut() {
                    Some(s) => {
                        tokio::select! {
                            _ = tick => {}
                            _ = s.recv() => {
                                log::line("queue run requested: trying every message now");
                                forced = true;
                            }
                        }
                    }
                    None => tick.await,
                }
            }
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Fatal(format!("signal: {e}"), 71))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Fatal(format!("signal: {e}"), 71))?;
    let _ = std::fs::write(
        config.data_dir.join("cursusd.pid"),
        format!("{}\n", std::process::id()),
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    log::line("shutting down");
    let _ = shutdown_tx.send(true);
    // Open sessions answer 421 before the runtime (and with it their tasks) goes away.
    server.sessions_ended(Duration::from_secs(5)).await;
    // Let sessions send 421 and deliveries in flight finish (their outcome is recorded).
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        slots.acquire_many(DELIVERY_SLOTS as u32),
    )
    .await;
    if let Some(outbound) = engine.outbound() {
        let n = outbound.quit_idle(Duration::from_secs(2)).await;
        if n > 0 {
            log::line(&format!(
                "closed {n} cached outbound connection(s) with QUIT"
            ));
        }
    }
    let _ = std::fs::remove_file(&config.submission_socket);
    let _ = std::fs::remove_file(&control_path);
    let _ = std::fs::remove_file(&showq_path);
    Ok(())
}

/// Attempts the messages whose ids arrive on `ids`, within the delivery slots: each id
/// with some of the others already waiting behind it as one batch (Engine::attempt_batch;
/// `force` as there). The waiting ones are shared out over the free slots (at most `most`
/// a batch), so that a burst of local deliveries, which a batch makes one after another,
/// still runs on every slot.
pub(crate) async fn attempt_as_they_come(
    mut ids: mpsc::UnboundedReceiver<QueueId>,
    engine: Arc<Engine>,
    slots: Arc<Semaphore>,
    most: usize,
    force: bool,
) {
    while let Some(id) = ids.recv().await {
        let engine = engine.clone();
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let free = slots.available_permits() + 1;
        let share = (ids.len() + 1).div_ceil(free).clamp(1, most);
        let mut batch = vec![id];
        while batch.len() < share {
            match ids.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        tokio::task::spawn_blocking(move || {
            engine.attempt_batch(&batch, force);
            drop(permit);
        });
    }
}

fn bind_unix(path: &Path, mode: u32) -> Result<tokio::net::UnixListener, Fatal> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        } else {
            return Err(Fatal(
                format!("{} exists and is not a socket", path.display()),
                73,
            ));
        }
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let l = tokio::net::UnixListener::bind(path)
        .map_err(|e| Fatal(format!("cannot listen on {}: {e}", path.display()), 71))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    Ok(l)
}
